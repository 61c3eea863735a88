//! One shim connection, one call: handshake, decide, audit, (wait for approval), run,
//! stream, audit the outcome (design §4).
//!
//! Invariants:
//! - the `decision` audit line is written before anything runs; if it cannot be written
//!   the call is denied (`audit log unavailable: <cause>`);
//! - a call is decided wholly by one policy version (one `Arc<Policy>`);
//! - an `ask` is never allowed in this version: it times out into a deny;
//! - the shim going away, a protocol error, or warden shutdown cancels a running command
//!   (the executor kills its process tree).

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use clawrden_policy::{
    format_duration, shell_quote, Action as PolicyAction, Call, Policy, Verdict,
};
use clawrden_protocol::{
    write_chunks, Action, Decision, ErrorKind, Kind, Message, ProtocolError, Request,
    MAX_IO_PAYLOAD,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::audit::{Audit, Event, EventKind};
use crate::caps::Refusal;
use crate::clock::Clock;
use crate::control::{ApprovalMsg, ControlPlane};
use crate::exec_registry::ExecutorRegistry;
use crate::executor::{ExecIo, ExecRequest, Outcome, PassedFds, StreamIn, StreamOut};
use crate::frames::{bounded, send, FrameReader, RecvError};
use crate::ids::IdGenerator;
use crate::kept::KeptRequest;
use crate::lineage::{Lineage, ParentLink};
use crate::logging::{LogLimiter, LogPermit};
use crate::policy_store::PolicyStore;
use crate::store::{
    Action as StoreAction, ExitStatus, NewApproval, NewRequest, RequestState, Timestamp,
};

/// Most bytes of output written to the shim in one `write`.
const MAX_COALESCED: usize = 256 * 1024;
/// How long output still queued after the outcome may take to arrive.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// Capacity of the input and output channels between session and executor.
const CHANNEL: usize = 16;
/// How often a reader blocked on a full input channel checks whether the shim hung up.
const HANGUP_CHECK: Duration = Duration::from_millis(100);

/// Caller identity from `SO_PEERCRED` (and its groups from `SO_PEERGROUPS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Time limits of a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// From accept to a complete `Request` (Hello included).
    pub request_deadline: Duration,
    /// Between SIGTERM and SIGKILL when a command's tree is killed.
    pub grace: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            request_deadline: Duration::from_secs(5),
            grace: Duration::from_secs(2),
        }
    }
}

/// What every session of one prisoner socket shares.
pub struct SessionShared {
    pub prisoner: String,
    /// The socket this prisoner's calls come in on (nested calls of warden-side commands
    /// come back through it: their `CLAWRDEN_SOCKET`).
    pub socket: std::path::PathBuf,
    pub policy: Arc<PolicyStore>,
    pub audit: Audit,
    pub executors: ExecutorRegistry,
    pub ids: Arc<IdGenerator>,
    pub clock: Arc<dyn Clock>,
    pub limits: SessionLimits,
    pub stream_only: bool,
    /// Limits protocol-error warnings from this socket.
    pub protocol_log: Arc<LogLimiter>,
    /// Turns true when the warden shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Approvals, lockdown, running-command registry, metrics and events.
    pub control: Arc<ControlPlane>,
    /// This prisoner's caps on connections, pending asks and bytes kept.
    pub caps: Arc<crate::caps::PrisonerCaps>,
    /// Running requests that nested calls may name as their parent.
    pub lineage: Arc<Lineage>,
}

impl std::fmt::Debug for SessionShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionShared")
            .field("prisoner", &self.prisoner)
            .finish_non_exhaustive()
    }
}

/// Serves one accepted connection to its end.
pub async fn run(shared: Arc<SessionShared>, stream: UnixStream, peer: Peer, accepted_at: Instant) {
    let span = tracing::info_span!("connection", prisoner = %shared.prisoner, peer_pid = peer.pid);
    serve(shared, stream, peer, accepted_at)
        .instrument(span)
        .await
}

/// Resolves when shutdown is signalled (or the warden dropped the signal).
async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn protocol_warning(shared: &SessionShared, error: &str) {
    match shared.protocol_log.check(std::time::Instant::now()) {
        LogPermit::Log => tracing::warn!(error, "protocol error; closing connection"),
        LogPermit::LogAfterSuppressing(n) => tracing::warn!(
            error,
            suppressed = n,
            "protocol error; closing connection (similar warnings from this socket were suppressed)"
        ),
        LogPermit::Suppress => {}
    }
}

/// Tells the shim about a protocol error (best effort) and logs it, rate-limited.
async fn refuse(shared: &SessionShared, wr: &mut OwnedWriteHalf, kind: ErrorKind, error: &str) {
    protocol_warning(shared, error);
    let _ = send(
        wr,
        &Message::Error {
            kind,
            message: bounded(error),
        },
    )
    .await;
}

enum Early {
    Msg(Message),
    Closed,
    Shutdown,
    TimedOut,
    Failed(RecvError),
}

