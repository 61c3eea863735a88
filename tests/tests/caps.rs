//! Caps on what one prisoner can make the warden hold: connections, pending asks, and
//! bytes of each request kept in the record. Over a cap the call is refused (exit 125,
//! with the reason), audited where it got that far, and counted in
//! `clawrden_refused_total{prisoner,reason}`.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use clawrden_e2e::api::{raw_ask_send, Api, RawAsk, ShimCall};
use clawrden_e2e::{poll_until, Call, TestWarden};
use clawrden_protocol::{read_message, write_message, Action, Message, Request};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const POLICY: &str = "version: 1\n\
    default_action: allow\n\
    default_timeout: 2m\n\
    approval_timeout: 5m\n\
    default_executor: local\n\
    rules:\n\
    \x20 - name: ask-sleep\n\
    \x20   command: sleep\n\
    \x20   action: ask\n\
    \x20 - name: no-touch\n\
    \x20   command: touch\n\
    \x20   action: deny\n\
    \x20   reason: touch is denied\n";

const STEP: Duration = Duration::from_secs(20);

fn refused_metric(api: &Api, reason: &str) -> f64 {
    let line = format!(r#"clawrden_refused_total{{prisoner="default",reason="{reason}"}} "#);
    api.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&line).map(|v| v.parse::<f64>().unwrap()))
        .unwrap_or_else(|| panic!("no {line:?} in /metrics"))
}

#[test]
fn an_ask_over_the_pending_cap_is_refused_with_125_audited_and_counted() {
    let w = TestWarden::builder()
        .policy(POLICY)
        .api()
        .setting("max_pending_per_prisoner", 2)
        .start();
    let api = Api::of(&w);
    let mut first = ShimCall::spawn(&w, &Call::new("sleep").arg("101"));
    first.approval_id(STEP);
    let mut second = ShimCall::spawn(&w, &Call::new("sleep").arg("102"));
    second.approval_id(STEP);

    let out = w.run(&Call::new("sleep").arg("103"));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let reason = "refused: this prisoner has 2 calls waiting for approval (max_pending_per_prisoner); wait for answers before asking again";
    assert_eq!(out.stderr_str(), format!("clawrden: {reason}\n"));
    let id = w.request_id_for("103");
    let events = w.events_when(&id, "a decision", |e| e.event() == "decision");
    let decision = events.iter().find(|e| e.event() == "decision").unwrap();
    assert_eq!(
        decision.str_field("action"),
        Some("deny"),
        "{}",
        decision.raw
    );
    assert_eq!(decision.str_field("refused"), Some("pending_approvals"));
    assert_eq!(decision.str_field("reason"), Some(reason));
    assert_eq!(refused_metric(&api, "pending_approvals"), 1.0);

    // A slot frees when an ask leaves the queue.
    first.kill();
    first.finish();
    let mut third = poll_until("a third ask to be queued", STEP, || {
        let mut call = ShimCall::spawn(&w, &Call::new("sleep").arg("104"));
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call.approval_id(STEP))) {
            Ok(_) => Some(call),
            Err(_) => None,
        }
    });
    third.kill();
    second.kill();
}

#[test]
fn a_connection_over_the_prisoner_cap_is_refused_with_125_and_counted() {
    let w = TestWarden::builder()
        .policy(POLICY)
        .api()
        .setting("max_connections_per_prisoner", 2)
        .start();
    let api = Api::of(&w);
    // Two asks waiting for a person hold both slots (once the warden's Hello shows they
    // were accepted: a connection the start-up probe left may hold one for a moment).
    let cwd = w.dir().to_str().unwrap().to_string();
    let held: Vec<RawAsk> = (0..2)
        .map(|i| {
            poll_until("an ask to be accepted", STEP, || {
                let s = raw_ask_send(&w.socket, &["sleep", &format!("20{i}")], &cwd);
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| RawAsk::read_pending(s)))
                    .ok()
            })
        })
        .collect();
    let out = w.run(&Call::new("printf").arg("over"));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert_eq!(
        out.stderr_str(),
        format!(
            "clawrden: warden unavailable ({}): refused: this prisoner holds 2 connections (max_connections_per_prisoner); retry when some calls have finished\n",
            w.socket.display()
        )
    );
    assert!(out.stdout.is_empty(), "nothing ran: {out:?}");
    assert!(refused_metric(&api, "prisoner_connections") >= 1.0);
    drop(held);
    let out = poll_until("a call to run once the slots are free", STEP, || {
        let out = w.run(&Call::new("printf").arg("again"));
        (out.status.code() == Some(0)).then_some(out)
    });
    assert_eq!(out.stdout, b"again");
}

