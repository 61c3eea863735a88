//! The `tokens` table: API bearer tokens, by name and scope. Only the SHA-256 of a token
//! is stored (see `crate::auth`); the token itself never reaches the database.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, OptionalExtension, Row, ToSql};

use super::{Store, StoreError, Timestamp};
use crate::auth::Scope;

impl ToSql for Scope {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Scope {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        v.as_str()?
            .parse()
            .map_err(|e: String| FromSqlError::Other(e.into()))
    }
}

/// A stored token (its hash, never the token).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    /// Lowercase hex SHA-256 of the token.
    pub hash: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

// The hash is not the token, but it is what an attacker with the database would try to
// match against, so debug output leaves it out like the token itself.
impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

const COLUMNS: &str = "id, name, scope, hash, created_at, last_used_at, revoked_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        scope: r.get(2)?,
        hash: r.get(3)?,
        created_at: Timestamp(r.get(4)?),
        last_used_at: r.get::<_, Option<i64>>(5)?.map(Timestamp),
        revoked_at: r.get::<_, Option<i64>>(6)?.map(Timestamp),
    })
}

impl Store {
    /// Stores a token hash under a unique name.
    pub fn insert_token(
        &self,
        name: &str,
        scope: Scope,
        hash: &str,
        now: Timestamp,
    ) -> Result<TokenRecord, StoreError> {
        let conn = self.lock();
        let inserted = conn.execute(
            "INSERT INTO tokens (name, scope, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, scope, hash, now.0],
        );
        match inserted {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation
                    && msg.contains("tokens.name") =>
            {
                return Err(StoreError::TokenNameTaken {
                    name: name.to_owned(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        let id = conn.last_insert_rowid();
        Ok(conn.query_row(
            &format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1"),
            [id],
            from_row,
        )?)
    }

    /// The token whose hash is `hash`, revoked or not.
    pub fn find_token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM tokens WHERE hash = ?1"),
                [hash],
                from_row,
            )
            .optional()?)
    }

    /// The token named `name`, revoked or not.
    pub fn get_token(&self, name: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM tokens WHERE name = ?1"),
                [name],
                from_row,
            )
            .optional()?)
    }

    /// All tokens, revoked included, by name.
    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM tokens ORDER BY name"))?;
        let rows = stmt
            .query_map([], from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Number of token rows, revoked included (0 only before the first admin token).
    pub fn token_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .lock()
            .query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Records that a token authenticated a request at `at`.
    pub fn touch_token(&self, id: i64, at: Timestamp) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
            params![id, at.0],
        )?;
        Ok(())
    }

    /// Revokes the token named `name`. Returns `false` if it was already revoked.
    pub fn revoke_token(&self, name: &str, at: Timestamp) -> Result<bool, StoreError> {
        let conn = self.lock();
        let changed = conn.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, at.0],
        )?;
        if changed == 1 {
            return Ok(true);
        }
        let exists: Option<i64> = conn
            .query_row("SELECT id FROM tokens WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        match exists {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound {
                what: "token",
                id: name.to_owned(),
            }),
        }
    }
}
