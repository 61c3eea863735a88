//! The warden's decision reaches the agent exactly as design §2 / contracts.md say, and a
//! command that was not allowed never runs.

use std::path::Path;

use clawrden_e2e::{Call, TestWarden};

fn policy(default_action: &str, rules: &str) -> String {
    format!(
        "version: 1\n\
         default_action: {default_action}\n\
         default_timeout: 2m\n\
         approval_timeout: 1s\n\
         default_executor: local\n\
         rules:\n{rules}"
    )
}

/// `touch MARKER` through the shim; returns the output and whether the marker exists.
fn touch_marker(w: &TestWarden, name: &str) -> (clawrden_e2e::Output, bool) {
    let marker = w.dir().join(name);
    let out = w.run(&Call::new("touch").arg(&marker));
    (out, Path::new(&marker).exists())
}

#[test]
fn deny_rule_exits_126_with_its_reason_and_never_runs_the_command() {
    let w = TestWarden::start(&policy(
        "allow",
        "  - name: no-touch\n    command: touch\n    action: deny\n    reason: touching files is not allowed in this test\n",
    ));
    let (out, ran) = touch_marker(&w, "denied-marker");
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert_eq!(
        out.stderr_str(),
        "clawrden: denied: touching files is not allowed in this test\n"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(!ran, "a denied command ran");
}

#[test]
fn deny_rule_without_reason_names_the_rule() {
    let w = TestWarden::start(&policy(
        "allow",
        "  - name: no-touch\n    command: touch\n    action: deny\n",
    ));
    let (out, ran) = touch_marker(&w, "denied-marker");
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert_eq!(out.stderr_str(), "clawrden: denied: rule no-touch denies\n");
    assert!(!ran, "a denied command ran");
}

#[test]
fn default_deny_exits_126_with_the_default_reason() {
    let w = TestWarden::start(&policy("deny", "  []\n"));
    let (out, ran) = touch_marker(&w, "default-deny-marker");
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert_eq!(
        out.stderr_str(),
        "clawrden: denied: no rule matched; default_action is deny\n"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(!ran, "a denied command ran");
}

#[test]
fn allow_rule_runs_its_command_under_default_deny_and_first_match_wins() {
    let w = TestWarden::start(&policy(
        "deny",
        "  - name: no-printf-secret\n    command: printf\n    args: [\"%s\", \"secret*\"]\n    action: deny\n    reason: no secrets\n\
         \x20 - name: printf-ok\n    command: printf\n    action: allow\n",
    ));
    let out = w.run(&Call::new("printf").args(["%s|", "a b", "c"]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"a b|c|");
    let out = w.run(&Call::new("printf").args(["%s", "secret-file"]));
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert_eq!(out.stderr_str(), "clawrden: denied: no secrets\n");
    let (out, ran) = touch_marker(&w, "marker");
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(!ran);
}

#[test]
fn unanswered_ask_becomes_a_deny_after_approval_timeout_and_never_runs() {
    let w = TestWarden::start(&policy(
        "allow",
        "  - name: ask-touch\n    command: touch\n    action: ask\n",
    ));
    let (out, ran) = touch_marker(&w, "asked-marker");
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = out.stderr_str();
    let lines: Vec<&str> = stderr.split_inclusive('\n').collect();
    assert_eq!(
        lines.len(),
        2,
        "expected one waiting line and one deny line, got {stderr:?}"
    );
    assert!(
        lines[0].starts_with("clawrden: ") && lines[0].ends_with('\n'),
        "waiting line: {:?}",
        lines[0]
    );
    assert_eq!(lines[1], "clawrden: denied: approval timed out after 1s\n");
    assert!(!ran, "an unanswered ask ran the command");
}

#[test]
fn rule_wanting_an_executor_this_warden_does_not_run_is_denied() {
    let w = TestWarden::start(&policy(
        "allow",
        "  - name: touch-in-prisoner\n    command: touch\n    action: allow\n    executor: mirror\n",
    ));
    let (out, ran) = touch_marker(&w, "mirror-marker");
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert_eq!(
        out.stderr_str(),
        "clawrden: denied: rule touch-in-prisoner wants executor mirror, which this warden does not run\n"
    );
    assert!(!ran, "a command for a missing executor ran");
}

fn bad_policy_exits_64(yaml: &str, expect_position: &str) {
    let mut w = TestWarden::builder().policy(yaml).launch();
    let status = w.wait_exit();
    let log = w.log();
    assert_eq!(
        status.code(),
        Some(64),
        "warden on a bad policy: {status}; stderr:\n{log}"
    );
    assert!(
        !w.socket.exists(),
        "the warden created its socket before rejecting the policy"
    );
    let needle = format!("{}:{expect_position}", w.policy_path.display());
    assert!(
        log.contains(&needle),
        "stderr does not name {needle}:\n{log}"
    );
}

#[test]
fn warden_refuses_an_unknown_policy_key_with_64_naming_file_line_column() {
    bad_policy_exits_64(
        "version: 1\ndefault_action: deny\nbogus_key: true\ndefault_executor: local\n",
        "3:1:",
    );
}

#[test]
fn warden_refuses_an_unknown_action_with_64_naming_the_line() {
    bad_policy_exits_64(
        "version: 1\ndefault_action: deny\ndefault_executor: local\nrules:\n  - name: x\n    command: git\n    action: maybe\n",
        "7:",
    );
}

#[test]
fn tool_missing_from_the_wardens_path_exits_127() {
    let w = TestWarden::start(&policy("allow", "  []\n"));
    let out = w.run(&Call::new("clawrden-no-such-tool").arg("x"));
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let err = out.stderr_str();
    assert!(
        err.starts_with("clawrden: ")
            && err.contains("clawrden-no-such-tool")
            && err.ends_with('\n')
            && err.matches('\n').count() == 1,
        "expected one line `clawrden: <not found message>`, got {err:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn denied_call_exits_without_waiting_for_stdin_to_close() {
    use std::process::Stdio;
    let w = TestWarden::start(&policy("deny", "  []\n"));
    let mut cmd = w.shim_command(&Call::new("cat"));
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // Keep our end of stdin open (and silent) until the shim has exited.
    let stdin = child.stdin.take().unwrap();
    let dog = clawrden_e2e::Watchdog::new(child.id(), std::time::Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    assert!(!dog.finish(), "a denied call waited for stdin to close");
    drop(stdin);
    assert_eq!(out.status.code(), Some(126));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "clawrden: denied: no rule matched; default_action is deny\n"
    );
}

#[test]
fn prisoner_is_taken_from_the_socket_that_accepted_the_call() {
    let w = TestWarden::builder()
        .policy(policy(
            "allow",
            "  - name: agent-2-no-touch\n    command: touch\n    prisoner: agent-2\n    action: deny\n",
        ))
        .prisoners(&["agent-1", "agent-2"])
        .start();
    let run_as = |prisoner: &str, marker: &str| {
        let marker = w.dir().join(marker);
        let cmd = w.shim_command_as(prisoner, &Call::new("touch").arg(&marker));
        let out = clawrden_e2e::run_command(cmd, b"", "shim touch");
        (out, marker.exists())
    };
    let (out, ran) = run_as("agent-1", "agent-1-marker");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(ran, "agent-1's allowed touch did not run");
    let (out, ran) = run_as("agent-2", "agent-2-marker");
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert_eq!(
        out.stderr_str(),
        "clawrden: denied: rule agent-2-no-touch denies\n"
    );
    assert!(!ran, "agent-2's denied touch ran");
    for (prisoner, marker) in [("agent-1", "agent-1-marker"), ("agent-2", "agent-2-marker")] {
        let token = w.dir().join(marker);
        let id = w.request_id_for(token.to_str().unwrap());
        let events = w.events_when(&id, "a decision", |e| e.event() == "decision");
        assert!(
            events
                .iter()
                .filter(|e| e.event() == "request" || e.event() == "decision")
                .all(|e| e.str_field("prisoner") == Some(prisoner)),
            "events of {prisoner}'s call: {:?}",
            events.iter().map(|e| &e.raw).collect::<Vec<_>>()
        );
    }
}

fn warden_cli(args: &[&std::ffi::OsStr]) -> clawrden_e2e::Output {
    let mut cmd = std::process::Command::new(&clawrden_e2e::binaries().warden);
    cmd.args(args)
        .env_clear()
        .env("PATH", clawrden_e2e::SYSTEM_PATH);
    clawrden_e2e::run_command(cmd, b"", "clawrden-warden")
}

#[test]
fn check_config_accepts_a_good_policy_and_rejects_a_bad_one_with_64() {
    let dir = clawrden_e2e::TempDir::new("check-config");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, policy("deny", "  []\n")).unwrap();
    let out = warden_cli(&[
        "check-config".as_ref(),
        "--policy".as_ref(),
        good.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\ndefault_action: deny\nbogus_key: 1\n").unwrap();
    let out = warden_cli(&[
        "check-config".as_ref(),
        "--policy".as_ref(),
        bad.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let needle = format!("{}:3:1", bad.display());
    assert!(out.stderr_str().contains(&needle), "{out:?}");
}

#[test]
fn warden_refuses_a_config_with_an_unknown_key_with_64_naming_file_line_column() {
    let dir = clawrden_e2e::TempDir::new("bad-config");
    let pol = dir.path().join("policy.yaml");
    std::fs::write(&pol, policy("deny", "  []\n")).unwrap();
    let config = dir.path().join("warden.yaml");
    std::fs::write(
        &config,
        format!(
            "policy: {}\nstate_dir: {}\nexecutors: [local]\nprisoners:\n  - name: a\n    socket: {}\n    sockett: typo\n",
            pol.display(),
            dir.path().join("state").display(),
            dir.path().join("a.sock").display()
        ),
    )
    .unwrap();
    let out = warden_cli(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let needle = format!("{}:7:", config.display());
    assert!(
        out.stderr_str().contains(&needle),
        "expected {needle}: {out:?}"
    );
    assert!(
        !dir.path().join("a.sock").exists(),
        "socket bound despite a bad config"
    );
}

#[test]
fn uid_rules_match_the_callers_peer_uid() {
    let uid = clawrden_e2e::our_uid();
    let other = uid.wrapping_add(4242);
    let w = TestWarden::start(&policy(
        "allow",
        &format!(
            "  - name: other-uid-denied\n    command: printf\n    uid: [{other}]\n    action: deny\n\
             \x20 - name: our-uid-denied\n    command: touch\n    uid: [{uid}]\n    action: deny\n"
        ),
    ));
    let out = w.run(&Call::new("printf").arg("ran"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "a rule for uid {other} matched uid {uid}: {out:?}"
    );
    assert_eq!(out.stdout, b"ran");
    let (out, ran) = touch_marker(&w, "uid-marker");
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert_eq!(
        out.stderr_str(),
        "clawrden: denied: rule our-uid-denied denies\n"
    );
    assert!(!ran);
}