#[test]
fn an_ask_too_large_to_show_an_approver_is_refused() {
    let w = TestWarden::builder().policy(POLICY).api().start();
    let big = "x".repeat(70_000);
    let out = w.run(&Call::new("sleep").arg(&big));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = out.stderr_str();
    assert!(
        err.starts_with("clawrden: refused: this call needs approval but is too large to show an approver in full (")
            && err.ends_with(" bytes of arguments and environment; max_request_bytes_kept is 65536); shorten it\n"),
        "{err}"
    );
    assert_eq!(refused_metric(&Api::of(&w), "ask_too_large"), 1.0);
}

/// SHA-256 over argv tokens, each prefixed by its length (big-endian u64): the
/// `argv_sha256` of the record.
fn argv_sha256(argv: &[Vec<u8>]) -> String {
    let mut h = Sha256::new();
    for t in argv {
        h.update((t.len() as u64).to_be_bytes());
        h.update(t);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_huge_denied_request_of_control_characters_keeps_a_bounded_record() {
    let w = TestWarden::builder().policy(POLICY).api().start();
    let admin = Api::of(&w).with_token(w.admin_token());
    let before = std::fs::metadata(w.audit_path()).map_or(0, |m| m.len());
    // Nearly a whole 4 MiB request frame of \x01: six bytes each once JSON-escaped.
    let argv = vec![b"touch".to_vec(), vec![1u8; (4 << 20) - 4096]];
    let mut s = UnixStream::connect(&w.socket).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    write_message(&mut s, &Message::hello()).unwrap();
    let request = Request {
        argv: argv.clone(),
        cwd: b"/".to_vec(),
        env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
        ..Request::default()
    };
    write_message(&mut s, &Message::Request(request)).unwrap();
    assert!(matches!(
        read_message(&mut s).unwrap(),
        Some(Message::Hello { .. })
    ));
    let decision = match read_message(&mut s).unwrap() {
        Some(Message::Decision(d)) => d,
        other => panic!("expected a decision, got {other:?}"),
    };
    assert_eq!(decision.action, Action::Deny);
    assert_eq!(decision.reason, "touch is denied");

    let events = w.events_when(&decision.request_id, "a decision", |e| {
        e.event() == "decision"
    });
    let grew = std::fs::metadata(w.audit_path()).unwrap().len() - before;
    assert!(
        grew < 80 * 1024,
        "a 4 MiB request grew the audit by {grew} bytes"
    );
    let req = events.iter().find(|e| e.event() == "request").unwrap();
    let whole = json!({
        "argv_count": 2,
        "argv_bytes": argv[0].len() + argv[1].len(),
        "argv_sha256": argv_sha256(&argv),
        "env_count": 1,
        "cwd_bytes": 1,
        "tool_path_bytes": 0,
    });
    assert_eq!(req.get("truncated"), Some(&whole));
    let kept = clawrden_e2e::argv_strings(req.get("argv").unwrap());
    assert_eq!(kept[0], b"touch");
    assert!(
        !kept[1].is_empty() && kept[1].len() <= 64 * 1024 / 6 && kept[1].iter().all(|&b| b == 1),
        "kept {} bytes of the argument",
        kept[1].len()
    );
    let view: Value = admin.request_view(&decision.request_id);
    assert_eq!(view["truncated"], whole, "{view}");
    assert_eq!(view["argv"].as_array().unwrap().len(), 2);
    w.verify_audit();
}

#[test]
fn the_open_file_limit_is_raised_and_connection_caps_fit_under_it() {
    let w = TestWarden::builder()
        .policy(POLICY)
        .nofile(1024, 2048)
        .start();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", w.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3..5], ["2048", "2048"], "{line}");
    // The socket accepts connections as soon as it is bound; the start line follows.
    let start = poll_until("the start event", Duration::from_secs(20), || {
        w.audit_events()
            .into_iter()
            .find(|e| e.str_field("control") == Some("start"))
    });
    // (2048 - 128 kept for the API) / 8 per connection.
    assert_eq!(
        start.get("max_connections"),
        Some(&json!(240)),
        "{}",
        start.raw
    );
    assert_eq!(start.get("max_connections_per_prisoner"), Some(&json!(64)));
    assert!(
        w.log().contains("max_connections lowered from 256 to 240"),
        "{}",
        w.log()
    );
}
