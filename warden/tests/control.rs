//! The control plane end to end in-process: a warden on a temp socket with the test
//! executor, driven over the wire protocol while people act through `ControlPlane`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawrden_policy::Policy;
use clawrden_protocol::{Action, ErrorKind, Message};
use clawrden_warden::auth::{Identity, Scope};
use clawrden_warden::cli::{ExecutorName, LogFormat};
use clawrden_warden::config::{PrisonerSocket, WardenConfig};
use clawrden_warden::control::{
    BoxFuture, ControlError, ControlPlane, EventEnvelope, PrisonerAction, PrisonerRuntime,
};
use clawrden_warden::exec_registry::ExecutorRegistry;
use clawrden_warden::server::Warden;
use clawrden_warden::session::SessionLimits;
use clawrden_warden::store::{NewGrant, NewRequest, RequestState, Store, Timestamp};
use common::{decision, request, Client, ProgramExecutor, TempDir};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

const POLICY: &str = "\
version: 1
default_action: deny
default_executor: local
approval_timeout: 10m
rules:
  - {name: no-rm, command: rm, action: deny, reason: deleting is not allowed here}
  - {name: fetch, command: curl, action: ask}
  - {name: tool, command: tool, action: allow}
";

struct Harness {
    root: PathBuf,
    socket: PathBuf,
    control: Arc<ControlPlane>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Harness {
    async fn start(root: &Path, policy: &str) -> Harness {
        let policy_path = root.join("policy.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        let socket = root.join("run").join("w.sock");
        let config = WardenConfig {
            policy: policy_path.clone(),
            state_dir: root.join("state"),
            executors: vec![ExecutorName::Local],
            exec_helper: PathBuf::from("/bin/true"),
            log_format: LogFormat::Pretty,
            stream_only: false,
            prisoners: vec![PrisonerSocket {
                name: "agent-1".into(),
                socket: socket.clone(),
                container: None,
            }],
            docker_host: None,
            listen: None,
            metrics_token_file: None,
            trust_proxy: false,
            run_as: None,
            allow_run_as_warden: false,
            command_path: clawrden_warden::config::DEFAULT_COMMAND_PATH.to_owned(),
            caps: Default::default(),
            audit_syslog: None,
        };
        let mut executors = ExecutorRegistry::new();
        executors.insert("local", Arc::new(ProgramExecutor));
        let mut warden =
            Warden::new(&config, Policy::load(&policy_path).unwrap(), executors).unwrap();
        warden.set_limits(SessionLimits {
            request_deadline: Duration::from_secs(5),
            grace: Duration::from_millis(100),
        });
        let control = warden.control();
        let bound = warden.bind().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        Harness {
            root: root.to_owned(),
            socket,
            control,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }

    async fn call(&self, argv: &[&str]) -> Client {
        self.call_in(argv, "/work").await
    }

    async fn call_in(&self, argv: &[&str], cwd: &str) -> Client {
        let mut c = Client {
            stream: tokio::net::UnixStream::connect(&self.socket).await.unwrap(),
        };
        c.send(&Message::hello()).await;
        assert_eq!(c.recv().await, Some(Message::hello()));
        let mut r = request(argv);
        r.cwd = cwd.as_bytes().to_vec();
        c.send(&Message::Request(r)).await;
        c
    }

    /// Sends an `ask` call and returns the client and request id once it is queued.
    async fn pending(&self, argv: &[&str]) -> (Client, String) {
        self.pending_in(argv, "/work").await
    }

    async fn pending_in(&self, argv: &[&str], cwd: &str) -> (Client, String) {
        let mut c = self.call_in(argv, cwd).await;
        let d = decision(&mut c).await;
        assert_eq!(d.action, Action::Pending, "{d:?}");
        match c.recv().await {
            Some(Message::Pending { approval_id, .. }) => assert_eq!(approval_id, d.request_id),
            other => panic!("expected pending, got {other:?}"),
        }
        (c, d.request_id)
    }

    fn audit(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.root.join("state/audit/audit.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn audit_of(&self, id: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["request_id"] == id)
            .collect()
    }
}

fn who(name: &str, scope: Scope) -> Identity {
    Identity {
        token_id: 1,
        name: name.to_owned(),
        scope,
    }
}

fn alice() -> Identity {
    who("alice", Scope::Approve)
}

fn admin() -> Identity {
    who("root-admin", Scope::Admin)
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits for the event of `kind` about request `id` on a subscription.
async fn next_event(rx: &mut broadcast::Receiver<EventEnvelope>, kind: &str, id: &str) -> Value {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("event in time")
            .expect("event stream open");
        if ev.kind == kind && ev.data["id"] == id {
            return ev.data;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_runs_the_command_and_records_the_approver() {
    let dir = TempDir::new();
    let mut h = Harness::start(dir.path(), POLICY).await;
    let (mut c, id) = h.pending(&["curl", "echo", "hi"]).await;
    assert_eq!(h.control.pending_ids(), vec![id.clone()]);
    let queued = h.control.list_requests(Some("pending"), 50).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id, id);
    assert_eq!(queued[0].approval.as_ref().unwrap().state, "pending");

    let view = h
        .control
        .approve(&id, &alice(), None, Some("looks fine".into()))
        .await
        .unwrap();
    let approval = view.approval.unwrap();
    assert_eq!(approval.state, "approved");
    assert_eq!(approval.approver.as_deref(), Some("alice"));
    assert_eq!(approval.note.as_deref(), Some("looks fine"));

    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.reason, "approved by alice");
    assert_eq!(c.recv().await, Some(Message::Stdout(b"hi\n".to_vec())));
    assert_eq!(c.recv().await, Some(Message::Exit(0)));
    let done = h.control.get_request(&id).await.unwrap();
    assert_eq!(done.state, "done");
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.action.as_deref(), Some("ask"));
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert!(h.control.pending_ids().is_empty());

    h.shutdown().await;
    let events = h.audit_of(&id);
    assert_eq!(
        kinds(&events),
        ["request", "decision", "approval", "start", "exit"]
    );
    assert_eq!(events[1]["action"], "ask");
    assert_eq!(events[2]["action"], "allow");
    assert_eq!(events[2]["approver"], "alice");
    assert_eq!(events[2]["note"], "looks fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_sends_the_approvers_name_and_reason() {
    let dir = TempDir::new();
    let h = Harness::start(dir.path(), POLICY).await;
    let (mut c, id) = h.pending(&["curl", "echo", "hi"]).await;
    let view = h
        .control
        .deny(&id, &alice(), Some("not today".into()))
        .await
        .unwrap();
    assert_eq!(view.state, "denied");
    let approval = view.approval.unwrap();
    assert_eq!(approval.state, "denied");
    assert_eq!(approval.reason.as_deref(), Some("not today"));
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.reason, "denied by alice: not today");
    assert_eq!(c.recv().await, None);

    let (mut c, id2) = h.pending(&["curl", "echo", "again"]).await;
    h.control.deny(&id2, &alice(), None).await.unwrap();
    assert_eq!(decision(&mut c).await.reason, "denied by alice");

    let ev = h.audit_of(&id);
    assert_eq!(kinds(&ev), ["request", "decision", "approval"]);
    assert_eq!(ev[2]["action"], "deny");
    assert_eq!(ev[2]["approver"], "alice");
    assert_eq!(ev[2]["reason"], "denied by alice: not today");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deciding_twice_is_a_conflict_and_unknown_ids_are_not_found() {
    let dir = TempDir::new();
    let h = Harness::start(dir.path(), POLICY).await;
    let (mut c, id) = h.pending(&["curl", "echo", "hi"]).await;
    h.control.deny(&id, &alice(), None).await.unwrap();
    let _ = decision(&mut c).await;
    let e = h
        .control
        .approve(&id, &alice(), None, None)
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (409, "already_decided"));
    let e = h.control.deny(&id, &alice(), None).await.unwrap_err();
    assert_eq!((e.status(), e.code()), (409, "already_decided"));

    let e = h
        .control
        .approve("01JUNKNOWN", &alice(), None, None)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ControlError::NotFound {
            what: "request",
            id: "01JUNKNOWN".into()
        }
    );
    assert_eq!(e.to_string(), "no request 01JUNKNOWN");
    assert_eq!(
        h.control.get_request("nope").await.unwrap_err().status(),
        404
    );
    assert_eq!(
        h.control
            .revoke_grant("77", &alice())
            .await
            .unwrap_err()
            .status(),
        404
    );
    // A read token cannot approve, even if a handler forgot to check.
    let (_c, id) = h.pending(&["curl", "x"]).await;
    let e = h
        .control
        .approve(&id, &who("viewer", Scope::Read), None, None)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ControlError::Forbidden {
            need: Scope::Approve
        }
    );
    let e = h
        .control
        .approve(&id, &alice(), Some(Duration::from_secs(25 * 3600)), None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_timeout_expires_the_approval_and_denies() {
    let dir = TempDir::new();
    let h = Harness::start(
        dir.path(),
        &POLICY.replace("approval_timeout: 10m", "approval_timeout: 200ms"),
    )
    .await;
    let (mut c, id) = h.pending(&["curl", "echo", "hi"]).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.reason, "approval timed out after 200ms");
    let view = h.control.get_request(&id).await.unwrap();
    assert_eq!(view.state, "denied");
    assert_eq!(view.approval.unwrap().state, "expired");
    let e = h
        .control
        .approve(&id, &alice(), None, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "already_decided");
    let ev = h.audit_of(&id);
    assert_eq!(kinds(&ev), ["request", "decision", "approval"]);
    assert_eq!(ev[2]["reason"], "approval timed out after 200ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_while_pending_cancels_and_leaves_the_queue() {
    let dir = TempDir::new();
    let h = Harness::start(dir.path(), POLICY).await;
    let (_replay, mut events, _) = h.control.subscribe(None);
    let (c, id) = h.pending(&["curl", "echo", "hi"]).await;
    drop(c);
    let fin = next_event(&mut events, "request.finished", &id).await;
    assert_eq!(fin["state"], "cancelled");
    let view = h.control.get_request(&id).await.unwrap();
    assert_eq!(view.state, "cancelled");
    assert_eq!(view.approval.unwrap().state, "cancelled");
    assert!(h.control.pending_ids().is_empty());
    assert!(h
        .control
        .list_requests(Some("pending"), 50)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(h.control.status().await.queue.pending, 0);
    let e = h
        .control
        .approve(&id, &alice(), None, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "already_decided");
    let ev = h.audit_of(&id);
    assert_eq!(kinds(&ev), ["request", "decision", "cancel"]);
    assert_eq!(
        ev[2]["reason"],
        "shim disconnected while waiting for approval"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_grant_allows_only_the_same_call_until_it_expires() {
    let dir = TempDir::new();
    let h = Harness::start(dir.path(), POLICY).await;
    let (mut c, id) = h.pending(&["curl", "echo", "hi"]).await;
    h.control
        .approve(&id, &alice(), Some(Duration::from_secs(3600)), None)
        .await
        .unwrap();
    assert_eq!(decision(&mut c).await.action, Action::Allow);
    let grants = h.control.grants().await.unwrap();
    assert_eq!(grants.len(), 1);
    let gid = grants[0].id;
    assert_eq!(grants[0].created_by, "alice");
    assert_eq!(
        grants[0].argv,
        [Value::from("curl"), "echo".into(), "hi".into()]
    );

    // Same prisoner, argv and cwd: allowed by the grant, no person asked.
    let mut c = h.call(&["curl", "echo", "hi"]).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.reason, format!("grant {gid}"));
    assert_eq!(c.recv().await, Some(Message::Stdout(b"hi\n".to_vec())));
    assert_eq!(c.recv().await, Some(Message::Exit(0)));
    let ev = h.audit_of(&d.request_id);
    assert_eq!(
        kinds(&ev),
        ["request", "decision", "approval", "start", "exit"]
    );
    assert_eq!(ev[2]["approver"], format!("grant:{gid}"));
    assert_eq!(ev[2]["action"], "allow");
    assert_eq!(h.control.grants().await.unwrap()[0].uses, 1);

    // Another argv or another cwd asks again.
    let (c1, _) = h.pending(&["curl", "echo", "bye"]).await;
    let (c2, _) = h.pending_in(&["curl", "echo", "hi"], "/tmp").await;
    drop((c1, c2));

    // A revoked grant no longer applies.
    h.control
        .revoke_grant(&gid.to_string(), &alice())
        .await
        .unwrap();
    let (c3, _) = h.pending(&["curl", "echo", "hi"]).await;
    drop(c3);

    // An expired grant does not apply either.
    let store = h.control.store().clone();
    let past = Timestamp(Timestamp::now().0 - 10_000);
    store
        .create_grant(
            &NewGrant {
                prisoner: "agent-1".into(),
                uid: my_uid(),
                executor: "local".into(),
                argv: vec![b"curl".to_vec(), b"echo".to_vec(), b"old".to_vec()],
                cwd: b"/work".to_vec(),
                created_by: "alice".into(),
                ttl: Duration::from_secs(1),
            },
            past,
        )
        .unwrap();
    let (_c4, _) = h.pending(&["curl", "echo", "old"]).await;
}

/// The uid this test process (the caller of every harness call) runs as.
fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_answers_only_the_uid_and_executor_it_was_made_for() {
    let dir = TempDir::new();
    let h = Harness::start(dir.path(), POLICY).await;
    let (mut c, id) = h.pending(&["curl", "echo", "mine"]).await;
    h.control
        .approve(&id, &alice(), Some(Duration::from_secs(3600)), None)
        .await
        .unwrap();
    assert_eq!(decision(&mut c).await.action, Action::Allow);
    let grants = h.control.grants().await.unwrap();
    assert_eq!(
        (grants[0].uid, grants[0].executor.as_deref()),
        (Some(my_uid()), Some("local"))
    );

    // Grants for the same prisoner, argv and cwd, but another uid or another executor.
    let store = h.control.store().clone();
    let other_uid = if my_uid() == 1000 { 1001 } else { 1000 };
    for (uid, executor, word) in [
        (other_uid, "local", "other-uid"),
        (my_uid(), "mirror", "other-executor"),
    ] {
        store
            .create_grant(
                &NewGrant {
                    prisoner: "agent-1".into(),
                    uid,
                    executor: executor.into(),
                    argv: vec![b"curl".to_vec(), b"echo".to_vec(), word.as_bytes().to_vec()],
                    cwd: b"/work".to_vec(),
                    created_by: "alice".into(),
                    ttl: Duration::from_secs(3600),
                },
                Timestamp::now(),
            )
            .unwrap();
        let (c, _) = h.pending(&["curl", "echo", word]).await;
        drop(c);
    }
    // The grant made for this caller and executor still answers.
    let mut c = h.call(&["curl", "echo", "mine"]).await;
    assert_eq!(decision(&mut c).await.action, Action::Allow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockdown_denies_new_calls_and_survives_a_restart() {
    let dir = TempDir::new();
    let mut h = Harness::start(dir.path(), POLICY).await;
    let view = h
        .control
        .set_lockdown(true, false, &admin(), Some("incident".into()))
        .await
        .unwrap();
    assert!(view.on);
    assert_eq!(view.by.as_deref(), Some("root-admin"));
    let e = h
        .control
        .set_lockdown(false, false, &alice(), None)
        .await
        .unwrap_err();
    assert_eq!(e, ControlError::Forbidden { need: Scope::Admin });
    let mut c = h.call(&["tool", "echo", "x"]).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Deny);
    assert_eq!(d.reason, "lockdown");
    assert_eq!(d.rule, None);
    h.shutdown().await;
    let control_events: Vec<Value> = h
        .audit()
        .into_iter()
        .filter(|e| e["control"] == "lockdown_on")
        .collect();
    assert_eq!(control_events.len(), 1);
    assert_eq!(control_events[0]["by"], "root-admin");
    assert_eq!(control_events[0]["reason"], "incident");

    let mut h = Harness::start(dir.path(), POLICY).await;
    assert!(h.control.lockdown().on);
    let mut c = h.call(&["tool", "echo", "x"]).await;
    assert_eq!(decision(&mut c).await.reason, "lockdown");
    h.control
        .set_lockdown(false, false, &admin(), None)
        .await
        .unwrap();
    let mut c = h.call(&["tool", "echo", "x"]).await;
    assert_eq!(decision(&mut c).await.action, Action::Allow);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockdown_with_kill_running_cancels_running_commands() {
    let dir = TempDir::new();
    let h = Harness::start(dir.path(), POLICY).await;
    let (_, mut events, _) = h.control.subscribe(None);
    let mut c = h.call(&["tool", "wait"]).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Allow);
    next_event(&mut events, "request.started", &d.request_id).await;
    assert_eq!(h.control.running_ids(), vec![d.request_id.clone()]);
    h.control
        .set_lockdown(true, true, &admin(), Some("stop everything".into()))
        .await
        .unwrap();
    match c.recv().await {
        Some(Message::Error { kind, message }) => {
            assert_eq!(kind, ErrorKind::Cancelled);
            assert_eq!(message, "cancelled: lockdown");
        }
        other => panic!("expected a cancel error, got {other:?}"),
    }
    let fin = next_event(&mut events, "request.finished", &d.request_id).await;
    assert_eq!(fin["state"], "cancelled");
    assert_eq!(
        h.control.get_request(&d.request_id).await.unwrap().state,
        "cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_left_by_a_crash_are_abandoned_and_never_run() {
    let dir = TempDir::new();
    let state = dir.path().join("state");
    {
        let store = Store::open(&state).unwrap();
        for (id, st) in [
            ("01PENDING", RequestState::Pending),
            ("01RUNNING", RequestState::Running),
        ] {
            store
                .insert_request(&NewRequest {
                    id: id.into(),
                    prisoner: "agent-1".into(),
                    uid: 1000,
                    gid: 1000,
                    pid: 7,
                    argv: vec![b"curl".to_vec(), b"echo".to_vec()],
                    cwd: b"/work".to_vec(),
                    env_names: vec![],
                    rule: Some("fetch".into()),
                    action: None,
                    reason: None,
                    executor: Some("local".into()),
                    state: st,
                    created_at: Timestamp::now(),
                    decided_at: None,
                    parent_request: None,
                    unverified_parent: None,
                    policy_sha256: None,
                })
                .unwrap();
        }
    }
    let mut h = Harness::start(dir.path(), POLICY).await;
    assert_eq!(h.control.abandoned_at_start().requests, 2);
    for id in ["01PENDING", "01RUNNING"] {
        assert_eq!(h.control.get_request(id).await.unwrap().state, "abandoned");
    }
    let e = h
        .control
        .approve("01PENDING", &alice(), None, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "already_decided");
    assert!(h.control.running_ids().is_empty());
    h.shutdown().await;
    let abandoned: Vec<Value> = h
        .audit()
        .into_iter()
        .filter(|e| e["control"] == "abandoned")
        .collect();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0]["requests"], 2);
    assert!(h.audit().iter().all(|e| e["event"] != "start"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_come_in_order_and_replay_from_last_event_id() {
    let dir = TempDir::new();
    let h = Harness::start(dir.path(), POLICY).await;
    let (replay, mut live, reset) = h.control.subscribe(None);
    assert!(replay.is_empty() && !reset);
    let mut c = h.call(&["tool", "echo", "a"]).await;
    let allowed = decision(&mut c).await.request_id;
    assert_eq!(c.recv().await, Some(Message::Stdout(b"a\n".to_vec())));
    assert_eq!(c.recv().await, Some(Message::Exit(0)));
    let mut c = h.call(&["rm", "-rf", "/"]).await;
    let denied = decision(&mut c).await.request_id;
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(live.recv().await.unwrap());
    }
    let summary: Vec<(String, Value)> = got
        .iter()
        .map(|e| (e.kind.clone(), e.data["id"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("request.decided".to_owned(), Value::from(allowed.as_str())),
            ("request.started".to_owned(), allowed.as_str().into()),
            ("request.finished".to_owned(), allowed.as_str().into()),
            ("request.decided".to_owned(), denied.as_str().into()),
        ]
    );
    assert_eq!(got[0].data["by"], "policy");
    assert_eq!(got[2].data["state"], "done");
    assert_eq!(got[2].data["exit_code"], 0);
    assert_eq!(got[3].data["reason"], "deleting is not allowed here");
    for w in got.windows(2) {
        assert_eq!(w[1].id, w[0].id + 1);
    }
    // Last-Event-ID: everything after it, nothing before.
    let (replay, _, reset) = h.control.subscribe(Some(got[1].id));
    assert!(!reset);
    assert_eq!(replay, got[2..].to_vec());
    // An id this run never handed out (another run's): reset.
    let (_, _, reset) = h.control.subscribe(Some(got[3].id + 1000));
    assert!(reset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload_exactly() {
    let dir = TempDir::new();
    let h = Harness::start(dir.path(), POLICY).await;
    let mut c = h.call(&["tool", "echo", "a"]).await;
    assert_eq!(decision(&mut c).await.action, Action::Allow);
    assert_eq!(c.recv().await, Some(Message::Stdout(b"a\n".to_vec())));
    assert_eq!(c.recv().await, Some(Message::Exit(0)));
    let mut c = h.call(&["rm", "x"]).await;
    assert_eq!(decision(&mut c).await.action, Action::Deny);
    let (mut c, id) = h.pending(&["curl", "echo", "b"]).await;
    let text = h.control.metrics_text();
    assert!(text.lines().any(|l| l == "clawrden_queue_size 1"), "{text}");
    h.control.approve(&id, &alice(), None, None).await.unwrap();
    assert_eq!(decision(&mut c).await.action, Action::Allow);
    assert_eq!(c.recv().await, Some(Message::Stdout(b"b\n".to_vec())));
    assert_eq!(c.recv().await, Some(Message::Exit(0)));

    let text = h.control.metrics_text();
    for line in [
        r#"clawrden_requests_total{action="allow",command="tool",prisoner="agent-1"} 1"#,
        r#"clawrden_requests_total{action="ask",command="curl",prisoner="agent-1"} 1"#,
        r#"clawrden_requests_total{action="deny",command="rm",prisoner="agent-1"} 1"#,
        "clawrden_queue_size 0",
        "clawrden_execution_duration_seconds_count 2",
        "clawrden_decision_duration_seconds_count 3",
        "clawrden_approval_wait_seconds_count 1",
        "clawrden_timeouts_total 0",
        r#"clawrden_errors_total{kind="audit"} 0"#,
        r#"clawrden_errors_total{kind="store"} 0"#,
        r#"clawrden_policy_reloads_total{result="ok"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    let series = text
        .lines()
        .filter(|l| l.starts_with("clawrden_requests_total{"))
        .count();
    assert_eq!(series, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reloads_are_counted_and_emitted() {
    let dir = TempDir::new();
    let h = Harness::start(dir.path(), POLICY).await;
    let (_, mut live, _) = h.control.subscribe(None);
    let policy_path = h.root.join("policy.yaml");
    std::fs::write(&policy_path, "version: 1\nrules: [").unwrap();
    let ev = loop {
        let e = live.recv().await.unwrap();
        if e.kind == "policy.reloaded" && e.data["ok"] == false {
            break e;
        }
    };
    assert!(ev.data["error"].as_str().unwrap().contains("policy.yaml:"));
    let text = h.control.metrics_text();
    assert!(
        text.lines()
            .any(|l| l == r#"clawrden_policy_reloads_total{result="error"} 1"#),
        "{text}"
    );
    assert!(!h.control.policy_view().last_reload.unwrap().ok);
}

#[derive(Default)]
struct FakeRuntime {
    calls: Mutex<Vec<String>>,
}

impl PrisonerRuntime for FakeRuntime {
    fn kill(&self, container: &str) -> BoxFuture<'_, Result<(), String>> {
        self.calls.lock().unwrap().push(format!("kill {container}"));
        Box::pin(async { Ok(()) })
    }
    fn pause(&self, container: &str) -> BoxFuture<'_, Result<(), String>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("pause {container}"));
        Box::pin(async { Ok(()) })
    }
    fn resume(&self, container: &str) -> BoxFuture<'_, Result<(), String>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("resume {container}"));
        Box::pin(async { Ok(()) })
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_prisoner_calls_are_denied_and_kill_cancels_pending() {
    let dir = TempDir::new();
    let h = Harness::start(dir.path(), POLICY).await;
    let e = h
        .control
        .prisoner_action("agent-1", PrisonerAction::Resume, &admin(), None)
        .await
        .unwrap_err();
    assert_eq!((e.status(), e.code()), (409, "no_runtime"));
    let rt = Arc::new(FakeRuntime::default());
    h.control.set_runtime(Some(rt.clone()));
    let e = h
        .control
        .prisoner_action("ghost", PrisonerAction::Kill, &admin(), None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), 404);

    let v = h
        .control
        .prisoner_action(
            "agent-1",
            PrisonerAction::Pause { for_: None },
            &admin(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(v.state, "paused");
    let mut c = h.call(&["tool", "echo", "x"]).await;
    assert_eq!(decision(&mut c).await.reason, "prisoner agent-1 is paused");
    h.control
        .prisoner_action("agent-1", PrisonerAction::Resume, &admin(), None)
        .await
        .unwrap();

    let (mut c, id) = h.pending(&["curl", "echo", "x"]).await;
    let v = h
        .control
        .prisoner_action(
            "agent-1",
            PrisonerAction::Kill,
            &admin(),
            Some("runaway".into()),
        )
        .await
        .unwrap();
    assert_eq!((v.state.as_str(), v.pending), ("killed", 0));
    match c.recv().await {
        Some(Message::Error { kind, message }) => {
            assert_eq!(kind, ErrorKind::Cancelled);
            assert_eq!(message, "cancelled: prisoner agent-1 was killed");
        }
        other => panic!("expected a cancel error, got {other:?}"),
    }
    assert_eq!(h.control.get_request(&id).await.unwrap().state, "cancelled");
    assert_eq!(
        *rt.calls.lock().unwrap(),
        ["pause agent-1", "resume agent-1", "kill agent-1"]
    );
}

#[test]
fn token_subcommand_creates_lists_and_revokes_offline() {
    let dir = TempDir::new();
    let state = dir.path().join("state");
    let bin = env!("CARGO_BIN_EXE_clawrden-warden");
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .arg("token")
            .args(args)
            .output()
            .unwrap()
    };
    let s = state.to_str().unwrap();
    let out = run(&[
        "create",
        "--state-dir",
        s,
        "--name",
        "ci",
        "--scope",
        "approve",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(token.starts_with("clwd_") && token.ends_with('\n'));
    assert_eq!(token.trim().len(), 5 + 64);

    let out = run(&[
        "create",
        "--state-dir",
        s,
        "--name",
        "ci",
        "--scope",
        "read",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("a token named \"ci\" already exists"), "{err}");

    let out = run(&["list", "--state-dir", s]);
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(list.lines().nth(1).unwrap().contains("ci"), "{list}");
    assert!(!list.contains(token.trim()));

    let out = run(&["revoke", "--state-dir", s, "ci"]);
    assert_eq!(out.status.code(), Some(0));
    let store = Store::open(&state).unwrap();
    assert!(store.get_token("ci").unwrap().unwrap().revoked_at.is_some());
}
