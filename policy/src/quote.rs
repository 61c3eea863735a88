//! Shell quoting of argv tokens, for `args_regex` and for messages.

use std::fmt::Write as _;

/// Quotes one argv token so a POSIX shell (bash for `$'...'`) reads it back unchanged.
///
/// Safe tokens (`[A-Za-z0-9_@%+=:,./-]+`) stay as they are; other valid UTF-8 without
/// control or invisible characters is single-quoted (`'` becomes `'\''`); the empty
/// token is `''`; anything with control characters, invisible or bidi characters (see
/// [`is_invisible_or_control`]) or bytes that are not UTF-8 uses `$'...'` with `\xHH`
/// escapes, so what a person reads is what the command gets.
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
        Ok(text) if !text.chars().any(is_invisible_or_control) => {
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
                c if is_invisible_or_control(c) => {
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

/// Whether `c` must be escaped wherever a person reads text a prisoner controls.
///
/// Control characters (C0, DEL, C1) move the cursor or rewrite a terminal. The others
/// draw nothing or reorder what surrounds them, so a line could show one command and hold
/// another ("Trojan Source", CVE-2021-42574): bidi embeddings, overrides and isolates
/// (U+202A–202E, U+2066–2069, U+061C, U+200E–200F), zero-width characters (U+200B–200D,
/// U+2060–2064, U+FEFF), every other format character (category Cf: U+00AD, U+0600–0605,
/// U+06DD, U+070F, U+0890–0891, U+08E2, U+180E, U+206A–206F, U+FFF9–FFFB, U+110BD,
/// U+110CD, U+13430–1343F, U+1BCA0–1BCA3, U+1D173–1D17A, tags U+E0001, U+E0020–E007F),
/// line and paragraph separators (U+2028–2029), fillers that render as nothing (U+034F,
/// U+115F–1160, U+17B4–17B5, U+3164, U+FFA0) and variation selectors (U+FE00–FE0F,
/// U+E0100–E01EF). The dashboard's `HIDDEN` expression in `app.js` lists the same set.
pub fn is_invisible_or_control(c: char) -> bool {
    let c = c as u32;
    INVISIBLE_OR_CONTROL
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// The ranges (inclusive) of [`is_invisible_or_control`], in code point order.
pub const INVISIBLE_OR_CONTROL: &[(u32, u32)] = &[
    (0x00, 0x1f),
    (0x7f, 0x9f),
    (0xad, 0xad),
    (0x34f, 0x34f),
    (0x600, 0x605),
    (0x61c, 0x61c),
    (0x6dd, 0x6dd),
    (0x70f, 0x70f),
    (0x890, 0x891),
    (0x8e2, 0x8e2),
    (0x115f, 0x1160),
    (0x17b4, 0x17b5),
    (0x180e, 0x180e),
    (0x200b, 0x200f),
    (0x2028, 0x202e),
    (0x2060, 0x2064),
    (0x2066, 0x206f),
    (0x3164, 0x3164),
    (0xfe00, 0xfe0f),
    (0xfeff, 0xfeff),
    (0xffa0, 0xffa0),
    (0xfff9, 0xfffb),
    (0x110bd, 0x110bd),
    (0x110cd, 0x110cd),
    (0x13430, 0x1343f),
    (0x1bca0, 0x1bca3),
    (0x1d173, 0x1d17a),
    (0xe0001, 0xe0001),
    (0xe0020, 0xe007f),
    (0xe0100, 0xe01ef),
];

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
            // Bidi override (U+202E): shown as bytes, so a token cannot display reversed.
            ("a\u{202e}b".as_bytes(), "$'a\\xe2\\x80\\xaeb'"),
            (
                "\u{2066}x\u{2069}".as_bytes(),
                "$'\\xe2\\x81\\xa6x\\xe2\\x81\\xa9'",
            ),
            (
                "zero\u{200b}width".as_bytes(),
                "$'zero\\xe2\\x80\\x8bwidth'",
            ),
            ("\u{feff}bom".as_bytes(), "$'\\xef\\xbb\\xbfbom'"),
            ("tag\u{e0041}".as_bytes(), "$'tag\\xf3\\xa0\\x81\\x81'"),
            // C1 control (U+0085, NEL).
            ("a\u{85}b".as_bytes(), "$'a\\xc2\\x85b'"),
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
