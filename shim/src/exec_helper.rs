//! `clawrden-shim exec-helper`: supervises one command for an executor.
//!
//! ```text
//! clawrden-shim exec-helper [--tty | --framed] [--grace-ms N] [--cwd DIR]
//!                           [--uid U --gid G [--groups G1,G2,...]]
//!                           [--original-root DIR] [--request-id ID] [--env-block N]
//!                           [--keep-fds FD,...] [--time-limit-ms N] [--cgroup DIR]
//!                           [--hex] [--no-parent-death] -- PROGRAM ARGV0 [ARGS...]
//! clawrden-shim exec-helper --kill --request-id ID [--signal SIG]
//! ```
//!
//! With `--uid`/`--gid` the helper itself keeps its own (root) identity for the whole
//! supervision: it opens PROGRAM as root before forking, and only the forked child drops
//! to the caller's uid, gid and groups (checked) right before exec. The caller's processes
//! therefore cannot signal the supervisor, so timeout and cancellation always reach the
//! whole tree. With `--original-root` (the mirror executor, inside a prisoner), PROGRAM is
//! the command's *name* (the basename of ARGV0, which the policy decided on) and the
//! helper runs the original of that name, saved under DIR by install-clawrden.sh and found
//! by a fixed search order (see [`original`]); without `--groups` the supplementary groups
//! are the user's from the container's /etc/group. `--request-id` only labels the process
//! so that `--kill` (see [`kill`]) can find it. `--env-block N`: the command's whole
//! environment is the block in `CLAWRDEN_EXEC_ENV_0..N-1` (see
//! `clawrden_protocol::exec_env`), so the caller's variables never become the helper's
//! own; without it the command inherits the helper's environment. `--keep-fds`: the
//! caller's descriptors above 2 (placed by the executor), which the command gets as they
//! are; every other descriptor above 2 is closed for it (close-on-exec, set in the child)
//! except the script an interpreter reads through /dev/fd/N, so nothing the helper
//! inherited from its own parent reaches the command. `--time-limit-ms`: the helper kills
//! the tree itself after that long (exit 124), even if the executor is gone. `--cgroup
//! DIR`: the command's child joins the cgroup v2 DIR before it drops privileges, and the
//! tree kill ends with `cgroup.kill`. `--hex`: PROGRAM, the arguments and the `--cwd`
//! value are hex-encoded (Docker's API carries UTF-8 only). `--no-parent-death`: no
//! SIGUSR1 when the parent dies. Under `docker exec` the parent is the container runtime's
//! short-lived process, not the executor; the mirror executor tells the helper over its
//! channel instead (`--kill` is its last resort). `--tty`: the helper's stdio include a
//! terminal (the local executor's PTY), which becomes the command's controlling terminal.
//! `--framed`: the helper's stdin and stdout are the executor channel, over which it is
//! told how to set up the command's descriptors and moves their I/O (see [`framed`]).
//!
//! The helper is a child subreaper, so every process the command starts, even one that
//! double-forks into a new session, stays its descendant. That makes "kill the whole tree"
//! (SIGUSR1 from the executor, or the helper's parent dying) and "nothing outlives the
//! command" (leftovers are killed when the main child exits) complete. It forwards
//! SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGWINCH to the command's process group and finally
//! mirrors the command's status: the same exit code, or death by the same signal.
//!
//! Unframed, the helper never writes to stdout, and to stderr only when it fails itself or
//! its own time limit ends the command.

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

use clawrden_protocol::exec_env;

use crate::sys::process::{self as sys_process, ChildCredentials, ExecImage};

mod framed;
mod kill;
mod original;

