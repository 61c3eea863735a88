//! `clawrden-shim exec-helper`: supervises one command for an executor.
//!
//! ```text
//! clawrden-shim exec-helper [--tty | --framed] [--grace-ms N] [--cwd DIR]
//!                           [--uid U --gid G [--groups G1,G2,...]]
//!                           [--original-root DIR] [--request-id ID] [--env-keep N1,N2,...]
//!                           [--hex] [--no-parent-death] [--keep-fds N1,N2,...]
//!                           -- PROGRAM ARGV0 [ARGS...]
//! clawrden-shim exec-helper --kill --request-id ID [--signal SIG]
//! ```
//!
//! With `--uid`/`--gid` the helper itself keeps its own (root) identity for the whole
//! supervision: it opens PROGRAM as root before forking, and only the forked child drops
//! to the caller's uid, gid and groups (checked) right before exec. The caller's processes
//! therefore cannot signal the supervisor, so timeout and cancellation always reach the
//! whole tree. With `--original-root` (the mirror executor, inside a prisoner), PROGRAM is
//! the shimmed tool's path and the helper runs its original, saved under DIR by
//! install-clawrden.sh (see [`original`]); without `--groups` the supplementary groups
//! are the user's from the container's /etc/group. `--request-id` only labels the process
//! so that `--kill` (see [`kill`]) can find it. `--env-keep` passes only the named
//! variables to the command (Docker adds its own to an exec). `--hex`: PROGRAM, the
//! arguments and the `--cwd` value are hex-encoded (Docker's API carries UTF-8 only).
//! `--no-parent-death`: no SIGUSR1 when the parent dies. Under `docker exec` the parent is
//! the container runtime's short-lived process, not the executor; the mirror executor
//! tells the helper over its channel instead. `--tty`: the helper's stdio include a
//! terminal (the local executor's PTY), which becomes the command's controlling terminal.
//! `--framed`: the helper's stdin and stdout are the executor channel, over which it is
//! told how to set up the command's descriptors and moves their I/O (see [`framed`]).
//! `--keep-fds`: the caller's descriptors above 2, which the command gets as they are;
//! every other descriptor above 2 is closed for it (close-on-exec, set in the child), so
//! nothing the helper inherited from its own parent reaches the command.
//!
//! The helper is a child subreaper, so every process the command starts, even one that
//! double-forks into a new session, stays its descendant. That makes "kill the whole tree"
//! (SIGUSR1 from the executor, or the helper's parent dying) and "nothing outlives the
//! command" (leftovers are killed when the main child exits) complete. It forwards
//! SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGWINCH to the command's process group and finally
//! mirrors the command's status: the same exit code, or death by the same signal.
//!
//! Unframed, the helper never writes to stdout, and to stderr only when it fails itself.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, getppid, Gid, Pid, Uid};

use crate::sys::process::{self as sys_process, ChildCredentials, ExecImage};

mod framed;
mod kill;
mod original;

/// Exit status of the helper when it cannot do its own job (bad arguments, a failed
/// syscall before the command started): the command could not be run.
const EXIT_HELPER_FAILED: i32 = 126;
/// Default time between SIGTERM and SIGKILL for the process tree.
const DEFAULT_GRACE: Duration = Duration::from_millis(2000);
/// How long one SIGKILL round waits for children to be reaped before scanning again.
const KILL_ROUND: Duration = Duration::from_millis(50);

