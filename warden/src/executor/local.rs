//! The `local` executor: runs the command on the warden's own host under
//! `clawrden-shim exec-helper`, which makes the whole process tree killable (subreaper,
//! new session) and mirrors the command's exit status.
//!
//! Who and what runs: the program is `argv[0]`'s basename looked up in the warden's fixed
//! `command_path` (never the request's `tool_path`, never the shim); it runs as the
//! identity [`crate::identity`] chooses, never the warden's own (the helper stays the
//! warden's and only its forked child drops, so the command cannot signal its
//! supervisor), with `PATH` = `command_path` and that identity's `HOME`, `USER` and
//! `LOGNAME`, in a cgroup of its own where the kernel offers one ([`cgroup`]).
//!
//! Descriptors, one by one: a standard descriptor that is the caller's terminal becomes the
//! command's pty (one for all such descriptors, started with the caller's settings and
//! size; its output streams as `TtyOut`, its settings as `Termios` when they change); one
//! the shim passed with SCM_RIGHTS is given to the command as it is; a closed one is
//! /dev/null; any other is a pipe that streams. Descriptors above 2 the shim passed reach
//! the command at the caller's numbers (`--keep-fds`); every other descriptor above 2 is
//! closed for it. Timeout, cancellation and the shim disconnecting all
//! end the same way: SIGUSR1 to the helper, which kills the tree (SIGTERM, grace,
//! SIGKILL); if the helper itself has not exited after grace + 3 s, the warden SIGKILLs
//! the helper's descendants, its process group and the helper.
//!
//! The helper's parent-death signal is tied to the thread that spawned it, so `run` must
//! be polled on a runtime worker thread (or a current-thread runtime), never from a
//! `spawn_blocking` thread that may exit while the command runs.

pub mod cgroup;
mod plumbing;
pub(crate) mod procfs;
mod resolve;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clawrden_protocol::{FdKind, Termios};
use nix::pty::PtyMaster;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use self::cgroup::RequestCgroups;
use self::plumbing::StdinOp;
use self::resolve::ShimIdentity;
use super::{
    AbandonedRequest, ExecIo, ExecRequest, Executor, Leftovers, Outcome, PassedFds, ReapFuture,
    RunFuture, Started, StreamIn, StreamOut, REASON_CANCELLED_BY_WARDEN, REASON_SHIM_DISCONNECTED,
};
use crate::identity::{RunAs, RunIdentity};

/// Extra time the exec-helper gets, beyond the grace period, to finish killing the tree.
const HELPER_KILL_SLACK: Duration = Duration::from_secs(3);
/// How long output may still drain after the tree was killed.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);
/// Stdin chunks queued for the writer before the executor stops taking more input.
const STDIN_QUEUE: usize = 8;
/// Signals the shim may forward to the command.
const FORWARDED_SIGNALS: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
];
/// Beyond the command's own limit, when the exec-helper kills the tree by itself (the
/// warden normally does it at the limit; this is for a warden that died meanwhile).
const HELPER_TIME_LIMIT_SLACK: Duration = Duration::from_secs(5);

/// The exec-helper binary cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalExecutorError {
    #[error(
        "cannot use exec-helper {}: {source}; install clawrden-shim there or pass --exec-helper PATH",
        path.display()
    )]
    HelperUnreadable { path: PathBuf, source: io::Error },
    #[error(
        "exec-helper {} is not an executable file; point --exec-helper at the clawrden-shim binary",
        path.display()
    )]
    HelperNotExecutable { path: PathBuf },
}

/// How a local executor runs commands.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The clawrden-shim binary.
    pub exec_helper: PathBuf,
    /// Where commands are looked up, and their `PATH`.
    pub command_path: OsString,
    /// Who commands run as.
    pub run_as: RunAs,
    /// One cgroup per request, when available.
    pub cgroups: Option<RequestCgroups>,
}

/// Runs commands on the warden's host.
#[derive(Debug)]
pub struct LocalExecutor {
    exec_helper: PathBuf,
    shim: ShimIdentity,
    search_path: OsString,
    run_as: RunAs,
    cgroups: Option<RequestCgroups>,
}

