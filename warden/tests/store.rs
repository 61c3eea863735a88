//! The SQLite store: schema, restarts (clean and kill -9), request life cycle,
//! approvals, history paging, grants, tokens, prisoners and settings.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use clawrden_warden::auth::Scope;
use clawrden_warden::store::{
    Abandoned, Action, ApprovalState, ApprovalVerdict, ExitStatus, GrantedCall, HistoryQuery,
    NewApproval, NewGrant, NewRequest, PrisonerState, RequestState, Store, StoreError, Timestamp,
    MAX_GRANT_TTL, SCHEMA_VERSION,
};

#[path = "common/tempdir.rs"]
#[allow(dead_code)] // each test crate uses part of the shared helper
mod tempdir;
use tempdir::TempDir;

fn argv(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn request(id: &str, created_at: i64, state: RequestState) -> NewRequest {
    NewRequest {
        id: id.to_owned(),
        prisoner: "agent-1".to_owned(),
        uid: 1000,
        gid: 1000,
        pid: 4242,
        argv: argv(&["/usr/bin/git", "status"]),
        cwd: b"/work".to_vec(),
        env_names: argv(&["PATH", "HOME"]),
        rule: Some("git-read".to_owned()),
        action: Some(match state {
            RequestState::Pending => Action::Ask,
            RequestState::Denied => Action::Deny,
            _ => Action::Allow,
        }),
        reason: None,
        executor: Some("local".to_owned()),
        state,
        created_at: Timestamp(created_at),
        decided_at: Some(Timestamp(created_at)),
        parent_request: None,
        unverified_parent: None,
        policy_sha256: Some("ab".repeat(32)),
    }
}

fn state_of(store: &Store, id: &str) -> RequestState {
    store.get_request(id).unwrap().unwrap().state
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn open_creates_wal_database_at_current_schema() {
    let dir = TempDir::tagged("open");
    let state_dir = dir.path().join("nested/state");
    let store = Store::open(&state_dir).unwrap();
    assert_eq!(store.path(), state_dir.join("state.db"));
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    drop(store);
    let raw = rusqlite::Connection::open(state_dir.join("state.db")).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let versions: Vec<i64> = raw
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    // Reopening applies nothing twice.
    drop(raw);
    let store = Store::open(&state_dir).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn approval_for_an_unknown_request_is_not_found() {
    let dir = TempDir::tagged("fk");
    let store = Store::open(dir.path()).unwrap();
    let err = store
        .create_approval(&NewApproval {
            id: "a1".into(),
            request_id: "nope".into(),
            created_at: Timestamp(1),
            expires_at: Timestamp(2),
        })
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "request", id } if id == "nope"),
        "{err:?}"
    );
}

