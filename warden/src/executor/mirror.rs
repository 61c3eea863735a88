//! The `mirror` executor: runs the tool's *original* back in the prisoner container through
//! `docker exec`, under the exec-helper of the shim installed there:
//!
//! ```text
//! /usr/lib/clawrden/bin/clawrden-shim exec-helper --original-root /usr/lib/clawrden/originals
//!     --uid U --gid G --grace-ms N --request-id ID --env-block N --time-limit-ms N
//!     --no-parent-death --framed [--hex] --cwd CWD -- NAME ARGV...
//! ```
//!
//! NAME is the basename of `argv[0]`, the name the policy decided on: the helper runs the
//! original of that name, found by its fixed search order (docs/docker.md, "Which original
//! runs"). The request's `tool_path` is never used to choose what runs. The exec runs as
//! root (only root can reach an original); the helper opens the original as root, drops to
//! the caller's uid, gid and groups, and runs it in the caller's cwd with the caller's
//! environment ([`crate::env::for_mirror`]), which reaches the helper as an opaque block
//! (`CLAWRDEN_EXEC_ENV_*`), never as its own variables. `--time-limit-ms` makes the helper
//! kill the tree itself if this warden dies before the limit.
//!
//! The exec is never a Docker TTY: its stdin and stdout carry the executor channel
//! (`clawrden_protocol::channel`, see [`channel`]). The first frame tells the helper how to
//! set up each of the command's standard descriptors (a PTY with the caller's terminal
//! settings and size for every one that is the caller's terminal, a pipe for the others,
//! /dev/null for a closed one); then stdin, signals, resizes go in as frames, and
//! `Started` (with the original the helper executes: the `start` event's `program`), output,
//! terminal output, terminal settings, and finally the exact outcome (an exit status, or
//! death by a signal as that signal) come back. The helper's own stderr carries only its
//! diagnostics. Descriptors above 2 cannot cross into the container (the session denies
//! a call that names one).
//!
//! Timeout, cancellation and the shim disconnecting send `Kill` (the helper kills the whole
//! tree: SIGTERM, grace, SIGKILL); if the exec has not ended after grace + 3 s, a second
//! exec, `clawrden-shim exec-helper --kill --request-id ID --signal KILL`, kills the tree
//! and the helper directly.

mod channel;

use std::collections::HashMap;
use std::time::Duration;

use clawrden_protocol::channel::{ChannelMsg, Start, StdioPlan};
use clawrden_protocol::{FdKind, WinSize};
use tokio::sync::watch;

use self::channel::{StartedReport, ToHelper};
use super::{
    AbandonedRequest, ExecIo, ExecRequest, Executor, Leftovers, Outcome, ReapFuture, RunFuture,
    StreamIn,
};
use crate::docker::{AttachedExec, DockerClient, ExecSpec};
use crate::executor::{REASON_CANCELLED_BY_WARDEN, REASON_SHIM_DISCONNECTED};
use clawrden_protocol::exec_env;

/// The shim inside a hardened prisoner (install-clawrden.sh puts it there).
pub const SHIM_IN_PRISONER: &str = "/usr/lib/clawrden/bin/clawrden-shim";
/// Where install-clawrden.sh keeps the originals.
pub const ORIGINALS_IN_PRISONER: &str = "/usr/lib/clawrden/originals";
/// Extra time the exec-helper gets, beyond the grace period, to finish killing the tree.
const HELPER_KILL_SLACK: Duration = Duration::from_secs(3);
/// How long to wait for the exec to end after the last-resort SIGKILL.
const AFTER_HARD_KILL: Duration = Duration::from_secs(3);
/// Beyond the command's own limit, when the exec-helper kills the tree by itself (the
/// warden normally does it at the limit; this is for a warden that died meanwhile).
const HELPER_TIME_LIMIT_SLACK: Duration = Duration::from_secs(5);
/// Signals the shim may forward to the command (the helper forwards them to its group).
const FORWARDED_SIGNALS: [i32; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGWINCH,
];

