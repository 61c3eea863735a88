//! `GET /metrics` of a real warden after a known workload: exact counter values, the age of a
//! waiting approval, the queue gauges back at zero, one reload per SIGHUP, and a bounded
//! `command` label.

use std::collections::BTreeMap;
use std::time::Duration;

use clawrden_e2e::api::{Api, ShimCall};
use clawrden_e2e::{Call, TestWarden};
use nix::sys::signal::Signal;
use serde_json::json;

const STEP: Duration = Duration::from_secs(60);

/// `name{labels}` (labels as printed, sorted by the encoder) -> value, for every sample.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad exposition line {l:?}"));
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad sample value in {l:?}"));
            (key.to_string(), v)
        })
        .collect()
}

/// Polls /metrics until every `(series, value)` in `want` holds (metrics may trail the
/// shim's exit by a moment); panics listing the mismatches. Returns the last scrape.
fn wait_for_metrics(api: &Api, want: &[(String, f64)]) -> BTreeMap<String, f64> {
    let start = std::time::Instant::now();
    loop {
        let got = samples(&api.metrics());
        let wrong: Vec<String> = want
            .iter()
            .filter(|(k, v)| got.get(k) != Some(v))
            .map(|(k, v)| format!("{k}: want {v}, got {:?}", got.get(k)))
            .collect();
        if wrong.is_empty() {
            return got;
        }
        if start.elapsed() > STEP {
            panic!(
                "/metrics never matched within {STEP:?}:\n  {}\nlast scrape:\n{got:#?}",
                wrong.join("\n  ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Seconds since the Unix epoch, as the warden's gauges count them.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

fn policy(approval_timeout: &str) -> String {
    format!(
        "version: 1\n\
         default_action: allow\n\
         default_timeout: 2m\n\
         approval_timeout: {approval_timeout}\n\
         default_executor: local\n\
         rules:\n\
         \x20 - name: no-touch\n    command: touch\n    action: deny\n\
         \x20 - name: ask-printf\n    command: printf\n    action: ask\n\
         \x20 - name: short-fuse\n    command: sh\n    timeout: 1s\n    action: allow\n"
    )
}

fn requests(command: &str, action: &str) -> String {
    format!(
        r#"clawrden_requests_total{{action="{action}",command="{command}",prisoner="default"}}"#
    )
}

#[test]
fn metrics_count_a_known_workload_exactly() {
    let w = TestWarden::builder()
        .policy(policy("10m"))
        .policy_via_symlink()
        .api()
        .start();
    let admin = Api::of(&w).with_token(w.admin_token());
    let approver = admin.create_token("hana", "approve");
    let marker = w.dir().join("never");

    for _ in 0..3 {
        assert_eq!(w.run(&Call::new("true")).status.code(), Some(0));
    }
    for _ in 0..2 {
        assert_eq!(
            w.run(&Call::new("touch").arg(&marker)).status.code(),
            Some(126)
        );
    }
    // One ask denied by a person. While it waits, the queue shows it and when it was
    // queued (the warden's wall clock, between the two readings around the call).
    let before = unix_now();
    let mut shim = ShimCall::spawn(&w, &Call::new("printf").arg("asked"));
    let (id, _) = shim.approval_id(STEP);
    let after = unix_now();
    let waiting = wait_for_metrics(&admin, &[("clawrden_queue_size".into(), 1.0)]);
    let queued_at = waiting["clawrden_oldest_pending_approval_timestamp_seconds"];
    assert!(
        (before..=after).contains(&queued_at),
        "oldest pending approval queued at {queued_at}, not within [{before}, {after}]"
    );
    approver.post_json(
        &format!("/api/v1/requests/{id}/deny"),
        &json!({ "reason": "metrics" }),
        200,
    );
    assert_eq!(shim.finish().status.code(), Some(126));
    // One command killed at its execution time limit.
    let out = w.run(&Call::new("sh").args(["-c", "sleep 1000"]));
    assert_eq!(out.status.code(), Some(124), "{out:?}");

    // One SIGHUP: the policy now lets asks time out after 1s (the symlinked file is not
    // watched, so only the signal reloads it).
    w.write_policy_in_place(&policy("1s"));
    w.signal(Signal::SIGHUP);
    wait_for_metrics(
        &admin,
        &[(r#"clawrden_policy_reloads_total{result="ok"}"#.into(), 1.0)],
    );
    // One ask nobody answers.
    let out = w.run(&Call::new("printf").arg("unanswered"));
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(
        out.stderr_str()
            .ends_with("clawrden: denied: approval timed out after 1s\n"),
        "{out:?}"
    );

    let want: Vec<(String, f64)> = vec![
        (requests("true", "allow"), 3.0),
        (requests("touch", "deny"), 2.0),
        (requests("printf", "ask"), 2.0),
        (requests("sh", "allow"), 1.0),
        ("clawrden_timeouts_total".into(), 1.0),
        // 3 `true` + the timed-out `sh`: nothing else ran.
        ("clawrden_execution_duration_seconds_count".into(), 4.0),
        // The person's answer and the timeout.
        ("clawrden_approval_wait_seconds_count".into(), 2.0),
        ("clawrden_queue_size".into(), 0.0),
        (
            "clawrden_oldest_pending_approval_timestamp_seconds".into(),
            0.0,
        ),
        (r#"clawrden_policy_reloads_total{result="ok"}"#.into(), 1.0),
        (
            r#"clawrden_policy_reloads_total{result="error"}"#.into(),
            0.0,
        ),
        (
            format!(
                r#"clawrden_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        ),
        (r#"clawrden_errors_total{kind="protocol"}"#.into(), 0.0),
        (r#"clawrden_errors_total{kind="audit"}"#.into(), 0.0),
        (r#"clawrden_errors_total{kind="store"}"#.into(), 0.0),
        (r#"clawrden_errors_total{kind="executor"}"#.into(), 0.0),
        (r#"clawrden_errors_total{kind="internal"}"#.into(), 0.0),
    ];
    let got = wait_for_metrics(&admin, &want);
    let series: Vec<&String> = got
        .keys()
        .filter(|k| k.starts_with("clawrden_requests_total"))
        .collect();
    assert_eq!(
        series.len(),
        4,
        "every call counted once, under its policy action: {series:?}"
    );
    // Each decision was timed.
    assert_eq!(
        got.get("clawrden_decision_duration_seconds_count"),
        Some(&8.0),
        "decision timings for 8 calls: {got:#?}"
    );
}

#[test]
fn command_label_is_capped_at_64_names_then_other() {
    let w = TestWarden::builder()
        .policy(
            "version: 1\ndefault_action: deny\ndefault_timeout: 2m\napproval_timeout: 1s\n\
             default_executor: local\nrules: []\n",
        )
        .api()
        .start();
    let api = Api::of(&w);
    for i in 0..80 {
        let name = format!("tool-{i:02}");
        w.tool(&name);
        let out = w.run(&Call::new(&name));
        assert_eq!(out.status.code(), Some(126), "{name}: {out:?}");
    }
    let mut want: Vec<(String, f64)> = (0..64)
        .map(|i| (requests(&format!("tool-{i:02}"), "deny"), 1.0))
        .collect();
    want.push((requests("other", "deny"), 16.0));
    let got = wait_for_metrics(&api, &want);
    let series: Vec<&String> = got
        .keys()
        .filter(|k| k.starts_with("clawrden_requests_total"))
        .collect();
    assert_eq!(series.len(), 65, "64 names + other: {series:?}");
}
