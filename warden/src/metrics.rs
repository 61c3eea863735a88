//! Every Prometheus metric the warden exports, defined in this one place.
//!
//! [`Metrics`] owns its own [`Registry`] (never the process-global default, so tests and
//! several wardens in one process do not share counters) and has one method per event
//! the warden reports. Label values are bounded whatever the prisoner sends: `command`
//! is the invoked tool's name (never its arguments), at most [`MAX_COMMANDS`] distinct
//! names and then `other`; `prisoner` is one of the configured names or `other`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Distinct `command` label values before the rest count as `other`.
pub const MAX_COMMANDS: usize = 64;
/// Label value for anything outside the bounded set.
pub const OTHER: &str = "other";

const EXECUTION_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0];
const DECISION_BUCKETS: &[f64] = &[0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5];
const APPROVAL_WAIT_BUCKETS: &[f64] = &[5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0];

/// Kinds of warden-side failure counted in `clawrden_errors_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A shim sent a malformed or unexpected frame, or an unsupported version.
    Protocol,
    /// The audit log could not be written (calls are denied meanwhile).
    Audit,
    /// The state database failed.
    Store,
    /// An executor could not start or supervise a command.
    Executor,
    /// Anything else.
    Internal,
}

impl ErrorKind {
    /// Every kind, each pre-registered at zero so rates work from the first scrape.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::Protocol,
        ErrorKind::Audit,
        ErrorKind::Store,
        ErrorKind::Executor,
        ErrorKind::Internal,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Protocol => "protocol",
            ErrorKind::Audit => "audit",
            ErrorKind::Store => "store",
            ErrorKind::Executor => "executor",
            ErrorKind::Internal => "internal",
        }
    }
}

/// The warden's metrics.
pub struct Metrics {
    registry: Registry,
    declared: Vec<String>,
    prisoners: HashSet<String>,
    commands: Mutex<HashSet<String>>,
    requests_total: IntCounterVec,
    queue_size: IntGauge,
    oldest_pending: Gauge,
    execution_duration: Histogram,
    errors_total: IntCounterVec,
    decision_duration: Histogram,
    approval_wait: Histogram,
    timeouts_total: IntCounter,
    policy_reloads_total: IntCounterVec,
    refused_total: IntCounterVec,
    audit_forwarded_total: IntCounterVec,
    audit_forward_dropped_total: IntCounterVec,
}

/// Audit sinks, the values of the `sink` label.
pub const AUDIT_SINKS: &[&str] = &["syslog"];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("metrics", &self.declared)
            .finish()
    }
}

