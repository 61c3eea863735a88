//! Requests no shim sends, written straight to a prisoner's socket by a raw protocol
//! client (docs/security.md, sections 1 and 9): the warden refuses or records them as
//! what they are, and nothing that was not decided runs.

use std::path::Path;

use clawrden_e2e::raw::{raw_call, raw_request};
use clawrden_e2e::TestWarden;
use clawrden_protocol::Action;

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
