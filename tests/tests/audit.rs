//! The audit trail: events, their order and fields, the hash chain, and
//! `clawctl audit verify` finding edits and cuts.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use clawrden_e2e::{argv_strings, clawctl, our_uid, sha256_hex, AuditEvent, Call, TestWarden};
use serde_json::Value;

const POLICY: &str = "version: 1\n\
    default_action: allow\n\
    default_timeout: 2m\n\
    approval_timeout: 1s\n\
    default_executor: local\n\
    rules:\n\
    \x20 - name: audited-sh\n\
    \x20   command: sh\n\
    \x20   action: allow\n\
    \x20 - name: no-touch\n\
    \x20   command: touch\n\
    \x20   action: deny\n\
    \x20   reason: touch is denied for the audit test\n\
    \x20 - name: short-sleep\n\
    \x20   command: sleep\n\
    \x20   timeout: 1s\n\
    \x20   action: allow\n";

/// Checks the chain the way `clawctl audit verify --key` does (one implementation, in
/// `clawrden-audit`), and that every line has `ts` in RFC 3339 UTC with milliseconds.
fn assert_chain(w: &TestWarden) {
    let report = w.verify_audit();
    assert_eq!(report.first_seq, 1, "{report}");
    for e in w.audit_events() {
        let ts = e
            .str_field("ts")
            .unwrap_or_else(|| panic!("no ts: {}", e.raw));
        let b = ts.as_bytes();
        assert!(
            b.len() == 24
                && b[4] == b'-'
                && b[7] == b'-'
                && b[10] == b'T'
                && b[13] == b':'
                && b[16] == b':'
                && b[19] == b'.'
                && b[23] == b'Z',
            "ts {ts:?} is not RFC 3339 UTC with milliseconds (line {})",
            e.line_no
        );
    }
}

fn find<'a>(events: &'a [AuditEvent], kind: &str) -> &'a AuditEvent {
    events
        .iter()
        .find(|e| e.event() == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {:#?}", raws(events)))
}

fn raws(events: &[AuditEvent]) -> Vec<&str> {
    events.iter().map(|e| e.raw.as_str()).collect()
}

/// The field on whichever of the request's events carries it.
fn field<'a>(events: &'a [AuditEvent], key: &str) -> &'a Value {
    events
        .iter()
        .find_map(|e| e.get(key))
        .unwrap_or_else(|| panic!("no event carries `{key}`: {:#?}", raws(events)))
}

#[test]
fn allowed_call_is_audited_as_request_decision_start_exit_with_its_facts() {
    let w = TestWarden::start(POLICY);
    let cwd = w.dir().join("work dir");
    fs::create_dir(&cwd).unwrap();
    let cwd = cwd.canonicalize().unwrap();
    let token = "audit-allowed-token";
    let secret = "s3cr3t-value-that-must-not-be-logged";
    let out = w.run(
        &Call::new("sh")
            .arg("-c")
            .arg("echo hi; exit 3")
            .arg(token)
            .cwd(&cwd)
            .env("AWS_SECRET_ACCESS_KEY", secret),
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let id = w.request_id_for(token);
    let events = w.events_after_outcome(&id);
    let kinds: Vec<&str> = events.iter().map(|e| e.event()).collect();
    assert_eq!(
        kinds,
        ["request", "decision", "start", "exit"],
        "{:#?}",
        raws(&events)
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq()).collect();
    assert!(
        seqs.windows(2).all(|p| p[0] < p[1]),
        "events out of seq order: {seqs:?}"
    );

    let req = find(&events, "request");
    let argv = argv_strings(req.get("argv").expect("request.argv"));
    assert_eq!(argv.len(), 4, "argv {argv:?}");
    assert!(
        argv[0] == b"sh" || argv[0] == w.tool("sh").as_os_str().as_bytes(),
        "argv[0] is neither the tool name nor the shim path: {:?}",
        String::from_utf8_lossy(&argv[0])
    );
    assert_eq!(
        argv[1..],
        [&b"-c"[..], b"echo hi; exit 3", token.as_bytes()]
    );
    assert_eq!(
        clawrden_e2e::decode_bytes(req.get("cwd").expect("request.cwd")),
        cwd.as_os_str().as_bytes()
    );
    assert_eq!(
        req.get("uid").and_then(Value::as_u64),
        Some(our_uid() as u64)
    );
    assert_eq!(req.str_field("prisoner"), Some("default"));
    let mut names: Vec<&str> = req
        .get("env_names")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("request without env_names: {}", req.raw))
        .iter()
        .map(|v| v.as_str().expect("env name is a string"))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["AWS_SECRET_ACCESS_KEY", "CLAWRDEN_SOCKET", "HOME", "PATH"],
        "env_names of the request: the caller's variable names"
    );

    let dec = find(&events, "decision");
    assert_eq!(dec.str_field("action"), Some("allow"), "{}", dec.raw);
    assert_eq!(dec.str_field("rule"), Some("audited-sh"), "{}", dec.raw);
    assert_eq!(
        dec.str_field("policy_sha256"),
        Some(sha256_hex(POLICY.as_bytes()).as_str()),
        "{}",
        dec.raw
    );
    assert_eq!(field(&events, "executor").as_str(), Some("local"));

    let exit = find(&events, "exit");
    assert_eq!(
        exit.get("exit_code").and_then(Value::as_i64),
        Some(3),
        "{}",
        exit.raw
    );
    assert!(
        exit.get("duration_ms").is_some_and(Value::is_u64),
        "exit without duration_ms: {}",
        exit.raw
    );

    let text = fs::read_to_string(w.audit_path()).unwrap();
    assert!(
        !text.contains(secret),
        "an environment value reached the audit"
    );
    assert!(
        !text.contains("/usr/bin:/bin"),
        "PATH's value reached the audit"
    );
    assert_chain(&w);
}

