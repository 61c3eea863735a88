//! Executors run an allowed command and stream its I/O. The session hands one an
//! [`ExecRequest`] and an [`ExecIo`]; it returns the [`Outcome`].
//!
//! Contract every executor keeps:
//! - `io.input` closing (the session's reader saw the shim disconnect) means the call was
//!   cancelled: the whole process tree dies (SIGTERM, `grace`, SIGKILL) and the outcome
//!   is [`Outcome::Cancelled`].
//! - `io.cancel` turning `true` (lockdown, kill switch, shutdown) does the same.
//! - At `timeout` the whole process tree dies the same way and the outcome is
//!   [`Outcome::TimedOut`].
//! - `io.started` is sent at most once: just after the command exists, before any of its
//!   output; never for a command that could not be started.
//! - Output goes to `io.output` in order; the channel is bounded, so a slow shim slows the
//!   command instead of growing memory.
//! - Each standard descriptor keeps its kind (`ExecRequest::stdio`): terminal ones share
//!   one PTY that starts with the caller's settings and size; its output is `TtyOut`, and
//!   its settings go back as `Termios` when they change, so the caller's terminal ends as
//!   the command left it (README, "What the agent sees").

pub mod local;
pub mod mirror;

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::time::Duration;

use clawrden_protocol::{FdKind, Terminal, Termios};
use tokio::sync::{mpsc, oneshot, watch};

/// What to run. The session has already decided and built the environment
/// ([`crate::env`]) and set `CLAWRDEN_PARENT_REQUEST`.
#[derive(Debug)]
pub struct ExecRequest {
    pub request_id: String,
    pub prisoner: String,
    /// `argv[0]` is the name the tool was invoked as. Its basename is the name the policy
    /// decided on, and the only thing an executor chooses the program by.
    pub argv: Vec<Vec<u8>>,
    /// The shimmed tool's path as the shim found it. Recorded in the audit, never used to
    /// choose what runs.
    pub tool_path: Vec<u8>,
    pub cwd: Vec<u8>,
    /// The command's environment ([`crate::env`]): final for `mirror`; for warden-side
    /// executors without `PATH`, `HOME`, `USER` and `LOGNAME`, which they set from the
    /// identity the command runs as.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// What the caller's descriptors 0, 1 and 2 are. Each of the command's is the same
    /// kind: a terminal one is the command's PTY (one PTY for all of them), a closed one
    /// /dev/null, any other the caller's own descriptor (`fds`) or a streamed pipe.
    pub stdio: [FdKind; 3],
    /// The caller's terminal, which the command's PTY starts as: present exactly when a
    /// `stdio` kind is [`FdKind::Terminal`].
    pub terminal: Option<Terminal>,
    pub timeout: Duration,
    /// How long the tree gets between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Caller's identity from SO_PEERCRED.
    pub uid: u32,
    pub gid: u32,
    /// Caller's supplementary groups (SO_PEERGROUPS).
    pub groups: Vec<u32>,
    /// The deciding rule's `run_as` user (warden-side executors).
    pub run_as: Option<String>,
    /// The caller's own descriptors, when the shim passed them with SCM_RIGHTS and the
    /// session told it `uses_fds` (only to an executor whose [`Executor::passes_fds`] is
    /// true). Only the terminal, if any, then streams.
    pub fds: Option<PassedFds>,
}

impl ExecRequest {
    /// fd 0 was open.
    pub fn stdin_open(&self) -> bool {
        self.stdio[0] != FdKind::Closed
    }
}

/// The caller's descriptors handed to the command as they are.
#[derive(Debug, Default)]
pub struct PassedFds {
    /// fds 0, 1 and 2: present for every one that is neither closed nor a terminal.
    pub stdio: [Option<OwnedFd>; 3],
    /// Descriptors above 2, at the caller's numbers, ascending.
    pub extra: Vec<(u32, OwnedFd)>,
}

/// Shim -> command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamIn {
    Stdin(Vec<u8>),
    StdinEof,
    Signal(i32),
    Resize { rows: u16, cols: u16 },
}

