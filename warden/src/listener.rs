//! One Unix socket per prisoner. Which prisoner a call comes from is decided by which
//! socket accepted it, never by anything in the request; uid, gid and pid come from
//! `SO_PEERCRED`.
//!
//! The socket is mode 0666: access control is who can reach its *directory* (mounted
//! only into that prisoner's container), not the socket's mode, so any uid inside the
//! prisoner can talk to the warden.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::session::{self, Peer, SessionShared};

/// Why a socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot create socket directory {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("refusing to remove {}: it exists and is not a socket ({kind}); remove it or choose another socket path", path.display())]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error("cannot remove stale socket {}: {source}", path.display())]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot listen on {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot make {} reachable (chmod 0666): {source}", path.display())]
    Chmod { path: PathBuf, source: io::Error },
}

/// A bound prisoner socket.
#[derive(Debug)]
pub struct PrisonerListener {
    pub prisoner: String,
    pub path: PathBuf,
    listener: UnixListener,
    /// (dev, inode) of the socket file we created, so shutdown removes only ours.
    identity: (u64, u64),
}

fn file_kind(ft: &fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_symlink() {
        "a symlink"
    } else if ft.is_fifo() {
        "a fifo"
    } else {
        "a special file"
    }
}

/// Creates the parent directory (0755) if missing, removes a stale socket (only a
/// socket) at `path`, binds and makes the socket mode 0666.
pub fn bind(prisoner: &str, path: &Path) -> Result<PrisonerListener, BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|source| BindError::CreateDir {
                    dir: dir.to_owned(),
                    source,
                })?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(path).map_err(|source| BindError::RemoveStale {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(meta) => {
            return Err(BindError::NotASocket {
                path: path.to_owned(),
                kind: file_kind(&meta.file_type()),
            })
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|source| BindError::Bind {
        path: path.to_owned(),
        source,
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666)).map_err(|source| {
        BindError::Chmod {
            path: path.to_owned(),
            source,
        }
    })?;
    let meta = fs::symlink_metadata(path).map_err(|source| BindError::Bind {
        path: path.to_owned(),
        source,
    })?;
    Ok(PrisonerListener {
        prisoner: prisoner.to_owned(),
        path: path.to_owned(),
        listener,
        identity: (meta.dev(), meta.ino()),
    })
}

/// Removes a socket file if it is still the one we bound (not a newer warden's).
pub fn remove_socket(path: &Path, identity: (u64, u64)) {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.file_type().is_socket() && (meta.dev(), meta.ino()) == identity {
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(socket = %path.display(), error = %e, "cannot remove socket file");
            }
        }
    }
}

/// Refused connections of one socket kept open at once, each for at most [`LINGER`], so
/// the shim's `Hello` lands before the close and it reads the reason instead of a broken
/// pipe. Beyond this many, refused connections are closed at once.
const MAX_LINGERING: usize = 64;
const LINGER: Duration = Duration::from_secs(1);

/// Tells a connection over its cap why: one `Error` frame written to a socket whose
/// buffer is empty (never waits), then closed once the shim has hung up, within
/// [`LINGER`]. The shim prints the reason and exits 125.
fn refuse_connection(stream: UnixStream, reason: &str, lingering: &Arc<tokio::sync::Semaphore>) {
    let mut frame = Vec::new();
    let msg = clawrden_protocol::Message::Error {
        kind: clawrden_protocol::ErrorKind::Internal,
        message: crate::frames::bounded(reason),
    };
    if msg.encode(&mut frame).is_ok() {
        let _ = stream.try_write(&frame);
    }
    let Ok(slot) = lingering.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let drain = async {
            let mut buf = [0u8; 256];
            loop {
                if stream.readable().await.is_err() {
                    return;
                }
                match stream.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        drop(slot);
    });
}

impl PrisonerListener {
    /// (dev, inode) of the bound socket file.
    pub fn identity(&self) -> (u64, u64) {
        self.identity
    }

    /// Accepts connections until `shutdown` turns true; each runs as its own task, which
    /// holds a clone of `alive` until it ends (so the caller can wait for all of them).
    /// Returns the socket's path and identity for removal.
    pub async fn serve(
        self,
        shared: Arc<SessionShared>,
        mut shutdown: watch::Receiver<bool>,
        alive: mpsc::Sender<()>,
    ) -> (PathBuf, (u64, u64)) {
        let lingering = Arc::new(tokio::sync::Semaphore::new(MAX_LINGERING));
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => break,
                r = self.listener.accept() => r,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::error!(prisoner = %self.prisoner, error = %e, "accept failed");
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            };
            let accepted_at = Instant::now();
            let peer = match stream.peer_cred() {
                Ok(c) => Peer {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid(),
                    // Kernels without SO_PEERGROUPS: the primary group only (fewer
                    // rights, never more).
                    groups: crate::sys::peer_groups(std::os::fd::AsFd::as_fd(&stream))
                        .unwrap_or_else(|_| vec![c.gid()]),
                },
                Err(e) => {
                    tracing::warn!(prisoner = %self.prisoner, error = %e, "cannot read peer credentials; closing connection");
                    continue;
                }
            };
            let permit = match shared.caps.try_connection() {
                Ok(p) => p,
                Err(refusal) => {
                    refuse_connection(stream, &refusal.to_string(), &lingering);
                    shared.caps.refused(shared.control.metrics(), &refusal);
                    continue;
                }
            };
            let shared = shared.clone();
            let guard = alive.clone();
            tokio::spawn(async move {
                session::run(shared, stream, peer, accepted_at).await;
                drop(permit);
                drop(guard);
            });
        }
        (self.path, self.identity)
    }
}
