//! Reading the warden's audit log (`<state-dir>/audit/audit.jsonl`).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// One parsed audit line.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// 1-based line number in the file.
    pub line_no: usize,
    /// The line's bytes without its '\n'.
    pub raw: String,
    pub json: Value,
}

impl AuditEvent {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key)
    }

    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.json.get(key).and_then(Value::as_str)
    }

    pub fn event(&self) -> &str {
        self.str_field("event").unwrap_or_else(|| {
            panic!(
                "audit line {} has no string `event`: {}",
                self.line_no, self.raw
            )
        })
    }

    pub fn seq(&self) -> u64 {
        self.json
            .get("seq")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("audit line {} has no u64 `seq`: {}", self.line_no, self.raw))
    }

    pub fn request_id(&self) -> Option<&str> {
        self.str_field("request_id")
    }
}

/// Parses a whole audit file; panics naming the line if one is not a JSON object.
/// A final line without '\n' (being written right now) is ignored.
pub fn parse_audit(text: &str) -> Vec<AuditEvent> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let json: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("audit line {} is not JSON ({e}): {line}", i + 1));
            assert!(
                json.is_object(),
                "audit line {} is not a JSON object: {line}",
                i + 1
            );
            AuditEvent {
                line_no: i + 1,
                raw: line.to_string(),
                json,
            }
        })
        .collect()
}

/// Decodes an audit `argv` array: each token a JSON string, or `{"hex": "..."}` for bytes
/// that are not UTF-8.
pub fn argv_strings(v: &Value) -> Vec<Vec<u8>> {
    let arr = v
        .as_array()
        .unwrap_or_else(|| panic!("audit argv is not an array: {v}"));
    arr.iter().map(decode_bytes).collect()
}

/// Decodes one audit byte string: a JSON string, or `{"hex": "..."}`.
pub fn decode_bytes(v: &Value) -> Vec<u8> {
    if let Some(s) = v.as_str() {
        return s.as_bytes().to_vec();
    }
    let hex = v
        .get("hex")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("audit byte string is neither a string nor {{\"hex\"}}: {v}"));
    assert!(hex.len() & 1 == 0, "odd-length hex in audit: {v}");
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .unwrap_or_else(|e| panic!("bad hex {hex:?} in audit: {e}"))
        })
        .collect()
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