#[test]
fn open_refuses_a_database_from_a_newer_schema() {
    let dir = TempDir::tagged("newer");
    drop(Store::open(dir.path()).unwrap());
    let raw = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    raw.execute(
        "INSERT INTO schema_version (version, applied_at) VALUES (?1, 0)",
        [SCHEMA_VERSION + 5],
    )
    .unwrap();
    drop(raw);
    let err = Store::open(dir.path()).unwrap_err();
    match &err {
        StoreError::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!(*found, SCHEMA_VERSION + 5);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let msg = err.to_string();
    assert_eq!(
        msg,
        format!(
            "database {} has schema version {}, newer than the {} this warden understands; \
             run a newer clawrden-warden or restore a backup made by this version",
            dir.path().join("state.db").display(),
            SCHEMA_VERSION + 5,
            SCHEMA_VERSION
        )
    );
}

#[test]
fn everything_survives_a_reopen() {
    let dir = TempDir::tagged("reopen");
    let grant_id;
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .insert_request(&request("r1", 10, RequestState::Running))
            .unwrap();
        store
            .finish_request("r1", ExitStatus::Code(3), Timestamp(20))
            .unwrap();
        store
            .insert_request(&request("r2", 30, RequestState::Pending))
            .unwrap();
        store
            .create_approval(&NewApproval {
                id: "a2".into(),
                request_id: "r2".into(),
                created_at: Timestamp(30),
                expires_at: Timestamp(1_000),
            })
            .unwrap();
        store
            .decide_approval(
                "a2",
                ApprovalVerdict::Approve,
                "alice",
                Some("ok"),
                Timestamp(40),
            )
            .unwrap();
        grant_id = store
            .create_grant(
                &NewGrant {
                    prisoner: "agent-1".into(),
                    uid: 1000,
                    executor: "mirror".into(),
                    argv: argv(&["git", "push"]),
                    cwd: b"/work".to_vec(),
                    created_by: "alice".into(),
                    ttl: Duration::from_secs(3600),
                },
                Timestamp(40),
            )
            .unwrap()
            .id;
        store
            .insert_token("ci", Scope::Read, &"cd".repeat(32), Timestamp(50))
            .unwrap();
        store
            .upsert_prisoner("agent-1", "/run/a.sock", Some("c1"), Timestamp(60))
            .unwrap();
        store.set_setting("lockdown", "on").unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let r1 = store.get_request("r1").unwrap().unwrap();
    assert_eq!(r1.state, RequestState::Done);
    assert_eq!(r1.exit, Some(ExitStatus::Code(3)));
    assert_eq!(r1.started_at, Some(Timestamp(10)));
    assert_eq!(r1.finished_at, Some(Timestamp(20)));
    assert_eq!(
        store
            .get_request("r2")
            .unwrap()
            .unwrap()
            .approval_id
            .as_deref(),
        Some("a2")
    );
    let a2 = store.get_approval("a2").unwrap().unwrap();
    assert_eq!(a2.state, ApprovalState::Approved);
    assert_eq!(a2.approver.as_deref(), Some("alice"));
    assert_eq!(a2.note.as_deref(), Some("ok"));
    assert_eq!(a2.decided_at, Some(Timestamp(40)));
    let g = store.get_grant(grant_id).unwrap().unwrap();
    assert_eq!(g.argv, argv(&["git", "push"]));
    assert_eq!(g.expires_at, Timestamp(40 + 3_600_000));
    let t = store.get_token("ci").unwrap().unwrap();
    assert_eq!(
        (t.scope, t.hash.as_str()),
        (Scope::Read, "cd".repeat(32).as_str())
    );
    let p = store.get_prisoner("agent-1").unwrap().unwrap();
    assert_eq!(p.socket, "/run/a.sock");
    assert_eq!(p.container.as_deref(), Some("c1"));
    assert_eq!(
        store.get_setting("lockdown").unwrap().as_deref(),
        Some("on")
    );
}

#[test]
fn restart_abandons_pending_and_running_requests_for_good() {
    let dir = TempDir::tagged("abandon");
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .insert_request(&request("pending", 1, RequestState::Pending))
            .unwrap();
        store
            .create_approval(&NewApproval {
                id: "ap".into(),
                request_id: "pending".into(),
                created_at: Timestamp(1),
                expires_at: Timestamp(100),
            })
            .unwrap();
        store
            .insert_request(&request("running", 2, RequestState::Running))
            .unwrap();
        store
            .insert_request(&request("done", 3, RequestState::Running))
            .unwrap();
        store
            .finish_request("done", ExitStatus::Signal(9), Timestamp(4))
            .unwrap();
        store
            .insert_request(&request("denied", 5, RequestState::Denied))
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.mark_abandoned_on_startup(Timestamp(500)).unwrap(),
        Abandoned {
            requests: 2,
            approvals: 1
        }
    );
    assert_eq!(state_of(&store, "pending"), RequestState::Abandoned);
    assert_eq!(state_of(&store, "running"), RequestState::Abandoned);
    assert_eq!(state_of(&store, "done"), RequestState::Done);
    assert_eq!(state_of(&store, "denied"), RequestState::Denied);
    let running = store.get_request("running").unwrap().unwrap();
    assert_eq!(running.finished_at, Some(Timestamp(500)));
    let ap = store.get_approval("ap").unwrap().unwrap();
    assert_eq!(ap.state, ApprovalState::Cancelled);
    assert_eq!(
        ap.reason.as_deref(),
        Some("warden restarted while the approval was pending")
    );
    // Never executed later: neither by starting it nor by approving it.
    let err = store
        .set_request_state("pending", RequestState::Running, Timestamp(600))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: RequestState::Abandoned,
                to: RequestState::Running,
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .decide_approval("ap", ApprovalVerdict::Approve, "bob", None, Timestamp(600))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::AlreadyDecided {
                state: ApprovalState::Cancelled,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        store.mark_abandoned_on_startup(Timestamp(700)).unwrap(),
        Abandoned {
            requests: 0,
            approvals: 0
        }
    );
}

const CHILD_DIR_ENV: &str = "CLAWRDEN_STORE_TEST_CHILD_DIR";
const CHILD_READY: &str = "clawrden-store-child-ready";