/// Exit status of the helper when it cannot do its own job (bad arguments, a failed
/// syscall before the command started): the command could not be run.
const EXIT_HELPER_FAILED: i32 = 126;
/// Exit status when the helper's own `--time-limit-ms` ended the command (as `timeout`).
const EXIT_TIME_LIMIT: i32 = 124;
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
             [--env-block N] [--keep-fds FD,...] [--time-limit-ms N] [--cgroup DIR] [--hex] \
             [--no-parent-death] [--framed] -- PROGRAM ARGV0 [ARGS...]"
        )),
    };
    if options.framed {
        std::process::exit(framed::main(&options));
    }
    match supervise(&options) {
        Ok(End::Killed) => std::process::exit(0),
        Ok(End::TimeLimit(limit)) => {
            eprintln!(
                "clawrden: time limit of {} ms reached; process tree killed",
                limit.as_millis()
            );
            std::process::exit(EXIT_TIME_LIMIT)
        }
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
    /// The command's environment is this many `CLAWRDEN_EXEC_ENV_*` chunks (all of the
    /// helper's own variables when `None`).
    env_block: Option<usize>,
    /// Descriptors above 2 the command gets as they are (the caller's, placed by the
    /// executor); every other one the helper has is closed for it.
    keep_fds: Vec<RawFd>,
    /// The helper kills the tree itself after this long.
    time_limit: Option<Duration>,
    /// The cgroup v2 directory the command joins.
    cgroup: Option<OsString>,
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
        let (mut original_root, mut request_id, mut hex) = (None, None, false);
        let mut no_parent_death = false;
        let mut framed = false;
        let (mut env_block, mut keep_fds, mut time_limit, mut cgroup) =
            (None, Vec::new(), None, None);
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
                "--env-block" => {
                    let count = parse_number(&value("--env-block")?, "--env-block")?;
                    let count = usize::try_from(count)
                        .ok()
                        .filter(|c| (1..=exec_env::MAX_CHUNKS).contains(c))
                        .ok_or_else(|| {
                            format!(
                                "--env-block {count}: the count must be 1 to {}",
                                exec_env::MAX_CHUNKS
                            )
                        })?;
                    env_block = Some(count);
                }
                "--keep-fds" => {
                    let list = value("--keep-fds")?;
                    for fd in list.to_string_lossy().split(',').filter(|f| !f.is_empty()) {
                        let n = parse_number(OsStr::new(fd), "--keep-fds")?;
                        match RawFd::try_from(n) {
                            Ok(fd) if fd > 2 => keep_fds.push(fd),
                            _ => {
                                return Err(format!("--keep-fds: {n} is not a descriptor above 2"))
                            }
                        }
                    }
                }
                "--time-limit-ms" => {
                    time_limit = Some(Duration::from_millis(parse_number(
                        &value("--time-limit-ms")?,
                        "--time-limit-ms",
                    )?))
                }
                "--cgroup" => cgroup = Some(value("--cgroup")?),
                "--hex" => hex = true,
                "--no-parent-death" => no_parent_death = true,
                "--framed" => framed = true,
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
        if original_root.is_some() {
            // The original is chosen by the name the policy decided on, nothing else.
            if !original::is_plain_command_name(program.as_bytes()) {
                return Err(format!(
                    "with --original-root, PROGRAM must be a command name, not {:?}",
                    program.to_string_lossy()
                ));
            }
            if basename(argv[0].as_bytes()) != program.as_bytes() {
                return Err(format!(
                    "with --original-root, PROGRAM {:?} must be the basename of ARGV0 {:?}",
                    program.to_string_lossy(),
                    argv[0].to_string_lossy()
                ));
            }
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
            env_block,
            keep_fds,
            time_limit,
            cgroup,
            program,
            argv,
        })
    }
}

/// The part of `path` after its last '/'.
fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(slash) => &path[slash + 1..],
        None => path,
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
    /// `--time-limit-ms` passed; the tree was killed.
    TimeLimit(Duration),
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
    let deadline = options.time_limit.map(|limit| Instant::now() + limit);
    let mut prepared = match prepare(options)? {
        Ok(p) => p,
        Err(not_found) => return Ok(End::NotFound(not_found)),
    };
    let child = sys_process::spawn(&mut prepared.image).map_err(failed("fork"))?;
    drop(prepared);
    let cgroup = options.cgroup.as_deref().map(Path::new);

    loop {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            kill_tree(&signal_fd, options.grace, cgroup);
            return Ok(End::TimeLimit(options.time_limit.unwrap_or_default()));
        }
        wait_for_signals(&signal_fd, remaining);
        let mut main_status = None;
        while let Some(info) = read_signal(&signal_fd) {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGUSR1) => {
                    kill_tree(&signal_fd, options.grace, cgroup);
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
            kill_tree(&signal_fd, options.grace, cgroup);
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
    /// What runs, as the `Started` frame reports it: with `--original-root` the original
    /// of the command's name (a script's own, even when its interpreter's original is
    /// what executes), else PROGRAM.
    program: OsString,
    /// Kept open until the fork: the interpreter reads the script through /dev/fd/N.
    _script_fd: Option<OwnedFd>,
}

