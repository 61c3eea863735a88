//! The daemon: binds every prisoner socket, serves sessions, reloads the policy, and
//! shuts down cleanly (stop accepting, cancel running commands, flush the audit, remove
//! the sockets).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clawrden_policy::Policy;
use tokio::sync::{mpsc, watch};

use crate::audit::{Audit, AuditKey, Event, DEFAULT_MAX_SIZE};
use crate::audit_forward;
use crate::caps::{self, Caps};
use crate::clock::{Clock, SystemClock};
use crate::config::{PrisonerSocket, WardenConfig};
use crate::control::{ControlOptions, ControlPlane, PrisonerConfig, PrisonerRuntime};
use crate::exec_registry::ExecutorRegistry;
use crate::ids::IdGenerator;
use crate::listener::{self, BindError, PrisonerListener};
use crate::logging::LogLimiter;
use crate::policy_store::{self, PolicyStore};
use crate::session::{SessionLimits, SessionShared};
use crate::state_dir::{StateDirError, StateDirLock};
use crate::store::Store;

/// Protocol-error warnings let through per prisoner socket per minute.
const PROTOCOL_WARNINGS_PER_MINUTE: u32 = 10;
/// How long shutdown waits for sessions to end (their commands' trees being killed).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);
/// How long shutdown waits for queued audit lines to reach the off-host sink.
const FORWARD_DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Why a warden could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Something the operator must fix in the state directory or config (exit 64).
    #[error("{0}")]
    Usage(String),
    /// The state could not be opened (exit 1).
    #[error("{0}")]
    Failure(#[from] io::Error),
}

impl SetupError {
    /// The daemon's exit status for this error.
    pub fn exit_status(&self) -> u8 {
        match self {
            SetupError::Usage(_) => crate::app::EXIT_USAGE,
            SetupError::Failure(_) => crate::app::EXIT_FAILURE,
        }
    }
}

/// A warden, configured and ready to bind.
pub struct Warden {
    prisoners: Vec<PrisonerSocket>,
    policy: Arc<PolicyStore>,
    audit: Audit,
    executors: ExecutorRegistry,
    ids: Arc<IdGenerator>,
    clock: Arc<dyn Clock>,
    limits: SessionLimits,
    stream_only: bool,
    control: Arc<ControlPlane>,
    api: Option<std::net::TcpListener>,
    /// Believe a reverse proxy's `X-Forwarded-Proto` (dashboard cookies get `Secure`).
    trust_proxy: bool,
    /// The state directory's lock, held for the warden's whole life.
    _state_lock: StateDirLock,
    caps: Arc<Caps>,
    /// The off-host audit sink's queue, spawned when serving.
    forward: Option<audit_forward::Drain>,
}

impl std::fmt::Debug for Warden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warden")
            .field("prisoners", &self.prisoners)
            .field("executors", &self.executors)
            .finish_non_exhaustive()
    }
}

impl Warden {
    /// A warden for a checked config, its loaded policy and the enabled executors.
    pub fn new(
        config: &WardenConfig,
        policy: Policy,
        executors: ExecutorRegistry,
    ) -> Result<Warden, SetupError> {
        Warden::with_clock(config, policy, executors, Arc::new(SystemClock))
    }

    /// Like [`Warden::new`] with an explicit clock (for audit timestamps and ids).
    pub fn with_clock(
        config: &WardenConfig,
        policy: Policy,
        executors: ExecutorRegistry,
        clock: Arc<dyn Clock>,
    ) -> Result<Warden, SetupError> {
        // Before anything reads or changes the state: a second warden on the same
        // directory would mark the first one's running requests abandoned.
        let state_lock = lock_state_dir(&config.state_dir)?;
        Warden::with_state_lock(config, policy, executors, clock, state_lock)
    }