async fn read_early(
    reader: &mut FrameReader,
    rd: &OwnedReadHalf,
    deadline: Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> Early {
    tokio::select! {
        _ = shutdown_signalled(shutdown) => Early::Shutdown,
        r = tokio::time::timeout_at(deadline, reader.next(rd.as_ref())) => match r {
            Err(_) => Early::TimedOut,
            Ok(Ok(Some(m))) => Early::Msg(m),
            Ok(Ok(None)) | Ok(Err(RecvError::Io(_))) => Early::Closed,
            Ok(Err(e)) => Early::Failed(e),
        },
    }
}

async fn serve(shared: Arc<SessionShared>, stream: UnixStream, peer: Peer, accepted_at: Instant) {
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new().with_budget(shared.caps.read_budget());
    let mut shutdown = shared.shutdown.clone();
    let deadline = accepted_at + shared.limits.request_deadline;
    let too_slow = || {
        format!(
            "no request within {} of connecting",
            format_duration(shared.limits.request_deadline)
        )
    };

    match read_early(&mut reader, &rd, deadline, &mut shutdown).await {
        Early::Msg(hello) => {
            if let Err(e) = hello.check_hello() {
                refuse(&shared, &mut wr, e.wire_kind(), &e.to_string()).await;
                return;
            }
        }
        Early::Failed(e) => {
            refuse(&shared, &mut wr, ErrorKind::Protocol, &e.to_string()).await;
            return;
        }
        Early::TimedOut => {
            refuse(&shared, &mut wr, ErrorKind::Protocol, &too_slow()).await;
            return;
        }
        Early::Closed | Early::Shutdown => return,
    }
    if send(&mut wr, &Message::hello()).await.is_err() {
        return;
    }
    let request = match read_early(&mut reader, &rd, deadline, &mut shutdown).await {
        Early::Msg(Message::Request(r)) => r,
        Early::Msg(other) => {
            let e = ProtocolError::Unexpected {
                got: other.kind(),
                expected: "request",
            };
            refuse(&shared, &mut wr, ErrorKind::Protocol, &e.to_string()).await;
            return;
        }
        Early::Failed(e) => {
            refuse(&shared, &mut wr, ErrorKind::Protocol, &e.to_string()).await;
            return;
        }
        Early::TimedOut => {
            refuse(&shared, &mut wr, ErrorKind::Protocol, &too_slow()).await;
            return;
        }
        Early::Closed | Early::Shutdown => return,
    };
    reader.stop_collecting_fds();
    let fds = crate::descriptors::accept(&request, reader.take_fds());

    let request_id = match shared.ids.next_id(shared.clock.now()) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "cannot make a request id");
            let _ = send(
                &mut wr,
                &Message::Error {
                    kind: ErrorKind::Internal,
                    message: format!("warden cannot make a request id: {e}"),
                },
            )
            .await;
            return;
        }
    };
    let span =
        tracing::info_span!("request", request_id = %request_id, prisoner = %shared.prisoner);
    let kept = KeptRequest::of(&request, shared.caps.config().max_request_bytes_kept);
    let parent = shared
        .lineage
        .verify(
            request.parent_request.as_deref(),
            &request.env,
            &shared.prisoner,
            peer.pid,
        )
        .await;
    let call = CallSession {
        shared: &shared,
        request_id: request_id.clone(),
        peer,
        parent,
        request,
        kept,
        fds,
        reader,
        rd,
        wr,
        shutdown,
    };
    call.handle().instrument(span).await;
}

/// What the session does with a call after the policy and the executor check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decided {
    Allow,
    Deny,
    Ask,
}

impl Decided {
    fn as_str(self) -> &'static str {
        match self {
            Decided::Allow => "allow",
            Decided::Deny => "deny",
            Decided::Ask => "ask",
        }
    }
}

struct CallSession<'a> {
    shared: &'a SessionShared,
    request_id: String,
    peer: Peer,
    /// The parent the call claims, as far as it could be verified.
    parent: ParentLink,
    request: Request,
    /// What the record keeps of `request` (see [`crate::kept`]).
    kept: KeptRequest,
    fds: Option<PassedFds>,
    reader: FrameReader,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    shutdown: watch::Receiver<bool>,
}

fn event_for(kind: EventKind, id: &str) -> Event {
    Event::for_request(kind, id)
}