#[test]
fn denied_call_is_audited_as_request_and_decision_without_start() {
    let w = TestWarden::start(POLICY);
    let token = w.dir().join("audit-deny-token");
    let out = w.run(&Call::new("touch").arg(&token));
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    let id = w.request_id_for(token.to_str().unwrap());
    let events = w.events_when(&id, "a decision", |e| e.event() == "decision");
    // A second, later call: once its decision is written, the first call's events are final.
    let out = w.run(
        &Call::new("sh")
            .arg("-c")
            .arg("true")
            .arg("after-deny-token"),
    );
    assert_eq!(out.status.code(), Some(0));
    let later = w.request_id_for("after-deny-token");
    w.events_after_outcome(&later);
    let events_now: Vec<AuditEvent> = w
        .audit_events()
        .into_iter()
        .filter(|e| e.request_id() == Some(id.as_str()))
        .collect();
    assert_eq!(raws(&events_now), raws(&events));
    let kinds: Vec<&str> = events.iter().map(|e| e.event()).collect();
    assert_eq!(kinds, ["request", "decision"], "{:#?}", raws(&events));
    let dec = find(&events, "decision");
    assert_eq!(dec.str_field("action"), Some("deny"));
    assert_eq!(dec.str_field("rule"), Some("no-touch"));
    assert_eq!(
        dec.str_field("reason"),
        Some("touch is denied for the audit test")
    );
    assert_chain(&w);
}

#[test]
fn timed_out_call_is_audited_with_timeout_violation() {
    let w = TestWarden::start(POLICY);
    let out = w.run(&Call::new("sleep").arg("1000"));
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    let id = w.request_id_for("1000");
    let events = w.events_after_outcome(&id);
    let kinds: Vec<&str> = events.iter().map(|e| e.event()).collect();
    assert_eq!(
        kinds,
        ["request", "decision", "start", "timeout_violation"],
        "{:#?}",
        raws(&events)
    );
    let tv = find(&events, "timeout_violation");
    assert_eq!(
        tv.get("timeout_ms").and_then(Value::as_u64),
        Some(1000),
        "{}",
        tv.raw
    );
    assert_chain(&w);
}

/// A finished warden's audit file and key, copied: `n` allowed calls (and, with
/// `denied`, one denied `touch`), stopped cleanly.
struct FinishedAudit {
    dir: clawrden_e2e::TempDir,
    copy: std::path::PathBuf,
    key: std::path::PathBuf,
    events: Vec<AuditEvent>,
}

