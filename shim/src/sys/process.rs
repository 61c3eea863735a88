//! The exec-helper's raw process syscalls: fork + exec of the supervised command (dropping
//! privileges in the child only), and dying of the same signal as the command did.
//!
//! Everything the forked child touches is built before `fork()`, so the child runs only
//! async-signal-safe code: no allocation, no locks, just syscalls on prepared buffers.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::ptr;

use libc::c_char;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Highest signal number whose disposition the child resets (covers the real-time range).
const MAX_SIGNAL: libc::c_int = 64;

/// The identity the child switches to between `fork()` and `exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildCredentials {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups (any order; duplicates allowed).
    pub groups: Vec<libc::gid_t>,
}

/// [`ChildCredentials`] prepared for the child: the groups sorted as the kernel keeps them
/// (so `getgroups` can be compared element by element), a buffer for that check, and the
/// error prefix.
struct PreparedCredentials {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    /// Scratch space for `getgroups` in the child (one slot more than expected, so an
    /// extra group shows up as a longer list instead of an error).
    groups_check: Vec<libc::gid_t>,
    /// `clawrden: cannot drop privileges to uid U gid G: `
    error_prefix: Vec<u8>,
}

/// Everything the child needs between `fork()` and `exec`, prepared in advance.
pub struct ExecImage {
    program: CString,
    /// Dropped to in the child, after the fork and before the exec.
    credentials: Option<PreparedCredentials>,
    /// The program opened while still privileged; executed with `execveat(AT_EMPTY_PATH)`.
    program_fd: Option<OwnedFd>,
    cwd: Option<CString>,
    tty: bool,
    /// Descriptors the child installs as its 0, 1 and 2 (`None`: it keeps the parent's).
    stdio: Option<[RawFd; 3]>,
    /// Descriptors above 2 the command keeps; the child closes every other one on exec.
    keep_fds: Vec<RawFd>,
    /// Where the child's sweep stops when the kernel lacks close_range(2).
    fd_limit: RawFd,
    // The pointer arrays below point into these; they must live as long as the image.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    /// `clawrden: cannot execute PROGRAM: `
    exec_error_prefix: Vec<u8>,
    /// `clawrden: cannot change directory to DIR: `
    chdir_error_prefix: Vec<u8>,
    /// `<cgroup>/cgroup.procs` the child writes itself into, and the error prefix.
    cgroup_procs: Option<(CString, Vec<u8>)>,
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
            credentials: None,
            program_fd,
            cwd: cwd_c,
            tty,
            stdio: None,
            keep_fds: Vec::new(),
            fd_limit: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft.min(1 << 20) as RawFd)
                .unwrap_or(1024),
            _argv: argv_c,
            _envp: envp_c,
            argv_ptrs,
            envp_ptrs,
            exec_error_prefix,
            chdir_error_prefix,
            cgroup_procs: None,
        })
    }

    /// Makes the child join the cgroup v2 directory `dir` (while still privileged).
    pub fn join_cgroup(&mut self, dir: &std::path::Path) -> Result<(), NulByte> {
        let procs = dir.join("cgroup.procs");
        let path = c_string("cgroup", procs.as_os_str())?;
        let mut prefix = b"clawrden: cannot join the cgroup ".to_vec();
        prefix.extend_from_slice(dir.as_os_str().as_bytes());
        prefix.extend_from_slice(b": ");
        self.cgroup_procs = Some((path, prefix));
        Ok(())
    }
}

impl ExecImage {
    /// Makes the child install `fds` as its descriptors 0, 1 and 2 (each must be above 2
    /// and stay open until [`spawn`] returns). With `controlling_terminal`, the first of
    /// them that is a terminal becomes the child's controlling terminal.
    pub fn set_stdio(&mut self, fds: [RawFd; 3], controlling_terminal: bool) {
        debug_assert!(fds.iter().all(|&fd| fd > 2));
        self.stdio = Some(fds);
        self.tty = controlling_terminal;
    }

    /// The command keeps exactly `fds` of the descriptors above 2 (those stay open across
    /// exec); the child marks every other one close-on-exec.
    pub fn keep_only(&mut self, fds: Vec<RawFd>) {
        self.keep_fds = fds;
    }