impl LocalExecutor {
    /// A local executor with `options`; fails when the exec-helper cannot be used.
    pub fn new(options: LocalOptions) -> Result<LocalExecutor, LocalExecutorError> {
        let LocalOptions {
            exec_helper,
            command_path: search_path,
            run_as,
            cgroups,
        } = options;
        let meta = std::fs::metadata(&exec_helper).map_err(|source| {
            LocalExecutorError::HelperUnreadable {
                path: exec_helper.clone(),
                source,
            }
        })?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(LocalExecutorError::HelperNotExecutable { path: exec_helper });
        }
        let shim = ShimIdentity::of(&exec_helper).map_err(|source| {
            LocalExecutorError::HelperUnreadable {
                path: exec_helper.clone(),
                source,
            }
        })?;
        Ok(LocalExecutor {
            exec_helper,
            shim,
            search_path,
            run_as,
            cgroups,
        })
    }

    /// Where `argv0` resolves to: its basename in the command path, never the shim.
    pub fn resolve(&self, argv0: &[u8]) -> Option<PathBuf> {
        resolve::resolve(resolve::basename(argv0), &self.search_path, self.shim)
    }

    async fn run_request(&self, mut req: ExecRequest, io: ExecIo) -> Outcome {
        let ExecIo {
            input,
            output,
            started,
            mut cancel,
        } = io;
        if *cancel.borrow_and_update() {
            return Outcome::cancelled(REASON_CANCELLED_BY_WARDEN);
        }
        let program = match self.check(&req) {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        let identity =
            match self
                .run_as
                .for_call(req.run_as.as_deref(), req.uid, req.gid, &req.groups)
            {
                Ok(who) => who,
                Err(why) => {
                    return Outcome::SpawnFailed {
                        not_found: false,
                        message: format!("refused to run: {why}"),
                    }
                }
            };
        let mut cgroup = CgroupGuard(None);
        if let Some(cgroups) = &self.cgroups {
            match cgroups.create(&req.request_id) {
                Ok(dir) => cgroup.0 = Some(dir),
                Err(e) => {
                    return Outcome::SpawnFailed {
                        not_found: false,
                        message: format!(
                            "cannot create the request's cgroup under {}: {e}",
                            cgroups.parent().display()
                        ),
                    }
                }
            }
        }
        let spawned = self.spawn(&mut req, &program, &identity, cgroup.0.as_deref());
        let (mut child, wiring) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                cgroup.remove().await;
                return Outcome::SpawnFailed {
                    not_found: false,
                    message: format!(
                        "cannot start the exec-helper {}: {e}",
                        self.exec_helper.display()
                    ),
                };
            }
        };
        let Some(pid) = child.id() else {
            // Unreachable: a freshly spawned child has not been waited for.
            let _ = child.wait().await;
            return Outcome::SpawnFailed {
                not_found: false,
                message: "the exec-helper vanished right after it was started".into(),
            };
        };
        let _ = started.send(Started {
            pid,
            program: program.as_os_str().as_bytes().to_vec(),
            run_as: Some((identity.uid, identity.gid)),
        });
        let helper = Helper {
            child: Some(child),
            pid,
            grace: req.grace,
            exited: None,
        };
        let plumbing = Plumbing::start(wiring, output);
        let outcome = supervise(helper, plumbing, input, &mut cancel, req.timeout).await;
        // Whatever the helper did or suffered, nothing of the request outlives it.
        cgroup.remove().await;
        outcome
    }

    /// Validates the request and resolves the program, or says why it cannot run.
    fn check(&self, req: &ExecRequest) -> Result<PathBuf, Outcome> {
        let spawn_failed = |message: String| Outcome::SpawnFailed {
            not_found: false,
            message,
        };
        let Some(argv0) = req.argv.first() else {
            return Err(spawn_failed("the command line is empty".into()));
        };
        if req.argv.iter().any(|a| a.contains(&0)) {
            return Err(spawn_failed("an argument contains a NUL byte".into()));
        }
        if let Some((name, _)) = req
            .env
            .iter()
            .find(|(k, v)| k.is_empty() || k.contains(&b'=') || k.contains(&0) || v.contains(&0))
        {
            return Err(spawn_failed(format!(
                "invalid environment variable {:?}",
                String::from_utf8_lossy(name)
            )));
        }
        let program = self.resolve(argv0).ok_or_else(|| Outcome::SpawnFailed {
            not_found: true,
            message: format!(
                "command not found: {} (searched the warden's command_path {})",
                String::from_utf8_lossy(resolve::basename(argv0)),
                self.search_path.to_string_lossy()
            ),
        })?;
        let cwd = Path::new(OsStr::from_bytes(&req.cwd));
        let shown = String::from_utf8_lossy(&req.cwd);
        if req.cwd.contains(&0) || !cwd.is_absolute() {
            return Err(spawn_failed(format!(
                "working directory {shown:?} is not an absolute path"
            )));
        }
        match std::fs::metadata(cwd) {
            Ok(meta) if meta.is_dir() => Ok(program),
            Ok(_) => Err(spawn_failed(format!(
                "working directory {shown} is not a directory on the warden's host"
            ))),
            Err(e) => Err(spawn_failed(format!(
                "working directory {shown} is not usable on the warden's host: {e}"
            ))),
        }
    }

    /// Starts the exec-helper with the command's descriptors wired as the request says.
    fn spawn(
        &self,
        req: &mut ExecRequest,
        program: &Path,
        identity: &RunIdentity,
        cgroup: Option<&Path>,
    ) -> io::Result<(Child, Wiring)> {
        let cwd = OsStr::from_bytes(&req.cwd);
        let mut cmd = Command::new(&self.exec_helper);
        cmd.arg("exec-helper");
        let pty = match &req.terminal {
            Some(terminal) => Some(plumbing::open_pty(terminal)?),
            None => None,
        };
        if let Some(pty) = &pty {
            // The terminal is the command's user's, as a login gives a user theirs: a
            // program that reopens it by name must be able to.
            if identity.uid != self.run_as.warden().uid {
                if let Err(e) = nix::unistd::fchown(
                    std::os::fd::AsRawFd::as_raw_fd(&pty.slave),
                    Some(nix::unistd::Uid::from_raw(identity.uid)),
                    None,
                ) {
                    tracing::debug!(error = %e, uid = identity.uid, "cannot give the command's terminal to its user; it stays the warden's");
                }
            }
        }
        if pty.is_some() {
            cmd.arg("--tty");
        }
        let extra = req
            .fds
            .as_mut()
            .map(|f| std::mem::take(&mut f.extra))
            .unwrap_or_default();
        if !extra.is_empty() {
            let numbers: Vec<String> = extra.iter().map(|(n, _)| n.to_string()).collect();
            cmd.arg("--keep-fds").arg(numbers.join(","));
        }
        let mut env = std::mem::take(&mut req.env);
        crate::env::set_identity(
            &mut env,
            self.search_path.as_bytes(),
            identity.home.as_os_str().as_bytes(),
            identity.name.as_deref().map(str::as_bytes),
        );
        let entries: Vec<Vec<u8>> = env
            .iter()
            .map(|(k, v)| [k.as_slice(), b"=", v.as_slice()].concat())
            .collect();
        let block = clawrden_protocol::exec_env::encode(entries.iter().map(Vec::as_slice));
        cmd.args(identity_args(identity, &self.run_as))
            .arg("--request-id")
            .arg(&req.request_id)
            .arg("--env-block")
            .arg(block.len().to_string())
            .arg("--time-limit-ms")
            .arg(
                (req.timeout + req.grace + HELPER_TIME_LIMIT_SLACK)
                    .as_millis()
                    .to_string(),
            );
        if let Some(dir) = cgroup {
            cmd.arg("--cgroup").arg(dir);
        }
        cmd.arg("--grace-ms")
            .arg(req.grace.as_millis().to_string())
            .arg("--cwd")
            .arg(cwd)
            .arg("--")
            .arg(program)
            .args(req.argv.iter().map(|a| OsStr::from_bytes(a)))
            // The helper's own environment is the encoded block only: the caller's
            // variables are data for the command, never variables of its supervisor.
            .env_clear()
            .envs(block)
            .current_dir(cwd)
            // Its own process group, so the last-resort kill can take the group.
            .process_group(0)
            // Last resort only: normally the helper is waited for (see `Helper`'s Drop).
            .kill_on_drop(true);
        let PassedFds {
            stdio: mut passed, ..
        } = req.fds.take().unwrap_or_default();
        let mut streamed = [false; 3];
        for (i, kind) in req.stdio.iter().enumerate() {
            let stdio = match (kind, &pty, passed[i].take()) {
                (FdKind::Terminal, Some(pty), _) => Stdio::from(pty.slave.try_clone()?),
                (_, _, Some(fd)) => Stdio::from(fd),
                (FdKind::Closed, _, None) => Stdio::null(),
                _ => {
                    streamed[i] = true;
                    Stdio::piped()
                }
            };
            match i {
                0 => cmd.stdin(stdio),
                1 => cmd.stdout(stdio),
                _ => cmd.stderr(stdio),
            };
        }
        if !extra.is_empty() {
            crate::sys::pass_fds_at(&mut cmd, extra)?;
        }
        let mut child = cmd.spawn()?;
        // Dropping the command (and the pty's own slave) closes the warden's copies of the
        // slave and the passed fds, so EOF and hangup reach their readers when the
        // command's tree is done.
        drop(cmd);
        let (master, started) = match pty {
            Some(plumbing::Pty {
                master, started, ..
            }) => (Some(master), Some(started)),
            None => (None, None),
        };
        let wiring = Wiring {
            pty_input: master.is_some() && req.stdio[0] == FdKind::Terminal,
            master,
            started,
            stdin: child.stdin.take().filter(|_| streamed[0]),
            stdout: child.stdout.take().filter(|_| streamed[1]),
            stderr: child.stderr.take().filter(|_| streamed[2]),
        };
        Ok((child, wiring))
    }
}

