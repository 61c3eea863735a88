//! `exec-helper --framed`: the helper's own stdin and stdout are the executor channel
//! (`clawrden_protocol::channel`), not the command's. The mirror executor starts it with a
//! plain (non-TTY) `docker exec` and speaks frames over the exec's attached stdio.
//!
//! The helper reads the `Start` frame, sets up each of the command's standard descriptors
//! as it says (one PTY, with the caller's settings and size, for every terminal one; a
//! pipe for a streamed one; /dev/null for a closed one), starts the command as the
//! unframed helper does (root supervisor, child drops to the caller), and then moves
//! bytes: `Stdin` into the pipe or the PTY (returning `StdinWindow` as the command takes
//! them), the pipes out as `Stdout`/`Stderr`, the PTY out as `TtyOut` (with `Termios` when
//! the PTY's settings change). `Signal` goes to the command's process group, `Resize` to
//! the PTY, `Kill` kills the tree. When the command ends, the rest of the tree is killed,
//! the output drained, and exactly one `Exit` or `Signaled` frame says how it ended: death
//! by signal is reported as the signal, not as 128+N. With `--time-limit-ms`, the helper
//! kills the tree itself once that much time has passed, says so on `Stderr` and ends with
//! `Exit(124)`, whether or not the warden is still there. With `--cgroup`, the command
//! joins that cgroup and the tree kill ends with `cgroup.kill`, as unframed.
//!
//! One poll(2) loop; the channel's output is a bounded buffer, and the command's outputs
//! are only read while it has room, so a slow warden slows the command instead of growing
//! memory. The channel's input is always read (stdin is bounded by the warden's window),
//! so `Kill` and `Signal` are never stuck behind data. End of the channel's input means
//! the warden is gone: the tree is killed.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use clawrden_protocol::channel::{
    write_io, ChannelFrame, ChannelKind, ChannelMsg, Failure, Start, StdioPlan,
    MAX_CHANNEL_IO_PAYLOAD, SINGLE_CALL,
};
use clawrden_protocol::{Termios, WinSize, HEADER_LEN, MAX_IO_PAYLOAD};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::{
    begin_supervision, failed, forward, kill_tree, prepare, read_signal, reap, HelperError,
    Options, EXIT_HELPER_FAILED, EXIT_TIME_LIMIT,
};
use crate::sys::process as sys_process;
use crate::sys::{std_fd, term};

/// Largest frame on the channel.
const FRAME_MAX: usize = HEADER_LEN + MAX_CHANNEL_IO_PAYLOAD as usize;
/// Bound on bytes queued for the warden; the command's outputs wait while it is full.
const OUT_CAP: usize = 4 * FRAME_MAX;
/// Stdin bytes the command took before they are granted back in one `StdinWindow`.
const WINDOW_BATCH: u32 = 16 * 1024;
/// Signals the warden may forward to the command.
const FORWARDED: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
];

/// Runs the framed helper; returns its exit status (0 once the outcome was sent).
pub fn main(options: &Options) -> i32 {
    match run(options) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("clawrden: exec-helper: {e}");
            EXIT_HELPER_FAILED
        }
    }
}

