//! The exec-helper's raw process syscalls: fork + exec of the supervised command, and dying
//! of the same signal as the command did.
//!
//! Everything the forked child touches is built before `fork()`, so the child runs only
//! async-signal-safe code: no allocation, no locks, just syscalls on prepared buffers.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::ptr;

use libc::c_char;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Highest signal number whose disposition the child resets (covers the real-time range).
const MAX_SIGNAL: libc::c_int = 64;

/// Everything the child needs between `fork()` and `exec`, prepared in advance.
pub struct ExecImage {
    program: CString,
    /// The program opened while still privileged; executed with `execveat(AT_EMPTY_PATH)`.
    program_fd: Option<OwnedFd>,
    cwd: Option<CString>,
    tty: bool,
    // The pointer arrays below point into these; they must live as long as the image.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    /// `clawrden: cannot execute PROGRAM: `
    exec_error_prefix: Vec<u8>,
    /// `clawrden: cannot change directory to DIR: `
    chdir_error_prefix: Vec<u8>,
}

/// A string that cannot be passed to `exec` because it holds a NUL byte.
#[derive(Debug)]
pub struct NulByte(pub String);

fn c_string(what: &str, s: &OsStr) -> Result<CString, NulByte> {
    CString::new(s.as_bytes()).map_err(|_| NulByte(format!("{what} {s:?} contains a NUL byte")))
}

impl ExecImage {
    /// Prepares `program` with `argv` and `env` (`NAME=value` entries), run in `cwd`.
    /// With `program_fd`, the child executes that open file instead of the path.
    pub fn new(
        program: &OsStr,
        program_fd: Option<OwnedFd>,
        argv: &[&OsStr],
        env: &[Vec<u8>],
        cwd: Option<&OsStr>,
        tty: bool,
    ) -> Result<ExecImage, NulByte> {
        let program_c = c_string("program path", program)?;
        let argv_c = argv
            .iter()
            .map(|a| c_string("argument", a))
            .collect::<Result<Vec<_>, _>>()?;
        let envp_c = env
            .iter()
            .map(|e| c_string("environment entry", OsStr::from_bytes(e)))
            .collect::<Result<Vec<_>, _>>()?;
        let cwd_c = cwd.map(|d| c_string("directory", d)).transpose()?;
        let argv_ptrs = argv_c
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(ptr::null()))
            .collect();
        let envp_ptrs = envp_c
            .iter()
            .map(|e| e.as_ptr())
            .chain(std::iter::once(ptr::null()))
            .collect();
        let mut exec_error_prefix = b"clawrden: cannot execute ".to_vec();
        exec_error_prefix.extend_from_slice(program.as_bytes());
        exec_error_prefix.extend_from_slice(b": ");
        let mut chdir_error_prefix = b"clawrden: cannot change directory to ".to_vec();
        chdir_error_prefix.extend_from_slice(cwd.map(OsStr::as_bytes).unwrap_or_default());
        chdir_error_prefix.extend_from_slice(b": ");
        Ok(ExecImage {
            program: program_c,
            program_fd,
            cwd: cwd_c,
            tty,
            _argv: argv_c,
            _envp: envp_c,
            argv_ptrs,
            envp_ptrs,
            exec_error_prefix,
            chdir_error_prefix,
        })
    }
}

/// Forks; the child becomes a session leader (taking fd 0 as its controlling terminal with
/// `tty`), gets default signal dispositions and an empty signal mask, changes directory
/// and executes the image. Returns the child's pid to the parent.
///
/// If the child cannot start the program it writes one line to fd 2 and exits 127 (the
/// program does not exist) or 126 (any other failure).
///
/// Must be called while the process is single-threaded (the exec-helper always is).
pub fn spawn(image: &ExecImage) -> nix::Result<Pid> {
    // SAFETY: the exec-helper is single-threaded when it calls this, and the child branch
    // only calls `child_exec`, which performs async-signal-safe syscalls on buffers that
    // were allocated before the fork and never returns.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => child_exec(image),
    }
}

/// The child side of [`spawn`]. Async-signal-safe: no allocation.
fn child_exec(image: &ExecImage) -> ! {
    // SAFETY: setsid takes no pointers; the child of fork() is never a group leader, so it
    // cannot fail with EPERM.
    unsafe { libc::setsid() };
    if image.tty {
        // SAFETY: TIOCSCTTY takes an int argument (0: do not steal the terminal).
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } == -1 {
            child_fail(
                b"clawrden: cannot make stdin the controlling terminal: ",
                126,
            );
        }
    }
    for sig in 1..=MAX_SIGNAL {
        // SAFETY: installing SIG_DFL involves no handler code; invalid numbers (SIGKILL,
        // SIGSTOP, libc-reserved ones) just fail with EINVAL, which is fine.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    if let Some(dir) = &image.cwd {
        // SAFETY: `dir` is a valid NUL-terminated string owned by the image.
        if unsafe { libc::chdir(dir.as_ptr()) } == -1 {
            child_fail(&image.chdir_error_prefix, 126);
        }
    }
    // Unblock last: a signal that arrived meanwhile is now delivered with its default
    // action, exactly as if it had reached the command itself.
    // SAFETY: an empty set built on the stack; the old mask is not requested.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
    }
    match &image.program_fd {
        // SAFETY: the fd is open; the path is the empty C string, as AT_EMPTY_PATH wants;
        // argv and envp are NULL-terminated arrays of pointers into strings the image owns.
        Some(fd) => unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd.as_raw_fd(),
                c"".as_ptr(),
                image.argv_ptrs.as_ptr(),
                image.envp_ptrs.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
        },
        // SAFETY: as above, with the program's NUL-terminated path.
        None => unsafe {
            libc::execve(
                image.program.as_ptr(),
                image.argv_ptrs.as_ptr(),
                image.envp_ptrs.as_ptr(),
            );
        },
    }
    let status = if Errno::last() == Errno::ENOENT {
        127
    } else {
        126
    };
    child_fail(&image.exec_error_prefix, status)
}

/// Writes `prefix`, the text of the current errno and a newline to fd 2, then `_exit`s.
fn child_fail(prefix: &[u8], status: libc::c_int) -> ! {
    let reason = Errno::last().desc().as_bytes();
    for part in [prefix, reason, b"\n"] {
        // SAFETY: writing a valid buffer to fd 2; a failed write cannot be reported anyway.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
    // SAFETY: _exit skips atexit handlers and stdio flushing, as a forked child must.
    unsafe { libc::_exit(status) }
}

/// Makes the calling process die of `signal` as the command did: core dumps disabled,
/// default disposition, unblocked, raised. Returns only if the signal did not kill it
/// (a stopping or ignored-by-default signal).
pub fn die_of_signal(signal: Signal) {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit on the stack; lowering a limit needs no privilege.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    // SAFETY: SIG_DFL has no handler code to run.
    unsafe { libc::signal(signal as libc::c_int, libc::SIG_DFL) };
    let mut only = nix::sys::signal::SigSet::empty();
    only.add(signal);
    let _ = only.thread_unblock();
    let _ = nix::sys::signal::raise(signal);
}
