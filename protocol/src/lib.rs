//! The Clawrden wire protocol: framed, versioned messages between the shim (inside the
//! prisoner) and the warden.
//!
//! A frame is `[kind: u8][len: u32 big-endian][payload]`. Payloads are a small binary
//! encoding (big-endian integers, `u32`-length-prefixed byte strings) so that argv, env
//! and cwd round-trip byte-exact, non-UTF-8 included. The decoder checks every length
//! against the frame limit *before* allocating, so a hostile length costs nothing.
//!
//! This crate has no dependencies and no async runtime: the static shim uses it with
//! blocking I/O, the warden with tokio (by reading the 5-byte header, validating it with
//! [`FrameHeader::parse`], then reading the payload and calling [`Message::decode`]).
#![forbid(unsafe_code)]

pub mod channel;
mod codec;
pub mod exec_env;
mod terminal;

pub use codec::{DecodeError, Decoder, Encoder};
pub use terminal::{
    names_inherited_fd, ExtraFd, FdKind, Terminal, Termios, WinSize, MAX_EXTRA_FDS, NCCS,
};

use std::fmt;
use std::io::{self, Read, Write};

/// Magic bytes of the `Hello` frame.
pub const MAGIC: [u8; 4] = *b"CLWD";
/// Protocol version spoken by this build. Version 2 describes every standard descriptor
/// (kind, and the caller's terminal settings), passes descriptors above 2, and carries
/// the command's terminal output and settings back.
pub const VERSION: u16 = 2;
/// Largest payload of a `Request` (and other control frames): above Linux's default
/// `ARG_MAX` of 2 MiB, so any command line the kernel accepts fits.
pub const MAX_REQUEST_PAYLOAD: u32 = 4 * 1024 * 1024;
/// Largest payload of an I/O chunk (`Stdin`, `Stdout`, `Stderr`).
pub const MAX_IO_PAYLOAD: u32 = 64 * 1024;
/// Largest payload of a small control frame (decision, pending, signal, exit, error...).
pub const MAX_CONTROL_PAYLOAD: u32 = 64 * 1024;
/// Size of a frame header.
pub const HEADER_LEN: usize = 5;
/// Default socket path inside a prisoner.
pub const DEFAULT_SOCKET: &str = "/run/clawrden/warden.sock";
/// Environment variable naming the socket.
pub const SOCKET_ENV: &str = "CLAWRDEN_SOCKET";
/// Environment variable the warden sets on every command it runs; a nested call reads it
/// and sends it as `parent_request`.
pub const PARENT_REQUEST_ENV: &str = "CLAWRDEN_PARENT_REQUEST";

/// Exit status when a call was denied (by policy, by a person, or approval timed out).
pub const EXIT_DENIED: i32 = 126;
/// Exit status when the command hit its execution time limit.
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit status when the warden is unreachable or spoke nonsense (fail closed).
pub const EXIT_UNAVAILABLE: i32 = 125;
/// Exit status when the command could not be found where the executor looked.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Frame kinds. The numeric values are part of the wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 0x01,
    Request = 0x02,
    Decision = 0x03,
    Pending = 0x04,
    Stdin = 0x10,
    StdinEof = 0x11,
    Signal = 0x12,
    Resize = 0x13,
    Stdout = 0x20,
    Stderr = 0x21,
    TtyOut = 0x22,
    Termios = 0x23,
    Exit = 0x30,
    Signaled = 0x31,
    Error = 0x3f,
}