/// Runs commands back inside their prisoner's container.
#[derive(Debug)]
pub struct MirrorExecutor {
    docker: DockerClient,
    /// Prisoner name -> container name or id, or a `label=KEY=VALUE` selector.
    containers: HashMap<String, String>,
    shim: String,
    originals: String,
}

impl MirrorExecutor {
    /// `containers` maps each prisoner this executor serves to its container.
    pub fn new(docker: DockerClient, containers: HashMap<String, String>) -> MirrorExecutor {
        MirrorExecutor {
            docker,
            containers,
            shim: SHIM_IN_PRISONER.to_owned(),
            originals: ORIGINALS_IN_PRISONER.to_owned(),
        }
    }

    /// The Docker client (shared with the prisoner runtime).
    pub fn docker(&self) -> &DockerClient {
        &self.docker
    }

    /// The `docker exec` that runs `req` under the exec-helper.
    pub fn exec_spec(&self, req: &ExecRequest) -> Result<ExecSpec, String> {
        let name = command_name(req)?;
        let entries: Vec<Vec<u8>> = req
            .env
            .iter()
            .filter(|(k, v)| {
                !k.is_empty() && !k.contains(&b'=') && !k.contains(&0) && !v.contains(&0)
            })
            .map(|(k, v)| [k.as_slice(), b"=", v.as_slice()].concat())
            .collect();
        let env: Vec<String> = exec_env::encode(entries.iter().map(Vec::as_slice))
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let words = std::iter::once(&req.cwd).chain(req.argv.iter());
        let hex = words.clone().any(|w| std::str::from_utf8(w).is_err());
        let word = |w: &[u8]| -> Result<String, String> {
            if w.contains(&0) {
                return Err("an argument contains a NUL byte".into());
            }
            Ok(if hex {
                w.iter().map(|b| format!("{b:02x}")).collect()
            } else {
                String::from_utf8_lossy(w).into_owned()
            })
        };
        let mut cmd = vec![
            self.shim.clone(),
            "exec-helper".into(),
            "--original-root".into(),
            self.originals.clone(),
            "--uid".into(),
            req.uid.to_string(),
            "--gid".into(),
            req.gid.to_string(),
            "--grace-ms".into(),
            req.grace.as_millis().to_string(),
            "--request-id".into(),
            req.request_id.clone(),
            "--env-block".into(),
            env.len().to_string(),
            "--time-limit-ms".into(),
            (req.timeout + req.grace + HELPER_TIME_LIMIT_SLACK)
                .as_millis()
                .to_string(),
            "--no-parent-death".into(),
        ];
        cmd.push("--framed".into());
        if hex {
            cmd.push("--hex".into());
        }
        cmd.push("--cwd".into());
        cmd.push(word(&req.cwd)?);
        cmd.push("--".into());
        cmd.push(word(name)?);
        for a in &req.argv {
            cmd.push(word(a)?);
        }
        Ok(ExecSpec {
            cmd,
            env,
            user: "0:0".into(),
            working_dir: Some("/".into()),
            // The channel: never a Docker TTY, stdin always attached.
            tty: false,
            stdin: true,
        })
    }

