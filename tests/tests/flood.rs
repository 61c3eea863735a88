//! A bounded load test: raw protocol clients flood one prisoner's socket for a few
//! seconds with what an attacker inside it can send (4 MiB asks, 4 MiB denied requests
//! of control characters, small asks held open, idle connections). Meanwhile the HTTP
//! API answers operators, another prisoner's calls still run, and the warden's peak RSS
//! stays under a generous bound. Figures are printed (`--no-capture`), never asserted
//! as timings. README.md, "Operations", states what was measured.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clawrden_e2e::api::Api;
use clawrden_e2e::{run_command, Call, TestWarden};
use clawrden_protocol::{Message, Request};

const POLICY: &str = "version: 1\n\
    default_action: allow\n\
    default_timeout: 2m\n\
    approval_timeout: 5m\n\
    default_executor: local\n\
    rules:\n\
    \x20 - name: ask-sleep\n\
    \x20   command: sleep\n\
    \x20   action: ask\n\
    \x20 - name: no-touch\n\
    \x20   command: touch\n\
    \x20   action: deny\n\
    \x20   reason: touch is denied\n";

/// How long the flood lasts; every client stops by itself after it.
const FLOOD_FOR: Duration = Duration::from_secs(8);
const FLOODERS: usize = 12;
/// Idle connections each flooder keeps open at most.
const HELD_PER_FLOODER: usize = 8;
/// Idle connections one more client opens every second (over the default cap of 64).
const SLOWLORIS: usize = 80;
/// Far above what was measured (README.md, "Operations"): a leak or a per-request copy
/// that is not bounded shows up as gigabytes.
const RSS_BOUND_KIB: u64 = 512 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn frame(argv: Vec<Vec<u8>>) -> Arc<Vec<u8>> {
    let mut out = Vec::new();
    Message::hello().encode(&mut out).unwrap();
    let request = Request {
        argv,
        cwd: b"/".to_vec(),
        env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
        ..Request::default()
    };
    Message::Request(request).encode(&mut out).unwrap();
    Arc::new(out)
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    refused: AtomicU64,
    denied: AtomicU64,
    pending: AtomicU64,
    broken: AtomicU64,
}