impl Kind {
    /// Parses a kind byte.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0x01 => Kind::Hello,
            0x02 => Kind::Request,
            0x03 => Kind::Decision,
            0x04 => Kind::Pending,
            0x10 => Kind::Stdin,
            0x11 => Kind::StdinEof,
            0x12 => Kind::Signal,
            0x13 => Kind::Resize,
            0x20 => Kind::Stdout,
            0x21 => Kind::Stderr,
            0x22 => Kind::TtyOut,
            0x23 => Kind::Termios,
            0x30 => Kind::Exit,
            0x31 => Kind::Signaled,
            0x3f => Kind::Error,
            _ => return None,
        })
    }

    /// The largest payload a frame of this kind may carry.
    pub fn max_payload(self) -> u32 {
        match self {
            Kind::Request => MAX_REQUEST_PAYLOAD,
            Kind::Stdin | Kind::Stdout | Kind::Stderr | Kind::TtyOut => MAX_IO_PAYLOAD,
            _ => MAX_CONTROL_PAYLOAD,
        }
    }
}

/// A validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: Kind,
    pub len: u32,
}

impl FrameHeader {
    /// Validates a raw header: a known kind and a length within that kind's limit.
    pub fn parse(raw: [u8; HEADER_LEN]) -> Result<FrameHeader, ProtocolError> {
        let kind = Kind::from_u8(raw[0]).ok_or(ProtocolError::UnknownKind(raw[0]))?;
        let len = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]);
        let max = kind.max_payload();
        if len > max {
            return Err(ProtocolError::TooLarge { kind, len, max });
        }
        Ok(FrameHeader { kind, len })
    }
}

/// One intercepted call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `argv[0]` is the name the tool was invoked as.
    pub argv: Vec<Vec<u8>>,
    /// Absolute path of the shimmed tool that ran, resolved through `PATH` by the shim.
    pub tool_path: Vec<u8>,
    pub cwd: Vec<u8>,
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// From `CLAWRDEN_PARENT_REQUEST`, for calls made by an approved command.
    pub parent_request: Option<String>,
    /// What the shim's descriptors 0, 1 and 2 are. The command's are the same: a terminal
    /// becomes a PTY that starts as [`Request::terminal`], anything else stays what it is.
    pub stdio: [FdKind; 3],
    /// The caller's terminal (the first standard descriptor that is one): present exactly
    /// when one of `stdio` is [`FdKind::Terminal`].
    pub terminal: Option<Terminal>,
    /// Descriptors above 2 the caller left open (not close-on-exec), ascending, at most
    /// [`MAX_EXTRA_FDS`].
    pub extra_fds: Vec<ExtraFd>,
    /// Inheritable descriptors beyond [`MAX_EXTRA_FDS`], not described and not passed.
    pub extra_fds_dropped: u32,
    /// The shim attached descriptors to this frame with `SCM_RIGHTS` (same host only), in
    /// the order of [`Request::attached_fds`]. The warden may use them or close them.
    pub fds_attached: bool,
}

/// A call with stdin closed and stdout and stderr streamed (what a client that says
/// nothing about its descriptors gets), no terminal, no extra descriptors.
impl Default for Request {
    fn default() -> Request {
        Request {
            argv: Vec::new(),
            tool_path: Vec::new(),
            cwd: Vec::new(),
            env: Vec::new(),
            parent_request: None,
            stdio: [FdKind::Closed, FdKind::Pipe, FdKind::Pipe],
            terminal: None,
            extra_fds: Vec::new(),
            extra_fds_dropped: 0,
            fds_attached: false,
        }
    }
}

impl Request {
    /// The descriptor numbers attached with `SCM_RIGHTS` when `fds_attached`, in order:
    /// the standard descriptors that are neither closed nor a terminal, then every extra
    /// descriptor.
    pub fn attached_fds(&self) -> Vec<u32> {
        (0..3u32)
            .filter(|&i| self.stdio[i as usize].is_passable())
            .chain(self.extra_fds.iter().map(|f| f.fd))
            .collect()
    }

    /// fd 0 was open.
    pub fn stdin_open(&self) -> bool {
        self.stdio[0] != FdKind::Closed
    }

    /// Some standard descriptor is a terminal: the command gets a PTY.
    pub fn has_terminal(&self) -> bool {
        self.stdio.contains(&FdKind::Terminal)
    }
}

