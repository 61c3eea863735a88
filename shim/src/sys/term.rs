//! Terminal ioctls: settings (`tcgetattr`/`tcsetattr` on Linux's `struct termios`, kept
//! whole: no flag bit is dropped on the way) and window size. Used by the shim on the
//! caller's terminal and by the exec-helper on the PTY it makes for a command.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use clawrden_protocol::{Termios, WinSize, NCCS};

fn read_termios(fd: RawFd) -> io::Result<libc::termios> {
    // SAFETY: `termios` is a plain C struct of integers and byte arrays, for which all
    // zeroes is a valid value; tcgetattr only writes into it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a live, properly aligned local; a bad or non-terminal fd only makes
    // tcgetattr fail.
    if unsafe { libc::tcgetattr(fd, &mut t) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

/// The settings of the terminal on `fd`.
pub fn get_termios(fd: BorrowedFd<'_>) -> io::Result<Termios> {
    let t = read_termios(fd.as_raw_fd())?;
    let n = t.c_cc.len().min(NCCS);
    Ok(Termios {
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        cc: t.c_cc[..n].to_vec(),
    })
}

/// Sets the terminal on `fd` to `settings` at once (`TCSANOW`). Fields the protocol does
/// not carry (the line discipline, glibc's copies of the speeds) keep their values.
pub fn set_termios(fd: BorrowedFd<'_>, settings: &Termios) -> io::Result<()> {
    let mut t = read_termios(fd.as_raw_fd())?;
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

/// Window size of the terminal on `fd` (TIOCGWINSZ).
pub fn window_size(fd: RawFd) -> io::Result<WinSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes exactly one `winsize` through the pointer, which points to
    // a live, properly aligned local; a bad or non-terminal fd only makes ioctl fail.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(WinSize {
            rows: ws.ws_row,
            cols: ws.ws_col,
            xpixel: ws.ws_xpixel,
            ypixel: ws.ws_ypixel,
        })
    }
}

/// Sets the window size of the terminal on `fd` (TIOCSWINSZ); on a PTY master the kernel
/// then sends SIGWINCH to the terminal's foreground process group.
pub fn set_window_size(fd: BorrowedFd<'_>, size: WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: size.xpixel,
        ws_ypixel: size.ypixel,
    };
    // SAFETY: the fd is borrowed, so open for the call; TIOCSWINSZ reads one `winsize`
    // from the valid pointer and keeps no reference to it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
