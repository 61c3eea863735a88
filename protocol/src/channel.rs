//! The executor channel: frames between an executor in the warden and the exec-helper that
//! supervises a command where the warden cannot reach it directly (inside a prisoner,
//! over the attached stdin/stdout of one `docker exec`).
//!
//! Same framing as the shim protocol (`[kind: u8][len: u32 big-endian][payload]`, every
//! length checked before allocation), its own frame kinds (0x40..0x5f, so a frame of the
//! other protocol is an unknown kind), and every payload starts with a `u32` call id: one
//! channel may later carry many calls at once (a long-lived supervisor per prisoner), so
//! the id is part of the format from the start. A per-call helper uses call id 1.
//!
//! Warden -> helper: `Start` (how to set up the command's standard descriptors), then
//! `Stdin`/`StdinEof`, `Signal`, `Resize`, `Kill` (kill the whole tree). The channel's end
//! of input means the warden is gone: the helper kills the tree.
//!
//! Helper -> warden: `Started` (with the path of what it executes),
//! `Stdout`/`Stderr`/`TtyOut`, `Termios` (the command's
//! terminal settings changed), `StdinWindow` (stdin bytes the command's descriptor took,
//! returned to the warden's send window, so stdin never queues without bound and never
//! stalls the control frames behind it), then exactly one of `Exit`, `Signaled` or
//! `Failed`.

use std::fmt;

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::terminal::{Termios, WinSize};
use crate::{HEADER_LEN, MAX_CONTROL_PAYLOAD, MAX_IO_PAYLOAD};

/// Call id of the only call of a per-call helper.
pub const SINGLE_CALL: u32 = 1;
/// Stdin bytes the warden may have in flight to a helper before it waits for a
/// `StdinWindow`.
pub const STDIN_WINDOW: u32 = 256 * 1024;
/// Largest payload of an I/O frame: the call id plus one I/O chunk.
pub const MAX_CHANNEL_IO_PAYLOAD: u32 = MAX_IO_PAYLOAD + 4;

/// Frame kinds of the channel. The numeric values are part of the wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ChannelKind {
    Start = 0x40,
    Stdin = 0x41,
    StdinEof = 0x42,
    Signal = 0x43,
    Resize = 0x44,
    Kill = 0x45,
    Started = 0x50,
    Stdout = 0x51,
    Stderr = 0x52,
    TtyOut = 0x53,
    Termios = 0x54,
    StdinWindow = 0x55,
    Exit = 0x56,
    Signaled = 0x57,
    Failed = 0x58,
}

impl ChannelKind {
    /// Parses a kind byte.
    pub fn from_u8(b: u8) -> Option<ChannelKind> {
        use ChannelKind::*;
        Some(match b {
            0x40 => Start,
            0x41 => Stdin,
            0x42 => StdinEof,
            0x43 => Signal,
            0x44 => Resize,
            0x45 => Kill,
            0x50 => Started,
            0x51 => Stdout,
            0x52 => Stderr,
            0x53 => TtyOut,
            0x54 => Termios,
            0x55 => StdinWindow,
            0x56 => Exit,
            0x57 => Signaled,
            0x58 => Failed,
            _ => return None,
        })
    }

    /// The largest payload a frame of this kind may carry.
    pub fn max_payload(self) -> u32 {
        match self {
            ChannelKind::Stdin
            | ChannelKind::Stdout
            | ChannelKind::Stderr
            | ChannelKind::TtyOut => MAX_CHANNEL_IO_PAYLOAD,
            _ => MAX_CONTROL_PAYLOAD,
        }
    }
}

/// How the helper sets up one standard descriptor of the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdioPlan {
    /// `/dev/null`.
    Null,
    /// A pipe whose other end the helper streams (`Stdin` frames in, `Stdout`/`Stderr` out).
    Pipe,
    /// The command's PTY (one for all descriptors that have this plan), streamed as
    /// `Stdin` in and `TtyOut` out.
    Terminal,
}

impl StdioPlan {
    fn to_u8(self) -> u8 {
        match self {
            StdioPlan::Null => 0,
            StdioPlan::Pipe => 1,
            StdioPlan::Terminal => 2,
        }
    }
    fn from_u8(b: u8) -> Result<StdioPlan, DecodeError> {
        Ok(match b {
            0 => StdioPlan::Null,
            1 => StdioPlan::Pipe,
            2 => StdioPlan::Terminal,
            _ => return Err(DecodeError::BadValue("stdio plan")),
        })
    }
}