/// What the warden decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Pending,
}

impl Action {
    fn to_u8(self) -> u8 {
        match self {
            Action::Allow => 0,
            Action::Deny => 1,
            Action::Pending => 2,
        }
    }
    fn from_u8(b: u8) -> Result<Action, DecodeError> {
        Ok(match b {
            0 => Action::Allow,
            1 => Action::Deny,
            2 => Action::Pending,
            _ => return Err(DecodeError::BadValue("decision action")),
        })
    }
}

/// Warden -> shim: the decision on a request. After `Pending`, more `Pending` frames may
/// follow and then a final `Decision` with `Allow` or `Deny`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub request_id: String,
    pub action: Action,
    pub reason: String,
    /// Name of the rule that decided, `None` for the policy default.
    pub rule: Option<String>,
    /// When `Allow`: the warden gives the command the descriptors the shim attached, so
    /// only the terminal (if any) streams: `Stdin` from a terminal stdin, `TtyOut` and
    /// `Termios` back; the shim forwards signals and waits for the outcome.
    pub uses_fds: bool,
}

/// Why a call ended without an exit status of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The peer speaks a protocol version we do not.
    UnsupportedVersion,
    /// Malformed, oversized, unknown or out-of-order frame.
    Protocol,
    /// The command hit its execution time limit; its process tree was killed.
    Timeout,
    /// The command was not found by the executor.
    NotFound,
    /// The command could not be started.
    SpawnFailed,
    /// The warden cancelled the command (lockdown, kill switch, shutdown).
    Cancelled,
    /// Anything else on the warden's side.
    Internal,
    /// A kind this build does not know (newer peer).
    Other(u8),
}

impl ErrorKind {
    fn to_u8(self) -> u8 {
        match self {
            ErrorKind::UnsupportedVersion => 1,
            ErrorKind::Protocol => 2,
            ErrorKind::Timeout => 3,
            ErrorKind::NotFound => 4,
            ErrorKind::SpawnFailed => 5,
            ErrorKind::Cancelled => 6,
            ErrorKind::Internal => 7,
            ErrorKind::Other(b) => b,
        }
    }
    fn from_u8(b: u8) -> ErrorKind {
        match b {
            1 => ErrorKind::UnsupportedVersion,
            2 => ErrorKind::Protocol,
            3 => ErrorKind::Timeout,
            4 => ErrorKind::NotFound,
            5 => ErrorKind::SpawnFailed,
            6 => ErrorKind::Cancelled,
            7 => ErrorKind::Internal,
            b => ErrorKind::Other(b),
        }
    }

    /// The exit status the shim gives the agent for this error (design §2).
    pub fn exit_status(self) -> i32 {
        match self {
            ErrorKind::Timeout => EXIT_TIMED_OUT,
            ErrorKind::NotFound => EXIT_NOT_FOUND,
            ErrorKind::SpawnFailed | ErrorKind::Cancelled => EXIT_DENIED,
            _ => EXIT_UNAVAILABLE,
        }
    }

    /// Stable lower-case name, for logs and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UnsupportedVersion => "unsupported_version",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotFound => "not_found",
            ErrorKind::SpawnFailed => "spawn_failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
            ErrorKind::Other(_) => "other",
        }
    }
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello {
        magic: [u8; 4],
        version: u16,
    },
    Request(Request),
    Decision(Decision),
    Pending {
        approval_id: String,
        message: String,
    },
    Stdin(Vec<u8>),
    StdinEof,
    Signal(i32),
    Resize {
        rows: u16,
        cols: u16,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Output of the command's terminal (a PTY), for the caller's terminal.
    TtyOut(Vec<u8>),
    /// The command's terminal settings changed; the caller's terminal ends with the last.
    Termios(Termios),
    Exit(i32),
    Signaled(i32),
    Error {
        kind: ErrorKind,
        message: String,
    },
}