/// Resolves the program (its original, with `--original-root`), opens it and builds the
/// image the child executes. `Ok(Err(message))`: there is no such program (exit 127).
fn prepare(options: &Options) -> Result<Result<Prepared, String>, HelperError> {
    // Decoded before anything is opened, so a bad block fails before any side effect.
    let env = command_environment(options)?;
    if let Some(fd) = options
        .keep_fds
        .iter()
        .find(|&&fd| fcntl(fd, FcntlArg::F_GETFD).is_err())
    {
        return Err(HelperError {
            what: format!("--keep-fds {fd}"),
            cause: "not an open descriptor".into(),
        });
    }
    let mut program = options.program.clone();
    let mut shown = options.program.clone();
    let mut argv_owned = options.argv.clone();
    // Descriptors the command keeps besides 0-2: the caller's `--keep-fds`, and the script
    // an interpreter reads through /dev/fd/N (kept open until the fork).
    let mut keep_fds = options.keep_fds.clone();
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
                    match original::resolve(Path::new(root), &options.program, &options.argv) {
                        Ok(resolved) => {
                            program = resolved.program;
                            shown = resolved.original;
                            argv_owned = resolved.argv;
                            if resolved.program_fd_inherited {
                                keep_fds.push(resolved.program_fd.as_raw_fd());
                            }
                            if let Some(script) = &resolved.script_fd {
                                keep_fds.push(script.as_raw_fd());
                            }
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
                None => {
                    let (fd, inherited) = open_for_exec(&options.program)?;
                    if inherited {
                        keep_fds.push(fd.as_raw_fd());
                    }
                    fd
                }
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
    if let Some(dir) = &options.cgroup {
        image.join_cgroup(Path::new(dir)).map_err(|e| HelperError {
            what: "cannot use the cgroup".into(),
            cause: e.0,
        })?;
    }
    if let Some(credentials) = &child_credentials {
        image.drop_privileges_to(credentials);
    }
    // Nothing but 0-2, the caller's descriptors and the script reaches the command:
    // nothing the helper inherited from its own parent leaks.
    image.keep_only(keep_fds);
    Ok(Ok(Prepared {
        image,
        program: shown,
        _script_fd: script_fd,
    }))
}

/// The command's environment: the decoded `--env-block`, or every variable of the helper.
fn command_environment(options: &Options) -> Result<Vec<Vec<u8>>, HelperError> {
    match options.env_block {
        Some(count) => exec_env::decode(count, |i| {
            std::env::var_os(format!("{}{i}", exec_env::CHUNK_PREFIX)).map(OsString::into_vec)
        })
        .map_err(|cause| HelperError {
            what: "cannot read the command's environment".into(),
            cause,
        }),
        None => Ok(std::env::vars_os()
            .map(|(k, v)| {
                let mut entry = k.into_vec();
                entry.push(b'=');
                entry.extend_from_slice(v.as_bytes());
                entry
            })
            .collect()),
    }
}

/// Opens the program while still privileged. A script keeps the fd inheritable (no
/// O_CLOEXEC) so that, run via `execveat(AT_EMPTY_PATH)`, its interpreter can read it
/// through `/dev/fd/N`; any other program gets close-on-exec so the fd does not leak into
/// the command.
fn open_for_exec(program: &OsStr) -> Result<(OwnedFd, bool), HelperError> {
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
    Ok((fd, is_script))
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
/// the helper is a subreaper, "no child left" means no descendant left. With a cgroup,
/// everything still in it is killed too (`cgroup.kill`), whatever became of its parent.
fn kill_tree(signal_fd: &SignalFd, grace: Duration, cgroup: Option<&Path>) {
    kill_tree_in_rounds(signal_fd, grace, cgroup);
    kill_cgroup(cgroup);
}

fn kill_tree_in_rounds(signal_fd: &SignalFd, grace: Duration, cgroup: Option<&Path>) {
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
        kill_cgroup(cgroup);
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

/// SIGKILLs every process in the cgroup `dir` (`cgroup.kill`, Linux 5.14+). Best effort:
/// the tree is killed by pid as well.
fn kill_cgroup(dir: Option<&Path>) {
    if let Some(dir) = dir {
        let _ = std::fs::write(dir.join("cgroup.kill"), b"1");
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
                env_block: None,
                keep_fds: Vec::new(),
                time_limit: None,
                cgroup: None,
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
    fn options_parse_env_block_kept_fds_time_limit_and_cgroup() {
        let o = Options::parse(os(&[
            "--env-block",
            "2",
            "--keep-fds",
            "3,7",
            "--time-limit-ms",
            "1500",
            "--cgroup",
            "/sys/fs/cgroup/x",
            "--",
            "/bin/ls",
            "ls",
        ]))
        .expect("valid");
        assert_eq!(o.env_block, Some(2));
        assert_eq!(o.keep_fds, [3, 7]);
        assert_eq!(o.time_limit, Some(Duration::from_millis(1500)));
        assert_eq!(o.cgroup, Some("/sys/fs/cgroup/x".into()));
        assert_eq!(
            Options::parse(os(&["--keep-fds", "2", "--", "/bin/ls", "ls"])).unwrap_err(),
            "--keep-fds: 2 is not a descriptor above 2"
        );
        assert_eq!(
            Options::parse(os(&["--env-block", "0", "--", "/bin/ls", "ls"])).unwrap_err(),
            "--env-block 0: the count must be 1 to 48"
        );
    }

    #[test]
    fn with_original_root_the_program_is_the_name_argv0_was_invoked_as() {
        let base = ["--original-root", "/o", "--uid", "1", "--gid", "1", "--"];
        let parse = |rest: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(rest);
            Options::parse(os(&args))
        };
        assert_eq!(parse(&["cat", "/usr/bin/cat", "x"]).unwrap().program, "cat");
        assert_eq!(parse(&["cat", "cat"]).unwrap().argv, os(&["cat"]));
        assert_eq!(
            parse(&["/usr/bin/rm", "cat"]).unwrap_err(),
            "with --original-root, PROGRAM must be a command name, not \"/usr/bin/rm\""
        );
        assert_eq!(
            parse(&["rm", "cat"]).unwrap_err(),
            "with --original-root, PROGRAM \"rm\" must be the basename of ARGV0 \"cat\""
        );
        assert!(parse(&["..", ".."]).is_err());
        assert!(parse(&["", "/usr/bin/rm/"]).is_err());
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