    /// Makes the child drop to `credentials` (setgroups, setgid, setuid, each checked)
    /// after the fork and before changing directory and executing; the parent keeps its
    /// own. Without this the child runs with the parent's identity.
    pub fn drop_privileges_to(&mut self, credentials: &ChildCredentials) {
        let mut groups = credentials.groups.clone();
        groups.sort_unstable();
        let groups_check = vec![0; groups.len() + 1];
        let error_prefix = format!(
            "clawrden: cannot drop privileges to uid {} gid {}: ",
            credentials.uid, credentials.gid
        )
        .into_bytes();
        self.credentials = Some(PreparedCredentials {
            uid: credentials.uid,
            gid: credentials.gid,
            groups,
            groups_check,
            error_prefix,
        });
    }
}

/// Forks; the child becomes a session leader (with `tty`, taking the first of its
/// descriptors 0, 1, 2 that is a terminal as its controlling terminal), gets default
/// signal dispositions, drops privileges (when the image says so),
/// changes directory, gets an empty signal mask and executes the image. Returns the
/// child's pid to the parent, whose own credentials never change.
///
/// If the child cannot start the program it writes one line to fd 2 and exits 127 (the
/// program does not exist) or 126 (any other failure, including a privilege drop that
/// failed or did not stick: the program is then never executed).
///
/// Must be called while the process is single-threaded (the exec-helper always is).
pub fn spawn(image: &mut ExecImage) -> nix::Result<Pid> {
    // SAFETY: the exec-helper is single-threaded when it calls this, and the child branch
    // only calls `child_exec`, which performs async-signal-safe syscalls on buffers that
    // were allocated before the fork and never returns.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => child_exec(image),
    }
}