impl Message {
    /// The `Hello` of this build.
    pub fn hello() -> Message {
        Message::Hello {
            magic: MAGIC,
            version: VERSION,
        }
    }

    /// The frame kind of this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello { .. } => Kind::Hello,
            Message::Request(_) => Kind::Request,
            Message::Decision(_) => Kind::Decision,
            Message::Pending { .. } => Kind::Pending,
            Message::Stdin(_) => Kind::Stdin,
            Message::StdinEof => Kind::StdinEof,
            Message::Signal(_) => Kind::Signal,
            Message::Resize { .. } => Kind::Resize,
            Message::Stdout(_) => Kind::Stdout,
            Message::Stderr(_) => Kind::Stderr,
            Message::TtyOut(_) => Kind::TtyOut,
            Message::Termios(_) => Kind::Termios,
            Message::Exit(_) => Kind::Exit,
            Message::Signaled(_) => Kind::Signaled,
            Message::Error { .. } => Kind::Error,
        }
    }

    /// Appends this message as one complete frame to `out`.
    ///
    /// Fails (appending nothing) when the payload would exceed the kind's limit, so a
    /// sender can never produce a frame its peer must reject. I/O chunks larger than
    /// [`MAX_IO_PAYLOAD`] must be split by the caller (see [`write_chunks`]).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let start = out.len();
        out.push(self.kind() as u8);
        out.extend_from_slice(&[0; 4]);
        let mut e = Encoder::new(out);
        match self {
            Message::Hello { magic, version } => {
                e.raw(magic);
                e.u16(*version);
            }
            Message::Request(r) => {
                e.u32(r.argv.len() as u32);
                for a in &r.argv {
                    e.bytes(a);
                }
                e.bytes(&r.tool_path);
                e.bytes(&r.cwd);
                e.u32(r.env.len() as u32);
                for (k, v) in &r.env {
                    e.bytes(k);
                    e.bytes(v);
                }
                e.opt_str(r.parent_request.as_deref());
                for k in r.stdio {
                    e.u8(k.to_u8());
                }
                match &r.terminal {
                    None => e.u8(0),
                    Some(t) => {
                        e.u8(1);
                        t.encode(&mut e);
                    }
                }
                e.u32(r.extra_fds.len() as u32);
                for f in &r.extra_fds {
                    e.u32(f.fd);
                    e.u8(f.kind.to_u8());
                }
                e.u32(r.extra_fds_dropped);
                e.u8(r.fds_attached as u8);
            }
            Message::Decision(d) => {
                e.str(&d.request_id);
                e.u8(d.action.to_u8());
                e.str(&d.reason);
                e.opt_str(d.rule.as_deref());
                e.u8(d.uses_fds as u8);
            }
            Message::Pending {
                approval_id,
                message,
            } => {
                e.str(approval_id);
                e.str(message);
            }
            Message::Stdin(b) | Message::Stdout(b) | Message::Stderr(b) | Message::TtyOut(b) => {
                e.raw(b)
            }
            Message::Termios(t) => t.encode(&mut e),
            Message::StdinEof => {}
            Message::Signal(n) | Message::Exit(n) | Message::Signaled(n) => e.i32(*n),
            Message::Resize { rows, cols } => {
                e.u16(*rows);
                e.u16(*cols);
            }
            Message::Error { kind, message } => {
                e.u8(kind.to_u8());
                e.str(message);
            }
        }
        let len = out.len() - start - HEADER_LEN;
        let max = self.kind().max_payload();
        if len > max as usize {
            out.truncate(start);
            return Err(ProtocolError::TooLarge {
                kind: self.kind(),
                len: len.min(u32::MAX as usize) as u32,
                max,
            });
        }
        out[start + 1..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Decodes the payload of a frame whose header was validated by [`FrameHeader::parse`].
    pub fn decode(kind: Kind, payload: &[u8]) -> Result<Message, ProtocolError> {
        let mut d = Decoder::new(payload);
        let msg = match kind {
            Kind::Hello => {
                let magic = d.array4()?;
                let version = d.u16()?;
                Message::Hello { magic, version }
            }
            Kind::Request => {
                let n = d.count(4)?;
                let mut argv = Vec::with_capacity(n);
                for _ in 0..n {
                    argv.push(d.bytes()?.to_vec());
                }
                let tool_path = d.bytes()?.to_vec();
                let cwd = d.bytes()?.to_vec();
                let n = d.count(8)?;
                let mut env = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = d.bytes()?.to_vec();
                    let v = d.bytes()?.to_vec();
                    env.push((k, v));
                }
                let parent_request = d.opt_str()?;
                let mut stdio = [FdKind::Closed; 3];
                for k in &mut stdio {
                    *k = FdKind::from_u8(d.u8()?)?;
                }
                let terminal = match d.u8()? {
                    0 => None,
                    1 => Some(Terminal::decode(&mut d)?),
                    _ => return Err(DecodeError::BadValue("terminal flag").into()),
                };
                if terminal.is_some() != stdio.contains(&FdKind::Terminal) {
                    return Err(DecodeError::BadValue(
                        "terminal (present exactly when a standard descriptor is one)",
                    )
                    .into());
                }
                let n = d.count(5)?;
                let mut extra_fds = Vec::with_capacity(n.min(MAX_EXTRA_FDS));
                for _ in 0..n {
                    extra_fds.push(ExtraFd {
                        fd: d.u32()?,
                        kind: FdKind::from_u8(d.u8()?)?,
                    });
                }
                crate::terminal::check_extra_fds(&extra_fds)?;
                let extra_fds_dropped = d.u32()?;
                let fds_attached = d.bool()?;
                Message::Request(Request {
                    argv,
                    tool_path,
                    cwd,
                    env,
                    parent_request,
                    stdio,
                    terminal,
                    extra_fds,
                    extra_fds_dropped,
                    fds_attached,
                })
            }
            Kind::Decision => Message::Decision(Decision {
                request_id: d.str()?,
                action: Action::from_u8(d.u8()?)?,
                reason: d.str()?,
                rule: d.opt_str()?,
                uses_fds: d.bool()?,
            }),
            Kind::Pending => Message::Pending {
                approval_id: d.str()?,
                message: d.str()?,
            },
            Kind::Stdin => Message::Stdin(d.rest().to_vec()),
            Kind::Stdout => Message::Stdout(d.rest().to_vec()),
            Kind::Stderr => Message::Stderr(d.rest().to_vec()),
            Kind::TtyOut => Message::TtyOut(d.rest().to_vec()),
            Kind::Termios => Message::Termios(Termios::decode(&mut d)?),
            Kind::StdinEof => Message::StdinEof,
            Kind::Signal => Message::Signal(d.i32()?),
            Kind::Exit => Message::Exit(d.i32()?),
            Kind::Signaled => Message::Signaled(d.i32()?),
            Kind::Resize => Message::Resize {
                rows: d.u16()?,
                cols: d.u16()?,
            },
            Kind::Error => Message::Error {
                kind: ErrorKind::from_u8(d.u8()?),
                message: d.str()?,
            },
        };
        d.finish()?;
        Ok(msg)
    }

    /// Checks a received `Hello`: right magic and a version we speak.
    pub fn check_hello(&self) -> Result<(), ProtocolError> {
        match self {
            Message::Hello { magic, version } => {
                if *magic != MAGIC {
                    Err(ProtocolError::BadMagic(*magic))
                } else if *version != VERSION {
                    Err(ProtocolError::UnsupportedVersion(*version))
                } else {
                    Ok(())
                }
            }
            other => Err(ProtocolError::Unexpected {
                got: other.kind(),
                expected: "hello",
            }),
        }
    }
}

