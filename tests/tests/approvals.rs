//! Asks wait for a person: approving through the HTTP API runs the command, denying or
//! not answering refuses it, remembered approvals skip the question for the exact same
//! call, lockdown refuses everything, and a warden killed mid-question leaves the
//! request `abandoned` (api.md). Real warden, real shims, real HTTP.

use std::path::Path;
use std::time::Duration;

use clawrden_e2e::api::{Api, ShimCall, WAITING_PREFIX};
use clawrden_e2e::{
    binaries, clawctl, poll_until, wait_until_no_process_with_env, Call, TestWarden,
};
use serde_json::{json, Value};

/// How long a shim may take to print its waiting line, and similar steps.
const STEP: Duration = Duration::from_secs(60);

fn policy(approval_timeout: &str, rules: &str) -> String {
    format!(
        "version: 1\n\
         default_action: allow\n\
         default_timeout: 2m\n\
         approval_timeout: {approval_timeout}\n\
         default_executor: local\n\
         rules:\n{rules}"
    )
}

const ASK_PRINTF_AND_TOUCH: &str = "  - name: ask-printf\n    command: printf\n    action: ask\n\
     \x20 - name: ask-touch\n    command: touch\n    action: ask\n";

/// A warden serving the API with `policy`, its admin client and an approve-scope client
/// whose token is called `approver`.
fn start(policy: &str, approver: &str) -> (TestWarden, Api, Api) {
    let w = TestWarden::builder().policy(policy).api().start();
    let admin = Api::of(&w).with_token(w.admin_token());
    let approve = admin.create_token(approver, "approve");
    (w, admin, approve)
}

fn approve(api: &Api, id: &str, body: Value) -> Value {
    api.post_json(&format!("/api/v1/requests/{id}/approve"), &body, 200)
}

fn deny(api: &Api, id: &str, reason: &str) -> Value {
    api.post_json(
        &format!("/api/v1/requests/{id}/deny"),
        &json!({ "reason": reason }),
        200,
    )
}

/// Stderr must be exactly the waiting line, then `rest`.
fn assert_stderr_after_waiting(out: &clawrden_e2e::Output, waiting: &str, rest: &str) {
    assert_eq!(
        out.stderr_str(),
        format!("{waiting}{rest}"),
        "expected exactly one waiting line, then {rest:?}; {out:?}"
    );
}

#[test]
fn approved_ask_runs_the_command_with_byte_exact_output() {
    let (w, admin, alice) = start(&policy("10m", ASK_PRINTF_AND_TOUCH), "alice");
    let call = Call::new("printf")
        .arg("line1\\nline2\\t\\377\\000tail")
        .cwd(w.dir());
    let mut shim = ShimCall::spawn(&w, &call);
    let (id, line) = shim.approval_id(STEP);
    assert!(
        line.starts_with(&format!("{WAITING_PREFIX}{id}: ")),
        "waiting line {line:?}"
    );
    let tail = format!(
        " in {} (rule ask-printf): waiting up to 10m\n",
        w.dir().display()
    );
    assert!(
        line.ends_with(&tail),
        "waiting line {line:?} does not end with {tail:?} (api.md: \"<argv> in <cwd> (rule <r>): waiting up to <approval_timeout>\")"
    );

    let view = alice.request_view(&id);
    assert_eq!(view["state"], "pending", "{view}");
    assert_eq!(view["approval"]["state"], "pending", "{view}");
    assert!(
        alice.pending_ids(500).contains(&id),
        "pending request {id} is not in GET /api/v1/requests?state=pending"
    );

    let decided = approve(&alice, &id, json!({ "note": "looks fine" }));
    assert_eq!(decided["id"], id.as_str(), "{decided}");
    assert_eq!(decided["approval"]["state"], "approved", "{decided}");
    assert_eq!(decided["approval"]["approver"], "alice", "{decided}");
    assert_eq!(decided["approval"]["note"], "looks fine", "{decided}");

    let out = shim.finish();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"line1\nline2\t\xff\x00tail", "{out:?}");
    assert_stderr_after_waiting(&out, &line, "");

    let done = admin.wait_request_state(&id, "done", STEP);
    assert_eq!(done["exit_code"], 0, "{done}");

    let events = w.events_after_outcome(&id);
    let approvals: Vec<_> = events.iter().filter(|e| e.event() == "approval").collect();
    assert_eq!(approvals.len(), 1, "one `approval` audit event: {events:?}");
    assert_eq!(approvals[0].str_field("approver"), Some("alice"));

    // The decision is final.
    let again = alice.post(&format!("/api/v1/requests/{id}/approve"), &json!({}));
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.error_code(), "already_decided", "{again:?}");
}