impl Metrics {
    /// Defines and registers every metric. `prisoners` are the configured prisoner
    /// names: the only values the `prisoner` label takes besides `other`.
    pub fn new<S: AsRef<str>>(prisoners: &[S]) -> Metrics {
        let registry = Registry::new();
        let mut declared = Vec::new();
        let requests_total = register(
            &registry,
            &mut declared,
            IntCounterVec::new(
                Opts::new(
                    "clawrden_requests_total",
                    "Intercepted calls by prisoner, invoked tool and policy action.",
                ),
                &["prisoner", "command", "action"],
            ),
        );
        let queue_size = register(
            &registry,
            &mut declared,
            IntGauge::new(
                "clawrden_queue_size",
                "Requests waiting for a person's approval.",
            ),
        );
        let oldest_pending = register(
            &registry,
            &mut declared,
            Gauge::new(
                "clawrden_oldest_pending_approval_timestamp_seconds",
                "Unix time the longest-waiting request in the approval queue was queued; \
                 0 when none waits.",
            ),
        );
        let execution_duration = register(
            &registry,
            &mut declared,
            Histogram::with_opts(
                HistogramOpts::new(
                    "clawrden_execution_duration_seconds",
                    "Wall time of executed commands, start to exit.",
                )
                .buckets(EXECUTION_BUCKETS.to_vec()),
            ),
        );
        let errors_total = register(
            &registry,
            &mut declared,
            IntCounterVec::new(
                Opts::new("clawrden_errors_total", "Warden-side failures by kind."),
                &["kind"],
            ),
        );
        let decision_duration = register(
            &registry,
            &mut declared,
            Histogram::with_opts(
                HistogramOpts::new(
                    "clawrden_decision_duration_seconds",
                    "Time from reading a request to the policy's decision.",
                )
                .buckets(DECISION_BUCKETS.to_vec()),
            ),
        );
        let approval_wait = register(
            &registry,
            &mut declared,
            Histogram::with_opts(
                HistogramOpts::new(
                    "clawrden_approval_wait_seconds",
                    "Time an ask waited for a person (or for its timeout).",
                )
                .buckets(APPROVAL_WAIT_BUCKETS.to_vec()),
            ),
        );
        let timeouts_total = register(
            &registry,
            &mut declared,
            IntCounter::new(
                "clawrden_timeouts_total",
                "Commands killed at their execution time limit.",
            ),
        );
        let policy_reloads_total = register(
            &registry,
            &mut declared,
            IntCounterVec::new(
                Opts::new(
                    "clawrden_policy_reloads_total",
                    "Policy reloads by result (ok, error).",
                ),
                &["result"],
            ),
        );
        let build_info = register(
            &registry,
            &mut declared,
            IntGaugeVec::new(
                Opts::new(
                    "clawrden_build_info",
                    "Always 1; labels describe this build.",
                ),
                &["version"],
            ),
        );
        let refused_total = register(
            &registry,
            &mut declared,
            IntCounterVec::new(
                Opts::new(
                    "clawrden_refused_total",
                    "Calls refused (shim exit 125) for going over a cap, by prisoner and cap.",
                ),
                &["prisoner", "reason"],
            ),
        );
        let audit_forwarded_total = register(
            &registry,
            &mut declared,
            IntCounterVec::new(
                Opts::new(
                    "clawrden_audit_forwarded_total",
                    "Audit lines delivered to an off-host sink.",
                ),
                &["sink"],
            ),
        );
        let audit_forward_dropped_total = register(
            &registry,
            &mut declared,
            IntCounterVec::new(
                Opts::new(
                    "clawrden_audit_forward_dropped_total",
                    "Audit lines never delivered to an off-host sink (queue full or retries exhausted).",
                ),
                &["sink"],
            ),
        );
        // Set once here: build information does not change while the warden runs.
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for kind in ErrorKind::ALL {
            errors_total.with_label_values(&[kind.as_str()]);
        }
        for result in ["ok", "error"] {
            policy_reloads_total.with_label_values(&[result]);
        }
        for prisoner in prisoners {
            for reason in crate::caps::Refusal::REASONS {
                refused_total.with_label_values(&[prisoner.as_ref(), reason]);
            }
        }
        for sink in AUDIT_SINKS {
            audit_forwarded_total.with_label_values(&[sink]);
            audit_forward_dropped_total.with_label_values(&[sink]);
        }
        Metrics {
            registry,
            declared,
            prisoners: prisoners.iter().map(|p| p.as_ref().to_owned()).collect(),
            commands: Mutex::new(HashSet::new()),
            requests_total,
            queue_size,
            oldest_pending,
            execution_duration,
            errors_total,
            decision_duration,
            approval_wait,
            timeouts_total,
            policy_reloads_total,
            refused_total,
            audit_forwarded_total,
            audit_forward_dropped_total,
        }
    }

    /// A call was decided. `argv0` is the name the tool was invoked as (its basename
    /// becomes the `command` label); `action` is `allow`, `deny` or `ask`.
    pub fn request_decided(&self, prisoner: &str, argv0: &[u8], action: &str) {
        let command = self.command_label(argv0);
        let action = match action {
            "allow" | "deny" | "ask" => action,
            _ => OTHER,
        };
        self.requests_total
            .with_label_values(&[self.prisoner_label(prisoner), &command, action])
            .inc();
    }

    /// The approval queue changed; `queued_at` holds when each request now in it was
    /// queued. Sets its size and the time the oldest one was queued (an alert on "an
    /// approval waiting too long" needs the age of the oldest, which no count shows).
    pub fn approval_queue(&self, queued_at: impl IntoIterator<Item = SystemTime>) {
        let mut n = 0usize;
        let mut oldest: Option<SystemTime> = None;
        for t in queued_at {
            n += 1;
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
        }
        self.queue_size.set(i64::try_from(n).unwrap_or(i64::MAX));
        let seconds = oldest
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.oldest_pending.set(seconds);
    }

