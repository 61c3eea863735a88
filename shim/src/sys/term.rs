//! Terminal control of the shim's own stdin: window size and raw mode.

use std::io;
use std::os::fd::{AsFd, RawFd};

use nix::sys::termios::{self, SetArg, Termios};

/// Window size `(rows, cols)` of the terminal on `fd` (TIOCGWINSZ).
pub fn window_size(fd: RawFd) -> io::Result<(u16, u16)> {
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
        Ok((ws.ws_row, ws.ws_col))
    }
}

/// Raw mode on the shim's stdin terminal. Restores the saved settings when dropped (also
/// during a panic unwind); [`RawMode::restore`] does it explicitly before `exit`/`raise`,
/// which run no destructors.
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    /// Saves the current settings of fd 0 and switches it to raw mode (cfmakeraw), so every
    /// byte, Ctrl-C included, goes to the command's terminal on the warden's side.
    pub fn enter() -> nix::Result<RawMode> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(RawMode { saved: Some(saved) })
    }

    /// Puts the saved settings back (once; later calls do nothing).
    pub fn restore(&mut self) {
        if let Some(saved) = self.saved.take() {
            // Nothing useful can be done if this fails (terminal gone): the shim is exiting.
            let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &saved);
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}
