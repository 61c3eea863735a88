//! Moving bytes between the session's channels and the command: output pumps for pipes
//! and the pty master, and the stdin writer (its own task, so a command that does not
//! read its stdin never stalls signal forwarding, timeouts or cancellation).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};
use nix::sys::termios::{tcgetattr, SpecialCharacterIndices};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::mpsc;

use clawrden_protocol::{Terminal, Termios};

use crate::executor::StreamOut;

/// Largest chunk read from the command at once (one protocol I/O frame).
const CHUNK: usize = clawrden_protocol::MAX_IO_PAYLOAD as usize;

/// What the stdin writer is asked to do, in order.
#[derive(Debug)]
pub(super) enum StdinOp {
    Data(Vec<u8>),
    Eof,
}

/// A pseudo-terminal: the master stays with the warden, the slave becomes each of the
/// command's standard descriptors that is the caller's terminal.
pub(super) struct Pty {
    pub(super) master: Arc<AsyncFd<PtyMaster>>,
    pub(super) slave: std::fs::File,
    /// The settings it started with (the caller's).
    pub(super) started: Termios,
}

/// Opens a pty with the caller's terminal settings and size. Both ends are close-on-exec
/// (the warden spawns other commands concurrently) and the slave never becomes the
/// warden's controlling terminal.
pub(super) fn open_pty(terminal: &Terminal) -> io::Result<Pty> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let slave_path = ptsname_r(&master)?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave_path)?;
    crate::sys::set_termios(slave.as_fd(), &terminal.termios)?;
    crate::sys::set_winsize(master.as_fd(), terminal.size)?;
    // What the kernel made of the settings (bits a PTY does not keep are dropped): the
    // baseline against which the command's own changes are noticed.
    let started = crate::sys::get_termios(master.as_fd())?;
    let flags = OFlag::from_bits_truncate(fcntl(master.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(
        master.as_raw_fd(),
        FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
    )?;
    Ok(Pty {
        master: Arc::new(crate::sys::register_pty_master(master)?),
        slave,
        started,
    })
}

/// Copies a pipe to the session in chunks of at most [`CHUNK`] bytes until EOF. Once the
/// session stops listening, output is still read (and dropped) so the command never
/// blocks on a full pipe.
pub(super) async fn pump_pipe<R: AsyncRead + Unpin>(
    mut pipe: R,
    output: mpsc::Sender<StreamOut>,
    wrap: fn(Vec<u8>) -> StreamOut,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut listening = true;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if listening && output.send(wrap(buf[..n].to_vec())).await.is_err() {
                    listening = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the command's output failed");
                return;
            }
        }
    }
}

/// Copies the pty master to the session as `TtyOut` until every slave fd is closed (the
/// master then reads EIO). After every chunk, and once more at the end, the pty's
/// settings are compared with the last ones sent (first: `started`); a change goes to the
/// session as `Termios`, in order with the output, so the caller's terminal can end as the
/// command left its own.
pub(super) async fn pump_pty(
    master: Arc<AsyncFd<PtyMaster>>,
    started: Termios,
    output: mpsc::Sender<StreamOut>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut listening = true;
    let mut settings = started;
    loop {
        let mut guard = match master.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "waiting for terminal output failed");
                break;
            }
        };
        let chunk = match guard.try_io(|m| m.get_ref().read(&mut buf)) {
            Err(_would_block) => continue,
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => StreamOut::TtyOut(buf[..n].to_vec()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EIO: the last slave fd was closed, the terminal's output is complete.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => break,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading terminal output failed");
                break;
            }
        };
        let changed = settings_change(&master, &mut settings);
        for item in std::iter::once(chunk).chain(changed) {
            if listening && output.send(item).await.is_err() {
                listening = false;
            }
        }
    }
    if let Some(change) = settings_change(&master, &mut settings) {
        if listening {
            let _ = output.send(change).await;
        }
    }
}

/// The pty's settings as a `Termios` item when they differ from `last` (which becomes
/// them).
fn settings_change(master: &AsyncFd<PtyMaster>, last: &mut Termios) -> Option<StreamOut> {
    let now = crate::sys::get_termios(master.get_ref().as_fd()).ok()?;
    if now == *last {
        return None;
    }
    *last = now.clone();
    Some(StreamOut::Termios(now))
}

/// Feeds the command's stdin pipe. StdinEof closes it. After a write error (the command
/// closed its stdin) further data is dropped, so the sender never blocks on us.
pub(super) async fn write_pipe(stdin: ChildStdin, mut ops: mpsc::Receiver<StdinOp>) {
    let mut stdin = Some(stdin);
    while let Some(op) = ops.recv().await {
        match op {
            StdinOp::Data(data) => {
                if let Some(pipe) = stdin.as_mut() {
                    if pipe.write_all(&data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            StdinOp::Eof => stdin = None,
        }
    }
}

/// Types into the pty. StdinEof writes the terminal's EOF character (VEOF, usually ^D)
/// once, read from the terminal's current settings.
pub(super) async fn write_pty(master: Arc<AsyncFd<PtyMaster>>, mut ops: mpsc::Receiver<StdinOp>) {
    let mut broken = false;
    let mut eof_sent = false;
    while let Some(op) = ops.recv().await {
        if broken {
            continue;
        }
        let data = match op {
            StdinOp::Data(data) => data,
            StdinOp::Eof if eof_sent => continue,
            StdinOp::Eof => {
                eof_sent = true;
                match tcgetattr(master.get_ref().as_fd()) {
                    Ok(t) => vec![t.control_chars[SpecialCharacterIndices::VEOF as usize]],
                    Err(_) => vec![0x04],
                }
            }
        };
        if write_all_pty(&master, &data).await.is_err() {
            broken = true;
        }
    }
}

async fn write_all_pty(master: &AsyncFd<PtyMaster>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|m| m.get_ref().write(data)) {
            Err(_would_block) => continue,
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
        }
    }
    Ok(())
}
