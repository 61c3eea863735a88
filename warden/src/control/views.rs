//! What the control plane answers: plain serializable views whose JSON field names are
//! the HTTP API's (notes/api.md). Times are RFC 3339 UTC with milliseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::time::{rfc3339, rfc3339_opt};
use crate::store::{
    encode_token, Approval, ExitStatus, Grant, Prisoner, RequestRecord, Timestamp, TokenRecord,
};

/// Lockdown state: while on, every new call is denied with reason `lockdown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockdownView {
    pub on: bool,
    /// Token name of whoever last switched it.
    pub by: Option<String>,
    pub reason: Option<String>,
    /// When it was last switched (RFC 3339).
    pub since: Option<String>,
}

/// The approval of an `ask` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalView {
    /// pending | approved | denied | expired | cancelled
    pub state: String,
    pub approver: Option<String>,
    pub note: Option<String>,
    pub reason: Option<String>,
    pub expires_at: String,
}

/// One intercepted call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestView {
    pub id: String,
    pub prisoner: String,
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// Each token a string, or `{"hex": ".."}` when not UTF-8.
    pub argv: Vec<Value>,
    pub cwd: Value,
    pub rule: Option<String>,
    pub action: Option<String>,
    pub reason: Option<String>,
    pub executor: Option<String>,
    /// pending | running | done | denied | abandoned | cancelled | timed_out
    pub state: String,
    pub created_at: String,
    pub decided_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The request this call was made from, when the warden verified it.
    pub parent_request: Option<String>,
    /// A parent the call claimed that the warden could not verify, and why.
    pub unverified_parent: Option<UnverifiedParentView>,
    pub policy_sha256: Option<String>,
    pub approval: Option<ApprovalView>,
    /// How long the approval waited (until decided, or until now while pending).
    pub waited_ms: Option<u64>,
    /// Present when `argv` (or cwd) is only a prefix of the request: the whole request's
    /// sizes and argv SHA-256 (see README.md, "Audit").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Value>,
}

impl RequestView {
    pub(crate) fn new(r: &RequestRecord, approval: Option<&Approval>, now: Timestamp) -> Self {
        let (exit_code, signal) = match r.exit {
            Some(ExitStatus::Code(c)) => (Some(c), None),
            Some(ExitStatus::Signal(s)) => (None, Some(s)),
            None => (None, None),
        };
        let waited_ms = approval.map(|a| {
            let end = a.decided_at.unwrap_or(now);
            u64::try_from(end.0.saturating_sub(a.created_at.0)).unwrap_or(0)
        });
        RequestView {
            id: r.id.clone(),
            prisoner: r.prisoner.clone(),
            uid: r.uid,
            gid: r.gid,
            pid: r.pid,
            argv: r.argv.iter().map(|t| encode_token(t)).collect(),
            cwd: encode_token(&r.cwd),
            rule: r.rule.clone(),
            action: r.action.map(|a| a.as_str().to_owned()),
            reason: r.reason.clone(),
            executor: r.executor.clone(),
            state: r.state.as_str().to_owned(),
            created_at: rfc3339(r.created_at),
            decided_at: rfc3339_opt(r.decided_at),
            started_at: rfc3339_opt(r.started_at),
            finished_at: rfc3339_opt(r.finished_at),
            exit_code,
            signal,
            parent_request: r.parent_request.clone(),
            unverified_parent: r.unverified_parent.as_ref().map(|u| UnverifiedParentView {
                id: u.claimed.clone(),
                reason: u.reason.clone(),
            }),
            policy_sha256: r.policy_sha256.clone(),
            approval: approval.map(|a| ApprovalView {
                state: a.state.as_str().to_owned(),
                approver: a.approver.clone(),
                note: a.note.clone(),
                reason: a.reason.clone(),
                expires_at: rfc3339(a.expires_at),
            }),
            waited_ms,
            truncated: r
                .truncated
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
        }
    }
}

/// A parent request a call claimed that the warden could not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnverifiedParentView {
    /// The claimed request id, as sent (cut to 64 characters).
    pub id: String,
    /// Why it is not recorded as the parent.
    pub reason: String,
}

/// One page of history, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPage {
    pub requests: Vec<RequestView>,
    /// Pass back as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A remembered approval for one exact (prisoner, uid, executor, argv, cwd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantView {
    pub id: i64,
    pub prisoner: String,
    /// The caller uid it answers; null for a grant made before grants bound the uid
    /// (it answers no call).
    pub uid: Option<u32>,
    /// The executor it answers; null for a grant made before grants bound the executor.
    pub executor: Option<String>,
    pub argv: Vec<Value>,
    pub cwd: Value,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub uses: u64,
    pub last_used_at: Option<String>,
}

