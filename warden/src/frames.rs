//! Frame I/O on a shim connection: reading with `recvmsg` so the file descriptors the shim
//! attaches to its `Request` (`SCM_RIGHTS`) are received, and writing whole frames.
//!
//! The reader validates each header as soon as its 5 bytes are in, so an oversized or
//! unknown frame is refused before its payload is read, and never allocates more than
//! the bytes actually received plus one 64 KiB scratch buffer.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use clawrden_protocol::{FrameHeader, Message, ProtocolError, HEADER_LEN};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest number of descriptors one `SCM_RIGHTS` message can carry on Linux
/// (`SCM_MAX_FD`); room for all of them means the kernel never truncates (and so never
/// installs descriptors we could not see).
const SCM_MAX_FD: usize = 253;
/// Bytes read per `recvmsg`, and the unit of a reader's budget.
pub const SCRATCH: usize = 64 * 1024;
/// Longest text the warden puts in a reason or error message.
pub const MAX_MESSAGE: usize = 4096;

/// Why no frame could be read.
#[derive(Debug)]
pub enum RecvError {
    /// The peer broke the protocol (oversized, unknown, malformed, truncated frame).
    Protocol(ProtocolError),
    /// The control data was cut short.
    ControlTruncated,
    /// The connection failed (reset, ...): the peer is gone.
    Io(io::Error),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Protocol(e) => write!(f, "{e}"),
            RecvError::ControlTruncated => {
                f.write_str("control message truncated (too many file descriptors attached)")
            }
            RecvError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

/// Reads frames from one connection, keeping partial input between calls (so a read can
/// be cancelled in a `select!` without losing bytes).
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    scratch: Vec<u8>,
    collect_fds: bool,
    fds: Vec<OwnedFd>,
    /// Shared allowance, in units of [`SCRATCH`] bytes, for frames larger than one unit
    /// being read at once (see [`FrameReader::with_budget`]).
    budget: Option<Arc<Semaphore>>,
    held: Option<OwnedSemaphorePermit>,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new()
    }
}

impl FrameReader {
    /// A reader that keeps descriptors received until [`FrameReader::stop_collecting_fds`].
    pub fn new() -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            scratch: vec![0; SCRATCH],
            collect_fds: true,
            fds: Vec::new(),
            budget: None,
            held: None,
        }
    }

    /// Makes frames larger than 64 KiB wait for room in `budget` (one permit per 64 KiB)
    /// before their payload is read, and hold it until decoded: many connections sending
    /// large requests at once (or stalling halfway) then hold at most the budget's worth
    /// of buffers, and the rest wait within their request deadline.
    pub fn with_budget(mut self, budget: Arc<Semaphore>) -> FrameReader {
        self.budget = Some(budget);
        self
    }

    /// From now on, descriptors arriving with data are closed at once.
    pub fn stop_collecting_fds(&mut self) {
        self.collect_fds = false;
    }

    /// Descriptors received while collecting, in arrival order.
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// The next message; `Ok(None)` on a clean end of stream between frames.
    pub async fn next(&mut self, stream: &UnixStream) -> Result<Option<Message>, RecvError> {
        loop {
            if self.buf.len() >= HEADER_LEN {
                let raw = [
                    self.buf[0],
                    self.buf[1],
                    self.buf[2],
                    self.buf[3],
                    self.buf[4],
                ];
                let header = FrameHeader::parse(raw).map_err(RecvError::Protocol)?;
                let end = HEADER_LEN + header.len as usize;
                if self.buf.len() >= end {
                    let msg = Message::decode(header.kind, &self.buf[HEADER_LEN..end])
                        .map_err(RecvError::Protocol)?;
                    self.buf.drain(..end);
                    self.held = None;
                    // A large request's buffer is not kept for the rest of the session.
                    if self.buf.capacity() > 2 * SCRATCH {
                        self.buf.shrink_to(SCRATCH);
                    }
                    return Ok(Some(msg));
                }
                if let (Some(budget), None) = (&self.budget, &self.held) {
                    let units = header.len.div_ceil(SCRATCH as u32);
                    if units > 1 {
                        // Cancel-safe: nothing has changed if this await is abandoned.
                        let permit =
                            budget
                                .clone()
                                .acquire_many_owned(units)
                                .await
                                .map_err(|_| {
                                    RecvError::Io(io::Error::other("request budget closed"))
                                })?;
                        self.held = Some(permit);
                    }
                }
                // Room for exactly this frame, not a doubling past it.
                self.buf.reserve_exact(end - self.buf.len());
            }
            let fd = stream.as_raw_fd();
            let scratch = &mut self.scratch;
            let (n, fds, truncated) = stream
                .async_io(Interest::READABLE, || recv_with_fds(fd, scratch))
                .await
                .map_err(RecvError::Io)?;
            if self.collect_fds {
                self.fds.extend(fds);
            } else {
                drop(fds);
            }
            if truncated {
                return Err(RecvError::ControlTruncated);
            }
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(RecvError::Protocol(ProtocolError::Truncated))
                };
            }
            self.buf.extend_from_slice(&self.scratch[..n]);
        }
    }
}

/// One `recvmsg` with `MSG_CMSG_CLOEXEC`; returns bytes read, descriptors received, and
/// whether control data was truncated.
fn recv_with_fds(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>, bool)> {
    let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let n = msg.bytes;
    let Ok(cmsgs) = msg.cmsgs() else {
        // MSG_CTRUNC: nix refuses to walk truncated control data.
        return Ok((n, Vec::new(), true));
    };
    let mut fds = Vec::new();
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(raw) = c {
            fds.extend(crate::sys::adopt_received_fds(&raw));
        }
    }
    Ok((n, fds, false))
}

/// Writes one message as a frame.
pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, msg: &Message) -> io::Result<()> {
    let mut buf = Vec::new();
    msg.encode(&mut buf)
        .map_err(|e| io::Error::other(format!("cannot encode {:?} frame: {e}", msg.kind())))?;
    w.write_all(&buf).await
}

/// `s` cut to at most [`MAX_MESSAGE`] bytes on a character boundary.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawrden_protocol::Request;

    #[tokio::test]
    async fn a_large_frame_holds_its_budget_from_header_to_decode() {
        let budget = Arc::new(Semaphore::new(2));
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut reader = FrameReader::new().with_budget(budget.clone());
        let request = Request {
            argv: vec![vec![b'x'; 100_000]],
            ..Request::default()
        };
        let mut bytes = Vec::new();
        Message::Request(request.clone())
            .encode(&mut bytes)
            .unwrap();
        let mut theirs = theirs;
        theirs.write_all(&bytes[..70_000]).await.unwrap();
        // Half a frame: the reader waits for the rest, holding two 64 KiB units.
        let stalled =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.next(&ours)).await;
        assert!(stalled.is_err(), "decoded half a frame");
        assert_eq!(budget.available_permits(), 0);
        theirs.write_all(&bytes[70_000..]).await.unwrap();
        let got = reader.next(&ours).await.unwrap();
        assert_eq!(got, Some(Message::Request(request)));
        assert_eq!(budget.available_permits(), 2);
        assert!(
            reader.buf.capacity() <= 2 * SCRATCH,
            "{}",
            reader.buf.capacity()
        );
    }
}
