//! A small blocking HTTP/1.1 client for the warden's API.
//!
//! Why hand-written rather than a crate: clawctl only ever talks plain HTTP to the
//! warden's API, which listens on loopback by default (a remote warden is reached through
//! an SSH tunnel: `ssh -L 8080:127.0.0.1:8080 host`). So there is no TLS, no proxy, no
//! redirect, no cookie, no connection pool to support, and what is left is about 300 lines
//! over `std::net::TcpStream`: one request per connection (`Connection: close`), bodies
//! delimited by Content-Length, chunked encoding or end of stream, and a streaming body
//! reader for Server-Sent Events and exports. The smallest crate that does this (`ureq` 2
//! without TLS) still pulls `url` -> `idna` and its Unicode tables: a dozen crates of
//! compile time and audit surface for features clawctl must not use. No tokio either:
//! every command is one request or one long-lived stream.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Default API address, as api.md says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Plain requests: the API answers from memory or SQLite, so 30 s means something is wrong.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response head and non-streamed body clawctl accepts.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: u64 = 64 * 1024 * 1024;
const MAX_CHUNK_LINE: usize = 1024;

/// Exit statuses of clawctl (api.md).
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const UNAUTHORIZED: u8 = 4;
    pub const CONFLICT: u8 = 5;
    pub const UNREACHABLE: u8 = 6;
}

/// The exit status for an HTTP error status from the API.
pub fn exit_code_for_status(status: u16) -> u8 {
    match status {
        404 => exit::NOT_FOUND,
        401 | 403 | 429 => exit::UNAUTHORIZED,
        409 => exit::CONFLICT,
        // The warden rejected what the operator typed (a bad --since, --remember, ...).
        400 | 422 => exit::USAGE,
        _ => exit::FAILURE,
    }
}

/// Everything that can go wrong talking to the API. Never contains the token.
#[derive(Debug)]
pub enum ApiError {
    /// No TCP connection, or it broke before an answer came.
    Unreachable { url: String, cause: String },
    /// The API answered with an error status.
    Status {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<String>,
        token_given: bool,
    },
    /// The peer did not speak HTTP/JSON as the API does.
    BadResponse { url: String, what: String },
    /// The operator's input is unusable before anything is sent.
    Usage(String),
}

impl ApiError {
    /// clawctl's exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ApiError::Unreachable { .. } => exit::UNREACHABLE,
            ApiError::Status { status, .. } => exit_code_for_status(*status),
            ApiError::BadResponse { .. } => exit::FAILURE,
            ApiError::Usage(_) => exit::USAGE,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unreachable { url, cause } => write!(
                f,
                "cannot reach the warden at {url}: {cause}; check that the warden is running \
                 with --listen (or `listen:` in its config) on that address and that \
                 --url / CLAWRDEN_URL points at it"
            ),
            ApiError::Status {
                status,
                code,
                message,
                retry_after,
                token_given,
            } => {
                write!(f, "the warden answered {status} {code}: {message}")?;
                match status {
                    401 if !token_given => f.write_str(
                        "; no token given: pass --token-file <state-dir>/admin.token \
                         or set CLAWRDEN_TOKEN / CLAWRDEN_TOKEN_FILE",
                    ),
                    401 => f.write_str(
                        "; check the token (--token, CLAWRDEN_TOKEN, --token-file, \
                         CLAWRDEN_TOKEN_FILE): it may be mistyped or revoked",
                    ),
                    403 => f.write_str("; use a token with a larger scope"),
                    // The warden's message already says when; add it only if it did not.
                    429 if message.is_empty() => match retry_after {
                        Some(s) => write!(f, "too many failed authentications, retry in {s}s"),
                        None => f.write_str("too many failed authentications, retry later"),
                    },
                    _ => Ok(()),
                }
            }
            ApiError::BadResponse { url, what } => {
                write!(
                    f,
                    "bad answer from {url}: {what}; is that URL the Clawrden API?"
                )
            }
            ApiError::Usage(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ApiError {}

/// A bearer token. Its `Debug` does not show it; it is only ever written into the
/// Authorization header (and printed once by `token create`).
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Wraps a token typed or read from a file; surrounding whitespace is dropped.
    pub fn new(raw: &str) -> Result<Token, ApiError> {
        let token = raw.trim();
        if token.is_empty() {
            return Err(ApiError::Usage("the token is empty".into()));
        }
        // Anything else could break (or smuggle lines into) the request head.
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::Usage(
                "the token contains spaces or control characters; a Clawrden token is \
                 `clwd_` followed by hex digits"
                    .into(),
            ));
        }
        Ok(Token(token.to_owned()))
    }
}

