use super::*;
use crate::line::{render, Event, EventKind};

fn key() -> AuditKey {
    AuditKey::from_bytes([42; 32])
}

/// `n` unkeyed (pre-keying) lines from `first_seq` after `prev`.
fn unkeyed_lines(first_seq: u64, n: u64, prev: &str) -> Vec<String> {
    let mut prev = prev.to_owned();
    let mut out = Vec::new();
    for seq in first_seq..first_seq + n {
        let line = format!(
            r#"{{"seq":{seq},"ts":"2026-11-24T09:01:02.345Z","event":"request","request_id":"r{seq}","prev":"{prev}"}}"#
        );
        prev = link_hash(line.as_bytes());
        out.push(line);
    }
    out
}

/// `n` keyed lines from `first_seq` after `prev`, MAC'd with `key`.
fn keyed_lines(first_seq: u64, n: u64, prev: &str, key: &AuditKey) -> Vec<String> {
    let mut prev = prev.to_owned();
    let mut out = Vec::new();
    for seq in first_seq..first_seq + n {
        let event = Event::for_request(EventKind::Request, &format!("r{seq}"));
        let line = render(seq, "2026-11-24T09:01:02.345Z", &event, &prev, key);
        prev = link_hash(line.as_bytes());
        out.push(line);
    }
    out
}