fn finished_audit_with(n: usize, denied: bool) -> FinishedAudit {
    let mut w = TestWarden::start(POLICY);
    for i in 0..n {
        let token = format!("verify-token-{i}");
        let out = w.run(&Call::new("sh").arg("-c").arg("echo $0").arg(&token));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let id = w.request_id_for(&token);
        w.events_after_outcome(&id);
        if denied && i == 0 {
            let out = w.run(&Call::new("touch").arg("denied-touch-token"));
            assert_eq!(out.status.code(), Some(126), "{out:?}");
            let id = w.request_id_for("denied-touch-token");
            w.events_when(&id, "a decision", |e| e.event() == "decision");
        }
    }
    w.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(w.wait_exit().code(), Some(0));
    let events = w.audit_events();
    assert!(events.len() >= 4 * n, "{} events", events.len());
    assert_chain(&w);
    let dir = clawrden_e2e::TempDir::new("audit-copy");
    let copy = dir.path().join("audit.jsonl");
    fs::copy(w.audit_path(), &copy).unwrap();
    let key = dir.path().join("audit.key");
    fs::copy(w.audit_key_path(), &key).unwrap();
    FinishedAudit {
        dir,
        copy,
        key,
        events,
    }
}

fn finished_audit(n: usize) -> (clawrden_e2e::TempDir, std::path::PathBuf, Vec<AuditEvent>) {
    let f = finished_audit_with(n, false);
    (f.dir, f.copy, f.events)
}

fn verify(path: &Path) -> clawrden_e2e::Output {
    let mut args = vec![std::ffi::OsString::from("audit"), "verify".into()];
    args.push(path.as_os_str().to_os_string());
    clawctl(args)
}

fn verify_with_key(key: &Path, path: &Path) -> clawrden_e2e::Output {
    let args = vec![
        std::ffi::OsString::from("audit"),
        "verify".into(),
        "--key".into(),
        key.as_os_str().to_os_string(),
        path.as_os_str().to_os_string(),
    ];
    clawctl(args)
}

/// The id `clawctl` prints for a key file: first 16 hex digits of SHA-256 of its bytes.
fn key_id(key: &Path) -> String {
    let text = fs::read_to_string(key).unwrap();
    let bytes: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect();
    sha256_hex(&bytes)[..16].to_string()
}

const INTEGRITY_ONLY: &str = "integrity only: the hash chain is intact, but whoever can write the file can recompute it; pass --key FILE to check the mac of";

#[test]
fn clawctl_audit_verify_accepts_an_intact_log_and_says_it_checked_integrity_only() {
    let (_dir, copy, events) = finished_audit(3);
    let out = verify(&copy);
    let last = events.last().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout_str(),
        format!(
            "ok: {} events, seq 1..{}, head {}\n{INTEGRITY_ONLY} {} line(s)\n",
            events.len(),
            events.len(),
            sha256_hex(last.raw.as_bytes()),
            events.len()
        )
    );
}

