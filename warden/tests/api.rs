//! The HTTP API over real HTTP: a real control plane on a temp state dir, served by
//! `api::serve` on 127.0.0.1:0, driven by a small HTTP/1.1 client written here.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clawrden_policy::Policy;
use clawrden_protocol::{read_message, write_message, Action as ProtoAction, Message, Request};
use clawrden_warden::api;
use clawrden_warden::audit::{Audit, DEFAULT_MAX_SIZE};
use clawrden_warden::auth::Scope;
use clawrden_warden::cli::{ExecutorName, LogFormat};
use clawrden_warden::clock::SystemClock;
use clawrden_warden::config::{PrisonerSocket, WardenConfig};
use clawrden_warden::control::{ControlOptions, ControlPlane, PrisonerConfig};
use clawrden_warden::exec_registry::ExecutorRegistry;
use clawrden_warden::executor::{ExecIo, ExecRequest, Executor, Outcome, RunFuture, Started};
use clawrden_warden::policy_store::PolicyStore;
use clawrden_warden::server::Warden;
use clawrden_warden::store::{Action, ExitStatus, NewRequest, RequestState, Store, Timestamp};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[path = "common/tempdir.rs"]
#[allow(dead_code)] // each test crate uses part of the shared helper
mod tempdir;
use tempdir::TempDir;

const POLICY: &str = "\
version: 1
default_action: deny
default_timeout: 30s
approval_timeout: 10s
default_executor: local
rules:
  - name: fetch
    command: curl
    action: ask
    reason: network access needs a person
  - name: git-read
    command: git
    args: [status]
    action: allow
  - name: no-recursive-rm
    command: rm
    flags: [-r, -R, --recursive]
    action: deny
";

/// A control plane and the API serving it, with one token of each scope.
struct Api {
    _dir: TempDir,
    addr: SocketAddr,
    control: Arc<ControlPlane>,
    admin: String,
    approver: String,
    reader: String,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Api {
    async fn start() -> Api {
        Api::start_with(None).await
    }

    async fn start_with(metrics_token: Option<&str>) -> Api {
        let dir = TempDir::new();
        let policy_path = dir.path().join("policy.yaml");
        std::fs::write(&policy_path, POLICY).unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        let clock = Arc::new(SystemClock);
        let key = clawrden_warden::audit::AuditKey::generate().unwrap();
        let audit = Audit::new(
            state_dir.join("audit"),
            DEFAULT_MAX_SIZE,
            clock.clone(),
            Arc::new(key),
        );
        let policy = Arc::new(PolicyStore::new(
            policy_path.clone(),
            Policy::load(&policy_path).unwrap(),
            Some(audit.clone()),
        ));
        let store = Arc::new(Store::open(&state_dir).unwrap());
        let control = ControlPlane::start(ControlOptions {
            state_dir: state_dir.clone(),
            store,
            audit,
            policy,
            clock,
            prisoners: vec![PrisonerConfig {
                name: "agent-1".into(),
                socket: dir.path().join("w.sock").display().to_string(),
                container: None,
            }],
            runtime: None,
            metrics_token: metrics_token.map(str::to_owned),
        })
        .unwrap();
        control.set_sockets_ready(true);
        let admin = std::fs::read_to_string(state_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        let root = control
            .authenticate(&admin, IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .unwrap();
        let approver = control
            .create_token("approver", Scope::Approve, &root)
            .await
            .unwrap()
            .token;
        let reader = control
            .create_token("reader", Scope::Read, &root)
            .await
            .unwrap()
            .token;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(api::serve(listener, control.clone(), async move {
            let _ = stopped.await;
        }));
        Api {
            _dir: dir,
            addr,
            control,
            admin,
            approver,
            reader,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    async fn send(&self, req: Req<'_>) -> Resp {
        req.send(self.addr).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Req::new("GET", path).token(token)).await
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("the API shuts down within 10 s")
                .unwrap()
                .unwrap();
        }
    }
}

fn error_body(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

// ---------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client over TcpStream: one request per connection (Connection: close),
// optionally from a chosen loopback source address, so that tests that present bad
// tokens do not share the per-address failure budget.
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

struct Req<'a> {
    method: &'a str,
    path: &'a str,
    token: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    body: Option<&'a [u8]>,
    withhold_body: bool,
    from: Ipv4Addr,
}

impl<'a> Req<'a> {
    fn new(method: &'a str, path: &'a str) -> Req<'a> {
        Req {
            method,
            path,
            token: None,
            headers: Vec::new(),
            body: None,
            withhold_body: false,
            from: Ipv4Addr::LOCALHOST,
        }
    }

    fn token(mut self, t: Option<&'a str>) -> Self {
        self.token = t;
        self
    }

    fn header(mut self, k: &'a str, v: &'a str) -> Self {
        self.headers.push((k, v));
        self
    }

    fn json(mut self, body: &'a str) -> Self {
        self.headers.push(("Content-Type", "application/json"));
        self.body = Some(body.as_bytes());
        self
    }

    fn raw_body(mut self, body: &'a [u8]) -> Self {
        self.body = Some(body);
        self
    }

    /// Announces the body in Content-Length but does not send it.
    fn head_only(mut self) -> Self {
        self.withhold_body = true;
        self
    }

    fn from(mut self, ip: Ipv4Addr) -> Self {
        self.from = ip;
        self
    }

    fn head(&self, close: bool) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\n",
            self.method, self.path
        );
        if close {
            head.push_str("Connection: close\r\n");
        }
        if let Some(t) = self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = self.body {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if let Some(b) = self.body.filter(|_| !self.withhold_body) {
            out.extend_from_slice(b);
        }
        out
    }

    async fn connect(&self, addr: SocketAddr) -> TcpStream {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(IpAddr::V4(self.from), 0))
            .unwrap();
        sock.connect(addr).await.unwrap()
    }