impl From<&Grant> for GrantView {
    fn from(g: &Grant) -> Self {
        GrantView {
            id: g.id,
            prisoner: g.prisoner.clone(),
            uid: g.uid,
            executor: g.executor.clone(),
            argv: g.argv.iter().map(|t| encode_token(t)).collect(),
            cwd: encode_token(&g.cwd),
            created_by: g.created_by.clone(),
            created_at: rfc3339(g.created_at),
            expires_at: rfc3339(g.expires_at),
            revoked_at: rfc3339_opt(g.revoked_at),
            uses: g.uses,
            last_used_at: rfc3339_opt(g.last_used_at),
        }
    }
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> Self {
        TokenView {
            id: t.id,
            name: t.name.clone(),
            scope: t.scope.as_str().to_owned(),
            created_at: rfc3339(t.created_at),
            last_used_at: rfc3339_opt(t.last_used_at),
            revoked_at: rfc3339_opt(t.revoked_at),
        }
    }
}

/// A freshly created token: the only time its secret is shown.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct CreatedTokenView {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub token: String,
}

impl std::fmt::Debug for CreatedTokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedTokenView")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A prisoner and what it has in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrisonerView {
    pub name: String,
    pub socket: String,
    pub container: Option<String>,
    /// active | paused | killed | gone
    pub state: String,
    /// Commands running now.
    pub running: usize,
    /// Requests waiting for approval.
    pub pending: usize,
}

impl PrisonerView {
    pub(crate) fn new(p: &Prisoner, running: usize, pending: usize) -> Self {
        PrisonerView {
            name: p.name.clone(),
            socket: p.socket.clone(),
            container: p.container.clone(),
            state: p.state.as_str().to_owned(),
            running,
            pending,
        }
    }
}

/// Result of the last policy reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadView {
    pub ok: bool,
    pub at: String,
    pub error: Option<String>,
}

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyView {
    pub path: String,
    pub sha256: String,
    /// The policy text in force (null if the file no longer holds it).
    pub source: Option<String>,
    pub loaded_at: String,
    pub last_reload: Option<ReloadView>,
}

/// Policy part of the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusPolicy {
    pub path: String,
    pub sha256: String,
    pub last_reload: Option<ReloadView>,
}

/// Approval queue part of the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueView {
    pub pending: usize,
}

/// Audit writer health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditView {
    pub failures: u64,
    pub last_error: Option<String>,
}

/// `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusView {
    pub version: String,
    pub started_at: String,
    pub lockdown: LockdownView,
    pub policy: StatusPolicy,
    pub queue: QueueView,
    pub running: usize,
    pub prisoners: Vec<PrisonerView>,
    pub audit: AuditView,
}

/// `GET /readyz`. `failing` is left out when everything is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessView {
    pub ready: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<String>,
    /// policy, store, audit, sockets, docker -> "ok" | "not used" | what is wrong.
    pub checks: BTreeMap<String, String>,
}

/// One rule's check in an explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckView {
    pub index: usize,
    pub rule: String,
    pub matched: bool,
    pub why: String,
    /// For a matching rule with `flags`: the flag and the argument that gave it.
    pub flag: Option<FlagView>,
}

/// Which argument gave which of a rule's `flags`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlagView {
    /// The flag as the policy lists it (`-R`, `--recursive`).
    pub flag: String,
    /// Its argument's index in argv (argv[1] is 1).
    pub argument: usize,
    /// The argument as given (a string, or `{"hex": ..}` when not UTF-8).
    pub token: serde_json::Value,
    /// `exact`, `combined`, `with_value`, `abbreviated` or `abbreviated_with_value`.
    pub form: &'static str,
}

impl From<&clawrden_policy::FlagMatch> for FlagView {
    fn from(m: &clawrden_policy::FlagMatch) -> Self {
        FlagView {
            flag: m.flag.clone(),
            argument: m.argument,
            token: encode_token(&m.token),
            form: m.form.as_str(),
        }
    }
}

/// `POST /api/v1/policy/explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainView {
    pub action: String,
    pub rule: Option<String>,
    pub reason: String,
    pub executor: String,
    /// Execution time limit, e.g. `30s`.
    pub timeout: String,
    pub checks: Vec<CheckView>,
    /// Why the call was refused before any rule (`argv[0]` is not a command name).
    pub refused: Option<String>,
    /// The human-readable explanation.
    pub text: String,
}

/// A call to explain (`POST /api/v1/policy/explain`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainInput {
    pub argv: Vec<String>,
    #[serde(default = "root")]
    pub cwd: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default = "default_prisoner")]
    pub prisoner: String,
}

fn root() -> String {
    "/".to_owned()
}

fn default_prisoner() -> String {
    crate::config::DEFAULT_PRISONER.to_owned()
}

/// Filters of `GET /api/v1/history` and its export, as the client sent them (strings are
/// parsed and checked by the control plane: a bad value is `Invalid`, 422).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    pub prisoner: Option<String>,
    pub command: Option<String>,
    /// allow | deny | ask
    pub action: Option<String>,
    /// RFC 3339, or a duration meaning "this long ago" (`1h`).
    pub since: Option<String>,
    pub until: Option<String>,
    /// Substring of the argv.
    pub q: Option<String>,
    /// 1..=500, default 50.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Export body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

impl ExportFormat {
    /// The response Content-Type.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Jsonl => "application/x-ndjson",
        }
    }

    /// File extension for Content-Disposition.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "jsonl",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(ExportFormat::Csv),
            "jsonl" => Ok(ExportFormat::Jsonl),
            other => Err(format!("unknown export format {other:?}; use csv or jsonl")),
        }
    }
}