/// In the child role (spawned by the test below) this writes requests and then blocks
/// until it is killed with SIGKILL; in the parent role it spawns itself, kills the child
/// and checks what a restarted warden sees.
#[test]
fn kill_9_leaves_in_flight_requests_abandoned_after_restart() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let store = Store::open(Path::new(&dir)).unwrap();
        store
            .insert_request(&request("k-pending", 1, RequestState::Pending))
            .unwrap();
        store
            .insert_request(&request("k-running", 2, RequestState::Pending))
            .unwrap();
        store
            .set_request_state("k-running", RequestState::Running, Timestamp(3))
            .unwrap();
        // libtest prints "test NAME ... " without a newline first, so the parent looks
        // for this marker anywhere in a line.
        println!("{CHILD_READY}");
        let mut line = String::new();
        // Blocks until the parent kills us; stdin stays open and silent.
        let _ = std::io::stdin().read_line(&mut line);
        std::process::exit(1);
    }
    let dir = TempDir::tagged("kill9");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_leaves_in_flight_requests_abandoned_after_restart",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "child exited before it was ready");
        if line.contains(CHILD_READY) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(state_of(&store, "k-running"), RequestState::Running);
    assert_eq!(
        store.mark_abandoned_on_startup(Timestamp(10)).unwrap(),
        Abandoned {
            requests: 2,
            approvals: 0
        }
    );
    assert_eq!(state_of(&store, "k-pending"), RequestState::Abandoned);
    assert_eq!(state_of(&store, "k-running"), RequestState::Abandoned);
}

#[test]
fn terminal_states_never_change() {
    let dir = TempDir::tagged("terminal");
    let store = Store::open(dir.path()).unwrap();
    let terminals = [
        RequestState::Done,
        RequestState::Denied,
        RequestState::Abandoned,
        RequestState::Cancelled,
        RequestState::TimedOut,
    ];
    for (i, terminal) in terminals.iter().enumerate() {
        let id = format!("t{i}");
        store
            .insert_request(&request(&id, i as i64, RequestState::Running))
            .unwrap();
        if *terminal == RequestState::Denied {
            // Denied is reachable only from pending; start over with a pending request.
            let id2 = format!("{id}-p");
            store
                .insert_request(&request(&id2, i as i64, RequestState::Pending))
                .unwrap();
            store
                .set_request_state(&id2, RequestState::Denied, Timestamp(50))
                .unwrap();
            check_frozen(&store, &id2, RequestState::Denied);
        } else {
            store
                .set_request_state(&id, *terminal, Timestamp(50))
                .unwrap();
            check_frozen(&store, &id, *terminal);
        }
    }
}

fn check_frozen(store: &Store, id: &str, state: RequestState) {
    for &to in RequestState::ALL {
        let err = store.set_request_state(id, to, Timestamp(99)).unwrap_err();
        match err {
            StoreError::InvalidTransition {
                id: got_id,
                from,
                to: got_to,
            } => {
                assert_eq!((got_id.as_str(), from, got_to), (id, state, to));
            }
            other => panic!("{id}: {state} -> {to}: expected InvalidTransition, got {other:?}"),
        }
    }
    let err = store
        .finish_request(id, ExitStatus::Code(0), Timestamp(99))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidTransition { .. }),
        "{err:?}"
    );
    assert_eq!(state_of(store, id), state);
}

#[test]
fn life_cycle_sets_timestamps_and_exit_status() {
    let dir = TempDir::tagged("cycle");
    let store = Store::open(dir.path()).unwrap();
    store
        .insert_request(&request("r", 100, RequestState::Pending))
        .unwrap();
    let err = store
        .set_request_state("r", RequestState::Done, Timestamp(101))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: RequestState::Pending,
                to: RequestState::Done,
                ..
            }
        ),
        "{err:?}"
    );
    store
        .set_request_state("r", RequestState::Running, Timestamp(110))
        .unwrap();
    let err = store
        .set_request_state("r", RequestState::Running, Timestamp(111))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidTransition { .. }),
        "{err:?}"
    );
    store
        .finish_request("r", ExitStatus::Signal(15), Timestamp(150))
        .unwrap();
    let r = store.get_request("r").unwrap().unwrap();
    assert_eq!(r.state, RequestState::Done);
    assert_eq!(r.exit, Some(ExitStatus::Signal(15)));
    assert_eq!(r.created_at, Timestamp(100));
    assert_eq!(r.decided_at, Some(Timestamp(100)));
    assert_eq!(r.started_at, Some(Timestamp(110)));
    assert_eq!(r.finished_at, Some(Timestamp(150)));

    let err = store
        .set_request_state("missing", RequestState::Running, Timestamp(1))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "request", id } if id == "missing"),
        "{err:?}"
    );
}

