//! clawrden-bench: what Clawrden costs per call and per byte, on this machine.
//!
//!     cargo build --release --workspace --bins
//!     cargo run --release -p clawrden-e2e --bin clawrden-bench [-- --runs N --bytes N --quick]
//!
//! Starts a warden (allow-all policy, local executor) from the binaries next to this one,
//! then prints (never asserts) latency of `true` run directly vs through the shim —
//! sequentially and with 64 concurrent callers — and stream throughput of
//! `head -c BYTES /dev/zero` through the shim (fd-passing and `--stream-only`) vs a plain pipe;
//! then (`--approval-only` for just this) approval latency through the HTTP API and the
//! latency of listing a queue of pending asks.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use clawrden_e2e::api::{raw_ask_send, Api, RawAsk, WAITING_PREFIX};
use clawrden_e2e::{binaries, direct_command, system_tool, Call, TestWarden};

struct Args {
    runs: usize,
    bytes: u64,
    approvals: usize,
    pending: usize,
    approval_only: bool,
}

const USAGE: &str = "usage: clawrden-bench [--runs N (default 2000)] [--bytes N (default 1000000000)] [--quick]\n\
     \x20                     [--approvals N (default 200)] [--pending N (default 1000)] [--approval-only]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        runs: 2000,
        bytes: 1_000_000_000,
        approvals: 200,
        pending: 1000,
        approval_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it
                .next()
                .ok_or_else(|| format!("{name} needs a number\n{USAGE}"))?;
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}: {v:?} is not a positive integer\n{USAGE}"))
        };
        match a.as_str() {
            "--runs" => args.runs = value("--runs")? as usize,
            "--bytes" => args.bytes = value("--bytes")?,
            "--approvals" => args.approvals = value("--approvals")? as usize,
            "--pending" => args.pending = value("--pending")? as usize,
            "--approval-only" => args.approval_only = true,
            "--quick" => {
                args.runs = 200;
                args.bytes = 100_000_000;
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// Latency summary of one series.
struct Stats {
    n: usize,
    p50: Duration,
    p99: Duration,
    mean: Duration,
    per_sec: f64,
}

fn stats(mut samples: Vec<Duration>, wall: Duration) -> Stats {
    samples.sort();
    let n = samples.len();
    let total: Duration = samples.iter().sum();
    Stats {
        n,
        p50: samples[n / 2],
        p99: samples[(n * 99 / 100).min(n - 1)],
        mean: total / n as u32,
        per_sec: n as f64 / wall.as_secs_f64(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Runs `make()` once, timing spawn to reap. Exits the process if the call fails: a
/// benchmark of failures measures nothing.
fn timed_call(make: &dyn Fn() -> Command) -> Duration {
    let mut cmd = make();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {cmd:?}: {e}")));
    let took = start.elapsed();
    if !out.status.success() {
        fail(&format!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    took
}

fn fail(msg: &str) -> ! {
    eprintln!("clawrden-bench: {msg}");
    std::process::exit(1)
}

fn sequential(runs: usize, make: &dyn Fn() -> Command) -> Stats {
    let start = Instant::now();
    let samples: Vec<Duration> = (0..runs).map(|_| timed_call(make)).collect();
    stats(samples, start.elapsed())
}

fn concurrent(runs: usize, callers: usize, make: &(dyn Fn() -> Command + Sync)) -> Stats {
    let samples = Mutex::new(Vec::with_capacity(runs));
    let per_caller = runs.div_ceil(callers);
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..callers {
            s.spawn(|| {
                let mine: Vec<Duration> = (0..per_caller).map(|_| timed_call(make)).collect();
                samples.lock().unwrap().extend(mine);
            });
        }
    });
    let wall = start.elapsed();
    stats(samples.into_inner().unwrap(), wall)
}

/// Bytes per second reading all of `cmd`'s stdout.
fn throughput(mut cmd: Command, expect: u64) -> f64 {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot run {cmd:?}: {e}")));
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => fail(&format!("reading stdout of {cmd:?}: {e}")),
        }
    }
    let status = child.wait().unwrap();
    let took = start.elapsed();
    if !status.success() || total != expect {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        fail(&format!(
            "{cmd:?}: {status}, {total} of {expect} bytes: {err}"
        ));
    }
    total as f64 / took.as_secs_f64()
}

/// Prisoners run the static musl shim (as shim and as exec-helper), so measure that one
/// when it has been built: a dynamically linked shim pays the loader twice per call.
fn prefer_static_shim() {
    if std::env::var_os("CLAWRDEN_SHIM").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Some(target) = exe.parent().and_then(|release| release.parent()) else {
        return;
    };
    let musl = target.join("x86_64-unknown-linux-musl/release/clawrden-shim");
    if musl.is_file() {
        // Single-threaded here: nothing else reads the environment yet.
        std::env::set_var("CLAWRDEN_SHIM", &musl);
    }
}

fn machine_facts() {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let bins = binaries();
    println!("machine: nproc {cpus}, kernel {kernel}, cpu {model}");
    println!("binaries: {}", bins.dir.display());
    println!("shim and exec-helper: {}", bins.shim.display());
    if bins.dir.file_name().is_some_and(|n| n != "release") {
        println!("WARNING: these are not release binaries; run with `cargo run --release ...`");
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(64);
        }
    };
    prefer_static_shim();
    machine_facts();
    if args.approval_only {
        approval_section(&args);
        return ExitCode::SUCCESS;
    }
    let fd_warden = TestWarden::builder().start();
    let stream_warden = TestWarden::builder().stream_only(true).start();
    let true_call = Call::new("true");
    let direct_true = || direct_command(&true_call);
    let shim_true = || fd_warden.shim_command(&true_call);
    // Warm up the page cache and the warden.
    for _ in 0..20 {
        timed_call(&direct_true);
        timed_call(&shim_true);
    }

    println!();
    println!(
        "latency of `{}` (ms), {} runs per row",
        system_tool("true").display(),
        args.runs
    );
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>10}",
        "", "p50", "p99", "mean", "calls/s"
    );
    let rows = [
        ("direct, sequential", sequential(args.runs, &direct_true)),
        ("shim, sequential", sequential(args.runs, &shim_true)),
        (
            "direct, 64 concurrent callers",
            concurrent(args.runs, 64, &direct_true),
        ),
        (
            "shim, 64 concurrent callers",
            concurrent(args.runs, 64, &shim_true),
        ),
    ];
    for (name, s) in &rows {
        println!(
            "{:<40} {:>9} {:>9} {:>9} {:>10.0}   (n={})",
            name,
            ms(s.p50),
            ms(s.p99),
            ms(s.mean),
            s.per_sec,
            s.n
        );
    }
    for (label, d, s) in [
        ("overhead, sequential", &rows[0].1, &rows[1].1),
        ("overhead, 64 concurrent", &rows[2].1, &rows[3].1),
    ] {
        println!(
            "{:<40} {:>9} {:>9} {:>9}",
            format!("{label} (shim - direct)"),
            ms(s.p50.saturating_sub(d.p50)),
            ms(s.p99.saturating_sub(d.p99)),
            ms(s.mean.saturating_sub(d.mean)),
        );
    }

    println!();
    println!(
        "stream throughput: head -c {} /dev/zero, bytes read from stdout",
        args.bytes
    );
    let head = Call::new("head").args(["-c", &args.bytes.to_string(), "/dev/zero"]);
    for (name, cmd) in [
        ("plain pipe", direct_command(&head)),
        ("shim, fd-passing", fd_warden.shim_command(&head)),
        ("shim, --stream-only", stream_warden.shim_command(&head)),
    ] {
        let bps = throughput(cmd, args.bytes);
        println!("{:<40} {:>9.0} MB/s", name, bps / 1e6);
    }
    approval_section(&args);
    ExitCode::SUCCESS
}

