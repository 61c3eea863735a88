//! Talking to a real warden's HTTP API and socket the way people and shims do: a small
//! blocking HTTP/1.1 client over `std::net::TcpStream` (Content-Length and chunked
//! bodies), a Server-Sent-Events reader, a shim that waits for approval, and raw
//! protocol clients that park an `ask` in the queue without a shim process.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use clawrden_protocol::{read_message, write_message, Action, Message, Request};
use serde_json::Value;

use crate::run::{Call, Output, Watchdog, RUN_DEADLINE};
pub use crate::warden::free_local_addr;
use crate::warden::TestWarden;

/// How long one HTTP exchange may take before the test fails saying so. Generous: the
/// machine is shared and slow.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(60);

/// One HTTP response, body fully read (and de-chunked).
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `METHOD PATH`, for failure messages.
    pub what: String,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics naming the request when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}); status {}, body {:?}",
                self.what,
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the status; returns self for chaining.
    pub fn expect_status(self, status: u16) -> Response {
        assert_eq!(
            self.status, status,
            "{}: expected status {status}, got {}; body: {}",
            self.what, self.status, self
        );
        self
    }

    /// The `error.code` of an error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no error.code in {}", self.what, self))
            .to_string()
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 4000;
        let t = self.text();
        if t.len() > MAX {
            let mut end = MAX;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            write!(f, "{:?}... ({} bytes)", &t[..end], t.len())
        } else {
            write!(f, "{t:?}")
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} {}", self.what, self.status, self)
    }
}

/// A client of one warden's API, optionally with a bearer token.
#[derive(Clone, Debug)]
pub struct Api {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Api {
    /// The API of `w` (started with [`crate::WardenBuilder::api`]), without a token.
    pub fn of(w: &TestWarden) -> Api {
        Api {
            addr: w
                .api_addr
                .expect("this warden was started without .api(): it serves no HTTP API"),
            token: None,
        }
    }

    /// The same API with `token` as the bearer.
    pub fn with_token(&self, token: impl Into<String>) -> Api {
        Api {
            addr: self.addr,
            token: Some(token.into()),
        }
    }

    /// Sends one request (`Connection: close`) and reads the whole response.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        headers: &[(&str, &str)],
    ) -> Response {
        let what = format!("{method} {path}");
        let mut stream = self.send(method, path, body, headers, &what);
        let mut reader = BufReader::new(&mut stream);
        let (status, resp_headers) = read_head(&mut reader, &what);
        let mut body = Vec::new();
        if method != "HEAD" && status != 204 && status != 304 {
            body_reader(&mut reader, &resp_headers)
                .read_to_end(&mut body)
                .unwrap_or_else(|e| panic!("{what}: reading the response body: {e}"));
        }
        Response {
            status,
            headers: resp_headers,
            body,
            what,
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        headers: &[(&str, &str)],
        what: &str,
    ) -> TcpStream {
        let mut stream = TcpStream::connect_timeout(&self.addr, HTTP_DEADLINE)
            .unwrap_or_else(|e| panic!("{what}: cannot connect to the API at {}: {e}", self.addr));
        stream.set_read_timeout(Some(HTTP_DEADLINE)).unwrap();
        stream.set_write_timeout(Some(HTTP_DEADLINE)).unwrap();
        let _ = stream.set_nodelay(true);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some((content_type, bytes)) = body {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            ));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if let Some((_, bytes)) = body {
            out.extend_from_slice(bytes);
        }
        stream
            .write_all(&out)
            .unwrap_or_else(|e| panic!("{what}: sending the request: {e}"));
        stream
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None, &[])
    }

    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, None, &[])
    }

    /// POST with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Response {
        let bytes = body.to_string().into_bytes();
        self.request("POST", path, Some(("application/json", &bytes)), &[])
    }

    /// GET that must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        self.get(path).expect_status(200).json()
    }

    /// POST that must answer `status` with JSON.
    pub fn post_json(&self, path: &str, body: &Value, status: u16) -> Value {
        self.post(path, body).expect_status(status).json()
    }

    /// Creates a token of `scope` named `name` with this (admin) client; returns a
    /// client using it.
    pub fn create_token(&self, name: &str, scope: &str) -> Api {
        let v = self.post_json(
            "/api/v1/tokens",
            &serde_json::json!({ "name": name, "scope": scope }),
            201,
        );
        let token = v["token"]
            .as_str()
            .unwrap_or_else(|| panic!("POST /api/v1/tokens: no `token` string in {v}"));
        self.with_token(token)
    }

    /// `GET /api/v1/requests?state=pending&limit=N`: the ids listed.
    pub fn pending_ids(&self, limit: u32) -> Vec<String> {
        let v = self.get_json(&format!("/api/v1/requests?state=pending&limit={limit}"));
        ids_of(&v["requests"])
    }

    /// `GET /api/v1/requests/{id}`.
    pub fn request_view(&self, id: &str) -> Value {
        self.get_json(&format!("/api/v1/requests/{id}"))
    }

    /// Polls `GET /api/v1/requests/{id}` until its `state` is `state` (bounded).
    pub fn wait_request_state(&self, id: &str, state: &str, deadline: Duration) -> Value {
        let start = Instant::now();
        let last = loop {
            let v = self.request_view(id);
            if v["state"] == state {
                return v;
            }
            if start.elapsed() > deadline {
                break v;
            }
            thread::sleep(Duration::from_millis(50));
        };
        panic!("request {id} did not reach state {state:?} within {deadline:?}; last view: {last}")
    }

    /// Scrapes `/metrics`, which must answer 200.
    pub fn metrics(&self) -> String {
        self.get("/metrics").expect_status(200).text()
    }
}