#[test]
fn insert_rejects_duplicates_and_terminal_initial_states() {
    let dir = TempDir::tagged("insert");
    let store = Store::open(dir.path()).unwrap();
    store
        .insert_request(&request("r", 1, RequestState::Pending))
        .unwrap();
    let err = store
        .insert_request(&request("r", 2, RequestState::Pending))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateRequest { id } if id == "r"),
        "{err:?}"
    );
    for state in [
        RequestState::Done,
        RequestState::Abandoned,
        RequestState::Cancelled,
        RequestState::TimedOut,
    ] {
        let err = store.insert_request(&request("x", 1, state)).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInitialState { state: s } if s == state),
            "{err:?}"
        );
    }
    assert_eq!(store.get_request("x").unwrap(), None);
}

#[test]
fn argv_and_cwd_round_trip_byte_exact_and_store_hex_for_non_utf8() {
    let dir = TempDir::tagged("bytes");
    let store = Store::open(dir.path()).unwrap();
    let mut r = request("b", 1, RequestState::Running);
    r.argv = vec![b"/bin/cat".to_vec(), vec![b'f', 0xff, 0xfe]];
    r.cwd = vec![b'/', 0x80];
    r.env_names = vec![b"A".to_vec(), vec![0xc3]];
    store.insert_request(&r).unwrap();
    let got = store.get_request("b").unwrap().unwrap();
    assert_eq!(got.argv, r.argv);
    assert_eq!(got.cwd, r.cwd);
    assert_eq!(got.env_names, r.env_names);
    assert_eq!(got.command, "cat");
    drop(store);
    let raw = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let (argv_json, cwd_json): (String, String) = raw
        .query_row("SELECT argv, cwd FROM requests WHERE id = 'b'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(argv_json, r#"["/bin/cat",{"hex":"66fffe"}]"#);
    assert_eq!(cwd_json, r#"{"hex":"2f80"}"#);
}

#[test]
fn second_decision_on_an_approval_is_already_decided() {
    let dir = TempDir::tagged("decide");
    let store = Store::open(dir.path()).unwrap();
    store
        .insert_request(&request("r", 1, RequestState::Pending))
        .unwrap();
    let a = store
        .create_approval(&NewApproval {
            id: "a".into(),
            request_id: "r".into(),
            created_at: Timestamp(1),
            expires_at: Timestamp(1000),
        })
        .unwrap();
    assert_eq!(a.state, ApprovalState::Pending);
    assert_eq!(a.expires_at, Timestamp(1000));
    let denied = store
        .decide_approval(
            "a",
            ApprovalVerdict::Deny,
            "bob",
            Some("not now"),
            Timestamp(5),
        )
        .unwrap();
    assert_eq!(denied.state, ApprovalState::Denied);
    assert_eq!(denied.approver.as_deref(), Some("bob"));
    assert_eq!(denied.reason.as_deref(), Some("not now"));
    assert_eq!(denied.note, None);
    assert_eq!(denied.decided_at, Some(Timestamp(5)));
    let err = store
        .decide_approval("a", ApprovalVerdict::Approve, "alice", None, Timestamp(6))
        .unwrap_err();
    match err {
        StoreError::AlreadyDecided { id, state } => {
            assert_eq!((id.as_str(), state), ("a", ApprovalState::Denied));
        }
        other => panic!("expected AlreadyDecided, got {other:?}"),
    }
    // The first decision stands.
    let a = store.get_approval("a").unwrap().unwrap();
    assert_eq!(a.state, ApprovalState::Denied);
    assert_eq!(a.approver.as_deref(), Some("bob"));
    let err = store.expire_approval("a", Timestamp(7)).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyDecided { .. }), "{err:?}");
    let err = store
        .decide_approval("zzz", ApprovalVerdict::Approve, "alice", None, Timestamp(6))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "approval", id } if id == "zzz"),
        "{err:?}"
    );
}

