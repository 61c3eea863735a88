//! The only place in the warden where `unsafe` is allowed: the terminal ioctl the local
//! executor needs, and adopting descriptors received with `SCM_RIGHTS`. Every `unsafe`
//! block carries a `// SAFETY:` comment.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Wraps descriptors from one `ControlMessageOwned::ScmRights` so they close on drop
/// (std has no safe way to turn a received raw descriptor into an `OwnedFd`).
pub fn adopt_received_fds(raw: &[RawFd]) -> Vec<OwnedFd> {
    raw.iter()
        .filter(|&&fd| fd >= 0)
        .map(|&fd| {
            // SAFETY: the kernel installed `fd` in our table for this recvmsg call and
            // nothing else in the process knows its number yet, so we are its sole owner.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect()
}

/// Sets the window size of a terminal (`TIOCSWINSZ`); on a pty master this also sends
/// SIGWINCH to the terminal's foreground process group.
pub fn set_window_size(terminal: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the fd is borrowed, so open for the call; TIOCSWINSZ reads one `winsize`
    // from the valid pointer and keeps no reference to it.
    let rc = unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers a pty master with the tokio reactor (the caller has made it non-blocking).
pub fn register_pty_master(
    master: nix::pty::PtyMaster,
) -> io::Result<tokio::io::unix::AsyncFd<nix::pty::PtyMaster>> {
    // SAFETY: `PtyMaster` owns its fd (an `OwnedFd` inside) and offers no way to close or
    // replace it, so the fd stays valid and the same while the `AsyncFd` owns the master.
    unsafe { tokio::io::unix::AsyncFd::register(master) }.map_err(|e| e.into_parts().1)
}
