//! The only place in the warden where `unsafe` is allowed: the terminal ioctl the local
//! executor needs, adopting descriptors received with `SCM_RIGHTS`, marking inherited
//! descriptors close-on-exec and reading a peer's groups. Every `unsafe` block carries a
//! `// SAFETY:` comment.

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

/// `close_range` flag: mark close-on-exec instead of closing (Linux 5.11+).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
/// `SO_PEERGROUPS` (asm-generic/socket.h; the libc crate does not export it here).
const SO_PEERGROUPS: libc::c_int = 59;

/// Marks every descriptor above 2 close-on-exec. Called first thing at start-up, before
/// the warden opens anything: descriptors its parent passed without meaning to (no
/// `O_CLOEXEC`) would otherwise reach every command it starts.
pub fn mark_inherited_fds_cloexec() -> io::Result<()> {
    // SAFETY: close_range takes integers only; with CLOSE_RANGE_CLOEXEC it closes nothing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11: one by one.
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on an integer descriptor; one that closed meanwhile (the
        // directory listing's own) fails with EBADF, which is fine.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
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

/// The supplementary groups of the process at the other end of a connected Unix socket,
/// as the kernel recorded them at `connect` (`SO_PEERGROUPS`, Linux 4.13+).
pub fn peer_groups(socket: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * std::mem::size_of::<libc::gid_t>())
            .map_err(io::Error::other)?;
        // SAFETY: the buffer holds `len` bytes and outlives the call; the kernel writes at
        // most `len` bytes and stores the size it needs (or used) in `len`.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && count > groups.len() {
            groups.resize(count, 0);
            continue;
        }
        return Err(err);
    }
}
