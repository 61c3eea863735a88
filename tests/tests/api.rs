//! The HTTP API of a real warden (api.md): health, readiness, status, history with its
//! filters and cursor pages, export, the event stream with resume, and a queue of 1,000
//! pending asks.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clawrden_e2e::api::{ids_of, raw_ask_send, url_encode, Api, EventStream, RawAsk, ShimCall};
use clawrden_e2e::{poll_until, sha256_hex, Call, TestWarden};
use serde_json::{json, Value};

const STEP: Duration = Duration::from_secs(60);

fn policy(default_action: &str, rules: &str) -> String {
    format!(
        "version: 1\n\
         default_action: {default_action}\n\
         default_timeout: 2m\n\
         approval_timeout: 10m\n\
         default_executor: local\n\
         rules:\n{rules}"
    )
}

fn start(policy: &str) -> (TestWarden, Api) {
    let w = TestWarden::builder().policy(policy).api().start();
    let admin = Api::of(&w).with_token(w.admin_token());
    (w, admin)
}

#[test]
fn healthz_and_readyz_answer_without_a_token() {
    let (w, _) = start(&policy("allow", "  []\n"));
    let api = Api::of(&w);
    let health = api.get("/healthz").expect_status(200).json();
    assert_eq!(health, json!({ "status": "ok" }));
    let ready = api.get("/readyz").expect_status(200).json();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(
        ready["checks"],
        json!({
            "policy": "ok",
            "store": "ok",
            "audit": "ok",
            "sockets": "ok",
            "docker": "not used",
        }),
        "{ready}"
    );
}

#[test]
fn api_refuses_missing_bad_and_insufficient_tokens() {
    let (w, admin) = start(&policy("allow", "  []\n"));
    let anon = Api::of(&w);
    let r = anon.get("/api/v1/status");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.error_code(), "unauthorized", "{r:?}");
    let r = anon.with_token("not-a-real-token").get("/api/v1/status");
    assert_eq!(r.status, 401, "{r:?}");
    let reader = admin.create_token("reader", "read");
    reader.get_json("/api/v1/status");
    let r = reader.post("/api/v1/requests/nope/deny", &json!({}));
    assert_eq!(r.status, 403, "read scope may not deny: {r:?}");
    assert_eq!(r.error_code(), "forbidden", "{r:?}");
    let r = admin.get("/api/v1/requests/no-such-request");
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.error_code(), "not_found", "{r:?}");
    let r = admin.request(
        "POST",
        "/api/v1/lockdown",
        Some(("application/json", b"{not json")),
        &[],
    );
    assert_eq!(r.status, 400, "malformed JSON: {r:?}");
}

#[test]
fn status_reports_version_lockdown_policy_queue_prisoners_and_audit() {
    let yaml = policy("allow", "  []\n");
    let (w, admin) = start(&yaml);
    let reader = admin.create_token("reader", "read");
    let s = reader.get_json("/api/v1/status");
    assert!(s["version"].as_str().is_some_and(|v| !v.is_empty()), "{s}");
    assert!(s["started_at"].is_string(), "{s}");
    assert_eq!(s["lockdown"]["on"], false, "{s}");
    assert_eq!(s["policy"]["sha256"], sha256_hex(yaml.as_bytes()), "{s}");
    assert_eq!(s["policy"]["path"], w.policy_path.to_str().unwrap(), "{s}");
    assert!(s["policy"].get("last_reload").is_some(), "{s}");
    assert_eq!(s["queue"]["pending"], 0, "{s}");
    assert_eq!(s["running"], 0, "{s}");
    let prisoners = s["prisoners"].as_array().expect("prisoners array");
    assert_eq!(prisoners.len(), 1, "{s}");
    assert_eq!(prisoners[0]["name"], "default", "{s}");
    assert_eq!(prisoners[0]["socket"], w.socket.to_str().unwrap(), "{s}");
    for key in ["container", "state", "running", "pending"] {
        assert!(
            prisoners[0].get(key).is_some(),
            "prisoner without {key}: {s}"
        );
    }
    assert_eq!(s["audit"]["failures"], 0, "{s}");
    assert!(s["audit"].get("last_error").is_some(), "{s}");
}

/// Runs a call through `prisoner`'s shim to completion; returns its exit code.
fn run_as(w: &TestWarden, prisoner: &str, call: &Call) -> Option<i32> {
    let cmd = w.shim_command_as(prisoner, call);
    clawrden_e2e::run_command(cmd, b"", "shim").status.code()
}

