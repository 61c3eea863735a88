//! Requests no shim sends, written straight to a prisoner's socket by a raw protocol
//! client (docs/security.md, sections 1 and 9): the warden refuses or records them as
//! what they are, and nothing that was not decided runs.

use std::path::Path;
use std::time::Duration;

use clawrden_e2e::api::{Api, ShimCall};
use clawrden_e2e::raw::{raw_call, raw_request};
use clawrden_e2e::{poll_until, Call, TestWarden};
use clawrden_protocol::Action;
use serde_json::{json, Value};

fn policy(rules: &str) -> String {
    format!(
        "version: 1\n\
         default_action: allow\n\
         default_timeout: 2m\n\
         approval_timeout: 5s\n\
         default_executor: local\n\
         rules:\n{rules}"
    )
}

const NO_RM: &str = "  - name: no-rm\n    command: rm\n    action: deny\n    reason: deleting files needs a person\n";

#[test]
fn argv0_that_is_not_a_command_name_is_denied_before_the_policy() {
    let w = TestWarden::start(&policy(NO_RM));
    let victim = w.dir().join("victim");
    let cases: &[(&[u8], &str)] = &[
        (b"/usr/bin/rm/.", "argv[0] /usr/bin/rm/. ends in `.` or `..`, which is not a command name; call the tool by its name"),
        (b"/bin/rm/..", "argv[0] /bin/rm/.. ends in `.` or `..`, which is not a command name; call the tool by its name"),
        (b"/usr/bin/rm/", "argv[0] /usr/bin/rm/ ends in `/`, so it names a directory, not a command; call the tool by its name"),
        (b"", "argv[0] is empty; call the tool by its name"),
        (b"rm\x1b[2K", "argv[0] $'rm\\x1b[2K' holds control or invisible characters; call the tool by its name"),
        ("rm\u{202e}".as_bytes(), "argv[0] $'rm\\xe2\\x80\\xae' holds control or invisible characters; call the tool by its name"),
    ];
    for &(argv0, reason) in cases {
        std::fs::write(&victim, b"keep me").unwrap();
        let mut request = raw_request(&[argv0, b"-f", victim.as_os_str().as_encoded_bytes()]);
        request.tool_path = b"/usr/bin/rm".to_vec();
        let reply = raw_call(&w.socket, &request);
        let d = reply.decision();
        assert_eq!(
            (d.action, d.reason.as_str(), d.rule.as_deref(), reply.exit()),
            (Action::Deny, reason, None, None),
            "argv[0] {argv0:?}: {reply:?}"
        );
        assert_eq!(reply.frames.len(), 1, "{reply:?}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me", "{argv0:?}");
        let events = w.events_when(&d.request_id, "the decision", |e| e.event() == "decision");
        let decision = events.iter().find(|e| e.event() == "decision").unwrap();
        assert_eq!(decision.str_field("action"), Some("deny"), "{decision:?}");
        assert_eq!(decision.str_field("reason"), Some(reason), "{decision:?}");
        assert!(
            decision.get("rule").is_some_and(|r| r.is_null()),
            "{decision:?}"
        );
        assert!(
            !events.iter().any(|e| e.event() == "start"),
            "a refused call started: {events:?}"
        );
    }
    assert!(Path::new(&victim).exists());
}

/// The `request` audit event of `id`.
fn request_event(w: &TestWarden, id: &str) -> clawrden_e2e::AuditEvent {
    w.events_when(id, "the request event", |e| e.event() == "request")
        .into_iter()
        .find(|e| e.event() == "request")
        .unwrap()
}

#[test]
fn a_parent_claim_naming_a_finished_request_is_recorded_as_unverified() {
    let w = TestWarden::builder().policy(policy("")).api().start();
    let admin = Api::of(&w).with_token(w.admin_token());
    let out = w.run(&Call::new("printf").arg("first-call"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let finished = w.request_id_for("first-call");
    w.events_after_outcome(&finished);

    // A top-level call that claims to be the finished request's child.
    let mut request = raw_request(&[b"printf", b"second-call"]);
    request.parent_request = Some(finished.clone());
    let reply = raw_call(&w.socket, &request);
    assert_eq!(
        (reply.decision().action, reply.stdout(), reply.exit()),
        (Action::Allow, b"second-call".to_vec(), Some(0)),
        "{reply:?}"
    );
    let id = reply.decision().request_id.clone();
    let reason = format!("request {finished} is not running (it finished, or never existed)");
    let req = request_event(&w, &id);
    assert!(
        req.get("parent_request").is_some_and(|p| p.is_null()),
        "{}",
        req.raw
    );
    assert_eq!(req.str_field("unverified_parent"), Some(finished.as_str()));
    assert_eq!(
        req.str_field("unverified_parent_reason"),
        Some(reason.as_str())
    );
    let view = admin.get_json(&format!("/api/v1/requests/{id}"));
    assert_eq!(view["parent_request"], Value::Null, "{view}");
    assert_eq!(
        view["unverified_parent"],
        json!({ "id": finished, "reason": reason }),
        "{view}"
    );
    // And a claim that is not an id at all.
    request.parent_request = Some("../../etc/passwd".to_owned());
    let reply = raw_call(&w.socket, &request);
    let req = request_event(&w, &reply.decision().request_id);
    assert_eq!(req.str_field("unverified_parent"), Some("../../etc/passwd"));
    assert_eq!(
        req.str_field("unverified_parent_reason"),
        Some("not a request id")
    );
}

#[test]
fn a_parent_claim_from_outside_the_running_parents_process_tree_is_unverified() {
    let w = TestWarden::start(&policy(""));
    let ready = w.dir().join("ready");
    let script = format!("touch {}; exec sleep 60", ready.display());
    let mut parent = ShimCall::spawn(&w, &Call::new("sh").args(["-c", &script, "outer-marker"]));
    poll_until(
        "the parent command to start",
        Duration::from_secs(30),
        || ready.exists().then_some(()),
    );
    let parent_id = w.request_id_for("outer-marker");
    let start = w.events_when(&parent_id, "the start event", |e| e.event() == "start");
    let helper = start
        .iter()
        .find(|e| e.event() == "start")
        .and_then(|e| e.get("pid"))
        .and_then(Value::as_u64)
        .unwrap();

    // This test process is not inside the parent's tree: a claim made from here fails.
    let mut request = raw_request(&[b"printf", b"not-a-child"]);
    request.parent_request = Some(parent_id.clone());
    let reply = raw_call(&w.socket, &request);
    let req = request_event(&w, &reply.decision().request_id);
    assert!(
        req.get("parent_request").is_some_and(|p| p.is_null()),
        "{}",
        req.raw
    );
    assert_eq!(req.str_field("unverified_parent"), Some(parent_id.as_str()));
    assert_eq!(
        req.str_field("unverified_parent_reason"),
        Some(
            format!(
                "the caller (pid {}) is not inside the process tree of request {parent_id} (pid {helper})",
                std::process::id()
            )
            .as_str()
        )
    );
    parent.kill();
}