/// The `id` of every object of a JSON array.
pub fn ids_of(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of requests, got {v}"))
        .iter()
        .map(|r| {
            r["id"]
                .as_str()
                .unwrap_or_else(|| panic!("request without a string id: {r}"))
                .to_string()
        })
        .collect()
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn read_line_crlf<R: BufRead>(r: &mut R, what: &str) -> String {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .unwrap_or_else(|e| panic!("{what}: reading the response: {e}"));
    if line.is_empty() {
        panic!("{what}: the server closed the connection before a complete response head");
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).unwrap_or_else(|e| panic!("{what}: response head is not UTF-8: {e}"))
}

fn read_head<R: BufRead>(r: &mut R, what: &str) -> (u16, Vec<(String, String)>) {
    let status_line = read_line_crlf(r, what);
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    assert!(
        version.starts_with("HTTP/1."),
        "{what}: not an HTTP/1.x status line: {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let line = read_line_crlf(r, what);
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{what}: bad header line {line:?}"));
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    (status, headers)
}

fn body_reader<'a, R: BufRead>(r: &'a mut R, headers: &[(String, String)]) -> BodyReader<'a, R> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        BodyReader::Chunked {
            inner: r,
            left: 0,
            done: false,
        }
    } else if let Some(n) = get("content-length") {
        let n: u64 = n
            .parse()
            .unwrap_or_else(|_| panic!("bad Content-Length {n:?}"));
        BodyReader::Length { inner: r, left: n }
    } else {
        BodyReader::ToEof { inner: r }
    }
}

/// A response body: chunked, Content-Length delimited, or up to the close.
enum BodyReader<'a, R: BufRead> {
    Chunked {
        inner: &'a mut R,
        left: u64,
        done: bool,
    },
    Length {
        inner: &'a mut R,
        left: u64,
    },
    ToEof {
        inner: &'a mut R,
    },
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_crlf_line<R: BufRead>(r: &mut R) -> io::Result<String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(invalid("chunked body ended inside a chunk header".into()));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|e| invalid(format!("chunk header is not UTF-8: {e}")))
}