/// Every page of `GET /api/v1/history?<query>&limit=<limit>`, following next_cursor.
fn pages(api: &Api, query: &str, limit: u32) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/history?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", url_encode(c)));
        }
        let page = api.get_json(&path);
        out.push(ids_of(&page["requests"]));
        match &page["next_cursor"] {
            Value::Null => return out,
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("{path}: next_cursor is neither null nor a string: {other}"),
        }
        assert!(out.len() < 1000, "{query}: endless pagination");
    }
}

/// All of history matching `query` in one page (limit 500).
fn all(api: &Api, query: &str) -> Vec<Value> {
    let sep = if query.is_empty() { "" } else { "&" };
    let page = api.get_json(&format!("/api/v1/history?limit=500{sep}{query}"));
    assert_eq!(
        page["next_cursor"],
        Value::Null,
        "{query}: more than 500 rows?"
    );
    page["requests"].as_array().unwrap().clone()
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// Minimal RFC 4180 parser: rows of fields (quoted fields may hold commas, quotes, newlines).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[test]
fn history_filters_cursor_pages_and_exports_are_exact() {
    let w = TestWarden::builder()
        .policy(policy(
            "allow",
            "  - name: no-touch\n    command: touch\n    action: deny\n",
        ))
        .prisoners(&["alpha", "beta"])
        .api()
        .start();
    let admin = Api::of(&w).with_token(w.admin_token());
    let reader = admin.create_token("historian", "read");
    let marker = w.dir().join("never");
    // 30 requests: 12 printf (3 carrying the search needle), 12 true, 6 denied touch;
    // alpha gets the even ones.
    let mut expect_alpha = 0;
    for i in 0..30usize {
        let prisoner = if i % 2 == 0 { "alpha" } else { "beta" };
        if prisoner == "alpha" {
            expect_alpha += 1;
        }
        let (call, code) = match i % 5 {
            0 | 1 => {
                let word = if i < 15 && i % 5 == 0 {
                    format!("Needle-Xyz-{i}")
                } else {
                    format!("plain-{i}")
                };
                (Call::new("printf").args(["%s", &word]), 0)
            }
            2 | 3 => (Call::new("true"), 0),
            _ => (Call::new("touch").arg(&marker), 126),
        };
        assert_eq!(
            run_as(&w, prisoner, &call),
            Some(code),
            "call {i}: {call:?}"
        );
    }

    let everything = all(&reader, "");
    let all_ids = ids(&everything);
    assert_eq!(all_ids.len(), 30, "{everything:?}");
    let unique: HashSet<&String> = all_ids.iter().collect();
    assert_eq!(unique.len(), 30, "duplicate ids in history: {all_ids:?}");
    let audited: HashSet<String> = w
        .audit_events()
        .iter()
        .filter(|e| e.event() == "request")
        .filter_map(|e| e.request_id().map(str::to_string))
        .collect();
    assert_eq!(
        audited,
        all_ids.iter().cloned().collect::<HashSet<_>>(),
        "history and audit disagree on which requests exist"
    );
    let created: Vec<&str> = everything
        .iter()
        .map(|r| r["created_at"].as_str().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|p| p[0] >= p[1]),
        "history is not newest first: {created:?}"
    );

    // Cursor pages of 7: exactly the one-page list cut in order, no gaps, no repeats.
    let paged = pages(&reader, "", 7);
    let expected: Vec<Vec<String>> = all_ids.chunks(7).map(<[String]>::to_vec).collect();
    assert_eq!(paged, expected, "pages of 7 differ from the full listing");

    // Filters.
    let check = |query: &str, want: Vec<String>, count: usize| {
        let got = ids(&all(&reader, query));
        assert_eq!(got.len(), count, "{query}: {got:?}");
        assert_eq!(got, want, "{query}");
        let paged: Vec<String> = pages(&reader, query, 4).concat();
        assert_eq!(paged, want, "{query}: paging with limit 4");
    };
    let select = |f: &dyn Fn(&Value) -> bool| -> Vec<String> {
        everything
            .iter()
            .filter(|r| f(r))
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    check(
        "prisoner=alpha",
        select(&|r| r["prisoner"] == "alpha"),
        expect_alpha,
    );
    check(
        "command=printf",
        select(&|r| {
            r["argv"][0]
                .as_str()
                .is_some_and(|a| a.ends_with("/printf"))
        }),
        12,
    );
    check("action=deny", select(&|r| r["action"] == "deny"), 6);
    check(
        "prisoner=beta&action=allow",
        select(&|r| r["prisoner"] == "beta" && r["action"] == "allow"),
        12,
    );
    check(
        &format!("q={}", url_encode("Needle-Xyz")),
        select(&|r| {
            r["argv"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t.as_str().is_some_and(|s| s.contains("Needle-Xyz")))
        }),
        3,
    );
    // since: inclusive bound on created_at; the 10 newest by their own timestamps.
    let since = everything[9]["created_at"].as_str().unwrap().to_string();
    let want_since = select(&|r| r["created_at"].as_str().unwrap() >= since.as_str());
    let n = want_since.len();
    assert!(n >= 10, "created_at is not monotonic: {created:?}");
    check(&format!("since={}", url_encode(&since)), want_since, n);
    check("since=1h", all_ids.clone(), 30);
    for bad in [
        "since=yesterday-ish",
        "limit=0",
        "limit=501",
        "action=maybe",
    ] {
        let r = reader.get(&format!("/api/v1/history?{bad}"));
        assert_eq!(r.status, 422, "{bad}: {r:?}");
    }

    // Export: CSV header + one row per request; JSON Lines one line per request.
    let csv = reader
        .get("/api/v1/history/export?format=csv")
        .expect_status(200);
    assert!(
        csv.header("content-type")
            .is_some_and(|t| t.starts_with("text/csv")),
        "{:?}",
        csv.headers
    );
    assert!(
        csv.header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment")),
        "{:?}",
        csv.headers
    );
    let rows = parse_csv(&csv.text());
    let header = &rows[0];
    let id_col = header
        .iter()
        .position(|h| h == "id")
        .unwrap_or_else(|| panic!("CSV header has no `id` column: {header:?}"));
    assert_eq!(rows.len(), 31, "header + 30 rows: {csv}");
    assert!(
        rows.iter().all(|r| r.len() == header.len()),
        "ragged CSV: {csv}"
    );
    let csv_ids: Vec<String> = rows[1..].iter().map(|r| r[id_col].clone()).collect();
    assert_eq!(csv_ids, all_ids, "CSV rows differ from history");

    let jsonl = reader
        .get("/api/v1/history/export?format=jsonl")
        .expect_status(200);
    assert!(
        jsonl
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/x-ndjson")),
        "{:?}",
        jsonl.headers
    );
    let text = jsonl.text();
    assert!(text.ends_with('\n'), "JSON Lines not newline-terminated");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL line {l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 30, "{text}");
    assert_eq!(ids(&lines), all_ids, "JSONL rows differ from history");

    let denied = reader
        .get("/api/v1/history/export?format=csv&action=deny")
        .expect_status(200);
    assert_eq!(
        parse_csv(&denied.text()).len(),
        7,
        "header + 6 denied: {denied}"
    );
}

/// Kind and request id of an event.
fn kind_and_id(e: &clawrden_e2e::api::SseEvent) -> (String, Option<String>) {
    let v = e.json();
    let id = v["id"].as_str().or_else(|| v["request_id"].as_str());
    (e.event.clone(), id.map(str::to_string))
}

#[test]
fn event_stream_shows_pending_decided_started_finished_in_order() {
    let (w, admin) = start(&policy(
        "allow",
        "  - name: ask-printf\n    command: printf\n    action: ask\n",
    ));
    let approver = admin.create_token("gina", "approve");
    let reader = admin.create_token("watcher", "read");
    let mut events = EventStream::connect(&reader, None);
    let mut shim = ShimCall::spawn(&w, &Call::new("printf").arg("streamed"));
    let (id, _) = shim.approval_id(STEP);
    approver.post_json(&format!("/api/v1/requests/{id}/approve"), &json!({}), 200);
    let out = shim.finish();
    assert_eq!(out.stdout, b"streamed", "{out:?}");
    let got = events.events_until(STEP, |e| {
        kind_and_id(e) == ("request.finished".to_string(), Some(id.clone()))
    });
    let ids: Vec<u64> = got
        .iter()
        .map(|e| e.id.unwrap_or_else(|| panic!("event without id: {e:?}")))
        .collect();
    assert!(
        ids.windows(2).all(|p| p[0] < p[1]),
        "event ids not increasing: {got:?}"
    );
    let mine: Vec<&clawrden_e2e::api::SseEvent> = got
        .iter()
        .filter(|e| kind_and_id(e).1.as_deref() == Some(id.as_str()))
        .collect();
    let kinds: Vec<&str> = mine.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "request.pending",
            "request.decided",
            "request.started",
            "request.finished"
        ],
        "{got:?}"
    );
    let decided = mine[1].json();
    assert_eq!(decided["by"], "gina", "{decided}");
    assert_eq!(decided["action"], "allow", "{decided}");
    let finished = mine[3].json();
    assert_eq!(finished["state"], "done", "{finished}");
    assert_eq!(finished["exit_code"], 0, "{finished}");
}