/// Runs the exec-helper with the arguments that followed `exec-helper`; never returns.
pub fn main(args: Vec<OsString>) -> ! {
    if args.first().is_some_and(|a| a == "--kill") {
        std::process::exit(kill::main(&args));
    }
    let options = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => fail(&format!(
            "{e}\nusage: clawrden-shim exec-helper [--tty] [--grace-ms N] [--cwd DIR] \
             [--uid U --gid G [--groups G1,G2,...]] [--original-root DIR] [--request-id ID] \
             [--env-keep NAMES] [--hex] [--no-parent-death] [--framed] [--keep-fds N1,N2,...] \
             -- PROGRAM ARGV0 [ARGS...]"
        )),
    };
    if options.framed {
        std::process::exit(framed::main(&options));
    }
    match supervise(&options) {
        Ok(End::Killed) => std::process::exit(0),
        Ok(End::Mirror(status)) => mirror(status),
        Ok(End::NotFound(message)) => {
            eprintln!(
                "clawrden: cannot execute {}: {message}",
                options.program.to_string_lossy()
            );
            std::process::exit(127)
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("clawrden: exec-helper: {message}");
    std::process::exit(EXIT_HELPER_FAILED)
}

/// Exits with the command's status, or dies of the command's fatal signal.
fn mirror(status: WaitStatus) -> ! {
    match status {
        WaitStatus::Exited(_, code) => std::process::exit(code),
        WaitStatus::Signaled(_, signal, _) => {
            sys_process::die_of_signal(signal);
            std::process::exit(128 + signal as i32)
        }
        // Only exits and deaths are ever recorded as the main child's end.
        _ => std::process::exit(EXIT_HELPER_FAILED),
    }
}

/// The identity the command runs as, when the child drops privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Credentials {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    tty: bool,
    grace: Duration,
    cwd: Option<OsString>,
    credentials: Option<Credentials>,
    /// Supplementary groups come from the container's group database (`--original-root`
    /// without `--groups`).
    lookup_groups: bool,
    /// Run the original of PROGRAM saved under this directory.
    original_root: Option<OsString>,
    /// Label for `--kill`; not otherwise used.
    request_id: Option<String>,
    /// Do not arm the parent-death signal.
    no_parent_death: bool,
    /// Stdio is the executor channel (see [`framed`]), not the command's.
    framed: bool,
    /// Descriptors above 2 the command gets as they are (the caller's, placed by the
    /// executor); every other one the helper has is closed for it.
    keep_fds: Vec<RawFd>,
    /// Only these variables reach the command (all of the helper's when `None`).
    env_keep: Option<Vec<OsString>>,
    program: OsString,
    /// `argv[0]` as the command should see it, then its arguments.
    argv: Vec<OsString>,
}

impl Options {
    fn parse(args: Vec<OsString>) -> Result<Options, String> {
        let mut tty = false;
        let mut grace = DEFAULT_GRACE;
        let mut cwd = None;
        let (mut uid, mut gid, mut groups) = (None, None, None);
        let (mut original_root, mut request_id, mut env_keep, mut hex) = (None, None, None, false);
        let mut no_parent_death = false;
        let mut framed = false;
        let mut keep_fds = Vec::new();
        let mut it = args.into_iter();
        loop {
            let Some(arg) = it.next() else {
                return Err("missing `-- PROGRAM ARGV0`".into());
            };
            let flag = arg.to_string_lossy();
            let mut value = |name: &str| {
                it.next()
                    .ok_or_else(|| format!("option {name} needs a value"))
            };
            match flag.as_ref() {
                "--" => break,
                "--tty" => tty = true,
                "--grace-ms" => {
                    grace =
                        Duration::from_millis(parse_number(&value("--grace-ms")?, "--grace-ms")?)
                }
                "--cwd" => cwd = Some(value("--cwd")?),
                "--uid" => uid = Some(Uid::from_raw(parse_id(&value("--uid")?, "--uid")?)),
                "--gid" => gid = Some(Gid::from_raw(parse_id(&value("--gid")?, "--gid")?)),
                "--groups" => {
                    let list = value("--groups")?;
                    let list = list.to_string_lossy();
                    let parsed = list
                        .split(',')
                        .filter(|g| !g.is_empty())
                        .map(|g| parse_id(OsStr::new(g), "--groups").map(Gid::from_raw))
                        .collect::<Result<Vec<_>, _>>()?;
                    groups = Some(parsed);
                }
                "--original-root" => original_root = Some(value("--original-root")?),
                "--request-id" => {
                    let id = value("--request-id")?.to_string_lossy().into_owned();
                    if !kill::valid_request_id(&id) {
                        return Err(format!(
                            "--request-id {id:?} must be 1-128 letters, digits, '.', '_' or '-'"
                        ));
                    }
                    request_id = Some(id);
                }
                "--env-keep" => {
                    let list = value("--env-keep")?;
                    env_keep = Some(
                        list.as_bytes()
                            .split(|&b| b == b',')
                            .filter(|n| !n.is_empty())
                            .map(|n| OsStr::from_bytes(n).to_owned())
                            .collect(),
                    );
                }
                "--hex" => hex = true,
                "--no-parent-death" => no_parent_death = true,
                "--framed" => framed = true,
                "--keep-fds" => {
                    let list = value("--keep-fds")?;
                    let list = list.to_string_lossy();
                    for n in list.split(',').filter(|n| !n.is_empty()) {
                        let fd = parse_id(OsStr::new(n), "--keep-fds")?;
                        match RawFd::try_from(fd) {
                            Ok(fd) if fd > 2 && fcntl(fd, FcntlArg::F_GETFD).is_ok() => {
                                keep_fds.push(fd)
                            }
                            _ => {
                                return Err(format!(
                                    "--keep-fds: {n} is not an open descriptor above 2"
                                ))
                            }
                        }
                    }
                }
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        let lookup_groups = original_root.is_some() && groups.is_none();
        let credentials = match (uid, gid, groups) {
            (None, None, None) => None,
            (Some(uid), Some(gid), groups) => Some(Credentials {
                uid,
                gid,
                groups: groups.unwrap_or_default(),
            }),
            _ => return Err("--uid and --gid go together (and --groups needs both)".into()),
        };
        if framed && tty {
            return Err("--framed sets up the command's terminal itself; drop --tty".into());
        }
        if original_root.is_some() && credentials.is_none() {
            return Err(
                "--original-root needs --uid and --gid (originals never run as root by default)"
                    .into(),
            );
        }
        let decode = |v: OsString| if hex { decode_hex(&v) } else { Ok(v) };
        let cwd = cwd.map(decode).transpose()?;
        let program = decode(it.next().ok_or("missing PROGRAM after --")?)?;
        let argv: Vec<OsString> = it.map(decode).collect::<Result<_, _>>()?;
        if argv.is_empty() {
            return Err("missing ARGV0 after PROGRAM".into());
        }
        Ok(Options {
            tty,
            grace,
            cwd,
            credentials,
            lookup_groups,
            original_root,
            request_id,
            no_parent_death,
            framed,
            keep_fds,
            env_keep,
            program,
            argv,
        })
    }
}

/// Decodes a `--hex` value (two lowercase or uppercase hex digits per byte).
fn decode_hex(value: &OsStr) -> Result<OsString, String> {
    let digits = value.as_bytes();
    let nibble = |d: u8| (d as char).to_digit(16).map(|n| n as u8);
    if !digits.len().is_multiple_of(2) {
        return Err(format!("--hex value {value:?} has an odd number of digits"));
    }
    digits
        .chunks(2)
        .map(|pair| match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
            _ => Err(format!("--hex value {value:?} is not hexadecimal")),
        })
        .collect::<Result<Vec<u8>, String>>()
        .map(OsString::from_vec)
}

fn parse_number(value: &OsStr, option: &str) -> Result<u64, String> {
    value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{option} wants a non-negative integer, not {value:?}"))
}

fn parse_id(value: &OsStr, option: &str) -> Result<u32, String> {
    let n = parse_number(value, option)?;
    u32::try_from(n).map_err(|_| format!("{option} value {n} is out of range"))
}

/// A failure of the helper itself.
#[derive(Debug)]
struct HelperError {
    what: String,
    cause: String,
}

impl fmt::Display for HelperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.cause)
    }
}

