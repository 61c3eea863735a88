//! The warden's durable state: requests, approvals, grants, API tokens, prisoners and
//! settings, in SQLite (`<state-dir>/state.db`, WAL mode).
//!
//! rusqlite is synchronous. Every method blocks on disk I/O and on the connection's
//! mutex, so async callers run them on `tokio::task::spawn_blocking` (or on one dedicated
//! store thread), never directly on a runtime worker. [`Store`] is `Send + Sync`: the
//! connection sits behind a [`Mutex`], which also serialises the read-check-write
//! sequences (state transitions, approval decisions) that must not interleave.
//!
//! Time is always passed in by the caller ([`Timestamp`]), so tests never sleep and every
//! row records the warden's notion of "now", not SQLite's.
//!
//! Callers never write SQL: each table has typed methods in its own submodule.

mod approvals;
mod argv;
mod grants;
mod prisoners;
mod requests;
mod schema;
mod tokens;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use approvals::{Approval, ApprovalState, ApprovalVerdict, NewApproval};
pub(crate) use argv::hex;
pub use argv::{argv_sha256, decode_argv, decode_token, encode_argv, encode_token};
pub use grants::{Grant, GrantedCall, NewGrant, DEFAULT_GRANT_TTL, MAX_GRANT_TTL};
pub use prisoners::{Prisoner, PrisonerState};
pub use requests::{
    Abandoned, Action, ExitStatus, HistoryPage, HistoryQuery, NewRequest, RequestRecord,
    RequestState, UnverifiedParent, MAX_PAGE_SIZE,
};
pub use schema::SCHEMA_VERSION;
pub use tokens::TokenRecord;

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "state.db";

/// How long a statement waits for a lock held by another connection (for example a
/// backup tool reading the database) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A point in time: milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }

    /// Converts a `SystemTime`; times before 1970 clamp to the epoch.
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// This time plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Timestamp {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }
}

/// Everything that can go wrong in the store. Each message says what failed and on what.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}; check that the parent exists and is writable by the warden")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path} cannot use WAL journaling (SQLite chose {mode:?}); put the state directory on a local file system")]
    NoWal { path: PathBuf, mode: String },
    #[error("database {path} has schema version {found}, newer than the {supported} this warden understands; run a newer clawrden-warden or restore a backup made by this version")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("migrating database {path} to schema version {version} failed: {source}; the database was left at the previous version")]
    Migration {
        path: PathBuf,
        version: i64,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("request {id} already exists")]
    DuplicateRequest { id: String },
    #[error("request {id} cannot go from {from} to {to}")]
    InvalidTransition {
        id: String,
        from: RequestState,
        to: RequestState,
    },
    #[error("a new request must start as pending, running or denied, not {state}")]
    InvalidInitialState { state: RequestState },
    #[error("approval {id} was already decided: it is {state}")]
    AlreadyDecided { id: String, state: ApprovalState },
    #[error("grant lifetime {ttl_secs}s is out of range; it must be more than 0s and at most {max_secs}s (24h)")]
    InvalidGrantTtl { ttl_secs: u64, max_secs: u64 },
    #[error("grant {id} is revoked or expired")]
    GrantNotActive { id: i64 },
    #[error(
        "a token named {name:?} already exists; pick another name or revoke the old token first"
    )]
    TokenNameTaken { name: String },
    #[error(
        "history cursor {cursor:?} is not valid; pass the next_cursor of a previous page unchanged"
    )]
    BadCursor { cursor: String },
}

/// Handle on the SQLite database. Cheap to share behind an `Arc`.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) `<state_dir>/state.db`, switches it to WAL, enables
    /// foreign keys and a busy timeout, and applies pending migrations. Refuses a
    /// database written by a newer schema.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // journal_mode answers with the mode in force; anything but "wal" means the
        // file system could not do WAL and we would silently lose crash safety.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal { path, mode });
        }
        // NORMAL is durable across process crashes (kill -9) in WAL mode; only a power
        // loss can drop the last transactions, never corrupt the database.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        schema::migrate(&mut conn, &path)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version the database is at (always [`SCHEMA_VERSION`] after `open`).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema::current_version(&self.lock())
    }

    /// Reads a setting (for example `lockdown`).
    pub fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .lock()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Writes a setting, replacing any previous value.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// Removes a setting; returns whether it existed.
    pub fn delete_setting(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .execute("DELETE FROM settings WHERE key = ?1", [key])?
            > 0)
    }

    /// The connection. A panic while holding the lock cannot leave SQLite half-written
    /// (every multi-statement change runs in a transaction that rolls back on drop), so a
    /// poisoned mutex is safe to keep using.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}