#[test]
fn last_event_id_resume_replays_exactly_the_missed_events() {
    let (w, admin) = start(&policy("allow", "  []\n"));
    let reader = admin.create_token("watcher", "read");
    let mut live = EventStream::connect(&reader, None);
    let run = |token: &str| -> String {
        let out = w.run(&Call::new("printf").args(["%s", token]));
        assert_eq!(out.stdout, token.as_bytes(), "{out:?}");
        w.request_id_for(token)
    };
    let finished = |id: String| {
        move |e: &clawrden_e2e::api::SseEvent| {
            kind_and_id(e) == ("request.finished".to_string(), Some(id.clone()))
        }
    };
    let first = run("resume-1");
    let seen = live.events_until(STEP, finished(first));
    let last_seen = seen.last().unwrap().id.expect("event id");
    // Missed by a client that disconnected after `last_seen`:
    let second = run("resume-2");
    let third = run("resume-3");
    let mut missed = live.events_until(STEP, finished(second));
    missed.extend(live.events_until(STEP, finished(third)));
    assert!(missed.len() >= 2, "{missed:?}");

    let mut resumed = EventStream::connect(&reader, Some(last_seen));
    let replay: Vec<_> = (0..missed.len())
        .map(|_| resumed.next_event(STEP))
        .collect();
    assert_eq!(replay, missed, "replay after Last-Event-ID {last_seen}");
    // Then live events continue with nothing repeated and nothing skipped.
    let fourth = run("resume-4");
    let live_tail = live.events_until(STEP, finished(fourth.clone()));
    let resumed_tail = resumed.events_until(STEP, finished(fourth));
    assert_eq!(resumed_tail, live_tail, "live events after the replay");
}