/// Sends one pre-encoded Hello+Request and reads what comes back up to the decision;
/// returns the stream when the call is left pending.
fn one_call(socket: &std::path::Path, bytes: &[u8], tally: &Tally) -> Option<UnixStream> {
    tally.sent.fetch_add(1, Ordering::Relaxed);
    let Ok(mut s) = UnixStream::connect(socket) else {
        tally.broken.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let wrote = s.write_all(bytes);
    let mut seen = Vec::new();
    loop {
        match clawrden_protocol::read_message(&mut s) {
            Ok(Some(Message::Hello { .. })) => continue,
            Ok(Some(m)) => {
                seen.push(m);
                break;
            }
            _ => break,
        }
    }
    match seen.first() {
        Some(Message::Error { message, .. }) if message.starts_with("refused: ") => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
        Some(Message::Decision(d)) if d.action == clawrden_protocol::Action::Deny => {
            tally.denied.fetch_add(1, Ordering::Relaxed);
            None
        }
        Some(Message::Decision(d)) if d.action == clawrden_protocol::Action::Pending => {
            tally.pending.fetch_add(1, Ordering::Relaxed);
            Some(s)
        }
        _ => {
            let _ = wrote;
            tally.broken.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

fn status_kib(pid: i32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A sample of /metrics; -1 when the series is missing (reported, then fails the test).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or(-1.0)
}

#[test]
fn a_flooded_prisoner_leaves_the_api_and_other_prisoners_working_in_bounded_memory() {
    let w = TestWarden::builder()
        .policy(POLICY)
        .prisoners(&["flooded", "quiet"])
        .api()
        .start();
    let admin = Api::of(&w).with_token(w.admin_token());
    let pid = w.pid().as_raw();
    let flooded = w.sockets[0].1.clone();
    let rss_before = status_kib(pid, "VmRSS:");

    let big_ask = frame(vec![b"sleep".to_vec(), vec![b'x'; (4 << 20) - 4096]]);
    let big_deny = frame(vec![b"touch".to_vec(), vec![1u8; (4 << 20) - 4096]]);
    let small_ask = frame(vec![b"sleep".to_vec(), b"1".to_vec()]);
    let tally = Arc::new(Tally::default());
    // First fill the prisoner's approval queue (16 by default) and one more, held open
    // for the whole flood: whatever the machine's load, the queue's cap is reached.
    let mut queue_fill: Vec<UnixStream> = Vec::new();
    while tally.refused.load(Ordering::Relaxed) == 0 {
        assert!(
            queue_fill.len() <= 16,
            "the approval queue took more than its cap"
        );
        if let Some(s) = one_call(&flooded, &small_ask, &tally) {
            queue_fill.push(s);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|i| {
            let (stop, tally, socket) = (stop.clone(), tally.clone(), flooded.clone());
            let frames = [big_ask.clone(), big_deny.clone(), small_ask.clone()];
            thread::spawn(move || {
                let mut held: Vec<UnixStream> = Vec::new();
                let mut pending: Vec<UnixStream> = Vec::new();
                let mut n = i;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_FOR {
                    n += 1;
                    if n % 4 == 3 {
                        // An idle connection: says nothing, holds a slot.
                        if held.len() < HELD_PER_FLOODER {
                            if let Ok(s) = UnixStream::connect(&socket) {
                                held.push(s);
                            }
                        }
                        continue;
                    }
                    // Asks left pending stay open: they fill the prisoner's queue.
                    if let Some(s) = one_call(&socket, &frames[n % 4], &tally) {
                        pending.push(s);
                    }
                }
                drop(held);
                drop(pending);
            })
        })
        .collect();

    let slowloris = {
        let (stop, socket) = (stop.clone(), flooded.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_FOR {
                let held: Vec<UnixStream> = (0..SLOWLORIS)
                    .filter_map(|_| UnixStream::connect(&socket).ok())
                    .collect();
                thread::sleep(Duration::from_secs(1));
                drop(held);
            }
        })
    };
    let prober = {
        let (stop, admin) = (stop.clone(), admin.with_token(w.admin_token()));
        thread::spawn(move || {
            let mut latency = Vec::new();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_FOR {
                let t = Instant::now();
                let r = admin.get("/api/v1/status");
                latency.push(t.elapsed());
                assert_eq!(r.status, 200, "the API during the flood: {}", r.text());
                thread::sleep(Duration::from_millis(50));
            }
            latency
        })
    };
    let mut quiet_ok = 0u32;
    let mut quiet_calls = 0u32;
    let mut rss_peak_sampled = rss_before;
    while started.elapsed() < FLOOD_FOR {
        let token = format!("quiet-{quiet_calls}");
        quiet_calls += 1;
        let out = run_command(
            w.shim_command_as("quiet", &Call::new("printf").arg(&token)),
            b"",
            "quiet prisoner's printf",
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "the quiet prisoner during the flood: {out:?}"
        );
        assert_eq!(out.stdout, token.as_bytes());
        quiet_ok += 1;
        rss_peak_sampled = rss_peak_sampled.max(status_kib(pid, "VmRSS:"));
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().expect("a flooder panicked");
    }
    slowloris
        .join()
        .expect("the idle-connection client panicked");
    let mut api_latency = prober.join().expect("the API prober panicked");
    let hwm = status_kib(pid, "VmHWM:");
    let rss_after = status_kib(pid, "VmRSS:");
    let text = admin.metrics();
    let refused = |prisoner: &str, reason: &str| {
        metric(
            &text,
            &format!(r#"clawrden_refused_total{{prisoner="{prisoner}",reason="{reason}"}}"#),
        )
    };
    let audit_bytes = std::fs::metadata(w.audit_path()).unwrap().len();
    api_latency.sort();
    println!(
        "flood: {FLOODERS} clients for {FLOOD_FOR:?}: {} calls sent ({} refused, {} denied, {} left pending, {} broken)",
        tally.sent.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.denied.load(Ordering::Relaxed),
        tally.pending.load(Ordering::Relaxed),
        tally.broken.load(Ordering::Relaxed),
    );
    println!(
        "flood: refused by the warden: prisoner_connections {}, connections {}, pending_approvals {}, ask_too_large {}",
        refused("flooded", "prisoner_connections"),
        refused("flooded", "connections"),
        refused("flooded", "pending_approvals"),
        refused("flooded", "ask_too_large"),
    );
    println!(
        "flood: warden RSS {} MiB before, peak (VmHWM) {} MiB, {} MiB after; audit {} KiB",
        rss_before / 1024,
        hwm / 1024,
        rss_after / 1024,
        audit_bytes / 1024
    );
    println!(
        "flood: API GET /api/v1/status: {} answers, p50 {:?}, p99 {:?}, max {:?}; quiet prisoner: {quiet_ok}/{quiet_calls} calls ran",
        api_latency.len(),
        percentile(&api_latency, 0.5),
        percentile(&api_latency, 0.99),
        api_latency.last().copied().unwrap_or_default(),
    );

    assert!(quiet_calls > 0 && quiet_ok == quiet_calls);
    assert!(
        hwm < RSS_BOUND_KIB,
        "peak RSS {} MiB over the {} MiB bound",
        hwm / 1024,
        RSS_BOUND_KIB / 1024
    );
    assert!(refused("flooded", "prisoner_connections") > 0.0, "{text}");
    assert!(refused("flooded", "pending_approvals") > 0.0, "{text}");
    assert!(refused("flooded", "ask_too_large") > 0.0, "{text}");
    for reason in [
        "prisoner_connections",
        "pending_approvals",
        "ask_too_large",
        "connections",
    ] {
        assert_eq!(refused("quiet", reason), 0.0, "{reason}");
    }
    // Each 4 MiB request added at most its kept 64 KiB (plus the lines around it).
    let recorded = w
        .audit_events()
        .iter()
        .filter(|e| e.event() == "request")
        .count() as u64;
    assert!(
        audit_bytes / recorded.max(1) < 80 * 1024,
        "{audit_bytes} bytes of audit for {recorded} requests"
    );
    w.verify_audit();
}
