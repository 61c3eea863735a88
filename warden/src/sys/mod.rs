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

fn read_termios(fd: BorrowedFd<'_>) -> io::Result<libc::termios> {
    // SAFETY: `termios` is a plain C struct of integers and byte arrays, for which all
    // zeroes is a valid value; tcgetattr only writes into it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a live, properly aligned local and the fd is borrowed (open); a
    // non-terminal fd only makes tcgetattr fail.
    if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

/// The settings of the terminal on `fd` (on a PTY master: its slave's), every flag bit
/// kept.
pub fn get_termios(fd: BorrowedFd<'_>) -> io::Result<clawrden_protocol::Termios> {
    let t = read_termios(fd)?;
    let n = t.c_cc.len().min(clawrden_protocol::NCCS);
    Ok(clawrden_protocol::Termios {
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        cc: t.c_cc[..n].to_vec(),
    })
}

/// Sets the terminal on `fd` to `settings` at once; fields the protocol does not carry
/// keep their values.
pub fn set_termios(fd: BorrowedFd<'_>, settings: &clawrden_protocol::Termios) -> io::Result<()> {
    let mut t = read_termios(fd)?;
    t.c_iflag = settings.iflag;
    t.c_oflag = settings.oflag;
    t.c_cflag = settings.cflag;
    t.c_lflag = settings.lflag;
    for (slot, value) in t.c_cc.iter_mut().zip(&settings.cc) {
        *slot = *value;
    }
    // SAFETY: `t` is a fully initialised termios on the stack; tcsetattr only reads it.
    if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the full window size (pixels included) of a terminal.
pub fn set_winsize(terminal: BorrowedFd<'_>, size: clawrden_protocol::WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: size.xpixel,
        ws_ypixel: size.ypixel,
    };
    // SAFETY: as in `set_window_size`.
    if unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &ws) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the child that `cmd` starts find each `(number, fd)` at `number`, inheritable,
/// whatever number `fd` has here: the caller's own descriptors at the caller's numbers.
/// (Any other descriptor the child inherits is closed for the command by the exec-helper,
/// told which to keep.)
///
/// Each descriptor is first duplicated (close-on-exec) above every target number, so no
/// `dup2` in the child can overwrite a descriptor another one still needs; the child then
/// only calls `dup2`, which is async-signal-safe and clears close-on-exec on the copy. The
/// duplicates live in `cmd` and close when it is dropped. Only called with descriptors to
/// place: a `pre_exec` hook makes the spawn a full fork instead of `posix_spawn`.
pub fn pass_fds_at(cmd: &mut tokio::process::Command, fds: Vec<(u32, OwnedFd)>) -> io::Result<()> {
    let above = fds.iter().map(|(n, _)| *n).max().unwrap_or(2) as RawFd + 1;
    let mut moved = Vec::with_capacity(fds.len());
    for (target, fd) in fds {
        let target = RawFd::try_from(target)
            .map_err(|_| io::Error::other(format!("descriptor number {target} is out of range")))?;
        let high = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(above))?;
        // SAFETY: fcntl just returned this new descriptor; nothing else owns it.
        moved.push((target, unsafe { OwnedFd::from_raw_fd(high) }));
    }
    // SAFETY: the closure runs in the forked child before exec and only calls dup2 on
    // descriptors it owns (kept open by the closure until the command is dropped), with no
    // allocation and no locks.
    unsafe {
        cmd.pre_exec(move || {
            for (target, fd) in &moved {
                if libc::dup2(fd.as_raw_fd(), *target) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}