impl CallSession<'_> {
    fn control(&self) -> &ControlPlane {
        &self.shared.control
    }

    async fn handle(self) {
        let began = Instant::now();
        let control = self.shared.control.clone();
        let policy = self.shared.policy.current();
        // `decide` first refuses an argv[0] that is not a command name (`/usr/bin/rm/.`),
        // before any rule, so no executor ever sees one (README, "Policy reference").
        let verdict = policy.decide(&Call {
            argv: &self.request.argv,
            cwd: &self.request.cwd,
            uid: self.peer.uid,
            prisoner: &self.shared.prisoner,
        });
        let executor_name = verdict.executor.to_string();
        let executor = self.shared.executors.get(&executor_name);
        // Lockdown and paused/killed prisoners come before the policy.
        let gate = control.gate(&self.shared.prisoner);
        let (decided, reason, rule) = match (&gate, verdict.action) {
            (Some(g), _) => (Decided::Deny, g.clone(), None),
            (None, PolicyAction::Deny) => {
                (Decided::Deny, verdict.reason.clone(), verdict.rule.clone())
            }
            (None, PolicyAction::Allow | PolicyAction::Ask) if executor.is_none() => {
                let who = match &verdict.rule {
                    Some(r) => format!("rule {r}"),
                    None => "the policy default".to_owned(),
                };
                (
                    Decided::Deny,
                    format!("{who} wants executor {executor_name}, which this warden does not run"),
                    verdict.rule.clone(),
                )
            }
            (None, PolicyAction::Allow) => {
                (Decided::Allow, verdict.reason.clone(), verdict.rule.clone())
            }
            (None, PolicyAction::Ask) => {
                (Decided::Ask, verdict.reason.clone(), verdict.rule.clone())
            }
        };
        // A call naming a descriptor the executor cannot pass is denied, not asked.
        let fd_refusal = match (decided, &executor) {
            (Decided::Allow | Decided::Ask, Some(e)) => crate::descriptors::refusal(
                &self.request.argv,
                &executor_name,
                e.passes_fds(),
                self.shared.stream_only,
            ),
            _ => None,
        };
        let (decided, reason) = match fd_refusal {
            Some(why) => (Decided::Deny, why),
            None => (decided, reason),
        };
        // Caps: an ask holds its whole request in memory until a person answers, so one
        // too large to show in full is refused before anything else is done with it.
        let max_kept = self.shared.caps.config().max_request_bytes_kept;
        let ask_bytes = crate::kept::ask_bytes(&self.request, &self.kept, max_kept);
        let grant = if decided == Decided::Ask && ask_bytes <= max_kept {
            control
                .use_grant(
                    &self.shared.prisoner,
                    self.peer.uid,
                    &executor_name,
                    &self.request.argv,
                    &self.request.cwd,
                )
                .await
        } else {
            None
        };
        let mut pending_permit = None;
        let mut refusal = None;
        if decided == Decided::Ask && grant.is_none() {
            match self.shared.caps.try_pending(ask_bytes) {
                Ok(p) => pending_permit = Some(p),
                Err(r) => {
                    self.shared.caps.refused(control.metrics(), &r);
                    refusal = Some(r);
                }
            }
        }
        let (decided, reason) = match &refusal {
            Some(r) => (Decided::Deny, r.to_string()),
            None => (decided, reason),
        };
        let metrics = control.metrics();
        metrics.decision_duration(began.elapsed());
        metrics.request_decided(
            &self.shared.prisoner,
            self.request.argv.first().map_or(&[][..], |a| a),
            decided.as_str(),
        );
        let program = String::from_utf8_lossy(self.request.argv.first().map_or(&[][..], |a| a));
        tracing::info!(
            program = %bounded(&program),
            action = decided.as_str(),
            rule = rule.as_deref().unwrap_or("-"),
            executor = %executor_name,
            grant = grant.as_ref().map(|g| g.id),
            "decided"
        );

        let mut audited = self.record_request_and_decision(
            &policy,
            &verdict,
            &rule,
            decided,
            &reason,
            refusal.as_ref().map(Refusal::reason),
        );
        if let (Ok(()), Some(g)) = (&audited, &grant) {
            audited = control
                .record(
                    &event_for(EventKind::Approval, &self.request_id)
                        .with("action", "allow")
                        .with("approver", format!("grant:{}", g.id))
                        .with("reason", format!("grant {}", g.id))
                        .with("grant_id", g.id),
                )
                .map(|_| ());
        }
        if let Err(e) = audited {
            let reason = format!("audit log unavailable: {e}");
            tracing::error!(error = %e, "audit log unavailable; denying");
            let _ = self
                .persist(
                    &policy,
                    &rule,
                    decided,
                    &reason,
                    &executor_name,
                    RequestState::Denied,
                )
                .await;
            let mut this = self;
            this.send_decision(Action::Deny, &reason, None, false).await;
            return;
        }
        let state = match (decided, &grant) {
            (Decided::Deny, _) => RequestState::Denied,
            (Decided::Allow, _) | (Decided::Ask, Some(_)) => RequestState::Running,
            (Decided::Ask, None) => RequestState::Pending,
        };
        if let Err(e) = self
            .persist(&policy, &rule, decided, &reason, &executor_name, state)
            .await
        {
            if decided != Decided::Deny {
                let reason = format!("state store unavailable: {e}");
                tracing::error!(error = %e, "cannot record the request; denying");
                let _ = control.record(
                    &event_for(EventKind::Error, &self.request_id).with("error", reason.as_str()),
                );
                let mut this = self;
                this.send_decision(Action::Deny, &reason, rule, false).await;
                return;
            }
        }
        let by = match (&gate, &grant) {
            (Some(_), _) => "control".to_owned(),
            (None, Some(g)) => format!("grant:{}", g.id),
            (None, None) => "policy".to_owned(),
        };
        if state != RequestState::Pending {
            let (action, reason) = match &grant {
                Some(g) => ("allow", format!("grant {}", g.id)),
                None => (decided.as_str(), reason.clone()),
            };
            control.emit(
                "request.decided",
                serde_json::json!({ "id": self.request_id, "action": action, "reason": reason, "by": by }),
            );
        }
        match (decided, grant) {
            (Decided::Deny, _) => {
                let mut this = self;
                match refusal {
                    // Over a cap: not a decision on the call, so 125 like an unavailable warden.
                    Some(_) => {
                        let _ = send(
                            &mut this.wr,
                            &Message::Error {
                                kind: ErrorKind::Internal,
                                message: bounded(&reason),
                            },
                        )
                        .await;
                    }
                    None => {
                        this.send_decision(Action::Deny, &reason, rule, false).await;
                    }
                }
            }
            (Decided::Allow, _) => {
                let executor = executor.expect("checked above");
                self.execute(executor, verdict, &executor_name, &reason, None)
                    .await;
            }
            (Decided::Ask, Some(g)) => {
                let executor = executor.expect("checked above");
                let reason = format!("grant {}", g.id);
                self.execute(executor, verdict, &executor_name, &reason, None)
                    .await;
            }
            (Decided::Ask, None) => {
                let executor = executor.expect("checked above");
                self.wait_for_approval(&policy, verdict, executor, &executor_name, pending_permit)
                    .await
            }
        }
    }

    /// Records the request in the store in its first state.
    async fn persist(
        &self,
        policy: &Policy,
        rule: &Option<String>,
        decided: Decided,
        reason: &str,
        executor: &str,
        state: RequestState,
    ) -> Result<(), crate::store::StoreError> {
        let now = Timestamp::from_system_time(self.shared.clock.now());
        let kept = &self.kept;
        let truncated = kept.truncated.as_ref().map(|t| t.to_value().to_string());
        let new = NewRequest {
            id: self.request_id.clone(),
            prisoner: self.shared.prisoner.clone(),
            uid: self.peer.uid,
            gid: self.peer.gid,
            pid: self.peer.pid.unwrap_or(0),
            argv: kept.argv.clone(),
            cwd: kept.cwd.clone(),
            env_names: kept.env_names.clone(),
            rule: rule.clone(),
            action: Some(match decided {
                Decided::Allow => StoreAction::Allow,
                Decided::Deny => StoreAction::Deny,
                Decided::Ask => StoreAction::Ask,
            }),
            reason: Some(reason.to_owned()),
            executor: Some(executor.to_owned()),
            state,
            created_at: now,
            decided_at: (state != RequestState::Pending).then_some(now),
            parent_request: self.parent.verified().map(str::to_owned),
            unverified_parent: self.parent.unverified_record(),
            policy_sha256: Some(policy.sha256().to_owned()),
        };
        let result = self
            .control()
            .with_store(move |s| {
                s.insert_request(&new)?;
                match truncated {
                    Some(t) => s.set_truncated(&new.id, &t),
                    None => Ok(()),
                }
            })
            .await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "cannot record the request in the state store");
        }
        result
    }

    fn record_request_and_decision(
        &self,
        policy: &Policy,
        verdict: &Verdict,
        rule: &Option<String>,
        decided: Decided,
        reason: &str,
        refused: Option<&'static str>,
    ) -> Result<(), crate::audit::AuditError> {
        let kept = &self.kept;
        let mut request = event_for(EventKind::Request, &self.request_id)
            .with("prisoner", self.shared.prisoner.as_str())
            .with("uid", self.peer.uid)
            .with("gid", self.peer.gid)
            .with("pid", self.peer.pid)
            .with_byte_list("argv", &kept.argv)
            .with_bytes("cwd", &kept.cwd)
            .with_bytes("tool_path", &kept.tool_path)
            .with_byte_list("env_names", &kept.env_names)
            .with("parent_request", self.parent.verified())
            .with("descriptors", crate::descriptors::described(&self.request));
        if let Some(t) = &kept.truncated {
            request = request.with("truncated", t.to_value());
        }
        if let Some((claimed, reason)) = self.parent.unverified() {
            request = request
                .with("unverified_parent", claimed)
                .with("unverified_parent_reason", reason);
        }
        self.control().record(&request)?;
        let decision = event_for(EventKind::Decision, &self.request_id)
            .with("prisoner", self.shared.prisoner.as_str())
            .with("rule", rule.clone())
            .with("action", decided.as_str())
            .with("reason", reason)
            .with("executor", verdict.executor.to_string())
            .with("policy_sha256", policy.sha256())
            .with("timeout_ms", duration_ms(verdict.timeout));
        let decision = match refused {
            Some(cap) => decision.with("refused", cap),
            None => decision,
        };
        self.control().record(&decision)?;
        Ok(())
    }

    async fn send_decision(
        &mut self,
        action: Action,
        reason: &str,
        rule: Option<String>,
        uses_fds: bool,
    ) -> bool {
        let msg = Message::Decision(Decision {
            request_id: self.request_id.clone(),
            action,
            reason: bounded(reason),
            rule,
            uses_fds,
        });
        send(&mut self.wr, &msg).await.is_ok()
    }

    /// `ask`: the request waits in the approval queue until a person approves or denies
    /// it, `approval_timeout` passes, the shim goes away, or the warden shuts down.
    async fn wait_for_approval(
        mut self,
        policy: &Policy,
        verdict: Verdict,
        executor: Arc<dyn crate::executor::Executor>,
        executor_name: &str,
        pending_permit: Option<crate::caps::PendingPermit>,
    ) {
        let control = self.shared.control.clone();
        let timeout = policy.approval_timeout();
        let id = self.request_id.clone();
        let now = Timestamp::from_system_time(self.shared.clock.now());
        let approval = NewApproval {
            id: id.clone(),
            request_id: id.clone(),
            created_at: now,
            expires_at: now.plus(timeout),
        };
        if let Err(e) = control
            .with_store(move |s| s.create_approval(&approval))
            .await
        {
            let reason = format!("state store unavailable: {e}");
            tracing::error!(error = %e, "cannot open the approval; denying");
            let rid = id.clone();
            let _ = control
                .with_store(move |s| s.set_request_state(&rid, RequestState::Denied, now))
                .await;
            self.send_decision(Action::Deny, &reason, verdict.rule.clone(), false)
                .await;
            return;
        }
        let mut rx = control.register_waiter(&id, &self.shared.prisoner);
        let waiting_since = Instant::now();
        if let Ok(view) = control.get_request(&id).await {
            control.emit(
                "request.pending",
                serde_json::to_value(view).unwrap_or_default(),
            );
        }
        let argv: Vec<String> = self.request.argv.iter().map(|a| shell_quote(a)).collect();
        let rule_text = match &verdict.rule {
            Some(r) => format!("rule {r}"),
            None => "policy default".to_owned(),
        };
        let pending = Message::Pending {
            approval_id: id.clone(),
            message: bounded(&format!(
                "{} in {} ({rule_text}): waiting up to {}",
                argv.join(" "),
                shell_quote(&self.request.cwd),
                format_duration(timeout)
            )),
        };
        const GONE: &str = "shim disconnected while waiting for approval";
        let told = self
            .send_decision(
                Action::Pending,
                &verdict.reason,
                verdict.rule.clone(),
                false,
            )
            .await
            && send(&mut self.wr, &pending).await.is_ok();
        // If a decision already took the waiter, the loop below receives it.
        if !told && control.take_waiter(&id) {
            control.close_cancelled(&id, GONE).await;
            return;
        }
        let deadline = Instant::now() + timeout;
        let mut timer_done = false;
        let mut shim_gone: Option<String> = None;
        let mut stopping = false;
        let msg = loop {
            tokio::select! {
                biased;
                m = &mut rx => break m,
                _ = tokio::time::sleep_until(deadline), if !timer_done => {
                    timer_done = true;
                    if control.take_waiter(&id) {
                        break Ok(ApprovalMsg::TimedOut);
                    }
                }
                _ = shutdown_signalled(&mut self.shutdown), if !stopping => {
                    stopping = true;
                    if control.take_waiter(&id) {
                        control.close_cancelled(&id, "warden shutting down").await;
                        let _ = send(&mut self.wr, &Message::Error {
                            kind: ErrorKind::Cancelled,
                            message: "cancelled: warden shutting down".to_owned(),
                        }).await;
                        return;
                    }
                }
                r = self.reader.next(self.rd.as_ref()), if shim_gone.is_none() => {
                    let error = match r {
                        Ok(Some(Message::Signal(_) | Message::Resize { .. })) => continue,
                        Ok(Some(other)) => ProtocolError::Unexpected {
                            got: other.kind(),
                            expected: "nothing while waiting for approval",
                        }
                        .to_string(),
                        Ok(None) | Err(RecvError::Io(_)) => {
                            tracing::info!("shim disconnected while waiting for approval");
                            if control.take_waiter(&id) {
                                control.close_cancelled(&id, GONE).await;
                                return;
                            }
                            shim_gone = Some(GONE.to_owned());
                            continue;
                        }
                        Err(e) => e.to_string(),
                    };
                    let reason = format!("protocol error: {error}");
                    refuse(self.shared, &mut self.wr, ErrorKind::Protocol, &error).await;
                    if control.take_waiter(&id) {
                        control.close_cancelled(&id, &reason).await;
                        return;
                    }
                    shim_gone = Some(reason);
                }
            }
        };
        drop(pending_permit);
        control.metrics().approval_wait(waiting_since.elapsed());
        match msg {
            Ok(ApprovalMsg::Approved { by, started }) => {
                if let Some(reason) =
                    shim_gone.or(stopping.then(|| "warden shutting down".to_owned()))
                {
                    control.close_cancelled(&id, &reason).await;
                    return;
                }
                let at = Timestamp::from_system_time(self.shared.clock.now());
                let rid = id.clone();
                if let Err(e) = control
                    .with_store(move |s| s.set_request_state(&rid, RequestState::Running, at))
                    .await
                {
                    let reason = format!("state store unavailable: {e}");
                    tracing::error!(error = %e, "cannot record the approved request as running; denying");
                    self.send_decision(Action::Deny, &reason, verdict.rule.clone(), false)
                        .await;
                    return;
                }
                tracing::info!(approver = %by, "approved");
                let reason = format!("approved by {by}");
                self.execute(executor, verdict, executor_name, &reason, Some(started))
                    .await;
            }
            Ok(ApprovalMsg::Denied { reason }) => {
                tracing::info!(reason = %reason, "denied by a person");
                self.send_decision(Action::Deny, &reason, verdict.rule.clone(), false)
                    .await;
            }
            Ok(ApprovalMsg::TimedOut) => {
                let mut reason = format!("approval timed out after {}", format_duration(timeout));
                if let Err(e) = control.close_expired(&id, &reason).await {
                    reason = format!("audit log unavailable: {e}");
                }
                tracing::info!(reason = %reason, "approval timed out; denied");
                self.send_decision(Action::Deny, &reason, verdict.rule.clone(), false)
                    .await;
            }
            Ok(ApprovalMsg::Cancelled { reason }) => {
                let _ = send(
                    &mut self.wr,
                    &Message::Error {
                        kind: ErrorKind::Cancelled,
                        message: bounded(&format!("cancelled: {reason}")),
                    },
                )
                .await;
            }
            Err(_) => {
                let reason = "the approval was lost inside the warden";
                control.close_cancelled(&id, reason).await;
                let _ = send(
                    &mut self.wr,
                    &Message::Error {
                        kind: ErrorKind::Internal,
                        message: format!("cancelled: {reason}"),
                    },
                )
                .await;
            }
        }
    }

    async fn execute(
        self,
        executor: Arc<dyn crate::executor::Executor>,
        verdict: Verdict,
        executor_name: &str,
        reason: &str,
        started_ack: Option<oneshot::Sender<()>>,
    ) {
        let CallSession {
            shared,
            request_id,
            peer,
            parent: _,
            request,
            kept: _,
            fds,
            reader,
            rd,
            mut wr,
            mut shutdown,
        } = self;
        // Descriptors the executor cannot use are closed here (by drop).
        let fds = fds.filter(|_| executor.passes_fds() && !shared.stream_only);
        let uses_fds = fds.is_some();
        let given = crate::descriptors::given(&request.stdio, fds.as_ref());
        let decision = Message::Decision(Decision {
            request_id: request_id.clone(),
            action: Action::Allow,
            reason: bounded(reason),
            rule: verdict.rule.clone(),
            uses_fds,
        });
        let control = shared.control.clone();
        if send(&mut wr, &decision).await.is_err() {
            let reason = "shim disconnected before the command started";
            let _ =
                control.record(&event_for(EventKind::Cancel, &request_id).with("reason", reason));
            finish_in_store(
                &control,
                &request_id,
                RequestState::Cancelled,
                None,
                shared.clock.now(),
            )
            .await;
            control.emit(
                "request.finished",
                serde_json::json!({ "id": request_id, "state": "cancelled", "exit_code": null, "signal": null, "duration_ms": 0, "reason": reason }),
            );
            return;
        }
        if let Some(ack) = started_ack {
            let _ = ack.send(());
        }
        let mut registration = control.register_running(&request_id, &shared.prisoner);
        let mut control_cancel_seen = false;
        let mut env = if executor_name == "mirror" {
            crate::env::for_mirror(&request.env, &verdict.env, &request_id)
        } else {
            crate::env::for_warden_side(
                &request.env,
                &verdict.env,
                &request_id,
                std::os::unix::ffi::OsStrExt::as_bytes(shared.socket.as_os_str()),
            )
        };
        // The secret that lets this command's nested calls prove where they come from.
        let link =
            shared
                .lineage
                .link_command(&request_id, &shared.prisoner, executor_name, &mut env);
        let exec_request = ExecRequest {
            request_id: request_id.clone(),
            prisoner: shared.prisoner.clone(),
            argv: request.argv,
            tool_path: request.tool_path,
            cwd: request.cwd,
            env,
            stdio: request.stdio,
            terminal: request.terminal,
            timeout: verdict.timeout,
            grace: shared.limits.grace,
            uid: peer.uid,
            gid: peer.gid,
            groups: peer.groups.clone(),
            run_as: verdict.run_as.clone(),
            fds,
        };
        let (in_tx, in_rx) = mpsc::channel(CHANNEL);
        let (out_tx, mut out_rx) = mpsc::channel(CHANNEL);
        let (started_tx, mut started_rx) = oneshot::channel();
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let io = ExecIo {
            input: in_rx,
            output: out_tx,
            started: started_tx,
            cancel: cancel_rx,
        };
        let reader_task =
            tokio::spawn(read_stream(reader, rd, in_tx).instrument(tracing::Span::current()));
        let mut reader_task = AbortOnDrop(reader_task);
        let began = Instant::now();
        let run = executor.run(exec_request, io);
        tokio::pin!(run);

        let mut out = OutputState {
            peer_gone: false,
            error_sent: false,
        };
        let mut cancel_reason: Option<String> = None;
        let mut started_done = false;
        let mut output_open = true;
        let mut reader_done = false;
        let mut shutdown_seen = false;
        let outcome = loop {
            tokio::select! {
                biased;
                s = &mut started_rx, if !started_done => {
                    started_done = true;
                    if let Ok(s) = s {
                        if let Some(link) = &link {
                            link.started(s.pid);
                        }
                        control.emit("request.started", serde_json::json!({ "id": request_id, "pid": s.pid, "executor": executor_name }));
                        if let Err(e) = audit_start(&control, &request_id, executor_name, &s, &given) {
                            tracing::error!(error = %e, "audit log unavailable; cancelling the command");
                            cancel_reason.get_or_insert_with(|| format!("audit log unavailable: {e}"));
                            let _ = cancel_tx.send(true);
                        }
                    }
                }
                item = out_rx.recv(), if output_open => match item {
                    Some(first) => {
                        if !write_output(&mut wr, first, &mut out_rx, &mut out).await {
                            cancel_reason.get_or_insert_with(|| "shim disconnected".to_owned());
                            let _ = cancel_tx.send(true);
                        }
                    }
                    None => output_open = false,
                },
                end = &mut reader_task.0, if !reader_done => {
                    reader_done = true;
                    match end {
                        Ok(ReaderEnd::Protocol(error)) => {
                            cancel_reason.get_or_insert_with(|| format!("protocol error: {error}"));
                            if !out.peer_gone {
                                refuse(shared, &mut wr, ErrorKind::Protocol, &error).await;
                                out.error_sent = true;
                            }
                        }
                        Ok(ReaderEnd::Closed) | Err(_) => {
                            tracing::info!("shim disconnected; cancelling the command");
                            out.peer_gone = true;
                            cancel_reason.get_or_insert_with(|| "shim disconnected".to_owned());
                        }
                    }
                    let _ = cancel_tx.send(true);
                }
                changed = registration.cancel.changed(), if !control_cancel_seen => {
                    control_cancel_seen = true;
                    let why = match changed {
                        Ok(()) => registration.cancel.borrow().clone(),
                        Err(_) => None,
                    };
                    if let Some(why) = why {
                        tracing::info!(reason = %why, "cancelled by the control plane");
                        cancel_reason.get_or_insert(why);
                        let _ = cancel_tx.send(true);
                    }
                }
                _ = shutdown_signalled(&mut shutdown), if !shutdown_seen => {
                    shutdown_seen = true;
                    tracing::info!("warden shutting down; cancelling the command");
                    cancel_reason.get_or_insert_with(|| "warden shutting down".to_owned());
                    let _ = cancel_tx.send(true);
                }
                outcome = &mut run => break outcome,
            }
        };
        if !started_done {
            if let Ok(s) = started_rx.try_recv() {
                if let Some(link) = &link {
                    link.started(s.pid);
                }
                control.emit("request.started", serde_json::json!({ "id": request_id, "pid": s.pid, "executor": executor_name }));
                if let Err(e) = audit_start(&control, &request_id, executor_name, &s, &given) {
                    tracing::error!(error = %e, "cannot write audit event");
                }
            }
        }
        while output_open {
            match tokio::time::timeout(OUTPUT_DRAIN, out_rx.recv()).await {
                Ok(Some(first)) => {
                    write_output(&mut wr, first, &mut out_rx, &mut out).await;
                }
                Ok(None) => output_open = false,
                Err(_) => {
                    tracing::warn!(
                        "executor kept its output channel open after finishing; dropping the rest"
                    );
                    break;
                }
            }
        }
        drop(reader_task);
        drop(registration);
        drop(link);
        let elapsed = began.elapsed();
        let duration = duration_ms(elapsed);
        let metrics = control.metrics();
        metrics.execution_finished(elapsed);
        let (state, exit) = match &outcome {
            Outcome::Exited(c) => (RequestState::Done, Some(ExitStatus::Code(*c))),
            Outcome::Signaled(s) => (RequestState::Done, Some(ExitStatus::Signal(*s))),
            Outcome::TimedOut { .. } => {
                metrics.timeout();
                (RequestState::TimedOut, None)
            }
            Outcome::Cancelled { .. } => (RequestState::Cancelled, None),
            Outcome::SpawnFailed { not_found, .. } => {
                if !*not_found {
                    metrics.error(crate::metrics::ErrorKind::Executor);
                }
                (
                    RequestState::Done,
                    Some(ExitStatus::Code(if *not_found { 127 } else { 126 })),
                )
            }
        };
        let (event, reply) = outcome_report(&request_id, outcome, cancel_reason, duration);
        tracing::info!(
            outcome = event.kind().as_str(),
            duration_ms = duration,
            "finished"
        );
        let _ = control.record(&event);
        finish_in_store(&control, &request_id, state, exit, shared.clock.now()).await;
        let (exit_code, signal) = match exit {
            Some(ExitStatus::Code(c)) => (Some(c), None),
            Some(ExitStatus::Signal(s)) => (None, Some(s)),
            None => (None, None),
        };
        control.emit(
            "request.finished",
            serde_json::json!({ "id": request_id, "state": state.as_str(), "exit_code": exit_code, "signal": signal, "duration_ms": duration }),
        );
        if !out.peer_gone && !out.error_sent {
            if let Some(reply) = reply {
                let _ = send(&mut wr, &reply).await;
            }
        }
    }
}