/// Where the token comes from, in precedence order: --token, CLAWRDEN_TOKEN,
/// --token-file, CLAWRDEN_TOKEN_FILE. `None` when none of them is set.
pub fn resolve_token(
    flag: Option<&str>,
    env: Option<&str>,
    file_flag: Option<&Path>,
    file_env: Option<&Path>,
) -> Result<Option<Token>, ApiError> {
    if let Some(t) = flag {
        return Token::new(t).map(Some);
    }
    if let Some(t) = env.filter(|t| !t.is_empty()) {
        return Token::new(t).map(Some);
    }
    let Some(path) = file_flag.or(file_env.filter(|p| !p.as_os_str().is_empty())) else {
        return Ok(None);
    };
    let raw = std::fs::read_to_string(path).map_err(|e| {
        ApiError::Usage(format!(
            "cannot read the token file {}: {e}; the warden writes its first admin token to \
             <state-dir>/admin.token",
            path.display()
        ))
    })?;
    Token::new(&raw)
        .map(Some)
        .map_err(|e| ApiError::Usage(format!("token file {}: {e}", path.display())))
}

/// A parsed `http://host[:port][/prefix]` base URL.
#[derive(Clone, Debug)]
pub struct BaseUrl {
    /// As the operator wrote it, without a trailing slash: used in messages.
    pub text: String,
    /// `host[:port]` for the Host header.
    authority: String,
    /// Host for connecting (IPv6 without brackets).
    host: String,
    port: u16,
    /// Path prefix without the trailing slash ("" for none).
    prefix: String,
}

impl BaseUrl {
    /// Parses the --url value.
    pub fn parse(url: &str) -> Result<BaseUrl, ApiError> {
        let bad = |why: &str| ApiError::Usage(format!("bad --url {url:?}: {why}"));
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => {
                return Err(bad(
                    "clawctl speaks plain HTTP to a loopback API; reach a remote warden \
                     through an SSH tunnel (ssh -L 8080:127.0.0.1:8080 HOST) and use \
                     http://127.0.0.1:8080",
                ))
            }
            _ => return Err(bad("expected http://HOST[:PORT]")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("expected http://HOST[:PORT] (no user info)"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("no query or fragment allowed"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
        };
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("bad host"));
        }
        Ok(BaseUrl {
            text: url.trim_end_matches('/').to_owned(),
            authority: authority.to_owned(),
            host,
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// Percent-encodes one query value or path segment.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds `?k=v&...` from the pairs whose value is set.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            out.push(if out.is_empty() { '?' } else { '&' });
            out.push_str(k);
            out.push('=');
            out.push_str(&encode_component(v));
        }
    }
    out
}

/// A response whose head has been read; the body is read on demand.
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    body: BufReader<Box<dyn Read + Send>>,
    url: String,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The decoded body as a buffered stream.
    pub fn body(&mut self) -> &mut BufReader<Box<dyn Read + Send>> {
        &mut self.body
    }