fn failed(what: impl Into<String>) -> impl FnOnce(Errno) -> HelperError {
    let what = what.into();
    move |e| HelperError {
        what,
        cause: e.desc().to_string(),
    }
}

/// How supervision ended.
#[derive(Debug)]
enum End {
    /// The executor (or the helper's parent dying) asked for the tree to be killed.
    Killed,
    /// The main child ended with this status; leftovers are already gone.
    Mirror(WaitStatus),
    /// `--original-root`: the tool has no original to run (exit 127).
    NotFound(String),
}

/// The signals the helper handles through its signalfd.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGUSR1,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set
}

/// Sets SIGUSR1 as the parent-death signal and checks the parent did not die before that
/// took effect (it would then never be sent). Returns false when the parent is gone.
fn arm_parent_death_signal(parent: Pid, options: &Options) -> Result<bool, HelperError> {
    if options.no_parent_death {
        return Ok(true);
    }
    nix::sys::prctl::set_pdeathsig(Signal::SIGUSR1).map_err(failed("prctl(PR_SET_PDEATHSIG)"))?;
    Ok(getppid() == parent)
}

fn supervise(options: &Options) -> Result<End, HelperError> {
    if options.tty {
        // Under `docker exec --tty` the helper leads the session that owns the terminal;
        // the command's own session can only take it once the helper lets go.
        sys_process::release_controlling_terminal()
            .map_err(failed("releasing the controlling terminal"))?;
    }
    let Some(signal_fd) = begin_supervision(options)? else {
        return Ok(End::Killed);
    };
    let mut prepared = match prepare(options)? {
        Ok(p) => p,
        Err(not_found) => return Ok(End::NotFound(not_found)),
    };
    let child = sys_process::spawn(&mut prepared.image).map_err(failed("fork"))?;
    drop(prepared);

    loop {
        wait_for_signals(&signal_fd, None);
        let mut main_status = None;
        while let Some(info) = read_signal(&signal_fd) {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGUSR1) => {
                    kill_tree(&signal_fd, options.grace);
                    return Ok(End::Killed);
                }
                Ok(Signal::SIGCHLD) => {
                    if let Some(status) = reap(Some(child)).main_status {
                        main_status = Some(status);
                    }
                }
                Ok(signal) if main_status.is_none() => forward(child, signal),
                _ => {}
            }
        }
        if let Some(status) = main_status {
            kill_tree(&signal_fd, options.grace);
            return Ok(End::Mirror(status));
        }
    }
}

