//! The `approvals` table: a person's yes or no on an `ask` request.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use super::requests::text_enum;
use super::{Store, StoreError, Timestamp};

text_enum! {
    /// Life cycle of an approval; everything but `pending` is final.
    ApprovalState {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        /// Nobody decided before `expires_at`.
        Expired = "expired",
        /// The request went away (shim disconnected, warden restarted).
        Cancelled = "cancelled",
    }
}

/// A person's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalVerdict {
    Approve,
    Deny,
}

/// An approval to open for a pending request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewApproval {
    pub id: String,
    pub request_id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A stored approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    pub id: String,
    pub request_id: String,
    pub state: ApprovalState,
    /// Token name of whoever decided.
    pub approver: Option<String>,
    /// The approver's note (approve) or reason (deny, expire, cancel).
    pub note: Option<String>,
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub decided_at: Option<Timestamp>,
    pub expires_at: Timestamp,
}

const COLUMNS: &str =
    "id, request_id, state, approver, note, reason, created_at, decided_at, expires_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Approval> {
    Ok(Approval {
        id: r.get(0)?,
        request_id: r.get(1)?,
        state: r.get(2)?,
        approver: r.get(3)?,
        note: r.get(4)?,
        reason: r.get(5)?,
        created_at: Timestamp(r.get(6)?),
        decided_at: r.get::<_, Option<i64>>(7)?.map(Timestamp),
        expires_at: Timestamp(r.get(8)?),
    })
}

impl Store {
    /// Opens a pending approval for an existing request and links the request to it.
    pub fn create_approval(&self, a: &NewApproval) -> Result<Approval, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let linked = tx.execute(
            "UPDATE requests SET approval_id = ?2 WHERE id = ?1",
            params![a.request_id, a.id],
        )?;
        if linked == 0 {
            return Err(StoreError::NotFound {
                what: "request",
                id: a.request_id.clone(),
            });
        }
        tx.execute(
            "INSERT INTO approvals (id, request_id, state, created_at, expires_at)
             VALUES (?1, ?2, 'pending', ?3, ?4)",
            params![a.id, a.request_id, a.created_at.0, a.expires_at.0],
        )?;
        let approval = tx.query_row(
            &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
            [&a.id],
            from_row,
        )?;
        tx.commit()?;
        Ok(approval)
    }

    /// One approval by id.
    pub fn get_approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?)
    }

    /// Approvals, newest first, optionally only those in `state`.
    pub fn list_approvals(
        &self,
        state: Option<ApprovalState>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        let limit = limit.clamp(1, super::MAX_PAGE_SIZE) as i64;
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE ?1 IS NULL OR state = ?1
             ORDER BY created_at DESC, id DESC LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![state, limit], from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records a person's decision. Only a `pending` approval can be decided: a second
    /// decision gets [`StoreError::AlreadyDecided`] (the API answers 409). A decision
    /// arriving at or after `expires_at` expires the approval instead and also gets
    /// `AlreadyDecided` with state `expired`: a late "yes" never runs anything.
    pub fn decide_approval(
        &self,
        id: &str,
        verdict: ApprovalVerdict,
        approver: &str,
        note: Option<&str>,
        at: Timestamp,
    ) -> Result<Approval, StoreError> {
        let (state, note, reason) = match verdict {
            ApprovalVerdict::Approve => (ApprovalState::Approved, note, None),
            ApprovalVerdict::Deny => (ApprovalState::Denied, None, note),
        };
        self.close_approval(id, state, Some(approver), note, reason, at)
    }

    /// Marks a pending approval `expired` (nobody decided in time).
    pub fn expire_approval(&self, id: &str, at: Timestamp) -> Result<Approval, StoreError> {
        self.close_approval(id, ApprovalState::Expired, None, None, None, at)
    }

    /// Marks a pending approval `cancelled` with why (for example, the shim went away).
    pub fn cancel_approval(
        &self,
        id: &str,
        reason: &str,
        at: Timestamp,
    ) -> Result<Approval, StoreError> {
        self.close_approval(id, ApprovalState::Cancelled, None, None, Some(reason), at)
    }

    fn close_approval(
        &self,
        id: &str,
        mut to: ApprovalState,
        approver: Option<&str>,
        note: Option<&str>,
        reason: Option<&str>,
        at: Timestamp,
    ) -> Result<Approval, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound {
                what: "approval",
                id: id.to_owned(),
            })?;
        if current.state != ApprovalState::Pending {
            return Err(StoreError::AlreadyDecided {
                id: id.to_owned(),
                state: current.state,
            });
        }
        let late = matches!(to, ApprovalState::Approved | ApprovalState::Denied)
            && at >= current.expires_at;
        let (approver, note, reason) = if late {
            to = ApprovalState::Expired;
            (None, None, None)
        } else {
            (approver, note, reason)
        };
        tx.execute(
            "UPDATE approvals SET state = ?2, approver = ?3, note = ?4, reason = ?5,
                 decided_at = ?6
             WHERE id = ?1",
            params![id, to, approver, note, reason, at.0],
        )?;
        let updated = tx.query_row(
            &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
            [id],
            from_row,
        )?;
        tx.commit()?;
        if late {
            return Err(StoreError::AlreadyDecided {
                id: id.to_owned(),
                state: ApprovalState::Expired,
            });
        }
        Ok(updated)
    }
}