/// What a forger without the key does: rewrites `seq` and `prev` of every line so the
/// SHA-256 chain holds again (MACs left as they were).
fn recompute_chain(lines: &mut [String]) {
    let mut prev = ZERO_HASH.to_owned();
    for (i, line) in lines.iter_mut().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["seq"] = (i as u64 + 1).into();
        v["prev"] = prev.clone().into();
        // serde_json keeps insertion order only with preserve_order; rebuild by hand.
        let mac = v.get("mac").and_then(|m| m.as_str()).map(str::to_owned);
        let rid = v["request_id"].as_str().unwrap().to_owned();
        let event = v["event"].as_str().unwrap().to_owned();
        let mut s = format!(
            r#"{{"seq":{},"ts":"2026-11-24T09:01:02.345Z","event":"{event}","request_id":"{rid}","prev":"{prev}""#,
            i + 1
        );
        if let Some(mac) = mac {
            s.push_str(&format!(r#","mac":"{mac}""#));
        }
        s.push('}');
        *line = s;
        prev = link_hash(line.as_bytes());
    }
}

fn text(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn verify_with(files: &[(&str, String)], key: Option<AuditKey>) -> Result<Report, Failure> {
    let mut chain = Chain::new(key);
    for (name, body) in files {
        chain.feed_text(name, body.as_bytes())?;
    }
    chain.finish("input")
}

fn verify(files: &[(&str, String)]) -> Result<Report, Failure> {
    verify_with(files, None)
}

fn failure(files: &[(&str, String)]) -> String {
    verify(files)
        .expect_err("verification should fail")
        .to_string()
}

fn keyed_failure(files: &[(&str, String)]) -> String {
    verify_with(files, Some(key()))
        .expect_err("verification should fail")
        .to_string()
}

#[test]
fn good_unkeyed_chain_reports_count_range_head_and_integrity_only() {
    let lines = unkeyed_lines(1, 5, ZERO_HASH);
    let head = link_hash(lines[4].as_bytes());
    let report = verify(&[("audit.jsonl", text(&lines))]).unwrap();
    assert_eq!(
        report.to_string(),
        format!("ok: 5 events, seq 1..5, head {head}\nintegrity only: the hash chain is intact, but no line carries a mac (written before the audit was keyed), so whoever could write the file could have recomputed it")
    );
    assert!(report.notes.is_empty());
}

#[test]
fn keyed_chain_without_the_key_says_it_checked_integrity_not_authenticity() {
    let lines = keyed_lines(1, 4, ZERO_HASH, &key());
    let head = link_hash(lines[3].as_bytes());
    let report = verify(&[("audit.jsonl", text(&lines))]).unwrap();
    assert_eq!(
        report.to_string(),
        format!("ok: 4 events, seq 1..4, head {head}\nintegrity only: the hash chain is intact, but whoever can write the file can recompute it; pass --key FILE to check the mac of 4 line(s)")
    );
}

#[test]
fn keyed_chain_with_the_key_is_authentic() {
    let lines = keyed_lines(1, 4, ZERO_HASH, &key());
    let head = link_hash(lines[3].as_bytes());
    let report = verify_with(&[("audit.jsonl", text(&lines))], Some(key())).unwrap();
    assert_eq!(
        report.to_string(),
        format!(
            "ok: 4 events, seq 1..4, head {head}\nauthentic: the mac of every line of seq 1..4 matches key {}",
            key().id()
        )
    );
}

#[test]
fn a_chain_recomputed_without_the_key_passes_integrity_and_fails_with_the_key() {
    // The attack: drop a denied line, edit another, recompute seq and prev.
    let mut lines = keyed_lines(1, 6, ZERO_HASH, &key());
    lines.remove(2);
    lines[3] = lines[3].replace("\"r5\"", "\"r9\"");
    recompute_chain(&mut lines);
    assert!(verify(&[("a.jsonl", text(&lines))]).is_ok());
    assert_eq!(
        keyed_failure(&[("a.jsonl", text(&lines))]),
        format!(
            "a.jsonl:3: mac does not match key {}: this line was altered or rewritten, or the audit was written with another key",
            key().id()
        )
    );
}

#[test]
fn a_chain_forged_with_another_key_fails_at_its_first_line() {
    let other = AuditKey::from_bytes([7; 32]);
    let lines = keyed_lines(1, 3, ZERO_HASH, &other);
    assert_eq!(
        keyed_failure(&[("a.jsonl", text(&lines))]),
        format!(
            "a.jsonl:1: mac does not match key {}: this line was altered or rewritten, or the audit was written with another key",
            key().id()
        )
    );
}

#[test]
fn keyed_segment_after_unkeyed_lines_is_reported() {
    let mut lines = unkeyed_lines(1, 3, ZERO_HASH);
    let prev = link_hash(lines[2].as_bytes());
    lines.extend(keyed_lines(4, 2, &prev, &key()));
    let report = verify_with(&[("a.jsonl", text(&lines))], Some(key())).unwrap();
    assert_eq!(
        report.authenticity,
        Authenticity::Checked {
            key_id: key().id(),
            keyed: (4, 5),
            unkeyed: Some((1, 3)),
        }
    );
    assert!(report
        .to_string()
        .ends_with("\nintegrity only: seq 1..3 carry no mac (written before the audit was keyed)"));
}

#[test]
fn an_unkeyed_line_after_keyed_ones_is_refused_with_or_without_the_key() {
    let mut lines = keyed_lines(1, 2, ZERO_HASH, &key());
    let prev = link_hash(lines[1].as_bytes());
    lines.extend(unkeyed_lines(3, 1, &prev));
    let want = "a.jsonl:3: line has no mac, but the lines since seq 1 do: it was inserted or rewritten by someone without the key";
    assert_eq!(failure(&[("a.jsonl", text(&lines))]), want);
    assert_eq!(keyed_failure(&[("a.jsonl", text(&lines))]), want);
}

#[test]
fn stripping_every_mac_fails_with_the_key() {
    let lines = unkeyed_lines(1, 3, ZERO_HASH);
    assert_eq!(
        keyed_failure(&[("a.jsonl", text(&lines))]),
        "input: no line carries a mac, so none can be authenticated with --key (written before the audit was keyed, or the macs were stripped)"
    );
}

#[test]
fn edited_line_is_reported_at_that_line() {
    let mut lines = unkeyed_lines(1, 5, ZERO_HASH);
    lines[2] = lines[2].replace("\"request\"", "\"exit\"");
    assert_eq!(
        failure(&[("a.jsonl", text(&lines))]),
        "a.jsonl:3: line was altered: its SHA-256 does not match the prev recorded at line 4, and the line after that confirms line 4 is intact"
    );
}

#[test]
fn edited_prev_field_is_reported_at_the_line_holding_it() {
    let mut lines = unkeyed_lines(1, 5, ZERO_HASH);
    let bogus = "1".repeat(64);
    let original_prev = link_hash(lines[1].as_bytes());
    lines[2] = lines[2].replace(&original_prev, &bogus);
    assert_eq!(
        failure(&[("a.jsonl", text(&lines))]),
        "a.jsonl:3: prev does not match the SHA-256 of the previous line (line 2)"
    );
}

#[test]
fn edited_next_to_last_line_cannot_say_which_of_two() {
    let mut lines = unkeyed_lines(1, 3, ZERO_HASH);
    lines[1] = lines[1].replace("r2", "r9");
    assert_eq!(
        failure(&[("a.jsonl", text(&lines))]),
        "a.jsonl:2: line does not match the prev recorded at line 3 (the last event): one of the two was altered"
    );
}

#[test]
fn removed_line_is_a_seq_gap() {
    let mut lines = unkeyed_lines(1, 5, ZERO_HASH);
    lines.remove(2);
    assert_eq!(
        failure(&[("a.jsonl", text(&lines))]),
        "a.jsonl:3: seq is 4, expected 3 after seq 2 at line 2: 1 event(s) missing here, or lines reordered"
    );
}

#[test]
fn reordered_pair_is_reported_at_the_first_swapped_line() {
    let mut lines = unkeyed_lines(1, 5, ZERO_HASH);
    lines.swap(1, 2);
    assert_eq!(
        failure(&[("a.jsonl", text(&lines))]),
        "a.jsonl:2: seq is 3, expected 2 after seq 1 at line 1: 1 event(s) missing here, or lines reordered"
    );
}

#[test]
fn duplicated_line_is_reported() {
    let mut lines = unkeyed_lines(1, 3, ZERO_HASH);
    lines.insert(2, lines[1].clone());
    assert_eq!(
        failure(&[("a.jsonl", text(&lines))]),
        "a.jsonl:3: seq is 2, expected 3 after seq 2 at line 2: lines reordered, repeated or inserted"
    );
}

#[test]
fn truncated_last_line_is_reported() {
    let lines = keyed_lines(1, 3, ZERO_HASH, &key());
    let mut body = text(&lines);
    body.truncate(body.len() - 10);
    assert_eq!(
        failure(&[("a.jsonl", body)]),
        "a.jsonl:3: line is not terminated by a newline (truncated or partial write)"
    );
}

#[test]
fn bad_json_and_missing_fields_are_reported() {
    let lines = unkeyed_lines(1, 2, ZERO_HASH);
    let cases = [
        (
            "{\"seq\":3,",
            "a.jsonl:3: not valid JSON: EOF while parsing a value at line 1 column 9",
        ),
        ("[1,2]", "a.jsonl:3: not a JSON object"),
        ("{\"prev\":\"x\"}", "a.jsonl:3: missing `seq`"),
        (
            "{\"seq\":-3}",
            "a.jsonl:3: `seq` is -3, not an unsigned integer",
        ),
        ("{\"seq\":3}", "a.jsonl:3: missing `prev`"),
        (
            "{\"seq\":3,\"prev\":\"ABC\"}",
            "a.jsonl:3: `prev` is \"ABC\", not 64 lowercase hex digits",
        ),
    ];
    for (bad, want) in cases {
        let body = format!("{}{bad}\n", text(&lines));
        assert_eq!(failure(&[("a.jsonl", body)]), want);
    }
}

#[test]
fn first_line_must_start_a_chain_or_is_noted_as_a_later_start() {
    let bad_zero = unkeyed_lines(2, 2, ZERO_HASH);
    assert_eq!(
        failure(&[("a.jsonl", text(&bad_zero))]),
        "a.jsonl:1: prev is all zeros (the start of a chain), but seq is 2, not 1"
    );
    let bad_one = unkeyed_lines(1, 2, &"a".repeat(64));
    assert_eq!(
        failure(&[("a.jsonl", text(&bad_one))]),
        "a.jsonl:1: the first event (seq 1) must have a prev of 64 zeros"
    );
    let all = keyed_lines(1, 6, ZERO_HASH, &key());
    let report = verify_with(&[("audit.jsonl", text(&all[3..]))], Some(key())).unwrap();
    assert_eq!(
        report.notes,
        ["audit.jsonl: chain starts at seq 4 (earlier events were not given, so the link to them is not checked)"]
    );
    assert_eq!(
        (report.events, report.first_seq, report.last_seq),
        (3, 4, 6)
    );
}

#[test]
fn chain_continues_across_rotated_files() {
    let all = keyed_lines(1, 6, ZERO_HASH, &key());
    let report = verify_with(
        &[
            ("audit.00000000000000000001.jsonl", text(&all[..4])),
            ("audit.jsonl", text(&all[4..])),
        ],
        Some(key()),
    )
    .unwrap();
    assert_eq!(
        (report.events, report.first_seq, report.last_seq),
        (6, 1, 6)
    );

    let mut edited = unkeyed_lines(1, 6, ZERO_HASH);
    edited[3] = edited[3].replace("r4", "rX");
    assert_eq!(
        failure(&[
            ("audit.00000000000000000001.jsonl", text(&edited[..4])),
            ("audit.jsonl", text(&edited[4..])),
        ]),
        "audit.00000000000000000001.jsonl:4: line was altered: its SHA-256 does not match the prev recorded at audit.jsonl:1, and the line after that confirms audit.jsonl:1 is intact"
    );
}

#[test]
fn rotated_file_must_start_at_the_seq_in_its_name() {
    let all = unkeyed_lines(1, 6, ZERO_HASH);
    assert_eq!(
        failure(&[("audit.00000000000000000003.jsonl", text(&all[3..]))]),
        "audit.00000000000000000003.jsonl:1: seq is 4, but the file name says this file starts at seq 3; its first lines were removed or the file was renamed"
    );
}

#[test]
fn missing_middle_file_breaks_the_chain() {
    let all = unkeyed_lines(1, 6, ZERO_HASH);
    assert_eq!(
        failure(&[
            ("audit.00000000000000000001.jsonl", text(&all[..2])),
            ("audit.jsonl", text(&all[4..])),
        ]),
        "audit.jsonl:1: seq is 5, expected 3 after seq 2 at audit.00000000000000000001.jsonl:2: 2 event(s) missing here, or lines reordered"
    );
}

#[test]
fn empty_input_is_not_ok() {
    assert_eq!(
        failure(&[("audit.jsonl", String::new())]),
        "input: no audit events; a log the warden has written to is never empty"
    );
}