/// Moves a running request to its final state in the store.
async fn finish_in_store(
    control: &ControlPlane,
    id: &str,
    state: RequestState,
    exit: Option<ExitStatus>,
    now: std::time::SystemTime,
) {
    let at = Timestamp::from_system_time(now);
    let rid = id.to_owned();
    let r = control
        .with_store(move |s| match exit {
            Some(status) => s.finish_request(&rid, status, at),
            None => s.set_request_state(&rid, state, at),
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, state = state.as_str(), "cannot record how the request ended");
    }
}

fn audit_start(
    audit: &ControlPlane,
    request_id: &str,
    executor: &str,
    started: &crate::executor::Started,
    descriptors: &serde_json::Value,
) -> Result<u64, crate::audit::AuditError> {
    let mut event = event_for(EventKind::Start, request_id)
        .with("executor", executor)
        .with("pid", started.pid)
        .with_bytes("program", &started.program)
        .with("descriptors", descriptors.clone());
    if let Some((uid, gid)) = started.run_as {
        event = event.with("run_uid", uid).with("run_gid", gid);
    }
    audit.record(&event)
}

/// The audit event and the final frame for an outcome.
fn outcome_report(
    request_id: &str,
    outcome: Outcome,
    cancel_reason: Option<String>,
    duration: u64,
) -> (Event, Option<Message>) {
    match outcome {
        Outcome::Exited(code) => (
            event_for(EventKind::Exit, request_id)
                .with("exit_code", code)
                .with("duration_ms", duration),
            Some(Message::Exit(code)),
        ),
        Outcome::Signaled(signal) => (
            event_for(EventKind::Exit, request_id)
                .with("signal", signal)
                .with("duration_ms", duration),
            Some(Message::Signaled(signal)),
        ),
        Outcome::TimedOut { after } => (
            event_for(EventKind::TimeoutViolation, request_id)
                .with("timeout_ms", duration_ms(after))
                .with("duration_ms", duration),
            Some(Message::Error {
                kind: ErrorKind::Timeout,
                message: format!(
                    "timed out after {}; process tree killed",
                    format_duration(after)
                ),
            }),
        ),
        Outcome::Cancelled { reason } => {
            let reason = cancel_reason.unwrap_or(reason);
            (
                event_for(EventKind::Cancel, request_id)
                    .with("reason", reason.as_str())
                    .with("duration_ms", duration),
                Some(Message::Error {
                    kind: ErrorKind::Cancelled,
                    message: bounded(&format!("cancelled: {reason}")),
                }),
            )
        }
        Outcome::SpawnFailed { not_found, message } => (
            event_for(EventKind::Error, request_id)
                .with("error", message.as_str())
                .with("duration_ms", duration),
            Some(Message::Error {
                kind: if not_found {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::SpawnFailed
                },
                message: bounded(&message),
            }),
        ),
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct OutputState {
    peer_gone: bool,
    /// An `Error` frame already ended the exchange.
    error_sent: bool,
}

/// The frame kind and bytes of an output chunk; `Err` for a settings change.
fn out_chunk(o: StreamOut) -> Result<(Kind, Vec<u8>), clawrden_protocol::Termios> {
    match o {
        StreamOut::Stdout(b) => Ok((Kind::Stdout, b)),
        StreamOut::Stderr(b) => Ok((Kind::Stderr, b)),
        StreamOut::TtyOut(b) => Ok((Kind::TtyOut, b)),
        StreamOut::Termios(t) => Err(t),
    }
}

/// Writes `first` and whatever output is already queued behind it, in order, merging
/// neighbouring chunks of the same stream into frames of at most 64 KiB. Returns false
/// when the shim can no longer be written to.
async fn write_output(
    wr: &mut OwnedWriteHalf,
    first: StreamOut,
    rx: &mut mpsc::Receiver<StreamOut>,
    state: &mut OutputState,
) -> bool {
    let mut buf = Vec::new();
    let mut run: Option<(Kind, Vec<u8>)> = None;
    let mut next = Some(first);
    while let Some(item) = next.take() {
        match out_chunk(item) {
            Ok((kind, bytes)) => match &mut run {
                Some((k, r)) if *k == kind && r.len() + bytes.len() <= MAX_IO_PAYLOAD as usize => {
                    r.extend_from_slice(&bytes)
                }
                _ => {
                    if let Some((k, r)) = run.replace((kind, bytes)) {
                        write_chunks(&mut buf, k, &r);
                    }
                }
            },
            Err(settings) => {
                if let Some((k, r)) = run.take() {
                    write_chunks(&mut buf, k, &r);
                }
                // Settings always fit a frame (they are bounded by the decoder).
                let _ = Message::Termios(settings).encode(&mut buf);
            }
        }
        let pending = run.as_ref().map_or(0, |(_, r)| r.len());
        if buf.len() + pending < MAX_COALESCED {
            next = rx.try_recv().ok();
        }
    }
    if let Some((k, r)) = run {
        write_chunks(&mut buf, k, &r);
    }
    if state.peer_gone || state.error_sent {
        return !state.peer_gone;
    }
    use tokio::io::AsyncWriteExt;
    if wr.write_all(&buf).await.is_err() {
        state.peer_gone = true;
        return false;
    }
    true
}

/// How the reader of a running call's input ended.
#[derive(Debug)]
enum ReaderEnd {
    /// The shim closed the connection (or it failed): cancel.
    Closed,
    /// The shim broke the protocol: tell it, then cancel.
    Protocol(String),
}

/// Turns the shim's frames into [`StreamIn`] until the connection ends; dropping the
/// sender on return is what tells the executor to cancel.
async fn read_stream(
    mut reader: FrameReader,
    rd: OwnedReadHalf,
    tx: mpsc::Sender<StreamIn>,
) -> ReaderEnd {
    let mut input = Some(tx);
    loop {
        let msg = match reader.next(rd.as_ref()).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(RecvError::Io(_)) => return ReaderEnd::Closed,
            Err(e) => return ReaderEnd::Protocol(e.to_string()),
        };
        let item = match msg {
            Message::Stdin(b) => StreamIn::Stdin(b),
            Message::StdinEof => StreamIn::StdinEof,
            Message::Signal(n) => StreamIn::Signal(n),
            Message::Resize { rows, cols } => StreamIn::Resize { rows, cols },
            other => {
                return ReaderEnd::Protocol(
                    ProtocolError::Unexpected {
                        got: other.kind(),
                        expected: "stdin, stdin-eof, signal or resize",
                    }
                    .to_string(),
                )
            }
        };
        let Some(sender) = input.clone() else {
            continue;
        };
        loop {
            tokio::select! {
                permit = sender.reserve() => {
                    match permit {
                        Ok(p) => p.send(item),
                        // The executor no longer reads input; keep watching the connection.
                        Err(_) => input = None,
                    }
                    break;
                }
                _ = tokio::time::sleep(HANGUP_CHECK) => {
                    if peer_hung_up(rd.as_ref()) {
                        return ReaderEnd::Closed;
                    }
                }
            }
        }
    }
}

/// Whether the shim closed its end (checked while input is backed up, when the reader
/// cannot read further to see the end of stream).
fn peer_hung_up(stream: &UnixStream) -> bool {
    // A Unix stream socket reports POLLHUP once the peer has closed its end.
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        _ => false,
    }
}
