//! Caps on what one prisoner (or all of them) can make the warden hold at once:
//! connections, pending approvals, and bytes of each request kept in the record. Going
//! over a cap refuses the call (the shim exits 125 with the reason), counts it in
//! `clawrden_refused_total{prisoner,reason}` and logs it at most once per interval per
//! prisoner and reason. See README.md, "Warden reference" and "Threat model".

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::logging::{LogLimiter, LogPermit};
use crate::metrics::Metrics;

/// The configured caps (`max_*` in warden.yaml, `--max-*` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsConfig {
    /// Open shim connections across all prisoners.
    pub max_connections: usize,
    /// Open shim connections of one prisoner.
    pub max_connections_per_prisoner: usize,
    /// Asks of one prisoner waiting for a person at once.
    pub max_pending_per_prisoner: usize,
    /// Bytes of argv and environment names (as written, JSON-escaped) that the audit and
    /// the store keep of one request; also the largest request an ask may hold.
    pub max_request_bytes_kept: usize,
}

impl Default for CapsConfig {
    fn default() -> Self {
        CapsConfig {
            max_connections: 256,
            max_connections_per_prisoner: 64,
            max_pending_per_prisoner: 16,
            max_request_bytes_kept: 64 * 1024,
        }
    }
}

/// Descriptors kept free for the HTTP API, the store, the audit and the policy watch,
/// whatever the shims do.
pub const FD_RESERVE: u64 = 128;
/// Descriptors one shim connection may hold: its socket, the three stdio descriptors a
/// same-host shim passes, and the executor's pipes or terminal.
pub const FDS_PER_CONNECTION: u64 = 8;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit in force.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
}

/// The soft `RLIMIT_NOFILE` in force.
pub fn nofile_limit() -> std::io::Result<u64> {
    Ok(nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?.0)
}

/// Lowers the connection caps so that connections at their cap still leave
/// [`FD_RESERVE`] descriptors free under a limit of `nofile`, so the HTTP API always
/// answers; returns the caps and, when lowered, what to tell the operator.
pub fn fit_to_descriptors(config: CapsConfig, nofile: u64) -> (CapsConfig, Option<String>) {
    let room = nofile.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION;
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    if config.max_connections <= room {
        return (config, None);
    }
    let fitted = CapsConfig {
        max_connections: room,
        max_connections_per_prisoner: config.max_connections_per_prisoner.min(room),
        ..config
    };
    let why = format!(
        "max_connections lowered from {} to {room}: the open-file limit is {nofile} (each connection may hold {FDS_PER_CONNECTION} descriptors and {FD_RESERVE} stay free for the HTTP API); raise the hard RLIMIT_NOFILE (ulimit -Hn, LimitNOFILE=) to allow more",
        config.max_connections
    );
    (fitted, Some(why))
}

/// Bytes of large request frames (over 64 KiB) one prisoner's connections may be reading
/// at once; more wait for room within their request deadline.
pub const READ_BUDGET_PER_PRISONER: usize = 64 << 20;

/// How often a refusal of one kind from one prisoner is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// All prisoners together hold `max` connections.
    Connections { max: usize },
    /// This prisoner holds `max` connections.
    PrisonerConnections { max: usize },
    /// This prisoner has `max` asks waiting.
    PendingApprovals { max: usize },
    /// An ask would keep `bytes` of request in memory until answered, over `max`.
    AskTooLarge { bytes: usize, max: usize },
}

