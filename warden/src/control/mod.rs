//! The control plane: the one place that decides what people (through the HTTP API) and
//! sessions (through the shim) may do to requests, approvals, grants, tokens, prisoners
//! and lockdown. HTTP handlers hold no logic: they authenticate, call one method here and
//! serialize the answer.
//!
//! Invariants:
//! - every action re-checks the caller's scope, and records who and why in the audit and
//!   the store, and emits an event;
//! - an approval is decided at most once: the waiter (request id -> oneshot) is taken out
//!   of the map under its lock, so approve, deny, timeout, disconnect and kill race
//!   safely; whoever takes it decides;
//! - store calls run on the blocking pool, never on a runtime worker.

mod error;
mod events;
pub mod time;
mod views;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use clawrden_policy::{format_duration, parse_duration, Call};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use self::error::ControlError;
pub use self::events::{EventEnvelope, RING_SIZE};
pub use self::views::{
    ApprovalView, AuditView, CheckView, CreatedTokenView, ExplainInput, ExplainView, ExportFormat,
    FlagView, GrantView, HistoryPage, HistoryParams, LockdownView, PolicyView, PrisonerView,
    QueueView, ReadinessView, ReloadView, RequestView, StatusPolicy, StatusView, TokenView,
};
pub use crate::auth::{Identity, Scope};

use self::events::EventHub;
use self::time::{parse_rfc3339, rfc3339};
use crate::audit::{Audit, Event, EventKind};
use crate::auth::{self, FailedAuthLimiter};
use crate::clock::Clock;
use crate::metrics::{ErrorKind, Metrics};
use crate::policy_store::{PolicyStore, ReloadResult};
use crate::store::{
    self, ApprovalState, ApprovalVerdict, Grant, GrantedCall, HistoryQuery, NewGrant, Prisoner,
    PrisonerState, RequestRecord, RequestState, Store, StoreError, Timestamp,
};

/// Settings key under which lockdown is persisted.
const LOCKDOWN_KEY: &str = "lockdown";
/// Default and largest page of `history`.
const HISTORY_DEFAULT_LIMIT: u32 = 50;
const HISTORY_MAX_LIMIT: u32 = 500;
/// Rows per store query while exporting.
const EXPORT_PAGE: usize = 500;
/// How long `approve` waits for the session to start the approved command.
const START_ACK_WAIT: Duration = Duration::from_secs(5);

/// A boxed, sendable future (what [`PrisonerRuntime`] methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Stops and starts prisoner containers (implemented with Docker by the mirror executor).
/// Errors are human-readable causes.
pub trait PrisonerRuntime: Send + Sync {
    /// Kills the container.
    fn kill(&self, container: &str) -> BoxFuture<'_, Result<(), String>>;
    /// Freezes every process of the container.
    fn pause(&self, container: &str) -> BoxFuture<'_, Result<(), String>>;
    /// Thaws a paused container.
    fn resume(&self, container: &str) -> BoxFuture<'_, Result<(), String>>;
    /// Whether the runtime answers (for `/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// What an admin can do to a prisoner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrisonerAction {
    /// Kill its container; its running commands and pending approvals are cancelled.
    Kill,
    /// Pause its container; with a duration it resumes by itself.
    Pause {
        for_: Option<Duration>,
    },
    Resume,
}

impl PrisonerAction {
    fn as_str(self) -> &'static str {
        match self {
            PrisonerAction::Kill => "kill",
            PrisonerAction::Pause { .. } => "pause",
            PrisonerAction::Resume => "resume",
        }
    }
}

/// A prisoner the warden serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrisonerConfig {
    pub name: String,
    pub socket: String,
    /// Its container, when a runtime manages it.
    pub container: Option<String>,
}

/// Everything the control plane is built from.
pub struct ControlOptions {
    pub state_dir: PathBuf,
    pub store: Arc<Store>,
    pub audit: Audit,
    pub policy: Arc<PolicyStore>,
    pub clock: Arc<dyn Clock>,
    pub prisoners: Vec<PrisonerConfig>,
    pub runtime: Option<Arc<dyn PrisonerRuntime>>,
    /// When set, `GET /metrics` needs `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
}

/// Cancel senders of running commands, and taken waiters of pending approvals.
type CancelTargets = (Vec<watch::Sender<Option<String>>>, Vec<(String, Waiter)>);

/// What a session waiting for approval is told.
#[derive(Debug)]
pub(crate) enum ApprovalMsg {
    /// Run it; send on `started` once the Decision allow went out.
    Approved {
        by: String,
        started: oneshot::Sender<()>,
    },
    /// Denied by a person; `reason` is what the shim prints. The store is updated.
    Denied { reason: String },
    /// A decision arrived after the deadline; handle it as a timeout.
    TimedOut,
    /// Cancelled (prisoner killed, lockdown with kill); the store is updated.
    Cancelled { reason: String },
}

struct Waiter {
    prisoner: String,
    tx: oneshot::Sender<ApprovalMsg>,
    /// When it joined the queue (for the oldest-pending-approval metric).
    queued_at: SystemTime,
}

struct RunningEntry {
    prisoner: String,
    cancel: watch::Sender<Option<String>>,
}

struct PrisonerEntry {
    record: Prisoner,
    resume_timer: Option<tokio::task::AbortHandle>,
}

struct Inner {
    waiters: HashMap<String, Waiter>,
    running: HashMap<String, RunningEntry>,
    prisoners: BTreeMap<String, PrisonerEntry>,
    lockdown: LockdownView,
}

struct PolicyInfo {
    sha256: String,
    loaded_at: SystemTime,
    source: Option<String>,
    seen_ok: u64,
    seen_failed: u64,
}

