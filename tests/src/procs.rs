//! Finding processes by an environment entry (`CLAWRDEN_PARENT_REQUEST=<id>`) via /proc.

use std::fs;
use std::time::Duration;

/// Live processes whose environment holds exactly `entry` (e.g. `NAME=value`), with their
/// command lines. Zombies have an empty environ and do not count: they are dead.
pub fn pids_with_env(entry: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for ent in dir.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = fs::read(ent.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|e| e == entry.as_bytes()) {
            let cmdline = fs::read(ent.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            found.push((pid, cmdline));
        }
    }
    found
}

/// Waits (bounded poll) until no live process carries `entry`; panics listing survivors.
pub fn wait_until_no_process_with_env(entry: &str, deadline: Duration) {
    let start = std::time::Instant::now();
    loop {
        let left = pids_with_env(entry);
        if left.is_empty() {
            return;
        }
        if start.elapsed() > deadline {
            panic!("processes with {entry} still alive after {deadline:?}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
