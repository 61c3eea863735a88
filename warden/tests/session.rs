//! In-process session tests: a warden on a temp socket with a real test executor,
//! driven over the wire protocol.

mod common;

use std::os::fd::OwnedFd;
use std::time::Duration;

use clawrden_protocol::{
    Action, ErrorKind, ExtraFd, FdKind, Kind, Message, Terminal, Termios, WinSize,
    MAX_REQUEST_PAYLOAD,
};
use common::{decision, request, Setup, TestWarden};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_call_streams_output_then_exit_and_audits_each_step() {
    let mut w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&[
        "tool", "echo", "hello", "world",
    ])))
    .await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.rule.as_deref(), Some("tool"));
    assert!(!d.uses_fds);
    assert_eq!(d.request_id.len(), 26);
    assert_eq!(
        c.recv().await,
        Some(Message::Stdout(b"hello world\n".to_vec()))
    );
    assert_eq!(c.recv().await, Some(Message::Exit(0)));
    assert_eq!(c.recv().await, None);

    let policy_sha = w.store.current().sha256().to_owned();
    w.shutdown().await;
    let events = w.events_of(&d.request_id);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["request", "decision", "start", "exit"]);
    let req = &events[0];
    assert_eq!(req["prisoner"], "agent-1");
    assert_eq!(req["uid"], uid());
    assert_eq!(req["pid"], std::process::id());
    assert_eq!(
        req["argv"],
        serde_json::json!(["tool", "echo", "hello", "world"])
    );
    assert_eq!(req["cwd"], "/work");
    assert_eq!(req["tool_path"], "/usr/local/bin/tool");
    assert_eq!(req["env_names"], serde_json::json!(["PATH"]));
    assert_eq!(req["parent_request"], Value::Null);
    let dec = &events[1];
    assert_eq!(dec["action"], "allow");
    assert_eq!(dec["rule"], "tool");
    assert_eq!(dec["executor"], "local");
    assert_eq!(dec["policy_sha256"], policy_sha.as_str());
    assert_eq!(dec["timeout_ms"], 30_000);
    assert_eq!(events[2]["pid"], 4242);
    assert_eq!(events[2]["program"], "/usr/bin/test-program");
    assert_eq!(events[3]["exit_code"], 0);
    assert!(events[3]["duration_ms"].is_u64());
    // The whole file is one chain: control start, the call, control stop.
    let all = w.audit_events();
    assert_eq!(all.first().unwrap()["control"], "start");
    assert_eq!(all.last().unwrap()["control"], "stop");
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["seq"], (i + 1) as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_frames_reach_the_command_and_stderr_stays_separate() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    let mut r = request(&["tool", "cat"]);
    r.stdio[0] = FdKind::Pipe;
    c.send(&Message::Request(r)).await;
    assert_eq!(decision(&mut c).await.action, Action::Allow);
    c.send(&Message::Stdin(b"abc".to_vec())).await;
    assert_eq!(c.recv().await, Some(Message::Stdout(b"abc".to_vec())));
    c.send(&Message::Stdin(vec![0, 0xff, b'\n'])).await;
    assert_eq!(c.recv().await, Some(Message::Stdout(vec![0, 0xff, b'\n'])));
    c.send(&Message::StdinEof).await;
    assert_eq!(c.recv().await, Some(Message::Exit(0)));

    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["tool", "fail"]))).await;
    assert_eq!(decision(&mut c).await.action, Action::Allow);
    assert_eq!(c.recv().await, Some(Message::Stderr(b"bad\n".to_vec())));
    assert_eq!(c.recv().await, Some(Message::Exit(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_rule_answers_with_its_reason_and_closes() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["rm", "-rf", "/"])))
        .await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.reason, "deleting is not allowed here");
    assert_eq!(d.rule.as_deref(), Some("no-rm"));
    assert_eq!(c.recv().await, None);
    let events = w.events_of(&d.request_id);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["event"], "decision");
    assert_eq!(events[1]["action"], "deny");
    assert_eq!(events[1]["reason"], "deleting is not allowed here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_call_gets_the_default_deny() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["python3"]))).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.rule, None);
    assert!(d.reason.contains("default"), "{}", d.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_is_pending_then_denied_when_approval_times_out() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["curl", "https://example.com"])))
        .await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Pending);
    assert_eq!(d.rule.as_deref(), Some("fetch"));
    match c.recv().await {
        Some(Message::Pending {
            approval_id,
            message,
        }) => {
            assert_eq!(approval_id, d.request_id);
            assert_eq!(
                message,
                "curl https://example.com in /work (rule fetch): waiting up to 200ms"
            );
        }
        other => panic!("expected pending, got {other:?}"),
    }
    let fin = decision(&mut c).await;
    assert_eq!(fin.action, Action::Deny);
    assert_eq!(fin.reason, "approval timed out after 200ms");
    assert_eq!(fin.request_id, d.request_id);
    assert_eq!(c.recv().await, None);
    let events = w.events_of(&d.request_id);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["request", "decision", "approval"]);
    assert_eq!(events[1]["action"], "ask");
    assert_eq!(events[2]["action"], "deny");
    assert_eq!(events[2]["reason"], "approval timed out after 200ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shim_disconnecting_during_ask_is_audited_as_cancel() {
    let w = TestWarden::start_with(Setup {
        policy: "version: 1\ndefault_executor: local\napproval_timeout: 10m\nrules:\n  - {name: fetch, command: curl, action: ask}\n",
        ..Setup::default()
    })
    .await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["curl", "x"]))).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Pending);
    assert!(matches!(c.recv().await, Some(Message::Pending { .. })));
    drop(c);
    let cancel = w.wait_for_event(&d.request_id, "cancel").await;
    assert_eq!(
        cancel["reason"],
        "shim disconnected while waiting for approval"
    );
    assert!(w
        .events_of(&d.request_id)
        .iter()
        .all(|e| e["event"] != "approval"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_version_gets_an_error_and_close() {
    let w = TestWarden::start().await;
    // A newer shim, and a shim of protocol version 1 (no descriptor kinds, no terminal
    // settings): both are told which version this warden speaks.
    for version in [99, 1] {
        let mut c = w.connect().await;
        c.send(&Message::Hello {
            magic: *b"CLWD",
            version,
        })
        .await;
        match c.recv().await {
            Some(Message::Error { kind, message }) => {
                assert_eq!(kind, ErrorKind::UnsupportedVersion);
                assert_eq!(
                    message,
                    format!("unsupported protocol version {version} (this build speaks version 2)")
                );
            }
            other => panic!("expected an error, got {other:?}"),
        }
        assert_eq!(c.recv().await, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_gets_a_protocol_error_and_close() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    let mut header = vec![Kind::Request as u8];
    header.extend_from_slice(&(MAX_REQUEST_PAYLOAD + 1).to_be_bytes());
    c.stream.write_all(&header).await.unwrap();
    match c.recv().await {
        Some(Message::Error { kind, message }) => {
            assert_eq!(kind, ErrorKind::Protocol);
            assert_eq!(
                message,
                "Request frame of 4194305 bytes exceeds the limit of 4194304 bytes"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);
    assert!(w.audit_events().iter().all(|e| e["event"] == "control"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_frame_kind_during_a_running_command_cancels_it() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["tool", "wait"]))).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Allow);
    c.stream.write_all(&[0x77, 0, 0, 0, 0]).await.unwrap();
    assert_eq!(
        c.recv().await,
        Some(Message::Error {
            kind: ErrorKind::Protocol,
            message: "unknown frame kind 0x77".into()
        })
    );
    assert_eq!(c.recv().await, None);
    let cancel = w.wait_for_event(&d.request_id, "cancel").await;
    assert_eq!(cancel["reason"], "protocol error: unknown frame kind 0x77");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_not_sent_in_time_closes_the_connection() {
    let w = TestWarden::start_with(Setup {
        request_deadline: Duration::from_millis(200),
        ..Setup::default()
    })
    .await;
    let mut c = w.handshake().await;
    assert_eq!(
        c.recv().await,
        Some(Message::Error {
            kind: ErrorKind::Protocol,
            message: "no request within 200ms of connecting".into()
        })
    );
    assert_eq!(c.recv().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_audit_denies_with_the_cause() {
    let w = TestWarden::start_with(Setup {
        prepare: |state| {
            // audit.jsonl is a directory: every open fails.
            std::fs::create_dir_all(state.join("audit").join("audit.jsonl")).unwrap();
        },
        ..Setup::default()
    })
    .await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["tool", "echo", "x"])))
        .await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Deny);
    assert!(
        d.reason.starts_with("audit log unavailable: cannot open ")
            && d.reason.contains("audit.jsonl"),
        "{}",
        d.reason
    );
    assert_eq!(c.recv().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_for_an_executor_not_running_here_is_denied() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["ghost-tool"]))).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Deny);
    assert_eq!(
        d.reason,
        "rule ghostly wants executor ghost, which this warden does not run"
    );
    assert_eq!(w.events_of(&d.request_id)[1]["action"], "deny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_timeout_sends_timeout_error_and_audits_violation() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["tool", "hang"]))).await;
    let d = decision(&mut c).await;
    assert_eq!(d.rule.as_deref(), Some("slow"));
    assert_eq!(
        c.recv().await,
        Some(Message::Error {
            kind: ErrorKind::Timeout,
            message: "timed out after 100ms; process tree killed".into()
        })
    );
    let ev = w.events_of(&d.request_id);
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "timeout_violation");
    assert_eq!(last["timeout_ms"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shim_disconnect_cancels_the_running_command() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["tool", "wait"]))).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Allow);
    drop(c);
    let cancel = w.wait_for_event(&d.request_id, "cancel").await;
    assert_eq!(cancel["reason"], "shim disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_program_reports_not_found() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["tool", "nope"]))).await;
    assert_eq!(decision(&mut c).await.action, Action::Allow);
    assert_eq!(
        c.recv().await,
        Some(Message::Error {
            kind: ErrorKind::NotFound,
            message: "test-program: no such program".into()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_running_commands_and_removes_the_socket() {
    let mut w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["tool", "wait"]))).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Allow);
    w.shutdown().await;
    assert_eq!(
        c.recv().await,
        Some(Message::Error {
            kind: ErrorKind::Cancelled,
            message: "cancelled: warden shutting down".into()
        })
    );
    assert!(!w.socket.exists());
    let ev = w.events_of(&d.request_id);
    assert_eq!(ev.last().unwrap()["event"], "cancel");
    assert_eq!(ev.last().unwrap()["reason"], "warden shutting down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_env_is_scrubbed_and_values_stay_out_of_the_audit() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    let mut r = request(&["tool", "env"]);
    r.env
        .push((b"OPENAI_API_KEY".to_vec(), b"sk-hunter2".to_vec()));
    r.env.push((b"GIT_AUTHOR_NAME".to_vec(), b"Agent".to_vec()));
    r.env.push((b"LC_ALL".to_vec(), b"C".to_vec()));
    // A caller's own parent-link secret never reaches the command: the warden sets it.
    r.env
        .push((b"CLAWRDEN_PARENT_TOKEN".to_vec(), b"forged".to_vec()));
    c.send(&Message::Request(r)).await;
    let d = decision(&mut c).await;
    // Warden-side: only the harmless names and the rule's env.pass (GIT_*) pass from the
    // caller (not its PATH); the socket it called on and the request id are set by the
    // warden; the executor adds PATH and HOME for the run-as identity.
    let expected = format!(
        "GIT_AUTHOR_NAME=Agent\nLC_ALL=C\nCLAWRDEN_SOCKET={}\nCLAWRDEN_PARENT_REQUEST={}\nCLAWRDEN_PARENT_TOKEN=",
        w.socket.display(),
        d.request_id
    );
    let Some(Message::Stdout(out)) = c.recv().await else {
        panic!("no output from env");
    };
    let out = String::from_utf8(out).unwrap();
    // The parent-link secret: 32 random bytes in hex, in the command's environment only.
    let token = out
        .strip_prefix(&expected)
        .and_then(|t| t.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token:?}"
    );
    assert_eq!(c.recv().await, Some(Message::Exit(0)));
    let text = std::fs::read_to_string(w.audit_path()).unwrap();
    assert!(!text.contains("hunter2"));
    assert!(
        !text.contains(token),
        "the parent-link secret reached the audit"
    );
    assert_eq!(
        w.events_of(&d.request_id)[0]["env_names"],
        serde_json::json!([
            "PATH",
            "OPENAI_API_KEY",
            "GIT_AUTHOR_NAME",
            "LC_ALL",
            "CLAWRDEN_PARENT_TOKEN"
        ])
    );
}