#[test]
fn denied_ask_exits_126_naming_the_approver_and_reason_and_never_runs() {
    let (w, admin, bob) = start(&policy("10m", ASK_PRINTF_AND_TOUCH), "bob");
    let marker = w.dir().join("denied-marker");
    let mut shim = ShimCall::spawn(&w, &Call::new("touch").arg(&marker));
    let (id, line) = shim.approval_id(STEP);
    let decided = deny(&bob, &id, "not today");
    assert_eq!(decided["approval"]["state"], "denied", "{decided}");
    let out = shim.finish();
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_stderr_after_waiting(&out, &line, "clawrden: denied: denied by bob: not today\n");
    assert!(!marker.exists(), "a denied ask ran its command");
    let view = admin.request_view(&id);
    assert_eq!(view["state"], "denied", "{view}");
    assert_eq!(view["approval"]["approver"], "bob", "{view}");
    assert_eq!(view["approval"]["reason"], "not today", "{view}");
}

#[test]
fn unanswered_ask_is_denied_after_approval_timeout_and_never_runs() {
    let (w, admin, _) = start(&policy("1s", ASK_PRINTF_AND_TOUCH), "nobody");
    let marker = w.dir().join("timeout-marker");
    let mut shim = ShimCall::spawn(&w, &Call::new("touch").arg(&marker));
    let (id, line) = shim.approval_id(STEP);
    let out = shim.finish();
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert_stderr_after_waiting(
        &out,
        &line,
        "clawrden: denied: approval timed out after 1s\n",
    );
    assert!(!marker.exists(), "an unanswered ask ran its command");
    let view = admin.wait_request_state(&id, "denied", STEP);
    assert_eq!(view["approval"]["state"], "expired", "{view}");
    // Too late to approve now.
    let late = admin.post(&format!("/api/v1/requests/{id}/approve"), &json!({}));
    assert_eq!(late.status, 409, "{late:?}");
}

#[test]
fn killing_a_waiting_shim_cancels_its_request_and_empties_the_queue() {
    let (w, admin, _) = start(&policy("10m", ASK_PRINTF_AND_TOUCH), "nobody");
    let marker = w.dir().join("cancel-marker");
    let mut shim = ShimCall::spawn(&w, &Call::new("touch").arg(&marker));
    let (id, _) = shim.approval_id(STEP);
    assert_eq!(admin.pending_ids(500), vec![id.clone()]);
    shim.kill();
    let out = shim.finish();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9)
    );
    poll_until(
        &format!("request {id} to leave GET /api/v1/requests?state=pending"),
        STEP,
        || (!admin.pending_ids(500).contains(&id)).then_some(()),
    );
    let view = admin.request_view(&id);
    assert_eq!(view["state"], "cancelled", "{view}");
    assert_eq!(view["approval"]["state"], "cancelled", "{view}");
    let events = w.events_after_outcome(&id);
    assert!(
        events.iter().any(|e| e.event() == "cancel"),
        "no `cancel` audit event for {id}: {events:?}"
    );
    assert!(!marker.exists(), "a cancelled ask ran its command");
    let status = admin.get_json("/api/v1/status");
    assert_eq!(status["queue"]["pending"], 0, "{status}");
}

/// `approval` audit events whose approver is `who`.
fn approvals_by(w: &TestWarden, who: &str) -> usize {
    w.audit_events()
        .iter()
        .filter(|e| e.event() == "approval" && e.str_field("approver") == Some(who))
        .count()
}

/// Starts `call`, which must ask; denies it so the shim ends; returns the approval id.
fn assert_asks(w: &TestWarden, api: &Api, call: &Call, why: &str) -> String {
    let mut shim = ShimCall::spawn(w, call);
    let (id, line) = shim.approval_id(STEP);
    deny(api, &id, why);
    let out = shim.finish();
    assert_eq!(out.status.code(), Some(126), "{why}: {out:?}");
    assert!(
        out.stderr_str().starts_with(&line),
        "{why}: {:?}",
        out.stderr_str()
    );
    id
}