    /// Reads the whole body (at most 64 MiB).
    pub fn bytes(&mut self) -> Result<Vec<u8>, ApiError> {
        let mut out = Vec::new();
        let url = self.url.clone();
        (&mut self.body)
            .take(MAX_BODY + 1)
            .read_to_end(&mut out)
            .map_err(|e| ApiError::Unreachable {
                url: url.clone(),
                cause: format!("reading the answer: {e}"),
            })?;
        if out.len() as u64 > MAX_BODY {
            return Err(ApiError::BadResponse {
                url,
                what: "answer larger than 64 MiB".into(),
            });
        }
        Ok(out)
    }

    /// Reads the body as JSON, keeping the bytes for `--json`.
    pub fn json(&mut self) -> Result<ApiJson, ApiError> {
        let raw = self.bytes()?;
        let value = serde_json::from_slice(&raw).map_err(|e| ApiError::BadResponse {
            url: self.url.clone(),
            what: format!("status {} with a body that is not JSON ({e})", self.status),
        })?;
        Ok(ApiJson { value, raw })
    }
}

/// A JSON answer: parsed for tables, and the bytes as sent, so `--json` prints the API's
/// document verbatim (field order included) rather than a re-serialisation.
#[derive(Debug)]
pub struct ApiJson {
    pub value: Value,
    pub raw: Vec<u8>,
}

impl std::ops::Deref for ApiJson {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.value
    }
}

/// The API client: base URL plus optional token.
#[derive(Clone, Debug)]
pub struct Client {
    pub base: BaseUrl,
    token: Option<Token>,
}

impl Client {
    pub fn new(base: BaseUrl, token: Option<Token>) -> Client {
        Client { base, token }
    }

    /// Whether a token was given.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// GET `path` and parse the JSON answer; error statuses become [`ApiError::Status`].
    pub fn get_json(&self, path: &str) -> Result<ApiJson, ApiError> {
        let mut resp = self.send("GET", path, None, &[], REQUEST_TIMEOUT)?;
        self.check(&mut resp)?;
        resp.json()
    }

    /// `method` `path` with a JSON body (None: no body); parses the JSON answer.
    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiJson, ApiError> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let mut resp = self.send(method, path, bytes.as_deref(), &[], REQUEST_TIMEOUT)?;
        self.check(&mut resp)?;
        resp.json()
    }

    /// Opens a streamed GET (SSE, exports): an error status is returned as an error, a
    /// success with its body unread. `read_timeout` bounds each read, not the stream.
    pub fn open_stream(
        &self,
        path: &str,
        headers: &[(&str, String)],
        read_timeout: Duration,
    ) -> Result<Response, ApiError> {
        let mut resp = self.send("GET", path, None, headers, read_timeout)?;
        self.check(&mut resp)?;
        Ok(resp)
    }

    /// GET without turning error statuses into errors (for /readyz, whose 503 has a body).
    pub fn get_any(&self, path: &str) -> Result<Response, ApiError> {
        self.send("GET", path, None, &[], REQUEST_TIMEOUT)
    }

    /// The full URL of an API path, for messages.
    pub fn url_of(&self, path: &str) -> String {
        format!("{}{}", self.base.text, path)
    }

    fn check(&self, resp: &mut Response) -> Result<(), ApiError> {
        if (200..300).contains(&resp.status) {
            return Ok(());
        }
        let status = resp.status;
        let retry_after = resp.header("retry-after").map(str::to_owned);
        // The API's error body: {"error":{"code":..,"message":..}}; anything else is shown
        // as text so a proxy's error page is still understandable.
        let body = resp.bytes().unwrap_or_default();
        let (code, message) = match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v["error"].is_object() => (
                v["error"]["code"].as_str().unwrap_or("error").to_owned(),
                v["error"]["message"].as_str().unwrap_or("").to_owned(),
            ),
            _ => (
                "error".to_owned(),
                crate::table::clean(String::from_utf8_lossy(&body).trim()),
            ),
        };
        Err(ApiError::Status {
            status,
            code,
            message,
            retry_after,
            token_given: self.token.is_some(),
        })
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        extra: &[(&str, String)],
        read_timeout: Duration,
    ) -> Result<Response, ApiError> {
        let url = self.url_of(path);
        let unreachable = |cause: String| ApiError::Unreachable {
            url: self.base.text.clone(),
            cause,
        };
        let stream = connect(&self.base.host, self.base.port).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(read_timeout))
            .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
            .map_err(|e| unreachable(e.to_string()))?;
        let head = self.request_head(method, path, body, extra);
        let mut writer = &stream;
        writer
            .write_all(&head)
            .and_then(|()| writer.write_all(body.unwrap_or_default()))
            .and_then(|()| writer.flush())
            .map_err(|e| unreachable(format!("sending the request: {e}")))?;
        let mut reader = BufReader::new(stream);
        let (status, headers) = match read_head(&mut reader) {
            Ok(head) => head,
            Err(HeadError::Io(e)) => return Err(unreachable(format!("reading the answer: {e}"))),
            Err(HeadError::Closed) => {
                return Err(unreachable(
                    "the connection closed before an answer came".into(),
                ))
            }
            Err(HeadError::Malformed(what)) => return Err(ApiError::BadResponse { url, what }),
        };
        let body = body_reader(
            reader,
            &headers,
            method == "HEAD" || status == 204 || status == 304,
        )
        .map_err(|what| ApiError::BadResponse {
            url: url.clone(),
            what,
        })?;
        Ok(Response {
            status,
            headers,
            body: BufReader::new(body),
            url,
        })
    }

    fn request_head(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        extra: &[(&str, String)],
    ) -> Vec<u8> {
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: clawctl/{}\r\nConnection: close\r\n",
            self.base.prefix,
            self.base.authority,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(Token(t)) = &self.token {
            head.push_str("Authorization: Bearer ");
            head.push_str(t);
            head.push_str("\r\n");
        }
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        } else if method != "GET" && method != "HEAD" {
            head.push_str("Content-Length: 0\r\n");
        }
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
            head.push_str("Accept: application/json\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("{host} resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last = format!("connecting to {addr} timed out after 5s")
            }
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    Err(last)
}

