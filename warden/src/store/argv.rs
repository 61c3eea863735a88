//! Byte-exact JSON encoding of argv and cwd, the same one the audit log uses: a token
//! that is valid UTF-8 is a JSON string, any other token is `{"hex": "<lowercase hex>"}`.
//! Valid UTF-8 always encodes as a string, so the encoding is a function of the bytes
//! and equal bytes give equal JSON (exact matching on the JSON text is exact matching
//! on the bytes).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Encodes one token.
pub fn encode_token(token: &[u8]) -> Value {
    match std::str::from_utf8(token) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => {
            let mut map = serde_json::Map::new();
            map.insert("hex".to_owned(), Value::String(hex(token)));
            Value::Object(map)
        }
    }
}

/// Decodes one token; `None` if `v` is neither a string nor `{"hex": ..}` with valid hex.
pub fn decode_token(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Object(map) if map.len() == 1 => unhex(map.get("hex")?.as_str()?),
        _ => None,
    }
}

/// Encodes argv as a JSON array text.
pub fn encode_argv(argv: &[Vec<u8>]) -> String {
    Value::Array(argv.iter().map(|t| encode_token(t)).collect()).to_string()
}

/// Decodes the text [`encode_argv`] wrote.
pub fn decode_argv(text: &str) -> Option<Vec<Vec<u8>>> {
    match serde_json::from_str::<Value>(text).ok()? {
        Value::Array(items) => items.iter().map(decode_token).collect(),
        _ => None,
    }
}

/// Lowercase hex SHA-256 over argv, each token prefixed by its length as a big-endian
/// u64, so that `["ab", "c"]` and `["a", "bc"]` never hash alike.
pub fn argv_sha256(argv: &[Vec<u8>]) -> String {
    let mut h = Sha256::new();
    for token in argv {
        h.update((token.len() as u64).to_be_bytes());
        h.update(token);
    }
    hex(&h.finalize())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let pairs = s.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_tokens_encode_as_hex_objects_and_round_trip() {
        let argv = vec![
            b"git".to_vec(),
            vec![0xff, 0x00, b'a'],
            "é".as_bytes().to_vec(),
        ];
        let text = encode_argv(&argv);
        assert_eq!(text, r#"["git",{"hex":"ff0061"},"é"]"#);
        assert_eq!(decode_argv(&text), Some(argv));
    }

    #[test]
    fn decode_rejects_malformed_tokens() {
        assert_eq!(decode_argv(r#"[{"hex":"f"}]"#), None);
        assert_eq!(decode_argv(r#"[{"hex":"FF"}]"#), None);
        assert_eq!(decode_argv(r#"[1]"#), None);
        assert_eq!(decode_argv(r#"{"hex":"ff"}"#), None);
    }

    #[test]
    fn argv_hash_separates_token_boundaries() {
        let a = argv_sha256(&[b"ab".to_vec(), b"c".to_vec()]);
        let b = argv_sha256(&[b"a".to_vec(), b"bc".to_vec()]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        // Empty argv hashes the empty input.
        assert_eq!(
            argv_sha256(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
