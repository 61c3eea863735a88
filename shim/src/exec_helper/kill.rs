//! `clawrden-shim exec-helper --kill --request-id ID [--signal SIG]`: signals the
//! exec-helper that supervises request ID in this PID namespace.
//!
//! Docker has no API to signal an exec. The mirror executor signals its helper over the
//! executor channel; this is its last resort, run in the prisoner (a second `docker exec`,
//! as root) when a helper did not finish killing its tree in time. The helper is found by its command line
//! (`clawrden-shim exec-helper ... --request-id ID ... --`), and, when `--kill` runs as
//! root, by its owner too: only processes whose real, effective, saved and filesystem uids
//! are all 0 count. Why that makes the match trustworthy:
//!
//! - The real helper stays root for its whole life (only its forked child drops to the
//!   caller's uid, see the module above), so the filter never hides it.
//! - The agent (non-root, no CAP_SETUID) cannot create a process whose four uids are 0: a
//!   set-user-ID program it runs keeps the agent's real uid, and anything that gets all
//!   four to 0 means the agent already is root, which no filter here could contain.
//! - Nor can it change the command line of a root process: `/proc/PID/cmdline` is the
//!   process's own memory, writable only by the process itself, through ptrace (needs the
//!   same uid or CAP_SYS_PTRACE) or PR_SET_MM (needs CAP_SYS_RESOURCE, on itself).
//!
//! So a root process with the helper's command line for ID was started by root with that
//! command line: the warden's `docker exec`, or the helper's own child in the instant
//! between fork and exec (still root, same command line). That child is skipped: a match
//! whose parent is also a match is not a helper. Without the filter, a forged helper (a
//! process of the agent's with `exec-helper --request-id ID` in its argv) would make the
//! warden's root `--kill` believe it signalled the request after the real helper ended,
//! and `--signal KILL` would walk the forged process's descendants with root's power (a
//! set-user-ID program the agent started under it would be killed by root). When `--kill`
//! itself is not root (the warden's local executor as an ordinary user) the kernel only
//! lets it signal that user's processes anyway, and the uid filter is not applied.
//!
//! SIGUSR1 makes the helper kill its whole tree; INT, TERM, HUP, QUIT and WINCH are
//! forwarded by the helper to the command's process group; SIGKILL is the last resort:
//! every descendant of the helper, then the helper, are killed here directly.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Exit status when no helper with that request id runs (the command already ended).
pub const EXIT_NO_HELPER: i32 = 3;

/// Signals `--kill` accepts.
const ALLOWED: [Signal; 7] = [
    Signal::SIGUSR1,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
    Signal::SIGKILL,
];

/// Parses `USR1`, `SIGUSR1`, `usr1` or a number; only the signals above.
pub fn parse_signal(value: &OsStr) -> Result<Signal, String> {
    let text = value.to_string_lossy();
    let upper = text.to_ascii_uppercase();
    let signal = match upper.parse::<i32>() {
        Ok(n) => Signal::try_from(n).ok(),
        Err(_) => {
            let name = if upper.starts_with("SIG") {
                upper.clone()
            } else {
                format!("SIG{upper}")
            };
            name.parse::<Signal>().ok()
        }
    };
    match signal {
        Some(s) if ALLOWED.contains(&s) => Ok(s),
        _ => Err(format!(
            "--signal {text:?} is not one of USR1, INT, TERM, HUP, QUIT, WINCH, KILL"
        )),
    }
}

/// Whether a request id is safe to match on: 1-128 of `[A-Za-z0-9_.-]`.
pub fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Whether a NUL-separated `/proc/PID/cmdline` is an exec-helper (not a `--kill`) for
/// `request_id`: argv[1] is `exec-helper` and `--request-id ID` appears among its options
/// (before `--`).
pub fn cmdline_matches(cmdline: &[u8], request_id: &str) -> bool {
    let args: Vec<&[u8]> = cmdline
        .strip_suffix(b"\0")
        .unwrap_or(cmdline)
        .split(|&b| b == 0)
        .collect();
    if args.get(1) != Some(&&b"exec-helper"[..]) {
        return false;
    }
    let options = args[2..].iter().take_while(|a| **a != b"--");
    let mut previous: &[u8] = b"";
    for arg in options {
        if *arg == b"--kill" {
            return false;
        }
        if previous == b"--request-id" && *arg == request_id.as_bytes() {
            return true;
        }
        previous = arg;
    }
    false
}

/// The four uids (real, effective, saved, filesystem) on the `Uid:` line of the contents
/// of `/proc/PID/status`.
pub fn status_uids(status: &[u8]) -> Option<[u32; 4]> {
    let text = std::str::from_utf8(status).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_ascii_whitespace().map(|v| v.parse::<u32>().ok());
    let uids = [ids.next()??, ids.next()??, ids.next()??, ids.next()??];
    ids.next().is_none().then_some(uids)
}