impl Refusal {
    /// Every reason, for pre-registering the metric's series.
    pub const REASONS: &'static [&'static str] = &[
        "connections",
        "prisoner_connections",
        "pending_approvals",
        "ask_too_large",
    ];

    /// The `reason` label and the `refused` audit field.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Connections { .. } => "connections",
            Refusal::PrisonerConnections { .. } => "prisoner_connections",
            Refusal::PendingApprovals { .. } => "pending_approvals",
            Refusal::AskTooLarge { .. } => "ask_too_large",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Connections { max } => write!(
                f,
                "refused: the warden holds {max} connections (max_connections); retry later"
            ),
            Refusal::PrisonerConnections { max } => write!(
                f,
                "refused: this prisoner holds {max} connections (max_connections_per_prisoner); retry when some calls have finished"
            ),
            Refusal::PendingApprovals { max } => write!(
                f,
                "refused: this prisoner has {max} calls waiting for approval (max_pending_per_prisoner); wait for answers before asking again"
            ),
            Refusal::AskTooLarge { bytes, max } => write!(
                f,
                "refused: this call needs approval but is too large to show an approver in full ({bytes} bytes of arguments and environment; max_request_bytes_kept is {max}); shorten it"
            ),
        }
    }
}

/// Counters shared by every prisoner.
#[derive(Debug)]
pub struct Caps {
    config: CapsConfig,
    connections: AtomicUsize,
}

/// One prisoner's counters, and its refusal log limiters.
#[derive(Debug)]
pub struct PrisonerCaps {
    prisoner: String,
    global: Arc<Caps>,
    connections: AtomicUsize,
    pending: AtomicUsize,
    logs: HashMap<&'static str, LogLimiter>,
    read_budget: Arc<tokio::sync::Semaphore>,
}

