//! The policy in force, swapped atomically on reload. A session takes one `Arc<Policy>`
//! and decides wholly by it, so a reload never splits a call between two versions.
//!
//! Reload triggers: SIGHUP, and inotify events on the policy's *directory* for its file
//! name (`IN_CLOSE_WRITE`, `IN_MOVED_TO`, `IN_CREATE`), so editors' write-and-rename
//! works; the watch runs on a small thread of its own. A bad reload keeps the previous policy; the result is kept for `clawctl status`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use clawrden_policy::Policy;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::watch;

use crate::audit::{Audit, Event};

/// Events arriving within this window after the first are handled by one reload (an
/// editor's create + write + close is one change).
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Result of the last reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadResult {
    /// Loaded; `changed` is false when the file's bytes were the same.
    Loaded { sha256: String, changed: bool },
    /// Did not load; the previous policy stays. `error` is `FILE:LINE:COLUMN: message`.
    Failed { error: String },
}

/// What `clawctl status` shows about the policy.
#[derive(Debug, Clone)]
pub struct PolicyStatus {
    pub path: PathBuf,
    /// SHA-256 of the policy in force.
    pub sha256: String,
    pub last_reload: Option<(SystemTime, String, ReloadResult)>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

/// The current policy and its reload history.
pub struct PolicyStore {
    path: PathBuf,
    current: RwLock<Arc<Policy>>,
    status: Mutex<PolicyStatus>,
    attempts: watch::Sender<u64>,
    audit: Option<Audit>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PolicyStore {
    /// Holds `policy`, loaded from `path`. Reloads are recorded as `control` events in
    /// `audit` when given.
    pub fn new(path: PathBuf, policy: Policy, audit: Option<Audit>) -> PolicyStore {
        let sha256 = policy.sha256().to_owned();
        PolicyStore {
            status: Mutex::new(PolicyStatus {
                path: path.clone(),
                sha256,
                last_reload: None,
                reloads_ok: 0,
                reloads_failed: 0,
            }),
            path,
            current: RwLock::new(Arc::new(policy)),
            attempts: watch::channel(0).0,
            audit,
        }
    }

    /// The policy file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reload history for status displays.
    pub fn status(&self) -> PolicyStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A receiver whose value counts reload attempts (for tests and status pages).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.attempts.subscribe()
    }

    /// Loads the file again; on success swaps it in, on failure keeps the old policy.
    /// `trigger` says why (for logs and audit).
    pub fn reload(&self, trigger: &str) -> ReloadResult {
        let result = match Policy::load(&self.path) {
            Ok(policy) => {
                let sha256 = policy.sha256().to_owned();
                let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
                let changed = cur.sha256() != sha256;
                if changed {
                    *cur = Arc::new(policy);
                }
                ReloadResult::Loaded { sha256, changed }
            }
            Err(e) => ReloadResult::Failed {
                error: e.to_string(),
            },
        };
        match &result {
            ReloadResult::Loaded {
                sha256,
                changed: true,
            } => {
                tracing::info!(policy = %self.path.display(), sha256 = %sha256, trigger, "policy reloaded");
                self.audit_control("policy_reload", |e| {
                    e.with("policy_sha256", sha256.as_str())
                });
            }
            ReloadResult::Loaded { changed: false, .. } => {
                tracing::debug!(policy = %self.path.display(), trigger, "policy unchanged");
            }
            ReloadResult::Failed { error } => {
                tracing::error!(trigger, error = %error, "policy reload failed; keeping the previous policy");
                self.audit_control("policy_reload_failed", |e| e.with("error", error.as_str()));
            }
        }
        {
            let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            match &result {
                ReloadResult::Loaded { sha256, .. } => {
                    s.reloads_ok += 1;
                    s.sha256 = sha256.clone();
                }
                ReloadResult::Failed { .. } => s.reloads_failed += 1,
            }
            s.last_reload = Some((SystemTime::now(), trigger.to_owned(), result.clone()));
        }
        self.attempts.send_modify(|n| *n += 1);
        result
    }

