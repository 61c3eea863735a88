//! Log setup, and a limiter for what a prisoner can make the warden log.
//!
//! Every line logged inside a call carries the call's `request_id` and `prisoner` through
//! the `request` span the session opens. Env values are never logged, only names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber: lines on stderr, level from `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("clawrden-warden: logging was already set up: {e}");
    }
}

/// What the caller of [`LogLimiter::check`] should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogPermit {
    /// Log it.
    Log,
    /// Log it, and say that `n` earlier ones were suppressed.
    LogAfterSuppressing(u64),
    /// Do not log it (it was counted).
    Suppress,
}

/// At most `max` lines per `window` for one untrusted source (one prisoner socket); the
/// rest are counted and reported in the next line that is let through.
#[derive(Debug)]
pub struct LogLimiter {
    max: u32,
    window: Duration,
    state: Mutex<LimiterState>,
    total_suppressed: AtomicU64,
}

#[derive(Debug)]
struct LimiterState {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter letting `max` lines through per `window`.
    pub fn new(max: u32, window: Duration) -> LogLimiter {
        LogLimiter {
            max,
            window,
            state: Mutex::new(LimiterState {
                window_start: None,
                logged: 0,
                suppressed: 0,
            }),
            total_suppressed: AtomicU64::new(0),
        }
    }

    /// Decides for one line at `now`.
    pub fn check(&self, now: Instant) -> LogPermit {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let expired = match s.window_start {
            None => true,
            Some(start) => now.saturating_duration_since(start) >= self.window,
        };
        if expired {
            s.window_start = Some(now);
            s.logged = 0;
        }
        if s.logged < self.max {
            s.logged += 1;
            let suppressed = std::mem::take(&mut s.suppressed);
            if suppressed > 0 {
                LogPermit::LogAfterSuppressing(suppressed)
            } else {
                LogPermit::Log
            }
        } else {
            s.suppressed += 1;
            self.total_suppressed.fetch_add(1, Ordering::Relaxed);
            LogPermit::Suppress
        }
    }

    /// Lines suppressed since start.
    pub fn total_suppressed(&self) -> u64 {
        self.total_suppressed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_max_through_per_window_then_reports_the_suppressed_count() {
        let l = LogLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(l.check(t0), LogPermit::Log);
        assert_eq!(l.check(t0 + Duration::from_secs(1)), LogPermit::Log);
        assert_eq!(l.check(t0 + Duration::from_secs(2)), LogPermit::Suppress);
        assert_eq!(l.check(t0 + Duration::from_secs(59)), LogPermit::Suppress);
        assert_eq!(l.total_suppressed(), 2);
        assert_eq!(
            l.check(t0 + Duration::from_secs(60)),
            LogPermit::LogAfterSuppressing(2)
        );
        assert_eq!(l.check(t0 + Duration::from_secs(61)), LogPermit::Log);
        assert_eq!(l.check(t0 + Duration::from_secs(62)), LogPermit::Suppress);
    }
}
