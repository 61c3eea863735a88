//! What the shim tells the warden about its descriptors and its terminal, so that the
//! command gets the same: each standard descriptor keeps its nature (a terminal stays a
//! terminal, a pipe a pipe), a command's terminal starts with the caller's settings and
//! size, and descriptors above 2 are passed at their own numbers where the executor can.

use crate::codec::{DecodeError, Decoder, Encoder};

/// Most descriptors above 2 a shim passes (the rest are counted, not passed).
pub const MAX_EXTRA_FDS: usize = 64;
/// Length of `c_cc` in Linux's `struct termios` as glibc and musl define it (`NCCS`).
pub const NCCS: usize = 32;

/// What a descriptor is, as `fstat` and `isatty` tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FdKind {
    /// Not open (the shim itself got /dev/null in its place).
    Closed,
    /// A terminal (`isatty`).
    Terminal,
    /// A pipe or FIFO.
    Pipe,
    /// A regular file.
    File,
    /// A socket.
    Socket,
    /// Anything else: a character device that is not a terminal (/dev/null), a directory...
    Other,
}

impl FdKind {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            FdKind::Closed => 0,
            FdKind::Terminal => 1,
            FdKind::Pipe => 2,
            FdKind::File => 3,
            FdKind::Socket => 4,
            FdKind::Other => 5,
        }
    }

    pub(crate) fn from_u8(b: u8) -> Result<FdKind, DecodeError> {
        Ok(match b {
            0 => FdKind::Closed,
            1 => FdKind::Terminal,
            2 => FdKind::Pipe,
            3 => FdKind::File,
            4 => FdKind::Socket,
            5 => FdKind::Other,
            _ => return Err(DecodeError::BadValue("descriptor kind")),
        })
    }

    /// Stable lower-case name, for the audit and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FdKind::Closed => "closed",
            FdKind::Terminal => "terminal",
            FdKind::Pipe => "pipe",
            FdKind::File => "file",
            FdKind::Socket => "socket",
            FdKind::Other => "other",
        }
    }

    /// Whether a descriptor of this kind can be handed over with `SCM_RIGHTS` and given
    /// to the command as it is (everything open but a terminal, which gets a PTY).
    pub fn is_passable(self) -> bool {
        !matches!(self, FdKind::Closed | FdKind::Terminal)
    }
}

/// A terminal's settings: the four flag words and the control characters of Linux's
/// `struct termios`, with Linux's bit values. (The line speed is part of `cflag` on Linux;
/// the line discipline number is not carried.)
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Termios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    /// `c_cc`, at most [`NCCS`] bytes.
    pub cc: Vec<u8>,
}

impl Termios {
    pub(crate) fn encode(&self, e: &mut Encoder<'_>) {
        e.u32(self.iflag);
        e.u32(self.oflag);
        e.u32(self.cflag);
        e.u32(self.lflag);
        e.bytes(&self.cc[..self.cc.len().min(NCCS)]);
    }

    pub(crate) fn decode(d: &mut Decoder<'_>) -> Result<Termios, DecodeError> {
        let iflag = d.u32()?;
        let oflag = d.u32()?;
        let cflag = d.u32()?;
        let lflag = d.u32()?;
        let cc = d.bytes()?;
        if cc.len() > NCCS {
            return Err(DecodeError::BadValue("termios control characters"));
        }
        Ok(Termios {
            iflag,
            oflag,
            cflag,
            lflag,
            cc: cc.to_vec(),
        })
    }
}

/// A terminal's window size (`struct winsize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
    pub xpixel: u16,
    pub ypixel: u16,
}

impl WinSize {
    pub(crate) fn encode(&self, e: &mut Encoder<'_>) {
        e.u16(self.rows);
        e.u16(self.cols);
        e.u16(self.xpixel);
        e.u16(self.ypixel);
    }

    pub(crate) fn decode(d: &mut Decoder<'_>) -> Result<WinSize, DecodeError> {
        Ok(WinSize {
            rows: d.u16()?,
            cols: d.u16()?,
            xpixel: d.u16()?,
            ypixel: d.u16()?,
        })
    }
}

/// The caller's terminal: what the command's PTY starts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminal {
    pub termios: Termios,
    pub size: WinSize,
    /// `$TERM`, byte-exact.
    pub term: Vec<u8>,
}

impl Terminal {
    pub(crate) fn encode(&self, e: &mut Encoder<'_>) {
        self.termios.encode(e);
        self.size.encode(e);
        e.bytes(&self.term);
    }

    pub(crate) fn decode(d: &mut Decoder<'_>) -> Result<Terminal, DecodeError> {
        Ok(Terminal {
            termios: Termios::decode(d)?,
            size: WinSize::decode(d)?,
            term: d.bytes()?.to_vec(),
        })
    }
}

/// A descriptor above 2 that the caller left open for the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtraFd {
    pub fd: u32,
    pub kind: FdKind,
}

/// Checks the extra descriptors of a request: at most [`MAX_EXTRA_FDS`], each above 2, in
/// strictly ascending order, none closed.
pub(crate) fn check_extra_fds(fds: &[ExtraFd]) -> Result<(), DecodeError> {
    if fds.len() > MAX_EXTRA_FDS {
        return Err(DecodeError::BadValue("number of extra descriptors"));
    }
    let mut last = 2u32;
    for f in fds {
        if f.fd <= last || f.kind == FdKind::Closed {
            return Err(DecodeError::BadValue("extra descriptor list"));
        }
        last = f.fd;
    }
    Ok(())
}

/// Whether `arg` names a descriptor above 2 of the process that reads it: `/dev/fd/N` or
/// `/proc/self/fd/N` (also `/proc/thread-self/fd/N`), anywhere in the argument (`--file=/dev/fd/63`).
/// Returns the first such N. An executor that cannot pass descriptors would give the
/// command nothing there: a silent empty read or a confusing "No such file".
pub fn names_inherited_fd(arg: &[u8]) -> Option<u32> {
    const PREFIXES: [&[u8]; 3] = [b"/dev/fd/", b"/proc/self/fd/", b"/proc/thread-self/fd/"];
    for prefix in PREFIXES {
        let mut from = 0;
        while let Some(at) = find(&arg[from..], prefix) {
            let digits_at = from + at + prefix.len();
            let digits: &[u8] = {
                let rest = &arg[digits_at..];
                let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                &rest[..n]
            };
            if !digits.is_empty() && digits.len() <= 10 {
                let n = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok());
                if let Some(n) = n.filter(|n| *n > 2) {
                    return Some(n.min(u32::MAX as u64) as u32);
                }
            }
            from = digits_at;
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
