//! One cgroup v2 per locally executed request, where the kernel offers one.
//!
//! The exec-helper's child joins `<warden's cgroup>/clawrden-<state>/<request id>` before it
//! drops privileges, so every process of the command lives in that cgroup whatever it
//! does to its parent (double forks, `setsid`, killing the helper). When the request ends
//! the warden writes `cgroup.kill` (Linux 5.14+) and removes the directory; a warden that
//! starts on the same state directory kills and removes whatever a crashed predecessor
//! left there. `<state>` is a hash of the state directory, so wardens on different state
//! directories in one cgroup never touch each other's requests.
//!
//! Where there is no writable cgroup v2 hierarchy with `cgroup.kill` (cgroup v1 only, a
//! read-only `/sys/fs/cgroup`, an old kernel), the executor says so once at start-up and
//! relies on the exec-helper alone (a root subreaper the command cannot signal).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long removing a killed cgroup waits for its processes to be gone.
const EMPTY_WAIT: Duration = Duration::from_secs(5);

/// The per-request cgroups of one warden.
#[derive(Debug, Clone)]
pub struct RequestCgroups {
    /// `<warden's cgroup>/clawrden-<hash of the state directory>`.
    parent: PathBuf,
}

impl RequestCgroups {
    /// Finds the cgroup v2 hierarchy and this process's cgroup in it, and creates the
    /// parent of this warden's request cgroups. The error says why cgroups cannot be used.
    pub fn detect(state_dir: &Path) -> Result<RequestCgroups, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup v2 hierarchy is mounted")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let own = unified_path(&own).ok_or("this process has no cgroup v2 path")?;
        let state = state_dir
            .canonicalize()
            .unwrap_or_else(|_| state_dir.to_path_buf());
        let digest = Sha256::digest(state.as_os_str().as_encoded_bytes());
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let parent = mount
            .join(own.trim_start_matches('/'))
            .join(format!("clawrden-{name}"));
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(format!(
                    "cannot create the cgroup {}: {e}",
                    parent.display()
                ))
            }
        }
        if !parent.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&parent);
            return Err(format!(
                "{} has no cgroup.kill (Linux 5.14 or later is needed)",
                parent.display()
            ));
        }
        Ok(RequestCgroups { parent })
    }

    /// The directory holding this warden's request cgroups.
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// Creates the cgroup of `request_id` (and the parent, if it was removed meanwhile).
    pub fn create(&self, request_id: &str) -> io::Result<PathBuf> {
        let dir = self.parent.join(request_id);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.parent)?;
                std::fs::create_dir(&dir)?;
            }
            other => other?,
        }
        Ok(dir)
    }

    /// The request cgroups left under the parent (by a crashed warden), by request id.
    pub fn leftovers(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.parent) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect()
    }
}

/// Kills every process in the cgroup `dir`, waits (bounded) until it is empty and removes
/// it. Blocking. Returns whether any process was still in it.
pub fn kill_and_remove(dir: &Path) -> io::Result<bool> {
    let populated = is_populated(dir)?;
    if populated {
        std::fs::write(dir.join("cgroup.kill"), b"1")?;
    }
    let deadline = Instant::now() + EMPTY_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(populated),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(populated),
            // EBUSY while killed processes are still exiting.
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
                let _ = std::fs::write(dir.join("cgroup.kill"), b"1");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether any process is in the cgroup `dir` or below (`populated 1` in `cgroup.events`).
fn is_populated(dir: &Path) -> io::Result<bool> {
    let events = std::fs::read_to_string(dir.join("cgroup.events"))?;
    Ok(events.lines().any(|l| l.trim() == "populated 1"))
}

/// The mount point of the cgroup2 file system in a `/proc/self/mountinfo` text.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// The `0::PATH` line of a `/proc/self/cgroup` text.
fn unified_path(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN` (octal).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let digit = |k: usize| u16::from(bytes[i + k] - b'0');
            out.push((digit(1) * 64 + digit(2) * 8 + digit(3)) as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_and_own_path_are_read_from_proc() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 25 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
36 25 0:32 / /mnt/with\\040space rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount("36 25 0:32 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n"),
            Some(PathBuf::from("/mnt/with space"))
        );
        assert_eq!(
            cgroup2_mount("30 25 0:26 / /x rw - cgroup cgroup rw\n"),
            None
        );
        assert_eq!(
            unified_path("4:memory:/x\n0::/system.slice/clawrden.service\n"),
            Some("/system.slice/clawrden.service".to_owned())
        );
        assert_eq!(unified_path("4:memory:/x\n"), None);
    }
}