/// Decodes one frame from the front of `buf`. `Ok(None)` means more bytes are needed;
/// on success returns the message and how many bytes it used. Never allocates more
/// than the bytes actually present.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let header = FrameHeader::parse([buf[0], buf[1], buf[2], buf[3], buf[4]])?;
    let end = HEADER_LEN + header.len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let msg = Message::decode(header.kind, &buf[HEADER_LEN..end])?;
    Ok(Some((msg, end)))
}

/// Reads one frame with blocking I/O. `Ok(None)` on a clean end of stream before any
/// byte of a frame; a stream that ends inside a frame is [`ProtocolError::Truncated`].
pub fn read_message<R: Read>(r: &mut R) -> Result<Option<Message>, ProtocolError> {
    let mut raw = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut raw[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtocolError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::Io(e)),
        }
    }
    let header = FrameHeader::parse(raw)?;
    // The length was bounded by `parse`, so this allocation is at most 4 MiB.
    let mut payload = vec![0u8; header.len as usize];
    read_full(r, &mut payload)?;
    Message::decode(header.kind, &payload).map(Some)
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), ProtocolError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(ProtocolError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::Io(e)),
        }
    }
    Ok(())
}

/// Writes one message as a frame with blocking I/O.
pub fn write_message<W: Write>(w: &mut W, msg: &Message) -> Result<(), ProtocolError> {
    let mut buf = Vec::new();
    msg.encode(&mut buf)?;
    w.write_all(&buf).map_err(ProtocolError::Io)
}