    /// Like [`Warden::with_clock`], with the state directory's lock already held (the
    /// binary takes it before it sets up executors, which keep state of their own there).
    pub fn with_state_lock(
        config: &WardenConfig,
        policy: Policy,
        executors: ExecutorRegistry,
        clock: Arc<dyn Clock>,
        state_lock: StateDirLock,
    ) -> Result<Warden, SetupError> {
        let store = Store::open(&config.state_dir).map_err(io::Error::other)?;
        let key = load_audit_key(&config.state_dir)?;
        let audit = Audit::new(
            config.state_dir.join("audit"),
            DEFAULT_MAX_SIZE,
            clock.clone(),
            Arc::new(key),
        );
        let policy = Arc::new(PolicyStore::new(
            config.policy.clone(),
            policy,
            Some(audit.clone()),
        ));
        let control = ControlPlane::start(ControlOptions {
            state_dir: config.state_dir.clone(),
            store: Arc::new(store),
            audit: audit.clone(),
            policy: policy.clone(),
            clock: clock.clone(),
            prisoners: config
                .prisoners
                .iter()
                .map(|p| PrisonerConfig {
                    name: p.name.clone(),
                    socket: p.socket.display().to_string(),
                    container: p.container.clone(),
                })
                .collect(),
            runtime: None,
            metrics_token: None,
        })
        .map_err(|e| io::Error::other(format!("cannot start the control plane: {e}")))?;
        let forward = config.audit_syslog.clone().map(|sink| {
            let (forwarder, drain) = audit_forward::channel(sink, &control);
            audit.set_forwarder(Some(forwarder));
            drain
        });
        let caps = match caps::nofile_limit() {
            Ok(nofile) => {
                let (fitted, why) = caps::fit_to_descriptors(config.caps, nofile);
                if let Some(why) = why {
                    tracing::warn!("{why}");
                }
                fitted
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE; keeping the configured connection caps");
                config.caps
            }
        };
        Ok(Warden {
            prisoners: config.prisoners.clone(),
            policy,
            audit,
            executors,
            ids: Arc::new(IdGenerator::new()?),
            clock,
            limits: SessionLimits::default(),
            stream_only: config.stream_only,
            control,
            api: None,
            trust_proxy: config.trust_proxy,
            _state_lock: state_lock,
            caps: Caps::new(caps),
            forward,
        })
    }

    /// The control plane (approvals, lockdown, tokens, events, metrics).
    pub fn control(&self) -> Arc<ControlPlane> {
        self.control.clone()
    }

    /// Serves the HTTP API on this (already bound) listener while the warden runs.
    pub fn set_api_listener(&mut self, listener: std::net::TcpListener) {
        self.api = Some(listener);
    }

    /// Kill/pause/resume of prisoner containers goes through this runtime.
    pub fn set_prisoner_runtime(&mut self, runtime: Arc<dyn PrisonerRuntime>) {
        self.control.set_runtime(Some(runtime));
    }

    /// `GET /metrics` requires `Authorization: Bearer <token>`.
    pub fn set_metrics_token(&mut self, token: String) {
        self.control.set_metrics_token(Some(token));
    }

    /// Overrides the session time limits.
    pub fn set_limits(&mut self, limits: SessionLimits) {
        self.limits = limits;
    }

    /// The policy store (status, reloads).
    pub fn policy_store(&self) -> Arc<PolicyStore> {
        self.policy.clone()
    }

    /// The audit writer.
    pub fn audit(&self) -> Audit {
        self.audit.clone()
    }

    /// Binds every prisoner socket. On failure, the sockets already bound are removed.
    pub fn bind(self) -> Result<BoundWarden, BindError> {
        let mut listeners: Vec<PrisonerListener> = Vec::new();
        for p in &self.prisoners {
            match listener::bind(&p.name, &p.socket) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    for l in &listeners {
                        listener::remove_socket(&l.path, l.identity());
                    }
                    return Err(e);
                }
            }
        }
        // Watching starts before serving, so no change after bind() is missed.
        let file_watcher = match policy_store::spawn_file_watcher(self.policy.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, policy = %self.policy.path().display(), "cannot watch the policy file; reload it with SIGHUP");
                None
            }
        };
        Ok(BoundWarden {
            warden: self,
            listeners,
            file_watcher,
        })
    }
}

/// Takes the exclusive lock of a state directory; a busy one is `AddrInUse` and says
/// which warden holds it.
pub fn lock_state_dir(dir: &std::path::Path) -> io::Result<StateDirLock> {
    StateDirLock::acquire(dir).map_err(|e| match e {
        StateDirError::Busy { .. } => io::Error::new(io::ErrorKind::AddrInUse, e.to_string()),
        StateDirError::Io { .. } => io::Error::other(e.to_string()),
    })
}

