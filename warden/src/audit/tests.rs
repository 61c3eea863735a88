use super::*;
use crate::testutil::{SteppingClock, TempDir};
use std::time::Duration;

use serde_json::Value;

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn key() -> AuditKey {
    AuditKey::from_bytes([9; 32])
}

fn audit_in(dir: &Path, max: u64) -> Audit {
    // 2026-11-24T09:01:02.345Z, then +1 s per line.
    Audit::new(
        dir.to_owned(),
        max,
        Arc::new(SteppingClock::starting_at_ms(1_795_510_862_345)),
        Arc::new(key()),
    )
}

fn lines(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines().map(str::to_owned).collect()
}

fn parsed(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// Verifies the chain (with its MACs) over the given files, in order; returns its length.
fn check_chain(files: &[PathBuf]) -> u64 {
    let report = clawrden_audit::verify_files(files, Some(&key()))
        .unwrap_or_else(|f| panic!("audit chain does not verify: {f}"));
    assert_eq!(report.first_seq, 1);
    report.last_seq
}

#[test]
fn ts_formats_known_dates() {
    assert_eq!(format_ts(at(0)), "1970-01-01T00:00:00.000Z");
    assert_eq!(format_ts(at(951_782_400_000)), "2000-02-29T00:00:00.000Z");
    assert_eq!(format_ts(at(1_709_210_096_789)), "2024-02-29T12:34:56.789Z");
    assert_eq!(format_ts(at(1_795_510_862_345)), "2026-11-24T09:01:02.345Z");
    assert_eq!(format_ts(at(4_102_444_799_999)), "2099-12-31T23:59:59.999Z");
    assert_eq!(
        format_ts(at(253_402_300_799_000)),
        "9999-12-31T23:59:59.000Z"
    );
    assert_eq!(
        format_ts(UNIX_EPOCH - Duration::from_secs(5)),
        "1970-01-01T00:00:00.000Z"
    );
}

#[test]
fn civil_from_days_handles_century_rules_and_negative_days() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(47_541), (2100, 3, 1)); // 2100 is not a leap year
    assert_eq!(civil_from_days(-719_468), (0, 3, 1));
}

#[test]
fn lines_form_a_hash_chain_starting_at_zero() {
    let tmp = TempDir::new("audit-chain");
    let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
    for i in 0..3 {
        let seq = audit
            .record(&Event::for_request(EventKind::Request, "01ID").with("n", i))
            .unwrap();
        assert_eq!(seq, i + 1);
    }
    let path = tmp.path().join(ACTIVE_FILE);
    assert_eq!(check_chain(std::slice::from_ref(&path)), 3);
    let first = &lines(&path)[0];
    let body = format!(
        "{{\"seq\":1,\"ts\":\"2026-11-24T09:01:02.345Z\",\"event\":\"request\",\
         \"request_id\":\"01ID\",\"n\":0,\"prev\":\"{ZERO_HASH}\""
    );
    assert_eq!(
        first,
        &format!("{body},\"mac\":\"{}\"}}", key().mac_hex(body.as_bytes()))
    );
    assert_eq!(
        parsed(&lines(&path)[1])["ts"],
        Value::from("2026-11-24T09:01:03.345Z")
    );
}

#[test]
fn control_events_have_no_request_id() {
    let tmp = TempDir::new("audit-control");
    let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
    audit
        .record(&Event::control().with("what", "started"))
        .unwrap();
    let v = parsed(&lines(&tmp.path().join(ACTIVE_FILE))[0]);
    assert_eq!(v["event"], "control");
    assert!(v.get("request_id").is_none());
}

#[test]
fn non_utf8_argv_and_cwd_are_hex_objects() {
    let tmp = TempDir::new("audit-hex");
    let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
    let argv = vec![b"ls".to_vec(), vec![0xff, 0x00, b'a']];
    audit
        .record(
            &Event::for_request(EventKind::Request, "x")
                .with_byte_list("argv", &argv)
                .with_bytes("cwd", b"/tmp/\xc3"),
        )
        .unwrap();
    let v = parsed(&lines(&tmp.path().join(ACTIVE_FILE))[0]);
    assert_eq!(v["argv"], serde_json::json!(["ls", {"hex": "ff0061"}]));
    assert_eq!(v["cwd"], serde_json::json!({"hex": "2f746d702fc3"}));
}

#[test]
fn restart_resumes_seq_and_prev_from_the_tail() {
    let tmp = TempDir::new("audit-resume");
    {
        let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
        audit.record(&Event::control()).unwrap();
        audit.record(&Event::control()).unwrap();
    }
    let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
    audit.open_now().unwrap();
    let path = tmp.path().join(ACTIVE_FILE);
    let last = lines(&path)[1].clone();
    assert_eq!(
        audit.head(),
        Some((2, clawrden_audit::link_hash(last.as_bytes())))
    );
    assert_eq!(audit.record(&Event::control()).unwrap(), 3);
    assert_eq!(check_chain(&[path]), 3);
}

