//! A thin wrapper over the Docker Engine API (bollard): what the mirror executor and the
//! prisoner runtime need, with errors that name the container and say what to check.
//!
//! The engine is reached through `docker_host` from the config, else `DOCKER_HOST`, else
//! `unix:///var/run/docker.sock`. The API version is negotiated down to the engine's
//! (Docker 20.10 speaks 1.41).

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{KillContainerOptions, ListContainersOptions};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::control::{BoxFuture, PrisonerRuntime};

/// Where the engine is when neither the config nor `DOCKER_HOST` says.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// Timeout of one API request (not of an attached exec stream, which lasts as long as the
/// command).
const REQUEST_TIMEOUT_SECS: u64 = 30;
/// Largest HTTP response head accepted when starting a TTY exec.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Largest error body read when the engine refuses to start a TTY exec.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Read size for a TTY exec's raw output.
const RAW_READ_CHUNK: usize = 32 * 1024;

/// A Docker API call that failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot use the Docker engine at {host}: {source}; check docker_host / DOCKER_HOST and that the socket is mounted")]
    Connect {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("container {container} does not exist (or is not running); check the prisoner's `container:` in the warden config")]
    NoSuchContainer { container: String },
    #[error("no running container has the label {label}; start the prisoner's container with that label or fix `container_label:` in the warden config")]
    NoContainerWithLabel { label: String },
    #[error("{count} running containers have the label {label} ({names}); a prisoner's label must select exactly one container: make it unique or use `container:`")]
    SeveralContainersWithLabel {
        label: String,
        count: usize,
        names: String,
    },
    #[error("{what} on container {container}: {message}")]
    Api {
        what: &'static str,
        container: String,
        message: String,
    },
}

impl DockerError {
    fn api(what: &'static str, container: &str, e: bollard::errors::Error) -> DockerError {
        match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => DockerError::NoSuchContainer {
                container: container.to_owned(),
            },
            bollard::errors::Error::DockerResponseServerError { message, .. } => DockerError::Api {
                what,
                container: container.to_owned(),
                message,
            },
            other => DockerError::Api {
                what,
                container: container.to_owned(),
                message: other.to_string(),
            },
        }
    }
}

/// A connection to one Docker engine. Cheap to clone; clones share the negotiated API
/// version.
#[derive(Clone)]
pub struct DockerClient {
    docker: bollard::Docker,
    host: Arc<str>,
    /// Set once the API version was negotiated with the engine (on first use).
    negotiated: Arc<tokio::sync::OnceCell<()>>,
}

impl fmt::Debug for DockerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerClient")
            .field("host", &self.host)
            .finish()
    }
}

/// One `docker exec` to create and start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    /// `NAME=value` entries, added to the container's own environment by Docker.
    pub env: Vec<String>,
    /// `uid:gid` or a user name.
    pub user: String,
    pub working_dir: Option<String>,
    pub tty: bool,
    /// Attach stdin (otherwise the process's stdin is empty).
    pub stdin: bool,
}

/// A started, attached exec.
pub struct AttachedExec {
    pub id: String,
    /// stdout/stderr frames (demultiplexed), or with a TTY `Console` chunks of the raw
    /// terminal stream.
    pub output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    /// The process's stdin; shutting it down closes stdin.
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

impl fmt::Debug for AttachedExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachedExec")
            .field("id", &self.id)
            .finish()
    }
}

/// What `exec inspect` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecState {
    pub running: bool,
    pub exit_code: Option<i64>,
    /// Host pid of the exec's process (0 when unknown).
    pub pid: u32,
}

/// What `container inspect` says about its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerState {
    pub running: bool,
    pub paused: bool,
    pub pid: u32,
}