    /// A command finished (any way) after running for `d`.
    pub fn execution_finished(&self, d: Duration) {
        self.execution_duration.observe(d.as_secs_f64());
    }

    /// A warden-side failure happened.
    pub fn error(&self, kind: ErrorKind) {
        self.errors_total.with_label_values(&[kind.as_str()]).inc();
    }

    /// Deciding a request took `d`.
    pub fn decision_duration(&self, d: Duration) {
        self.decision_duration.observe(d.as_secs_f64());
    }

    /// An ask was answered (or timed out) after waiting `d`.
    pub fn approval_wait(&self, d: Duration) {
        self.approval_wait.observe(d.as_secs_f64());
    }

    /// A command hit its execution time limit.
    pub fn timeout(&self) {
        self.timeouts_total.inc();
    }

    /// The policy was reloaded (`ok`) or a reload was rejected.
    pub fn policy_reload(&self, ok: bool) {
        self.policy_reloads_total
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// A call from `prisoner` was refused for going over the cap named `reason`.
    pub fn refused(&self, prisoner: &str, reason: &str) {
        let reason = if crate::caps::Refusal::REASONS.contains(&reason) {
            reason
        } else {
            OTHER
        };
        self.refused_total
            .with_label_values(&[self.prisoner_label(prisoner), reason])
            .inc();
    }

    /// `n` audit lines were delivered to `sink`.
    pub fn audit_forwarded(&self, sink: &str, n: u64) {
        self.audit_forwarded_total
            .with_label_values(&[sink_label(sink)])
            .inc_by(n);
    }

    /// `n` audit lines were given up on for `sink`.
    pub fn audit_forward_dropped(&self, sink: &str, n: u64) {
        self.audit_forward_dropped_total
            .with_label_values(&[sink_label(sink)])
            .inc_by(n);
    }

    /// Names of every registered metric, in definition order.
    pub fn declared_names(&self) -> &[String] {
        &self.declared
    }

    /// Everything in the Prometheus text exposition format (for `GET /metrics`).
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# clawrden: cannot encode metrics: {e}\n"))
    }

    fn prisoner_label<'a>(&self, prisoner: &'a str) -> &'a str {
        if self.prisoners.contains(prisoner) {
            prisoner
        } else {
            OTHER
        }
    }

    fn command_label(&self, argv0: &[u8]) -> String {
        let base = match argv0.iter().rposition(|&b| b == b'/') {
            Some(i) => &argv0[i + 1..],
            None => argv0,
        };
        // Only plain tool names become label values; anything odd (empty, long,
        // non-ASCII, quotes) is `other`, so a prisoner cannot inject text into the
        // exposition or blow up series with junk names.
        let plain = (1..=64).contains(&base.len())
            && base
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
        if !plain {
            return OTHER.to_owned();
        }
        let name = String::from_utf8_lossy(base).into_owned();
        let mut known = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains(&name) {
            return name;
        }
        if known.len() < MAX_COMMANDS {
            known.insert(name.clone());
            return name;
        }
        OTHER.to_owned()
    }
}

fn sink_label(sink: &str) -> &str {
    if AUDIT_SINKS.contains(&sink) {
        sink
    } else {
        OTHER
    }
}