impl<R: BufRead> Read for BodyReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BodyReader::ToEof { inner } => inner.read(buf),
            BodyReader::Length { inner, left } => {
                if *left == 0 || buf.is_empty() {
                    return Ok(0);
                }
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(invalid(format!(
                        "connection closed with {left} body bytes missing"
                    )));
                }
                *left -= n as u64;
                Ok(n)
            }
            BodyReader::Chunked { inner, left, done } => loop {
                if *done || buf.is_empty() {
                    return Ok(0);
                }
                if *left > 0 {
                    let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = inner.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(invalid("connection closed inside a chunk".into()));
                    }
                    *left -= n as u64;
                    if *left == 0 {
                        let end = read_crlf_line(*inner)?;
                        if !end.is_empty() {
                            return Err(invalid(format!("chunk not followed by CRLF: {end:?}")));
                        }
                    }
                    return Ok(n);
                }
                let size_line = read_crlf_line(*inner)?;
                let size_hex = size_line.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size_hex, 16)
                    .map_err(|_| invalid(format!("bad chunk size line {size_line:?}")))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        if read_crlf_line(*inner)?.is_empty() {
                            break;
                        }
                    }
                    *done = true;
                    return Ok(0);
                }
                *left = size;
            },
        }
    }
}

/// One Server-Sent Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<u64>,
    /// `event:` field (`message` when absent).
    pub event: String,
    pub data: String,
}

impl SseEvent {
    /// `data` as JSON; panics naming the event when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE event {self:?}: data is not JSON: {e}"))
    }
}

/// A live `GET /api/v1/events` subscription.
pub struct EventStream {
    reader: BufReader<Box<dyn Read + Send>>,
    socket: TcpStream,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// Owns the socket's buffered reader and de-chunks the body.
struct OwnedBody {
    inner: BufReader<TcpStream>,
    chunked: bool,
    left: u64,
    done: bool,
}

impl Read for OwnedBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.chunked {
            return self.inner.read(buf);
        }
        let mut r = BodyReader::Chunked {
            inner: &mut self.inner,
            left: self.left,
            done: self.done,
        };
        let res = r.read(buf);
        if let BodyReader::Chunked { left, done, .. } = r {
            self.left = left;
            self.done = done;
        }
        res
    }
}

impl EventStream {
    /// Subscribes; with `last_event_id`, sends `Last-Event-ID` to resume after it.
    /// Panics unless the answer is 200 `text/event-stream`.
    pub fn connect(api: &Api, last_event_id: Option<u64>) -> EventStream {
        let id_text = last_event_id.map(|i| i.to_string());
        let mut headers = vec![("Accept", "text/event-stream")];
        if let Some(id) = &id_text {
            headers.push(("Last-Event-ID", id));
        }
        let what = "GET /api/v1/events".to_string();
        let socket = api.send("GET", "/api/v1/events", None, &headers, &what);
        let mut inner = BufReader::new(socket.try_clone().expect("clone the SSE socket"));
        let (status, headers) = read_head(&mut inner, &what);
        if status != 200 {
            let mut body = Vec::new();
            let _ = body_reader(&mut inner, &headers).read_to_end(&mut body);
            panic!(
                "{what}: expected 200, got {status}: {:?}",
                String::from_utf8_lossy(&body)
            );
        }
        let ct = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(
            ct.starts_with("text/event-stream"),
            "{what}: Content-Type is {ct:?}, not text/event-stream"
        );
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        let body = OwnedBody {
            inner,
            chunked,
            left: 0,
            done: false,
        };
        EventStream {
            reader: BufReader::new(Box::new(body)),
            socket,
            status,
            headers,
        }
    }