/// A warden whose sockets exist; [`BoundWarden::serve`] runs it.
#[derive(Debug)]
pub struct BoundWarden {
    warden: Warden,
    listeners: Vec<PrisonerListener>,
    file_watcher: Option<policy_store::FileWatcher>,
}

impl BoundWarden {
    /// The control plane.
    pub fn control(&self) -> Arc<ControlPlane> {
        self.warden.control.clone()
    }

    /// Address of the HTTP API, when it is served.
    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        self.warden.api.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops accepting, cancels running commands,
    /// waits for sessions to end, flushes the audit and removes the socket files.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let BoundWarden {
            mut warden,
            listeners,
            file_watcher,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let forwarding = warden.forward.take().map(|drain| tokio::spawn(drain.run()));

        if let Err(e) = warden.audit.open_now() {
            tracing::error!(error = %e, "audit log unavailable; every call will be denied until it can be written");
        }
        let started = Event::control()
            .with("control", "start")
            .with("policy_sha256", warden.policy.current().sha256())
            .with(
                "prisoners",
                warden
                    .prisoners
                    .iter()
                    .map(|p| p.name.clone())
                    .collect::<Vec<_>>(),
            )
            .with("executors", warden.executors.names())
            .with("audit_key_id", warden.audit.key_id())
            .with("max_connections", warden.caps.config().max_connections)
            .with(
                "max_connections_per_prisoner",
                warden.caps.config().max_connections_per_prisoner,
            )
            .with(
                "max_pending_per_prisoner",
                warden.caps.config().max_pending_per_prisoner,
            )
            .with(
                "max_request_bytes_kept",
                warden.caps.config().max_request_bytes_kept,
            );
        if let Err(e) = warden.control.record(&started) {
            tracing::error!(error = %e, "cannot write audit event");
        }
        let abandoned = warden.control.abandoned_at_start();
        if abandoned.requests > 0 || abandoned.approvals > 0 {
            let _ = warden.control.record(
                &Event::control()
                    .with("control", "abandoned")
                    .with("by", "warden")
                    .with(
                        "reason",
                        "warden restarted while they were pending or running",
                    )
                    .with("requests", abandoned.requests)
                    .with("approvals", abandoned.approvals),
            );
        }
        let reaper = tokio::spawn(crate::leftovers::reap_abandoned(
            warden.control.clone(),
            warden.executors.clone(),
        ));
        let policy_watch = warden.control.spawn_policy_watch();

        let mut background = Vec::new();
        match policy_store::spawn_sighup_handler(warden.policy.clone(), stop_rx.clone()) {
            Ok(h) => background.push(h),
            Err(e) => tracing::error!(error = %e, "cannot handle SIGHUP"),
        }

        let mut serving = Vec::new();
        // One registry for every prisoner: a claim naming another prisoner's request is
        // recognised as such.
        let lineage = crate::lineage::Lineage::new();
        for l in listeners {
            tracing::info!(prisoner = %l.prisoner, socket = %l.path.display(), "listening");
            let shared = Arc::new(SessionShared {
                prisoner: l.prisoner.clone(),
                socket: l.path.clone(),
                policy: warden.policy.clone(),
                audit: warden.audit.clone(),
                executors: warden.executors.clone(),
                ids: warden.ids.clone(),
                clock: warden.clock.clone(),
                limits: warden.limits,
                stream_only: warden.stream_only,
                protocol_log: Arc::new(LogLimiter::new(
                    PROTOCOL_WARNINGS_PER_MINUTE,
                    Duration::from_secs(60),
                )),
                shutdown: stop_rx.clone(),
                control: warden.control.clone(),
                caps: warden.caps.for_prisoner(&l.prisoner),
                lineage: lineage.clone(),
            });
            serving.push(tokio::spawn(l.serve(
                shared,
                stop_rx.clone(),
                alive_tx.clone(),
            )));
        }
        drop(alive_tx);
        warden.control.set_sockets_ready(true);

