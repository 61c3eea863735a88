//! Signal plumbing: the forwarded signals are blocked and read from a signalfd; dying of
//! the command's signal re-raises it on the shim itself.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals the shim forwards to the command (SIGWINCH becomes a `Resize`).
pub const FORWARDED: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
];

/// Keeps SIGPIPE ignored, so that writes to a closed warden socket or a closed stdout
/// return EPIPE instead of killing the shim; the stream loop turns EPIPE on stdout/stderr
/// into death by SIGPIPE itself (see `stream.rs`). Rust's runtime already does this for
/// binaries; doing it here keeps the invariant local.
pub fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN involves no handler code, so no async-signal-safety or
    // reentrancy concern exists; the shim is single-threaded.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

/// The forwarded signals, blocked for this (only) thread and readable from a signalfd.
pub struct SignalChannel {
    fd: SignalFd,
}

impl SignalChannel {
    /// Blocks [`FORWARDED`] and opens a non-blocking, close-on-exec signalfd for them.
    pub fn open() -> io::Result<SignalChannel> {
        let mut set = SigSet::empty();
        for sig in FORWARDED {
            set.add(sig);
        }
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(SignalChannel { fd })
    }

    /// The next pending signal number, if any.
    pub fn next(&self) -> io::Result<Option<i32>> {
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => return Ok(Some(info.ssi_signo as i32)),
                Ok(None) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for SignalChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Dies of `signo` the way the command did: core dumps disabled, default disposition,
/// signal unblocked, raised. A signal whose default action does not terminate (SIGWINCH,
/// SIGCHLD...) leaves the shim alive; then it exits with `128 + signo`. The caller must
/// have restored the terminal already.
pub fn die_of_signal(signo: i32) -> ! {
    // A core of the shim would be misleading (the command crashed, not the shim).
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before use; signal(),
    // pthread_sigmask() and raise() take plain integers/pointers to that local and only
    // fail (harmlessly, e.g. for SIGKILL's disposition) on invalid input. Installing
    // SIG_DFL runs no handler code.
    unsafe {
        libc::signal(signo, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signo);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signo);
    }
    std::process::exit(128 + signo)
}