fn run(options: &Options) -> Result<i32, HelperError> {
    let Some(signal_fd) = begin_supervision(options)? else {
        return Ok(0);
    };
    let deadline = options.time_limit.map(|limit| Instant::now() + limit);
    for fd in [0, 1] {
        set_nonblocking(fd).map_err(failed("making the channel non-blocking"))?;
    }
    let mut chan = Channel::default();
    let Some(start) = chan.read_start(&signal_fd, deadline)? else {
        // The warden went away (or asked for a kill, or the time limit passed) before
        // anything started.
        return Ok(0);
    };
    let prepared = match prepare(options)? {
        Ok(p) => p,
        Err(message) => {
            chan.queue(ChannelMsg::Failed(Failure {
                not_found: true,
                message: format!(
                    "cannot execute {}: {message}",
                    options.program.to_string_lossy()
                ),
            }));
            chan.flush_all();
            return Ok(0);
        }
    };
    let owner = options.credentials.as_ref().map(|c| c.uid);
    let stdio = match CommandStdio::set_up(&start, owner) {
        Ok(s) => s,
        Err(e) => {
            chan.queue(ChannelMsg::Failed(Failure {
                not_found: false,
                message: format!("cannot set up the command's descriptors: {e}"),
            }));
            chan.flush_all();
            return Ok(0);
        }
    };
    let mut prepared = prepared;
    prepared
        .image
        .set_stdio(stdio.child_fds(), stdio.master.is_some());
    let child = sys_process::spawn(&mut prepared.image).map_err(failed("fork"))?;
    let program = std::mem::take(&mut prepared.program).into_vec();
    drop(prepared);
    let CommandStdio {
        child: child_ends,
        master,
        stdin_w,
        stdout_r,
        stderr_r,
        pty_input,
    } = stdio;
    // The command's ends are its own now: only it (and its tree) may hold them, so EOF
    // and the PTY's hangup come when the tree is done.
    drop(child_ends);
    chan.queue(ChannelMsg::Started {
        pid: child.as_raw() as u32,
        program,
    });
    let settings = start.terminal.map(|(t, _)| t);
    let mut sup = Supervisor {
        options,
        signal_fd,
        deadline,
        child,
        chan,
        settings: match (&master, settings) {
            (Some(m), Some(_)) => term::get_termios(m.as_fd()).ok(),
            _ => None,
        },
        master,
        master_done: false,
        pty_input,
        stdin_w,
        outputs: [stdout_r, stderr_r],
        pending_stdin: Vec::new(),
        stdin_eof: false,
        stdin_closed: false,
        granted: 0,
    };
    Ok(sup.run())
}

