//! Shared pieces of the in-process session tests: a temp dir, a real executor that runs
//! "programs" written in Rust (so no process or Docker is needed), a warden on a temp
//! socket, and a protocol client.
#![allow(dead_code)]

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clawrden_policy::Policy;
use clawrden_protocol::{FrameHeader, Message, Request, HEADER_LEN};
use clawrden_warden::cli::{ExecutorName, LogFormat};
use clawrden_warden::config::{PrisonerSocket, WardenConfig};
use clawrden_warden::exec_registry::ExecutorRegistry;
use clawrden_warden::executor::{
    ExecIo, ExecRequest, Executor, Outcome, RunFuture, Started, StreamIn, StreamOut,
};
use clawrden_warden::policy_store::PolicyStore;
use clawrden_warden::server::Warden;
use clawrden_warden::session::SessionLimits;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod tempdir;
pub use tempdir::TempDir;

/// Runs built-in programs chosen by `argv[1]`, keeping the executor contract:
/// - `echo WORDS...`: prints the words and exits 0;
/// - `fail`: prints `bad` on stderr and exits 3;
/// - `cat`: copies stdin to stdout until StdinEof, exits 0;
/// - `env`: prints the environment it got, `NAME=VALUE` lines;
/// - `fds`: prints `fds=` and the numbers of the shim's descriptors it got (`fds=0,1,2`),
///   else `fds=none`;
/// - `tty`: terminal output `a\r\n`, then settings with `lflag` 0, then `b`;
/// - `wait`: runs until cancelled;
/// - `hang`: runs until its timeout.
pub struct ProgramExecutor;

async fn wait_cancel(
    input: &mut tokio::sync::mpsc::Receiver<StreamIn>,
    cancel: &mut tokio::sync::watch::Receiver<bool>,
) -> String {
    loop {
        tokio::select! {
            item = input.recv() => if item.is_none() {
                return "input closed".to_owned();
            },
            changed = cancel.changed() => {
                if changed.is_err() || *cancel.borrow() {
                    return "cancelled by the warden".to_owned();
                }
            }
        }
    }
}

/// [`ProgramExecutor`] as an executor that cannot pass descriptors (like mirror).
pub struct StreamingExecutor;

impl Executor for StreamingExecutor {
    fn name(&self) -> &'static str {
        "mirror"
    }

    fn run(&self, req: ExecRequest, io: ExecIo) -> RunFuture<'_> {
        ProgramExecutor.run(req, io)
    }
}

