//! Harness for Clawrden's end-to-end process tests (design §8, tier 2) and benchmarks.
//!
//! It starts a real `clawrden-warden` (local executor) in a throw-away directory, points
//! real shims at it through a `bin/` directory of symlinks, and runs the same command
//! directly and through the shim so tests can compare the two byte for byte.
//!
//! Binaries are never built here: they come from the target directory this test binary
//! lives in (or `CLAWRDEN_BIN_DIR`). Build them first with `cargo build --workspace --bins`.
#![forbid(unsafe_code)]

pub mod api;
mod audit;
mod bins;
mod compose;
pub mod docker;
mod procs;
pub mod raw;
mod run;
mod tempdir;
pub mod tools;
mod warden;

pub use audit::{argv_strings, decode_bytes, parse_audit, sha256_hex, AuditEvent};
pub use bins::{binaries, Binaries};
pub use procs::{pids_with_env, wait_until_no_process_with_env};
pub use run::{
    assert_same_output, clawctl, direct_command, run_command, run_hashing, system_tool, Call,
    Output, StreamDigest, Watchdog, BASE_HOME, RUN_DEADLINE, SYSTEM_PATH,
};
pub use tempdir::TempDir;
pub use warden::{policy_allow_all, TestWarden, WardenBuilder, SHIMMED_TOOLS, STRAY_FD};

use std::time::{Duration, Instant};

/// Polls `probe` until it returns `Some`, at most `deadline`; panics with `what` if it
/// never does. For things that cannot be awaited (a process disappearing, a line being
/// appended to a file), never as a substitute for waiting on a child or a pipe.
pub fn poll_until<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("gave up after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failing run can be replayed.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether a test that needs root (to call as other users, or to switch ids and use
/// cgroups) can run: true as root; otherwise it prints `SKIP <test>: <reason>` and returns
/// false, or panics when `CLAWRDEN_REQUIRE_ROOT=1` (CI sets it: these tests must run).
pub fn require_root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CLAWRDEN_REQUIRE_ROOT").as_deref() != Ok("1"),
        "{test}: CLAWRDEN_REQUIRE_ROOT=1 but this test runs as uid {}",
        nix::unistd::geteuid()
    );
    eprintln!("SKIP {test}: calling as other users needs root");
    false
}

/// Our own uid, as the warden must see it through `SO_PEERCRED`.
pub fn our_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}