/// Blocks the handled signals (from the start: a SIGUSR1 or SIGTERM that arrives early
/// stays pending and is handled by the loop instead of killing the helper before it can
/// clean up), becomes a subreaper and arms the parent-death signal. Returns the signalfd,
/// or `None` when the parent is already gone.
fn begin_supervision(options: &Options) -> Result<Option<SignalFd>, HelperError> {
    let signals = handled_signals();
    signals.thread_block().map_err(failed("blocking signals"))?;
    let parent = getppid();
    nix::sys::prctl::set_child_subreaper(true).map_err(failed("prctl(PR_SET_CHILD_SUBREAPER)"))?;
    if !arm_parent_death_signal(parent, options)? {
        return Ok(None);
    }
    SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map(Some)
        .map_err(failed("signalfd"))
}

/// The command, ready to fork and execute.
struct Prepared {
    image: ExecImage,
    /// Kept open until the fork: the interpreter reads the script through /dev/fd/N.
    _script_fd: Option<OwnedFd>,
}

/// Resolves the program (its original, with `--original-root`), opens it and builds the
/// image the child executes. `Ok(Err(message))`: there is no such program (exit 127).
fn prepare(options: &Options) -> Result<Result<Prepared, String>, HelperError> {
    let mut program = options.program.clone();
    let mut argv_owned = options.argv.clone();
    let mut script_fd = None;
    // With credentials the helper stays root for the whole supervision: it opens the
    // program (or the original) now, as root, and only the forked child drops to the
    // caller's identity, just before exec. A supervisor running as the agent's uid could
    // be SIGKILLed by the agent, orphaning the command's tree out of reach of timeout and
    // cancel; a root supervisor cannot be signalled by the agent at all.
    let (program_fd, child_credentials) = match &options.credentials {
        Some(credentials) => {
            let fd = match &options.original_root {
                Some(root) => {
                    match original::resolve(
                        Path::new(root),
                        Path::new(&options.program),
                        &options.argv,
                    ) {
                        Ok(resolved) => {
                            program = resolved.program;
                            argv_owned = resolved.argv;
                            script_fd = resolved.script_fd;
                            resolved.program_fd
                        }
                        Err(original::OriginalError::NotFound(m)) => return Ok(Err(m)),
                        Err(original::OriginalError::Unusable(m)) => {
                            return Err(HelperError {
                                what: "cannot open the original".into(),
                                cause: m,
                            })
                        }
                    }
                }
                None => open_for_exec(&options.program)?,
            };
            let mut credentials = credentials.clone();
            if options.lookup_groups {
                credentials.groups = groups_of(credentials.uid, credentials.gid)?;
            }
            let child = ChildCredentials {
                uid: credentials.uid.as_raw(),
                gid: credentials.gid.as_raw(),
                groups: credentials.groups.iter().map(|g| g.as_raw()).collect(),
            };
            (Some(fd), Some(child))
        }
        None => (None, None),
    };

    let env: Vec<Vec<u8>> = std::env::vars_os()
        .filter(|(k, _)| {
            options
                .env_keep
                .as_ref()
                .is_none_or(|keep| keep.iter().any(|n| n == k))
        })
        .map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            entry
        })
        .collect();
    let argv: Vec<&OsStr> = argv_owned.iter().map(OsString::as_os_str).collect();
    let mut image = ExecImage::new(
        &program,
        program_fd,
        &argv,
        &env,
        options.cwd.as_deref(),
        options.tty,
    )
    .map_err(|e| HelperError {
        what: "cannot execute the command".into(),
        cause: e.0,
    })?;
    if let Some(credentials) = &child_credentials {
        image.drop_privileges_to(credentials);
    }
    // The command gets the caller's descriptors and the script its interpreter reads, and
    // no other descriptor: nothing the helper inherited from its own parent leaks.
    let mut keep = options.keep_fds.clone();
    keep.extend(script_fd.as_ref().map(|fd| fd.as_raw_fd()));
    keep.extend(image.inheritable_program_fd());
    image.keep_only(keep);
    Ok(Ok(Prepared {
        image,
        _script_fd: script_fd,
    }))
}

