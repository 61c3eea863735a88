//! A fresh directory under /tmp, removed on drop. Paths stay short because Unix socket
//! paths must fit in 107 bytes. Shared by the warden's integration tests (`mod common`
//! re-exports it; tests that need nothing else include this file alone).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct TempDir(PathBuf);

impl TempDir {
    /// `/tmp/cw-<pid>-<n>-<nanos>`.
    pub fn new() -> TempDir {
        TempDir::tagged("")
    }

    /// `/tmp/cw-<tag>-<pid>-<n>-<nanos>`: the tag says which test left a directory behind.
    pub fn tagged(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let tag = if tag.is_empty() {
            String::new()
        } else {
            format!("{tag}-")
        };
        let p = PathBuf::from("/tmp").join(format!(
            "cw-{tag}{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