    async fn run_request(&self, req: ExecRequest, io: ExecIo) -> Outcome {
        let ExecIo {
            mut input,
            output,
            started,
            mut cancel,
        } = io;
        if *cancel.borrow_and_update() {
            return Outcome::cancelled(REASON_CANCELLED_BY_WARDEN);
        }
        let Some(target) = self.containers.get(&req.prisoner) else {
            return Outcome::SpawnFailed {
                not_found: false,
                message: format!(
                    "prisoner {} has no container for the mirror executor; add it to the warden config",
                    req.prisoner
                ),
            };
        };
        // A `container_label` prisoner is looked up on every call: its container may have
        // been replaced since the last one.
        let container = match self.docker.resolve_container(target).await {
            Ok(c) => c,
            Err(e) => {
                return Outcome::SpawnFailed {
                    not_found: false,
                    message: format!(
                        "cannot find the container of prisoner {}: {e}",
                        req.prisoner
                    ),
                }
            }
        };
        let spec = match self.exec_spec(&req) {
            Ok(s) => s,
            Err(message) => {
                return Outcome::SpawnFailed {
                    not_found: false,
                    message,
                }
            }
        };
        let exec = match self.docker.exec(&container, &spec).await {
            Ok(e) => e,
            Err(e) => {
                return Outcome::SpawnFailed {
                    not_found: false,
                    message: format!("cannot run the command in the prisoner: {e}"),
                }
            }
        };
        let mut guard = KillGuard {
            docker: self.docker.clone(),
            container: container.clone(),
            shim: self.shim.clone(),
            request_id: req.request_id.clone(),
            armed: true,
        };
        let AttachedExec {
            id,
            output: stream,
            input: stdin,
        } = exec;
        let (helper, writer) = ToHelper::start(stdin);
        let start = start_frame(&req);
        if !helper.send(ChannelMsg::Start(start)).await {
            tracing::debug!("the exec's stdin closed before the call started");
        }
        let pid = match self.docker.exec_state(&container, &id).await {
            Ok(state) => state.pid,
            Err(e) => {
                tracing::debug!(error = %e, "inspecting the exec for its pid failed");
                0
            }
        };
        // Reported when the helper says the command runs, with the original it executes.
        let report = StartedReport {
            tx: started,
            pid,
            run_as: Some((req.uid, req.gid)),
        };
        let mut reader = tokio::spawn(channel::read_helper(
            stream,
            output,
            helper.window.clone(),
            Some(report),
        ));
        let has_terminal = req.terminal.is_some();
        // False once stdin was closed (or cannot take more): input is dropped.
        let mut stdin_alive = req.stdin_open() || req.stdio[0] == FdKind::Terminal;
        let mut pending: Option<StreamIn> = None;
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let stop = loop {
            tokio::select! {
                biased;
                () = &mut deadline => break Stop::TimedOut,
                () = cancelled_by_warden(&mut cancel) => {
                    break Stop::Cancelled(REASON_CANCELLED_BY_WARDEN.into());
                }
                end = &mut reader => {
                    writer.abort();
                    guard.armed = false;
                    let end = end.unwrap_or_default();
                    if let Some(outcome) = end.outcome {
                        return outcome;
                    }
                    if let Some(broken) = end.broken {
                        return Outcome::Cancelled {
                            reason: format!("lost track of the command: {broken}"),
                        };
                    }
                    // The helper ended without an outcome: it failed before it could run
                    // the command (its stderr said why); Docker has its exit status.
                    return match self.docker.exec_finished(&container, &id).await {
                        Ok(state) => match state.exit_code.map(i32::try_from) {
                            Some(Ok(code)) => Outcome::Exited(code),
                            _ => Outcome::Cancelled {
                                reason: "the Docker engine reported no exit status for the command".into(),
                            },
                        },
                        Err(e) => Outcome::Cancelled {
                            reason: format!("lost track of the command: {e}"),
                        },
                    };
                }
                permit = stdin_window(&helper, &pending) => {
                    let Some(op) = pending.take() else { continue };
                    if let Some(permit) = permit {
                        permit.forget();
                    }
                    let msg = match op {
                        StreamIn::Stdin(data) => ChannelMsg::Stdin(data),
                        _ => ChannelMsg::StdinEof,
                    };
                    if !helper.send(msg).await {
                        stdin_alive = false;
                    }
                }
                message = input.recv(), if pending.is_none() => match message {
                    None => break Stop::Cancelled(REASON_SHIM_DISCONNECTED.into()),
                    Some(op @ StreamIn::Stdin(_)) if stdin_alive => pending = Some(op),
                    Some(StreamIn::StdinEof) if stdin_alive => {
                        pending = Some(StreamIn::StdinEof);
                        stdin_alive = false;
                    }
                    Some(StreamIn::Stdin(_) | StreamIn::StdinEof) => {}
                    Some(StreamIn::Signal(n)) => {
                        if FORWARDED_SIGNALS.contains(&n) {
                            helper.send(ChannelMsg::Signal(n)).await;
                        }
                    }
                    Some(StreamIn::Resize { rows, cols }) => {
                        if has_terminal {
                            let size = WinSize { rows, cols, xpixel: 0, ypixel: 0 };
                            helper.send(ChannelMsg::Resize(size)).await;
                        }
                    }
                },
            }
        };
        guard.armed = false;
        helper.send(ChannelMsg::Kill).await;
        if tokio::time::timeout(req.grace + HELPER_KILL_SLACK, &mut reader)
            .await
            .is_err()
        {
            tracing::warn!(
                request_id = %req.request_id,
                container = %container,
                "the exec-helper did not finish killing the process tree; killing the tree directly"
            );
            signal_running_helper(
                &self.docker,
                &container,
                &self.shim,
                &req.request_id,
                "KILL",
            )
            .await;
            if tokio::time::timeout(AFTER_HARD_KILL, &mut reader)
                .await
                .is_err()
            {
                tracing::error!(
                    request_id = %req.request_id,
                    container = %container,
                    "the command's exec did not end after SIGKILL; its output stream is abandoned"
                );
                reader.abort();
            }
        }
        drop(helper);
        writer.abort();
        match stop {
            Stop::TimedOut => Outcome::TimedOut { after: req.timeout },
            Stop::Cancelled(reason) => Outcome::Cancelled { reason },
        }
    }
}

