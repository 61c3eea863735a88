//! The `grants` table: "remember this approval" for exactly one call shape — same
//! prisoner, same caller uid, same executor, same argv byte for byte, same cwd — for a
//! limited time.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use super::argv::{argv_sha256, decode_argv, decode_token, encode_argv, encode_token};
use super::{Store, StoreError, Timestamp};

/// Lifetime of a grant when the approver does not say.
pub const DEFAULT_GRANT_TTL: Duration = Duration::from_secs(3600);
/// Longest lifetime a grant may have.
pub const MAX_GRANT_TTL: Duration = Duration::from_secs(24 * 3600);

/// A grant to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewGrant {
    pub prisoner: String,
    /// The caller's uid (from `SO_PEERCRED`) of the approved request.
    pub uid: u32,
    /// The executor the approved request ran in.
    pub executor: String,
    pub argv: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    /// Token name of the approver who asked to remember.
    pub created_by: String,
    /// More than zero, at most [`MAX_GRANT_TTL`].
    pub ttl: Duration,
}

/// The call a grant must match, all of it.
#[derive(Clone, Copy, Debug)]
pub struct GrantedCall<'a> {
    pub prisoner: &'a str,
    /// The caller's uid from `SO_PEERCRED`.
    pub uid: u32,
    /// The executor the policy picked for the call.
    pub executor: &'a str,
    pub argv: &'a [Vec<u8>],
    pub cwd: &'a [u8],
}

/// A stored grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub id: i64,
    pub prisoner: String,
    /// `None` for grants made before grants bound the uid: they answer no call.
    pub uid: Option<u32>,
    /// `None` for grants made before grants bound the executor: they answer no call.
    pub executor: Option<String>,
    pub argv_sha256: String,
    pub argv: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub uses: u64,
    pub last_used_at: Option<Timestamp>,
}

impl Grant {
    /// Not revoked and not yet expired at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

const COLUMNS: &str = "id, prisoner, argv_sha256, argv, cwd, created_by, created_at, \
     expires_at, revoked_at, uses, last_used_at, uid, executor";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Grant> {
    let bad = |col, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            col,
            rusqlite::types::Type::Text,
            format!("grant {what} is not valid token JSON").into(),
        )
    };
    let argv: String = r.get(3)?;
    let cwd: String = r.get(4)?;
    Ok(Grant {
        id: r.get(0)?,
        prisoner: r.get(1)?,
        argv_sha256: r.get(2)?,
        argv: decode_argv(&argv).ok_or_else(|| bad(3, "argv"))?,
        cwd: serde_json::from_str(&cwd)
            .ok()
            .and_then(|v| decode_token(&v))
            .ok_or_else(|| bad(4, "cwd"))?,
        created_by: r.get(5)?,
        created_at: Timestamp(r.get(6)?),
        expires_at: Timestamp(r.get(7)?),
        revoked_at: r.get::<_, Option<i64>>(8)?.map(Timestamp),
        uses: u64::try_from(r.get::<_, i64>(9)?).unwrap_or(0),
        last_used_at: r.get::<_, Option<i64>>(10)?.map(Timestamp),
        uid: r.get(11)?,
        executor: r.get(12)?,
    })
}

impl Store {
    /// Creates a grant valid from `now` for `g.ttl`; refuses a zero or over-24h ttl.
    pub fn create_grant(&self, g: &NewGrant, now: Timestamp) -> Result<Grant, StoreError> {
        if g.ttl.is_zero() || g.ttl > MAX_GRANT_TTL {
            return Err(StoreError::InvalidGrantTtl {
                ttl_secs: g.ttl.as_secs(),
                max_secs: MAX_GRANT_TTL.as_secs(),
            });
        }
        let conn = self.lock();
        conn.execute(
            "INSERT INTO grants (prisoner, argv_sha256, argv, cwd, created_by, created_at,
                                 expires_at, uid, executor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                g.prisoner,
                argv_sha256(&g.argv),
                encode_argv(&g.argv),
                encode_token(&g.cwd).to_string(),
                g.created_by,
                now.0,
                now.plus(g.ttl).0,
                g.uid,
                g.executor,
            ],
        )?;
        let id = conn.last_insert_rowid();
        Ok(conn.query_row(
            &format!("SELECT {COLUMNS} FROM grants WHERE id = ?1"),
            [id],
            from_row,
        )?)
    }

    /// The active grant for exactly this call (prisoner, uid, executor, argv and cwd) at
    /// `now`, if any (the one expiring last). Nothing looser matches: not a prefix, not
    /// another cwd, not another uid or executor.
    pub fn find_grant(
        &self,
        call: &GrantedCall<'_>,
        now: Timestamp,
    ) -> Result<Option<Grant>, StoreError> {
        let GrantedCall {
            prisoner,
            uid,
            executor,
            argv,
            cwd,
        } = *call;
        // The hash narrows the search through the index; comparing the argv text too
        // keeps the match exact even in the face of a hash collision.
        Ok(self
            .lock()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM grants
                     WHERE prisoner = ?1 AND argv_sha256 = ?2 AND argv = ?3 AND cwd = ?4
                       AND uid = ?6 AND executor = ?7
                       AND revoked_at IS NULL AND expires_at > ?5
                     ORDER BY expires_at DESC, id DESC LIMIT 1"
                ),
                params![
                    prisoner,
                    argv_sha256(argv),
                    encode_argv(argv),
                    encode_token(cwd).to_string(),
                    now.0,
                    uid,
                    executor
                ],
                from_row,
            )
            .optional()?)
    }

    /// Counts one use of a grant at `at` and returns the updated grant. Fails with
    /// [`StoreError::GrantNotActive`] if it was revoked or expired meanwhile, so a
    /// revocation racing a call wins.
    pub fn record_grant_use(&self, id: i64, at: Timestamp) -> Result<Grant, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE grants SET uses = uses + 1, last_used_at = ?2
             WHERE id = ?1 AND revoked_at IS NULL AND expires_at > ?2",
            params![id, at.0],
        )?;
        let grant = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM grants WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound {
                what: "grant",
                id: id.to_string(),
            })?;
        if changed == 0 {
            return Err(StoreError::GrantNotActive { id });
        }
        tx.commit()?;
        Ok(grant)
    }

    /// Revokes a grant at `at`. Returns `false` if it was already revoked (the first
    /// revocation time is kept).
    pub fn revoke_grant(&self, id: i64, at: Timestamp) -> Result<bool, StoreError> {
        let conn = self.lock();
        let changed = conn.execute(
            "UPDATE grants SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at.0],
        )?;
        if changed == 1 {
            return Ok(true);
        }
        let exists: Option<i64> = conn
            .query_row("SELECT id FROM grants WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        match exists {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound {
                what: "grant",
                id: id.to_string(),
            }),
        }
    }

    /// One grant by id, active or not.
    pub fn get_grant(&self, id: i64) -> Result<Option<Grant>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM grants WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?)
    }

    /// Grants, newest first: only those active at `now`, or all with `include_inactive`.
    pub fn list_grants(
        &self,
        now: Timestamp,
        include_inactive: bool,
    ) -> Result<Vec<Grant>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM grants
             WHERE ?2 OR (revoked_at IS NULL AND expires_at > ?1)
             ORDER BY created_at DESC, id DESC"
        ))?;
        let rows = stmt
            .query_map(params![now.0, include_inactive], from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
