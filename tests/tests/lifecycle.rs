//! Time limits, cancellation, an unreachable warden, policy reloads and shutdown.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use clawrden_e2e::{
    binaries, pids_with_env, poll_until, sha256_hex, wait_until_no_process_with_env, Call, TempDir,
    TestWarden,
};
use nix::sys::signal::Signal;

const TREE_GONE_DEADLINE: Duration = Duration::from_secs(10);

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

fn parent_env(request_id: &str) -> String {
    format!("{}={request_id}", clawrden_protocol::PARENT_REQUEST_ENV)
}

fn timeout_kills_the_tree(stream_only: bool) {
    let w = TestWarden::builder()
        .policy(policy(
            "allow",
            "  - name: short-fuse\n    command: sh\n    timeout: 1s\n    action: allow\n",
        ))
        .stream_only(stream_only)
        .start();
    let token = "timeout-tree-token";
    let out = w.run(
        &Call::new("sh")
            .arg("-c")
            .arg("sleep 1000 & setsid sleep 1000 & sleep 1000")
            .arg(token),
    );
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert_eq!(
        out.stderr_str(),
        "clawrden: timed out after 1s; process tree killed\n"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    let id = w.request_id_for(token);
    let left = pids_with_env(&parent_env(&id));
    assert!(
        left.is_empty(),
        "the shim reported the tree killed, but these processes of request {id} live on: {left:?}"
    );
}

#[test]
fn fd_path_timeout_exits_124_and_kills_the_whole_tree_including_setsid_children() {
    timeout_kills_the_tree(false);
}

#[test]
fn stream_path_timeout_exits_124_and_kills_the_whole_tree_including_setsid_children() {
    timeout_kills_the_tree(true);
}

/// Starts `sh -c 'echo ready; sleep 1000 & sleep 1000' sh TOKEN` through the shim and
/// returns once it printed `ready` (so it is running).
fn start_sleeper(w: &TestWarden, token: &str) -> (Child, mpsc::Receiver<String>) {
    let call = Call::new("sh")
        .arg("-c")
        .arg("echo ready; sleep 1000 & sleep 1000")
        .arg(token);
    let mut cmd = w.shim_command(&call);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start shim");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => assert_eq!(line, "ready"),
        Err(e) => {
            let _ = child.kill();
            panic!("the command did not print `ready` within 60 s ({e})");
        }
    }
    (child, rx)
}

fn killing_the_shim_kills_the_tree(stream_only: bool) {
    let w = TestWarden::builder().stream_only(stream_only).start();
    let token = "shim-killed-token";
    let (mut child, _rx) = start_sleeper(&w, token);
    let id = w.request_id_for(token);
    let entry = parent_env(&id);
    // sh prints "ready" before it forks its two sleeps: wait (bounded) until all three
    // carry the request's id.
    let running = poll_until(
        &format!("sh and its two sleeps carrying {entry}"),
        Duration::from_secs(10),
        || Some(pids_with_env(&entry)).filter(|r| r.len() >= 3),
    );
    assert_eq!(running.len(), 3, "{running:?}");
    child.kill().expect("SIGKILL the shim");
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    wait_until_no_process_with_env(&entry, TREE_GONE_DEADLINE);
    let events = w.events_after_outcome(&id);
    let last = events.last().unwrap();
    assert_eq!(
        last.event(),
        "cancel",
        "outcome of a request whose shim was killed: {}",
        last.raw
    );
}

#[test]
fn fd_path_killing_the_shim_kills_the_command_tree() {
    killing_the_shim_kills_the_tree(false);
}

#[test]
fn stream_path_killing_the_shim_kills_the_command_tree() {
    killing_the_shim_kills_the_tree(true);
}