/// Command -> shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOut {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Output of the command's PTY.
    TtyOut(Vec<u8>),
    /// The command's PTY settings changed (sent when noticed, and once more, if they
    /// changed, before the command's outcome).
    Termios(Termios),
}

/// Facts about a started command, for the `start` audit event.
#[derive(Debug, Clone)]
pub struct Started {
    /// Pid of the supervising process on the executor's host.
    pub pid: u32,
    /// What runs: `local`, the absolute path executed; `mirror`, the path of the original
    /// the exec-helper found for the command's name (its fixed search order,
    /// docs/docker.md), as its `Started` frame reports it.
    pub program: Vec<u8>,
    /// The uid and gid the command runs as, when the executor knows them.
    pub run_as: Option<(u32, u32)>,
}

/// The channels between a session and an executor.
#[derive(Debug)]
pub struct ExecIo {
    pub input: mpsc::Receiver<StreamIn>,
    pub output: mpsc::Sender<StreamOut>,
    pub started: oneshot::Sender<Started>,
    pub cancel: watch::Receiver<bool>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
    TimedOut {
        after: Duration,
    },
    /// The shim went away or the warden cancelled; `reason` says which.
    Cancelled {
        reason: String,
    },
    /// The command could not be started. `not_found` distinguishes 127 from 126.
    SpawnFailed {
        not_found: bool,
        message: String,
    },
}

/// `Cancelled.reason` when the shim went away.
pub const REASON_SHIM_DISCONNECTED: &str = "the shim disconnected";
/// `Cancelled.reason` when the warden cancelled (lockdown, kill switch, shutdown).
pub const REASON_CANCELLED_BY_WARDEN: &str = "cancelled by the warden";

impl Outcome {
    /// [`Outcome::Cancelled`] with `reason`.
    pub fn cancelled(reason: &str) -> Outcome {
        Outcome::Cancelled {
            reason: reason.into(),
        }
    }
}

/// Boxed future returned by [`Executor::run`].
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// A request that a previous warden on the same state directory left running (it died
/// without ending it). Its processes may still run; they must not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedRequest {
    pub id: String,
    pub prisoner: String,
}

/// What became of the processes of an abandoned request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftovers {
    /// Processes were still running and are killed.
    Killed,
    /// Nothing of it was running any more.
    NoneLeft,
    /// They could not be looked for or killed; the message says why.
    Failed(String),
}

impl Leftovers {
    /// `killed`, `none_left` or `failed` (audit field `leftovers`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Leftovers::Killed => "killed",
            Leftovers::NoneLeft => "none_left",
            Leftovers::Failed(_) => "failed",
        }
    }
}

/// Boxed future returned by [`Executor::reap_abandoned`].
pub type ReapFuture<'a> = Pin<Box<dyn Future<Output = Vec<(String, Leftovers)>> + Send + 'a>>;

/// Runs allowed commands somewhere (locally, in the prisoner, in a ghost container).
pub trait Executor: Send + Sync {
    /// Short name for logs, audit and metrics: `local`, `mirror`, `ghost`.
    fn name(&self) -> &'static str;
    /// Whether the command can be given the caller's own descriptors (same host): then
    /// every descriptor the caller left open reaches it at the same number, and only a
    /// terminal streams. Otherwise everything streams and descriptors above 2 do not
    /// exist for the command, so a call naming one (`/dev/fd/63`) is denied.
    fn passes_fds(&self) -> bool {
        false
    }
    /// Runs `req` to completion under the contract above.
    fn run(&self, req: ExecRequest, io: ExecIo) -> RunFuture<'_>;
    /// At start-up: kills whatever still runs of `requests` (abandoned by a previous warden
    /// that ran them with this executor) and of any request this executor finds left over
    /// on its own; returns what became of each, by request id.
    fn reap_abandoned<'a>(&'a self, requests: &'a [AbandonedRequest]) -> ReapFuture<'a> {
        let _ = requests;
        Box::pin(async { Vec::new() })
    }
}
