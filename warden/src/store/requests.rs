//! The `requests` table: one row per intercepted call, its decision and its outcome.

use rusqlite::types::Value;
use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use super::argv::{decode_argv, decode_token, encode_argv, encode_token, hex};
use super::{Store, StoreError, Timestamp};

/// Largest page [`Store::list_requests`] and [`Store::history`] return.
pub const MAX_PAGE_SIZE: usize = 1000;

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lowercase name stored in the database and shown in the API.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", stringify!($name), " {:?}; expected one of: {}"),
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl ::rusqlite::ToSql for $name {
            fn to_sql(&self) -> ::rusqlite::Result<::rusqlite::types::ToSqlOutput<'_>> {
                Ok(::rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }

        impl ::rusqlite::types::FromSql for $name {
            fn column_result(v: ::rusqlite::types::ValueRef<'_>) -> ::rusqlite::types::FromSqlResult<Self> {
                v.as_str()?.parse().map_err(|e: String| ::rusqlite::types::FromSqlError::Other(e.into()))
            }
        }
    };
}
pub(super) use text_enum;

text_enum! {
    /// What the policy decided for a call.
    Action { Allow = "allow", Deny = "deny", Ask = "ask" }
}

text_enum! {
    /// Life cycle of a request. `done`, `denied`, `abandoned`, `cancelled` and
    /// `timed_out` are terminal.
    RequestState {
        /// Waiting for a person's approval.
        Pending = "pending",
        /// The executor is running it.
        Running = "running",
        /// It ran and exited (or was killed by a signal it did not get from us).
        Done = "done",
        /// The policy or a person said no, or the approval timed out.
        Denied = "denied",
        /// The warden restarted while it was pending or running; it never runs again.
        Abandoned = "abandoned",
        /// The shim disconnected, or lockdown / kill / shutdown stopped it.
        Cancelled = "cancelled",
        /// It hit its execution time limit and its process tree was killed.
        TimedOut = "timed_out",
    }
}

impl RequestState {
    /// A terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RequestState::Pending | RequestState::Running)
    }

    /// Whether a request in `self` may move to `to`.
    pub fn can_become(self, to: RequestState) -> bool {
        use RequestState::*;
        match self {
            Pending => matches!(to, Running | Denied | Cancelled | Abandoned),
            Running => matches!(to, Done | Cancelled | TimedOut | Abandoned),
            Done | Denied | Abandoned | Cancelled | TimedOut => false,
        }
    }
}

/// How a command that ran ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// A call to record, as decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRequest {
    pub id: String,
    pub prisoner: String,
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub argv: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    /// Names of the caller's environment variables; values are never stored.
    pub env_names: Vec<Vec<u8>>,
    /// `None`: the policy's default decided.
    pub rule: Option<String>,
    pub action: Option<Action>,
    pub reason: Option<String>,
    pub executor: Option<String>,
    /// `pending`, `running` or `denied`.
    pub state: RequestState,
    pub created_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    /// The parent request, only when the warden verified the link (see `lineage`).
    pub parent_request: Option<String>,
    /// A parent the call claimed but the warden could not verify.
    pub unverified_parent: Option<UnverifiedParent>,
    pub policy_sha256: Option<String>,
}

/// A parent request a call claimed, and why the claim was not confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnverifiedParent {
    /// The id the call named (cut to 64 characters).
    pub claimed: String,
    /// Why the warden did not record it as the parent.
    pub reason: String,
}

/// A stored request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub id: String,
    pub prisoner: String,
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub argv: Vec<Vec<u8>>,
    /// Basename of `argv[0]` (lossy UTF-8): the invoked tool's name.
    pub command: String,
    pub cwd: Vec<u8>,
    pub env_names: Vec<Vec<u8>>,
    pub rule: Option<String>,
    pub action: Option<Action>,
    pub reason: Option<String>,
    pub executor: Option<String>,
    pub state: RequestState,
    pub exit: Option<ExitStatus>,
    pub created_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub approval_id: Option<String>,
    /// The parent request, only when the warden verified the link.
    pub parent_request: Option<String>,
    /// A parent the call claimed but the warden could not verify.
    pub unverified_parent: Option<UnverifiedParent>,
    pub policy_sha256: Option<String>,
    /// JSON object describing the whole request when the record keeps only a prefix.
    pub truncated: Option<String>,
}