/// Opens the program while still privileged. A script keeps the fd inheritable (no
/// O_CLOEXEC) so that, run via `execveat(AT_EMPTY_PATH)`, its interpreter can read it
/// through `/dev/fd/N`; any other program gets close-on-exec so the fd does not leak into
/// the command.
fn open_for_exec(program: &OsStr) -> Result<OwnedFd, HelperError> {
    let file = File::open(program).map_err(|e| HelperError {
        what: format!("cannot open {}", program.to_string_lossy()),
        cause: e.to_string(),
    })?;
    let mut magic = [0u8; 2];
    let is_script = nix::sys::uio::pread(&file, &mut magic, 0) == Ok(2) && magic == *b"#!";
    let fd = OwnedFd::from(file);
    if is_script {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(failed("clearing FD_CLOEXEC on the program"))?;
    }
    Ok(fd)
}

/// The supplementary groups of `uid`'s user in the group database (inside a prisoner:
/// its /etc/group), including `gid`; just `gid` when the uid has no user entry.
fn groups_of(uid: Uid, gid: Gid) -> Result<Vec<Gid>, HelperError> {
    let user = nix::unistd::User::from_uid(uid).map_err(failed(format!("looking up uid {uid}")))?;
    match user {
        None => Ok(vec![gid]),
        Some(user) => {
            let name = std::ffi::CString::new(user.name.as_bytes()).map_err(|_| HelperError {
                what: format!("looking up the groups of uid {uid}"),
                cause: "the user name contains a NUL byte".into(),
            })?;
            nix::unistd::getgrouplist(&name, gid)
                .map_err(failed(format!("getgrouplist({})", user.name)))
        }
    }
}

/// Waits until the signalfd is readable or `timeout` passes (`None`: no limit).
fn wait_for_signals(signal_fd: &SignalFd, timeout: Option<Duration>) {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        // Round up so a short remainder does not turn into a busy loop of zero timeouts.
        Some(t) => {
            PollTimeout::try_from(t + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX)
        }
    };
    let mut fds = [PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
    // EINTR cannot happen (every handled signal is blocked); other errors surface as an
    // empty read below.
    let _ = poll(&mut fds, timeout);
}

fn read_signal(signal_fd: &SignalFd) -> Option<nix::sys::signalfd::siginfo> {
    signal_fd.read_signal().ok().flatten()
}

/// Result of one reaping pass.
struct Reaped {
    /// Status of `main` if it was reaped in this pass.
    main_status: Option<WaitStatus>,
    /// Whether any child is still running (false once waitpid reports ECHILD).
    children_left: bool,
}

/// Reaps every child that has ended, without blocking.
fn reap(main: Option<Pid>) -> Reaped {
    let mut main_status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                return Reaped {
                    main_status,
                    children_left: true,
                }
            }
            Ok(status @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _))) => {
                if Some(pid) == main {
                    main_status = Some(status);
                }
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => {
                return Reaped {
                    main_status,
                    children_left: false,
                }
            }
        }
    }
}

/// Forwards a signal to the command's process group. Before the child's setsid() the
/// group does not exist yet; the child itself then gets it (still blocked, so it is
/// delivered the moment the child unblocks signals before exec).
fn forward(child: Pid, signal: Signal) {
    if killpg(child, signal) == Err(Errno::ESRCH) {
        let _ = kill(child, signal);
    }
}

/// Kills every descendant: SIGTERM (plus SIGCONT so stopped ones act on it), up to `grace`
/// for them to exit, then SIGKILL rounds over fresh scans until no child is left. Because
/// the helper is a subreaper, "no child left" means no descendant left.
fn kill_tree(signal_fd: &SignalFd, grace: Duration) {
    if !reap(None).children_left {
        return;
    }
    let me = getpid().as_raw();
    for pid in descendants(me) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
    }
    let deadline = Instant::now() + grace;
    loop {
        if !reap(None).children_left {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        wait_for_signals(signal_fd, Some(deadline - now));
        while read_signal(signal_fd).is_some() {}
    }
    loop {
        for pid in descendants(me) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        wait_for_signals(signal_fd, Some(KILL_ROUND));
        while read_signal(signal_fd).is_some() {}
        if !reap(None).children_left {
            return;
        }
    }
}