#[derive(Debug)]
enum HeadError {
    Io(io::Error),
    Closed,
    Malformed(String),
}

/// Reads a status line and headers; skips interim 1xx answers.
fn read_head<R: BufRead>(r: &mut R) -> Result<(u16, Vec<(String, String)>), HeadError> {
    let mut total = 0usize;
    loop {
        let status_line = match read_line(r, &mut total)? {
            None => return Err(HeadError::Closed),
            Some(l) => l,
        };
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let code = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") || code.len() != 3 {
            return Err(HeadError::Malformed(format!(
                "not an HTTP/1.x status line: {:?}",
                crate::table::clean(&status_line)
            )));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| HeadError::Malformed(format!("bad status code {code:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(r, &mut total)?.ok_or(HeadError::Malformed(
                "the connection closed inside the response head".into(),
            ))?;
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| HeadError::Malformed("header line without a colon".into()))?;
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        return Ok((status, headers));
    }
}

/// One CRLF- (or LF-) terminated line of the head, without the terminator; `None` on a
/// clean end of stream before any byte.
fn read_line<R: BufRead>(r: &mut R, total: &mut usize) -> Result<Option<String>, HeadError> {
    let mut buf = Vec::new();
    let n = r
        .take((MAX_HEAD - *total) as u64 + 1)
        .read_until(b'\n', &mut buf)
        .map_err(HeadError::Io)?;
    *total += n;
    if n == 0 {
        return Ok(None);
    }
    if *total > MAX_HEAD {
        return Err(HeadError::Malformed(
            "response head larger than 64 KiB".into(),
        ));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| HeadError::Malformed("response head is not UTF-8".into()))
}