    /// The next event (comments and keep-alives skipped). Panics if none arrives within
    /// `deadline` or the stream ends.
    pub fn next_event(&mut self, deadline: Duration) -> SseEvent {
        self.socket
            .set_read_timeout(Some(deadline))
            .expect("set SSE read timeout");
        let mut id = None;
        let mut event = String::new();
        let mut data: Vec<String> = Vec::new();
        let mut any_field = false;
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => panic!("the event stream ended (server closed it)"),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no server-sent event arrived within {deadline:?}")
                }
                Err(e) => panic!("reading the event stream: {e}"),
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if any_field {
                    return SseEvent {
                        id,
                        event: if event.is_empty() {
                            "message".to_string()
                        } else {
                            event
                        },
                        data: data.join("\n"),
                    };
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "id" => {
                    any_field = true;
                    id = Some(
                        value
                            .parse()
                            .unwrap_or_else(|_| panic!("SSE id {value:?} is not a u64")),
                    );
                }
                "event" => {
                    any_field = true;
                    event = value.to_string();
                }
                "data" => {
                    any_field = true;
                    data.push(value.to_string());
                }
                _ => {}
            }
        }
    }

    /// Events until one satisfies `stop` (included), each within `deadline`.
    pub fn events_until(
        &mut self,
        deadline: Duration,
        stop: impl Fn(&SseEvent) -> bool,
    ) -> Vec<SseEvent> {
        let mut got = Vec::new();
        loop {
            let e = self.next_event(deadline);
            let last = stop(&e);
            got.push(e);
            if last {
                return got;
            }
        }
    }
}

/// A shim process whose stderr is read line by line as it comes, so a test can act on
/// the `clawrden: waiting for approval <id>: ...` line while the call is pending.
pub struct ShimCall {
    child: Child,
    lines: mpsc::Receiver<Vec<u8>>,
    stderr: Vec<u8>,
    stdout: Option<thread::JoinHandle<Vec<u8>>>,
    dog: Option<Watchdog>,
    what: String,
}

/// The prefix of the line a shim prints while its call waits for a person.
pub const WAITING_PREFIX: &str = "clawrden: waiting for approval ";

impl ShimCall {
    /// Starts `call` through `w`'s shim with stdin `/dev/null`, stdout and stderr piped.
    pub fn spawn(w: &TestWarden, call: &Call) -> ShimCall {
        let what = format!("shim {} {:?}", call.tool, call.args);
        let mut cmd = w.shim_command(call);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let dog = Watchdog::new(child.id(), RUN_DEADLINE);
        let mut out = child.stdout.take().expect("stdout is piped");
        let stdout = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let err = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(err);
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        ShimCall {
            child,
            lines,
            stderr: Vec::new(),
            stdout: Some(stdout),
            dog: Some(dog),
            what,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most `deadline`) for the waiting line; returns the approval id and the
    /// whole line. Panics if stderr ends or says something else first.
    pub fn approval_id(&mut self, deadline: Duration) -> (String, String) {
        let line = match self.lines.recv_timeout(deadline) {
            Ok(line) => line,
            Err(e) => panic!(
                "{}: no line on stderr within {deadline:?} ({e}); stderr so far: {:?}",
                self.what,
                String::from_utf8_lossy(&self.stderr)
            ),
        };
        self.stderr.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).into_owned();
        let rest = text.strip_prefix(WAITING_PREFIX).unwrap_or_else(|| {
            panic!(
                "{}: first stderr line is not `{WAITING_PREFIX}<id>: ...`: {text:?}",
                self.what
            )
        });
        let (id, _) = rest
            .split_once(": ")
            .unwrap_or_else(|| panic!("{}: waiting line without `<id>: `: {text:?}", self.what));
        assert!(
            !id.is_empty() && !id.contains(char::is_whitespace),
            "{}: bad approval id in {text:?}",
            self.what
        );
        (id.to_string(), text)
    }

    /// Waits for the shim to exit; panics (after killing it) if it asks for approval
    /// instead, or says anything else on stderr before exiting.
    pub fn finish_expecting_no_ask(mut self) -> Output {
        while let Ok(line) = self.lines.recv_timeout(RUN_DEADLINE) {
            if line.starts_with(WAITING_PREFIX.as_bytes()) {
                let _ = self.child.kill();
                panic!(
                    "{}: asked for approval although it should not have: {:?}",
                    self.what,
                    String::from_utf8_lossy(&line)
                );
            }
            self.stderr.extend_from_slice(&line);
        }
        self.finish()
    }