impl Executor for ProgramExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn passes_fds(&self) -> bool {
        true
    }

    fn run(&self, req: ExecRequest, io: ExecIo) -> RunFuture<'_> {
        let ExecIo {
            mut input,
            output,
            started,
            mut cancel,
        } = io;
        Box::pin(async move {
            let _ = started.send(Started {
                pid: 4242,
                program: b"/usr/bin/test-program".to_vec(),
                run_as: None,
            });
            let program = req.argv.get(1).cloned().unwrap_or_default();
            let out = |b: &[u8]| StreamOut::Stdout(b.to_vec());
            match program.as_slice() {
                b"echo" => {
                    let words: Vec<&[u8]> = req.argv[2..].iter().map(|a| a.as_slice()).collect();
                    let mut line = words.join(&b' ');
                    line.push(b'\n');
                    output.send(out(&line)).await.unwrap();
                    Outcome::Exited(0)
                }
                b"fail" => {
                    output
                        .send(StreamOut::Stderr(b"bad\n".to_vec()))
                        .await
                        .unwrap();
                    Outcome::Exited(3)
                }
                b"cat" => loop {
                    match input.recv().await {
                        Some(StreamIn::Stdin(b)) => output.send(out(&b)).await.unwrap(),
                        Some(StreamIn::StdinEof) => break Outcome::Exited(0),
                        Some(_) => {}
                        None => {
                            break Outcome::Cancelled {
                                reason: "input closed".into(),
                            }
                        }
                    }
                },
                b"env" => {
                    let mut text = Vec::new();
                    for (k, v) in &req.env {
                        text.extend_from_slice(k);
                        text.push(b'=');
                        text.extend_from_slice(v);
                        text.push(b'\n');
                    }
                    output.send(out(&text)).await.unwrap();
                    Outcome::Exited(0)
                }
                b"fds" => {
                    let line = match &req.fds {
                        Some(p) => {
                            let numbers: Vec<String> = (0..3u32)
                                .filter(|&i| p.stdio[i as usize].is_some())
                                .chain(p.extra.iter().map(|(n, _)| *n))
                                .map(|n| n.to_string())
                                .collect();
                            format!("fds={}\n", numbers.join(","))
                        }
                        None => "fds=none\n".to_owned(),
                    };
                    output.send(out(line.as_bytes())).await.unwrap();
                    Outcome::Exited(0)
                }
                b"tty" => {
                    let settings = clawrden_protocol::Termios {
                        iflag: 1,
                        oflag: 2,
                        cflag: 3,
                        lflag: 0,
                        cc: vec![3, 28],
                    };
                    for item in [
                        StreamOut::TtyOut(b"a\r\n".to_vec()),
                        StreamOut::Termios(settings),
                        StreamOut::TtyOut(b"b".to_vec()),
                    ] {
                        output.send(item).await.unwrap();
                    }
                    Outcome::Exited(0)
                }
                b"wait" => Outcome::Cancelled {
                    reason: wait_cancel(&mut input, &mut cancel).await,
                },
                b"hang" => {
                    tokio::select! {
                        _ = tokio::time::sleep(req.timeout) => Outcome::TimedOut { after: req.timeout },
                        reason = wait_cancel(&mut input, &mut cancel) => Outcome::Cancelled { reason },
                    }
                }
                _ => Outcome::SpawnFailed {
                    not_found: true,
                    message: "test-program: no such program".into(),
                },
            }
        })
    }
}

/// A policy exercising every path the tests need.
pub const POLICY: &str = "\
version: 1
default_action: deny
default_timeout: 30s
approval_timeout: 200ms
default_executor: local
rules:
  - name: no-rm
    command: rm
    action: deny
    reason: deleting is not allowed here
  - name: fetch
    command: curl
    action: ask
    reason: network access needs a person
  - name: ghostly
    command: ghost-tool
    action: allow
    executor: ghost
    ghost: { image: clawrden/test }
  - name: mirrored
    command: mirrored-tool
    action: allow
    executor: mirror
  - name: slow
    command: tool
    args: [hang]
    action: allow
    timeout: 100ms
  - name: tool
    command: tool
    action: allow
    env:
      pass: [GIT_AUTHOR_*]
";

pub struct TestWarden {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub policy_path: PathBuf,
    pub store: Arc<PolicyStore>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

pub struct Setup {
    pub policy: &'static str,
    pub request_deadline: Duration,
    pub stream_only: bool,
    /// Runs before the warden starts (e.g. to break the audit dir).
    pub prepare: fn(&Path),
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            policy: POLICY,
            request_deadline: Duration::from_secs(5),
            stream_only: false,
            prepare: |_| {},
        }
    }
}

impl TestWarden {
    pub async fn start() -> TestWarden {
        TestWarden::start_with(Setup::default()).await
    }