#[test]
fn clawctl_audit_verify_with_the_key_says_the_log_is_authentic() {
    let f = finished_audit_with(2, false);
    let out = verify_with_key(&f.key, f.dir.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let n = f.events.len();
    assert_eq!(
        out.stdout_str(),
        format!(
            "ok: {n} events, seq 1..{n}, head {}\nauthentic: the mac of every line of seq 1..{n} matches key {}\n",
            sha256_hex(f.events.last().unwrap().raw.as_bytes()),
            key_id(&f.key)
        )
    );
}

/// What a forger who can write the file but lacks the key does: rewrites every line's
/// `seq` and `prev` so the SHA-256 chain holds again.
fn recompute_seq_and_prev(lines: &mut [String]) {
    let mut prev = "0".repeat(64);
    for (i, line) in lines.iter_mut().enumerate() {
        let rest = &line[line.find(',').unwrap()..];
        let mut fixed = format!("{{\"seq\":{}{rest}", i + 1);
        let at = fixed.rfind("\"prev\":\"").unwrap() + 8;
        fixed.replace_range(at..at + 64, &prev);
        *line = fixed;
        prev = sha256_hex(line.as_bytes());
    }
}

#[test]
fn clawctl_audit_verify_with_the_key_rejects_a_chain_recomputed_without_it() {
    let f = finished_audit_with(3, true);
    let denied = f
        .events
        .iter()
        .find(|e| e.event() == "decision" && e.str_field("action") == Some("deny"))
        .expect("the denied touch's decision")
        .request_id()
        .unwrap()
        .to_string();
    let first_cut = f
        .events
        .iter()
        .position(|e| e.request_id() == Some(denied.as_str()))
        .unwrap();
    rewrite_lines(&f.copy, |lines| {
        // Drop the denied call, and make a later call say something else.
        lines.retain(|l| !l.contains(&denied));
        let later = lines
            .iter()
            .position(|l| l.contains("verify-token-2"))
            .unwrap();
        lines[later] = lines[later].replace("verify-token-2", "verify-token-X");
        recompute_seq_and_prev(lines);
    });
    let out = verify(&f.copy);
    assert_eq!(
        out.status.code(),
        Some(0),
        "integrity alone cannot see it: {out:?}"
    );
    assert!(out.stdout_str().contains(INTEGRITY_ONLY), "{out:?}");

    let out = verify_with_key(&f.key, &f.copy);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr_str(),
        format!(
            "{}:{}: mac does not match key {}: this line was altered or rewritten, or the audit was written with another key\n",
            f.copy.display(),
            first_cut + 1,
            key_id(&f.key)
        )
    );

    // Stripping every mac too leaves nothing the key could authenticate.
    rewrite_lines(&f.copy, |lines| {
        for l in lines.iter_mut() {
            let at = l.rfind(",\"mac\":\"").unwrap();
            l.replace_range(at..l.len() - 1, "");
        }
        recompute_seq_and_prev(lines);
    });
    let out = verify_with_key(&f.key, &f.copy);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr_str(),
        format!(
            "{}: no line carries a mac, so none can be authenticated with --key (written before the audit was keyed, or the macs were stripped)\n",
            f.copy.display()
        )
    );
}

#[test]
fn clawctl_audit_verify_with_an_unreadable_key_is_a_usage_error() {
    let f = finished_audit_with(1, false);
    let missing = f.dir.path().join("no-such.key");
    let out = verify_with_key(&missing, &f.copy);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr_str().starts_with(&format!(
            "clawctl: cannot read the audit key {}: ",
            missing.display()
        )),
        "{out:?}"
    );
}

#[test]
fn clawctl_audit_verify_accepts_a_directory_holding_the_log() {
    let (dir, copy, events) = finished_audit(2);
    let out = verify(dir.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout_str(),
        format!(
            "ok: {} events, seq 1..{}, head {}\n{INTEGRITY_ONLY} {} line(s)\n",
            events.len(),
            events.len(),
            sha256_hex(events.last().unwrap().raw.as_bytes()),
            events.len()
        )
    );
    drop(copy);
}

/// The first line of what `clawctl audit verify` reported (stdout, else stderr).
fn verify_failure(path: &Path) -> String {
    let out = verify(path);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify on a damaged log: {out:?}"
    );
    let text = if out.stdout.is_empty() {
        out.stderr_str()
    } else {
        out.stdout_str()
    };
    text.lines().next().unwrap_or_default().to_string()
}