/// The control plane. Shared (`Arc`) by every session and the HTTP API.
pub struct ControlPlane {
    me: Weak<ControlPlane>,
    store: Arc<Store>,
    metrics: Metrics,
    audit: Audit,
    policy: Arc<PolicyStore>,
    clock: Arc<dyn Clock>,
    state_dir: PathBuf,
    started_at: SystemTime,
    events: EventHub,
    inner: Mutex<Inner>,
    policy_info: Mutex<PolicyInfo>,
    runtime: Mutex<Option<Arc<dyn PrisonerRuntime>>>,
    limiter: Arc<FailedAuthLimiter>,
    metrics_token: Mutex<Option<String>>,
    sockets_ready: std::sync::atomic::AtomicBool,
    abandoned: store::Abandoned,
    /// Requests the previous warden left `running` (id, prisoner, executor).
    abandoned_running: Vec<(String, String, Option<String>)>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

fn require(who: &Identity, need: Scope) -> Result<(), ControlError> {
    if who.scope.allows(need) {
        Ok(())
    } else {
        Err(ControlError::Forbidden { need })
    }
}

fn read_source(path: &Path, sha256: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    (store::hex(&Sha256::digest(text.as_bytes())) == sha256).then_some(text)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ControlPlane {
    /// Startup: marks requests left pending/running by a previous warden `abandoned`
    /// (logging the counts), creates the first admin token (logging its file's path),
    /// registers the configured prisoners and loads the persisted lockdown. Synchronous:
    /// it runs once, before any call is accepted.
    pub fn start(opts: ControlOptions) -> Result<Arc<ControlPlane>, ControlError> {
        let now = Timestamp::from_system_time(opts.clock.now());
        let store = opts.store;
        let abandoned_running = store.running_requests().map_err(ControlError::store)?;
        let abandoned = store
            .mark_abandoned_on_startup(now)
            .map_err(ControlError::store)?;
        if abandoned.requests > 0 || abandoned.approvals > 0 {
            tracing::warn!(
                requests = abandoned.requests,
                approvals = abandoned.approvals,
                "requests left pending or running by the previous warden are abandoned; they never run"
            );
        } else {
            tracing::info!(requests = 0, approvals = 0, "no abandoned requests");
        }
        match auth::ensure_admin_token(&store, &opts.state_dir, now) {
            Ok(Some(_)) | Ok(None) => {}
            Err(e) => return Err(ControlError::Internal(e.to_string())),
        }
        let mut prisoners = BTreeMap::new();
        for p in &opts.prisoners {
            let record = store
                .upsert_prisoner(&p.name, &p.socket, p.container.as_deref(), now)
                .map_err(ControlError::store)?;
            prisoners.insert(
                p.name.clone(),
                PrisonerEntry {
                    record,
                    resume_timer: None,
                },
            );
        }
        let lockdown = match store.get_setting(LOCKDOWN_KEY).map_err(ControlError::store)? {
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::error!(error = %e, "persisted lockdown setting is unreadable; assuming lockdown ON (fail closed)");
                LockdownView {
                    on: true,
                    by: None,
                    reason: Some("persisted lockdown setting was unreadable".to_owned()),
                    since: None,
                }
            }),
            None => LockdownView {
                on: false,
                by: None,
                reason: None,
                since: None,
            },
        };
        if lockdown.on {
            tracing::warn!(by = ?lockdown.by, reason = ?lockdown.reason, "warden starts in lockdown: every call is denied until an admin lifts it");
        }
        let names: Vec<&str> = opts.prisoners.iter().map(|p| p.name.as_str()).collect();
        let metrics = Metrics::new(&names);
        let current = opts.policy.current();
        let policy_status = opts.policy.status();
        let policy_info = PolicyInfo {
            sha256: current.sha256().to_owned(),
            loaded_at: opts.clock.now(),
            source: read_source(opts.policy.path(), current.sha256()),
            seen_ok: policy_status.reloads_ok,
            seen_failed: policy_status.reloads_failed,
        };
        let started_at = opts.clock.now();
        Ok(Arc::new_cyclic(|me| ControlPlane {
            me: me.clone(),
            store,
            metrics,
            audit: opts.audit,
            policy: opts.policy,
            clock: opts.clock,
            state_dir: opts.state_dir,
            started_at,
            events: EventHub::new(),
            inner: Mutex::new(Inner {
                waiters: HashMap::new(),
                running: HashMap::new(),
                prisoners,
                lockdown,
            }),
            policy_info: Mutex::new(policy_info),
            runtime: Mutex::new(opts.runtime),
            limiter: Arc::new(FailedAuthLimiter::default()),
            metrics_token: Mutex::new(opts.metrics_token),
            sockets_ready: std::sync::atomic::AtomicBool::new(false),
            abandoned,
            abandoned_running,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(self.clock.now())
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The audit writer.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The store (for startup code and tests; sessions use the helpers below).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// What startup marked abandoned.
    pub fn abandoned_at_start(&self) -> store::Abandoned {
        self.abandoned
    }

    /// The requests the previous warden left running, as (id, prisoner, executor): their
    /// processes may outlive it, and start-up kills them.
    pub fn abandoned_running(&self) -> &[(String, String, Option<String>)] {
        &self.abandoned_running
    }

    /// Sets (or removes) the container runtime for prisoner actions.
    pub fn set_runtime(&self, runtime: Option<Arc<dyn PrisonerRuntime>>) {
        *self.runtime.lock().unwrap_or_else(|p| p.into_inner()) = runtime;
    }

    fn runtime(&self) -> Option<Arc<dyn PrisonerRuntime>> {
        self.runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets (or removes) the bearer token `GET /metrics` requires.
    pub fn set_metrics_token(&self, token: Option<String>) {
        *self.metrics_token.lock().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// Called by the server once every prisoner socket accepts (for `/readyz`).
    pub fn set_sockets_ready(&self, ready: bool) {
        self.sockets_ready
            .store(ready, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `f` on the blocking pool; a failure counts as `errors{kind="store"}`.
    pub(crate) async fn with_store<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        let result = match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(
                format!("store task failed: {e}").into(),
            ))),
        };
        if let Err(e) = &result {
            if !matches!(
                e,
                StoreError::NotFound { .. }
                    | StoreError::AlreadyDecided { .. }
                    | StoreError::InvalidTransition { .. }
                    | StoreError::TokenNameTaken { .. }
                    | StoreError::BadCursor { .. }
                    | StoreError::InvalidGrantTtl { .. }
                    | StoreError::GrantNotActive { .. }
            ) {
                self.metrics.error(ErrorKind::Store);
            }
        }
        result
    }

    async fn store_call<T, F>(&self, f: F) -> Result<T, ControlError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.with_store(f).await.map_err(ControlError::store)
    }

    /// Writes an audit event; a failure is logged and counted (`errors{kind="audit"}`).
    pub(crate) fn record(&self, event: &Event) -> Result<u64, crate::audit::AuditError> {
        let r = self.audit.record(event);
        if let Err(e) = &r {
            self.metrics.error(ErrorKind::Audit);
            tracing::error!(error = %e, event = event.kind().as_str(), "cannot write audit event");
        }
        r
    }

    /// Emits an event to the live feed; returns its id.
    pub fn emit(&self, kind: &str, data: Value) -> u64 {
        self.events.emit(kind, data)
    }

    fn control_event(&self, what: &str, by: &str, reason: Option<&str>, extra: Value) {
        let mut event = Event::control()
            .with("control", what)
            .with("by", by)
            .with("reason", reason.map(str::to_owned));
        if let Value::Object(map) = &extra {
            for (k, v) in map {
                // Audit field names are static; only these extras are used.
                let key: &'static str = match k.as_str() {
                    "name" => "name",
                    "scope" => "scope",
                    "grant_id" => "grant_id",
                    "token_id" => "token_id",
                    "prisoner" => "prisoner",
                    "kill_running" => "kill_running",
                    "duration_ms" => "duration_ms",
                    "cancelled" => "cancelled",
                    _ => continue,
                };
                event = event.with(key, v.clone());
            }
        }
        let _ = self.record(&event);
        let mut data = json!({ "what": what, "by": by, "reason": reason });
        if let (Value::Object(d), Value::Object(e)) = (&mut data, extra) {
            d.extend(e);
        }
        self.emit("control", data);
    }

    // ---------------------------------------------------------------- queries

    /// Overall status.
    pub async fn status(&self) -> StatusView {
        let prisoners = self.prisoner_views();
        let (lockdown, pending, running) = {
            let inner = self.lock();
            (
                inner.lockdown.clone(),
                inner.waiters.len(),
                inner.running.len(),
            )
        };
        let sha256 = self.policy.current().sha256().to_owned();
        StatusView {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: crate::audit::format_ts(self.started_at),
            lockdown,
            policy: StatusPolicy {
                path: self.policy.path().display().to_string(),
                sha256,
                last_reload: self.last_reload(),
            },
            queue: QueueView { pending },
            running,
            prisoners,
            audit: AuditView {
                failures: self.audit.failures(),
                last_error: self.audit.last_error(),
            },
        }
    }

    /// Every prisoner with its counts.
    pub fn prisoner_views(&self) -> Vec<PrisonerView> {
        let inner = self.lock();
        inner
            .prisoners
            .values()
            .map(|p| {
                let name = &p.record.name;
                let running = inner
                    .running
                    .values()
                    .filter(|r| &r.prisoner == name)
                    .count();
                let pending = inner
                    .waiters
                    .values()
                    .filter(|w| &w.prisoner == name)
                    .count();
                PrisonerView::new(&p.record, running, pending)
            })
            .collect()
    }

    /// Prisoners (`GET /api/v1/prisoners`).
    pub async fn prisoners(&self) -> Vec<PrisonerView> {
        self.prisoner_views()
    }

    fn last_reload(&self) -> Option<ReloadView> {
        self.policy.status().last_reload.map(|(at, _, r)| match r {
            ReloadResult::Loaded { .. } => ReloadView {
                ok: true,
                at: crate::audit::format_ts(at),
                error: None,
            },
            ReloadResult::Failed { error } => ReloadView {
                ok: false,
                at: crate::audit::format_ts(at),
                error: Some(error),
            },
        })
    }

    /// Requests, newest first, optionally in one state (`pending`, `running`, ...).
    pub async fn list_requests(
        &self,
        state: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RequestView>, ControlError> {
        let state: Option<RequestState> = match state {
            Some(s) => Some(s.parse().map_err(ControlError::Invalid)?),
            None => None,
        };
        let limit = if limit == 0 { 50 } else { limit as usize };
        let now = self.now();
        self.store_call(move |s| {
            let rows = s.list_requests(state, limit)?;
            rows.iter().map(|r| request_view(s, r, now)).collect()
        })
        .await
    }

    /// One request.
    pub async fn get_request(&self, id: &str) -> Result<RequestView, ControlError> {
        let id = id.to_owned();
        let now = self.now();
        self.store_call(move |s| match s.get_request(&id)? {
            Some(r) => request_view(s, &r, now),
            None => Err(StoreError::NotFound {
                what: "request",
                id,
            }),
        })
        .await
    }

    /// Checks history filters without running the query (so an export can answer 422
    /// before it starts streaming).
    pub fn check_history_params(&self, q: &HistoryParams) -> Result<(), ControlError> {
        self.history_query(q).map(|_| ())
    }

    fn history_query(&self, q: &HistoryParams) -> Result<HistoryQuery, ControlError> {
        let now = self.now();
        let when = |name: &str, v: &Option<String>| -> Result<Option<Timestamp>, ControlError> {
            let Some(text) = v.as_deref().filter(|t| !t.is_empty()) else {
                return Ok(None);
            };
            if let Some(t) = parse_rfc3339(text) {
                return Ok(Some(t));
            }
            match parse_duration(text) {
                Ok(d) => Ok(Some(Timestamp(now.0.saturating_sub(duration_ms(d) as i64)))),
                Err(_) => Err(ControlError::Invalid(format!(
                    "{name} {text:?} is neither an RFC 3339 time (2026-01-02T15:04:05Z) nor a duration ago (1h, 30m)"
                ))),
            }
        };
        let limit = q.limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
        if !(1..=HISTORY_MAX_LIMIT).contains(&limit) {
            return Err(ControlError::Invalid(format!(
                "limit {limit} is out of range; use 1 to {HISTORY_MAX_LIMIT}"
            )));
        }
        let action = match q.action.as_deref().filter(|a| !a.is_empty()) {
            Some(a) => Some(a.parse().map_err(|_| {
                ControlError::Invalid(format!("action {a:?} is not allow, deny or ask"))
            })?),
            None => None,
        };
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(HistoryQuery {
            prisoner: nonempty(&q.prisoner),
            command: nonempty(&q.command),
            action,
            since: when("since", &q.since)?,
            until: when("until", &q.until)?,
            text: nonempty(&q.q),
            limit: limit as usize,
            cursor: nonempty(&q.cursor),
        })
    }

    /// One page of history.
    pub async fn history(&self, q: HistoryParams) -> Result<HistoryPage, ControlError> {
        let query = self.history_query(&q)?;
        let now = self.now();
        self.store_call(move |s| {
            let page = s.history(&query)?;
            Ok(HistoryPage {
                requests: page
                    .requests
                    .iter()
                    .map(|r| request_view(s, r, now))
                    .collect::<Result<_, _>>()?,
                next_cursor: page.next_cursor,
            })
        })
        .await
    }

    /// Streams the whole filtered history (all pages, newest first) into `tx` as CSV
    /// (with a header line) or JSON Lines (one RequestView per line). Stops quietly when
    /// the receiver goes away. `limit`/`cursor` in `q` are ignored except as a start.
    pub async fn export(
        &self,
        q: HistoryParams,
        format: ExportFormat,
        tx: mpsc::Sender<Vec<u8>>,
    ) -> Result<(), ControlError> {
        let mut query = self.history_query(&q)?;
        query.limit = EXPORT_PAGE;
        if format == ExportFormat::Csv && tx.send(csv_header()).await.is_err() {
            return Ok(());
        }
        loop {
            let now = self.now();
            let qq = query.clone();
            let (views, next) = self
                .store_call(move |s| {
                    let page = s.history(&qq)?;
                    let views = page
                        .requests
                        .iter()
                        .map(|r| request_view(s, r, now))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((views, page.next_cursor))
                })
                .await?;
            let mut buf = Vec::new();
            for v in &views {
                match format {
                    ExportFormat::Csv => csv_row(&mut buf, v),
                    ExportFormat::Jsonl => {
                        serde_json::to_writer(&mut buf, v)
                            .map_err(|e| ControlError::Internal(e.to_string()))?;
                        buf.push(b'\n');
                    }
                }
            }
            if !buf.is_empty() && tx.send(buf).await.is_err() {
                return Ok(());
            }
            match next {
                Some(c) => query.cursor = Some(c),
                None => return Ok(()),
            }
        }
    }

    /// Active grants, newest first.
    pub async fn grants(&self) -> Result<Vec<GrantView>, ControlError> {
        let now = self.now();
        self.store_call(move |s| {
            Ok(s.list_grants(now, false)?
                .iter()
                .map(GrantView::from)
                .collect())
        })
        .await
    }

    /// The policy in force.
    pub fn policy_view(&self) -> PolicyView {
        let info = self.policy_info.lock().unwrap_or_else(|p| p.into_inner());
        PolicyView {
            path: self.policy.path().display().to_string(),
            sha256: self.policy.current().sha256().to_owned(),
            source: info.source.clone(),
            loaded_at: crate::audit::format_ts(info.loaded_at),
            last_reload: self.last_reload(),
        }
    }

    /// What the policy in force would decide for a call, rule by rule.
    pub fn explain(&self, input: ExplainInput) -> Result<ExplainView, ControlError> {
        if input.argv.is_empty() {
            return Err(ControlError::Invalid(
                "argv must hold at least the command name".to_owned(),
            ));
        }
        let argv: Vec<Vec<u8>> = input.argv.iter().map(|a| a.as_bytes().to_vec()).collect();
        let policy = self.policy.current();
        let e = policy.explain(&Call {
            argv: &argv,
            cwd: input.cwd.as_bytes(),
            uid: input.uid,
            prisoner: &input.prisoner,
        });
        Ok(ExplainView {
            action: e.verdict.action.to_string(),
            rule: e.verdict.rule.clone(),
            reason: e.verdict.reason.clone(),
            executor: e.verdict.executor.to_string(),
            timeout: format_duration(e.verdict.timeout),
            checks: e
                .checks
                .iter()
                .map(|c| CheckView {
                    index: c.index,
                    rule: c.rule.clone(),
                    matched: c.matched,
                    why: c.why.clone(),
                    flag: c.flag.as_ref().map(FlagView::from),
                })
                .collect(),
            refused: e.refused.clone(),
            text: e.render(),
        })
    }

    /// API tokens (never their secrets).
    pub async fn list_tokens(&self) -> Result<Vec<TokenView>, ControlError> {
        self.store_call(|s| Ok(s.list_tokens()?.iter().map(TokenView::from).collect()))
            .await
    }

    /// Events newer than `last_event_id` still in the ring, a receiver for what follows,
    /// and whether the client missed events (its id is older than the ring, or from
    /// another warden run): then it should first send `event: reset`.
    pub fn subscribe(
        &self,
        last_event_id: Option<u64>,
    ) -> (Vec<EventEnvelope>, broadcast::Receiver<EventEnvelope>, bool) {
        let s = self.events.subscribe(last_event_id);
        (s.replay, s.live, s.reset)
    }

    /// The Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// Checks the bearer token of `GET /metrics`: anything goes unless a metrics token
    /// is configured.
    pub fn metrics_auth(&self, bearer: Option<&str>) -> Result<(), ControlError> {
        let want = self
            .metrics_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match &want {
            None => Ok(()),
            Some(want) => match bearer {
                Some(got) if auth::constant_time_eq(got.as_bytes(), want.as_bytes()) => Ok(()),
                _ => Err(ControlError::Unauthorized),
            },
        }
    }

    /// Whether a metrics token is configured.
    pub fn metrics_token_required(&self) -> bool {
        self.metrics_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// `/readyz`: policy, store, audit, sockets and (when used) the container runtime.
    pub async fn readiness(&self) -> ReadinessView {
        let mut checks = BTreeMap::new();
        checks.insert("policy".to_owned(), "ok".to_owned());
        let store = match self.with_store(|s| s.schema_version()).await {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        checks.insert("store".to_owned(), store);
        let audit = match self.audit.last_error() {
            None => "ok".to_owned(),
            Some(e) => e,
        };
        checks.insert("audit".to_owned(), audit);
        let sockets = if self
            .sockets_ready
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            "ok".to_owned()
        } else {
            "not listening".to_owned()
        };
        checks.insert("sockets".to_owned(), sockets);
        let docker = match &self.runtime() {
            None => "not used".to_owned(),
            Some(rt) => match rt.ping().await {
                Ok(()) => "ok".to_owned(),
                Err(e) => e,
            },
        };
        checks.insert("docker".to_owned(), docker);
        let failing: Vec<String> = checks
            .iter()
            .filter(|(_, v)| v.as_str() != "ok" && v.as_str() != "not used")
            .map(|(k, _)| k.clone())
            .collect();
        ReadinessView {
            ready: failing.is_empty(),
            failing,
            checks,
        }
    }

    /// Verifies a bearer token; failures are rate-limited per client address.
    pub async fn authenticate(
        &self,
        bearer: &str,
        client: IpAddr,
    ) -> Result<Identity, ControlError> {
        let store = self.store.clone();
        let limiter = self.limiter.clone();
        let bearer = bearer.to_owned();
        let now = self.now();
        let r = tokio::task::spawn_blocking(move || {
            auth::authenticate(
                &store,
                &limiter,
                &client.to_string(),
                &bearer,
                now,
                Instant::now(),
            )
        })
        .await
        .map_err(|e| ControlError::Internal(format!("authentication task failed: {e}")))?;
        r.map_err(|e| {
            if matches!(e, auth::AuthError::Store(_)) {
                self.metrics.error(ErrorKind::Store);
            }
            ControlError::auth(e)
        })
    }

    // ---------------------------------------------------------------- actions

    /// Approves a pending request: it runs (the session sends Decision allow after this).
    /// With `remember`, later identical calls (prisoner, argv, cwd) are allowed for that
    /// long (at most 24 h) without asking.
    pub async fn approve(
        &self,
        id: &str,
        who: &Identity,
        remember: Option<Duration>,
        note: Option<String>,
    ) -> Result<RequestView, ControlError> {
        require(who, Scope::Approve)?;
        if let Some(d) = remember {
            if d.is_zero() || d > store::MAX_GRANT_TTL {
                return Err(ControlError::Invalid(format!(
                    "remember {} is out of range; use more than 0s and at most 24h",
                    format_duration(d)
                )));
            }
        }
        let record = self.pending_request(id).await?;
        if self.lock().lockdown.on {
            return Err(ControlError::Conflict {
                code: "lockdown",
                message: "the warden is in lockdown; nothing can be approved until an admin lifts it (clawctl lockdown off)".to_owned(),
            });
        }
        let waiter = self
            .take_waiter_entry(id)
            .ok_or_else(|| no_longer_waiting(id))?;
        let approval_id = record.approval_id.clone().unwrap_or_else(|| id.to_owned());
        let now = self.now();
        let (by, n2, aid) = (who.name.clone(), note.clone(), approval_id.clone());
        let decided = self
            .with_store(move |s| {
                s.decide_approval(&aid, ApprovalVerdict::Approve, &by, n2.as_deref(), now)
            })
            .await;
        match decided {
            Ok(_) => {}
            Err(StoreError::AlreadyDecided {
                state: ApprovalState::Expired,
                ..
            }) => {
                let _ = waiter.tx.send(ApprovalMsg::TimedOut);
                return Err(ControlError::Conflict {
                    code: "already_decided",
                    message: format!("request {id} already timed out waiting for approval"),
                });
            }
            Err(e) => {
                self.put_back_waiter(id, waiter);
                return Err(ControlError::store(e));
            }
        }
        let mut grant_id = None;
        if let Some(ttl) = remember {
            let g = NewGrant {
                prisoner: record.prisoner.clone(),
                uid: record.uid,
                executor: record.executor.clone().unwrap_or_default(),
                argv: record.argv.clone(),
                cwd: record.cwd.clone(),
                created_by: who.name.clone(),
                ttl,
            };
            match self.with_store(move |s| s.create_grant(&g, now)).await {
                Ok(g) => grant_id = Some(g.id),
                Err(e) => {
                    tracing::error!(error = %e, request_id = id, "cannot remember the approval as a grant; the approval itself stands")
                }
            }
        }
        let event = Event::for_request(EventKind::Approval, id)
            .with("approval_id", approval_id.as_str())
            .with("action", "allow")
            .with("approver", who.name.as_str())
            .with("note", note.clone())
            .with("grant_id", grant_id)
            .with("remember_ms", remember.map(duration_ms));
        if let Err(e) = self.record(&event) {
            let reason = format!("audit log unavailable: {e}");
            let _ = waiter.tx.send(ApprovalMsg::Denied {
                reason: reason.clone(),
            });
            return Err(ControlError::Unavailable(reason));
        }
        self.emit(
            "request.decided",
            json!({ "id": id, "action": "allow", "reason": format!("approved by {}", who.name), "by": who.name, "grant_id": grant_id }),
        );
        let (started_tx, started_rx) = oneshot::channel();
        if waiter
            .tx
            .send(ApprovalMsg::Approved {
                by: who.name.clone(),
                started: started_tx,
            })
            .is_ok()
        {
            // The view should show the command running; the session answers at once.
            let _ = tokio::time::timeout(START_ACK_WAIT, started_rx).await;
        }
        self.get_request(id).await
    }

    /// Denies a pending request; the shim prints `denied by <who>[: <reason>]`.
    pub async fn deny(
        &self,
        id: &str,
        who: &Identity,
        reason: Option<String>,
    ) -> Result<RequestView, ControlError> {
        require(who, Scope::Approve)?;
        let reason = reason.filter(|r| !r.trim().is_empty());
        let record = self.pending_request(id).await?;
        let waiter = self
            .take_waiter_entry(id)
            .ok_or_else(|| no_longer_waiting(id))?;
        let approval_id = record.approval_id.clone().unwrap_or_else(|| id.to_owned());
        let now = self.now();
        let (by, r2, aid, rid) = (
            who.name.clone(),
            reason.clone(),
            approval_id.clone(),
            id.to_owned(),
        );
        let decided = self
            .with_store(move |s| {
                s.decide_approval(&aid, ApprovalVerdict::Deny, &by, r2.as_deref(), now)?;
                s.set_request_state(&rid, RequestState::Denied, now)
            })
            .await;
        match decided {
            Ok(()) => {}
            Err(StoreError::AlreadyDecided {
                state: ApprovalState::Expired,
                ..
            }) => {
                let _ = waiter.tx.send(ApprovalMsg::TimedOut);
                return Err(ControlError::Conflict {
                    code: "already_decided",
                    message: format!("request {id} already timed out waiting for approval"),
                });
            }
            Err(e) => {
                self.put_back_waiter(id, waiter);
                return Err(ControlError::store(e));
            }
        }
        let text = match &reason {
            Some(r) => format!("denied by {}: {r}", who.name),
            None => format!("denied by {}", who.name),
        };
        let _ = self.record(
            &Event::for_request(EventKind::Approval, id)
                .with("approval_id", approval_id.as_str())
                .with("action", "deny")
                .with("approver", who.name.as_str())
                .with("reason", text.as_str()),
        );
        self.emit(
            "request.decided",
            json!({ "id": id, "action": "deny", "reason": text, "by": who.name }),
        );
        let _ = waiter.tx.send(ApprovalMsg::Denied { reason: text });
        self.get_request(id).await
    }

    /// Revokes a grant: identical calls ask again.
    pub async fn revoke_grant(&self, id: &str, who: &Identity) -> Result<GrantView, ControlError> {
        require(who, Scope::Approve)?;
        let not_found = || ControlError::NotFound {
            what: "grant",
            id: id.to_owned(),
        };
        let gid: i64 = id.parse().map_err(|_| not_found())?;
        let now = self.now();
        let grant = self
            .store_call(move |s| {
                s.revoke_grant(gid, now)?;
                s.get_grant(gid)?.ok_or(StoreError::NotFound {
                    what: "grant",
                    id: gid.to_string(),
                })
            })
            .await?;
        self.control_event("grant_revoke", &who.name, None, json!({ "grant_id": gid }));
        Ok(GrantView::from(&grant))
    }

    /// Switches lockdown; persisted, so it survives a restart. With `kill_running`,
    /// every running command and pending approval is cancelled (reason `lockdown`).
    pub async fn set_lockdown(
        &self,
        on: bool,
        kill_running: bool,
        who: &Identity,
        reason: Option<String>,
    ) -> Result<LockdownView, ControlError> {
        require(who, Scope::Admin)?;
        let view = LockdownView {
            on,
            by: Some(who.name.clone()),
            reason: reason.clone(),
            since: Some(rfc3339(self.now())),
        };
        let text =
            serde_json::to_string(&view).map_err(|e| ControlError::Internal(e.to_string()))?;
        self.store_call(move |s| s.set_setting(LOCKDOWN_KEY, &text))
            .await?;
        self.lock().lockdown = view.clone();
        let mut cancelled = 0;
        if on && kill_running {
            cancelled = self.cancel_where(|_| true, "lockdown").await;
        }
        tracing::warn!(on, by = %who.name, reason = ?reason, cancelled, "lockdown switched");
        self.control_event(
            if on { "lockdown_on" } else { "lockdown_off" },
            &who.name,
            reason.as_deref(),
            json!({ "kill_running": kill_running, "cancelled": cancelled }),
        );
        Ok(view)
    }

    /// The lockdown state.
    pub fn lockdown(&self) -> LockdownView {
        self.lock().lockdown.clone()
    }

    /// Creates an API token; its secret is in the answer and nowhere else.
    pub async fn create_token(
        &self,
        name: &str,
        scope: Scope,
        who: &Identity,
    ) -> Result<CreatedTokenView, ControlError> {
        require(who, Scope::Admin)?;
        let store = self.store.clone();
        let n = name.to_owned();
        let now = self.now();
        let (record, secret) =
            tokio::task::spawn_blocking(move || auth::create_token(&store, &n, scope, now))
                .await
                .map_err(|e| ControlError::Internal(format!("token task failed: {e}")))?
                .map_err(ControlError::auth)?;
        self.control_event(
            "token_create",
            &who.name,
            None,
            json!({ "name": record.name, "scope": scope.as_str(), "token_id": record.id }),
        );
        Ok(CreatedTokenView {
            id: record.id,
            name: record.name,
            scope: scope.as_str().to_owned(),
            token: secret.expose().to_owned(),
        })
    }

    /// Revokes a token given its id or its name. Revoking a revoked token is a no-op.
    pub async fn revoke_token(&self, id: &str, who: &Identity) -> Result<TokenView, ControlError> {
        require(who, Scope::Admin)?;
        let key = id.to_owned();
        let now = self.now();
        let record = self
            .store_call(move |s| {
                let found = s
                    .list_tokens()?
                    .into_iter()
                    .find(|t| t.id.to_string() == key || t.name == key)
                    .ok_or(StoreError::NotFound {
                        what: "token",
                        id: key.clone(),
                    })?;
                s.revoke_token(&found.name, now)?;
                s.get_token(&found.name)?.ok_or(StoreError::NotFound {
                    what: "token",
                    id: key,
                })
            })
            .await?;
        self.control_event(
            "token_revoke",
            &who.name,
            None,
            json!({ "name": record.name, "token_id": record.id }),
        );
        Ok(TokenView::from(&record))
    }

    /// Kills, pauses or resumes a prisoner's container.
    pub async fn prisoner_action(
        &self,
        name: &str,
        action: PrisonerAction,
        who: &Identity,
        reason: Option<String>,
    ) -> Result<PrisonerView, ControlError> {
        require(who, Scope::Admin)?;
        let container = {
            let inner = self.lock();
            let p = inner
                .prisoners
                .get(name)
                .ok_or_else(|| ControlError::NotFound {
                    what: "prisoner",
                    id: name.to_owned(),
                })?;
            p.record
                .container
                .clone()
                .unwrap_or_else(|| name.to_owned())
        };
        let Some(runtime) = self.runtime() else {
            return Err(ControlError::Conflict {
                code: "no_runtime",
                message: "this warden runs no container runtime; prisoners are local".to_owned(),
            });
        };
        let unavailable = |e: String| {
            ControlError::Unavailable(format!(
                "container runtime cannot {} container {container}: {e}",
                action.as_str()
            ))
        };
        let state = match action {
            PrisonerAction::Kill => {
                runtime.kill(&container).await.map_err(unavailable)?;
                PrisonerState::Killed
            }
            PrisonerAction::Pause { .. } => {
                runtime.pause(&container).await.map_err(unavailable)?;
                PrisonerState::Paused
            }
            PrisonerAction::Resume => {
                let paused = self
                    .lock()
                    .prisoners
                    .get(name)
                    .is_some_and(|p| p.record.state == PrisonerState::Paused);
                if paused {
                    runtime.resume(&container).await.map_err(unavailable)?;
                }
                PrisonerState::Active
            }
        };
        self.set_prisoner_state(name, state).await?;
        let mut cancelled = 0;
        if action == PrisonerAction::Kill {
            let reason = format!("prisoner {name} was killed");
            let n = name.to_owned();
            cancelled = self.cancel_where(move |p| p == n, &reason).await;
        }
        if let PrisonerAction::Pause { for_: Some(d) } = action {
            self.schedule_resume(name, d);
        }
        let duration_ms = match action {
            PrisonerAction::Pause { for_: Some(d) } => Some(duration_ms(d)),
            _ => None,
        };
        self.control_event(
            action.as_str(),
            &who.name,
            reason.as_deref(),
            json!({ "prisoner": name, "duration_ms": duration_ms, "cancelled": cancelled }),
        );
        self.prisoner_views()
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ControlError::NotFound {
                what: "prisoner",
                id: name.to_owned(),
            })
    }

    async fn set_prisoner_state(
        &self,
        name: &str,
        state: PrisonerState,
    ) -> Result<(), ControlError> {
        let now = self.now();
        let n = name.to_owned();
        self.store_call(move |s| s.set_prisoner_state(&n, state, now))
            .await?;
        let mut inner = self.lock();
        if let Some(p) = inner.prisoners.get_mut(name) {
            p.record.state = state;
            p.record.updated_at = now;
            if state != PrisonerState::Paused {
                if let Some(t) = p.resume_timer.take() {
                    t.abort();
                }
            }
        }
        Ok(())
    }

    fn schedule_resume(&self, name: &str, after: Duration) {
        let me = self.me.clone();
        let n = name.to_owned();
        let task = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(cp) = me.upgrade() else { return };
            // Detach this task's handle first, so set_prisoner_state does not abort it.
            if let Some(p) = cp.lock().prisoners.get_mut(&n) {
                p.resume_timer = None;
            }
            let container = cp
                .lock()
                .prisoners
                .get(&n)
                .and_then(|p| p.record.container.clone())
                .unwrap_or_else(|| n.clone());
            if let Some(rt) = cp.runtime() {
                if let Err(e) = rt.resume(&container).await {
                    tracing::error!(prisoner = %n, error = %e, "automatic resume failed; resume it by hand");
                    return;
                }
            }
            if let Err(e) = cp.set_prisoner_state(&n, PrisonerState::Active).await {
                tracing::error!(prisoner = %n, error = %e, "cannot record automatic resume");
            }
            cp.control_event(
                "resume",
                "timer",
                Some("pause duration elapsed"),
                json!({ "prisoner": n }),
            );
        });
        if let Some(p) = self.lock().prisoners.get_mut(name) {
            if let Some(old) = p.resume_timer.replace(task.abort_handle()) {
                old.abort();
            }
        }
    }

    /// Cancels every running command and pending approval whose prisoner matches;
    /// returns how many.
    async fn cancel_where(&self, matches: impl Fn(&str) -> bool, reason: &str) -> usize {
        let (running, waiters): CancelTargets = {
            let mut inner = self.lock();
            let running = inner
                .running
                .values()
                .filter(|r| matches(&r.prisoner))
                .map(|r| r.cancel.clone())
                .collect();
            let ids: Vec<String> = inner
                .waiters
                .iter()
                .filter(|(_, w)| matches(&w.prisoner))
                .map(|(id, _)| id.clone())
                .collect();
            let waiters = ids
                .into_iter()
                .filter_map(|id| inner.waiters.remove(&id).map(|w| (id, w)))
                .collect();
            self.metrics
                .approval_queue(inner.waiters.values().map(|w| w.queued_at));
            (running, waiters)
        };
        let n = running.len() + waiters.len();
        for c in running {
            let _ = c.send(Some(reason.to_owned()));
        }
        for (id, w) in waiters {
            self.close_cancelled(&id, reason).await;
            let _ = w.tx.send(ApprovalMsg::Cancelled {
                reason: reason.to_owned(),
            });
        }
        n
    }

    async fn pending_request(&self, id: &str) -> Result<RequestRecord, ControlError> {
        let key = id.to_owned();
        let record = self
            .store_call(move |s| s.get_request(&key))
            .await?
            .ok_or_else(|| ControlError::NotFound {
                what: "request",
                id: id.to_owned(),
            })?;
        if record.state != RequestState::Pending {
            return Err(ControlError::Conflict {
                code: "already_decided",
                message: format!("request {id} was already decided: it is {}", record.state),
            });
        }
        Ok(record)
    }

    // ---------------------------------------------------------------- for sessions

    /// Why a new call from `prisoner` must be denied before the policy is asked:
    /// lockdown, or the prisoner is paused or killed.
    pub(crate) fn gate(&self, prisoner: &str) -> Option<String> {
        let inner = self.lock();
        if inner.lockdown.on {
            return Some("lockdown".to_owned());
        }
        match inner.prisoners.get(prisoner).map(|p| p.record.state) {
            Some(PrisonerState::Paused) => Some(format!("prisoner {prisoner} is paused")),
            Some(PrisonerState::Killed) => Some(format!("prisoner {prisoner} was killed")),
            _ => None,
        }
    }

    /// A live grant for exactly this call (prisoner, caller uid, executor, argv, cwd),
    /// with its use counted.
    pub(crate) async fn use_grant(
        &self,
        prisoner: &str,
        uid: u32,
        executor: &str,
        argv: &[Vec<u8>],
        cwd: &[u8],
    ) -> Option<Grant> {
        let (p, e, a, c) = (
            prisoner.to_owned(),
            executor.to_owned(),
            argv.to_vec(),
            cwd.to_vec(),
        );
        let now = self.now();
        let r = self
            .with_store(move |s| {
                let call = GrantedCall {
                    prisoner: &p,
                    uid,
                    executor: &e,
                    argv: &a,
                    cwd: &c,
                };
                match s.find_grant(&call, now)? {
                    Some(g) => match s.record_grant_use(g.id, now) {
                        Ok(g) => Ok(Some(g)),
                        Err(StoreError::GrantNotActive { .. }) => Ok(None),
                        Err(e) => Err(e),
                    },
                    None => Ok(None),
                }
            })
            .await;
        match r {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot look up grants; asking a person instead");
                None
            }
        }
    }