fn three_fds() -> Vec<OwnedFd> {
    (0..3)
        .map(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attached_fds_are_used_by_the_local_executor() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    let mut r = request(&["tool", "fds"]);
    r.stdio = [FdKind::Pipe; 3];
    r.fds_attached = true;
    c.send_with_fds(&Message::Request(r), &three_fds()).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Allow);
    assert!(d.uses_fds);
    // The test executor still reports through frames so the test can see it.
    assert_eq!(
        c.recv().await,
        Some(Message::Stdout(b"fds=0,1,2\n".to_vec()))
    );
    assert_eq!(c.recv().await, Some(Message::Exit(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_only_and_unflagged_fds_are_not_used() {
    let w = TestWarden::start_with(Setup {
        stream_only: true,
        ..Setup::default()
    })
    .await;
    let mut c = w.handshake().await;
    let mut r = request(&["tool", "fds"]);
    r.stdio = [FdKind::Pipe; 3];
    r.fds_attached = true;
    c.send_with_fds(&Message::Request(r), &three_fds()).await;
    let d = decision(&mut c).await;
    assert!(!d.uses_fds);
    assert_eq!(
        c.recv().await,
        Some(Message::Stdout(b"fds=none\n".to_vec()))
    );

    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send_with_fds(&Message::Request(request(&["tool", "fds"])), &three_fds())
        .await;
    assert!(!decision(&mut c).await.uses_fds);
    assert_eq!(
        c.recv().await,
        Some(Message::Stdout(b"fds=none\n".to_vec()))
    );
}

const DENY_TOOL: &str = "version: 1\ndefault_executor: local\nrules:\n  - {name: tool, command: tool, action: deny, reason: old policy}\n";
const ALLOW_TOOL: &str =
    "version: 1\ndefault_executor: local\nrules:\n  - {name: tool, command: tool, action: allow}\n";

async fn tool_decision(w: &TestWarden) -> clawrden_protocol::Decision {
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["tool", "echo", "x"])))
        .await;
    decision(&mut c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_replaced_by_rename_swaps_decisions() {
    let w = TestWarden::start_with(Setup {
        policy: DENY_TOOL,
        ..Setup::default()
    })
    .await;
    assert_eq!(tool_decision(&w).await.reason, "old policy");
    let mut reloads = w.store.subscribe();
    reloads.borrow_and_update();
    let tmp = w.policy_path.with_file_name(".policy.yaml.swp");
    std::fs::write(&tmp, ALLOW_TOOL).unwrap();
    std::fs::rename(&tmp, &w.policy_path).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reloads.changed())
        .await
        .expect("reload within 10 s")
        .unwrap();
    let d = tool_decision(&w).await;
    assert_eq!(d.action, Action::Allow);
    let new_sha = w.store.current().sha256().to_owned();
    assert_eq!(
        w.events_of(&d.request_id)[1]["policy_sha256"],
        new_sha.as_str()
    );
    assert!(w
        .audit_events()
        .iter()
        .any(|e| e["control"] == "policy_reload" && e["policy_sha256"] == new_sha.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reload_keeps_the_old_policy_and_reports_the_position() {
    let w = TestWarden::start_with(Setup {
        policy: DENY_TOOL,
        ..Setup::default()
    })
    .await;
    let mut reloads = w.store.subscribe();
    reloads.borrow_and_update();
    let tmp = w.policy_path.with_file_name(".policy.yaml.new");
    std::fs::write(
        &tmp,
        "version: 1\nrules:\n  - {name: tool, command: tool, action: maybe}\n",
    )
    .unwrap();
    std::fs::rename(&tmp, &w.policy_path).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reloads.changed())
        .await
        .expect("reload attempt within 10 s")
        .unwrap();
    let status = w.store.status();
    assert_eq!(status.reloads_failed, 1);
    let (_, trigger, result) = status.last_reload.unwrap();
    assert_eq!(trigger, "file change");
    match result {
        clawrden_warden::policy_store::ReloadResult::Failed { error } => {
            let prefix = format!("{}:3:", w.policy_path.display());
            assert!(error.starts_with(&prefix), "{error}");
        }
        other => panic!("expected a failed reload, got {other:?}"),
    }
    let d = tool_decision(&w).await;
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.reason, "old policy");
}

#[tokio::test]
async fn non_socket_at_the_socket_path_is_refused() {
    use clawrden_warden::listener::{bind, BindError};
    let dir = common::TempDir::new();
    let path = dir.path().join("w.sock");
    std::fs::write(&path, "precious").unwrap();
    let err = bind("a", &path).unwrap_err();
    assert!(matches!(err, BindError::NotASocket { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "refusing to remove {}: it exists and is not a socket (a regular file); remove it or choose another socket path",
            path.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[tokio::test]
async fn stale_socket_is_replaced_and_made_world_connectable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::TempDir::new();
    let path = dir.path().join("sub").join("w.sock");
    let first = clawrden_warden::listener::bind("a", &path).unwrap();
    drop(first);
    let second = clawrden_warden::listener::bind("a", &path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode & 0o755, 0o755);
    clawrden_warden::listener::remove_socket(&path, second.identity());
    assert!(!path.exists());
}

fn cooked() -> Termios {
    Termios {
        iflag: 0x500,
        oflag: 0x5,
        cflag: 0xbf,
        lflag: 0x8a3b,
        cc: vec![3, 28, 127, 21, 4, 0, 1, 0],
    }
}

fn on_terminal() -> Terminal {
    Terminal {
        termios: cooked(),
        size: WinSize {
            rows: 24,
            cols: 80,
            xpixel: 0,
            ypixel: 0,
        },
        term: b"xterm".to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_above_2_reach_the_local_executor_at_their_numbers_and_are_audited() {
    let mut w = TestWarden::start().await;
    let mut c = w.handshake().await;
    let mut r = request(&["tool", "fds"]);
    r.stdio = [FdKind::Pipe, FdKind::Terminal, FdKind::File];
    r.terminal = Some(on_terminal());
    r.extra_fds = vec![
        ExtraFd {
            fd: 3,
            kind: FdKind::File,
        },
        ExtraFd {
            fd: 63,
            kind: FdKind::Pipe,
        },
    ];
    r.fds_attached = true;
    let four: Vec<OwnedFd> = (0..4)
        .map(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()))
        .collect();
    c.send_with_fds(&Message::Request(r), &four).await;
    let d = decision(&mut c).await;
    assert!(d.uses_fds);
    assert_eq!(
        c.recv().await,
        Some(Message::Stdout(b"fds=0,2,3,63\n".to_vec()))
    );
    assert_eq!(c.recv().await, Some(Message::Exit(0)));
    w.shutdown().await;
    let events = w.events_of(&d.request_id);
    assert_eq!(
        events[0]["descriptors"],
        serde_json::json!({
            "stdio": ["pipe", "terminal", "file"],
            "extra": [{ "fd": 3, "kind": "file" }, { "fd": 63, "kind": "pipe" }],
        })
    );
    assert_eq!(events[2]["event"], "start");
    assert_eq!(
        events[2]["descriptors"],
        serde_json::json!({ "passed": [0, 2, 3, 63], "terminal": true })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_other_than_the_request_names_are_closed_and_the_call_streams() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    let mut r = request(&["tool", "fds"]);
    r.stdio = [FdKind::Pipe; 3];
    r.extra_fds = vec![ExtraFd {
        fd: 5,
        kind: FdKind::Pipe,
    }];
    r.fds_attached = true;
    // Four named, three sent.
    c.send_with_fds(&Message::Request(r), &three_fds()).await;
    let d = decision(&mut c).await;
    assert!(!d.uses_fds);
    assert_eq!(
        c.recv().await,
        Some(Message::Stdout(b"fds=none\n".to_vec()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_naming_a_descriptor_is_denied_where_descriptors_cannot_pass() {
    let mut w = TestWarden::start().await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&[
        "mirrored-tool",
        "echo",
        "/dev/fd/63",
    ])))
    .await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Deny);
    assert_eq!(
        d.reason,
        "argument /dev/fd/63 names descriptor 63 of the caller, which the mirror executor \
         cannot pass to the command (descriptors reach commands only through the local \
         executor); write the data to a file and pass its path instead"
    );
    assert_eq!(d.rule.as_deref(), Some("mirrored"));
    assert_eq!(c.recv().await, None);
    // Without such an argument the same rule runs; through the local executor a
    // descriptor reference is fine.
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&[
        "mirrored-tool",
        "echo",
        "/dev/fd/1",
    ])))
    .await;
    assert_eq!(decision(&mut c).await.action, Action::Allow);
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&["tool", "echo", "/dev/fd/63"])))
        .await;
    assert_eq!(decision(&mut c).await.action, Action::Allow);
    w.shutdown().await;
    let events = w.events_of(&d.request_id);
    assert_eq!(events[1]["action"], "deny");
    assert_eq!(events[1]["reason"], d.reason.as_str());

    // --stream-only: the local executor cannot pass them either.
    let w = TestWarden::start_with(Setup {
        stream_only: true,
        ..Setup::default()
    })
    .await;
    let mut c = w.handshake().await;
    c.send(&Message::Request(request(&[
        "tool",
        "echo",
        "--in=/proc/self/fd/4",
    ])))
    .await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Deny);
    assert!(
        d.reason.starts_with(
            "argument --in=/proc/self/fd/4 names descriptor 4 of the caller, which the local \
             executor with --stream-only cannot pass"
        ),
        "{}",
        d.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_output_and_settings_reach_the_shim_in_order() {
    let w = TestWarden::start().await;
    let mut c = w.handshake().await;
    let mut r = request(&["tool", "tty"]);
    r.stdio = [FdKind::Terminal; 3];
    r.terminal = Some(on_terminal());
    c.send(&Message::Request(r)).await;
    assert_eq!(decision(&mut c).await.action, Action::Allow);
    assert_eq!(c.recv().await, Some(Message::TtyOut(b"a\r\n".to_vec())));
    assert_eq!(
        c.recv().await,
        Some(Message::Termios(Termios {
            iflag: 1,
            oflag: 2,
            cflag: 3,
            lflag: 0,
            cc: vec![3, 28],
        }))
    );
    assert_eq!(c.recv().await, Some(Message::TtyOut(b"b".to_vec())));
    assert_eq!(c.recv().await, Some(Message::Exit(0)));
}