/// The body framing the headers announce.
fn body_reader<R: BufRead + Send + 'static>(
    r: R,
    headers: &[(String, String)],
    no_body: bool,
) -> Result<Box<dyn Read + Send>, String> {
    if no_body {
        return Ok(Box::new(io::empty()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if let Some(te) = get("transfer-encoding") {
        if te.eq_ignore_ascii_case("chunked") {
            return Ok(Box::new(ChunkedReader::new(r)));
        }
        return Err(format!("unsupported Transfer-Encoding {te:?}"));
    }
    if let Some(len) = get("content-length") {
        let len: u64 = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        return Ok(Box::new(ExactReader { inner: r.take(len) }));
    }
    Ok(Box::new(r))
}

/// A Content-Length body: ending early is an error, not a short body.
struct ExactReader<R> {
    inner: io::Take<R>,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.inner.limit() == 0 {
            return Ok(0);
        }
        match self.inner.read(buf)? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the whole body came",
            )),
            n => Ok(n),
        }
    }
}

/// Decodes `Transfer-Encoding: chunked`.
pub struct ChunkedReader<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: u64,
    /// A chunk's data has been read and its CRLF not yet.
    need_crlf: bool,
    done: bool,
}

impl<R: BufRead> ChunkedReader<R> {
    pub fn new(inner: R) -> Self {
        ChunkedReader {
            inner,
            left: 0,
            need_crlf: false,
            done: false,
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut buf = Vec::new();
        (&mut self.inner)
            .take(MAX_CHUNK_LINE as u64)
            .read_until(b'\n', &mut buf)?;
        if buf.last() != Some(&b'\n') {
            return Err(if buf.len() >= MAX_CHUNK_LINE {
                invalid("chunk size line too long")
            } else {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a chunked body",
                )
            });
        }
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        String::from_utf8(buf).map_err(|_| invalid("chunk line is not UTF-8"))
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl<R: BufRead> Read for ChunkedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            if self.need_crlf {
                if !self.line()?.is_empty() {
                    return Err(invalid("chunk data longer than its size"));
                }
                self.need_crlf = false;
            }
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.line()?.is_empty() {}
                self.done = true;
                return Ok(0);
            }
            self.left = size;
            self.need_crlf = true;
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunk",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// What every API command gets: the client and whether to print JSON.
#[derive(Debug)]
pub struct Ctx {
    pub client: Client,
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn decode_chunked(raw: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ChunkedReader::new(Cursor::new(raw.to_vec())).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers_decodes() {
        let raw = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nJUNK";
        assert_eq!(decode_chunked(raw).unwrap(), b"hello, world");
    }

    #[test]
    fn chunked_body_cut_short_is_an_error() {
        let err = decode_chunked(b"a\r\nhello").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = decode_chunked(b"5\r\nhello\r\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn chunked_bad_size_is_invalid_data() {
        let err = decode_chunked(b"zz\r\nhello\r\n0\r\n\r\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = decode_chunked(b"2\r\nhello\r\n0\r\n\r\n").unwrap_err();
        assert_eq!(err.to_string(), "chunk data longer than its size");
    }

    #[test]
    fn head_skips_100_continue_and_keeps_headers() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nRetry-After:  3 \r\n\r\n{}";
        let mut r = Cursor::new(raw.to_vec());
        let (status, headers) = read_head(&mut r).unwrap();
        assert_eq!(status, 404);
        assert_eq!(
            headers,
            vec![
                ("Content-Length".to_owned(), "2".to_owned()),
                ("Retry-After".to_owned(), "3".to_owned())
            ]
        );
    }

    #[test]
    fn head_rejects_non_http() {
        let mut r = Cursor::new(b"SSH-2.0-OpenSSH\r\n".to_vec());
        assert!(matches!(read_head(&mut r), Err(HeadError::Malformed(_))));
        let mut r = Cursor::new(Vec::new());
        assert!(matches!(read_head(&mut r), Err(HeadError::Closed)));
    }

    #[test]
    fn content_length_body_cut_short_is_an_error() {
        let headers = vec![("content-length".to_owned(), "10".to_owned())];
        let mut body = body_reader(Cursor::new(b"short".to_vec()), &headers, false).unwrap();
        let mut out = Vec::new();
        let err = body.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn exit_codes_follow_api_md() {
        assert_eq!(exit_code_for_status(404), 3);
        assert_eq!(exit_code_for_status(401), 4);
        assert_eq!(exit_code_for_status(403), 4);
        assert_eq!(exit_code_for_status(429), 4);
        assert_eq!(exit_code_for_status(409), 5);
        assert_eq!(exit_code_for_status(422), 2);
        assert_eq!(exit_code_for_status(400), 2);
        assert_eq!(exit_code_for_status(500), 1);
        assert_eq!(exit_code_for_status(503), 1);
        let unreachable = ApiError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            cause: "refused".into(),
        };
        assert_eq!(unreachable.exit_code(), 6);
        assert_eq!(ApiError::Usage("x".into()).exit_code(), 2);
        let bad = ApiError::BadResponse {
            url: "u".into(),
            what: "w".into(),
        };
        assert_eq!(bad.exit_code(), 1);
    }

    #[test]
    fn unauthorized_message_hints_without_the_token() {
        let e = ApiError::Status {
            status: 401,
            code: "unauthorized".into(),
            message: "bad token".into(),
            retry_after: None,
            token_given: false,
        };
        assert_eq!(
            e.to_string(),
            "the warden answered 401 unauthorized: bad token; no token given: pass \
             --token-file <state-dir>/admin.token or set CLAWRDEN_TOKEN / CLAWRDEN_TOKEN_FILE"
        );
    }

    #[test]
    fn base_url_parses_hosts_ports_and_prefixes() {
        let u = BaseUrl::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 8080, "")
        );
        assert_eq!(u.text, "http://127.0.0.1:8080");
        let u = BaseUrl::parse("http://[::1]:9000/clawrden").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("::1", 9000, "/clawrden")
        );
        assert_eq!(u.authority, "[::1]:9000");
        let u = BaseUrl::parse("http://localhost").unwrap();
        assert_eq!(u.port, 80);
        for bad in [
            "https://x",
            "ftp://x",
            "127.0.0.1:8080",
            "http://",
            "http://h:99999",
            "http://u@h",
        ] {
            let e = BaseUrl::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn token_precedence_flag_env_file_envfile() {
        let dir = std::env::temp_dir().join(format!("clawctl-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f1 = dir.join("a");
        let f2 = dir.join("b");
        std::fs::write(&f1, "clwd_file\n").unwrap();
        std::fs::write(&f2, "clwd_envfile").unwrap();
        let t = |flag, env, ff: Option<&Path>, fe: Option<&Path>| {
            resolve_token(flag, env, ff, fe).unwrap().map(|t| t.0)
        };
        assert_eq!(
            t(Some("clwd_flag"), Some("clwd_env"), Some(&f1), Some(&f2)).as_deref(),
            Some("clwd_flag")
        );
        assert_eq!(
            t(None, Some("clwd_env"), Some(&f1), Some(&f2)).as_deref(),
            Some("clwd_env")
        );
        assert_eq!(
            t(None, None, Some(&f1), Some(&f2)).as_deref(),
            Some("clwd_file")
        );
        assert_eq!(
            t(None, None, None, Some(&f2)).as_deref(),
            Some("clwd_envfile")
        );
        assert_eq!(t(None, None, None, None), None);
        let missing = resolve_token(None, None, Some(&dir.join("nope")), None).unwrap_err();
        assert!(missing
            .to_string()
            .starts_with("cannot read the token file "));
        assert!(Token::new("clwd_a\r\nX: y").is_err());
        assert_eq!(
            format!("{:?}", Token::new("clwd_secret").unwrap()),
            "Token(<redacted>)"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn query_encodes_values_and_skips_unset() {
        assert_eq!(
            query(&[
                ("a", Some("x y&z".into())),
                ("b", None),
                ("c", Some("é".into()))
            ]),
            "?a=x%20y%26z&c=%C3%A9"
        );
        assert_eq!(query(&[("a", None)]), "");
    }
}
