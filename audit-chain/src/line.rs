//! One audit line: the event, its place in the chain, and its MAC.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::key::AuditKey;

/// `prev` of the very first line.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What separates a line's MAC'd bytes from its MAC: the `mac` field is always last.
const MAC_FIELD: &str = ",\"mac\":\"";
/// Length of a SHA-256 or HMAC-SHA-256 in hex.
const HEX_LEN: usize = 64;

/// Kinds of audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Request,
    Decision,
    Approval,
    Start,
    Exit,
    TimeoutViolation,
    Cancel,
    Control,
    Error,
}

impl EventKind {
    /// The `event` field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Request => "request",
            EventKind::Decision => "decision",
            EventKind::Approval => "approval",
            EventKind::Start => "start",
            EventKind::Exit => "exit",
            EventKind::TimeoutViolation => "timeout_violation",
            EventKind::Cancel => "cancel",
            EventKind::Control => "control",
            EventKind::Error => "error",
        }
    }
}

/// One event, before the writer gives it `seq`, `ts`, `prev` and `mac`.
#[derive(Debug, Clone)]
pub struct Event {
    kind: EventKind,
    request_id: Option<String>,
    fields: Vec<(&'static str, Value)>,
}

impl Event {
    /// An event about one call.
    pub fn for_request(kind: EventKind, request_id: &str) -> Event {
        Event {
            kind,
            request_id: Some(request_id.to_owned()),
            fields: Vec::new(),
        }
    }

    /// A control event (not about one call).
    pub fn control() -> Event {
        Event {
            kind: EventKind::Control,
            request_id: None,
            fields: Vec::new(),
        }
    }

    /// Adds a field; fields keep the order they were added in.
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Event {
        self.fields.push((key, value.into()));
        self
    }

    /// Adds a byte-string field: a JSON string if valid UTF-8, else `{"hex": "..."}`.
    pub fn with_bytes(self, key: &'static str, value: &[u8]) -> Event {
        self.with(key, bytes_value(value))
    }

    /// Adds an array of byte strings (argv), each encoded like [`Event::with_bytes`].
    pub fn with_byte_list(self, key: &'static str, values: &[Vec<u8>]) -> Event {
        let list: Vec<Value> = values.iter().map(|v| bytes_value(v)).collect();
        self.with(key, Value::Array(list))
    }

    /// The event kind.
    pub fn kind(&self) -> EventKind {
        self.kind
    }
}

/// A byte string as JSON: a string if valid UTF-8, else `{"hex": "..."}`.
pub fn bytes_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => {
            let mut obj = serde_json::Map::new();
            obj.insert("hex".to_owned(), Value::String(hex::encode(bytes)));
            Value::Object(obj)
        }
    }
}

/// What the next line's `prev` holds for `line` (its bytes without the '\n'): lowercase
/// hex SHA-256.
pub fn link_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// The complete line (without '\n') for `event` at `seq`, written at `ts`, after a line
/// whose [`link_hash`] is `prev`, MAC'd with `key`.
pub fn render(seq: u64, ts: &str, event: &Event, prev: &str, key: &AuditKey) -> String {
    let mut s = String::with_capacity(256);
    s.push_str("{\"seq\":");
    s.push_str(&seq.to_string());
    s.push_str(",\"ts\":\"");
    s.push_str(ts);
    s.push_str("\",\"event\":\"");
    s.push_str(event.kind.as_str());
    s.push('"');
    if let Some(id) = &event.request_id {
        s.push_str(",\"request_id\":");
        s.push_str(&Value::String(id.clone()).to_string());
    }
    for (key, value) in &event.fields {
        s.push_str(",\"");
        s.push_str(key);
        s.push_str("\":");
        s.push_str(&value.to_string());
    }
    s.push_str(",\"prev\":\"");
    s.push_str(prev);
    s.push('"');
    let mac = key.mac_hex(s.as_bytes());
    s.push_str(MAC_FIELD);
    s.push_str(&mac);
    s.push_str("\"}");
    s
}