    async fn send(self, addr: SocketAddr) -> Resp {
        let mut stream = self.connect(addr).await;
        stream.write_all(&self.head(true)).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
            .await
            .expect("response within 20 s")
            .unwrap();
        parse_response(&raw)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits a response into status, headers and the rest of the bytes.
fn parse_head(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = find(raw, b"\r\n\r\n").expect("complete response head");
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    (status, headers, raw[end + 4..].to_vec())
}

/// Decodes a chunked body; panics if it is not complete (no terminating chunk).
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&rest[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn parse_response(raw: &[u8]) -> Resp {
    let (status, headers, rest) = parse_head(raw);
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked { dechunk(&rest) } else { rest };
    Resp {
        status,
        headers,
        body,
    }
}

/// An open SSE response: the head, then frames read as they come.
struct EventStream {
    stream: TcpStream,
    status: u16,
    headers: Vec<(String, String)>,
    /// Raw (chunk-encoded) bytes not yet decoded.
    pending: Vec<u8>,
    /// Decoded body text not yet consumed.
    text: String,
}

impl EventStream {
    async fn open(req: Req<'_>, addr: SocketAddr) -> EventStream {
        let mut stream = req.connect(addr).await;
        stream.write_all(&req.head(false)).await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while find(&raw, b"\r\n\r\n").is_none() {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("SSE head within 10 s")
                .unwrap();
            assert!(n > 0, "connection closed before the response head");
            raw.extend_from_slice(&buf[..n]);
        }
        let (status, headers, pending) = parse_head(&raw);
        EventStream {
            stream,
            status,
            headers,
            pending,
            text: String::new(),
        }
    }

    fn decode_available(&mut self) {
        loop {
            let Some(line_end) = find(&self.pending, b"\r\n") else {
                return;
            };
            let size_text = std::str::from_utf8(&self.pending[..line_end]).unwrap();
            let size = usize::from_str_radix(size_text.trim(), 16).unwrap();
            if self.pending.len() < line_end + 2 + size + 2 {
                return;
            }
            let data = &self.pending[line_end + 2..line_end + 2 + size];
            self.text.push_str(std::str::from_utf8(data).unwrap());
            self.pending.drain(..line_end + 2 + size + 2);
        }
    }

    /// The next frame (text up to and including the blank line), waiting up to 10 s.
    async fn next_frame(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        loop {
            self.decode_available();
            if let Some(end) = self.text.find("\n\n") {
                let frame: String = self.text.drain(..end + 2).collect();
                return frame;
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .expect("an SSE frame within 10 s")
                .unwrap();
            assert!(n > 0, "event stream closed; got so far: {:?}", self.text);
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// One row of the authorization matrix: a route, what to send, and the status expected
/// for no token, a bad token, and tokens of scope read, approve and admin.
struct Row {
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    expect: [u16; 5],
    /// An endless SSE response: only its head is read.
    stream: bool,
}

const fn row(
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    expect: [u16; 5],
) -> Row {
    Row {
        method,
        route,
        path,
        body,
        expect,
        stream: false,
    }
}

const BAD_TOKEN: &str = "clwd_0000000000000000000000000000000000000000000000000000000000000000";

fn matrix() -> Vec<Row> {
    const OPEN: [u16; 5] = [200; 5];
    const READ: [u16; 5] = [401, 401, 200, 200, 200];
    vec![
        row("GET", "/healthz", "/healthz", None, OPEN),
        row("GET", "/readyz", "/readyz", None, OPEN),
        row("GET", "/metrics", "/metrics", None, OPEN),
        row(
            "GET",
            "/api/v1/openapi.json",
            "/api/v1/openapi.json",
            None,
            OPEN,
        ),
        row("GET", "/api/v1/status", "/api/v1/status", None, READ),
        row(
            "GET",
            "/api/v1/requests",
            "/api/v1/requests?state=pending&limit=10",
            None,
            READ,
        ),
        row(
            "GET",
            "/api/v1/requests/{id}",
            "/api/v1/requests/01NOSUCHREQUEST",
            None,
            [401, 401, 404, 404, 404],
        ),
        row(
            "POST",
            "/api/v1/requests/{id}/approve",
            "/api/v1/requests/01NOSUCHREQUEST/approve",
            Some("{}"),
            [401, 401, 403, 404, 404],
        ),
        row(
            "POST",
            "/api/v1/requests/{id}/deny",
            "/api/v1/requests/01NOSUCHREQUEST/deny",
            Some("{\"reason\":\"no\"}"),
            [401, 401, 403, 404, 404],
        ),
        row(
            "GET",
            "/api/v1/history",
            "/api/v1/history?limit=5&since=1h",
            None,
            READ,
        ),
        row(
            "GET",
            "/api/v1/history/export",
            "/api/v1/history/export?format=jsonl",
            None,
            READ,
        ),
        row("GET", "/api/v1/prisoners", "/api/v1/prisoners", None, READ),
        row(
            "POST",
            "/api/v1/prisoners/{name}/kill",
            "/api/v1/prisoners/agent-1/kill",
            Some("{}"),
            [401, 401, 403, 403, 409],
        ),
        row(
            "POST",
            "/api/v1/prisoners/{name}/pause",
            "/api/v1/prisoners/agent-1/pause",
            Some("{\"duration\":\"10m\"}"),
            [401, 401, 403, 403, 409],
        ),
        row(
            "POST",
            "/api/v1/prisoners/{name}/resume",
            "/api/v1/prisoners/agent-1/resume",
            Some("{}"),
            [401, 401, 403, 403, 409],
        ),
        row("GET", "/api/v1/grants", "/api/v1/grants", None, READ),
        row(
            "DELETE",
            "/api/v1/grants/{id}",
            "/api/v1/grants/999",
            None,
            [401, 401, 403, 404, 404],
        ),
        row("GET", "/api/v1/policy", "/api/v1/policy", None, READ),
        row(
            "POST",
            "/api/v1/policy/explain",
            "/api/v1/policy/explain",
            Some("{\"argv\":[\"git\",\"status\"]}"),
            [401, 401, 403, 200, 200],
        ),
        Row {
            stream: true,
            ..row("GET", "/api/v1/events", "/api/v1/events", None, READ)
        },
        row(
            "POST",
            "/api/v1/lockdown",
            "/api/v1/lockdown",
            Some("{\"on\":false,\"reason\":\"matrix\"}"),
            [401, 401, 403, 403, 200],
        ),
        row(
            "GET",
            "/api/v1/tokens",
            "/api/v1/tokens",
            None,
            [401, 401, 403, 403, 200],
        ),
        row(
            "POST",
            "/api/v1/tokens",
            "/api/v1/tokens",
            Some("{\"name\":\"made-by-matrix\",\"scope\":\"read\"}"),
            [401, 401, 403, 403, 201],
        ),
        row(
            "DELETE",
            "/api/v1/tokens/{id}",
            "/api/v1/tokens/no-such-token",
            None,
            [401, 401, 403, 403, 404],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_every_route_by_every_kind_of_caller() {
    let mut api = Api::start().await;
    let rows = matrix();
    // Every API route is in the matrix, except the dashboard's cookie login routes.
    let covered: BTreeSet<(&str, &str)> = rows.iter().map(|r| (r.method, r.route)).collect();
    let served: BTreeSet<(&str, &str)> = api::route_table()
        .into_iter()
        .filter(|(_, p)| *p != "/api/v1/session")
        .collect();
    assert_eq!(covered, served);

    let callers: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("bad token", Some(BAD_TOKEN)),
        ("read", Some(&api.reader)),
        ("approve", Some(&api.approver)),
        ("admin", Some(&api.admin)),
    ];
    let mut failures = Vec::new();
    for (n, row) in rows.iter().enumerate() {
        for (i, (who, token)) in callers.iter().enumerate() {
            // Each bad-token call comes from its own loopback address, so the matrix
            // does not run into the failed-authentication limit.
            let from = Ipv4Addr::new(127, 0, 1, n as u8 + 1);
            let mut req = Req::new(row.method, row.path).token(*token).from(from);
            if let Some(b) = row.body {
                req = req.json(b);
            }
            let (status, headers) = if row.stream {
                let s = EventStream::open(req, api.addr).await;
                (s.status, s.headers)
            } else {
                let r = api.send(req).await;
                if r.status >= 400 {
                    // Every error is the JSON error shape.
                    let v = r.json();
                    assert!(
                        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                        "{} {} as {who}: {v}",
                        row.method,
                        row.path
                    );
                }
                (r.status, r.headers)
            };
            if status != row.expect[i] {
                failures.push(format!(
                    "{} {} as {who}: got {status}, expected {}",
                    row.method, row.path, row.expect[i]
                ));
            }
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
            assert_eq!(header("cache-control").as_deref(), Some("no-store"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_errors_have_exact_json_bodies() {
    let mut api = Api::start().await;
    let r = api.get("/api/v1/status", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"clawrden\"")
    );
    assert_eq!(
        r.json(),
        error_body(
            "unauthorized",
            "this needs an API token; send it as `Authorization: Bearer <token>` (create one with `clawctl token create`)"
        )
    );
    let r = api.get("/api/v1/status", Some(BAD_TOKEN)).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    let r = api
        .send(Req::new("GET", "/api/v1/status").header("Authorization", "Basic YWRtaW46YWRtaW4="))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        error_body(
            "unauthorized",
            "the Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`"
        )
    );
    let r = api.get("/api/v1/tokens", Some(&api.reader)).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        error_body(
            "forbidden",
            "token \"reader\" has scope read, this needs admin"
        )
    );
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_json_404_and_405() {
    let mut api = Api::start().await;
    let r = api.get("/api/v1/nope", Some(&api.admin)).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        error_body(
            "not_found",
            "no route for GET /api/v1/nope; see /api/v1/openapi.json for the API"
        )
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let r = api
        .send(Req::new("DELETE", "/api/v1/status").token(Some(&api.admin)))
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.json(),
        error_body(
            "method_not_allowed",
            "/api/v1/status does not accept DELETE; see /api/v1/openapi.json for the API"
        )
    );
    let r = api
        .get("/api/v1/requests/01NOSUCHREQUEST", Some(&api.reader))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        error_body("not_found", "no request 01NOSUCHREQUEST")
    );
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_parsed_strictly() {
    let mut api = Api::start().await;
    let deny = "/api/v1/requests/01NOSUCHREQUEST/deny";
    let tok = Some(api.approver.as_str());

    let r = api
        .send(Req::new("POST", deny).token(tok).json("{\"reason\":"))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        error_body(
            "bad_request",
            "malformed JSON body: EOF while parsing a value at line 1 column 10"
        )
    );
    let r = api
        .send(
            Req::new("POST", deny)
                .token(tok)
                .json("{\"reason\":\"x\",\"force\":true}"),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        error_body(
            "bad_request",
            "unacceptable JSON body: unknown field `force`, expected `reason`"
        )
    );
    let r = api
        .send(Req::new("POST", deny).token(tok).json("[\"x\"]"))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        error_body(
            "bad_request",
            "the body must be a JSON object, like {\"reason\": \"...\"}"
        )
    );
    let r = api
        .send(
            Req::new("POST", deny)
                .token(tok)
                .header("Content-Type", "text/plain")
                .raw_body(b"{}"),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        error_body(
            "bad_request",
            "the body must be a JSON object sent with Content-Type: application/json"
        )
    );
    // A body over 64 KiB.
    // A body announced larger than 64 KiB is refused before it is read (the test sends
    // only the head: a server that closes with unread data would reset the connection).
    let big = "x".repeat(70 * 1024);
    let r = api
        .send(Req::new("POST", deny).token(tok).json(&big).head_only())
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    // An empty body without Content-Type is `{}`: the request itself is then looked up.
    let r = api.send(Req::new("POST", deny).token(tok)).await;
    assert_eq!(r.status, 404);

    // Values that parse but are not acceptable: 422.
    let approve = "/api/v1/requests/01NOSUCHREQUEST/approve";
    let r = api
        .send(
            Req::new("POST", approve)
                .token(tok)
                .json("{\"remember\":\"25h\"}"),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["code"], "invalid");
    let r = api
        .send(
            Req::new("POST", approve)
                .token(tok)
                .json("{\"remember\":\"soon\"}"),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["code"], "invalid");
    let admin = Some(api.admin.as_str());
    let r = api
        .send(
            Req::new("POST", "/api/v1/prisoners/agent-1/pause")
                .token(admin)
                .json("{\"duration\":\"ten minutes\"}"),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = api
        .send(
            Req::new("POST", "/api/v1/prisoners/agent-1/kill")
                .token(admin)
                .json("{\"duration\":\"10m\"}"),
        )
        .await;
    assert_eq!(r.status, 400, "kill takes no duration");
    let r = api
        .send(
            Req::new("POST", "/api/v1/tokens")
                .token(admin)
                .json("{\"name\":\"x\",\"scope\":\"root\"}"),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json(),
        error_body(
            "invalid",
            "unknown scope \"root\"; expected read, approve or admin"
        )
    );
    let r = api
        .send(Req::new("POST", "/api/v1/lockdown").token(admin).json("{}"))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        error_body("bad_request", "unacceptable JSON body: missing field `on`")
    );

    // Query strings: unknown parameters 400, bad values 422.
    let read = Some(api.reader.as_str());
    let r = api.get("/api/v1/history?stat=pending", read).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "bad_request");
    let r = api.get("/api/v1/history?limit=0", read).await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json(),
        error_body(
            "invalid",
            "limit=\"0\" is not valid; use a whole number from 1 to 500"
        )
    );
    let r = api.get("/api/v1/history?since=yesterday", read).await;
    assert_eq!(r.status, 422);
    let r = api.get("/api/v1/history/export?format=xml", read).await;
    assert_eq!(r.status, 422);
    let r = api
        .get("/api/v1/history/export?format=csv&since=yesterday", read)
        .await;
    assert_eq!(r.status, 422, "a bad filter fails before the stream starts");
    assert_eq!(r.json()["error"]["code"], "invalid");
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_rate_limited_per_address() {
    let mut api = Api::start().await;
    let attacker = Ipv4Addr::new(127, 0, 2, 1);
    for _ in 0..5 {
        let r = api
            .send(
                Req::new("GET", "/api/v1/status")
                    .token(Some(BAD_TOKEN))
                    .from(attacker),
            )
            .await;
        assert_eq!(r.status, 401);
    }
    let r = api
        .send(
            Req::new("GET", "/api/v1/status")
                .token(Some(BAD_TOKEN))
                .from(attacker),
        )
        .await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    // A valid token still gets in from that address: a process sharing it (everything
    // on loopback) cannot lock operators out of the approval queue...
    let r = api
        .send(
            Req::new("GET", "/api/v1/status")
                .token(Some(&api.admin))
                .from(attacker),
        )
        .await;
    assert_eq!(r.status, 200);
    // ...while its bad tokens keep getting 429, and other addresses are unaffected.
    let r = api
        .send(
            Req::new("GET", "/api/v1/status")
                .token(Some(BAD_TOKEN))
                .from(attacker),
        )
        .await;
    assert_eq!(r.status, 429);
    let r = api.get("/api/v1/status", Some(&api.admin)).await;
    assert_eq!(r.status, 200);
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let mut api = Api::start().await;
    let r = api.get("/healthz", None).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = api.get("/readyz", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"ready": true, "checks": {"audit": "ok", "docker": "not used", "policy": "ok", "sockets": "ok", "store": "ok"}})
    );
    api.control.set_sockets_ready(false);
    let r = api.get("/readyz", None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["ready"], false);
    assert_eq!(r.json()["failing"], json!(["sockets"]));
    let r = api.get("/metrics", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        r.text().contains("# TYPE clawrden_queue_size gauge"),
        "{}",
        r.text()
    );
    api.shutdown().await;

    let mut api = Api::start_with(Some("metrics-secret")).await;
    assert_eq!(api.get("/metrics", None).await.status, 401);
    let r = api.get("/metrics", Some("wrong-secret")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    // An API token is not the metrics token.
    assert_eq!(api.get("/metrics", Some(&api.admin)).await.status, 401);
    let r = api.get("/metrics", Some("metrics-secret")).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("# TYPE clawrden_queue_size gauge"));
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_flag_that_matched_and_refuses_bad_command_names() {
    let mut api = Api::start().await;
    let explain = |argv: &'static str| {
        Req::new("POST", "/api/v1/policy/explain")
            .token(Some(&api.approver))
            .json(argv)
    };
    let r = api
        .send(explain(r#"{"argv":["rm","-v","-Rf","build"]}"#))
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["action"], "deny");
    assert_eq!(v["rule"], "no-recursive-rm");
    assert_eq!(v["refused"], Value::Null);
    let last = &v["checks"][2];
    assert_eq!(
        last["flag"],
        json!({"flag": "-R", "argument": 2, "token": "-Rf", "form": "combined"})
    );
    assert_eq!(
        last["why"],
        "command `rm` matches `rm`; flags: flag `-R` is inside argument 2 `-Rf` (combined short options)"
    );
    assert_eq!(v["checks"][0]["flag"], Value::Null);

    let r = api
        .send(explain(r#"{"argv":["/usr/bin/rm/.","-rf","/"]}"#))
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let reason = "argv[0] /usr/bin/rm/. ends in `.` or `..`, which is not a command name; call the tool by its name";
    assert_eq!(
        (&v["action"], &v["rule"], &v["reason"], &v["refused"]),
        (&json!("deny"), &Value::Null, &json!(reason), &json!(reason))
    );
    assert_eq!(v["checks"], json!([]));
    assert!(v["text"]
        .as_str()
        .unwrap()
        .starts_with(&format!("refused before any rule: {reason}\n")));
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_exactly_the_served_routes() {
    let mut api = Api::start().await;
    let r = api.get("/api/v1/openapi.json", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = api::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(documented, served);
    // Every documented route is really routed (no 404 "no route", no 405).
    for (method, path) in &served {
        let concrete = path.replace("{id}", "x").replace("{name}", "agent-1");
        let r = api.send(Req::new(method, &concrete)).await;
        assert!(
            r.status != 405 && !(r.status == 404 && r.text().contains("no route")),
            "{method} {path}: {}",
            r.status
        );
    }
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_replay_after_last_event_id_then_follow_live() {
    let mut api = Api::start().await;
    // Creating the test's tokens already emitted events; count from the first of ours.
    let first = api.control.emit("control", json!({ "n": 1 }));
    api.control.emit("control", json!({ "n": 2 }));
    api.control.emit("control", json!({ "n": 3 }));
    let read = Some(api.reader.as_str());
    let after = first.to_string();
    let mut s = EventStream::open(
        Req::new("GET", "/api/v1/events")
            .token(read)
            .header("Last-Event-ID", &after),
        api.addr,
    )
    .await;
    assert_eq!(s.status, 200);
    assert_eq!(
        s.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str()),
        Some("text/event-stream")
    );
    assert_eq!(
        s.next_frame().await,
        format!("id: {}\nevent: control\ndata: {{\"n\":2}}\n\n", first + 1)
    );
    assert_eq!(
        s.next_frame().await,
        format!("id: {}\nevent: control\ndata: {{\"n\":3}}\n\n", first + 2)
    );
    let live = api.control.emit("request.pending", json!({ "id": "r4" }));
    assert_eq!(live, first + 3);
    assert_eq!(
        s.next_frame().await,
        format!("id: {live}\nevent: request.pending\ndata: {{\"id\":\"r4\"}}\n\n")
    );

    // The query parameter works too; an id this run never handed out means "start over".
    let mut s = EventStream::open(
        Req::new("GET", "/api/v1/events?last_event_id=999").token(read),
        api.addr,
    )
    .await;
    assert_eq!(s.next_frame().await, "event: reset\ndata: {}\n\n");
    // Then every event still buffered, from the first of this run.
    assert!(s.next_frame().await.starts_with("id: 1\nevent: control\n"));

    let r = api
        .send(Req::new("GET", "/api/v1/events?last_event_id=abc").token(read))
        .await;
    assert_eq!(r.status, 400);
    // Shutdown ends the open streams instead of waiting for them forever.
    api.shutdown().await;
}

fn stored_request(
    id: &str,
    argv: &[&str],
    created_ms: i64,
    state: RequestState,
    action: Action,
) -> NewRequest {
    NewRequest {
        id: id.to_owned(),
        prisoner: "agent-1".to_owned(),
        uid: 1000,
        gid: 1000,
        pid: 42,
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        cwd: b"/work".to_vec(),
        env_names: vec![b"PATH".to_vec()],
        rule: Some("fetch".to_owned()),
        action: Some(action),
        reason: Some("network access needs a person".to_owned()),
        executor: Some("local".to_owned()),
        state,
        created_at: Timestamp(created_ms),
        decided_at: Some(Timestamp(created_ms)),
        parent_request: None,
        unverified_parent: None,
        policy_sha256: None,
    }
}

/// 2026-01-02T03:04:05.000Z
const T0: i64 = 1_767_323_045_000;

async fn seed_history(api: &Api) {
    let store = api.control.store().clone();
    tokio::task::spawn_blocking(move || {
        store
            .insert_request(&stored_request(
                "01AAAAAAAAAAAAAAAAAAAAAAAA",
                &["curl", "-H", "X: \"a,b\"", "https://example.com"],
                T0,
                RequestState::Denied,
                Action::Deny,
            ))
            .unwrap();
        store
            .insert_request(&stored_request(
                "01BBBBBBBBBBBBBBBBBBBBBBBB",
                &["git", "status"],
                T0 + 1000,
                RequestState::Running,
                Action::Allow,
            ))
            .unwrap();
        store
            .finish_request(
                "01BBBBBBBBBBBBBBBBBBBBBBBB",
                ExitStatus::Code(0),
                Timestamp(T0 + 3000),
            )
            .unwrap();
    })
    .await
    .unwrap();
}

/// Newest first; argv is one column (its JSON array), quoted as CSV requires.
const EXPECTED_CSV: &str = "\
id,created_at,prisoner,uid,argv,cwd,rule,action,reason,executor,state,exit_code,signal,approver,finished_at
01BBBBBBBBBBBBBBBBBBBBBBBB,2026-01-02T03:04:06.000Z,agent-1,1000,\"[\"\"git\"\",\"\"status\"\"]\",/work,fetch,allow,network access needs a person,local,done,0,,,2026-01-02T03:04:08.000Z
01AAAAAAAAAAAAAAAAAAAAAAAA,2026-01-02T03:04:05.000Z,agent-1,1000,\"[\"\"curl\"\",\"\"-H\"\",\"\"X: \\\"\"a,b\\\"\"\"\",\"\"https://example.com\"\"]\",/work,fetch,deny,network access needs a person,local,denied,,,,2026-01-02T03:04:05.000Z
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_csv_and_json_lines_of_the_filtered_history() {
    let mut api = Api::start().await;
    seed_history(&api).await;
    let read = Some(api.reader.as_str());
    let r = api.get("/api/v1/history/export?format=csv", read).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"clawrden-history.csv\"")
    );
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "streamed");
    assert_eq!(r.text(), EXPECTED_CSV);

    let r = api
        .get("/api/v1/history/export?format=jsonl&command=git", read)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], "01BBBBBBBBBBBBBBBBBBBBBBBB");
    assert_eq!(lines[0]["argv"], json!(["git", "status"]));
    assert_eq!(lines[0]["exit_code"], 0);
    // The same filter through /history gives the same request.
    let r = api.get("/api/v1/history?command=git", read).await;
    assert_eq!(r.json()["requests"][0], lines[0]);
    assert_eq!(r.json()["next_cursor"], Value::Null);
    api.shutdown().await;
}

/// Runs nothing: reports a start and exit status 0 at once.
struct InstantExecutor;

impl Executor for InstantExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn run(&self, req: ExecRequest, io: ExecIo) -> RunFuture<'_> {
        Box::pin(async move {
            let _ = io.started.send(Started {
                pid: std::process::id(),
                program: req.argv[0].clone(),
                run_as: None,
            });
            Outcome::Exited(0)
        })
    }
}

/// A warden serving one prisoner socket, with the API on its control plane.
struct WardenWithApi {
    api: Api,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

async fn start_warden() -> WardenWithApi {
    let dir = TempDir::new();
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, POLICY).unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    let socket = dir.path().join("w.sock");
    let config = WardenConfig {
        policy: policy_path.clone(),
        state_dir: state_dir.clone(),
        executors: vec![ExecutorName::Local],
        exec_helper: PathBuf::from("/bin/true"),
        log_format: LogFormat::Pretty,
        stream_only: true,
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
    executors.insert("local", Arc::new(InstantExecutor));
    let warden = Warden::new(&config, Policy::load(&policy_path).unwrap(), executors).unwrap();
    let bound = warden.bind().unwrap();
    let control = bound.control();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    let admin = std::fs::read_to_string(state_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let root = control
        .authenticate(&admin, IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    let approver = control
        .create_token("approver", Scope::Approve, &root)
        .await
        .unwrap()
        .token;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (api_stop, api_stopped) = oneshot::channel::<()>();
    let api_handle = tokio::spawn(api::serve(listener, control.clone(), async move {
        let _ = api_stopped.await;
    }));
    WardenWithApi {
        api: Api {
            _dir: dir,
            addr,
            control,
            admin,
            approver,
            reader: String::new(),
            stop: Some(api_stop),
            handle: Some(api_handle),
        },
        socket,
        stop: Some(stop),
        handle: Some(handle),
    }
}

impl WardenWithApi {
    async fn shutdown(&mut self) {
        self.api.shutdown().await;
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }
}

/// A shim on a blocking thread: sends `argv`, reports the approval id it is told to
/// wait for, then returns every frame up to the end of the call.
fn ask(
    socket: PathBuf,
    argv: &[&str],
    approval: oneshot::Sender<String>,
) -> JoinHandle<Vec<Message>> {
    let argv: Vec<Vec<u8>> = argv.iter().map(|a| a.as_bytes().to_vec()).collect();
    tokio::task::spawn_blocking(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write_message(&mut s, &Message::hello()).unwrap();
        assert_eq!(read_message(&mut s).unwrap(), Some(Message::hello()));
        let tool_path = [b"/usr/bin/".as_slice(), &argv[0]].concat();
        write_message(
            &mut s,
            &Message::Request(Request {
                argv,
                tool_path,
                cwd: b"/work".to_vec(),
                env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
                parent_request: None,
                ..Default::default()
            }),
        )
        .unwrap();
        let mut frames = Vec::new();
        let mut approval = Some(approval);
        while let Some(m) = read_message(&mut s).unwrap() {
            if let Message::Pending { approval_id, .. } = &m {
                if let Some(tx) = approval.take() {
                    let _ = tx.send(approval_id.clone());
                }
            }
            let end = matches!(
                m,
                Message::Exit(_) | Message::Signaled(_) | Message::Error { .. }
            ) || matches!(&m, Message::Decision(d) if d.action == ProtoAction::Deny);
            frames.push(m);
            if end {
                break;
            }
        }
        frames
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_a_pending_request_runs_it_and_a_second_decision_is_409() {
    let mut w = start_warden().await;
    let (tx, rx) = oneshot::channel();
    let shim = ask(w.socket.clone(), &["curl", "https://example.com"], tx);
    let id = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("a Pending frame within 10 s")
        .unwrap();
    let api = &w.api;
    let tok = Some(api.approver.as_str());

    let r = api.get(&format!("/api/v1/requests/{id}"), tok).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "pending");
    assert_eq!(r.json()["approval"]["state"], "pending");
    let r = api.get("/api/v1/requests?state=pending", tok).await;
    assert_eq!(r.json()["requests"][0]["id"], id.as_str());

    let approve = format!("/api/v1/requests/{id}/approve");
    let r = api
        .send(
            Req::new("POST", &approve)
                .token(tok)
                .json("{\"note\":\"looks fine\"}"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["approval"]["state"], "approved");
    assert_eq!(v["approval"]["approver"], "approver");
    assert_eq!(v["approval"]["note"], "looks fine");

    let frames = shim.await.unwrap();
    assert!(
        frames
            .iter()
            .any(|m| matches!(m, Message::Decision(d) if d.action == ProtoAction::Allow)),
        "{frames:?}"
    );
    assert_eq!(frames.last(), Some(&Message::Exit(0)));

    let r = api
        .send(Req::new("POST", &approve).token(tok).json("{}"))
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "already_decided");
    let r = api
        .send(
            Req::new("POST", &format!("/api/v1/requests/{id}/deny"))
                .token(tok)
                .json("{}"),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "already_decided");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denying_a_pending_request_tells_the_shim_who_and_why() {
    let mut w = start_warden().await;
    let (tx, rx) = oneshot::channel();
    let shim = ask(w.socket.clone(), &["curl", "https://example.com"], tx);
    let id = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("a Pending frame within 10 s")
        .unwrap();
    let r = w
        .api
        .send(
            Req::new("POST", &format!("/api/v1/requests/{id}/deny"))
                .token(Some(&w.api.approver))
                .json("{\"reason\":\"not today\"}"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "denied");
    let frames = shim.await.unwrap();
    match frames.last() {
        Some(Message::Decision(d)) => {
            assert_eq!(d.action, ProtoAction::Deny);
            assert_eq!(d.reason, "denied by approver: not today");
        }
        other => panic!("expected a final deny, got {other:?}"),
    }
    w.shutdown().await;
}