    fn audit_control(&self, what: &str, add: impl FnOnce(Event) -> Event) {
        if let Some(audit) = &self.audit {
            let event = add(Event::control().with("control", what));
            if let Err(e) = audit.record(&event) {
                tracing::error!(error = %e, "cannot record policy reload in the audit log");
            }
        }
    }
}

/// Watches the policy's directory on a small dedicated thread; dropping this stops it.
#[derive(Debug)]
pub struct FileWatcher {
    _stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileWatcher {
    /// Stops the watcher and waits for its thread.
    pub fn stop(mut self) {
        let thread = self.thread.take();
        drop(self);
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// Starts watching the policy's directory; reloads on changes to its file until the
/// returned [`FileWatcher`] is dropped. Fails if inotify cannot be set up (the caller
/// logs it; SIGHUP still works).
pub fn spawn_file_watcher(store: Arc<PolicyStore>) -> io::Result<FileWatcher> {
    let path = store.path().to_owned();
    let name = path
        .file_name()
        .ok_or_else(|| {
            io::Error::other(format!("policy path {} has no file name", path.display()))
        })?
        .to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify
        .add_watch(
            &dir,
            AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE,
        )
        .map_err(|e| io::Error::other(format!("cannot watch {}: {e}", dir.display())))?;
    let (stop_rd, stop_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let span = tracing::Span::current();
    let thread = std::thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || {
            let _entered = span.enter();
            watch_loop(&store, &inotify, &stop_rd, &name, &dir)
        })?;
    Ok(FileWatcher {
        _stop: stop_wr,
        thread: Some(thread),
    })
}

enum Wait {
    Events,
    Stop,
    Idle,
}

fn wait(inotify: &Inotify, stop: &OwnedFd, timeout: PollTimeout) -> io::Result<Wait> {
    let mut fds = [
        PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
        PollFd::new(stop.as_fd(), PollFlags::POLLIN),
    ];
    loop {
        match poll(&mut fds, timeout) {
            Ok(0) => return Ok(Wait::Idle),
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    // Any event on the stop pipe (the write end closed: POLLHUP) means stop.
    if fds[1].revents().is_some_and(|r| !r.is_empty()) {
        return Ok(Wait::Stop);
    }
    Ok(Wait::Events)
}

/// Reads what is queued; (an event named `name` arrived, the watch itself went away).
fn drain(inotify: &Inotify, name: &OsStr) -> io::Result<(bool, bool)> {
    let mut relevant = false;
    let mut gone = false;
    loop {
        match inotify.read_events() {
            Ok(events) => {
                relevant |= events.iter().any(|e| e.name.as_deref() == Some(name));
                gone |= events
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED));
            }
            Err(nix::errno::Errno::EAGAIN) => return Ok((relevant, gone)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn watch_loop(store: &PolicyStore, inotify: &Inotify, stop: &OwnedFd, name: &OsStr, dir: &Path) {
    let debounce = PollTimeout::try_from(DEBOUNCE).unwrap_or(PollTimeout::ZERO);
    loop {
        let result = wait(inotify, stop, PollTimeout::NONE).and_then(|w| match w {
            Wait::Stop => Ok(None),
            Wait::Events | Wait::Idle => drain(inotify, name).map(Some),
        });
        let (mut relevant, gone) = match result {
            Ok(None) => return,
            Ok(Some(seen)) => seen,
            Err(e) => {
                tracing::error!(error = %e, "reading policy directory events failed; file changes are no longer watched (SIGHUP still reloads)");
                return;
            }
        };
        if gone {
            tracing::warn!(dir = %dir.display(), "policy directory is gone; file changes are no longer watched (SIGHUP still reloads)");
            return;
        }
        if !relevant {
            continue;
        }
        // An editor's create + write + close (or rename) arrives as a burst: one reload.
        loop {
            match wait(inotify, stop, debounce) {
                Ok(Wait::Stop) => return,
                Ok(Wait::Idle) => break,
                Ok(Wait::Events) => match drain(inotify, name) {
                    Ok((more, _)) => relevant |= more,
                    Err(_) => break,
                },
                Err(_) => break,
            }
        }
        if relevant {
            store.reload("file change");
        }
    }
}

/// Reloads on every SIGHUP until `shutdown` turns true.
pub fn spawn_sighup_handler(
    store: Arc<PolicyStore>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    store.reload("SIGHUP");
                }
            }
        }
    }))
}
