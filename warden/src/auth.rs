//! API authentication: bearer tokens with a name and a scope.
//!
//! A token is `clwd_` followed by 32 random bytes in lowercase hex. The store keeps only
//! its SHA-256. A fast hash is right here, unlike for passwords: the token carries 256
//! bits of entropy, so nobody can guess or brute-force a preimage however fast the hash
//! is; a slow KDF would only make every API request slower. Tokens never appear in logs,
//! `Debug` output or error messages.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError, Timestamp, TokenRecord};

/// Every token starts with this, so scanners and people recognise a leaked one.
pub const TOKEN_PREFIX: &str = "clwd_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// File in the state directory that receives the first admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Name of the first admin token.
pub const ADMIN_TOKEN_NAME: &str = "admin";

/// What a token may do; each scope includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Look: status, requests, history, grants, policy, events.
    Read,
    /// Also approve or deny requests and revoke grants.
    Approve,
    /// Also kill, pause, lockdown and manage tokens.
    Admin,
}

impl Scope {
    /// Whether a token with this scope may do something that needs `required`.
    pub fn allows(self, required: Scope) -> bool {
        self >= required
    }

    /// `read`, `approve` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Approve => "approve",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "read" => Ok(Scope::Read),
            "approve" => Ok(Scope::Approve),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?}; expected read, approve or admin"
            )),
        }
    }
}

/// A token in clear text. Shown once to whoever created it, never stored or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// The token text, for handing to the user exactly once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// Who a verified token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub token_id: i64,
    /// Recorded as the approver / actor of whatever this identity does.
    pub name: String,
    pub scope: Scope,
}

/// Authentication and authorization failures. None of them contains a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid API token; send a token created with `clawctl token create` as `Authorization: Bearer <token>`")]
    InvalidToken,
    #[error("API token {name:?} was revoked; ask an admin for a new one")]
    Revoked { name: String },
    #[error("too many failed authentications from {client}; try again in {}s", retry_after.as_secs().max(1))]
    RateLimited {
        client: String,
        retry_after: Duration,
    },
    #[error("token {name:?} has scope {scope}, this needs {required}")]
    Forbidden {
        name: String,
        scope: Scope,
        required: Scope,
    },
    #[error("token name {name:?} is not valid; use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    InvalidTokenName { name: String },
    #[error("cannot read random bytes from /dev/urandom: {0}")]
    Random(std::io::Error),
    #[error("cannot write the admin token to {path}: {source}; check that the state directory is writable by the warden")]
    AdminTokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A fresh random token.
pub fn generate_token() -> Result<TokenSecret, AuthError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    // /dev/urandom never blocks and, once the kernel's pool is seeded (long before a
    // daemon starts), gives the same quality as getrandom(2), without unsafe code here.
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(AuthError::Random)?;
    let mut s = String::with_capacity(TOKEN_PREFIX.len() + 2 * TOKEN_BYTES);
    s.push_str(TOKEN_PREFIX);
    s.push_str(&crate::store::hex(&bytes));
    Ok(TokenSecret(s))
}