/// How to start one call's command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// Descriptors 0, 1 and 2.
    pub stdio: [StdioPlan; 3],
    /// The PTY's first settings and size: present exactly when a plan is `Terminal`.
    pub terminal: Option<(Termios, WinSize)>,
}

/// Why a helper could not start a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The program does not exist (exit status 127 rather than 126).
    pub not_found: bool,
    pub message: String,
}

/// One message of the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelMsg {
    Start(Start),
    Stdin(Vec<u8>),
    StdinEof,
    /// Forward this signal to the command's process group.
    Signal(i32),
    /// Resize the command's PTY (the kernel then signals SIGWINCH).
    Resize(WinSize),
    /// Kill the whole process tree (SIGTERM, grace, SIGKILL); the helper then exits.
    Kill,
    /// The command runs; its pid in the helper's PID namespace, and the path of the file
    /// the helper executed (for a mirror command: the original it found).
    Started {
        pid: u32,
        program: Vec<u8>,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    TtyOut(Vec<u8>),
    Termios(Termios),
    /// The command's stdin took this many more bytes.
    StdinWindow(u32),
    Exit(i32),
    Signaled(i32),
    Failed(Failure),
}

/// One frame: a call id and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelFrame {
    pub call: u32,
    pub msg: ChannelMsg,
}

/// A channel frame that does not decode (or would not fit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelError {
    UnknownKind(u8),
    TooLarge {
        kind: ChannelKind,
        len: u32,
        max: u32,
    },
    Decode(DecodeError),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::UnknownKind(k) => write!(f, "unknown channel frame kind 0x{k:02x}"),
            ChannelError::TooLarge { kind, len, max } => write!(
                f,
                "{kind:?} channel frame of {len} bytes exceeds the limit of {max} bytes"
            ),
            ChannelError::Decode(e) => write!(f, "malformed channel frame: {e}"),
        }
    }
}

impl std::error::Error for ChannelError {}

impl From<DecodeError> for ChannelError {
    fn from(e: DecodeError) -> Self {
        ChannelError::Decode(e)
    }
}

impl ChannelMsg {
    /// The frame kind of this message.
    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelMsg::Start(_) => ChannelKind::Start,
            ChannelMsg::Stdin(_) => ChannelKind::Stdin,
            ChannelMsg::StdinEof => ChannelKind::StdinEof,
            ChannelMsg::Signal(_) => ChannelKind::Signal,
            ChannelMsg::Resize(_) => ChannelKind::Resize,
            ChannelMsg::Kill => ChannelKind::Kill,
            ChannelMsg::Started { .. } => ChannelKind::Started,
            ChannelMsg::Stdout(_) => ChannelKind::Stdout,
            ChannelMsg::Stderr(_) => ChannelKind::Stderr,
            ChannelMsg::TtyOut(_) => ChannelKind::TtyOut,
            ChannelMsg::Termios(_) => ChannelKind::Termios,
            ChannelMsg::StdinWindow(_) => ChannelKind::StdinWindow,
            ChannelMsg::Exit(_) => ChannelKind::Exit,
            ChannelMsg::Signaled(_) => ChannelKind::Signaled,
            ChannelMsg::Failed(_) => ChannelKind::Failed,
        }
    }
}

impl ChannelFrame {
    /// A frame of the single call of a per-call helper.
    pub fn single(msg: ChannelMsg) -> ChannelFrame {
        ChannelFrame {
            call: SINGLE_CALL,
            msg,
        }
    }