fn set_nonblocking(fd: RawFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// The executor channel on fds 0 (in) and 1 (out).
#[derive(Default)]
struct Channel {
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// The warden closed its side (end of input).
    in_closed: bool,
    /// Writing failed: nobody reads any more.
    out_broken: bool,
}

impl Channel {
    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn queue(&mut self, msg: ChannelMsg) {
        if self.out_broken {
            return;
        }
        // Control frames are small and always fit.
        let _ = ChannelFrame::single(msg).encode(&mut self.out);
    }

    fn queue_io(&mut self, kind: ChannelKind, data: &[u8]) {
        if !self.out_broken {
            write_io(&mut self.out, kind, SINGLE_CALL, data);
        }
    }

    /// Writes what fd 1 takes without blocking.
    fn flush(&mut self) {
        while self.pending_out() > 0 && !self.out_broken {
            match nix::unistd::write(std_fd(1), &self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => self.out_broken = true,
            }
        }
        if self.out_pos == self.out.len() || self.out_broken {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos >= OUT_CAP / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    /// Writes everything queued, waiting as needed (until the warden stops reading).
    fn flush_all(&mut self) {
        loop {
            self.flush();
            if self.pending_out() == 0 || self.out_broken {
                return;
            }
            let mut fds = [PollFd::new(std_fd(1), PollFlags::POLLOUT)];
            if poll(&mut fds, PollTimeout::NONE).is_err_and(|e| e != Errno::EINTR) {
                return;
            }
        }
    }

    /// Reads what fd 0 has; false at end of input.
    fn fill(&mut self) -> bool {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match nix::unistd::read(0, &mut buf) {
                Ok(0) => {
                    self.in_closed = true;
                    return false;
                }
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return true,
                Err(_) => {
                    self.in_closed = true;
                    return false;
                }
            }
            if self.inbuf.len() >= FRAME_MAX * 4 {
                return true;
            }
        }
    }

    /// The next complete frame of the only call, if one is buffered.
    fn next(&mut self) -> Result<Option<ChannelMsg>, String> {
        match ChannelFrame::decode_from(&self.inbuf) {
            Ok(None) => Ok(None),
            Ok(Some((frame, used))) => {
                self.inbuf.drain(..used);
                if frame.call != SINGLE_CALL {
                    return Err(format!(
                        "frame for call {} on a single-call channel",
                        frame.call
                    ));
                }
                Ok(Some(frame.msg))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits for the `Start` frame. `None` when the warden closed the channel, asked for
    /// a kill, the helper was told to stop (SIGUSR1) or its time limit passed first.
    fn read_start(
        &mut self,
        signal_fd: &SignalFd,
        deadline: Option<Instant>,
    ) -> Result<Option<Start>, HelperError> {
        loop {
            match self.next() {
                Ok(Some(ChannelMsg::Start(start))) => return Ok(Some(start)),
                Ok(Some(ChannelMsg::Kill)) => return Ok(None),
                Ok(Some(other)) => {
                    return Err(HelperError {
                        what: "reading the start of the call".into(),
                        cause: format!("expected a Start frame, got {:?}", other.kind()),
                    })
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(HelperError {
                        what: "reading the start of the call".into(),
                        cause: e,
                    })
                }
            }
            if self.in_closed {
                return Ok(None);
            }
            let timeout = match remaining(deadline) {
                Some(Duration::ZERO) => return Ok(None),
                left => poll_timeout(left),
            };
            let mut fds = [
                PollFd::new(std_fd(0), PollFlags::POLLIN),
                PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
            ];
            let _ = poll(&mut fds, timeout);
            while let Some(info) = read_signal(signal_fd) {
                if info.ssi_signo == Signal::SIGUSR1 as u32 {
                    return Ok(None);
                }
            }
            self.fill();
        }
    }
}

/// The command's standard descriptors, before the fork.
struct CommandStdio {
    /// What the child installs as 0, 1 and 2 (all above 2 here).
    child: [OwnedFd; 3],
    master: Option<PtyMaster>,
    /// stdin is the PTY: `Stdin` goes to the master.
    pty_input: bool,
    stdin_w: Option<OwnedFd>,
    stdout_r: Option<OwnedFd>,
    stderr_r: Option<OwnedFd>,
}

impl CommandStdio {
    /// Makes the descriptors `start` asks for. The PTY's slave is given to `owner` (the
    /// command's uid), as a login gives a user their terminal.
    fn set_up(start: &Start, owner: Option<nix::unistd::Uid>) -> Result<CommandStdio, String> {
        let mut master = None;
        let mut slave = None;
        if let Some((settings, size)) = &start.terminal {
            let (m, s) = open_pty(settings, *size, owner)?;
            master = Some(m);
            slave = Some(s);
        }
        let null = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| format!("cannot open /dev/null: {e}"))
        };
        let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
        let mut child: Vec<OwnedFd> = Vec::with_capacity(3);
        for (i, plan) in start.stdio.iter().enumerate() {
            let fd = match plan {
                StdioPlan::Null => null()?,
                StdioPlan::Terminal => slave
                    .as_ref()
                    .ok_or("no terminal for a terminal descriptor")?
                    .try_clone()
                    .map_err(|e| format!("cannot duplicate the terminal: {e}"))?,
                StdioPlan::Pipe => {
                    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
                        .map_err(|e| format!("cannot make a pipe: {e}"))?;
                    let (theirs, mine) = if i == 0 { (r, w) } else { (w, r) };
                    set_nonblocking(mine.as_raw_fd())
                        .map_err(|e| format!("cannot make a pipe non-blocking: {e}"))?;
                    ours[i] = Some(mine);
                    theirs
                }
            };
            child.push(fd);
        }
        let [stdin_w, stdout_r, stderr_r] = ours;
        let child: [OwnedFd; 3] = child
            .try_into()
            .map_err(|_| "three standard descriptors".to_string())?;
        Ok(CommandStdio {
            child,
            pty_input: master.is_some() && start.stdio[0] == StdioPlan::Terminal,
            master,
            stdin_w,
            stdout_r,
            stderr_r,
        })
    }

    fn child_fds(&self) -> [RawFd; 3] {
        [
            self.child[0].as_raw_fd(),
            self.child[1].as_raw_fd(),
            self.child[2].as_raw_fd(),
        ]
    }
}

/// Opens a PTY with `settings` and `size`; both ends close-on-exec, the master
/// non-blocking, the slave never the helper's controlling terminal.
fn open_pty(
    settings: &Termios,
    size: WinSize,
    owner: Option<nix::unistd::Uid>,
) -> Result<(PtyMaster, OwnedFd), String> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot open a PTY (/dev/ptmx): {e}"))?;
    grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let path = ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| format!("cannot open {path}: {e}"))?
        .into();
    if let Some(uid) = owner {
        nix::unistd::fchown(slave.as_raw_fd(), Some(uid), None)
            .map_err(|e| format!("cannot give {path} to uid {uid}: {e}"))?;
    }
    term::set_termios(slave.as_fd(), settings)
        .map_err(|e| format!("cannot set the terminal's settings: {e}"))?;
    term::set_window_size(master.as_fd(), size)
        .map_err(|e| format!("cannot set the terminal's size: {e}"))?;
    set_nonblocking(master.as_raw_fd()).map_err(|e| format!("cannot set O_NONBLOCK: {e}"))?;
    Ok((master, slave))
}

/// Time left until `deadline` (`None`: no deadline).
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// A poll(2) timeout for `left` (`None`: wait without limit), rounded up to whole
/// milliseconds so a short remainder does not become a busy loop.
fn poll_timeout(left: Option<Duration>) -> PollTimeout {
    match left {
        None => PollTimeout::NONE,
        Some(t) => {
            PollTimeout::try_from(t + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// What one read of a command output found.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    Data,
    /// Nothing now.
    Again,
    /// Its end; the descriptor is closed.
    Done,
}

/// How the supervision loop ended.
enum Stop {
    /// The command ended with this status.
    Ended(WaitStatus),
    /// `Kill` (or SIGUSR1): kill the tree, no outcome.
    Killed,
    /// The warden is gone or broke the channel: kill the tree, nothing to say.
    Abandoned,
    /// `--time-limit-ms` passed: kill the tree, say so, exit 124.
    TimeLimit,
}

struct Supervisor<'a> {
    options: &'a Options,
    signal_fd: SignalFd,
    /// When `--time-limit-ms` ends the command.
    deadline: Option<Instant>,
    child: Pid,
    chan: Channel,
    master: Option<PtyMaster>,
    /// The PTY's output is complete (every slave descriptor was closed). The master stays
    /// open until the command has ended: closing it would hang the terminal up, and the
    /// command (which may have closed its descriptors just before it exits, as
    /// close_stdout(3) does) would die of SIGHUP.
    master_done: bool,
    /// The PTY's settings as last sent (what it started as at first).
    settings: Option<Termios>,
    pty_input: bool,
    stdin_w: Option<OwnedFd>,
    /// The command's stdout and stderr pipes while open.
    outputs: [Option<OwnedFd>; 2],
    pending_stdin: Vec<u8>,
    /// The warden sent `StdinEof`: close stdin once `pending_stdin` is written.
    stdin_eof: bool,
    /// The command's stdin is closed (or broken): further data is dropped.
    stdin_closed: bool,
    /// Stdin bytes taken but not yet granted back.
    granted: u32,
}

impl Supervisor<'_> {
    fn run(&mut self) -> i32 {
        // Frames that arrived together with `Start` are already read.
        let stop = match self.handle_buffered() {
            Some(stop) => stop,
            None => loop {
                if let Some(stop) = self.step() {
                    break stop;
                }
            },
        };
        let cgroup = self.options.cgroup.as_deref().map(Path::new);
        match stop {
            Stop::Abandoned => {
                kill_tree(&self.signal_fd, self.options.grace, cgroup);
                0
            }
            Stop::Killed => {
                kill_tree(&self.signal_fd, self.options.grace, cgroup);
                self.drain();
                self.chan.flush_all();
                0
            }
            Stop::TimeLimit => {
                kill_tree(&self.signal_fd, self.options.grace, cgroup);
                self.drain();
                self.notice_settings();
                let limit = self.options.time_limit.unwrap_or_default().as_millis();
                let message =
                    format!("clawrden: time limit of {limit} ms reached; process tree killed\n");
                self.chan.queue_io(ChannelKind::Stderr, message.as_bytes());
                self.chan.queue(ChannelMsg::Exit(EXIT_TIME_LIMIT));
                self.chan.flush_all();
                0
            }
            Stop::Ended(status) => {
                kill_tree(&self.signal_fd, self.options.grace, cgroup);
                self.drain();
                self.notice_settings();
                match status {
                    WaitStatus::Signaled(_, signal, _) => {
                        self.chan.queue(ChannelMsg::Signaled(signal as i32))
                    }
                    WaitStatus::Exited(_, code) => self.chan.queue(ChannelMsg::Exit(code)),
                    _ => self.chan.queue(ChannelMsg::Exit(EXIT_HELPER_FAILED)),
                }
                self.chan.flush_all();
                0
            }
        }
    }

    fn stdin_target(&self) -> Option<BorrowedFd<'_>> {
        if self.stdin_closed {
            return None;
        }
        if self.pty_input {
            self.master
                .as_ref()
                .filter(|_| !self.master_done)
                .map(|m| m.as_fd())
        } else {
            self.stdin_w.as_ref().map(|w| w.as_fd())
        }
    }

    fn step(&mut self) -> Option<Stop> {
        let room = self.chan.pending_out() + FRAME_MAX <= OUT_CAP;
        let want_stdin_write = !self.pending_stdin.is_empty() && self.stdin_target().is_some();
        let (chan_rev, out_rev, sig_rev, master_rev, stdin_rev, pipe_rev) = {
            let mut fds = Vec::with_capacity(7);
            let mut slots = [None; 5];
            let chan_events = if self.chan.in_closed {
                PollFlags::empty()
            } else {
                PollFlags::POLLIN
            };
            slots[0] = Some(fds.len());
            fds.push(PollFd::new(std_fd(0), chan_events));
            if self.chan.pending_out() > 0 {
                slots[1] = Some(fds.len());
                fds.push(PollFd::new(std_fd(1), PollFlags::POLLOUT));
            }
            slots[2] = Some(fds.len());
            fds.push(PollFd::new(self.signal_fd.as_fd(), PollFlags::POLLIN));
            if let (Some(m), false) = (&self.master, self.master_done) {
                let mut ev = PollFlags::empty();
                if room {
                    ev |= PollFlags::POLLIN;
                }
                if want_stdin_write && self.pty_input {
                    ev |= PollFlags::POLLOUT;
                }
                slots[3] = Some(fds.len());
                fds.push(PollFd::new(m.as_fd(), ev));
            }
            if let (Some(w), true) = (&self.stdin_w, want_stdin_write && !self.pty_input) {
                slots[4] = Some(fds.len());
                fds.push(PollFd::new(w.as_fd(), PollFlags::POLLOUT));
            }
            let mut pipe_slots = [None; 2];
            for (i, o) in self.outputs.iter().enumerate() {
                if let Some(o) = o {
                    let ev = if room {
                        PollFlags::POLLIN
                    } else {
                        PollFlags::empty()
                    };
                    pipe_slots[i] = Some(fds.len());
                    fds.push(PollFd::new(o.as_fd(), ev));
                }
            }
            let timeout = match remaining(self.deadline) {
                Some(Duration::ZERO) => return Some(Stop::TimeLimit),
                left => poll_timeout(left),
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return Some(Stop::Abandoned),
            }
            let rev = |slot: Option<usize>| {
                slot.and_then(|i| fds.get(i))
                    .and_then(|f| f.revents())
                    .unwrap_or(PollFlags::empty())
            };
            let pipes = [rev(pipe_slots[0]), rev(pipe_slots[1])];
            (
                rev(slots[0]),
                rev(slots[1]),
                rev(slots[2]),
                rev(slots[3]),
                rev(slots[4]),
                pipes,
            )
        };

        let mut ended = None;
        if !sig_rev.is_empty() {
            while let Some(info) = read_signal(&self.signal_fd) {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGUSR1) => return Some(Stop::Killed),
                    Ok(Signal::SIGCHLD) => {
                        if let Some(status) = reap(Some(self.child)).main_status {
                            ended = Some(status);
                        }
                    }
                    Ok(signal) => forward(self.child, signal),
                    Err(_) => {}
                }
            }
        }
        if !chan_rev.is_empty() {
            self.chan.fill();
            if let Some(stop) = self.handle_buffered() {
                return Some(stop);
            }
            if self.chan.in_closed {
                return Some(Stop::Abandoned);
            }
        }
        if !stdin_rev.is_empty() || master_rev.contains(PollFlags::POLLOUT) {
            self.write_stdin();
        }
        if master_rev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            self.read_master();
        }
        for (i, rev) in pipe_rev.iter().enumerate() {
            if !rev.is_empty() {
                self.read_output(i);
            }
        }
        self.finish_stdin();
        if !out_rev.is_empty() || self.chan.pending_out() > 0 {
            self.chan.flush();
        }
        if self.chan.out_broken {
            return Some(Stop::Abandoned);
        }
        ended.map(Stop::Ended)
    }

    /// Handles every complete frame already read from the channel.
    fn handle_buffered(&mut self) -> Option<Stop> {
        loop {
            match self.chan.next() {
                Ok(Some(msg)) => {
                    if let Some(stop) = self.handle(msg) {
                        return Some(stop);
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    eprintln!("clawrden: exec-helper: the warden broke the channel: {e}");
                    return Some(Stop::Abandoned);
                }
            }
        }
    }

    fn handle(&mut self, msg: ChannelMsg) -> Option<Stop> {
        match msg {
            ChannelMsg::Stdin(data) => {
                if self.stdin_closed || self.stdin_eof {
                    self.granted += data.len() as u32;
                } else {
                    self.pending_stdin.extend_from_slice(&data);
                }
            }
            ChannelMsg::StdinEof => self.stdin_eof = true,
            ChannelMsg::Signal(n) => {
                if let Some(signal) = FORWARDED.into_iter().find(|s| *s as i32 == n) {
                    forward(self.child, signal);
                }
            }
            ChannelMsg::Resize(size) => {
                if let Some(m) = &self.master {
                    let _ = term::set_window_size(m.as_fd(), size);
                }
            }
            ChannelMsg::Kill => return Some(Stop::Killed),
            other => {
                eprintln!(
                    "clawrden: exec-helper: the warden sent a {:?} frame, which only a helper sends",
                    other.kind()
                );
                return Some(Stop::Abandoned);
            }
        }
        None
    }

    fn write_stdin(&mut self) {
        let result = match self.stdin_target() {
            Some(fd) => nix::unistd::write(fd, &self.pending_stdin),
            None => return,
        };
        match result {
            Ok(n) => {
                self.pending_stdin.drain(..n);
                self.granted += n as u32;
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            // The command closed its stdin (EPIPE) or the PTY hung up: drop the rest.
            Err(_) => self.close_stdin(),
        }
    }

    fn close_stdin(&mut self) {
        self.granted += self.pending_stdin.len() as u32;
        self.pending_stdin.clear();
        self.stdin_closed = true;
        self.stdin_w = None;
    }

    /// After `StdinEof` and once everything before it was written: closes the stdin pipe,
    /// or types the PTY's end-of-file character (VEOF, from its current settings). Also
    /// grants taken stdin back to the warden.
    fn finish_stdin(&mut self) {
        if self.stdin_eof && self.pending_stdin.is_empty() && !self.stdin_closed {
            if self.pty_input {
                if let Some(m) = &self.master {
                    let veof = term::get_termios(m.as_fd())
                        .ok()
                        .and_then(|t| t.cc.get(libc::VEOF).copied())
                        .unwrap_or(4);
                    // One byte into a PTY's input: a full input buffer just loses it,
                    // as typing into a full buffer does.
                    let _ = nix::unistd::write(m.as_fd(), &[veof]);
                }
                self.stdin_closed = true;
            } else {
                self.close_stdin();
            }
        }
        if self.granted >= WINDOW_BATCH || (self.granted > 0 && self.pending_stdin.is_empty()) {
            self.chan.queue(ChannelMsg::StdinWindow(self.granted));
            self.granted = 0;
        }
    }

    /// Reads one chunk of the PTY's output. At its end (EIO: every slave closed) the
    /// master is no longer read (but stays open, see `master_done`).
    fn read_master(&mut self) -> Read {
        let (Some(m), false) = (&self.master, self.master_done) else {
            return Read::Done;
        };
        let mut buf = vec![0u8; MAX_IO_PAYLOAD as usize];
        match nix::unistd::read(m.as_raw_fd(), &mut buf) {
            Ok(0) => {}
            Ok(n) => {
                self.chan.queue_io(ChannelKind::TtyOut, &buf[..n]);
                self.notice_settings();
                return Read::Data;
            }
            Err(Errno::EINTR | Errno::EAGAIN) => return Read::Again,
            Err(_) => {}
        }
        // EIO (or end): the terminal's output is complete; stdin to it is over too.
        self.notice_settings();
        self.master_done = true;
        if self.pty_input {
            self.stdin_closed = true;
            self.granted += self.pending_stdin.len() as u32;
            self.pending_stdin.clear();
        }
        Read::Done
    }

    /// Queues `Termios` when the PTY's settings differ from the last ones sent.
    fn notice_settings(&mut self) {
        let (Some(m), Some(last)) = (&self.master, &self.settings) else {
            return;
        };
        if let Ok(now) = term::get_termios(m.as_fd()) {
            if now != *last {
                self.settings = Some(now.clone());
                self.chan.queue(ChannelMsg::Termios(now));
            }
        }
    }

    /// Reads one chunk of output pipe `i` (0: stdout, 1: stderr); closes it at its end.
    fn read_output(&mut self, i: usize) -> Read {
        let Some(fd) = &self.outputs[i] else {
            return Read::Done;
        };
        let mut buf = vec![0u8; MAX_IO_PAYLOAD as usize];
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => {}
            Ok(n) => {
                let kind = if i == 0 {
                    ChannelKind::Stdout
                } else {
                    ChannelKind::Stderr
                };
                self.chan.queue_io(kind, &buf[..n]);
                return Read::Data;
            }
            Err(Errno::EINTR | Errno::EAGAIN) => return Read::Again,
            Err(_) => {}
        }
        self.outputs[i] = None;
        Read::Done
    }

    /// After the tree is dead: reads the PTY and the pipes to their ends, passing
    /// everything on. Nothing in the tree can write any more; a descriptor that would
    /// still block is held by a process outside it, and is not waited for.
    fn drain(&mut self) {
        self.pending_stdin.clear();
        loop {
            let mut more = false;
            if self.read_master() == Read::Data {
                more = true;
            }
            for i in 0..2 {
                if self.outputs[i].is_some() && self.read_output(i) == Read::Data {
                    more = true;
                }
            }
            self.chan.flush();
            if self.chan.out_broken {
                return;
            }
            if self.chan.pending_out() + FRAME_MAX > OUT_CAP {
                self.chan.flush_all();
            }
            if !more {
                return;
            }
        }
    }
}