    /// Sends SIGKILL to the shim (the call's connection closes with it).
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the shim");
    }

    /// Waits for the shim to exit (bounded by [`RUN_DEADLINE`]) and returns everything it
    /// wrote; stderr includes the lines already consumed.
    pub fn finish(mut self) -> Output {
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.what));
        let fired = self.dog.take().map(Watchdog::finish).unwrap_or(false);
        let stdout = self
            .stdout
            .take()
            .map(|t| t.join().expect("stdout reader"))
            .unwrap_or_default();
        // The reader thread ends at EOF, which follows the exit (or the last holder of
        // the pipe, which the watchdog bounds).
        while let Ok(line) = self.lines.recv_timeout(HTTP_DEADLINE) {
            self.stderr.extend_from_slice(&line);
        }
        let out = Output {
            status,
            stdout,
            stderr: std::mem::take(&mut self.stderr),
        };
        if fired {
            panic!(
                "{} hung for more than {RUN_DEADLINE:?} and was killed: {out:?}",
                self.what
            );
        }
        out
    }
}

impl Drop for ShimCall {
    fn drop(&mut self) {
        if self.dog.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A raw protocol client (what a shim is on the wire) whose `ask` waits in the queue
/// for as long as this value lives; dropping it closes the connection, which cancels.
pub struct RawAsk {
    stream: UnixStream,
    /// The request (= approval) id from the warden's `Decision`.
    pub request_id: String,
    /// The `Pending` frame's message.
    pub message: String,
}

/// Connects to `socket` and sends `Hello` and a `Request` for `argv` in `cwd` (no fds,
/// stdin closed). Does not read anything: call [`RawAsk::read_pending`] next, so many
/// calls can be queued from one thread.
pub fn raw_ask_send(socket: &Path, argv: &[&str], cwd: &str) -> UnixStream {
    let mut s = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect to the warden at {}: {e}", socket.display()));
    s.set_read_timeout(Some(HTTP_DEADLINE)).unwrap();
    s.set_write_timeout(Some(HTTP_DEADLINE)).unwrap();
    let request = Request {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        tool_path: Vec::new(),
        cwd: cwd.as_bytes().to_vec(),
        env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
        parent_request: None,
        ..Default::default()
    };
    write_message(&mut s, &Message::hello()).expect("send Hello");
    write_message(&mut s, &Message::Request(request)).expect("send Request");
    s
}

impl RawAsk {
    /// Reads the warden's `Hello`, `Decision{pending}` and first `Pending` frame.
    pub fn read_pending(mut stream: UnixStream) -> RawAsk {
        let mut next = |what: &str| match read_message(&mut stream) {
            Ok(Some(m)) => m,
            Ok(None) => panic!("the warden closed the connection before {what}"),
            Err(e) => panic!("reading {what} from the warden: {e}"),
        };
        match next("its Hello") {
            Message::Hello { .. } => {}
            m => panic!("expected the warden's Hello, got {m:?}"),
        }
        let request_id = match next("the Decision") {
            Message::Decision(d) if d.action == Action::Pending => d.request_id,
            m => panic!("expected Decision pending for an ask, got {m:?}"),
        };
        let message = match next("the Pending frame") {
            Message::Pending {
                approval_id,
                message,
            } => {
                assert_eq!(
                    approval_id, request_id,
                    "the approval id is the request id (api.md)"
                );
                message
            }
            m => panic!("expected Pending after Decision pending, got {m:?}"),
        };
        RawAsk {
            stream,
            request_id,
            message,
        }
    }

    /// The next frame after `Pending` (the final decision, or more `Pending`s).
    pub fn next_message(&mut self) -> Option<Message> {
        read_message(&mut self.stream).unwrap_or_else(|e| panic!("reading from the warden: {e}"))
    }
}