#[test]
fn remembered_approval_skips_the_question_for_the_same_argv_and_cwd_only() {
    let (w, admin, carol) = start(&policy("10m", ASK_PRINTF_AND_TOUCH), "carol");
    let dir_a = w.dir().join("a");
    let dir_b = w.dir().join("b");
    std::fs::create_dir(&dir_a).unwrap();
    std::fs::create_dir(&dir_b).unwrap();
    let call = Call::new("printf")
        .args(["%s\n", "remember-me"])
        .cwd(&dir_a);

    let mut first = ShimCall::spawn(&w, &call);
    let (id, _) = first.approval_id(STEP);
    approve(&carol, &id, json!({ "remember": "1h" }));
    let out = first.finish();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"remember-me\n");

    let grants = admin.get_json("/api/v1/grants");
    let list = grants["grants"].as_array().expect("grants array");
    assert_eq!(
        list.len(),
        1,
        "one grant after approving with remember: {grants}"
    );
    let grant = &list[0];
    let grant_id = grant["id"].to_string();
    assert_eq!(grant["created_by"], "carol", "{grant}");
    assert_eq!(grant["cwd"], dir_a.to_str().unwrap(), "{grant}");
    let argv = grant["argv"].as_array().expect("grant argv array");
    assert_eq!(argv[1..], [json!("%s\n"), json!("remember-me")], "{grant}");
    assert_eq!(grant["uses"], 0, "{grant}");
    let approver = format!("grant:{grant_id}");

    // Same argv, same cwd: runs without asking, audited as approved by the grant.
    let out = ShimCall::spawn(&w, &call).finish_expecting_no_ask();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"remember-me\n");
    assert_eq!(out.stderr_str(), "", "{out:?}");
    poll_until(
        &format!("an `approval` audit event with approver {approver}"),
        STEP,
        || (approvals_by(&w, &approver) == 1).then_some(()),
    );
    let grants = admin.get_json("/api/v1/grants");
    assert_eq!(grants["grants"][0]["uses"], 1, "{grants}");

    // A different argv or a different cwd still asks.
    assert_asks(
        &w,
        &carol,
        &Call::new("printf")
            .args(["%s\n", "remember-me-not"])
            .cwd(&dir_a),
        "different argv",
    );
    assert_asks(
        &w,
        &carol,
        &Call::new("printf")
            .args(["%s\n", "remember-me"])
            .cwd(&dir_b),
        "different cwd",
    );

    // Revoked: asks again.
    let revoked = carol
        .delete(&format!("/api/v1/grants/{grant_id}"))
        .expect_status(200)
        .json();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    assert_asks(&w, &carol, &call, "after the grant was revoked");
    assert_eq!(
        approvals_by(&w, &approver),
        1,
        "the revoked grant approved another call"
    );
    let missing = carol.delete("/api/v1/grants/999999");
    assert_eq!(missing.status, 404, "{missing:?}");
}

#[test]
fn a_grant_made_for_one_uid_does_not_answer_another() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!(
            "SKIP a_grant_made_for_one_uid_does_not_answer_another: needs root to call as uid 1000"
        );
        return;
    }
    let (w, admin, erin) = start(&policy("10m", ASK_PRINTF_AND_TOUCH), "erin");
    let call = Call::new("printf").args(["%s\n", "uid-bound"]).cwd(w.dir());
    let mut first = ShimCall::spawn(&w, &call.clone().as_uid(1000));
    let (id, _) = first.approval_id(STEP);
    approve(&erin, &id, json!({ "remember": "1h" }));
    assert_eq!(first.finish().status.code(), Some(0));
    let grants = admin.get_json("/api/v1/grants");
    let grant = &grants["grants"][0];
    assert_eq!(
        (&grant["uid"], &grant["executor"]),
        (&json!(1000), &json!("local")),
        "{grant}"
    );

    // The same uid: answered by the grant.
    let out = ShimCall::spawn(&w, &call.clone().as_uid(1000)).finish_expecting_no_ask();
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"uid-bound\n"[..]),
        "{out:?}"
    );
    // The same argv and cwd from root: asks again.
    assert_asks(&w, &erin, &call, "another uid");
}

#[test]
fn remember_longer_than_a_day_is_refused_with_422() {
    let (w, admin, dave) = start(&policy("10m", ASK_PRINTF_AND_TOUCH), "dave");
    let mut shim = ShimCall::spawn(&w, &Call::new("printf").arg("x"));
    let (id, _) = shim.approval_id(STEP);
    let r = dave.post(
        &format!("/api/v1/requests/{id}/approve"),
        &json!({ "remember": "25h" }),
    );
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(admin.request_view(&id)["state"], "pending");
    deny(&dave, &id, "cleanup");
    assert_eq!(shim.finish().status.code(), Some(126));
}

fn lockdown(api: &Api, on: bool, kill_running: bool) -> Value {
    api.post_json(
        "/api/v1/lockdown",
        &json!({ "on": on, "kill_running": kill_running, "reason": "e2e drill" }),
        200,
    )
}

