//! Process-tree lookups in /proc, for the last-resort kill when the exec-helper itself
//! does not finish killing the tree, and for finding the helpers a crashed warden left.

use std::collections::HashMap;

/// The pids of all live descendants of `root`, from one scan of /proc.
pub(super) fn descendants(root: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read(entry.path().join("stat")) else {
            continue;
        };
        if let Some(ppid) = parse_stat_ppid(&stat) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(parent) = stack.pop() {
        for &kid in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
            if kid != root && !found.contains(&kid) {
                found.push(kid);
                stack.push(kid);
            }
        }
    }
    found
}

/// Whether `pid` is `root` or one of its descendants, following parent links up from `pid`
/// (at most a few thousand steps: a cycle or a deep chain ends the walk as a "no").
pub(crate) fn in_tree_of(pid: i32, root: i32) -> bool {
    let mut current = pid;
    for _ in 0..4096 {
        if current == root {
            return true;
        }
        if current <= 1 {
            return false;
        }
        let Ok(stat) = std::fs::read(format!("/proc/{current}/stat")) else {
            return false;
        };
        match parse_stat_ppid(&stat) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

/// Pids of the exec-helpers supervising `request_id` whose four uids are all `uid` (the
/// warden's; a command running as anyone else cannot pose as one). A match whose parent
/// is a match too is the helper's child before its exec, not a helper.
pub(super) fn helpers_of(request_id: &str, uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let found: Vec<(i32, Option<i32>)> = entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            if !is_helper_of(&cmdline, request_id) {
                return None;
            }
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let uids: Vec<u32> = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            if uids != [uid; 4] {
                return None;
            }
            let ppid = std::fs::read(entry.path().join("stat"))
                .ok()
                .and_then(|stat| parse_stat_ppid(&stat));
            Some((pid, ppid))
        })
        .collect();
    found
        .iter()
        .filter(|(_, ppid)| !found.iter().any(|(pid, _)| Some(*pid) == *ppid))
        .map(|(pid, _)| *pid)
        .collect()
}

/// Whether a NUL-separated command line is `... exec-helper [OPTIONS] --request-id ID ...
/// -- ...` (an option before `--`, not a `--kill`).
fn is_helper_of(cmdline: &[u8], request_id: &str) -> bool {
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

/// The parent pid from the contents of `/proc/PID/stat`: `pid (comm) state ppid ...`.
/// `comm` may contain spaces and parentheses, so fields are counted after the LAST ')'.
fn parse_stat_ppid(stat: &[u8]) -> Option<i32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ppid_follows_the_last_parenthesis() {
        assert_eq!(
            parse_stat_ppid(b"4242 (evil) 1 2 (x) S 17 4242 4242 0 -1 4194560"),
            Some(17)
        );
        assert_eq!(parse_stat_ppid(b"7 (a b) R 3 7 7"), Some(3));
        assert_eq!(parse_stat_ppid(b"7 a b R 3 7 7"), None);
        assert_eq!(parse_stat_ppid(b"7 (a) R"), None);
    }

    #[test]
    fn in_tree_of_follows_parents_up_to_the_root() {
        let me = std::process::id() as i32;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let kid = child.id() as i32;
        assert!(in_tree_of(kid, me));
        assert!(in_tree_of(me, me));
        assert!(!in_tree_of(me, kid));
        assert!(!in_tree_of(1, me));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_helper_is_recognised_by_its_request_id_option_only() {
        let helper = b"/x/clawrden-shim\0exec-helper\0--request-id\0r-1\0--\0/bin/sleep\0sleep\0";
        assert!(is_helper_of(helper, "r-1"));
        assert!(!is_helper_of(helper, "r-2"));
        assert!(!is_helper_of(
            b"x\0exec-helper\0--kill\0--request-id\0r-1\0",
            "r-1"
        ));
        assert!(!is_helper_of(
            b"x\0exec-helper\0--\0--request-id\0r-1\0",
            "r-1"
        ));
        assert!(!is_helper_of(b"sh\0-c\0--request-id\0r-1\0", "r-1"));
    }

    #[test]
    fn descendants_include_children_and_grandchildren() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("read grandchild pid");
        let grandchild: i32 = line.trim().parse().expect("pid");
        let found = descendants(std::process::id() as i32);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
        assert!(found.contains(&grandchild), "{found:?}");
    }
}