/// A keyed line split into the bytes its MAC covers and the MAC; `None` when the line
/// does not end in a `mac` field.
pub fn split_mac(line: &[u8]) -> Option<(&[u8], &str)> {
    let tail = MAC_FIELD.len() + HEX_LEN + 2;
    if line.len() < tail || !line.ends_with(b"\"}") {
        return None;
    }
    let at = line.len() - tail;
    if &line[at..at + MAC_FIELD.len()] != MAC_FIELD.as_bytes() {
        return None;
    }
    let mac = std::str::from_utf8(&line[at + MAC_FIELD.len()..line.len() - 2]).ok()?;
    Some((&line[..at], mac))
}

/// The chain fields of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineHead {
    pub seq: u64,
    pub prev: String,
    /// The MAC, when the line has one (lines written before keying do not).
    pub mac: Option<String>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses the chain fields of a line (without '\n'), or says what is wrong with it.
pub fn parse_line(line: &[u8]) -> Result<LineHead, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| "not a JSON object".to_owned())?;
    let seq = match object.get("seq") {
        None => return Err("missing `seq`".to_owned()),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("`seq` is {v}, not an unsigned integer"))?,
    };
    let prev = match object.get("prev") {
        None => return Err("missing `prev`".to_owned()),
        Some(v) => v
            .as_str()
            .filter(|s| is_hex64(s))
            .ok_or_else(|| format!("`prev` is {v}, not 64 lowercase hex digits"))?,
    };
    let mac = match object.get("mac") {
        None => None,
        Some(v) => {
            let mac = v
                .as_str()
                .filter(|s| is_hex64(s))
                .ok_or_else(|| format!("`mac` is {v}, not 64 lowercase hex digits"))?;
            match split_mac(line) {
                Some((_, tail)) if tail == mac => Some(mac.to_owned()),
                _ => return Err("`mac` is not the last field of the line".to_owned()),
            }
        }
    };
    Ok(LineHead {
        seq,
        prev: prev.to_owned(),
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::from_bytes([1; 32])
    }

    #[test]
    fn rendered_line_is_exact_and_its_mac_covers_everything_before_it() {
        let event = Event::for_request(EventKind::Request, "01ID")
            .with("n", 0)
            .with_bytes("cwd", b"/tmp/\xc3");
        let line = render(1, "2026-11-24T09:01:02.345Z", &event, ZERO_HASH, &key());
        let body = format!(
            "{{\"seq\":1,\"ts\":\"2026-11-24T09:01:02.345Z\",\"event\":\"request\",\
             \"request_id\":\"01ID\",\"n\":0,\"cwd\":{{\"hex\":\"2f746d702fc3\"}},\"prev\":\"{ZERO_HASH}\""
        );
        let mac = key().mac_hex(body.as_bytes());
        assert_eq!(line, format!("{body},\"mac\":\"{mac}\"}}"));
        let (covered, got) = split_mac(line.as_bytes()).unwrap();
        assert_eq!((covered, got), (body.as_bytes(), mac.as_str()));
        let head = parse_line(line.as_bytes()).unwrap();
        assert_eq!(
            head,
            LineHead {
                seq: 1,
                prev: ZERO_HASH.to_owned(),
                mac: Some(mac)
            }
        );
    }

    #[test]
    fn unkeyed_lines_parse_without_a_mac() {
        let line = format!("{{\"seq\":3,\"event\":\"exit\",\"prev\":\"{ZERO_HASH}\"}}");
        assert_eq!(split_mac(line.as_bytes()), None);
        assert_eq!(parse_line(line.as_bytes()).unwrap().mac, None);
    }

    #[test]
    fn a_mac_anywhere_but_last_is_refused() {
        let mac = "a".repeat(64);
        let line = format!("{{\"seq\":3,\"mac\":\"{mac}\",\"prev\":\"{ZERO_HASH}\"}}");
        assert_eq!(
            parse_line(line.as_bytes()).unwrap_err(),
            "`mac` is not the last field of the line"
        );
        let line = format!("{{\"seq\":3,\"prev\":\"{ZERO_HASH}\",\"mac\":\"ABC\"}}");
        assert_eq!(
            parse_line(line.as_bytes()).unwrap_err(),
            "`mac` is \"ABC\", not 64 lowercase hex digits"
        );
    }
}