/// The pids of all live descendants of `root`, from one scan of /proc.
fn descendants(root: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read(entry.path().join("stat")) else {
            continue;
        };
        if let Some(ppid) = parse_stat_ppid(&stat) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(parent) = stack.pop() {
        if let Some(kids) = children.get(&parent) {
            for &kid in kids {
                if kid != root && !found.contains(&kid) {
                    found.push(kid);
                    stack.push(kid);
                }
            }
        }
    }
    found
}

/// The parent pid from the contents of `/proc/PID/stat`: `pid (comm) state ppid ...`.
/// `comm` may contain spaces and parentheses, so fields are counted after the LAST ')'.
fn parse_stat_ppid(stat: &[u8]) -> Option<i32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn stat_ppid_follows_the_last_parenthesis() {
        let stat = b"4242 (evil) 1 2 (x) S 17 4242 4242 0 -1 4194560 107 0 0 0";
        assert_eq!(parse_stat_ppid(stat), Some(17));
        assert_eq!(parse_stat_ppid(b"1 (systemd) S 0 1 1 0 -1"), Some(0));
        assert_eq!(parse_stat_ppid(b"7 (a b) R 3 7 7"), Some(3));
    }

    #[test]
    fn stat_without_parenthesis_or_ppid_is_rejected() {
        assert_eq!(parse_stat_ppid(b"4242 evil S 17"), None);
        assert_eq!(parse_stat_ppid(b"4242 (evil) S"), None);
        assert_eq!(parse_stat_ppid(b"4242 (evil) S x"), None);
    }

    #[test]
    fn descendants_of_this_process_include_a_spawned_grandchild() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("read grandchild pid");
        let grandchild: i32 = line.trim().parse().expect("pid");
        let found = descendants(std::process::id() as i32);
        let _ = kill(Pid::from_raw(grandchild), Signal::SIGKILL);
        let _ = child.wait();
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
        assert!(found.contains(&grandchild), "{found:?}");
    }

    #[test]
    fn options_parse_the_full_command_line() {
        let o = Options::parse(os(&[
            "--tty",
            "--grace-ms",
            "250",
            "--cwd",
            "/tmp",
            "--uid",
            "1000",
            "--gid",
            "100",
            "--groups",
            "10,20",
            "--",
            "/bin/ls",
            "ls",
            "-l",
        ]))
        .expect("valid");
        assert_eq!(
            o,
            Options {
                tty: true,
                grace: Duration::from_millis(250),
                cwd: Some("/tmp".into()),
                credentials: Some(Credentials {
                    uid: Uid::from_raw(1000),
                    gid: Gid::from_raw(100),
                    groups: vec![Gid::from_raw(10), Gid::from_raw(20)],
                }),
                lookup_groups: false,
                original_root: None,
                request_id: None,
                no_parent_death: false,
                framed: false,
                keep_fds: Vec::new(),
                env_keep: None,
                program: "/bin/ls".into(),
                argv: os(&["ls", "-l"]),
            }
        );
    }

    #[test]
    fn options_default_grace_is_two_seconds_and_arguments_after_dashes_are_verbatim() {
        let o = Options::parse(os(&["--", "/bin/echo", "echo", "--tty", "--"])).expect("valid");
        assert_eq!(o.grace, Duration::from_secs(2));
        assert!(!o.tty);
        assert_eq!(o.argv, os(&["echo", "--tty", "--"]));
    }

    #[test]
    fn options_reject_incomplete_command_lines() {
        assert_eq!(
            Options::parse(os(&["/bin/ls", "ls"])).unwrap_err(),
            "unknown option \"/bin/ls\""
        );
        assert_eq!(
            Options::parse(os(&["--", "/bin/ls"])).unwrap_err(),
            "missing ARGV0 after PROGRAM"
        );
        assert_eq!(
            Options::parse(os(&["--uid", "1", "--", "/bin/ls", "ls"])).unwrap_err(),
            "--uid and --gid go together (and --groups needs both)"
        );
        assert_eq!(
            Options::parse(os(&["--grace-ms", "soon", "--", "/bin/ls", "ls"])).unwrap_err(),
            "--grace-ms wants a non-negative integer, not \"soon\""
        );
        assert_eq!(
            Options::parse(os(&["--cwd"])).unwrap_err(),
            "option --cwd needs a value"
        );
    }
}
