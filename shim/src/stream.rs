//! The I/O loop after an allow: stdin -> `Stdin` frames, `Stdout`/`Stderr` frames -> fds
//! 1 and 2, `TtyOut` frames (the command's terminal) -> the caller's terminal, `Termios`
//! frames -> remembered for the end of the call, signals -> `Signal`/`Resize`, until the
//! command's outcome arrives.
//!
//! One poll(2) over the socket, the signalfd and (while wanted) stdin. The socket is
//! non-blocking and written only from a bounded outgoing buffer, while its input is
//! always drained: a command that writes a lot of output while we push a lot of input
//! can never deadlock against us. Stdin is read only while the outgoing buffer has room
//! for one more full frame, so memory stays bounded for any amount of input.
//!
//! Broken stdout/stderr: SIGPIPE stays ignored in the shim (so a vanished warden is an
//! EPIPE, not a silent death), and EPIPE on fd 1 or 2 ends the call as if the tool had
//! died of SIGPIPE: the shim re-raises SIGPIPE on itself (default disposition) and the
//! closed socket cancels the command on the warden's side, exactly what a tool with the
//! default SIGPIPE disposition does in a broken pipeline. Any other write error on fd 1
//! or 2 (EIO, ENOSPC...) drops further output for that descriptor, and the call goes on.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use clawrden_protocol::{
    write_chunks, FrameHeader, Kind, Message, ProtocolError, HEADER_LEN, MAX_IO_PAYLOAD,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{send, MsgFlags};

use crate::session::Outcome;
use crate::sys::signals::SignalChannel;
use crate::sys::term;
use crate::terminal::CallerTerminal;

/// Largest frame the shim sends or accepts while streaming.
const FRAME_MAX: usize = HEADER_LEN + MAX_IO_PAYLOAD as usize;
/// Bound on bytes queued for the warden; stdin is not read while it is this full.
const OUT_CAP: usize = 4 * FRAME_MAX;
/// Socket reads per wakeup, so a chatty command cannot starve stdin and signals.
const READS_PER_WAKE: usize = 16;

/// What this call streams.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// Stream stdin as frames (false when the warden uses the passed fds, unless stdin is
    /// the terminal).
    pub forward_stdin: bool,
    /// fd 0 was open at start.
    pub stdin_open: bool,
    /// The command has a terminal: SIGWINCH becomes `Resize`.
    pub resize: bool,
}

/// Runs the loop until the command's outcome (or the warden's loss). `typed_ahead` goes
/// to the command first; `caller` is the caller's terminal when the command has one.
pub fn pump(
    sock: &UnixStream,
    mode: Mode,
    typed_ahead: Vec<u8>,
    signals: &SignalChannel,
    caller: Option<&mut CallerTerminal>,
) -> Outcome {
    if let Err(e) = sock.set_nonblocking(true) {
        return unavailable(format!("cannot configure the socket: {e}"));
    }
    let mut pump = Pump {
        sock,
        out: Vec::with_capacity(FRAME_MAX),
        out_pos: 0,
        inbuf: Vec::with_capacity(2 * FRAME_MAX),
        chunk: vec![0; MAX_IO_PAYLOAD as usize],
        stdin_reading: mode.forward_stdin && mode.stdin_open,
        resize: mode.resize,
        caller,
        stdout_ok: true,
        stderr_ok: true,
        tty_ok: true,
        peer_gone: false,
    };
    if mode.forward_stdin && !mode.stdin_open {
        pump.queue(&Message::StdinEof);
    }
    write_chunks(&mut pump.out, Kind::Stdin, &typed_ahead);
    loop {
        if let Some(outcome) = pump.step(signals) {
            return outcome;
        }
    }
}

fn unavailable(cause: impl std::fmt::Display) -> Outcome {
    Outcome::Unavailable(cause.to_string())
}

fn closed_early() -> Outcome {
    unavailable("connection closed before the command finished")
}