// ---- approvals (the HTTP API and the queue) ----

/// One asked `printf x` approved through the API: returns (approve round trip, time
/// from the approve response to the command's first output byte). A command that
/// printed before the response was read counts as zero.
fn one_approval(w: &TestWarden, approver: &Api) -> (Duration, Duration) {
    let mut cmd = w.shim_command(&Call::new("printf").arg("x"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot run {cmd:?}: {e}")));
    let mut stdout = child.stdout.take().unwrap();
    let first_byte = thread::spawn(move || {
        let mut b = [0u8; 1];
        let n = stdout.read(&mut b).unwrap_or(0);
        let at = Instant::now();
        let mut rest = Vec::new();
        let _ = stdout.read_to_end(&mut rest);
        (n, at)
    });
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    if stderr.read_line(&mut line).unwrap_or(0) == 0 || !line.starts_with(WAITING_PREFIX) {
        let _ = child.kill();
        fail(&format!(
            "an asked call printed {line:?} instead of `{WAITING_PREFIX}<id>: ...`"
        ));
    }
    let id = line[WAITING_PREFIX.len()..]
        .split(": ")
        .next()
        .unwrap_or_default()
        .to_string();
    let sent = Instant::now();
    let r = approver.post(
        &format!("/api/v1/requests/{id}/approve"),
        &serde_json::json!({}),
    );
    let answered = Instant::now();
    if r.status != 200 {
        let _ = child.kill();
        fail(&format!("approving {id}: {r:?}"));
    }
    let (n, at) = first_byte.join().expect("stdout reader");
    let status = child.wait().unwrap();
    if n != 1 || !status.success() {
        fail(&format!(
            "approved `printf x` ({id}) exited {status} with {n} bytes of output"
        ));
    }
    (answered - sent, at.saturating_duration_since(answered))
}

fn print_row(name: &str, s: &Stats) {
    println!(
        "{:<40} {:>9} {:>9} {:>9}   (n={})",
        name,
        ms(s.p50),
        ms(s.p99),
        ms(s.mean),
        s.n
    );
}

/// Approval latency over `args.approvals` sequential approvals, then the latency of
/// listing `args.pending` pending requests.
fn approval_section(args: &Args) {
    let w = TestWarden::builder()
        .policy(
            "version: 1\ndefault_action: allow\ndefault_timeout: 2m\napproval_timeout: 10m\n\
             default_executor: local\nrules:\n  - name: ask-printf\n    command: printf\n    action: ask\n",
        )
        .api()
        .start();
    let admin = Api::of(&w).with_token(w.admin_token());
    let approver = admin.create_token("bench", "approve");
    for _ in 0..5 {
        one_approval(&w, &approver);
    }
    println!();
    println!(
        "approvals through the HTTP API (ms), {} sequential asks of `printf x`",
        args.approvals
    );
    println!("{:<40} {:>9} {:>9} {:>9}", "", "p50", "p99", "mean");
    let start = Instant::now();
    let (round_trips, to_output): (Vec<Duration>, Vec<Duration>) = (0..args.approvals)
        .map(|_| one_approval(&w, &approver))
        .unzip();
    let wall = start.elapsed();
    print_row("POST approve round trip", &stats(round_trips, wall));
    print_row(
        "approve response -> first output byte",
        &stats(to_output, wall),
    );

    let cwd = w.dir().to_string_lossy().into_owned();
    let streams: Vec<_> = (0..args.pending)
        .map(|i| raw_ask_send(&w.socket, &["printf", &format!("queued-{i}")], &cwd))
        .collect();
    let asks: Vec<RawAsk> = streams.into_iter().map(RawAsk::read_pending).collect();
    let path = format!("/api/v1/requests?state=pending&limit={}", args.pending);
    let samples: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let r = admin.get(&path);
            let took = t.elapsed();
            let listed = r.json()["requests"].as_array().map_or(0, Vec::len);
            if r.status != 200 || listed != args.pending {
                fail(&format!(
                    "GET {path}: status {}, {listed} of {} listed",
                    r.status, args.pending
                ));
            }
            took
        })
        .collect();
    println!();
    println!(
        "listing the queue with {} pending (ms), 20 requests",
        asks.len()
    );
    print_row(&format!("GET {path}"), &stats(samples, Duration::ZERO));
    drop(asks);
}