/// The child side of [`spawn`]. Async-signal-safe: no allocation. `image` is the child's
/// own copy of the parent's memory, so writing into its scratch buffer is private.
fn child_exec(image: &mut ExecImage) -> ! {
    // SAFETY: setsid takes no pointers; the child of fork() is never a group leader, so it
    // cannot fail with EPERM.
    unsafe { libc::setsid() };
    if let Some(fds) = image.stdio {
        for (target, fd) in (0..).zip(fds) {
            // SAFETY: both are plain descriptor numbers; `fd` was open at the fork (it is
            // above 2, so no earlier dup2 of this loop replaced it).
            if unsafe { libc::dup2(fd, target) } == -1 {
                child_fail(b"clawrden: cannot set up the standard descriptors: ", 126);
            }
        }
    }
    if image.tty {
        // SAFETY: isatty takes a plain descriptor number.
        let terminal = (0..3).find(|&fd| unsafe { libc::isatty(fd) } == 1);
        // SAFETY: TIOCSCTTY takes an int argument (0: do not steal the terminal).
        if terminal.is_none_or(|fd| unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } == -1) {
            child_fail(
                b"clawrden: cannot make the terminal the controlling terminal: ",
                126,
            );
        }
    }
    // Nothing but the kept descriptors crosses the exec.
    // SAFETY: close_range takes plain integers; with CLOSE_RANGE_CLOEXEC it only sets flags.
    let swept = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    if !swept {
        for fd in 3..image.fd_limit {
            // SAFETY: fcntl on a plain descriptor number; a closed one just fails.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    for &fd in &image.keep_fds {
        // SAFETY: as above; clears close-on-exec on a descriptor the command keeps.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    for sig in 1..=MAX_SIGNAL {
        // SAFETY: installing SIG_DFL involves no handler code; invalid numbers (SIGKILL,
        // SIGSTOP, libc-reserved ones) just fail with EINVAL, which is fine.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // Before the drop: joining a cgroup needs the helper's (root) rights.
    if let Some((procs, prefix)) = &image.cgroup_procs {
        child_join_cgroup(procs, prefix);
    }
    if let Some(credentials) = &mut image.credentials {
        child_drop_privileges(credentials);
    }
    // After the drop: the directory is entered with the command's own rights.
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

/// Writes "0" (this process) to `procs`; exits 126 if that fails. Async-signal-safe.
fn child_join_cgroup(procs: &CString, prefix: &[u8]) {
    // SAFETY: a valid NUL-terminated path owned by the image.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd == -1 {
        child_fail(prefix, 126);
    }
    // SAFETY: writing one byte from a static buffer to the descriptor just opened.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    if written != 1 {
        child_fail(prefix, 126);
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
}

/// setgroups, setresgid, setresuid, then checks that every id (real, effective, saved) and
/// the group list really are the wanted ones; exits 126 otherwise. Async-signal-safe.
fn child_drop_privileges(c: &mut PreparedCredentials) {
    // SAFETY: `groups` is a valid array of `groups.len()` gids owned by the image.
    if unsafe { libc::setgroups(c.groups.len(), c.groups.as_ptr()) } == -1 {
        child_fail(&c.error_prefix, 126);
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresgid(c.gid, c.gid, c.gid) } == -1 {
        child_fail(&c.error_prefix, 126);
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresuid(c.uid, c.uid, c.uid) } == -1 {
        child_fail(&c.error_prefix, 126);
    }
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: pointers to locals on the stack.
    let ids_ok = unsafe {
        libc::getresuid(&mut ruid, &mut euid, &mut suid) == 0
            && libc::getresgid(&mut rgid, &mut egid, &mut sgid) == 0
    };
    let capacity = libc::c_int::try_from(c.groups_check.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: the buffer holds `capacity` gids and is owned by (the child's copy of) the
    // image; a list longer than that fails with EINVAL, which counts as a mismatch.
    let count = unsafe { libc::getgroups(capacity, c.groups_check.as_mut_ptr()) };
    let groups_ok = usize::try_from(count)
        .is_ok_and(|n| n == c.groups.len() && c.groups_check[..n] == c.groups[..]);
    let stuck =
        ids_ok && [ruid, euid, suid] == [c.uid; 3] && [rgid, egid, sgid] == [c.gid; 3] && groups_ok;
    if !stuck {
        child_fail_with(&c.error_prefix, b"the new ids did not stick", 126);
    }
}

/// Writes `prefix`, the text of the current errno and a newline to fd 2, then `_exit`s.
fn child_fail(prefix: &[u8], status: libc::c_int) -> ! {
    child_fail_with(prefix, Errno::last().desc().as_bytes(), status)
}

/// Writes `prefix`, `reason` and a newline to fd 2, then `_exit`s.
fn child_fail_with(prefix: &[u8], reason: &[u8], status: libc::c_int) -> ! {
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

/// If this process leads the session whose controlling terminal is fd 0 (as under
/// `docker exec --tty`), gives the terminal up with TIOCNOTTY so that the command's new
/// session can make it its own. The SIGHUP and SIGCONT the kernel then sends to the
/// foreground process group (this process) are ignored for that moment. Does nothing
/// when fd 0 is not this session's terminal.
pub fn release_controlling_terminal() -> nix::Result<()> {
    let me = nix::unistd::getpid();
    if nix::unistd::getsid(None)? != me {
        return Ok(());
    }
    let stdin = std::io::stdin();
    match nix::sys::termios::tcgetsid(&stdin) {
        Ok(sid) if sid == me => {}
        _ => return Ok(()),
    }
    // SAFETY: installing SIG_IGN involves no handler code; the previous dispositions are
    // restored right after the ioctl.
    let (old_hup, old_cont) = unsafe {
        (
            libc::signal(libc::SIGHUP, libc::SIG_IGN),
            libc::signal(libc::SIGCONT, libc::SIG_IGN),
        )
    };
    // SAFETY: TIOCNOTTY takes no argument; fd 0 is open (tcgetsid just succeeded on it).
    let result = unsafe { libc::ioctl(0, libc::TIOCNOTTY) };
    let errno = Errno::last();
    // SAFETY: restoring the dispositions saved above (SIG_DFL or SIG_IGN; the helper
    // installs no handlers).
    unsafe {
        libc::signal(libc::SIGHUP, old_hup);
        libc::signal(libc::SIGCONT, old_cont);
    }
    if result == -1 {
        Err(errno)
    } else {
        Ok(())
    }
}