/// Output of a short exec run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl DockerClient {
    /// A client for `host` (`unix://...`, `tcp://...`, `http://...`), else `DOCKER_HOST`,
    /// else the default socket. A unix socket must exist already; nothing is sent yet: the
    /// API version is negotiated on the first call (so an engine that is restarting does
    /// not stop the warden from starting).
    pub fn new(host: Option<&str>) -> Result<DockerClient, DockerError> {
        let host = host
            .map(str::to_owned)
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned());
        let connect_error = |source| DockerError::Connect {
            host: host.clone(),
            source,
        };
        let docker = if host.starts_with("unix://") {
            bollard::Docker::connect_with_unix(
                &host,
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            bollard::Docker::connect_with_http(
                &host,
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )
        } else {
            return Err(DockerError::Api {
                what: "connecting",
                container: "-".into(),
                message: format!(
                    "unsupported Docker host {host:?}: use unix:///path/to/docker.sock or tcp://HOST:PORT (TLS is not built in)"
                ),
            });
        }
        .map_err(connect_error)?;
        Ok(DockerClient {
            docker,
            host: host.into(),
            negotiated: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// Negotiates the API version down to the engine's, once (retried after a failure).
    async fn ready(&self) -> Result<&bollard::Docker, DockerError> {
        self.negotiated
            .get_or_try_init(|| async {
                // The clone shares the version with `self.docker`.
                self.docker
                    .clone()
                    .negotiate_version()
                    .await
                    .map(drop)
                    .map_err(|source| DockerError::Connect {
                        host: self.host.to_string(),
                        source,
                    })
            })
            .await?;
        Ok(&self.docker)
    }

    /// The engine address in use.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The container `target` names: a name or id as it is, or for `label=KEY=VALUE`
    /// (see [`crate::config::LABEL_SELECTOR_PREFIX`]) the id of the single running
    /// container with that label, looked up now. None or several: an error naming the label.
    pub async fn resolve_container(&self, target: &str) -> Result<String, DockerError> {
        let Some(label) = target.strip_prefix(crate::config::LABEL_SELECTOR_PREFIX) else {
            return Ok(target.to_owned());
        };
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let found = self
            .ready()
            .await?
            .list_containers(Some(ListContainersOptions {
                all: false,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| DockerError::Api {
                what: "listing the containers with a label",
                container: target.to_owned(),
                message: e.to_string(),
            })?;
        match found.as_slice() {
            [one] => one.id.clone().ok_or_else(|| DockerError::Api {
                what: "listing the containers with a label",
                container: target.to_owned(),
                message: "the engine listed a container without an id".into(),
            }),
            [] => Err(DockerError::NoContainerWithLabel {
                label: label.to_owned(),
            }),
            several => Err(DockerError::SeveralContainersWithLabel {
                label: label.to_owned(),
                count: several.len(),
                names: several
                    .iter()
                    .map(|c| {
                        c.names
                            .as_ref()
                            .and_then(|n| n.first())
                            .map(|n| n.trim_start_matches('/').to_owned())
                            .or_else(|| c.id.clone())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// `GET /_ping`.
    pub async fn ping(&self) -> Result<(), DockerError> {
        self.ready()
            .await?
            .ping()
            .await
            .map(drop)
            .map_err(|source| DockerError::Connect {
                host: self.host.to_string(),
                source,
            })
    }

    /// Creates and starts an attached exec in `container`. A TTY exec on a unix socket
    /// engine is started on a raw connection of its own (`start_tty_exec`), so its
    /// output is byte-exact; over `tcp://` it goes through bollard, whose decoder loses the
    /// first 8 bytes of an output chunk that starts with byte 0, 1 or 2.
    pub async fn exec(
        &self,
        container: &str,
        spec: &ExecSpec,
    ) -> Result<AttachedExec, DockerError> {
        let id = self.create_exec(container, spec, true).await?;
        if spec.tty {
            if let Some(socket) = self.host.strip_prefix("unix://") {
                return self.start_tty_exec(container, socket, id).await;
            }
        }
        let started = self
            .ready()
            .await?
            .start_exec(
                &id,
                Some(StartExecOptions {
                    detach: false,
                    tty: spec.tty,
                    output_capacity: Some(64 * 1024),
                }),
            )
            .await
            .map_err(|e| DockerError::api("starting an exec", container, e))?;
        match started {
            StartExecResults::Attached { output, input } => Ok(AttachedExec { id, output, input }),
            StartExecResults::Detached => Err(DockerError::Api {
                what: "starting an exec",
                container: container.to_owned(),
                message: "the engine started it detached although it was asked to attach".into(),
            }),
        }
    }

    /// Starts the TTY exec `id` on a connection of its own to the engine's unix socket and
    /// hands the upgraded connection over as the raw byte stream it is. (bollard's
    /// `start_exec` decodes a TTY exec's stream as if it could be multiplexed and mistakes
    /// an output chunk that starts with byte 0, 1 or 2 for a frame header.)
    async fn start_tty_exec(
        &self,
        container: &str,
        socket: &str,
        id: String,
    ) -> Result<AttachedExec, DockerError> {
        let failed = |message: String| DockerError::Api {
            what: "starting an exec",
            container: container.to_owned(),
            message,
        };
        let version = self.ready().await?.client_version();
        let started = tokio::time::timeout(
            Duration::from_secs(REQUEST_TIMEOUT_SECS),
            start_raw_exec(socket, &version.to_string(), &id),
        )
        .await
        .map_err(|_| {
            failed(format!(
                "the engine at {} did not answer within {REQUEST_TIMEOUT_SECS}s",
                self.host
            ))
        })?;
        let (stream, first) = started.map_err(|e| match e.status {
            Some(404) => DockerError::NoSuchContainer {
                container: container.to_owned(),
            },
            _ => failed(e.message),
        })?;
        let (read, write) = tokio::io::split(stream);
        // Ends after the first read error (reported once) or at end of stream.
        let output = futures_util::stream::unfold(Some((read, first)), |state| async move {
            let (mut read, first) = state?;
            if !first.is_empty() {
                let chunk = LogOutput::Console {
                    message: first.into(),
                };
                return Some((Ok(chunk), Some((read, Vec::new()))));
            }
            let mut buf = vec![0u8; RAW_READ_CHUNK];
            match read.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let chunk = LogOutput::Console {
                        message: buf.into(),
                    };
                    Some((Ok(chunk), Some((read, Vec::new()))))
                }
                Err(err) => Some((Err(bollard::errors::Error::IOError { err }), None)),
            }
        });
        Ok(AttachedExec {
            id,
            output: Box::pin(output),
            input: Box::pin(write),
        })
    }

    async fn create_exec(
        &self,
        container: &str,
        spec: &ExecSpec,
        attach: bool,
    ) -> Result<String, DockerError> {
        let options = CreateExecOptions::<String> {
            attach_stdin: Some(attach && spec.stdin),
            attach_stdout: Some(attach),
            attach_stderr: Some(attach),
            tty: Some(spec.tty),
            env: Some(spec.env.clone()),
            cmd: Some(spec.cmd.clone()),
            user: Some(spec.user.clone()),
            working_dir: spec.working_dir.clone(),
            ..Default::default()
        };
        self.ready()
            .await?
            .create_exec(container, options)
            .await
            .map(|r| r.id)
            .map_err(|e| DockerError::api("creating an exec", container, e))
    }

    /// Runs `spec` to completion and collects its output (for short helper commands).
    pub async fn exec_output(
        &self,
        container: &str,
        spec: &ExecSpec,
    ) -> Result<ExecOutput, DockerError> {
        let mut exec = self.exec(container, spec).await?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(item) = exec.output.next().await {
            match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    stdout.extend_from_slice(&message)
                }
                Ok(LogOutput::StdErr { message }) => stderr.extend_from_slice(&message),
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => return Err(DockerError::api("reading an exec's output", container, e)),
            }
        }
        let state = self.exec_finished(container, &exec.id).await?;
        Ok(ExecOutput {
            exit_code: state.exit_code,
            stdout,
            stderr,
        })
    }

    /// `exec inspect`.
    pub async fn exec_state(&self, container: &str, id: &str) -> Result<ExecState, DockerError> {
        let r = self
            .ready()
            .await?
            .inspect_exec(id)
            .await
            .map_err(|e| DockerError::api("inspecting an exec", container, e))?;
        Ok(ExecState {
            running: r.running.unwrap_or(false),
            exit_code: r.exit_code,
            pid: r.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        })
    }

    /// Waits (bounded) until the engine reports the exec as ended and returns that state.
    /// Its output stream ends a moment before the engine records the exit code.
    pub async fn exec_finished(&self, container: &str, id: &str) -> Result<ExecState, DockerError> {
        let mut delay = Duration::from_millis(1);
        let mut waited = Duration::ZERO;
        loop {
            let state = self.exec_state(container, id).await?;
            if !state.running && state.exit_code.is_some() {
                return Ok(state);
            }
            if waited >= Duration::from_secs(5) {
                return Ok(state);
            }
            tokio::time::sleep(delay).await;
            waited += delay;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Resizes an exec's TTY.
    pub async fn resize_exec(
        &self,
        container: &str,
        id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), DockerError> {
        self.ready()
            .await?
            .resize_exec(
                id,
                ResizeExecOptions {
                    height: rows,
                    width: cols,
                },
            )
            .await
            .map_err(|e| DockerError::api("resizing an exec's terminal", container, e))
    }

    /// `container inspect`, its state only.
    pub async fn container_state(&self, container: &str) -> Result<ContainerState, DockerError> {
        let r = self
            .ready()
            .await?
            .inspect_container(container, None)
            .await
            .map_err(|e| DockerError::api("inspecting", container, e))?;
        let state = r.state.unwrap_or_default();
        Ok(ContainerState {
            running: state.running.unwrap_or(false),
            paused: state.paused.unwrap_or(false),
            pid: state.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        })
    }

    /// Freezes every process of the container.
    pub async fn pause(&self, container: &str) -> Result<(), DockerError> {
        self.ready()
            .await?
            .pause_container(container)
            .await
            .map_err(|e| DockerError::api("pausing", container, e))
    }

    /// Thaws a paused container.
    pub async fn unpause(&self, container: &str) -> Result<(), DockerError> {
        self.ready()
            .await?
            .unpause_container(container)
            .await
            .map_err(|e| DockerError::api("resuming", container, e))
    }

    /// Sends `signal` (e.g. `SIGKILL`) to the container's main process.
    pub async fn kill(&self, container: &str, signal: &str) -> Result<(), DockerError> {
        self.ready()
            .await?
            .kill_container(
                container,
                Some(KillContainerOptions {
                    signal: signal.to_owned(),
                }),
            )
            .await
            .map_err(|e| DockerError::api("killing", container, e))
    }
}

/// Why starting a TTY exec on a raw connection failed: the engine's HTTP status if it
/// answered with an error, and what went wrong.
#[derive(Debug)]
struct RawStartError {
    status: Option<u16>,
    message: String,
}

impl RawStartError {
    fn new(message: String) -> RawStartError {
        RawStartError {
            status: None,
            message,
        }
    }
}

/// `POST /v{version}/exec/{id}/start` with `{"Detach":false,"Tty":true}` over the engine's
/// unix socket `socket`, asking to upgrade the connection to a raw stream. Returns the
/// connection, now carrying the exec's raw terminal stream both ways, and the stream bytes
/// that arrived together with the response head.
async fn start_raw_exec(
    socket: &str,
    version: &str,
    id: &str,
) -> Result<(UnixStream, Vec<u8>), RawStartError> {
    let io_error = |doing: &str, e: std::io::Error| {
        RawStartError::new(format!("{doing} the Docker socket {socket}: {e}"))
    };
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|e| io_error("cannot connect to", e))?;
    let body = r#"{"Detach":false,"Tty":true}"#;
    let request = format!(
        "POST /v{version}/exec/{id}/start HTTP/1.1\r\n\
         Host: docker\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: Upgrade\r\n\
         Upgrade: tcp\r\n\
         \r\n\
         {body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| io_error("cannot write to", e))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_len = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(RawStartError::new(format!(
                "the engine's response head is longer than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| io_error("cannot read from", e))?;
        if n == 0 {
            return Err(RawStartError::new(
                "the engine closed the connection without answering".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let rest = buf.split_off(head_len);
    let head = ResponseHead::parse(&buf).map_err(RawStartError::new)?;
    match head.status {
        // 101: upgraded; 200: older engines send the raw stream right after the head.
        101 | 200 => Ok((stream, rest)),
        status => {
            let mut body = rest;
            let want = head.content_length.unwrap_or(0).min(MAX_ERROR_BODY);
            while body.len() < want {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| {
                    format!(
                        "the engine answered {status} {}: {}",
                        head.reason,
                        String::from_utf8_lossy(&body).trim()
                    )
                });
            Err(RawStartError {
                status: Some(status),
                message,
            })
        }
    }
}

/// The parts of an HTTP/1.x response head that starting an exec needs.
#[derive(Debug, PartialEq, Eq)]
struct ResponseHead {
    status: u16,
    reason: String,
    content_length: Option<usize>,
}

impl ResponseHead {
    /// Parses `head` (status line and header lines, up to and including the blank line).
    fn parse(head: &[u8]) -> Result<ResponseHead, String> {
        let text = std::str::from_utf8(head)
            .map_err(|_| "the engine's response head is not valid UTF-8".to_owned())?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let not_http =
            || format!("the engine did not answer with an HTTP/1 status line: {status_line:?}");
        let rest = status_line.strip_prefix("HTTP/1.").ok_or_else(not_http)?;
        let mut parts = rest.splitn(3, ' ');
        let _minor = parts.next();
        let status = parts
            .next()
            .filter(|c| c.len() == 3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(not_http)?;
        let reason = parts.next().unwrap_or_default().to_owned();
        let mut content_length = None;
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').ok_or_else(|| {
                format!("malformed header line in the engine's response: {line:?}")
            })?;
            if name.trim().eq_ignore_ascii_case("content-length") {
                content_length = Some(value.trim().parse::<usize>().map_err(|_| {
                    format!("malformed Content-Length in the engine's response: {value:?}")
                })?);
            }
        }
        Ok(ResponseHead {
            status,
            reason,
            content_length,
        })
    }
}

/// Kill, pause and resume of prisoners that are Docker containers.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    client: DockerClient,
}

impl DockerRuntime {
    pub fn new(client: DockerClient) -> DockerRuntime {
        DockerRuntime { client }
    }

    /// The container to act on (a `label=KEY=VALUE` selector is looked up now).
    async fn resolve(&self, container: &str) -> Result<String, String> {
        self.client
            .resolve_container(container)
            .await
            .map_err(|e| e.to_string())
    }
}

impl PrisonerRuntime for DockerRuntime {
    fn kill(&self, container: &str) -> BoxFuture<'_, Result<(), String>> {
        let container = container.to_owned();
        Box::pin(async move {
            // A paused container cannot act on SIGKILL until thawed; the engine handles
            // that itself, so one kill suffices.
            let container = self.resolve(&container).await?;
            self.client
                .kill(&container, "SIGKILL")
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn pause(&self, container: &str) -> BoxFuture<'_, Result<(), String>> {
        let container = container.to_owned();
        Box::pin(async move {
            let container = self.resolve(&container).await?;
            self.client
                .pause(&container)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn resume(&self, container: &str) -> BoxFuture<'_, Result<(), String>> {
        let container = container.to_owned();
        Box::pin(async move {
            let container = self.resolve(&container).await?;
            self.client
                .unpause(&container)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.client.ping().await.map_err(|e| e.to_string()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_head_of_an_upgrade_parses() {
        let head = ResponseHead::parse(
            b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            head,
            ResponseHead {
                status: 101,
                reason: "UPGRADED".into(),
                content_length: None,
            }
        );
    }

    #[test]
    fn response_head_of_an_error_carries_its_content_length() {
        let head = ResponseHead::parse(
            b"HTTP/1.1 409 Conflict\r\ncontent-length: 42\r\nContent-Type: application/json\r\n\r\n",
        )
        .unwrap();
        assert_eq!((head.status, head.content_length), (409, Some(42)));
    }

    #[test]
    fn response_head_that_is_not_http_is_refused() {
        let err = ResponseHead::parse(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err();
        assert_eq!(
            err,
            "the engine did not answer with an HTTP/1 status line: \"SSH-2.0-OpenSSH\""
        );
        let err = ResponseHead::parse(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n").unwrap_err();
        assert_eq!(
            err,
            "malformed header line in the engine's response: \"no colon\""
        );
    }
}