#[test]
fn torn_final_line_is_cut_and_the_chain_continues() {
    let tmp = TempDir::new("audit-torn");
    {
        let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
        audit.record(&Event::control()).unwrap();
    }
    let path = tmp.path().join(ACTIVE_FILE);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"{\"seq\":2,\"ts\":\"20").unwrap();
    drop(f);
    let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
    assert_eq!(audit.record(&Event::control()).unwrap(), 2);
    assert_eq!(check_chain(&[path]), 2);
}

#[test]
fn garbage_tail_is_an_error_not_a_new_chain() {
    let tmp = TempDir::new("audit-garbage");
    fs::write(tmp.path().join(ACTIVE_FILE), "not json\n").unwrap();
    let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
    let err = audit.record(&Event::control()).unwrap_err().to_string();
    assert!(err.contains("last line is not a valid audit line"), "{err}");
    assert_eq!(audit.failures(), 1);
}

#[test]
fn rotation_renames_by_first_seq_and_keeps_the_chain() {
    let tmp = TempDir::new("audit-rotate");
    // Each line is ~245 bytes: two fit in 560, the third rotates.
    let audit = audit_in(tmp.path(), 560);
    for _ in 0..7 {
        audit
            .record(&Event::for_request(
                EventKind::Exit,
                "01ABCDEFGHJKMNPQRSTVWXYZ00",
            ))
            .unwrap();
    }
    let mut rotated: Vec<PathBuf> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != ACTIVE_FILE)
        .collect();
    rotated.sort();
    let names: Vec<String> = rotated
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "audit.00000000000000000001.jsonl",
            "audit.00000000000000000003.jsonl",
            "audit.00000000000000000005.jsonl"
        ]
    );
    for p in &rotated {
        assert!(fs::metadata(p).unwrap().len() <= 560);
    }
    let mut all = rotated.clone();
    all.push(tmp.path().join(ACTIVE_FILE));
    assert_eq!(check_chain(&all), 7);
}

#[test]
fn restart_after_rotation_with_empty_active_file_continues_the_chain() {
    let tmp = TempDir::new("audit-rotate-resume");
    {
        let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
        audit.record(&Event::control()).unwrap();
        audit.record(&Event::control()).unwrap();
    }
    let active = tmp.path().join(ACTIVE_FILE);
    let rotated = tmp.path().join("audit.00000000000000000001.jsonl");
    fs::rename(&active, &rotated).unwrap();
    let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
    assert_eq!(audit.record(&Event::control()).unwrap(), 3);
    assert_eq!(check_chain(&[rotated, active]), 3);
}

#[test]
fn unwritable_audit_fails_each_call_and_recovers_when_fixed() {
    let tmp = TempDir::new("audit-fail");
    let active = tmp.path().join(ACTIVE_FILE);
    fs::create_dir(&active).unwrap();
    let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
    let err = audit.record(&Event::control()).unwrap_err().to_string();
    assert!(err.starts_with("cannot open "), "{err}");
    assert!(err.contains("audit.jsonl"), "{err}");
    assert!(audit.record(&Event::control()).is_err());
    assert_eq!(audit.failures(), 2);
    assert!(audit.last_error().is_some());
    fs::remove_dir(&active).unwrap();
    assert_eq!(audit.record(&Event::control()).unwrap(), 1);
    assert_eq!(audit.last_error(), None);
}

#[test]
fn an_unkeyed_log_continues_as_a_keyed_segment_that_verifies_with_the_key() {
    let tmp = TempDir::new("audit-upgrade");
    let path = tmp.path().join(ACTIVE_FILE);
    // Two lines as a warden before keying wrote them: no mac.
    let first = format!(
        "{{\"seq\":1,\"ts\":\"2026-11-24T09:01:02.345Z\",\"event\":\"control\",\"prev\":\"{ZERO_HASH}\"}}"
    );
    let second = format!(
        "{{\"seq\":2,\"ts\":\"2026-11-24T09:01:03.345Z\",\"event\":\"control\",\"prev\":\"{}\"}}",
        clawrden_audit::link_hash(first.as_bytes())
    );
    fs::write(&path, format!("{first}\n{second}\n")).unwrap();
    let audit = audit_in(tmp.path(), DEFAULT_MAX_SIZE);
    assert_eq!(audit.record(&Event::control()).unwrap(), 3);
    let report = clawrden_audit::verify_files(std::slice::from_ref(&path), Some(&key())).unwrap();
    assert_eq!(
        report.authenticity,
        clawrden_audit::Authenticity::Checked {
            key_id: key().id(),
            keyed: (3, 3),
            unkeyed: Some((1, 2)),
        }
    );
}