#[test]
fn late_approval_expires_instead_of_approving() {
    let dir = TempDir::tagged("late");
    let store = Store::open(dir.path()).unwrap();
    store
        .insert_request(&request("r", 1, RequestState::Pending))
        .unwrap();
    store
        .create_approval(&NewApproval {
            id: "a".into(),
            request_id: "r".into(),
            created_at: Timestamp(1),
            expires_at: Timestamp(100),
        })
        .unwrap();
    let err = store
        .decide_approval("a", ApprovalVerdict::Approve, "alice", None, Timestamp(100))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::AlreadyDecided {
                state: ApprovalState::Expired,
                ..
            }
        ),
        "{err:?}"
    );
    let a = store.get_approval("a").unwrap().unwrap();
    assert_eq!(a.state, ApprovalState::Expired);
    assert_eq!(a.approver, None);
    assert_eq!(a.decided_at, Some(Timestamp(100)));
}

#[test]
fn expire_and_cancel_close_pending_approvals() {
    let dir = TempDir::tagged("close");
    let store = Store::open(dir.path()).unwrap();
    for (i, id) in ["a", "b"].iter().enumerate() {
        let rid = format!("r{id}");
        store
            .insert_request(&request(&rid, i as i64, RequestState::Pending))
            .unwrap();
        store
            .create_approval(&NewApproval {
                id: id.to_string(),
                request_id: rid,
                created_at: Timestamp(i as i64),
                expires_at: Timestamp(100),
            })
            .unwrap();
    }
    assert_eq!(
        store
            .list_approvals(Some(ApprovalState::Pending), 10)
            .unwrap()
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        ["b", "a"]
    );
    let a = store.expire_approval("a", Timestamp(100)).unwrap();
    assert_eq!(a.state, ApprovalState::Expired);
    let b = store
        .cancel_approval("b", "shim disconnected", Timestamp(50))
        .unwrap();
    assert_eq!(b.state, ApprovalState::Cancelled);
    assert_eq!(b.reason.as_deref(), Some("shim disconnected"));
    assert!(store
        .list_approvals(Some(ApprovalState::Pending), 10)
        .unwrap()
        .is_empty());
    assert_eq!(store.list_approvals(None, 10).unwrap().len(), 2);
}

#[test]
fn list_requests_filters_by_state_newest_first_with_limit() {
    let dir = TempDir::tagged("list");
    let store = Store::open(dir.path()).unwrap();
    for (id, at, state) in [
        ("p1", 1, RequestState::Pending),
        ("r1", 2, RequestState::Running),
        ("p2", 3, RequestState::Pending),
        ("p3", 4, RequestState::Pending),
    ] {
        store.insert_request(&request(id, at, state)).unwrap();
    }
    let ids = |v: Vec<clawrden_warden::store::RequestRecord>| {
        v.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.list_requests(Some(RequestState::Pending), 2).unwrap()),
        ["p3", "p2"]
    );
    assert_eq!(
        ids(store.list_requests(None, 100).unwrap()),
        ["p3", "p2", "r1", "p1"]
    );
    assert_eq!(
        ids(store.list_requests(Some(RequestState::Done), 100).unwrap()),
        Vec::<String>::new()
    );
    // A zero limit is clamped to one row, never "unlimited".
    assert_eq!(ids(store.list_requests(None, 0).unwrap()), ["p3"]);
}

fn history_ids(store: &Store, q: &HistoryQuery) -> Vec<String> {
    store
        .history(q)
        .unwrap()
        .requests
        .into_iter()
        .map(|r| r.id)
        .collect()
}

#[test]
fn history_filters_combine() {
    let dir = TempDir::tagged("history");
    let store = Store::open(dir.path()).unwrap();
    let add = |id: &str, at: i64, prisoner: &str, words: &[&str], state: RequestState| {
        let mut r = request(id, at, state);
        r.prisoner = prisoner.to_owned();
        r.argv = argv(words);
        store.insert_request(&r).unwrap();
    };
    add(
        "h1",
        10,
        "a",
        &["/usr/bin/git", "push", "Origin"],
        RequestState::Running,
    );
    add(
        "h2",
        20,
        "a",
        &["curl", "https://x/100%"],
        RequestState::Denied,
    );
    add("h3", 30, "b", &["git", "status"], RequestState::Pending);
    add("h4", 40, "a", &["git", "say \"hi\""], RequestState::Running);
    let q = |f: &dyn Fn(&mut HistoryQuery)| {
        let mut q = HistoryQuery {
            limit: 100,
            ..HistoryQuery::default()
        };
        f(&mut q);
        q
    };
    assert_eq!(history_ids(&store, &q(&|_| {})), ["h4", "h3", "h2", "h1"]);
    assert_eq!(
        history_ids(&store, &q(&|q| q.prisoner = Some("a".into()))),
        ["h4", "h2", "h1"]
    );
    assert_eq!(
        history_ids(&store, &q(&|q| q.command = Some("git".into()))),
        ["h4", "h3", "h1"]
    );
    assert_eq!(
        history_ids(&store, &q(&|q| q.action = Some(Action::Deny))),
        ["h2"]
    );
    assert_eq!(
        history_ids(
            &store,
            &q(&|q| {
                q.since = Some(Timestamp(20));
                q.until = Some(Timestamp(40));
            })
        ),
        ["h3", "h2"]
    );
    // Free text: case-insensitive for ASCII, LIKE wildcards are literal, JSON escapes
    // are transparent.
    assert_eq!(
        history_ids(&store, &q(&|q| q.text = Some("origin".into()))),
        ["h1"]
    );
    assert_eq!(
        history_ids(&store, &q(&|q| q.text = Some("100%".into()))),
        ["h2"]
    );
    assert_eq!(
        history_ids(&store, &q(&|q| q.text = Some("1_0".into()))),
        Vec::<String>::new()
    );
    assert_eq!(
        history_ids(&store, &q(&|q| q.text = Some("say \"hi".into()))),
        ["h4"]
    );
    assert_eq!(
        history_ids(
            &store,
            &q(&|q| {
                q.prisoner = Some("a".into());
                q.command = Some("git".into());
                q.text = Some("push".into());
            })
        ),
        ["h1"]
    );
}