struct Pump<'a, 'c> {
    sock: &'a UnixStream,
    /// Encoded frames for the warden; `out[out_pos..]` is still unsent.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes from the warden not yet decoded (at most one partial frame plus one read).
    inbuf: Vec<u8>,
    chunk: Vec<u8>,
    stdin_reading: bool,
    resize: bool,
    caller: Option<&'c mut CallerTerminal>,
    stdout_ok: bool,
    stderr_ok: bool,
    tty_ok: bool,
    /// Sending failed: the warden closed its side. Keep reading until its end of stream.
    peer_gone: bool,
}

impl Pump<'_, '_> {
    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn step(&mut self, signals: &SignalChannel) -> Option<Outcome> {
        let want_stdin = self.stdin_reading && self.pending_out() + FRAME_MAX <= OUT_CAP;
        let mut sock_events = PollFlags::POLLIN;
        if self.pending_out() > 0 {
            sock_events |= PollFlags::POLLOUT;
        }
        let stdin = io::stdin();
        let (sock_rev, sig_rev, stdin_rev) = {
            let mut fds = vec![
                PollFd::new(self.sock.as_fd(), sock_events),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            if want_stdin {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => return None,
                Err(e) => return Some(Outcome::Local(format!("poll failed: {e}"))),
            }
            let rev = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .unwrap_or(PollFlags::empty())
            };
            (rev(0), rev(1), rev(2))
        };

        if !sig_rev.is_empty() {
            if let Err(e) = self.forward_signals(signals) {
                return Some(Outcome::Local(format!("cannot read signals: {e}")));
            }
        }
        // Read before writing: an outcome already sent beats a failed write.
        if !sock_rev.is_empty() {
            if let Some(outcome) = self.read_socket() {
                return Some(outcome);
            }
        }
        if self.pending_out() > 0 {
            self.flush();
        }
        if !stdin_rev.is_empty() {
            self.read_stdin();
        }
        None
    }

    fn queue(&mut self, msg: &Message) {
        if self.peer_gone {
            return;
        }
        // Only small control frames and StdinEof come here; they always fit.
        let _ = msg.encode(&mut self.out);
    }

    fn forward_signals(&mut self, signals: &SignalChannel) -> io::Result<()> {
        while let Some(signo) = signals.next()? {
            if signo == libc::SIGWINCH {
                if self.resize {
                    let size = (0..3)
                        .find_map(|fd| term::window_size(fd).ok())
                        .unwrap_or_default();
                    self.queue(&Message::Resize {
                        rows: size.rows,
                        cols: size.cols,
                    });
                }
            } else {
                self.queue(&Message::Signal(signo));
            }
        }
        Ok(())
    }