/// Runs `touch MARKER` through a shim pointed at `socket`, where no warden answers.
fn assert_unavailable(dir: &Path, socket: &Path) {
    let touch = dir.join("bin-touch");
    if !touch.exists() {
        std::os::unix::fs::symlink(&binaries().shim, &touch).unwrap();
    }
    let marker = dir.join("unavailable-marker");
    let mut cmd = Command::new(&touch);
    Call::new("touch").arg(&marker).configure_into(&mut cmd);
    cmd.env(clawrden_protocol::SOCKET_ENV, socket);
    let start = Instant::now();
    let out = clawrden_e2e::run_command(cmd, b"", "shim touch with no warden");
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = out.stderr_str();
    let prefix = format!("clawrden: warden unavailable ({}): ", socket.display());
    assert!(
        stderr.starts_with(&prefix)
            && stderr.ends_with('\n')
            && stderr.matches('\n').count() == 1
            && stderr.len() > prefix.len() + 1,
        "expected one line `{prefix}<cause>`, got {stderr:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        !marker.exists(),
        "the shim ran the command without a warden"
    );
    // Generous bound: connecting to a dead socket fails at once; this only catches a hang.
    assert!(
        took < Duration::from_secs(5),
        "failing closed took {took:?}"
    );
}

#[test]
fn no_socket_means_125_warden_unavailable_and_nothing_runs() {
    let dir = TempDir::new("no-warden");
    let missing = dir.path().join("no-such-warden.sock");
    assert_unavailable(dir.path(), &missing);
}

#[test]
fn killed_warden_means_125_warden_unavailable_and_nothing_runs() {
    let mut w = TestWarden::start(&policy("allow", "  []\n"));
    w.kill_hard();
    assert!(
        w.socket.exists(),
        "test premise: the killed warden left its socket file"
    );
    let socket = w.socket.clone();
    assert_unavailable(w.dir(), &socket);
}

fn status_of_true(w: &TestWarden) -> Option<i32> {
    w.run(&Call::new("true")).status.code()
}

/// Polls until `true` through the shim exits with `want` (a reload is not awaitable).
fn wait_for_decision(w: &TestWarden, want: i32, what: &str) {
    poll_until(what, Duration::from_secs(20), || {
        (status_of_true(w) == Some(want)).then_some(())
    });
}

fn last_decision_policy_sha(w: &TestWarden) -> String {
    let events = w.audit_events();
    let d = events
        .iter()
        .rev()
        .find(|e| e.event() == "decision")
        .expect("a decision in the audit");
    d.str_field("policy_sha256")
        .unwrap_or_else(|| panic!("decision without policy_sha256: {}", d.raw))
        .to_string()
}

#[test]
fn sighup_reloads_the_policy_and_changes_a_decision() {
    let deny = policy("deny", "  []\n");
    let allow = policy("allow", "  []\n");
    // Behind a symlink into another directory: editing the real file is not visible to a
    // watch on the policy's directory, so the reload below is SIGHUP's doing.
    let w = TestWarden::builder()
        .policy(deny.clone())
        .policy_via_symlink()
        .start();
    assert_eq!(status_of_true(&w), Some(126));
    w.write_policy_in_place(&allow);
    w.signal(Signal::SIGHUP);
    wait_for_decision(&w, 0, "SIGHUP reload to allow `true`");
    assert_eq!(last_decision_policy_sha(&w), sha256_hex(allow.as_bytes()));
}

#[test]
fn atomic_rename_over_the_policy_reloads_it() {
    let w = TestWarden::start(&policy("deny", "  []\n"));
    assert_eq!(status_of_true(&w), Some(126));
    let allow = policy("allow", "  []\n");
    w.replace_policy_atomically(&allow);
    wait_for_decision(&w, 0, "rename-over reload to allow `true`");
    assert_eq!(last_decision_policy_sha(&w), sha256_hex(allow.as_bytes()));
}

#[test]
fn bad_reload_keeps_the_old_policy_and_logs_file_line_column() {
    let allow = policy("allow", "  []\n");
    let w = TestWarden::start(&allow);
    assert_eq!(status_of_true(&w), Some(0));
    w.replace_policy_atomically("version: 1\ndefault_action: deny\nbogus_key: 1\n");
    let needle = format!("{}:3:1", w.policy_path.display());
    poll_until(
        &format!("a log line naming {needle} after a bad reload"),
        Duration::from_secs(20),
        || w.log().contains(&needle).then_some(()),
    );
    assert_eq!(
        status_of_true(&w),
        Some(0),
        "a bad reload changed the decision"
    );
    assert_eq!(last_decision_policy_sha(&w), sha256_hex(allow.as_bytes()));
    // And the next good policy still loads.
    w.replace_policy_atomically(&policy("deny", "  []\n"));
    wait_for_decision(&w, 126, "reload after a bad reload");
}