    /// Appends this frame to `out`; fails (appending nothing) when it would exceed its
    /// kind's limit. Split I/O with [`write_io`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ChannelError> {
        let kind = self.msg.kind();
        let start = out.len();
        out.push(kind as u8);
        out.extend_from_slice(&[0; 4]);
        let mut e = Encoder::new(out);
        e.u32(self.call);
        match &self.msg {
            ChannelMsg::Start(s) => {
                for p in s.stdio {
                    e.u8(p.to_u8());
                }
                match &s.terminal {
                    None => e.u8(0),
                    Some((t, size)) => {
                        e.u8(1);
                        t.encode(&mut e);
                        size.encode(&mut e);
                    }
                }
            }
            ChannelMsg::Stdin(b)
            | ChannelMsg::Stdout(b)
            | ChannelMsg::Stderr(b)
            | ChannelMsg::TtyOut(b) => e.raw(b),
            ChannelMsg::StdinEof | ChannelMsg::Kill => {}
            ChannelMsg::Signal(n) | ChannelMsg::Exit(n) | ChannelMsg::Signaled(n) => e.i32(*n),
            ChannelMsg::Resize(size) => size.encode(&mut e),
            ChannelMsg::Started { pid, program } => {
                e.u32(*pid);
                e.bytes(program);
            }
            ChannelMsg::Termios(t) => t.encode(&mut e),
            ChannelMsg::StdinWindow(n) => e.u32(*n),
            ChannelMsg::Failed(f) => {
                e.u8(f.not_found as u8);
                e.str(&f.message);
            }
        }
        let len = out.len() - start - HEADER_LEN;
        let max = kind.max_payload();
        if len > max as usize {
            out.truncate(start);
            return Err(ChannelError::TooLarge {
                kind,
                len: len.min(u32::MAX as usize) as u32,
                max,
            });
        }
        out[start + 1..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes are needed,
    /// else the frame and the bytes it used. The header is checked before the payload is
    /// waited for, so a bad kind or length fails at once.
    pub fn decode_from(buf: &[u8]) -> Result<Option<(ChannelFrame, usize)>, ChannelError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = ChannelKind::from_u8(buf[0]).ok_or(ChannelError::UnknownKind(buf[0]))?;
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        let max = kind.max_payload();
        if len > max {
            return Err(ChannelError::TooLarge { kind, len, max });
        }
        let end = HEADER_LEN + len as usize;
        if buf.len() < end {
            return Ok(None);
        }
        let frame = ChannelFrame::decode(kind, &buf[HEADER_LEN..end])?;
        Ok(Some((frame, end)))
    }

    fn decode(kind: ChannelKind, payload: &[u8]) -> Result<ChannelFrame, ChannelError> {
        let mut d = Decoder::new(payload);
        let call = d.u32()?;
        let msg = match kind {
            ChannelKind::Start => {
                let mut stdio = [StdioPlan::Null; 3];
                for p in &mut stdio {
                    *p = StdioPlan::from_u8(d.u8()?)?;
                }
                let terminal = match d.u8()? {
                    0 => None,
                    1 => Some((Termios::decode(&mut d)?, WinSize::decode(&mut d)?)),
                    _ => return Err(DecodeError::BadValue("terminal flag").into()),
                };
                if terminal.is_some() != stdio.contains(&StdioPlan::Terminal) {
                    return Err(DecodeError::BadValue(
                        "terminal (present exactly when a plan is Terminal)",
                    )
                    .into());
                }
                ChannelMsg::Start(Start { stdio, terminal })
            }
            ChannelKind::Stdin => ChannelMsg::Stdin(d.rest().to_vec()),
            ChannelKind::Stdout => ChannelMsg::Stdout(d.rest().to_vec()),
            ChannelKind::Stderr => ChannelMsg::Stderr(d.rest().to_vec()),
            ChannelKind::TtyOut => ChannelMsg::TtyOut(d.rest().to_vec()),
            ChannelKind::StdinEof => ChannelMsg::StdinEof,
            ChannelKind::Kill => ChannelMsg::Kill,
            ChannelKind::Signal => ChannelMsg::Signal(d.i32()?),
            ChannelKind::Exit => ChannelMsg::Exit(d.i32()?),
            ChannelKind::Signaled => ChannelMsg::Signaled(d.i32()?),
            ChannelKind::Resize => ChannelMsg::Resize(WinSize::decode(&mut d)?),
            ChannelKind::Started => ChannelMsg::Started {
                pid: d.u32()?,
                program: d.bytes()?.to_vec(),
            },
            ChannelKind::Termios => ChannelMsg::Termios(Termios::decode(&mut d)?),
            ChannelKind::StdinWindow => ChannelMsg::StdinWindow(d.u32()?),
            ChannelKind::Failed => ChannelMsg::Failed(Failure {
                not_found: d.bool()?,
                message: d.str()?,
            }),
        };
        d.finish()?;
        Ok(ChannelFrame { call, msg })
    }
}

/// Appends `data` as I/O frames of `kind` (`Stdin`, `Stdout`, `Stderr` or `TtyOut`) for
/// `call`, each carrying at most [`MAX_IO_PAYLOAD`] bytes. Empty `data` appends nothing.
pub fn write_io(out: &mut Vec<u8>, kind: ChannelKind, call: u32, data: &[u8]) {
    debug_assert!(matches!(
        kind,
        ChannelKind::Stdin | ChannelKind::Stdout | ChannelKind::Stderr | ChannelKind::TtyOut
    ));
    for chunk in data.chunks(MAX_IO_PAYLOAD as usize) {
        out.push(kind as u8);
        out.extend_from_slice(&(chunk.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(&call.to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests;