        let api = match warden.api.take() {
            None => None,
            Some(std_listener) => {
                let mut stop = stop_rx.clone();
                let stopped = async move {
                    while !*stop.borrow_and_update() {
                        if stop.changed().await.is_err() {
                            return;
                        }
                    }
                };
                let control = warden.control.clone();
                let dashboard = crate::dashboard::DashboardConfig {
                    trust_proxy: warden.trust_proxy,
                };
                match spawn_api(std_listener, control, dashboard, stopped) {
                    Ok(thread) => Some(thread),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serve the HTTP API");
                        None
                    }
                }
            }
        };

        shutdown.await;
        warden.control.set_sockets_ready(false);
        tracing::info!("shutting down: no new calls; cancelling running commands");
        let _ = stop_tx.send(true);
        let mut sockets: Vec<(PathBuf, (u64, u64))> = Vec::new();
        for s in serving {
            match s.await {
                Ok(sock) => sockets.push(sock),
                Err(e) => tracing::error!(error = %e, "listener task failed"),
            }
        }
        // Every session holds a clone of `alive_tx`; recv() returns None when all ended.
        if tokio::time::timeout(SHUTDOWN_WAIT, alive_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                waited_s = SHUTDOWN_WAIT.as_secs(),
                "some sessions did not end in time; exiting anyway"
            );
        }
        for h in background {
            let _ = h.await;
        }
        if let Some(api) = api {
            let joined = tokio::task::spawn_blocking(move || api.join());
            if tokio::time::timeout(SHUTDOWN_WAIT, joined).await.is_err() {
                tracing::warn!("HTTP API did not stop in time; exiting anyway");
            }
        }
        policy_watch.abort();
        // Leftovers still being looked for finish before the audit closes (bounded: the
        // executors' own calls time out).
        if tokio::time::timeout(SHUTDOWN_WAIT, reaper).await.is_err() {
            tracing::warn!("killing abandoned requests' leftovers did not finish in time");
        }
        warden.control.observe_reloads();
        if let Some(w) = file_watcher {
            let _ = tokio::task::spawn_blocking(move || w.stop()).await;
        }
        let _ = warden
            .control
            .record(&Event::control().with("control", "stop"));
        if let Err(e) = warden.audit.sync() {
            tracing::error!(error = %e, "cannot flush the audit log");
        }
        warden.audit.set_forwarder(None);
        if let Some(task) = forwarding {
            if tokio::time::timeout(FORWARD_DRAIN_WAIT, task)
                .await
                .is_err()
            {
                tracing::warn!(
                    waited_s = FORWARD_DRAIN_WAIT.as_secs(),
                    "audit lines still queued for the syslog receiver were not delivered; the local audit has them"
                );
            }
        }
        for (path, identity) in sockets {
            listener::remove_socket(&path, identity);
        }
        tracing::info!("stopped");
    }
}

/// Serves the HTTP API on its own thread and single-threaded runtime, so operators get
/// answers however busy the sessions keep the main runtime's workers (a prisoner
/// flooding its socket with 4 MiB requests, say): see README.md, "Operations".
fn spawn_api(
    std_listener: std::net::TcpListener,
    control: Arc<ControlPlane>,
    dashboard: crate::dashboard::DashboardConfig,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    let addr = std_listener.local_addr().ok();
    std_listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("clawrden-api")
        .build()?;
    std::thread::Builder::new()
        .name("clawrden-api".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serve the HTTP API");
                        return;
                    }
                };
                tracing::info!(addr = ?addr, "HTTP API listening");
                if let Err(e) = crate::api::serve_with(listener, control, dashboard, stopped).await
                {
                    tracing::error!(error = %e, "HTTP API failed");
                }
            });
        })
}

/// The audit key at `<state-dir>/audit.key`, created (0600) on first start. A key that
/// exists but cannot be read, is not a key, or is open to group or others stops the
/// warden: writing an unkeyed or wrongly keyed audit would hide the problem.
fn load_audit_key(state_dir: &std::path::Path) -> Result<AuditKey, SetupError> {
    let path = state_dir.join(clawrden_audit::KEY_FILE);
    match AuditKey::load_or_create(&path) {
        Ok((key, created)) => {
            if created {
                tracing::info!(file = %path.display(), key_id = %key.id(), "created the audit key; copy it somewhere safe to verify the audit with `clawctl audit verify --key`");
            }
            Ok(key)
        }
        Err(e) => Err(SetupError::Usage(format!(
            "{e} (the audit key; see \"Audit\" in README.md)"
        ))),
    }
}

/// Resolves on the first SIGTERM or SIGINT. Installs the handlers now, so a signal
/// arriving before the future is polled is not lost.
pub fn termination_signal() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "received"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "received"),
        }
    })
}