/// What [`Store::mark_abandoned_on_startup`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abandoned {
    /// Requests moved from `pending`/`running` to `abandoned`.
    pub requests: usize,
    /// Approvals moved from `pending` to `cancelled`.
    pub approvals: usize,
}

/// Filters for [`Store::history`]. Every filter that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    pub prisoner: Option<String>,
    /// The invoked tool's name (basename of `argv[0]`), exact.
    pub command: Option<String>,
    pub action: Option<Action>,
    /// Inclusive lower bound on `created_at`.
    pub since: Option<Timestamp>,
    /// Exclusive upper bound on `created_at`.
    pub until: Option<Timestamp>,
    /// Substring of the JSON-encoded argv; ASCII letters match case-insensitively.
    pub text: Option<String>,
    /// Page size, clamped to `1..=MAX_PAGE_SIZE`.
    pub limit: usize,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of history, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    pub requests: Vec<RequestRecord>,
    /// Pass back as [`HistoryQuery::cursor`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

const COLUMNS: &str = "id, prisoner, uid, gid, pid, argv, command, cwd, env_names, rule, action, \
     reason, executor, state, exit_code, signal, created_at, decided_at, started_at, \
     finished_at, approval_id, parent_request, policy_sha256, truncated, unverified_parent, \
     unverified_parent_reason";

fn conversion_error(column: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("{what} is not valid token JSON").into(),
    )
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<RequestRecord> {
    let argv: String = r.get(5)?;
    let cwd: String = r.get(7)?;
    let env_names: String = r.get(8)?;
    let exit_code: Option<i32> = r.get(14)?;
    let signal: Option<i32> = r.get(15)?;
    Ok(RequestRecord {
        id: r.get(0)?,
        prisoner: r.get(1)?,
        uid: r.get(2)?,
        gid: r.get(3)?,
        pid: r.get(4)?,
        argv: decode_argv(&argv).ok_or_else(|| conversion_error(5, "argv"))?,
        command: r.get(6)?,
        cwd: serde_json::from_str(&cwd)
            .ok()
            .and_then(|v| decode_token(&v))
            .ok_or_else(|| conversion_error(7, "cwd"))?,
        env_names: decode_argv(&env_names).ok_or_else(|| conversion_error(8, "env_names"))?,
        rule: r.get(9)?,
        action: r.get(10)?,
        reason: r.get(11)?,
        executor: r.get(12)?,
        state: r.get(13)?,
        exit: match (exit_code, signal) {
            (Some(c), _) => Some(ExitStatus::Code(c)),
            (None, Some(s)) => Some(ExitStatus::Signal(s)),
            (None, None) => None,
        },
        created_at: Timestamp(r.get(16)?),
        decided_at: ts(r.get(17)?),
        started_at: ts(r.get(18)?),
        finished_at: ts(r.get(19)?),
        approval_id: r.get(20)?,
        parent_request: r.get(21)?,
        policy_sha256: r.get(22)?,
        truncated: r.get(23)?,
        unverified_parent: match (
            r.get::<_, Option<String>>(24)?,
            r.get::<_, Option<String>>(25)?,
        ) {
            (Some(claimed), reason) => Some(UnverifiedParent {
                claimed,
                reason: reason.unwrap_or_default(),
            }),
            (None, _) => None,
        },
    })
}

/// Basename of `argv[0]`, the label the API and metrics use for "command".
pub(crate) fn command_name(argv: &[Vec<u8>]) -> String {
    let first = argv.first().map(Vec::as_slice).unwrap_or(b"");
    let base = match first.iter().rposition(|&b| b == b'/') {
        Some(i) => &first[i + 1..],
        None => first,
    };
    String::from_utf8_lossy(base).into_owned()
}

fn encode_cursor(created_at: Timestamp, id: &str) -> String {
    hex(format!("{}:{id}", created_at.0).as_bytes())
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), StoreError> {
    let bad = || StoreError::BadCursor {
        cursor: cursor.to_owned(),
    };
    let bytes = match decode_token(&serde_json::json!({ "hex": cursor })) {
        Some(b) => b,
        None => return Err(bad()),
    };
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (at, id) = text.split_once(':').ok_or_else(bad)?;
    let at: i64 = at.parse().map_err(|_| bad())?;
    Ok((at, id.to_owned()))
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE_SIZE)
}