fn rewrite_lines(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let text = fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    edit(&mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    fs::write(path, out).unwrap();
}

#[test]
fn clawctl_audit_verify_names_the_line_whose_prev_byte_was_edited() {
    let (_dir, copy, events) = finished_audit(3);
    let k = events.len() / 2; // 1-based middle line
    rewrite_lines(&copy, |lines| {
        let line = &mut lines[k - 1];
        let at = line.find("\"prev\":\"").expect("prev field") + 8;
        let old = line.as_bytes()[at];
        let new = if old == b'0' { "1" } else { "0" };
        line.replace_range(at..at + 1, new);
    });
    let report = verify_failure(&copy);
    let prefix = format!("{}:{k}: ", copy.display());
    assert!(
        report.starts_with(&prefix),
        "expected `{prefix}...`, got {report:?}"
    );
}

#[test]
fn clawctl_audit_verify_names_the_line_whose_value_was_edited() {
    let (_dir, copy, events) = finished_audit(3);
    let k = events.len() / 2;
    rewrite_lines(&copy, |lines| {
        let line = &mut lines[k - 1];
        // One byte of the timestamp: still valid JSON, seq and prev untouched. The next
        // line's prev no longer matches; the one after it proves that next line intact, so
        // the edited line itself is to blame.
        let at = line.find("\"ts\":\"").expect("ts field") + 6 + 22;
        let old = line.as_bytes()[at];
        let new = if old == b'1' { "2" } else { "1" };
        line.replace_range(at..at + 1, new);
    });
    let report = verify_failure(&copy);
    let prefix = format!("{}:{k}: ", copy.display());
    assert!(
        report.starts_with(&prefix),
        "expected `{prefix}...`, got {report:?}"
    );
}

#[test]
fn clawctl_audit_verify_names_the_line_after_a_removed_one() {
    let (_dir, copy, events) = finished_audit(3);
    let k = events.len() / 2;
    rewrite_lines(&copy, |lines| {
        lines.remove(k - 1);
    });
    let report = verify_failure(&copy);
    let prefix = format!("{}:{k}: ", copy.display());
    assert!(
        report.starts_with(&prefix),
        "expected `{prefix}...`, got {report:?}"
    );
}

#[test]
fn nested_call_is_decided_again_and_linked_to_its_parent() {
    let policy =
        format!("{POLICY}\x20 - name: nested-seq\n\x20   command: seq\n\x20   action: allow\n");
    // The command's PATH is the warden's command_path, which here starts with its shims;
    // CLAWRDEN_SOCKET reaches the command without any env.pass.
    let w = TestWarden::builder()
        .policy(policy)
        .shims_in_command_path()
        .start();
    let out = w.run(
        &Call::new("sh")
            .arg("-c")
            // seq, not printf: the shell's builtin printf would never reach the shim.
            .arg("seq -f nested-inner-%g 1 1")
            .arg("nested-outer-token"),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"nested-inner-1\n");
    let outer = w.request_id_for("nested-outer-token");
    let inner = w.request_id_for("nested-inner-%g");
    assert_ne!(outer, inner);
    let events = w.events_after_outcome(&inner);
    let req = find(&events, "request");
    assert_eq!(
        req.str_field("parent_request"),
        Some(outer.as_str()),
        "{}",
        req.raw
    );
    assert_eq!(
        find(&events, "decision").str_field("rule"),
        Some("nested-seq")
    );
}

#[test]
fn a_restarted_warden_continues_the_chain_of_its_state_dir() {
    let keep = clawrden_e2e::TempDir::new("state");
    let state = keep.path().to_path_buf();
    for round in 0..2 {
        let mut w = TestWarden::builder()
            .policy(POLICY)
            .state_dir(&state)
            .start();
        let token = format!("restart-token-{round}");
        let out = w.run(&Call::new("sh").arg("-c").arg("true").arg(&token));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let id = w.request_id_for(&token);
        w.events_after_outcome(&id);
        w.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(w.wait_exit().code(), Some(0));
    }
    let text = fs::read_to_string(state.join("audit").join("audit.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.contains("restart-token-0") && text.contains("restart-token-1"));
    let key = state.join("audit.key");
    let out = verify_with_key(&key, &state.join("audit"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout_str(),
        format!(
            "ok: {n} events, seq 1..{n}, head {}\nauthentic: the mac of every line of seq 1..{n} matches key {}\n",
            sha256_hex(lines.last().unwrap().as_bytes()),
            key_id(&key),
            n = lines.len(),
        )
    );
}

#[test]
fn death_by_signal_is_audited_with_the_signal() {
    let w = TestWarden::start(POLICY);
    let token = "audit-signal-token";
    let out = w.run(&Call::new("sh").arg("-c").arg("kill -TERM $$").arg(token));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(15)
    );
    let id = w.request_id_for(token);
    let events = w.events_after_outcome(&id);
    let exit = find(&events, "exit");
    assert_eq!(
        exit.get("signal").and_then(Value::as_i64),
        Some(15),
        "{}",
        exit.raw
    );
}

#[test]
fn shim_found_through_path_reports_its_own_path_and_the_bare_name() {
    let w = TestWarden::start(POLICY);
    let path = format!("{}:/usr/bin:/bin", w.bin_dir.display());
    // Invoked the way a shell does: argv[0] is the bare name, the file found through PATH.
    let mut cmd = std::process::Command::new(w.tool("sh"));
    cmd.arg0("sh");
    Call::new("sh")
        .arg("-c")
        .arg("exit 0")
        .arg("via-path-token")
        .env("PATH", &path)
        .configure_into(&mut cmd);
    cmd.env(clawrden_protocol::SOCKET_ENV, &w.socket);
    let out = clawrden_e2e::run_command(cmd, b"", "shim sh via PATH");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let id = w.request_id_for("via-path-token");
    let events = w.events_after_outcome(&id);
    let req = find(&events, "request");
    assert_eq!(argv_strings(req.get("argv").unwrap())[0], b"sh");
    assert_eq!(
        clawrden_e2e::decode_bytes(req.get("tool_path").expect("request.tool_path")),
        w.bin_dir.join("sh").as_os_str().as_bytes()
    );
}

#[test]
fn non_utf8_argv_and_cwd_are_audited_as_hex_and_round_trip() {
    let w = TestWarden::start(POLICY);
    let cwd = w.dir().join(std::ffi::OsStr::from_bytes(b"cwd-\xff\xfe"));
    fs::create_dir(&cwd).unwrap();
    let cwd = cwd.canonicalize().unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"arg-\x80\xc3(");
    let out = w.run(
        &Call::new("sh")
            .arg("-c")
            .arg("exit 0")
            .arg("hex-token")
            .arg(odd)
            .cwd(&cwd),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let id = w.request_id_for("hex-token");
    let events = w.events_after_outcome(&id);
    let req = find(&events, "request");
    let argv = req.get("argv").and_then(Value::as_array).unwrap();
    let last = argv.last().unwrap();
    assert!(
        last.get("hex").is_some(),
        "non-UTF-8 token not hex-encoded: {last}"
    );
    assert_eq!(clawrden_e2e::decode_bytes(last), odd.as_bytes());
    let cwd_v = req.get("cwd").unwrap();
    assert!(
        cwd_v.get("hex").is_some(),
        "non-UTF-8 cwd not hex-encoded: {cwd_v}"
    );
    assert_eq!(
        clawrden_e2e::decode_bytes(cwd_v),
        cwd.as_os_str().as_bytes()
    );
}

#[test]
fn first_start_creates_a_private_audit_key_and_the_start_event_names_it() {
    let w = TestWarden::start(POLICY);
    let key = w.audit_key_path();
    let meta = fs::metadata(&key).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o600
    );
    let start = w
        .audit_events()
        .into_iter()
        .find(|e| e.str_field("control") == Some("start"))
        .expect("a start event");
    assert_eq!(
        start.str_field("audit_key_id"),
        Some(key_id(&key).as_str()),
        "{}",
        start.raw
    );
}

#[test]
fn a_key_others_can_read_or_that_is_not_a_key_stops_the_warden_with_64() {
    let keep = clawrden_e2e::TempDir::new("state");
    let state = keep.path().to_path_buf();
    let key = state.join("audit.key");
    fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let cases = [
        (
            0o644,
            format!(
                "clawrden-warden: audit key {} has mode 0644: others could read it and forge audit lines; run chmod 600 on it (the audit key; see \"Audit\" in README.md)\n",
                key.display()
            ),
        ),
        (
            0o600,
            format!(
                "clawrden-warden: {} is not an audit key (9 characters); it must hold 64 hex digits (the audit key; see \"Audit\" in README.md)\n",
                key.display()
            ),
        ),
    ];
    for (i, (mode, want)) in cases.into_iter().enumerate() {
        if i == 1 {
            fs::write(&key, "not a key").unwrap();
        }
        fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        let mut w = TestWarden::builder()
            .policy(POLICY)
            .state_dir(&state)
            .launch();
        assert_eq!(w.wait_exit().code(), Some(64), "{}", w.log());
        let log = w.log();
        let last = log.lines().last().unwrap_or_default();
        assert_eq!(format!("{last}\n"), want, "{log}");
        assert!(
            !state.join("audit").join("audit.jsonl").exists(),
            "nothing may be audited without a usable key"
        );
    }
}