#[test]
fn history_pages_with_a_keyset_cursor_across_equal_timestamps() {
    let dir = TempDir::tagged("paging");
    let store = Store::open(dir.path()).unwrap();
    // Five requests, three sharing one timestamp.
    for (id, at) in [("c1", 1), ("c2", 2), ("c3", 2), ("c4", 2), ("c5", 3)] {
        store
            .insert_request(&request(id, at, RequestState::Running))
            .unwrap();
    }
    let mut q = HistoryQuery {
        limit: 2,
        ..HistoryQuery::default()
    };
    let mut pages = Vec::new();
    loop {
        let page = store.history(&q).unwrap();
        pages.push(
            page.requests
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>(),
        );
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
        // A row added meanwhile (newer) does not shift later pages.
        if pages.len() == 1 {
            store
                .insert_request(&request("c6", 9, RequestState::Running))
                .unwrap();
        }
    }
    assert_eq!(pages, vec![vec!["c5", "c4"], vec!["c3", "c2"], vec!["c1"]]);
    let exact = HistoryQuery {
        limit: 6,
        ..HistoryQuery::default()
    };
    let page = store.history(&exact).unwrap();
    assert_eq!(page.requests.len(), 6);
    assert_eq!(page.next_cursor, None);
    let err = store
        .history(&HistoryQuery {
            limit: 2,
            cursor: Some("not-a-cursor".into()),
            ..HistoryQuery::default()
        })
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::BadCursor { cursor } if cursor == "not-a-cursor"),
        "{err:?}"
    );
}

fn new_grant(words: &[&str], cwd: &str, ttl: Duration) -> NewGrant {
    NewGrant {
        prisoner: "agent-1".into(),
        uid: 1000,
        executor: "mirror".into(),
        argv: argv(words),
        cwd: cwd.as_bytes().to_vec(),
        created_by: "alice".into(),
        ttl,
    }
}

#[test]
fn grant_ttl_must_be_positive_and_at_most_a_day() {
    let dir = TempDir::tagged("ttl");
    let store = Store::open(dir.path()).unwrap();
    for ttl in [Duration::ZERO, MAX_GRANT_TTL + Duration::from_secs(1)] {
        let err = store
            .create_grant(&new_grant(&["ls"], "/", ttl), Timestamp(0))
            .unwrap_err();
        match err {
            StoreError::InvalidGrantTtl { ttl_secs, max_secs } => {
                assert_eq!((ttl_secs, max_secs), (ttl.as_secs(), 86_400));
            }
            other => panic!("expected InvalidGrantTtl, got {other:?}"),
        }
    }
    let g = store
        .create_grant(&new_grant(&["ls"], "/", MAX_GRANT_TTL), Timestamp(1_000))
        .unwrap();
    assert_eq!(g.created_at, Timestamp(1_000));
    assert_eq!(g.expires_at, Timestamp(1_000 + 86_400_000));
    assert_eq!(g.uses, 0);
    assert!(store.list_grants(Timestamp(0), true).unwrap().len() == 1);
}

