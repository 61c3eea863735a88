//! What the shim's descriptors are: the kind of each standard descriptor, the caller's
//! terminal, and the descriptors above 2 the caller left open for the command.

use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use clawrden_protocol::{ExtraFd, FdKind, Terminal, MAX_EXTRA_FDS};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::stat::{fstat, SFlag};

use crate::sys::term;

/// Highest descriptor number looked at when /proc/self/fd cannot be listed.
const SCAN_WITHOUT_PROC: RawFd = 1024;

/// The kind of the open descriptor `fd` (`Other` when fstat fails).
pub fn kind_of(fd: RawFd) -> FdKind {
    let Ok(st) = fstat(fd) else {
        return FdKind::Other;
    };
    let fmt = st.st_mode & SFlag::S_IFMT.bits();
    if fmt == SFlag::S_IFIFO.bits() {
        FdKind::Pipe
    } else if fmt == SFlag::S_IFREG.bits() {
        FdKind::File
    } else if fmt == SFlag::S_IFSOCK.bits() {
        FdKind::Socket
    } else if fmt == SFlag::S_IFCHR.bits() && nix::unistd::isatty(fd).unwrap_or(false) {
        FdKind::Terminal
    } else {
        FdKind::Other
    }
}

/// The caller's terminal on standard descriptor `fd`: settings (as the caller has them,
/// whatever other shims running on it took off meanwhile), size and `$TERM`.
pub fn terminal_of(fd: u8, term_var: Option<&[u8]>) -> Result<Terminal, String> {
    let termios = term::get_termios(crate::sys::std_fd(fd))
        .map_err(|e| format!("cannot read the settings of the terminal on fd {fd}: {e}"))?;
    let termios = crate::terminal::as_the_caller_has_it(&termios);
    let size = term::window_size(fd as RawFd).unwrap_or_default();
    Ok(Terminal {
        termios,
        size,
        term: term_var.map(<[u8]>::to_vec).unwrap_or_default(),
    })
}

/// Whether this process may change the terminal on standard descriptor `fd`: it is in
/// the terminal's foreground process group, or the terminal is not its controlling
/// terminal (job control does not apply then). A background job that changed it (or
/// read it) would be stopped by SIGTTOU (SIGTTIN), as `timeout CMD` and `CMD &` are.
pub fn may_change_terminal(fd: u8) -> bool {
    match nix::unistd::tcgetpgrp(crate::sys::std_fd(fd)) {
        Ok(foreground) => foreground == nix::unistd::getpgrp(),
        Err(_) => true,
    }
}

/// Descriptors above 2 that are open and not close-on-exec, ascending: the ones the
/// caller left for the command (the shim itself opens nothing inheritable). At most
/// [`MAX_EXTRA_FDS`]; the second value counts the ones beyond.
pub fn inheritable_extra_fds() -> (Vec<ExtraFd>, u32) {
    let candidates: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
            .filter(|&fd| fd > 2)
            .collect(),
        Err(_) => (3..SCAN_WITHOUT_PROC).collect(),
    };
    // The directory's own descriptor was close-on-exec and is closed by now.
    let mut open: Vec<RawFd> = candidates
        .into_iter()
        .filter(|&fd| {
            fcntl(fd, FcntlArg::F_GETFD)
                .is_ok_and(|flags| !FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC))
        })
        .collect();
    open.sort_unstable();
    let dropped = open.len().saturating_sub(MAX_EXTRA_FDS) as u32;
    let fds = open
        .into_iter()
        .take(MAX_EXTRA_FDS)
        .map(|fd| ExtraFd {
            fd: fd as u32,
            kind: kind_of(fd),
        })
        .collect();
    (fds, dropped)
}

/// A descriptor to write the command's terminal output to when only stdin is a terminal:
/// fd 0 itself if it is open for writing (a terminal usually is), else the same terminal
/// opened again write-only.
pub fn writable_stdin_terminal() -> Option<OwnedFd> {
    let writable = fcntl(0, FcntlArg::F_GETFL).is_ok_and(|fl| {
        let mode = OFlag::from_bits_truncate(fl) & OFlag::O_ACCMODE;
        mode == OFlag::O_RDWR || mode == OFlag::O_WRONLY
    });
    if writable {
        return None;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/proc/self/fd/0")
        .ok()
        .map(OwnedFd::from)
}