impl Drop for LocalExecutor {
    fn drop(&mut self) {
        // The parent of this warden's request cgroups, once every request is gone (a
        // cgroup directory with children or processes is not removed).
        if let Some(cgroups) = &self.cgroups {
            let _ = std::fs::remove_dir(cgroups.parent());
        }
    }
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn passes_fds(&self) -> bool {
        true
    }

    fn run(&self, req: ExecRequest, io: ExecIo) -> RunFuture<'_> {
        Box::pin(self.run_request(req, io))
    }

    fn reap_abandoned<'a>(&'a self, requests: &'a [AbandonedRequest]) -> ReapFuture<'a> {
        let cgroups = self.cgroups.clone();
        let ids: Vec<String> = requests.iter().map(|r| r.id.clone()).collect();
        let warden_uid = self.run_as.warden().uid;
        Box::pin(async move {
            tokio::task::spawn_blocking(move || reap_leftovers(cgroups.as_ref(), &ids, warden_uid))
                .await
                .unwrap_or_default()
        })
    }
}

/// `--uid U --gid G --groups ...` for the helper, unless the command runs as the warden
/// itself (allowed by `allow_run_as_warden`), which needs no switch.
fn identity_args(identity: &RunIdentity, run_as: &RunAs) -> Vec<String> {
    let warden = run_as.warden();
    if identity.uid == warden.uid && identity.gid == warden.gid {
        return Vec::new();
    }
    let groups: Vec<String> = identity.groups.iter().map(u32::to_string).collect();
    vec![
        "--uid".into(),
        identity.uid.to_string(),
        "--gid".into(),
        identity.gid.to_string(),
        "--groups".into(),
        groups.join(","),
    ]
}