/// Lowercase hex SHA-256 of a token: what the store keeps.
pub fn hash_token(token: &str) -> String {
    crate::store::hex(&Sha256::digest(token.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths (never on where
/// they differ), so a timing side channel cannot reveal a matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        // black_box keeps the optimiser from turning the loop into an early exit.
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_PREFIX.len() + 2 * TOKEN_BYTES
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Creates a token named `name` with `scope`. The secret is returned once and only its
/// hash is stored.
pub fn create_token(
    store: &Store,
    name: &str,
    scope: Scope,
    now: Timestamp,
) -> Result<(TokenRecord, TokenSecret), AuthError> {
    if !valid_name(name) {
        return Err(AuthError::InvalidTokenName {
            name: name.to_owned(),
        });
    }
    let secret = generate_token()?;
    let record = store.insert_token(name, scope, &hash_token(secret.expose()), now)?;
    Ok((record, secret))
}

/// Checks a presented bearer token and records its use at `now`.
pub fn verify_token(store: &Store, presented: &str, now: Timestamp) -> Result<Identity, AuthError> {
    if !well_formed(presented) {
        return Err(AuthError::InvalidToken);
    }
    let hash = hash_token(presented);
    // The lookup goes through SQLite's index, whose timing depends on the hash, not on
    // the token; hashes of other tokens are no help in forging one. The comparison below
    // is the actual check, and it does not exit early.
    let Some(record) = store.find_token_by_hash(&hash)? else {
        return Err(AuthError::InvalidToken);
    };
    if !constant_time_eq(record.hash.as_bytes(), hash.as_bytes()) {
        return Err(AuthError::InvalidToken);
    }
    if record.revoked_at.is_some() {
        return Err(AuthError::Revoked { name: record.name });
    }
    store.touch_token(record.id, now)?;
    Ok(Identity {
        token_id: record.id,
        name: record.name,
        scope: record.scope,
    })
}

/// Fails with [`AuthError::Forbidden`] unless `who` may do what needs `required`.
pub fn authorize(who: &Identity, required: Scope) -> Result<(), AuthError> {
    if who.scope.allows(required) {
        Ok(())
    } else {
        Err(AuthError::Forbidden {
            name: who.name.clone(),
            scope: who.scope,
            required,
        })
    }
}

/// Verification and failure accounting in one step: a client over its failure budget
/// gets `RateLimited` for every token that does not verify.
///
/// A valid token is accepted even from a limited client. Tokens carry 256 random bits,
/// so the limiter is not what stops guessing; it bounds the cost and noise of failures.
/// Refusing valid tokens would let any process sharing an address (everything on
/// loopback, the agent included on a local-executor host) lock operators out of the
/// approval queue. `now` stamps the token's use; `mono` drives the limiter.
pub fn authenticate(
    store: &Store,
    limiter: &FailedAuthLimiter,
    client: &str,
    presented: &str,
    now: Timestamp,
    mono: Instant,
) -> Result<Identity, AuthError> {
    let budget = limiter.check(client, mono);
    match verify_token(store, presented, now) {
        Ok(id) => Ok(id),
        Err(e @ (AuthError::InvalidToken | AuthError::Revoked { .. })) => {
            budget?;
            limiter.record_failure(client, mono);
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// On the first start (no token was ever created) creates the admin token and writes
/// it to `<state_dir>/admin.token`, created with `O_EXCL` and mode 0600 so that it is
/// never readable by anyone else, not even for an instant. Returns the file's path when
/// it wrote one, `None` when tokens already exist. Logs the path, never the token.
pub fn ensure_admin_token(
    store: &Store,
    state_dir: &Path,
    now: Timestamp,
) -> Result<Option<PathBuf>, AuthError> {
    if store.token_count()? > 0 {
        return Ok(None);
    }
    let path = state_dir.join(ADMIN_TOKEN_FILE);
    let file_err = |source| AuthError::AdminTokenFile {
        path: path.clone(),
        source,
    };
    // A leftover file from an earlier database holds a token that no longer exists.
    // remove_file does not follow a symlink, it removes the link.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_err(e)),
    }
    let secret = generate_token()?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(file_err)?;
    let written = file
        .write_all(format!("{}\n", secret.expose()).as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(file_err(e));
    }
    if let Err(e) = store.insert_token(
        ADMIN_TOKEN_NAME,
        Scope::Admin,
        &hash_token(secret.expose()),
        now,
    ) {
        let _ = std::fs::remove_file(&path);
        return Err(e.into());
    }
    tracing::info!(path = %path.display(), "created the first admin API token; read it from this file");
    Ok(Some(path))
}

/// Counts failed authentications per client (for example the peer address) in a
/// sliding window; past `max_failures` the client is rejected without its token being
/// looked at until the oldest failure leaves the window. A success does not reset the
/// count: holding one valid token must not buy unlimited guesses at others.
pub struct FailedAuthLimiter {
    max_failures: usize,
    window: Duration,
    max_clients: usize,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl fmt::Debug for FailedAuthLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tracked = self.lock().len();
        f.debug_struct("FailedAuthLimiter")
            .field("max_failures", &self.max_failures)
            .field("window", &self.window)
            .field("tracked_clients", &tracked)
            .finish()
    }
}

impl Default for FailedAuthLimiter {
    /// 5 failures per minute, up to 4096 clients tracked.
    fn default() -> Self {
        FailedAuthLimiter::new(5, Duration::from_secs(60), 4096)
    }
}

impl FailedAuthLimiter {
    /// `max_failures` (at least 1) per `window`, remembering at most `max_clients`
    /// clients (at least 1): when full, the client whose last failure is oldest is
    /// forgotten, so memory stays bounded whatever the peers do.
    pub fn new(max_failures: usize, window: Duration, max_clients: usize) -> Self {
        FailedAuthLimiter {
            max_failures: max_failures.max(1),
            window,
            max_clients: max_clients.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        // The map is only counters; a panic elsewhere cannot leave it inconsistent.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn prune(window: Duration, times: &mut VecDeque<Instant>, now: Instant) {
        while let Some(&t) = times.front() {
            if now.saturating_duration_since(t) >= window {
                times.pop_front();
            } else {
                break;
            }
        }
    }

    /// `Err(RateLimited)` if `client` used up its failures in the window ending `now`.
    pub fn check(&self, client: &str, now: Instant) -> Result<(), AuthError> {
        let mut map = self.lock();
        let Some(times) = map.get_mut(client) else {
            return Ok(());
        };
        Self::prune(self.window, times, now);
        if times.len() < self.max_failures {
            if times.is_empty() {
                map.remove(client);
            }
            return Ok(());
        }
        let oldest = times[0];
        let retry_after = self
            .window
            .saturating_sub(now.saturating_duration_since(oldest));
        Err(AuthError::RateLimited {
            client: client.to_owned(),
            retry_after,
        })
    }

    /// Counts one failed authentication by `client` at `now`.
    pub fn record_failure(&self, client: &str, now: Instant) {
        let mut map = self.lock();
        if !map.contains_key(client) && map.len() >= self.max_clients {
            let window = self.window;
            map.retain(|_, times| {
                Self::prune(window, times, now);
                !times.is_empty()
            });
            if map.len() >= self.max_clients {
                let stalest = map
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied())
                    .map(|(k, _)| k.clone());
                if let Some(k) = stalest {
                    map.remove(&k);
                }
            }
        }
        let times = map.entry(client.to_owned()).or_default();
        Self::prune(self.window, times, now);
        times.push_back(now);
        while times.len() > self.max_failures {
            times.pop_front();
        }
    }

    /// Number of clients currently remembered.
    pub fn tracked_clients(&self) -> usize {
        self.lock().len()
    }
}
