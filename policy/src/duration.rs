//! Durations as policies write them: `30s`, `2m`, `1h30m`, `500ms`, `1d`.

use std::time::Duration;

const NANOS: [(&str, u128); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

const HINT: &str = "write e.g. 30s, 2m, 1h30m, 500ms or 1d";

/// Parses a duration such as `30s`, `2m`, `1h30m`, `500ms` or `1d`.
///
/// Units (`d`, `h`, `m`, `s`, `ms`, `us`, `ns`) appear largest first, each at most once.
/// Zero, negative, empty and unit-less values are errors.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err(format!("empty duration; {HINT}"));
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut total: u128 = 0;
    let mut last_unit: Option<usize> = None;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "bad duration `{text}`: expected a number at `{}`; {HINT}",
                &text[start..]
            ));
        }
        let number: u128 = text[start..i]
            .parse()
            .map_err(|_| format!("bad duration `{text}`: number too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &text[unit_start..i];
        if unit.is_empty() {
            return Err(format!(
                "bad duration `{text}`: `{}` has no unit; {HINT}",
                &text[start..i]
            ));
        }
        let Some(index) = NANOS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!(
                "bad duration `{text}`: unknown unit `{unit}` (units: d, h, m, s, ms, us, ns)"
            ));
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(format!(
                "bad duration `{text}`: units must go from largest to smallest, each once (like 1h30m)"
            ));
        }
        last_unit = Some(index);
        total = number
            .checked_mul(NANOS[index].1)
            .and_then(|n| n.checked_add(total))
            .ok_or_else(|| format!("bad duration `{text}`: too large"))?;
    }
    if total == 0 {
        return Err(format!("bad duration `{text}`: must be greater than zero"));
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| format!("bad duration `{text}`: too large"))?;
    // Cannot truncate: the remainder is below 10^9.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way policies write them: `30s`, `2m`, `1h30m`, `500ms`
/// (`0s` for zero). `parse_duration(&format_duration(d)) == Ok(d)` for every `d > 0`.
pub fn format_duration(duration: Duration) -> String {
    let mut rest = duration.as_nanos();
    if rest == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in NANOS {
        let n = rest / size;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("1d", Duration::from_secs(86_400)),
            ("90s", Duration::from_secs(90)),
            ("1m30s500ms", Duration::from_millis(90_500)),
            ("1us", Duration::from_micros(1)),
            ("7ns", Duration::from_nanos(7)),
            ("0h5m", Duration::from_secs(300)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_durations_with_a_reason() {
        let cases = [
            ("", "empty duration; write e.g. 30s, 2m, 1h30m, 500ms or 1d"),
            ("0s", "bad duration `0s`: must be greater than zero"),
            (
                "10x",
                "bad duration `10x`: unknown unit `x` (units: d, h, m, s, ms, us, ns)",
            ),
            (
                "-5s",
                "bad duration `-5s`: expected a number at `-5s`; write e.g. 30s, 2m, 1h30m, 500ms or 1d",
            ),
            (
                "30",
                "bad duration `30`: `30` has no unit; write e.g. 30s, 2m, 1h30m, 500ms or 1d",
            ),
            (
                "30m1h",
                "bad duration `30m1h`: units must go from largest to smallest, each once (like 1h30m)",
            ),
            (
                "1s1s",
                "bad duration `1s1s`: units must go from largest to smallest, each once (like 1h30m)",
            ),
            (
                "1 s",
                "bad duration `1 s`: `1` has no unit; write e.g. 30s, 2m, 1h30m, 500ms or 1d",
            ),
            ("s", "bad duration `s`: expected a number at `s`; write e.g. 30s, 2m, 1h30m, 500ms or 1d"),
            ("99999999999999999999999999999999999999999d", "bad duration `99999999999999999999999999999999999999999d`: number too large"),
            ("999999999999999999999d", "bad duration `999999999999999999999d`: too large"),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Err(want.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn format_then_parse_round_trips() {
        let cases = [
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(86_400), "1d"),
            (Duration::from_millis(90_500), "1m30s500ms"),
            (Duration::new(93_784, 5_006_007), "1d2h3m4s5ms6us7ns"),
            (Duration::MAX, "213503982334601d7h15s999ms999us999ns"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
        }
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn parse_then_format_canonicalises() {
        for (text, canonical) in [
            ("90s", "1m30s"),
            ("60m", "1h"),
            ("1500ms", "1s500ms"),
            ("24h", "1d"),
        ] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), canonical);
        }
    }
}