/// Kills what a crashed warden left running: every request cgroup under this warden's
/// parent, and every exec-helper (of the warden's uid) still supervising one of `ids`.
fn reap_leftovers(
    cgroups: Option<&RequestCgroups>,
    ids: &[String],
    warden_uid: u32,
) -> Vec<(String, Leftovers)> {
    let mut report: Vec<(String, Leftovers)> = Vec::new();
    for id in ids {
        let helpers = procfs::helpers_of(id, warden_uid);
        let found = !helpers.is_empty();
        for helper in helpers {
            for pid in procfs::descendants(helper) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(helper), Signal::SIGKILL);
        }
        report.push((
            id.clone(),
            if found {
                Leftovers::Killed
            } else {
                Leftovers::NoneLeft
            },
        ));
    }
    for (id, dir) in cgroups.map(RequestCgroups::leftovers).unwrap_or_default() {
        let outcome = match cgroup::kill_and_remove(&dir) {
            Ok(true) => Leftovers::Killed,
            Ok(false) => Leftovers::NoneLeft,
            Err(e) => Leftovers::Failed(format!("cannot kill the cgroup {}: {e}", dir.display())),
        };
        match report.iter_mut().find(|(r, _)| *r == id) {
            Some((_, seen)) if outcome != Leftovers::NoneLeft => *seen = outcome,
            Some(_) => {}
            None => report.push((id, outcome)),
        }
    }
    report
}

/// The request's cgroup, removed (after killing what is left in it) when the request
/// ends, or in the background if the run future is dropped first.
struct CgroupGuard(Option<PathBuf>);