/// Appends `data` to `out` as a sequence of I/O frames of `kind` (`Stdin`, `Stdout`,
/// `Stderr` or `TtyOut`), each at most [`MAX_IO_PAYLOAD`] bytes. Empty `data` appends
/// nothing.
pub fn write_chunks(out: &mut Vec<u8>, kind: Kind, data: &[u8]) {
    debug_assert!(matches!(
        kind,
        Kind::Stdin | Kind::Stdout | Kind::Stderr | Kind::TtyOut
    ));
    for chunk in data.chunks(MAX_IO_PAYLOAD as usize) {
        out.push(kind as u8);
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Everything that can go wrong reading or writing frames.
#[derive(Debug)]
pub enum ProtocolError {
    Io(io::Error),
    /// The stream ended inside a frame.
    Truncated,
    UnknownKind(u8),
    TooLarge {
        kind: Kind,
        len: u32,
        max: u32,
    },
    Decode(DecodeError),
    BadMagic([u8; 4]),
    UnsupportedVersion(u16),
    Unexpected {
        got: Kind,
        expected: &'static str,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Io(e) => write!(f, "i/o error: {e}"),
            ProtocolError::Truncated => f.write_str("connection closed in the middle of a frame"),
            ProtocolError::UnknownKind(k) => write!(f, "unknown frame kind 0x{k:02x}"),
            ProtocolError::TooLarge { kind, len, max } => {
                write!(
                    f,
                    "{kind:?} frame of {len} bytes exceeds the limit of {max} bytes"
                )
            }
            ProtocolError::Decode(e) => write!(f, "malformed frame: {e}"),
            ProtocolError::BadMagic(m) => write!(f, "bad hello magic {m:?} (not a Clawrden peer)"),
            ProtocolError::UnsupportedVersion(v) => write!(
                f,
                "unsupported protocol version {v} (this build speaks version {VERSION})"
            ),
            ProtocolError::Unexpected { got, expected } => {
                write!(f, "unexpected {got:?} frame, expected {expected}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProtocolError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DecodeError> for ProtocolError {
    fn from(e: DecodeError) -> Self {
        ProtocolError::Decode(e)
    }
}

impl ProtocolError {
    /// The `Error` frame kind a peer should be told about this error.
    pub fn wire_kind(&self) -> ErrorKind {
        match self {
            ProtocolError::UnsupportedVersion(_) => ErrorKind::UnsupportedVersion,
            _ => ErrorKind::Protocol,
        }
    }
}

#[cfg(test)]
mod tests;
