//! Output for people: aligned tables, relative times, shell-quoted argv, and the
//! escaping that keeps prisoner-controlled text from driving the operator's terminal.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use clawrden_policy::is_invisible_or_control;
use serde_json::Value;

/// Columns separated by two spaces, each as wide as its widest cell; the last column
/// is not padded (no trailing spaces).
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells are escaped with [`clean`].
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|c| clean(&c)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == cols {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Escapes control characters (ESC, CR, newlines, ...) so text from a prisoner (argv,
/// cwd, reasons) cannot move the cursor or rewrite the operator's screen, and invisible
/// and bidi characters (U+202E, U+200B, ...: see [`is_invisible_or_control`]) so a line
/// cannot show one thing and hold another. Each becomes `\u{hex}`.
pub fn clean(text: &str) -> String {
    if !text.chars().any(is_invisible_or_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_invisible_or_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// [`clean`] for text of several lines: each line escaped, the line breaks kept.
pub fn clean_lines(text: &str) -> String {
    text.split('\n').map(clean).collect::<Vec<_>>().join("\n")
}

/// One argv token as the API sends it (a string, or `{"hex": ".."}` for non-UTF-8) as bytes.
pub fn token_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.clone().into_bytes(),
        Value::Object(o) => match o.get("hex").and_then(Value::as_str) {
            Some(hex) => decode_hex(hex).unwrap_or_else(|| hex.as_bytes().to_vec()),
            None => v.to_string().into_bytes(),
        },
        other => other.to_string().into_bytes(),
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() & 1 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An argv array (or a single cwd value) shell-quoted, tokens joined by spaces.
pub fn quote_argv(v: &Value) -> String {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|t| clawrden_policy::shell_quote(&token_bytes(t)))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => "-".to_owned(),
        other => clawrden_policy::shell_quote(&token_bytes(other)),
    }
}

/// A field as display text: strings as-is, null/missing as "-", others as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses RFC 3339 (`2026-11-24T09:01:02.345Z`, fractions and offsets allowed) to
/// milliseconds since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        millis = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") && &tz[3..4] == ":" => {
            let h: i64 = tz[1..3].parse().ok()?;
            let m: i64 = tz[4..6].parse().ok()?;
            let sign = if &tz[..1] == "-" { -1 } else { 1 };
            sign * (h * 60 + m)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `HH:MM:SS` UTC of a time in milliseconds since the epoch.
pub fn clock_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// "12s ago", "5m ago", "3h ago", "2d ago"; "in 59m" for the future; "now" within a second.
pub fn relative(then_ms: i64, now_ms: i64) -> String {
    let delta = now_ms - then_ms;
    let secs = delta.abs() / 1000;
    if secs == 0 {
        return "now".to_owned();
    }
    let amount = match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    };
    if delta > 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A time field rendered relative to now; "-" when null, verbatim when unparsable.
pub fn when(v: &Value, now_ms: i64) -> String {
    match v.as_str() {
        None => "-".to_owned(),
        Some(s) => parse_rfc3339(s)
            .map(|ms| relative(ms, now_ms))
            .unwrap_or_else(|| s.to_owned()),
    }
}

/// Writes `text` to stdout. A closed stdout (`clawctl history | head`) is not an error
/// worth a panic: the reader has what it wanted.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Prints an API answer for `--json`: its bytes re-indented, and invisible or control
/// characters written as `\uXXXX` escapes (the same JSON value), nothing else changed.
pub fn print_api_json(answer: &crate::client::ApiJson) {
    let mut text = json_escape_hidden(&pretty(&answer.raw));
    text.push('\n');
    emit(&text);
}

/// JSON text with every character [`is_invisible_or_control`] flags written as a `\uXXXX`
/// escape (a surrogate pair above U+FFFF). Such characters can only stand inside JSON
/// strings, where the escape denotes the same character: the document means the same,
/// but a terminal showing it cannot be steered or made to show reordered text.
pub fn json_escape_hidden(json: &str) -> String {
    if !json.chars().any(is_invisible_or_control_unescaped) {
        return json.to_owned();
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_invisible_or_control_unescaped(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Newlines and tabs between JSON tokens are layout, not string content (inside strings
/// they are always escaped already).
fn is_invisible_or_control_unescaped(c: char) -> bool {
    c != '\n' && c != '\t' && is_invisible_or_control(c)
}

/// Re-indents valid JSON text (two spaces, like serde_json's pretty printer) without
/// parsing it into a map, so key order and number spelling stay exactly as sent.
pub fn pretty(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.trim().chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Empty containers stay `{}` / `[]`.
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.push(chars.next().unwrap_or(']'));
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// Prints `value` as pretty JSON: what `--json` shows.
pub fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    let mut text = json_escape_hidden(&text);
    text.push('\n');
    emit(&text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_output_escapes_hidden_characters_and_keeps_its_value() {
        let value = json!({"argv": ["rm", "-rf", "/\u{202e}fdsa", "a\u{7f}\u{85}b", "tag\u{e0041}"], "n": 1});
        let text = serde_json::to_string_pretty(&value).unwrap();
        let escaped = json_escape_hidden(&text);
        assert!(!escaped.chars().any(is_invisible_or_control_unescaped));
        assert!(escaped.contains(r#""/\u202efdsa""#), "{escaped}");
        assert!(escaped.contains(r#""a\u007f\u0085b""#), "{escaped}");
        assert!(escaped.contains(r#""tag\udb40\udc41""#), "{escaped}");
        let back: Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back, value);
        assert_eq!(json_escape_hidden(&pretty(text.as_bytes())), escaped);
    }

    #[test]
    fn clean_escapes_bidi_and_invisible_characters() {
        assert_eq!(
            clean("rm -rf /\u{202e}gpj.txt\u{200b}\u{feff}\x1b[2J"),
            "rm -rf /\\u{202e}gpj.txt\\u{200b}\\u{feff}\\u{1b}[2J"
        );
        assert_eq!(clean_lines("a\u{2066}\nb"), "a\\u{2066}\nb");
    }

    #[test]
    fn table_aligns_columns_and_does_not_pad_the_last() {
        let mut t = Table::new(&["ID", "STATE", "COMMAND"]);
        t.row(vec!["a".into(), "pending".into(), "cat /etc/hosts".into()]);
        t.row(vec!["longer-id".into(), "ok".into(), "".into()]);
        assert_eq!(
            t.render(),
            "ID         STATE    COMMAND\n\
             a          pending  cat /etc/hosts\n\
             longer-id  ok\n"
        );
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["é".into(), "x".into()]);
        t.row(vec!["ab".into(), "y".into()]);
        assert_eq!(t.render(), "A   B\né   x\nab  y\n");
    }

    #[test]
    fn table_escapes_terminal_control_sequences() {
        let mut t = Table::new(&["REASON"]);
        t.row(vec!["ok\x1b[2J\nmore\r".into()]);
        assert_eq!(t.render(), "REASON\nok\\u{1b}[2J\\nmore\\r\n");
    }

    #[test]
    fn argv_is_shell_quoted_including_hex_tokens() {
        let argv = json!(["cat", "my file", "it's", {"hex": "ff00"}]);
        assert_eq!(quote_argv(&argv), "cat 'my file' 'it'\\''s' $'\\xff\\x00'");
        assert_eq!(quote_argv(&json!("/tmp")), "/tmp");
        assert_eq!(quote_argv(&Value::Null), "-");
    }

    #[test]
    fn rfc3339_parses_to_epoch_millis() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-24T09:01:02.345Z"),
            Some(1_795_510_862_345)
        );
        assert_eq!(
            parse_rfc3339("2026-11-24T10:01:02.3+01:00"),
            Some(1_795_510_862_300)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00.123456789Z"),
            Some(951_782_400_123)
        );
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-11-24T09:01:02"), None);
    }

    #[test]
    fn relative_times_pick_one_unit() {
        let now = 1_000_000_000;
        assert_eq!(relative(now - 400, now), "now");
        assert_eq!(relative(now - 12_000, now), "12s ago");
        assert_eq!(relative(now - 59_999, now), "59s ago");
        assert_eq!(relative(now - 60_000, now), "1m ago");
        assert_eq!(relative(now - 7_200_000, now), "2h ago");
        assert_eq!(relative(now - 3 * 86_400_000, now), "3d ago");
        assert_eq!(relative(now + 3_540_000, now), "in 59m");
        assert_eq!(when(&Value::Null, now), "-");
        assert_eq!(when(&json!("soon"), now), "soon");
    }

    #[test]
    fn pretty_keeps_key_order_and_matches_serde_layout() {
        let raw = br#"{"id":"b","argv":["a","x\"]{,"],"approval":null,"e":{},"l":[ ],"n":-1.50e3}"#;
        assert_eq!(
            pretty(raw),
            "{\n  \"id\": \"b\",\n  \"argv\": [\n    \"a\",\n    \"x\\\"]{,\"\n  ],\n  \"approval\": null,\n  \"e\": {},\n  \"l\": [],\n  \"n\": -1.50e3\n}"
        );
        // Same text as serde_json's pretty printer when keys are already sorted.
        let v = json!({"a": [1, {"b": "c"}], "d": {}});
        assert_eq!(
            pretty(v.to_string().as_bytes()),
            serde_json::to_string_pretty(&v).unwrap()
        );
    }

    #[test]
    fn clock_is_utc_hms() {
        assert_eq!(clock_utc(1_795_510_862_345), "09:01:02");
    }
}