/// The grant `store` holds for the call (uid 1000, mirror executor unless given).
fn find_as(
    store: &Store,
    (prisoner, uid, executor): (&str, u32, &str),
    words: &[&str],
    cwd: &str,
    now: i64,
) -> Option<i64> {
    let argv = argv(words);
    store
        .find_grant(
            &GrantedCall {
                prisoner,
                uid,
                executor,
                argv: &argv,
                cwd: cwd.as_bytes(),
            },
            Timestamp(now),
        )
        .unwrap()
        .map(|g| g.id)
}

#[test]
fn grants_match_exact_prisoner_uid_executor_argv_and_cwd_only() {
    let dir = TempDir::tagged("grants");
    let store = Store::open(dir.path()).unwrap();
    let g = store
        .create_grant(
            &new_grant(&["git", "push", "origin"], "/work", Duration::from_secs(60)),
            Timestamp(0),
        )
        .unwrap();
    assert_eq!((g.uid, g.executor.as_deref()), (Some(1000), Some("mirror")));
    let find = |prisoner: &str, words: &[&str], cwd: &str, now: i64| {
        find_as(&store, (prisoner, 1000, "mirror"), words, cwd, now)
    };
    let push = &["git", "push", "origin"];
    // A grant made for uid 1000 in mirror answers neither uid 0 nor the local executor.
    assert_eq!(
        find_as(&store, ("agent-1", 0, "mirror"), push, "/work", 1),
        None
    );
    assert_eq!(
        find_as(&store, ("agent-1", 1000, "local"), push, "/work", 1),
        None
    );
    assert_eq!(
        find("agent-1", &["git", "push", "origin"], "/work", 1),
        Some(g.id)
    );
    assert_eq!(
        find("agent-2", &["git", "push", "origin"], "/work", 1),
        None
    );
    assert_eq!(find("agent-1", &["git", "push"], "/work", 1), None);
    assert_eq!(
        find("agent-1", &["git", "push", "origin", "-f"], "/work", 1),
        None
    );
    assert_eq!(find("agent-1", &["git", "push origin"], "/work", 1), None);
    assert_eq!(
        find("agent-1", &["git", "push", "origin"], "/work/sub", 1),
        None
    );
    assert_eq!(
        find("agent-1", &["git", "push", "origin"], "/work", 59_999),
        Some(g.id)
    );
    assert_eq!(
        find("agent-1", &["git", "push", "origin"], "/work", 60_000),
        None
    );
}

#[test]
fn grant_use_is_counted_and_revocation_wins() {
    let dir = TempDir::tagged("grant-use");
    let store = Store::open(dir.path()).unwrap();
    let g = store
        .create_grant(
            &new_grant(&["make"], "/w", Duration::from_secs(60)),
            Timestamp(0),
        )
        .unwrap();
    let used = store.record_grant_use(g.id, Timestamp(10)).unwrap();
    assert_eq!((used.uses, used.last_used_at), (1, Some(Timestamp(10))));
    let used = store.record_grant_use(g.id, Timestamp(20)).unwrap();
    assert_eq!((used.uses, used.last_used_at), (2, Some(Timestamp(20))));
    assert_eq!(
        store
            .list_grants(Timestamp(30), false)
            .unwrap()
            .iter()
            .map(|g| g.id)
            .collect::<Vec<_>>(),
        [g.id]
    );
    assert!(store.revoke_grant(g.id, Timestamp(30)).unwrap());
    assert!(!store.revoke_grant(g.id, Timestamp(31)).unwrap());
    let revoked = store.get_grant(g.id).unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(Timestamp(30)));
    assert!(!revoked.is_active(Timestamp(30)));
    assert_eq!(
        find_as(&store, ("agent-1", 1000, "mirror"), &["make"], "/w", 40),
        None
    );
    let err = store.record_grant_use(g.id, Timestamp(40)).unwrap_err();
    assert!(
        matches!(err, StoreError::GrantNotActive { id } if id == g.id),
        "{err:?}"
    );
    assert_eq!(store.get_grant(g.id).unwrap().unwrap().uses, 2);
    assert!(store.list_grants(Timestamp(40), false).unwrap().is_empty());
    assert_eq!(store.list_grants(Timestamp(40), true).unwrap().len(), 1);
    let err = store.revoke_grant(9999, Timestamp(1)).unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "grant", .. }),
        "{err:?}"
    );
    let err = store.record_grant_use(9999, Timestamp(1)).unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "grant", .. }),
        "{err:?}"
    );
}