#[test]
fn sigterm_cancels_running_commands_and_exits_0() {
    let mut w = TestWarden::start(&policy("allow", "  []\n"));
    let token = "sigterm-token";
    let (mut child, _rx) = start_sleeper(&w, token);
    let id = w.request_id_for(token);
    let entry = parent_env(&id);
    assert!(
        !pids_with_env(&entry).is_empty(),
        "command not visible in /proc"
    );
    w.signal(Signal::SIGTERM);
    let status = w.wait_exit();
    assert_eq!(status.code(), Some(0), "warden on SIGTERM: {status}");
    wait_until_no_process_with_env(&entry, TREE_GONE_DEADLINE);
    let dog = clawrden_e2e::Watchdog::new(child.id(), clawrden_e2e::RUN_DEADLINE);
    let shim_status = child.wait().unwrap();
    assert!(!dog.finish(), "the shim hung after the warden exited");
    assert!(
        !shim_status.success(),
        "the shim of a cancelled command reported success"
    );
}

#[test]
fn sigint_stops_the_warden_with_exit_0() {
    let mut w = TestWarden::start(&policy("allow", "  []\n"));
    assert_eq!(status_of_true(&w), Some(0));
    w.signal(Signal::SIGINT);
    assert_eq!(w.wait_exit().code(), Some(0), "warden on SIGINT");
}

#[test]
fn a_new_warden_takes_over_the_socket_a_killed_one_left_behind() {
    let dir = TempDir::new("stale-socket");
    let socket = dir.path().join("warden.sock");
    let mut first = TestWarden::builder()
        .policy(policy("allow", "  []\n"))
        .socket(&socket)
        .start();
    first.kill_hard();
    assert!(
        socket.exists(),
        "test premise: the killed warden left its socket file"
    );
    let second = TestWarden::builder()
        .policy(policy("allow", "  []\n"))
        .socket(&socket)
        .start();
    assert_eq!(status_of_true(&second), Some(0));
}

#[test]
fn timeout_escalates_to_sigkill_when_the_tree_ignores_sigterm() {
    let w = TestWarden::start(&policy(
        "allow",
        "  - name: short-fuse\n    command: sh\n    timeout: 1s\n    action: allow\n",
    ));
    let token = "ignores-term-token";
    // `trap '' TERM` is inherited: sh and both sleeps ignore SIGTERM.
    let out = w.run(
        &Call::new("sh")
            .arg("-c")
            .arg("trap '' TERM; sleep 1000 & sleep 1000")
            .arg(token),
    );
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert_eq!(
        out.stderr_str(),
        "clawrden: timed out after 1s; process tree killed\n"
    );
    let id = w.request_id_for(token);
    let left = pids_with_env(&parent_env(&id));
    assert!(left.is_empty(), "survivors of request {id}: {left:?}");
}

#[test]
fn killing_the_shim_while_approval_is_pending_never_runs_the_command() {
    let w = TestWarden::start(
        &policy(
            "allow",
            "  - name: ask-touch\n    command: touch\n    action: ask\n",
        )
        .replace("approval_timeout: 1s", "approval_timeout: 10m"),
    );
    let marker = w.dir().join("pending-marker");
    let mut cmd = w.shim_command(&Call::new("touch").arg(&marker));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let dog = clawrden_e2e::Watchdog::new(child.id(), clawrden_e2e::RUN_DEADLINE);
    // The waiting line on stderr says the request is pending.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("clawrden: "), "waiting line: {line:?}");
    let id = w.request_id_for(marker.to_str().unwrap());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dog.finish());
    let events = w.events_when(&id, "a cancel event", |e| e.event() == "cancel");
    let kinds: Vec<&str> = events.iter().map(|e| e.event()).collect();
    assert_eq!(kinds, ["request", "decision", "cancel"]);
    assert!(
        events.iter().all(|e| e.event() != "start"),
        "a cancelled ask started: {:?}",
        events.iter().map(|e| &e.raw).collect::<Vec<_>>()
    );
    assert!(!marker.exists(), "a cancelled ask ran the command");
}