impl CgroupGuard {
    async fn remove(&mut self) {
        if let Some(dir) = self.0.take() {
            let shown = dir.display().to_string();
            match tokio::task::spawn_blocking(move || cgroup::kill_and_remove(&dir)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(cgroup = %shown, error = %e, "cannot remove the request's cgroup")
                }
                Err(e) => {
                    tracing::warn!(cgroup = %shown, error = %e, "removing the request's cgroup failed")
                }
            }
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn_blocking(move || cgroup::kill_and_remove(&dir));
            }
        }
    }
}

/// How the command's descriptors are connected, as far as the warden streams them.
struct Wiring {
    /// The pty master, when the command has a terminal.
    master: Option<Arc<AsyncFd<PtyMaster>>>,
    /// The settings the pty started with.
    started: Option<Termios>,
    /// stdin is the pty: `Stdin` frames are typed into it.
    pty_input: bool,
    /// Streamed pipes (none for a descriptor that is the pty, passed, or closed).
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

/// The running exec-helper. If it is dropped before it was waited for (the `run` future
/// was dropped), a background task still kills the tree properly and reaps the helper.
struct Helper {
    child: Option<Child>,
    pid: u32,
    grace: Duration,
    exited: Option<ExitStatus>,
}

impl Helper {
    fn child(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("the child is only taken on drop")
    }

    /// Forwards a signal, only while the helper has not been reaped (its pid is ours).
    fn signal(&self, signal: Signal) {
        if self.exited.is_none() {
            let _ = kill(Pid::from_raw(self.pid as i32), signal);
        }
    }

    /// Kills the tree through the helper, falling back to killing it ourselves.
    async fn kill_tree(&mut self) {
        if self.exited.is_some() {
            return;
        }
        let Some(child) = self.child.as_mut() else {
            return;
        };
        self.exited = kill_through_helper(child, self.pid, self.grace).await;
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.exited.is_some() {
            return;
        }
        let (pid, grace) = (self.pid, self.grace);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                kill_through_helper(&mut child, pid, grace).await;
            });
        }
        // Without a runtime the child drops here and kill_on_drop SIGKILLs the helper.
    }
}

/// SIGUSR1 to the helper (it kills the tree: SIGTERM, grace, SIGKILL rounds), then waits.
/// If the helper has not exited after grace + 3 s, SIGKILLs its descendants, its process
/// group and the helper itself.
async fn kill_through_helper(child: &mut Child, pid: u32, grace: Duration) -> Option<ExitStatus> {
    let helper = Pid::from_raw(pid as i32);
    let _ = kill(helper, Signal::SIGUSR1);
    if let Ok(status) = tokio::time::timeout(grace + HELPER_KILL_SLACK, child.wait()).await {
        return status.ok();
    }
    tracing::warn!(
        pid,
        "the exec-helper did not finish killing the process tree; killing the tree directly"
    );
    for descendant in procfs::descendants(pid as i32) {
        let _ = kill(Pid::from_raw(descendant), Signal::SIGKILL);
    }
    let _ = killpg(helper, Signal::SIGKILL);
    let _ = child.start_kill();
    child.wait().await.ok()
}

/// The I/O tasks of one command.
struct Plumbing {
    readers: JoinSet<()>,
    stdin: Option<(mpsc::Sender<StdinOp>, JoinHandle<()>)>,
    master: Option<Arc<AsyncFd<PtyMaster>>>,
    /// Kept until the run ends, so the channel stays open whatever streams.
    _idle_output: Option<mpsc::Sender<StreamOut>>,
}

impl Plumbing {
    /// Starts the output pumps and the stdin writer. Called after `Started` was sent, so
    /// no output can precede it.
    fn start(wiring: Wiring, output: mpsc::Sender<StreamOut>) -> Plumbing {
        let mut readers = JoinSet::new();
        if let (Some(master), Some(started)) = (&wiring.master, wiring.started) {
            readers.spawn(plumbing::pump_pty(master.clone(), started, output.clone()));
        }
        if let Some(stdout) = wiring.stdout {
            readers.spawn(plumbing::pump_pipe(
                stdout,
                output.clone(),
                StreamOut::Stdout,
            ));
        }
        if let Some(stderr) = wiring.stderr {
            readers.spawn(plumbing::pump_pipe(
                stderr,
                output.clone(),
                StreamOut::Stderr,
            ));
        }
        let stdin = match (&wiring.master, wiring.stdin) {
            (Some(master), _) if wiring.pty_input => {
                let (tx, rx) = mpsc::channel(STDIN_QUEUE);
                Some((tx, tokio::spawn(plumbing::write_pty(master.clone(), rx))))
            }
            (_, Some(pipe)) => {
                let (tx, rx) = mpsc::channel(STDIN_QUEUE);
                Some((tx, tokio::spawn(plumbing::write_pipe(pipe, rx))))
            }
            _ => None,
        };
        Plumbing {
            readers,
            stdin,
            master: wiring.master,
            // Nothing may stream at all; the output channel stays open until the run ends.
            _idle_output: Some(output),
        }
    }