/// The `Start` frame for `req`: each standard descriptor as the caller's (a terminal one is
/// the PTY, a closed one /dev/null, any other a streamed pipe).
fn start_frame(req: &ExecRequest) -> Start {
    let mut stdio = [StdioPlan::Pipe; 3];
    for (plan, kind) in stdio.iter_mut().zip(req.stdio) {
        *plan = match kind {
            FdKind::Terminal => StdioPlan::Terminal,
            FdKind::Closed => StdioPlan::Null,
            _ => StdioPlan::Pipe,
        };
    }
    let terminal = req
        .terminal
        .as_ref()
        .filter(|_| stdio.contains(&StdioPlan::Terminal))
        .map(|t| (t.termios.clone(), t.size));
    if terminal.is_none() {
        // No settings to start a PTY with: no PTY (the request's terminal always comes
        // with a terminal descriptor, so this only guards the frame's invariant).
        for plan in &mut stdio {
            if *plan == StdioPlan::Terminal {
                *plan = StdioPlan::Pipe;
            }
        }
    }
    Start { stdio, terminal }
}

/// Resolves when the pending stdin operation may be sent: data needs its length in window
/// (a permit the caller forgets once sent); end-of-file needs none. Never resolves without
/// a pending operation.
async fn stdin_window<'a>(
    helper: &'a ToHelper,
    pending: &Option<StreamIn>,
) -> Option<tokio::sync::SemaphorePermit<'a>> {
    match pending {
        Some(StreamIn::Stdin(data)) => {
            let n = u32::try_from(data.len()).unwrap_or(u32::MAX).max(1);
            helper.window.acquire_many(n).await.ok()
        }
        Some(_) => None,
        None => std::future::pending().await,
    }
}

impl Executor for MirrorExecutor {
    fn name(&self) -> &'static str {
        "mirror"
    }

    fn run(&self, req: ExecRequest, io: ExecIo) -> RunFuture<'_> {
        Box::pin(self.run_request(req, io))
    }

    fn reap_abandoned<'a>(&'a self, requests: &'a [AbandonedRequest]) -> ReapFuture<'a> {
        Box::pin(async move {
            let mut report = Vec::with_capacity(requests.len());
            for r in requests {
                let outcome = match self.containers.get(&r.prisoner) {
                    None => Leftovers::Failed(format!(
                        "prisoner {} has no container in the warden config",
                        r.prisoner
                    )),
                    Some(target) => match self.docker.resolve_container(target).await {
                        // `--kill` only believes root helpers.
                        Ok(container) => {
                            signal_helper(&self.docker, &container, &self.shim, &r.id, "KILL").await
                        }
                        Err(e) => Leftovers::Failed(format!(
                            "cannot find the container of prisoner {}: {e}",
                            r.prisoner
                        )),
                    },
                };
                report.push((r.id.clone(), outcome));
            }
            report
        })
    }
}