/// Held for as long as a connection is open.
#[derive(Debug)]
pub struct ConnectionPermit {
    caps: Arc<PrisonerCaps>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.caps.connections.fetch_sub(1, Ordering::AcqRel);
        self.caps.global.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Held for as long as an ask waits for a person.
#[derive(Debug)]
pub struct PendingPermit {
    caps: Arc<PrisonerCaps>,
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        self.caps.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Adds one to `counter` unless it is at `max`.
fn try_increment(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

impl Caps {
    /// Shared counters for `config`.
    pub fn new(config: CapsConfig) -> Arc<Caps> {
        Arc::new(Caps {
            config,
            connections: AtomicUsize::new(0),
        })
    }

    /// The caps in force.
    pub fn config(&self) -> CapsConfig {
        self.config
    }

    /// Counters for one prisoner.
    pub fn for_prisoner(self: &Arc<Self>, prisoner: &str) -> Arc<PrisonerCaps> {
        Arc::new(PrisonerCaps {
            prisoner: prisoner.to_owned(),
            global: self.clone(),
            connections: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            read_budget: Arc::new(tokio::sync::Semaphore::new(
                READ_BUDGET_PER_PRISONER / crate::frames::SCRATCH,
            )),
            logs: Refusal::REASONS
                .iter()
                .map(|r| (*r, LogLimiter::new(1, LOG_INTERVAL)))
                .collect(),
        })
    }
}

impl PrisonerCaps {
    /// The caps in force.
    pub fn config(&self) -> CapsConfig {
        self.global.config
    }

    /// The allowance this prisoner's connections read large frames from.
    pub fn read_budget(&self) -> Arc<tokio::sync::Semaphore> {
        self.read_budget.clone()
    }

    /// A connection slot, or why there is none.
    pub fn try_connection(self: &Arc<Self>) -> Result<ConnectionPermit, Refusal> {
        let c = self.global.config;
        if !try_increment(&self.connections, c.max_connections_per_prisoner) {
            return Err(Refusal::PrisonerConnections {
                max: c.max_connections_per_prisoner,
            });
        }
        if !try_increment(&self.global.connections, c.max_connections) {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Connections {
                max: c.max_connections,
            });
        }
        Ok(ConnectionPermit { caps: self.clone() })
    }

    /// A slot in the approval queue for an ask holding `request_bytes` of request, or why
    /// there is none.
    pub fn try_pending(self: &Arc<Self>, request_bytes: usize) -> Result<PendingPermit, Refusal> {
        let c = self.global.config;
        if request_bytes > c.max_request_bytes_kept {
            return Err(Refusal::AskTooLarge {
                bytes: request_bytes,
                max: c.max_request_bytes_kept,
            });
        }
        if !try_increment(&self.pending, c.max_pending_per_prisoner) {
            return Err(Refusal::PendingApprovals {
                max: c.max_pending_per_prisoner,
            });
        }
        Ok(PendingPermit { caps: self.clone() })
    }

    /// Counts a refusal and logs it, at most once per interval per reason.
    pub fn refused(&self, metrics: &Metrics, refusal: &Refusal) {
        metrics.refused(&self.prisoner, refusal.reason());
        let Some(limiter) = self.logs.get(refusal.reason()) else {
            return;
        };
        match limiter.check(Instant::now()) {
            LogPermit::Log => tracing::warn!(
                prisoner = %self.prisoner,
                reason = refusal.reason(),
                "{refusal}"
            ),
            LogPermit::LogAfterSuppressing(n) => tracing::warn!(
                prisoner = %self.prisoner,
                reason = refusal.reason(),
                suppressed = n,
                "{refusal} (and {n} more refusals like it since the last such line)"
            ),
            LogPermit::Suppress => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(conns: usize, per: usize, pending: usize, kept: usize) -> Arc<Caps> {
        Caps::new(CapsConfig {
            max_connections: conns,
            max_connections_per_prisoner: per,
            max_pending_per_prisoner: pending,
            max_request_bytes_kept: kept,
        })
    }

    #[test]
    fn connections_are_capped_per_prisoner_and_in_total_and_freed_on_drop() {
        let all = caps(3, 2, 1, 100);
        let a = all.for_prisoner("a");
        let b = all.for_prisoner("b");
        let a1 = a.try_connection().unwrap();
        let _a2 = a.try_connection().unwrap();
        assert_eq!(
            a.try_connection().unwrap_err(),
            Refusal::PrisonerConnections { max: 2 }
        );
        let _b1 = b.try_connection().unwrap();
        assert_eq!(
            b.try_connection().unwrap_err(),
            Refusal::Connections { max: 3 }
        );
        drop(a1);
        let _b2 = b.try_connection().unwrap();
        // The refused attempt on b did not leak b's own slot.
        assert_eq!(b.connections.load(Ordering::Acquire), 2);
    }

    #[test]
    fn pending_asks_are_capped_and_large_asks_refused() {
        let all = caps(10, 10, 1, 100);
        let a = all.for_prisoner("a");
        assert_eq!(
            a.try_pending(101).unwrap_err(),
            Refusal::AskTooLarge {
                bytes: 101,
                max: 100
            }
        );
        let p = a.try_pending(100).unwrap();
        assert_eq!(
            a.try_pending(1).unwrap_err(),
            Refusal::PendingApprovals { max: 1 }
        );
        drop(p);
        a.try_pending(1).unwrap();
    }

    #[test]
    fn connection_caps_shrink_to_leave_descriptors_for_the_api() {
        let c = CapsConfig::default();
        assert_eq!(fit_to_descriptors(c, 1 << 20), (c, None));
        let (fitted, why) = fit_to_descriptors(c, 1024);
        assert_eq!(fitted.max_connections, (1024 - FD_RESERVE as usize) / 8);
        assert_eq!(fitted.max_connections_per_prisoner, 64);
        assert!(why
            .unwrap()
            .starts_with("max_connections lowered from 256 to 112: "));
        let (tiny, _) = fit_to_descriptors(c, 100);
        assert_eq!(
            (tiny.max_connections, tiny.max_connections_per_prisoner),
            (1, 1)
        );
    }

    #[test]
    fn refusals_are_counted_by_prisoner_and_reason() {
        let all = caps(1, 1, 1, 1);
        let a = all.for_prisoner("a");
        let m = Metrics::new(&["a"]);
        for _ in 0..3 {
            a.refused(&m, &Refusal::PendingApprovals { max: 1 });
        }
        let text = m.render();
        assert!(
            text.lines().any(
                |l| l == r#"clawrden_refused_total{prisoner="a",reason="pending_approvals"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == r#"clawrden_refused_total{prisoner="a",reason="connections"} 0"#),
            "{text}"
        );
    }
}
