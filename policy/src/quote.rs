//! Shell quoting of argv tokens, for `args_regex` and for messages.

use std::fmt::Write as _;

/// Quotes one argv token so a POSIX shell (bash for `$'...'`) reads it back unchanged.
///
/// Safe tokens (`[A-Za-z0-9_@%+=:,./-]+`) stay as they are; other valid UTF-8 without
/// control characters is single-quoted (`'` becomes `'\''`); the empty token is `''`;
/// anything with control characters or bytes that are not UTF-8 uses `$'...'` with
/// `\xHH` escapes.
pub fn shell_quote(token: &[u8]) -> String {
    if token.is_empty() {
        return "''".to_owned();
    }
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b);
    if token.iter().all(|&b| safe(b)) {
        // All ASCII, so this cannot fail.
        return String::from_utf8_lossy(token).into_owned();
    }
    match std::str::from_utf8(token) {
        Ok(text) if !text.chars().any(char::is_control) => {
            format!("'{}'", text.replace('\'', "'\\''"))
        }
        _ => ansi_c_quote(token),
    }
}

fn ansi_c_quote(token: &[u8]) -> String {
    let mut out = String::from("$'");
    for chunk in token.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_table() {
        let cases: &[(&[u8], &str)] = &[
            (b"git", "git"),
            (b"--force", "--force"),
            (b"a=b,c:d/e.f@g%h+i", "a=b,c:d/e.f@g%h+i"),
            (b"", "''"),
            (b"push --force", "'push --force'"),
            (b"it's", "'it'\\''s'"),
            (b"*", "'*'"),
            (b"$HOME", "'$HOME'"),
            ("héllo".as_bytes(), "'héllo'"),
            (b"a\nb", "$'a\\nb'"),
            (b"\xff\xfe", "$'\\xff\\xfe'"),
            (b"x\x01'\\", "$'x\\x01\\'\\\\'"),
            (b"caf\xc3\xa9\xff", "$'café\\xff'"),
        ];
        for &(token, want) in cases {
            assert_eq!(
                shell_quote(token),
                want,
                "{:?}",
                String::from_utf8_lossy(token)
            );
        }
    }
}