#[test]
fn thousand_pending_asks_are_all_listed() {
    const N: usize = 1000;
    let w = TestWarden::builder()
        .policy(policy("ask", "  []\n"))
        .api()
        .setting("max_pending_per_prisoner", N)
        .setting("max_connections_per_prisoner", N + 8)
        .setting("max_connections", N + 8)
        .start();
    let admin = Api::of(&w).with_token(w.admin_token());
    // Raw protocol clients: what a shim is on the wire, without 1,000 processes.
    let cwd = w.dir().to_str().unwrap().to_string();
    let mut streams = Vec::with_capacity(N);
    for i in 0..N {
        streams.push(raw_ask_send(
            &w.socket,
            &["printf", &format!("pending-{i}")],
            &cwd,
        ));
    }
    let asks: Vec<RawAsk> = streams.into_iter().map(RawAsk::read_pending).collect();
    let want: HashSet<String> = asks.iter().map(|a| a.request_id.clone()).collect();
    assert_eq!(want.len(), N, "duplicate request ids among {N} asks");

    let start = Instant::now();
    let listed = admin.get_json(&format!("/api/v1/requests?state=pending&limit={N}"));
    let took = start.elapsed();
    println!("GET /api/v1/requests?state=pending&limit={N} with {N} pending: {took:?}");
    let got = ids_of(&listed["requests"]);
    assert_eq!(got.len(), N, "listed {} of {N} pending", got.len());
    assert_eq!(
        got.iter().cloned().collect::<HashSet<_>>(),
        want,
        "the pending listing is not exactly the {N} asks"
    );
    assert_eq!(admin.get_json("/api/v1/status")["queue"]["pending"], N);

    // Hanging up cancels every one of them.
    drop(asks);
    poll_until(
        "the pending queue to empty after 1,000 hang-ups",
        Duration::from_secs(120),
        || admin.pending_ids(N as u32).is_empty().then_some(()),
    );
    let s = admin.get_json("/api/v1/status");
    assert_eq!(s["queue"]["pending"], 0, "{s}");
}