impl Store {
    /// Marks a request's record as keeping only a prefix of the request; `whole` is a
    /// JSON object with the whole request's sizes.
    pub fn set_truncated(&self, id: &str, whole: &str) -> Result<(), StoreError> {
        let n = self.lock().execute(
            "UPDATE requests SET truncated = ?2 WHERE id = ?1",
            params![id, whole],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "request",
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Records a new request. Its state must be `pending`, `running` or `denied`.
    pub fn insert_request(&self, r: &NewRequest) -> Result<(), StoreError> {
        if !matches!(
            r.state,
            RequestState::Pending | RequestState::Running | RequestState::Denied
        ) {
            return Err(StoreError::InvalidInitialState { state: r.state });
        }
        let (started_at, finished_at) = match r.state {
            RequestState::Running => (Some(r.created_at.0), None),
            RequestState::Denied => (None, Some(r.decided_at.unwrap_or(r.created_at).0)),
            _ => (None, None),
        };
        let result = self.lock().execute(
            &format!(
                "INSERT INTO requests ({COLUMNS}) VALUES
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, NULL, NULL,
                  ?15, ?16, ?17, ?18, NULL, ?19, ?20, NULL, ?21, ?22)"
            ),
            params![
                r.id,
                r.prisoner,
                r.uid,
                r.gid,
                r.pid,
                encode_argv(&r.argv),
                command_name(&r.argv),
                encode_token(&r.cwd).to_string(),
                encode_argv(&r.env_names),
                r.rule,
                r.action,
                r.reason,
                r.executor,
                r.state,
                r.created_at.0,
                r.decided_at.map(|t| t.0),
                started_at,
                finished_at,
                r.parent_request,
                r.policy_sha256,
                r.unverified_parent.as_ref().map(|u| u.claimed.as_str()),
                r.unverified_parent.as_ref().map(|u| u.reason.as_str()),
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation
                    && e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                Err(StoreError::DuplicateRequest { id: r.id.clone() })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One request by id.
    pub fn get_request(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM requests WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?)
    }

    /// Moves a request to `to` at time `at`, enforcing the life cycle: a terminal state
    /// never changes, so an `abandoned` request can never start running.
    /// `running` sets `started_at`; a terminal state sets `finished_at` (and `denied`
    /// also `decided_at`).
    pub fn set_request_state(
        &self,
        id: &str,
        to: RequestState,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.transition(id, to, at, None)
    }

    /// Marks a running request `done` with how it ended.
    pub fn finish_request(
        &self,
        id: &str,
        status: ExitStatus,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.transition(id, RequestState::Done, at, Some(status))
    }

    fn transition(
        &self,
        id: &str,
        to: RequestState,
        at: Timestamp,
        status: Option<ExitStatus>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let from: RequestState = tx
            .query_row("SELECT state FROM requests WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| StoreError::NotFound {
                what: "request",
                id: id.to_owned(),
            })?;
        if !from.can_become(to) {
            return Err(StoreError::InvalidTransition {
                id: id.to_owned(),
                from,
                to,
            });
        }
        let (exit_code, signal) = match status {
            Some(ExitStatus::Code(c)) => (Some(c), None),
            Some(ExitStatus::Signal(s)) => (None, Some(s)),
            None => (None, None),
        };
        let sql = match to {
            RequestState::Running => {
                "UPDATE requests SET state = ?2, started_at = ?3 WHERE id = ?1"
            }
            RequestState::Denied => {
                "UPDATE requests SET state = ?2, decided_at = ?3, finished_at = ?3 WHERE id = ?1"
            }
            _ => {
                "UPDATE requests SET state = ?2, finished_at = ?3, exit_code = ?4, signal = ?5
                 WHERE id = ?1"
            }
        };
        if matches!(to, RequestState::Running | RequestState::Denied) {
            tx.execute(sql, params![id, to, at.0])?;
        } else {
            tx.execute(sql, params![id, to, at.0, exit_code, signal])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The requests in state `running`, as (id, prisoner, executor): at start-up, before
    /// [`Store::mark_abandoned_on_startup`], these are what a previous warden left running.
    pub fn running_requests(&self) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, prisoner, executor FROM requests WHERE state = 'running' ORDER BY created_at, id",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Run once at startup, before accepting calls: every request that was `pending` or
    /// `running` when the previous warden died becomes `abandoned` (its shim already
    /// gave up), and every `pending` approval becomes `cancelled` (nobody waits on it).
    pub fn mark_abandoned_on_startup(&self, now: Timestamp) -> Result<Abandoned, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let requests = tx.execute(
            "UPDATE requests SET state = 'abandoned', finished_at = ?1
             WHERE state IN ('pending', 'running')",
            [now.0],
        )?;
        let approvals = tx.execute(
            "UPDATE approvals SET state = 'cancelled', decided_at = ?1,
                 reason = 'warden restarted while the approval was pending'
             WHERE state = 'pending'",
            [now.0],
        )?;
        tx.commit()?;
        Ok(Abandoned {
            requests,
            approvals,
        })
    }

    /// Requests, newest first, optionally only those in `state`; at most `limit`
    /// (clamped to `1..=MAX_PAGE_SIZE`).
    pub fn list_requests(
        &self,
        state: Option<RequestState>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let conn = self.lock();
        let limit = clamp_limit(limit) as i64;
        let rows = match state {
            Some(s) => conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM requests WHERE state = ?1
                     ORDER BY created_at DESC, id DESC LIMIT ?2"
                ))?
                .query_map(params![s, limit], from_row)?
                .collect::<Result<Vec<_>, _>>()?,
            None => conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM requests ORDER BY created_at DESC, id DESC LIMIT ?1"
                ))?
                .query_map([limit], from_row)?
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(rows)
    }