#[test]
fn expired_grant_cannot_be_used() {
    let dir = TempDir::tagged("grant-exp");
    let store = Store::open(dir.path()).unwrap();
    let g = store
        .create_grant(
            &new_grant(&["make"], "/w", Duration::from_secs(1)),
            Timestamp(0),
        )
        .unwrap();
    let err = store.record_grant_use(g.id, Timestamp(1_000)).unwrap_err();
    assert!(matches!(err, StoreError::GrantNotActive { .. }), "{err:?}");
    assert_eq!(store.get_grant(g.id).unwrap().unwrap().uses, 0);
}

#[test]
fn token_rows_have_unique_names_and_can_be_revoked() {
    let dir = TempDir::tagged("tokens");
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.token_count().unwrap(), 0);
    let t = store
        .insert_token("ci", Scope::Approve, &"01".repeat(32), Timestamp(5))
        .unwrap();
    assert_eq!(
        (
            t.name.as_str(),
            t.scope,
            t.created_at,
            t.last_used_at,
            t.revoked_at
        ),
        ("ci", Scope::Approve, Timestamp(5), None, None)
    );
    let err = store
        .insert_token("ci", Scope::Read, &"02".repeat(32), Timestamp(6))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::TokenNameTaken { name } if name == "ci"),
        "{err:?}"
    );
    store
        .insert_token("admin", Scope::Admin, &"03".repeat(32), Timestamp(7))
        .unwrap();
    assert_eq!(store.token_count().unwrap(), 2);
    assert_eq!(
        store
            .list_tokens()
            .unwrap()
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["admin", "ci"]
    );
    let found = store.find_token_by_hash(&"01".repeat(32)).unwrap().unwrap();
    assert_eq!(found.id, t.id);
    assert_eq!(store.find_token_by_hash(&"ff".repeat(32)).unwrap(), None);
    store.touch_token(t.id, Timestamp(9)).unwrap();
    assert_eq!(
        store.get_token("ci").unwrap().unwrap().last_used_at,
        Some(Timestamp(9))
    );
    assert!(store.revoke_token("ci", Timestamp(10)).unwrap());
    assert!(!store.revoke_token("ci", Timestamp(11)).unwrap());
    assert_eq!(
        store.get_token("ci").unwrap().unwrap().revoked_at,
        Some(Timestamp(10))
    );
    let err = store.revoke_token("nobody", Timestamp(1)).unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "token", .. }),
        "{err:?}"
    );
    // Debug output never shows the hash.
    let dbg = format!("{found:?}");
    assert!(!dbg.contains(&"01".repeat(32)), "{dbg}");
}

#[test]
fn prisoner_state_survives_re_registration() {
    let dir = TempDir::tagged("prisoners");
    let store = Store::open(dir.path()).unwrap();
    let p = store
        .upsert_prisoner("agent-1", "/run/1.sock", None, Timestamp(1))
        .unwrap();
    assert_eq!(p.state, PrisonerState::Active);
    store
        .set_prisoner_state("agent-1", PrisonerState::Paused, Timestamp(2))
        .unwrap();
    let p = store
        .upsert_prisoner("agent-1", "/run/1b.sock", Some("ctr"), Timestamp(3))
        .unwrap();
    assert_eq!(
        (p.state, p.socket.as_str(), p.updated_at),
        (PrisonerState::Paused, "/run/1b.sock", Timestamp(3))
    );
    store
        .set_prisoner_state("agent-1", PrisonerState::Gone, Timestamp(4))
        .unwrap();
    let p = store
        .upsert_prisoner("agent-1", "/run/1b.sock", Some("ctr"), Timestamp(5))
        .unwrap();
    assert_eq!(p.state, PrisonerState::Active);
    store
        .upsert_prisoner("agent-0", "/run/0.sock", None, Timestamp(6))
        .unwrap();
    assert_eq!(
        store
            .list_prisoners()
            .unwrap()
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["agent-0", "agent-1"]
    );
    let err = store
        .set_prisoner_state("ghost", PrisonerState::Killed, Timestamp(7))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "prisoner", id } if id == "ghost"),
        "{err:?}"
    );
}

#[test]
fn settings_get_set_overwrite_delete() {
    let dir = TempDir::tagged("settings");
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get_setting("lockdown").unwrap(), None);
    store.set_setting("lockdown", "on").unwrap();
    store.set_setting("lockdown", "off").unwrap();
    assert_eq!(
        store.get_setting("lockdown").unwrap().as_deref(),
        Some("off")
    );
    assert!(store.delete_setting("lockdown").unwrap());
    assert!(!store.delete_setting("lockdown").unwrap());
    assert_eq!(store.get_setting("lockdown").unwrap(), None);
}
