//! Process-tree lookups in /proc, for the last-resort kill when the exec-helper itself
//! does not finish killing the tree.

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
