//! Primitive encoding: big-endian integers and `u32`-length-prefixed byte strings.

use std::fmt;

/// Appends primitive values to a buffer.
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Encoder<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Encoder { out }
    }
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    /// Bytes without a length prefix (only as the last field of a payload).
    pub fn raw(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }
    /// A length-prefixed byte string. Lengths above `u32::MAX` cannot occur: the caller
    /// checks the whole payload against a limit far below that.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len().min(u32::MAX as usize) as u32);
        self.out.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
}

/// Reads primitive values from a payload, checking every length against what is left.
pub struct Decoder<'a> {
    buf: &'a [u8],
}

/// A payload that does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ended before the field `what`.
    Short(&'static str),
    /// A length prefix claims more bytes than the payload has.
    LengthOverrun { claimed: u64, left: usize },
    /// Bytes left over after the last field.
    Trailing(usize),
    /// A text field is not UTF-8.
    NotUtf8,
    /// A field has a value outside its domain.
    BadValue(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short(what) => write!(f, "payload ends before {what}"),
            DecodeError::LengthOverrun { claimed, left } => {
                write!(
                    f,
                    "length {claimed} exceeds the {left} bytes left in the frame"
                )
            }
            DecodeError::Trailing(n) => write!(f, "{n} unexpected bytes after the last field"),
            DecodeError::NotUtf8 => f.write_str("text field is not valid UTF-8"),
            DecodeError::BadValue(what) => write!(f, "invalid {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Short(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1, "u8")?[0])
    }
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadValue("boolean")),
        }
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2, "u16")?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4, "u32")?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4, "i32")?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn array4(&mut self) -> Result<[u8; 4], DecodeError> {
        let b = self.take(4, "magic")?;
        Ok([b[0], b[1], b[2], b[3]])
    }
    /// A length-prefixed byte string, borrowed from the payload.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()?;
        if n as usize > self.buf.len() {
            return Err(DecodeError::LengthOverrun {
                claimed: n as u64,
                left: self.buf.len(),
            });
        }
        self.take(n as usize, "bytes")
    }
    pub fn str(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::NotUtf8)
    }
    pub fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(DecodeError::BadValue("option flag")),
        }
    }
    /// A list count, bounded by how many items of at least `min_item` bytes could fit in
    /// what is left, so a hostile count cannot reserve memory the payload does not back.
    pub fn count(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as u64;
        let fit = (self.buf.len() / min_item.max(1)) as u64;
        if n > fit {
            return Err(DecodeError::LengthOverrun {
                claimed: n,
                left: self.buf.len(),
            });
        }
        Ok(n as usize)
    }
    /// Everything left (the last field of I/O frames).
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    /// Fails when bytes are left over.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }
}