/// Pids of exec-helpers for `request_id`, other than this process. `root_only`: only
/// processes whose four uids are 0 (see the module documentation). A match whose parent
/// is a match too is the helper's child before its exec, not a helper.
fn find_helpers(request_id: &str, root_only: bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let matches: Vec<(i32, Option<i32>)> = entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            if pid == me {
                return None;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            if !cmdline_matches(&cmdline, request_id) {
                return None;
            }
            if root_only {
                let status = std::fs::read(entry.path().join("status")).ok()?;
                if status_uids(&status) != Some([0; 4]) {
                    return None;
                }
            }
            let ppid = std::fs::read(entry.path().join("stat"))
                .ok()
                .and_then(|stat| super::parse_stat_ppid(&stat));
            Some((pid, ppid))
        })
        .collect();
    matches
        .iter()
        .filter(|(_, ppid)| !matches.iter().any(|(pid, _)| Some(*pid) == *ppid))
        .map(|(pid, _)| *pid)
        .collect()
}

/// Runs `--kill`; returns the exit status (0 signalled, 3 no such helper, 2 usage).
pub fn main(args: &[OsString]) -> i32 {
    let mut request_id = None;
    let mut signal = Signal::SIGUSR1;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("option {name} needs a value"))
        };
        let parsed = match arg.as_bytes() {
            b"--kill" => Ok(()),
            b"--request-id" => value("--request-id").map(|v| {
                request_id = Some(v.to_string_lossy().into_owned());
            }),
            b"--signal" => value("--signal")
                .and_then(|v| parse_signal(v))
                .map(|s| signal = s),
            other => Err(format!(
                "unknown option {:?}",
                String::from_utf8_lossy(other)
            )),
        };
        if let Err(e) = parsed {
            eprintln!(
                "clawrden: exec-helper --kill: {e}\nusage: clawrden-shim exec-helper --kill --request-id ID [--signal SIG]"
            );
            return 2;
        }
    }
    let Some(request_id) = request_id.filter(|id| valid_request_id(id)) else {
        eprintln!("clawrden: exec-helper --kill: --request-id ID (letters, digits, '.', '_', '-') is required");
        return 2;
    };
    let helpers = find_helpers(&request_id, nix::unistd::geteuid().is_root());
    if helpers.is_empty() {
        eprintln!("clawrden: exec-helper --kill: no exec-helper runs request {request_id}");
        return EXIT_NO_HELPER;
    }
    for helper in helpers {
        if signal == Signal::SIGKILL {
            kill_tree_now(helper);
        } else {
            let _ = kill(Pid::from_raw(helper), signal);
        }
    }
    0
}

/// SIGKILLs every descendant of `helper`, then the helper, in rounds (a process may fork
/// between a scan and its kill). The helper goes last: while it lives it is the subreaper
/// that keeps orphans findable.
fn kill_tree_now(helper: i32) {
    for _ in 0..5 {
        let descendants = super::descendants(helper);
        if descendants.is_empty() {
            break;
        }
        for pid in descendants {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let _ = kill(Pid::from_raw(helper), Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_of_the_helper_for_the_request_matches() {
        let c = [
            "/usr/lib/clawrden/bin/clawrden-shim",
            "exec-helper",
            "--uid",
            "1000",
            "--request-id",
            "r-1",
            "--",
            "/bin/cat",
            "cat",
            "",
        ]
        .join("\0");
        let c = c.as_bytes();
        assert!(cmdline_matches(c, "r-1"));
        assert!(!cmdline_matches(c, "r-2"));
        assert!(!cmdline_matches(c, "r"));
    }

    #[test]
    fn cmdline_of_a_kill_or_of_the_command_does_not_match() {
        let kill = b"clawrden-shim\0exec-helper\0--kill\0--request-id\0r-1\0";
        assert!(!cmdline_matches(kill, "r-1"));
        let after_dashes = b"clawrden-shim\0exec-helper\0--\0/bin/x\0--request-id\0r-1\0";
        assert!(!cmdline_matches(after_dashes, "r-1"));
        let other = b"sh\0exec-helper\0";
        assert!(!cmdline_matches(other, "r-1"));
    }

    #[test]
    fn signals_parse_by_name_or_number_and_only_the_allowed_ones() {
        assert_eq!(parse_signal(OsStr::new("USR1")), Ok(Signal::SIGUSR1));
        assert_eq!(parse_signal(OsStr::new("sigterm")), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal(OsStr::new("9")), Ok(Signal::SIGKILL));
        assert!(parse_signal(OsStr::new("STOP")).is_err());
        assert!(parse_signal(OsStr::new("USR2")).is_err());
    }

    #[test]
    fn status_uids_are_read_from_the_uid_line() {
        let status =
            b"Name:\tclawrden-shim\nState:\tS (sleeping)\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(status_uids(status), Some([0; 4]));
        let setuid = b"Name:\tx\nUid:\t1000\t0\t0\t0\n";
        assert_eq!(status_uids(setuid), Some([1000, 0, 0, 0]));
        assert_eq!(status_uids(b"Name:\tx\nUid:\t0\t0\t0\n"), None);
        assert_eq!(status_uids(b"Name:\tx\nGid:\t0\t0\t0\t0\n"), None);
        assert_eq!(status_uids(b"Uid:\t0\t0\t0\tx\n"), None);
    }

    #[test]
    fn request_ids_are_restricted_to_safe_characters() {
        assert!(valid_request_id("01JABCDEF-xyz_1.2"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id("a\0b"));
    }
}