    /// Puts a pending request in the approval queue.
    pub(crate) fn register_waiter(
        &self,
        id: &str,
        prisoner: &str,
    ) -> oneshot::Receiver<ApprovalMsg> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        inner.waiters.insert(
            id.to_owned(),
            Waiter {
                prisoner: prisoner.to_owned(),
                tx,
                queued_at: self.clock.now(),
            },
        );
        self.metrics
            .approval_queue(inner.waiters.values().map(|w| w.queued_at));
        rx
    }

    fn take_waiter_entry(&self, id: &str) -> Option<Waiter> {
        let mut inner = self.lock();
        let w = inner.waiters.remove(id);
        self.metrics
            .approval_queue(inner.waiters.values().map(|w| w.queued_at));
        w
    }

    fn put_back_waiter(&self, id: &str, w: Waiter) {
        let mut inner = self.lock();
        inner.waiters.insert(id.to_owned(), w);
        self.metrics
            .approval_queue(inner.waiters.values().map(|w| w.queued_at));
    }

    /// Takes a request out of the queue; false if a decision already took it (then the
    /// session's receiver gets that decision).
    pub(crate) fn take_waiter(&self, id: &str) -> bool {
        self.take_waiter_entry(id).is_some()
    }

    /// Records a pending request as cancelled (approval and request), audits `cancel`
    /// and emits `request.finished`. The waiter must already be taken.
    pub(crate) async fn close_cancelled(&self, id: &str, reason: &str) {
        let now = self.now();
        let (rid, r) = (id.to_owned(), reason.to_owned());
        let stored = self
            .with_store(move |s| {
                let approval = s.get_request(&rid)?.and_then(|x| x.approval_id);
                if let Some(a) = approval {
                    match s.cancel_approval(&a, &r, now) {
                        Ok(_) | Err(StoreError::AlreadyDecided { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                s.set_request_state(&rid, RequestState::Cancelled, now)
            })
            .await;
        if let Err(e) = stored {
            tracing::error!(error = %e, request_id = id, "cannot record the cancelled request");
        }
        let _ = self.record(&Event::for_request(EventKind::Cancel, id).with("reason", reason));
        self.emit(
            "request.finished",
            json!({ "id": id, "state": "cancelled", "exit_code": null, "signal": null, "duration_ms": null, "reason": reason }),
        );
    }

    /// Records an approval that nobody decided in time: approval expired, request
    /// denied, audit `approval` (deny), event `request.decided`.
    pub(crate) async fn close_expired(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<(), crate::audit::AuditError> {
        let now = self.now();
        let rid = id.to_owned();
        let stored = self
            .with_store(move |s| {
                let approval = s.get_request(&rid)?.and_then(|x| x.approval_id);
                if let Some(a) = approval {
                    match s.expire_approval(&a, now) {
                        Ok(_) | Err(StoreError::AlreadyDecided { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                s.set_request_state(&rid, RequestState::Denied, now)
            })
            .await;
        if let Err(e) = stored {
            tracing::error!(error = %e, request_id = id, "cannot record the expired approval");
        }
        let r = self.record(
            &Event::for_request(EventKind::Approval, id)
                .with("approval_id", id)
                .with("action", "deny")
                .with("reason", reason),
        );
        self.emit(
            "request.decided",
            json!({ "id": id, "action": "deny", "reason": reason, "by": "timeout" }),
        );
        r.map(|_| ())
    }

    /// Registers a running command; dropping the guard unregisters it. The receiver
    /// turns `Some(reason)` when the control plane cancels it.
    pub(crate) fn register_running(&self, id: &str, prisoner: &str) -> RunningGuard {
        let (tx, rx) = watch::channel(None);
        self.lock().running.insert(
            id.to_owned(),
            RunningEntry {
                prisoner: prisoner.to_owned(),
                cancel: tx,
            },
        );
        RunningGuard {
            control: self.me.clone(),
            id: id.to_owned(),
            cancel: rx,
        }
    }

    /// Cancels one running command (for tests and tools); false if it is not running.
    pub fn cancel_running(&self, id: &str, reason: &str) -> bool {
        match self.lock().running.get(id) {
            Some(r) => r.cancel.send(Some(reason.to_owned())).is_ok(),
            None => false,
        }
    }

    /// Ids of requests running now.
    pub fn running_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().running.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Ids of requests waiting for approval now.
    pub fn pending_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().waiters.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Follows policy reloads: counts them in the metrics, emits `policy.reloaded`, and
    /// keeps the policy source for `policy_view`. Runs until the returned task is aborted.
    pub fn spawn_policy_watch(&self) -> tokio::task::JoinHandle<()> {
        let me = self.me.clone();
        let mut rx = self.policy.subscribe();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(cp) = me.upgrade() else { return };
                cp.observe_reloads();
            }
        })
    }

    /// Accounts for reload attempts since the last call (also called by the watcher).
    pub fn observe_reloads(&self) {
        let status = self.policy.status();
        let mut info = self.policy_info.lock().unwrap_or_else(|p| p.into_inner());
        let ok = status.reloads_ok.saturating_sub(info.seen_ok);
        let failed = status.reloads_failed.saturating_sub(info.seen_failed);
        info.seen_ok = status.reloads_ok;
        info.seen_failed = status.reloads_failed;
        for _ in 0..ok {
            self.metrics.policy_reload(true);
        }
        for _ in 0..failed {
            self.metrics.policy_reload(false);
        }
        if ok == 0 && failed == 0 {
            return;
        }
        if status.sha256 != info.sha256 {
            info.sha256 = status.sha256.clone();
            info.loaded_at = self.clock.now();
            info.source = read_source(self.policy.path(), &status.sha256);
        }
        let error = match &status.last_reload {
            Some((_, _, ReloadResult::Failed { error })) => Some(error.clone()),
            _ => None,
        };
        drop(info);
        self.emit(
            "policy.reloaded",
            json!({ "sha256": status.sha256, "ok": error.is_none(), "error": error }),
        );
    }
}

/// A running command's registration; unregisters on drop.
pub(crate) struct RunningGuard {
    control: Weak<ControlPlane>,
    id: String,
    pub(crate) cancel: watch::Receiver<Option<String>>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Some(cp) = self.control.upgrade() {
            cp.lock().running.remove(&self.id);
        }
    }
}

fn no_longer_waiting(id: &str) -> ControlError {
    ControlError::Conflict {
        code: "already_decided",
        message: format!("request {id} is no longer waiting for approval (it was decided, timed out or its caller went away)"),
    }
}

fn request_view(s: &Store, r: &RequestRecord, now: Timestamp) -> Result<RequestView, StoreError> {
    let approval = match &r.approval_id {
        Some(a) => s.get_approval(a)?,
        None => None,
    };
    Ok(RequestView::new(r, approval.as_ref(), now))
}

const CSV_COLUMNS: &[&str] = &[
    "id",
    "created_at",
    "prisoner",
    "uid",
    "argv",
    "cwd",
    "rule",
    "action",
    "reason",
    "executor",
    "state",
    "exit_code",
    "signal",
    "approver",
    "finished_at",
];

fn csv_header() -> Vec<u8> {
    let mut s = CSV_COLUMNS.join(",");
    s.push('\n');
    s.into_bytes()
}

fn csv_field(out: &mut String, v: &str) {
    // Quote every field that needs it; neutralise spreadsheet formulas.
    let formula = v.starts_with(['=', '+', '-', '@']);
    if formula || v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if formula {
            out.push('\'');
        }
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

fn csv_row(buf: &mut Vec<u8>, v: &RequestView) {
    let text = |x: &Value| match x {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let argv = serde_json::to_string(&v.argv).unwrap_or_default();
    let fields: Vec<String> = vec![
        v.id.clone(),
        v.created_at.clone(),
        v.prisoner.clone(),
        v.uid.to_string(),
        argv,
        text(&v.cwd),
        v.rule.clone().unwrap_or_default(),
        v.action.clone().unwrap_or_default(),
        v.reason.clone().unwrap_or_default(),
        v.executor.clone().unwrap_or_default(),
        v.state.clone(),
        v.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        v.signal.map(|c| c.to_string()).unwrap_or_default(),
        v.approval
            .as_ref()
            .and_then(|a| a.approver.clone())
            .unwrap_or_default(),
        v.finished_at.clone().unwrap_or_default(),
    ];
    let mut line = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        csv_field(&mut line, f);
    }
    line.push('\n');
    buf.extend_from_slice(line.as_bytes());
}
