//! Schema versions and ordered migrations.
//!
//! `schema_version` holds one row per applied migration. Each migration runs in its own
//! transaction together with the row that records it, so a crash mid-migration leaves
//! the database at the previous version. Migrations are append-only: never edit one that
//! has shipped, add the next.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::StoreError;

/// The migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    CREATE TABLE requests (
        id             TEXT PRIMARY KEY,
        prisoner       TEXT NOT NULL,
        uid            INTEGER NOT NULL,
        gid            INTEGER NOT NULL,
        pid            INTEGER NOT NULL,
        argv           TEXT NOT NULL,          -- JSON array, non-UTF-8 tokens as {\"hex\": ..}
        command        TEXT NOT NULL,          -- basename of argv[0], for filtering
        cwd            TEXT NOT NULL,          -- JSON token, same encoding as argv
        env_names      TEXT NOT NULL,          -- JSON array of names (never values)
        rule           TEXT,
        action         TEXT CHECK (action IN ('allow', 'deny', 'ask')),
        reason         TEXT,
        executor       TEXT,
        state          TEXT NOT NULL CHECK (state IN
                         ('pending', 'running', 'done', 'denied', 'abandoned', 'cancelled', 'timed_out')),
        exit_code      INTEGER,
        signal         INTEGER,
        created_at     INTEGER NOT NULL,
        decided_at     INTEGER,
        started_at     INTEGER,
        finished_at    INTEGER,
        approval_id    TEXT,
        parent_request TEXT,
        policy_sha256  TEXT
    ) STRICT;
    CREATE INDEX requests_by_time ON requests (created_at, id);
    CREATE INDEX requests_by_state ON requests (state);
    CREATE INDEX requests_by_prisoner ON requests (prisoner, created_at);

    CREATE TABLE approvals (
        id          TEXT PRIMARY KEY,
        request_id  TEXT NOT NULL REFERENCES requests (id),
        state       TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
        approver    TEXT,
        note        TEXT,
        reason      TEXT,
        created_at  INTEGER NOT NULL,
        decided_at  INTEGER,
        expires_at  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX approvals_by_state ON approvals (state);
    CREATE INDEX approvals_by_request ON approvals (request_id);

    CREATE TABLE grants (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        prisoner     TEXT NOT NULL,
        argv_sha256  TEXT NOT NULL,
        argv         TEXT NOT NULL,
        cwd          TEXT NOT NULL,
        created_by   TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        revoked_at   INTEGER,
        uses         INTEGER NOT NULL DEFAULT 0,
        last_used_at INTEGER
    ) STRICT;
    CREATE INDEX grants_by_call ON grants (prisoner, argv_sha256, cwd);

    CREATE TABLE tokens (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        name         TEXT NOT NULL UNIQUE,
        scope        TEXT NOT NULL CHECK (scope IN ('read', 'approve', 'admin')),
        hash         TEXT NOT NULL UNIQUE,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at   INTEGER
    ) STRICT;

    CREATE TABLE prisoners (
        name       TEXT PRIMARY KEY,
        socket     TEXT NOT NULL,
        container  TEXT,
        state      TEXT NOT NULL CHECK (state IN ('active', 'paused', 'killed', 'gone')),
        updated_at INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    ",
    // 2: requests whose record keeps only a prefix of argv (max_request_bytes_kept):
    // a JSON object with the whole request's sizes and argv SHA-256; NULL when whole.
    "
    ALTER TABLE requests ADD COLUMN truncated TEXT;
    ",
    // 3: parents the warden could not verify are kept apart from verified ones; grants
    // bind the caller's uid and the executor (grants made before have neither, so they
    // answer no call: they ask again once).
    "
    ALTER TABLE requests ADD COLUMN unverified_parent TEXT;
    ALTER TABLE requests ADD COLUMN unverified_parent_reason TEXT;
    ALTER TABLE grants ADD COLUMN uid INTEGER;
    ALTER TABLE grants ADD COLUMN executor TEXT;
    DROP INDEX grants_by_call;
    CREATE INDEX grants_by_call ON grants (prisoner, argv_sha256, cwd, uid, executor);
    ",
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`], or refuses one from a newer build.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    migrate_with(conn, path, MIGRATIONS)
}

fn migrate_with(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         ) STRICT;",
    )
    .map_err(open_err)?;
    let supported = migrations.len() as i64;
    let found = current_version(conn)?;
    if found > supported {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    for (index, sql) in migrations.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        let migration_err = |source| StoreError::Migration {
            path: path.to_path_buf(),
            version,
            source,
        };
        // IMMEDIATE takes the write lock up front, so two wardens starting on the same
        // directory cannot both apply the same migration.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(migration_err)?;
        let already: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_version WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()
            .map_err(migration_err)?;
        if already.is_some() {
            continue;
        }
        tx.execute_batch(sql).map_err(migration_err)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![version, super::Timestamp::now().as_millis()],
        )
        .map_err(migration_err)?;
        tx.commit().map_err(migration_err)?;
    }
    Ok(())
}

/// Highest applied schema version, 0 for a fresh database.
pub(super) fn current_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Connection {
        Connection::open_in_memory().unwrap()
    }

    #[test]
    fn failing_migration_rolls_back_and_keeps_previous_version() {
        let mut conn = memory();
        let path = Path::new("mem.db");
        migrate_with(&mut conn, path, &["CREATE TABLE a (x INTEGER);"]).unwrap();
        let err = migrate_with(
            &mut conn,
            path,
            &[
                "CREATE TABLE a (x INTEGER);",
                "CREATE TABLE b (y INTEGER); THIS IS NOT SQL;",
            ],
        )
        .unwrap_err();
        match err {
            StoreError::Migration { version, .. } => assert_eq!(version, 2),
            other => panic!("expected Migration error, got {other:?}"),
        }
        assert_eq!(current_version(&conn).unwrap(), 1);
        let b_exists: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'b'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(b_exists, 0);
    }

    #[test]
    fn migrations_apply_in_order_and_only_once() {
        let mut conn = memory();
        let path = Path::new("mem.db");
        let steps = [
            "CREATE TABLE a (x INTEGER);",
            "INSERT INTO a VALUES (1);",
            "INSERT INTO a VALUES (2);",
        ];
        migrate_with(&mut conn, path, &steps[..2]).unwrap();
        migrate_with(&mut conn, path, &steps).unwrap();
        migrate_with(&mut conn, path, &steps).unwrap();
        let rows: Vec<i64> = conn
            .prepare("SELECT x FROM a ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, vec![1, 2]);
        assert_eq!(current_version(&conn).unwrap(), 3);
    }
}