#[test]
fn lockdown_denies_every_new_call_until_lifted() {
    let (w, admin, approver) = start(&policy("10m", "  []\n"), "erin");
    let forbidden = approver.post("/api/v1/lockdown", &json!({ "on": true }));
    assert_eq!(
        forbidden.status, 403,
        "approve scope may not lock down: {forbidden:?}"
    );

    let view = lockdown(&admin, true, false);
    assert_eq!(view["on"], true, "{view}");
    assert_eq!(view["by"], "admin", "{view}");
    assert_eq!(view["reason"], "e2e drill", "{view}");
    assert_eq!(admin.get_json("/api/v1/status")["lockdown"]["on"], true);

    let marker = w.dir().join("lockdown-marker");
    for call in [Call::new("true"), Call::new("touch").arg(&marker)] {
        let out = w.run(&call);
        assert_eq!(out.status.code(), Some(126), "{out:?}");
        assert_eq!(out.stderr_str(), "clawrden: denied: lockdown\n");
    }
    assert!(!marker.exists(), "a call ran during lockdown");

    let view = lockdown(&admin, false, false);
    assert_eq!(view["on"], false, "{view}");
    let out = w.run(&Call::new("touch").arg(&marker));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(marker.exists());
}

#[test]
fn lockdown_with_kill_running_cancels_a_running_command_and_its_tree() {
    let (w, admin, _) = start(&policy("10m", "  []\n"), "frank");
    let ready = w.dir().join("ready");
    let token = "lockdown-kill-token";
    let script = format!("touch {}; sleep 1000 & sleep 1000", ready.display());
    let shim = ShimCall::spawn(&w, &Call::new("sh").args(["-c", &script, token]));
    poll_until("the command to start (its ready file)", STEP, || {
        ready.exists().then_some(())
    });
    let id = w.request_id_for(token);
    let entry = format!("{}={id}", clawrden_protocol::PARENT_REQUEST_ENV);
    assert!(
        !clawrden_e2e::pids_with_env(&entry).is_empty(),
        "no process of request {id} is running"
    );
    lockdown(&admin, true, true);
    let out = shim.finish();
    assert_eq!(
        out.status.code(),
        Some(126),
        "a cancelled command exits 126 (ErrorKind::Cancelled): {out:?}"
    );
    assert!(
        out.stderr_str().starts_with("clawrden: "),
        "{:?}",
        out.stderr_str()
    );
    wait_until_no_process_with_env(&entry, STEP);
    let view = admin.wait_request_state(&id, "cancelled", STEP);
    assert!(view["finished_at"].is_string(), "{view}");
    let out = w.run(&Call::new("true"));
    assert_eq!(out.stderr_str(), "clawrden: denied: lockdown\n");
}

#[test]
fn warden_killed_while_asking_leaves_the_request_abandoned_after_restart() {
    let policy = policy("10m", ASK_PRINTF_AND_TOUCH);
    let mut first = TestWarden::builder().policy(&policy).api().start();
    let admin_token = first.admin_token();
    let marker = first.dir().join("abandoned-marker");
    let mut shim = ShimCall::spawn(&first, &Call::new("touch").arg(&marker));
    let (id, line) = shim.approval_id(STEP);
    first.kill_hard();
    let out = shim.finish();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = out.stderr_str();
    let rest = err
        .strip_prefix(&line)
        .unwrap_or_else(|| panic!("stderr does not start with the waiting line: {err:?}"));
    assert!(
        rest.starts_with("clawrden: warden unavailable (") && rest.matches('\n').count() == 1,
        "expected one `clawrden: warden unavailable (...)` line, got {rest:?}"
    );

    let second = TestWarden::builder()
        .policy(&policy)
        .state_dir(&first.state_dir)
        .api()
        .start();
    let admin = Api::of(&second).with_token(admin_token);
    let view = admin.request_view(&id);
    assert_eq!(view["state"], "abandoned", "{view}");
    assert_eq!(view["approval"]["state"], "cancelled", "{view}");
    assert!(admin.pending_ids(500).is_empty());
    assert!(!Path::new(&marker).exists(), "an abandoned ask ran");

    let audit_dir = second.state_dir.join("audit");
    let key = second.audit_key_path();
    let verify = clawctl([
        "audit".as_ref(),
        "verify".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        audit_dir.as_os_str(),
    ]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{} audit verify {}: {verify:?}",
        binaries().clawctl.display(),
        audit_dir.display()
    );
}