    /// Searches past requests, newest first, one page at a time. Paging is by keyset
    /// on `(created_at, id)`, so rows inserted meanwhile never shift or repeat a page.
    pub fn history(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let mut clauses: Vec<&str> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(p) = &q.prisoner {
            clauses.push("prisoner = ?");
            args.push(Value::Text(p.clone()));
        }
        if let Some(c) = &q.command {
            clauses.push("command = ?");
            args.push(Value::Text(c.clone()));
        }
        if let Some(a) = q.action {
            clauses.push("action = ?");
            args.push(Value::Text(a.as_str().to_owned()));
        }
        if let Some(t) = q.since {
            clauses.push("created_at >= ?");
            args.push(Value::Integer(t.0));
        }
        if let Some(t) = q.until {
            clauses.push("created_at < ?");
            args.push(Value::Integer(t.0));
        }
        if let Some(text) = &q.text {
            // Search the stored JSON, so escape the needle the way the JSON does.
            let json = serde_json::Value::String(text.clone()).to_string();
            let inner = &json[1..json.len() - 1];
            clauses.push("argv LIKE ? ESCAPE '\\'");
            args.push(Value::Text(format!("%{}%", like_escape(inner))));
        }
        if let Some(cursor) = &q.cursor {
            let (at, id) = decode_cursor(cursor)?;
            clauses.push("(created_at < ? OR (created_at = ? AND id < ?))");
            args.push(Value::Integer(at));
            args.push(Value::Integer(at));
            args.push(Value::Text(id));
        }
        let limit = clamp_limit(q.limit);
        args.push(Value::Integer(limit as i64 + 1));
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM requests {filter} ORDER BY created_at DESC, id DESC LIMIT ?"
        );
        let conn = self.lock();
        let mut requests = conn
            .prepare(&sql)?
            .query_map(rusqlite::params_from_iter(args), from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if requests.len() > limit {
            requests.truncate(limit);
            requests
                .last()
                .map(|last| encode_cursor(last.created_at, &last.id))
        } else {
            None
        };
        Ok(HistoryPage {
            requests,
            next_cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_name_is_basename_of_argv0() {
        assert_eq!(
            command_name(&[b"/usr/bin/git".to_vec(), b"x".to_vec()]),
            "git"
        );
        assert_eq!(command_name(&[b"curl".to_vec()]), "curl");
        assert_eq!(command_name(&[]), "");
        assert_eq!(command_name(&[vec![b'/', 0xff]]), "\u{fffd}");
    }

    #[test]
    fn cursor_round_trips_ids_with_colons() {
        let c = encode_cursor(Timestamp(42), "req:7");
        assert_eq!(decode_cursor(&c).unwrap(), (42, "req:7".to_owned()));
        assert!(matches!(
            decode_cursor("zz"),
            Err(StoreError::BadCursor { .. })
        ));
    }

    #[test]
    fn only_pending_and_running_can_change() {
        for &from in RequestState::ALL {
            for &to in RequestState::ALL {
                if from.is_terminal() {
                    assert!(!from.can_become(to), "{from} -> {to}");
                }
            }
        }
        assert!(RequestState::Pending.can_become(RequestState::Running));
        assert!(!RequestState::Pending.can_become(RequestState::Done));
        assert!(!RequestState::Running.can_become(RequestState::Pending));
    }
}