    fn stop_stdin(&mut self) {
        if let Some((_, writer)) = self.stdin.take() {
            writer.abort();
        }
    }

    /// Lets the output pumps finish for at most `limit`, then stops them.
    async fn drain(&mut self, limit: Duration) {
        let readers = &mut self.readers;
        let _ = tokio::time::timeout(limit, async {
            while readers.join_next().await.is_some() {}
        })
        .await;
        self.readers.abort_all();
        self.stop_stdin();
    }
}

/// Why supervision stopped before the command finished on its own.
enum Stop {
    TimedOut,
    Cancelled(String),
}

/// Waits until the command ends (and its output is complete), forwarding input and
/// signals, or until the timeout / cancellation / disconnect kills the tree.
async fn supervise(
    mut helper: Helper,
    mut plumbing: Plumbing,
    mut input: mpsc::Receiver<StreamIn>,
    cancel: &mut watch::Receiver<bool>,
    timeout: Duration,
) -> Outcome {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut outputs_done = plumbing.readers.is_empty();
    let mut pending: Option<StdinOp> = None;
    let stop = loop {
        if let (Some(status), true) = (helper.exited, outputs_done) {
            plumbing.stop_stdin();
            return outcome_of(status);
        }
        tokio::select! {
            biased;
            () = &mut deadline => break Stop::TimedOut,
            () = cancelled_by_warden(cancel) => {
                break Stop::Cancelled(REASON_CANCELLED_BY_WARDEN.into());
            }
            status = helper.child().wait(), if helper.exited.is_none() => match status {
                Ok(status) => helper.exited = Some(status),
                Err(e) => break Stop::Cancelled(format!("lost track of the command: {e}")),
            },
            joined = plumbing.readers.join_next(), if !outputs_done => {
                outputs_done = joined.is_none();
            }
            permit = reserve_stdin(&plumbing.stdin), if pending.is_some() => {
                if let (Some(permit), Some(op)) = (permit, pending.take()) {
                    permit.send(op);
                }
            }
            message = input.recv(), if pending.is_none() => match message {
                None => break Stop::Cancelled(REASON_SHIM_DISCONNECTED.into()),
                Some(StreamIn::Stdin(data)) if plumbing.stdin.is_some() => {
                    pending = Some(StdinOp::Data(data));
                }
                Some(StreamIn::StdinEof) if plumbing.stdin.is_some() => pending = Some(StdinOp::Eof),
                Some(StreamIn::Stdin(_) | StreamIn::StdinEof) => {}
                Some(StreamIn::Signal(n)) => {
                    if let Some(signal) = FORWARDED_SIGNALS.into_iter().find(|s| *s as i32 == n) {
                        helper.signal(signal);
                    }
                }
                Some(StreamIn::Resize { rows, cols }) => {
                    if let Some(master) = &plumbing.master {
                        if let Err(e) = crate::sys::set_window_size(master.get_ref().as_fd(), rows, cols) {
                            tracing::debug!(error = %e, "resizing the terminal failed");
                        }
                    }
                }
            },
        }
    };
    if let Some(status) = helper.exited {
        // The command had already finished; only the wait for its output was cut short.
        plumbing.drain(Duration::ZERO).await;
        return outcome_of(status);
    }
    helper.kill_tree().await;
    plumbing.drain(DRAIN_AFTER_KILL).await;
    match stop {
        Stop::TimedOut => Outcome::TimedOut { after: timeout },
        Stop::Cancelled(reason) => Outcome::Cancelled { reason },
    }
}

/// Waits until the stdin writer can take one more operation.
async fn reserve_stdin(
    stdin: &Option<(mpsc::Sender<StdinOp>, JoinHandle<()>)>,
) -> Option<mpsc::Permit<'_, StdinOp>> {
    match stdin {
        Some((tx, _)) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

/// Resolves once the warden's cancel flag is true; never if the flag's sender is gone.
async fn cancelled_by_warden(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn outcome_of(status: ExitStatus) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(signal)) => Outcome::Signaled(signal),
        (None, None) => Outcome::Exited(status.into_raw()),
    }
}