/// The name the command runs by: the basename of `argv[0]` (what the policy matched),
/// which must be a plain command name.
fn command_name(req: &ExecRequest) -> Result<&[u8], String> {
    let argv0 = req.argv.first().ok_or("the command line is empty")?;
    let name = match argv0.iter().rposition(|&b| b == b'/') {
        Some(slash) => &argv0[slash + 1..],
        None => argv0.as_slice(),
    };
    let plain = !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b < 0x20 || b == 0x7f);
    if plain {
        Ok(name)
    } else {
        Err(format!(
            "argv[0] {:?} does not end in a command name",
            String::from_utf8_lossy(argv0)
        ))
    }
}

/// Why supervision stopped before the command finished on its own.
enum Stop {
    TimedOut,
    Cancelled(String),
}

/// Resolves once the warden's cancel flag is true; never if the flag's sender is gone.
async fn cancelled_by_warden(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs `exec-helper --kill --request-id ID --signal SIG` in the container and waits for
/// it: `Killed` when a helper was signalled, `NoneLeft` when there is none (exit 3: the
/// command had just ended), else why it failed.
async fn signal_helper(
    docker: &DockerClient,
    container: &str,
    shim: &str,
    request_id: &str,
    signal: &str,
) -> Leftovers {
    let spec = ExecSpec {
        cmd: vec![
            shim.to_owned(),
            "exec-helper".into(),
            "--kill".into(),
            "--request-id".into(),
            request_id.to_owned(),
            "--signal".into(),
            signal.to_owned(),
        ],
        user: "0:0".into(),
        ..ExecSpec::default()
    };
    match docker.exec_output(container, &spec).await {
        Ok(out) if out.exit_code == Some(0) => Leftovers::Killed,
        Ok(out) if out.exit_code == Some(3) => Leftovers::NoneLeft,
        Ok(out) => Leftovers::Failed(format!(
            "exec-helper --kill --signal {signal} in {container} exited {:?}: {}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )),
        Err(e) => Leftovers::Failed(format!("cannot exec into {container}: {e}")),
    }
}

/// [`signal_helper`] for a running call: a failure is logged, nothing else.
async fn signal_running_helper(
    docker: &DockerClient,
    container: &str,
    shim: &str,
    request_id: &str,
    signal: &str,
) {
    if let Leftovers::Failed(why) = signal_helper(docker, container, shim, request_id, signal).await
    {
        tracing::warn!(request_id, container, signal, error = %why, "signalling the exec-helper failed");
    }
}

/// Kills the command's tree if the run future is dropped before it finished (the
/// session went away in a way that did not go through cancellation).
struct KillGuard {
    docker: DockerClient,
    container: String,
    shim: String,
    request_id: String,
    armed: bool,
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (docker, container, shim, request_id) = (
            self.docker.clone(),
            std::mem::take(&mut self.container),
            std::mem::take(&mut self.shim),
            std::mem::take(&mut self.request_id),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                signal_running_helper(&docker, &container, &shim, &request_id, "USR1").await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(argv: &[&[u8]], cwd: &[u8]) -> ExecRequest {
        ExecRequest {
            request_id: "01JTEST".into(),
            prisoner: "agent-1".into(),
            argv: argv.iter().map(|a| a.to_vec()).collect(),
            tool_path: b"/usr/bin/rm".to_vec(),
            cwd: cwd.to_vec(),
            env: vec![
                (b"PATH".to_vec(), b"/usr/bin:/bin".to_vec()),
                (b"CLAWRDEN_PARENT_REQUEST".to_vec(), b"01JTEST".to_vec()),
                (b"BIN".to_vec(), b"\xff".to_vec()),
            ],
            stdio: [FdKind::Pipe, FdKind::Pipe, FdKind::Pipe],
            terminal: None,
            timeout: Duration::from_secs(30),
            grace: Duration::from_millis(500),
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            run_as: None,
            fds: None,
        }
    }

    fn executor() -> MirrorExecutor {
        MirrorExecutor::new(
            DockerClient::new(Some("tcp://127.0.0.1:1")).unwrap(),
            HashMap::new(),
        )
    }

    #[test]
    fn exec_spec_runs_the_original_of_argv0s_name_as_the_caller_never_the_tool_path() {
        let spec = executor()
            .exec_spec(&request(
                &[b"/usr/bin/cat", b"/etc/hostname"],
                b"/workspace",
            ))
            .unwrap();
        let env = exec_env::encode([
            &b"PATH=/usr/bin:/bin"[..],
            b"CLAWRDEN_PARENT_REQUEST=01JTEST",
            b"BIN=\xff",
        ]);
        assert_eq!(
            spec.cmd,
            [
                SHIM_IN_PRISONER,
                "exec-helper",
                "--original-root",
                ORIGINALS_IN_PRISONER,
                "--uid",
                "1000",
                "--gid",
                "1000",
                "--grace-ms",
                "500",
                "--request-id",
                "01JTEST",
                "--env-block",
                "1",
                "--time-limit-ms",
                "35500",
                "--no-parent-death",
                "--framed",
                "--cwd",
                "/workspace",
                "--",
                "cat",
                "/usr/bin/cat",
                "/etc/hostname"
            ]
        );
        assert!(!spec.cmd.iter().any(|w| w.contains("/usr/bin/rm")));
        assert_eq!(spec.user, "0:0");
        // The environment (non-UTF-8 included) is one opaque block, not the helper's own.
        assert_eq!(spec.env, [format!("{}={}", env[0].0, env[0].1)]);
        assert!(spec.stdin);
        assert!(!spec.tty);
    }

    #[test]
    fn exec_spec_hex_encodes_words_when_one_is_not_utf8() {
        let spec = executor()
            .exec_spec(&request(&[b"cat", b"\xffx"], b"/w"))
            .unwrap();
        let dashes = spec.cmd.iter().position(|w| w == "--").unwrap();
        assert!(spec.cmd.contains(&"--hex".to_owned()));
        assert_eq!(spec.cmd[dashes - 1], "2f77");
        assert_eq!(spec.cmd[dashes + 1..], ["636174", "636174", "ff78"]);
    }

    #[test]
    fn each_descriptor_of_the_caller_is_planned_as_its_kind() {
        let mut req = request(&[b"cat"], b"/");
        assert_eq!(
            start_frame(&req),
            Start {
                stdio: [StdioPlan::Pipe; 3],
                terminal: None
            }
        );
        let settings = clawrden_protocol::Termios {
            iflag: 1,
            oflag: 2,
            cflag: 3,
            lflag: 4,
            cc: vec![3],
        };
        let size = WinSize {
            rows: 30,
            cols: 100,
            xpixel: 0,
            ypixel: 0,
        };
        req.stdio = [FdKind::Terminal, FdKind::File, FdKind::Closed];
        req.terminal = Some(clawrden_protocol::Terminal {
            termios: settings.clone(),
            size,
            term: b"xterm".to_vec(),
        });
        assert_eq!(
            start_frame(&req),
            Start {
                stdio: [StdioPlan::Terminal, StdioPlan::Pipe, StdioPlan::Null],
                terminal: Some((settings, size)),
            }
        );
    }

    #[test]
    fn exec_spec_refuses_an_argv0_that_names_no_command() {
        for argv0 in [&b""[..], b"/usr/bin/rm/", b"/usr/bin/.", b"..", b"a\nb"] {
            assert!(
                executor().exec_spec(&request(&[argv0], b"/")).is_err(),
                "{argv0:?}"
            );
        }
        let mut req = request(&[b"cat"], b"/");
        req.argv.clear();
        assert!(executor().exec_spec(&req).is_err());
    }
}