    pub async fn start_with(setup: Setup) -> TestWarden {
        let dir = TempDir::new();
        let policy_path = dir.path().join("policy").join("policy.yaml");
        std::fs::create_dir_all(policy_path.parent().unwrap()).unwrap();
        std::fs::write(&policy_path, setup.policy).unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        (setup.prepare)(&state_dir);
        let socket = dir.path().join("run").join("w.sock");
        let config = WardenConfig {
            policy: policy_path.clone(),
            state_dir,
            executors: vec![ExecutorName::Local],
            exec_helper: PathBuf::from("/bin/true"),
            log_format: LogFormat::Pretty,
            stream_only: setup.stream_only,
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
        let policy = Policy::load(&policy_path).unwrap();
        let mut executors = ExecutorRegistry::new();
        executors.insert("local", Arc::new(ProgramExecutor));
        executors.insert("mirror", Arc::new(StreamingExecutor));
        let mut warden = Warden::new(&config, policy, executors).unwrap();
        warden.set_limits(SessionLimits {
            request_deadline: setup.request_deadline,
            grace: Duration::from_millis(100),
        });
        let store = warden.policy_store();
        let bound = warden.bind().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        TestWarden {
            dir,
            socket,
            policy_path,
            store,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub async fn connect(&self) -> Client {
        Client {
            stream: UnixStream::connect(&self.socket).await.unwrap(),
        }
    }

    /// Connects and does the Hello exchange.
    pub async fn handshake(&self) -> Client {
        let mut c = self.connect().await;
        c.send(&Message::hello()).await;
        assert_eq!(c.recv().await, Some(Message::hello()));
        c
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("state")
            .join("audit")
            .join("audit.jsonl")
    }

    /// All audit events so far.
    pub fn audit_events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.audit_path()).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Audit events of one request.
    pub fn events_of(&self, request_id: &str) -> Vec<Value> {
        self.audit_events()
            .into_iter()
            .filter(|e| e["request_id"] == request_id)
            .collect()
    }

    /// Waits (bounded) until the audit holds an event of `kind` for `request_id`; the
    /// session writes it after the client has gone, so there is nothing to await.
    pub async fn wait_for_event(&self, request_id: &str, kind: &str) -> Value {
        for _ in 0..500 {
            if let Some(e) = self
                .events_of(request_id)
                .into_iter()
                .find(|e| e["event"] == kind)
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "no {kind} event for {request_id} in {:?}",
            self.audit_events()
        );
    }

    /// Shuts the warden down and waits for it.
    pub async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }
}

pub struct Client {
    pub stream: UnixStream,
}

impl Client {
    pub async fn send(&mut self, msg: &Message) {
        let mut buf = Vec::new();
        msg.encode(&mut buf).unwrap();
        self.stream.write_all(&buf).await.unwrap();
    }

    /// Next message; None at end of stream.
    pub async fn recv(&mut self) -> Option<Message> {
        let mut raw = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            let n = self.stream.read(&mut raw[got..]).await.unwrap_or(0);
            if n == 0 {
                assert_eq!(got, 0, "stream ended inside a frame header");
                return None;
            }
            got += n;
        }
        let h = FrameHeader::parse(raw).unwrap();
        let mut payload = vec![0u8; h.len as usize];
        self.stream.read_exact(&mut payload).await.unwrap();
        Some(Message::decode(h.kind, &payload).unwrap())
    }

    /// Sends a Request frame with `fds` attached via SCM_RIGHTS on its first byte.
    pub async fn send_with_fds(&mut self, msg: &Message, fds: &[OwnedFd]) {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::io::IoSlice;
        let mut buf = Vec::new();
        msg.encode(&mut buf).unwrap();
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let fd = self.stream.as_raw_fd();
        self.stream.writable().await.unwrap();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let n = sendmsg::<()>(
            fd,
            &[IoSlice::new(&buf[..1])],
            &cmsg,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert_eq!(n, 1);
        self.stream.write_all(&buf[1..]).await.unwrap();
    }
}

/// A request for `argv` from cwd `/work`.
pub fn request(argv: &[&str]) -> Request {
    Request {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        tool_path: format!("/usr/local/bin/{}", argv[0]).into_bytes(),
        cwd: b"/work".to_vec(),
        env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
        parent_request: None,
        ..Default::default()
    }
}

/// Expects a Decision and returns it.
pub async fn decision(c: &mut Client) -> clawrden_protocol::Decision {
    match c.recv().await {
        Some(Message::Decision(d)) => d,
        other => panic!("expected a decision, got {other:?}"),
    }
}
