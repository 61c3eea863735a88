//! The state directory (store, audit, tokens): one warden at a time, and no other user.
//!
//! A warden holds an exclusive `flock` on `<state-dir>/warden.lock` for its whole life, so
//! a second warden started on the same directory refuses to start (exit 1: the config is
//! fine, the directory is busy) instead of marking the first one's running requests
//! abandoned and killing their processes. The kernel drops the lock when the process dies,
//! even by `kill -9`, so a crashed warden never blocks its successor.
//!
//! The directory is mode 0700 and owned by the warden's user: no command the local executor
//! runs (always as another user, see [`crate::identity`]) can read the admin token or the
//! store, or write the audit.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// File name of the lock inside the state directory.
pub const LOCK_FILE: &str = "warden.lock";

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error(
        "state directory {} is in use by another warden{holder} (it holds {}); stop that warden first, or give this one its own --state-dir",
        dir.display(), lock.display()
    )]
    Busy {
        dir: PathBuf,
        lock: PathBuf,
        /// ` (pid N)` when the lock file names its holder.
        holder: String,
    },
    #[error("cannot lock the state directory ({}): {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The exclusive lock on a state directory, released when dropped (or the process dies).
#[derive(Debug)]
pub struct StateDirLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl StateDirLock {
    /// Creates `dir` (mode 0700) if needed and takes its lock without waiting; writes this
    /// process's pid into the lock file for whoever finds it busy.
    pub fn acquire(dir: &Path) -> Result<StateDirLock, StateDirError> {
        create_private_dir(dir).map_err(|source| StateDirError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(LOCK_FILE);
        let io = |source| StateDirError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!(" (pid {pid})"),
                    Err(_) => String::new(),
                };
                return Err(StateDirError::Busy {
                    dir: dir.to_path_buf(),
                    lock: path,
                    holder,
                });
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        };
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(StateDirLock { _lock: lock, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `dir` and its missing parents; `dir` itself gets mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes `dir` reachable by its owner only: it must belong to `owner` (the warden's uid);
/// group and other permissions are removed. Returns the mode it had when it was changed.
pub fn restrict_to_owner(dir: &Path, owner: u32) -> Result<Option<u32>, String> {
    create_private_dir(dir)
        .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
    let meta = std::fs::metadata(dir)
        .map_err(|e| format!("cannot read the state directory {}: {e}", dir.display()))?;
    if meta.uid() != owner {
        return Err(format!(
            "state directory {} belongs to uid {}, not to the warden's uid {owner}: commands running as that user could read its tokens and store; chown it to the warden's user",
            dir.display(),
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)).map_err(|e| {
        format!(
            "cannot make the state directory {} private (chmod go-rwx): {e}",
            dir.display()
        )
    })?;
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_holder() {
        let dir = TempDir::new("lock");
        let state = dir.path().join("state");
        let first = StateDirLock::acquire(&state).unwrap();
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let err = StateDirLock::acquire(&state).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "state directory {} is in use by another warden (pid {}) (it holds {}); stop that warden first, or give this one its own --state-dir",
                state.display(),
                std::process::id(),
                first.path().display()
            )
        );
        drop(first);
        let again = StateDirLock::acquire(&state).unwrap();
        assert_eq!(
            std::fs::read_to_string(again.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn the_state_directory_is_made_private_to_its_owner() {
        let dir = TempDir::new("restrict");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(restrict_to_owner(&state, me), Ok(Some(0o755)));
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(restrict_to_owner(&state, me), Ok(None));
        let err = restrict_to_owner(&state, me + 1).unwrap_err();
        assert!(
            err.contains(&format!(
                "belongs to uid {me}, not to the warden's uid {}",
                me + 1
            )),
            "{err}"
        );
    }
}