    fn flush(&mut self) {
        while self.pending_out() > 0 {
            let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
            match send(self.sock.as_raw_fd(), &self.out[self.out_pos..], flags) {
                Ok(n) => self.out_pos += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    // The warden is gone or going; what it already sent (maybe the
                    // outcome) is still readable, and its end of stream decides.
                    self.peer_gone = true;
                    self.stdin_reading = false;
                    self.out.clear();
                    self.out_pos = 0;
                    return;
                }
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos >= OUT_CAP / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    fn read_stdin(&mut self) {
        match nix::unistd::read(0, &mut self.chunk) {
            Ok(0) => self.stdin_eof(),
            Ok(n) => {
                if !self.peer_gone {
                    write_chunks(&mut self.out, Kind::Stdin, &self.chunk[..n]);
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            // EIO from a hung-up terminal and similar: the input is over.
            Err(_) => self.stdin_eof(),
        }
    }

    fn stdin_eof(&mut self) {
        self.stdin_reading = false;
        self.queue(&Message::StdinEof);
    }

    fn read_socket(&mut self) -> Option<Outcome> {
        for _ in 0..READS_PER_WAKE {
            let start = self.inbuf.len();
            self.inbuf.resize(start + FRAME_MAX, 0);
            let got = (&mut &*self.sock).read(&mut self.inbuf[start..]);
            self.inbuf.truncate(start + *got.as_ref().unwrap_or(&0));
            match got {
                Ok(0) => return Some(closed_early()),
                Ok(_) => {
                    if let Some(outcome) = self.decode_frames() {
                        return Some(outcome);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A warden that closes with our frames unread shows up as a reset.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Some(closed_early()),
                Err(e) => return Some(unavailable(format!("connection lost: {e}"))),
            }
        }
        None
    }

    /// Handles every complete frame in `inbuf`. Headers are checked as soon as they
    /// arrive, so a bad kind or an oversized length fails before anything is buffered.
    fn decode_frames(&mut self) -> Option<Outcome> {
        let mut pos = 0;
        let result = loop {
            let decoded = {
                let avail = &self.inbuf[pos..];
                if avail.len() < HEADER_LEN {
                    break None;
                }
                let header =
                    match FrameHeader::parse([avail[0], avail[1], avail[2], avail[3], avail[4]]) {
                        Ok(h) => h,
                        Err(e) => break Some(unavailable(e)),
                    };
                if !matches!(
                    header.kind,
                    Kind::Stdout
                        | Kind::Stderr
                        | Kind::TtyOut
                        | Kind::Termios
                        | Kind::Exit
                        | Kind::Signaled
                        | Kind::Error
                ) {
                    break Some(unavailable(ProtocolError::Unexpected {
                        got: header.kind,
                        expected: "output or the command's outcome",
                    }));
                }
                let end = HEADER_LEN + header.len as usize;
                if avail.len() < end {
                    break None;
                }
                Message::decode(header.kind, &avail[HEADER_LEN..end]).map(|m| (m, end))
            };
            match decoded {
                Ok((msg, used)) => {
                    pos += used;
                    if let Some(outcome) = self.deliver(msg) {
                        break Some(outcome);
                    }
                }
                Err(e) => break Some(unavailable(e)),
            }
        };
        self.inbuf.drain(..pos);
        result
    }

    fn deliver(&mut self, msg: Message) -> Option<Outcome> {
        match msg {
            Message::Stdout(bytes) if self.stdout_ok => {
                match write_fd(io::stdout().as_fd(), &bytes) {
                    Ok(()) => None,
                    Err(Errno::EPIPE) => Some(Outcome::Signaled(libc::SIGPIPE)),
                    Err(_) => {
                        self.stdout_ok = false;
                        None
                    }
                }
            }
            Message::Stderr(bytes) if self.stderr_ok => {
                match write_fd(io::stderr().as_fd(), &bytes) {
                    Ok(()) => None,
                    Err(Errno::EPIPE) => Some(Outcome::Signaled(libc::SIGPIPE)),
                    Err(_) => {
                        self.stderr_ok = false;
                        None
                    }
                }
            }
            Message::Stdout(_) | Message::Stderr(_) => None,
            Message::TtyOut(bytes) if self.tty_ok => {
                let Some(caller) = self.caller.as_deref_mut() else {
                    return Some(unavailable(
                        "the warden sent terminal output for a call without a terminal",
                    ));
                };
                caller.keep_output_raw();
                if write_fd(caller.output_fd(), &bytes).is_err() {
                    // EIO from a hung-up terminal and similar: nobody sees it any more.
                    self.tty_ok = false;
                }
                None
            }
            Message::TtyOut(_) => None,
            Message::Termios(settings) => match self.caller.as_deref_mut() {
                Some(caller) => {
                    caller.command_settings(settings);
                    None
                }
                None => Some(unavailable(
                    "the warden sent terminal settings for a call without a terminal",
                )),
            },
            Message::Exit(code) if (0..=255).contains(&code) => Some(Outcome::Exited(code)),
            Message::Exit(code) => Some(unavailable(format!(
                "exit status {code} from the warden is out of range 0..=255"
            ))),
            Message::Signaled(n) if (1..=64).contains(&n) => Some(Outcome::Signaled(n)),
            Message::Signaled(n) => Some(unavailable(format!(
                "signal number {n} from the warden is out of range 1..=64"
            ))),
            Message::Error { kind, message } => Some(Outcome::Failed { kind, message }),
            other => Some(unavailable(ProtocolError::Unexpected {
                got: other.kind(),
                expected: "output or the command's outcome",
            })),
        }
    }
}

/// Writes all of `data` to `fd`, waiting with poll(2) if the descriptor is non-blocking
/// (a shared pipe or terminal may have O_NONBLOCK set by someone else).
fn write_fd(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