/// Registers `metric` and remembers its name: the only way a metric enters the
/// registry, so `declared` is exactly what the registry holds.
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    declared: &mut Vec<String>,
    metric: prometheus::Result<C>,
) -> C {
    // The definitions above are constants; an invalid or duplicate name is a bug that
    // the tests below catch, not a runtime condition.
    let metric = metric.expect("metric definition is valid");
    declared.extend(metric.desc().iter().map(|d| d.fq_name.clone()));
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    /// Calls every update method once with a value that changes its metric.
    fn exercise(m: &Metrics) {
        m.request_decided("agent-1", b"/usr/bin/git", "allow");
        m.approval_queue([
            UNIX_EPOCH + Duration::from_secs(1_700_000_100),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            UNIX_EPOCH + Duration::from_secs(1_700_000_200),
        ]);
        m.execution_finished(Duration::from_millis(1500));
        m.error(ErrorKind::Audit);
        m.decision_duration(Duration::from_micros(700));
        m.approval_wait(Duration::from_secs(20));
        m.timeout();
        m.policy_reload(false);
        m.refused("agent-1", "pending_approvals");
        m.audit_forwarded("syslog", 2);
        m.audit_forward_dropped("syslog", 1);
    }

    #[test]
    fn every_declared_metric_is_updated_by_some_method() {
        let m = Metrics::new(&["agent-1"]);
        exercise(&m);
        let families = m.registry.gather();
        let mut unchanged = Vec::new();
        for name in m.declared_names() {
            let changed = families.iter().find(|f| f.name() == name).is_some_and(|f| {
                f.get_metric().iter().any(|s| {
                    s.get_counter().get_value() != 0.0
                        || s.get_gauge().get_value() != 0.0
                        || s.get_histogram().get_sample_count() != 0
                })
            });
            if !changed {
                unchanged.push(name.clone());
            }
        }
        assert!(
            unchanged.is_empty(),
            "metrics declared but never updated by any Metrics method: {unchanged:?}"
        );
        assert_eq!(
            m.declared_names(),
            [
                "clawrden_requests_total",
                "clawrden_queue_size",
                "clawrden_oldest_pending_approval_timestamp_seconds",
                "clawrden_execution_duration_seconds",
                "clawrden_errors_total",
                "clawrden_decision_duration_seconds",
                "clawrden_approval_wait_seconds",
                "clawrden_timeouts_total",
                "clawrden_policy_reloads_total",
                "clawrden_build_info",
                "clawrden_refused_total",
                "clawrden_audit_forwarded_total",
                "clawrden_audit_forward_dropped_total",
            ]
        );
    }

    #[test]
    fn render_shows_exact_values_for_every_metric() {
        let m = Metrics::new(&["agent-1"]);
        exercise(&m);
        m.request_decided("agent-1", b"git", "allow");
        m.request_decided("agent-1", b"rm", "deny");
        m.policy_reload(true);
        m.policy_reload(true);
        m.approval_queue([
            UNIX_EPOCH + Duration::from_millis(1_700_000_300_500),
            UNIX_EPOCH + Duration::from_secs(1_700_000_400),
        ]);
        let text = m.render();
        let got = lines(&text);
        let expected = [
            "# HELP clawrden_requests_total Intercepted calls by prisoner, invoked tool and policy action.",
            "# TYPE clawrden_requests_total counter",
            r#"clawrden_requests_total{action="allow",command="git",prisoner="agent-1"} 2"#,
            r#"clawrden_requests_total{action="deny",command="rm",prisoner="agent-1"} 1"#,
            "# TYPE clawrden_queue_size gauge",
            "clawrden_queue_size 2",
            "# TYPE clawrden_oldest_pending_approval_timestamp_seconds gauge",
            "clawrden_oldest_pending_approval_timestamp_seconds 1700000300.5",
            "# TYPE clawrden_execution_duration_seconds histogram",
            r#"clawrden_execution_duration_seconds_bucket{le="1"} 0"#,
            r#"clawrden_execution_duration_seconds_bucket{le="5"} 1"#,
            r#"clawrden_execution_duration_seconds_bucket{le="+Inf"} 1"#,
            "clawrden_execution_duration_seconds_sum 1.5",
            "clawrden_execution_duration_seconds_count 1",
            r#"clawrden_errors_total{kind="audit"} 1"#,
            r#"clawrden_errors_total{kind="store"} 0"#,
            r#"clawrden_decision_duration_seconds_bucket{le="0.0005"} 0"#,
            r#"clawrden_decision_duration_seconds_bucket{le="0.001"} 1"#,
            "clawrden_decision_duration_seconds_sum 0.0007",
            "clawrden_decision_duration_seconds_count 1",
            r#"clawrden_approval_wait_seconds_bucket{le="15"} 0"#,
            r#"clawrden_approval_wait_seconds_bucket{le="30"} 1"#,
            "clawrden_approval_wait_seconds_sum 20",
            "clawrden_approval_wait_seconds_count 1",
            "# TYPE clawrden_timeouts_total counter",
            "clawrden_timeouts_total 1",
            r#"clawrden_policy_reloads_total{result="error"} 1"#,
            r#"clawrden_policy_reloads_total{result="ok"} 2"#,
            "# TYPE clawrden_build_info gauge",
            r#"clawrden_refused_total{prisoner="agent-1",reason="pending_approvals"} 1"#,
            r#"clawrden_refused_total{prisoner="agent-1",reason="connections"} 0"#,
            r#"clawrden_audit_forwarded_total{sink="syslog"} 2"#,
            r#"clawrden_audit_forward_dropped_total{sink="syslog"} 1"#,
        ];
        for line in expected {
            assert!(got.contains(&line), "missing line {line:?} in:\n{text}");
        }
        let build = format!(
            r#"clawrden_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        );
        assert!(
            got.contains(&build.as_str()),
            "missing {build:?} in:\n{text}"
        );
        // Exactly the two request series above: nothing else leaked into the labels.
        let series: Vec<&str> = got
            .iter()
            .copied()
            .filter(|l| l.starts_with("clawrden_requests_total{"))
            .collect();
        assert_eq!(series.len(), 2, "{series:?}");
    }

    #[test]
    fn an_emptied_queue_has_no_oldest_approval() {
        let m = Metrics::new::<&str>(&[]);
        let series = |m: &Metrics| -> Vec<String> {
            m.render()
                .lines()
                .filter(|l| {
                    l.starts_with("clawrden_queue_size ")
                        || l.starts_with("clawrden_oldest_pending_approval_timestamp_seconds ")
                })
                .map(str::to_owned)
                .collect()
        };
        let empty = [
            "clawrden_oldest_pending_approval_timestamp_seconds 0",
            "clawrden_queue_size 0",
        ];
        assert_eq!(series(&m), empty);
        m.approval_queue([UNIX_EPOCH + Duration::from_secs(1_700_000_000)]);
        assert_eq!(
            series(&m),
            [
                "clawrden_oldest_pending_approval_timestamp_seconds 1700000000",
                "clawrden_queue_size 1",
            ]
        );
        m.approval_queue([]);
        assert_eq!(series(&m), empty);
    }

    #[test]
    fn error_kinds_and_reload_results_start_at_zero() {
        let m = Metrics::new::<&str>(&[]);
        let text = m.render();
        for kind in ErrorKind::ALL {
            let line = format!(r#"clawrden_errors_total{{kind="{}"}} 0"#, kind.as_str());
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
        assert!(text
            .lines()
            .any(|l| l == r#"clawrden_policy_reloads_total{result="ok"} 0"#));
        assert!(text
            .lines()
            .any(|l| l == r#"clawrden_policy_reloads_total{result="error"} 0"#));
    }

    #[test]
    fn unknown_prisoners_and_odd_commands_count_as_other() {
        let m = Metrics::new(&["agent-1"]);
        m.request_decided("intruder", b"git", "allow");
        m.request_decided("agent-1", b"curl\"} 1\nfake 9", "deny");
        m.request_decided("agent-1", b"", "deny");
        m.request_decided("agent-1", &[0xff, b'x'], "deny");
        m.request_decided("agent-1", b"ls", "maybe");
        let text = m.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("clawrden_requests_total{"))
            .collect();
        assert_eq!(
            series,
            [
                r#"clawrden_requests_total{action="allow",command="git",prisoner="other"} 1"#,
                r#"clawrden_requests_total{action="deny",command="other",prisoner="agent-1"} 3"#,
                r#"clawrden_requests_total{action="other",command="ls",prisoner="agent-1"} 1"#,
            ]
        );
    }

    #[test]
    fn commands_past_the_cap_count_as_other() {
        let m = Metrics::new(&["p"]);
        for i in 0..MAX_COMMANDS {
            m.request_decided("p", format!("tool{i}").as_bytes(), "allow");
        }
        m.request_decided("p", b"tool-late", "allow");
        m.request_decided("p", b"/bin/tool-later", "allow");
        // A name seen before the cap keeps its own series.
        m.request_decided("p", b"tool0", "allow");
        let text = m.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("clawrden_requests_total{"))
            .collect();
        assert_eq!(series.len(), MAX_COMMANDS + 1);
        assert!(series.contains(
            &r#"clawrden_requests_total{action="allow",command="other",prisoner="p"} 2"#
        ));
        assert!(series.contains(
            &r#"clawrden_requests_total{action="allow",command="tool0",prisoner="p"} 2"#
        ));
    }
}
