//! The one error type of the control plane; the HTTP layer maps it to a status and a
//! `{"error":{"code","message"}}` body without looking inside.

use std::fmt;
use std::time::Duration;

use crate::auth::{AuthError, Scope};
use crate::store::StoreError;

/// Why a control-plane query or action failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// 400: the request itself is malformed.
    BadRequest(String),
    /// 401: no valid token.
    Unauthorized,
    /// 403: the token's scope is too small.
    Forbidden { need: Scope },
    /// 404.
    NotFound { what: &'static str, id: String },
    /// 409: the state does not allow it (`already_decided`, `no_runtime`, ...).
    Conflict { code: &'static str, message: String },
    /// 422: well-formed but invalid values.
    Invalid(String),
    /// 429: too many failed authentications.
    RateLimited { retry_after: Duration },
    /// 503: a dependency (store, runtime) is down.
    Unavailable(String),
    /// 500.
    Internal(String),
}

impl ControlError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ControlError::BadRequest(_) => 400,
            ControlError::Unauthorized => 401,
            ControlError::Forbidden { .. } => 403,
            ControlError::NotFound { .. } => 404,
            ControlError::Conflict { .. } => 409,
            ControlError::Invalid(_) => 422,
            ControlError::RateLimited { .. } => 429,
            ControlError::Unavailable(_) => 503,
            ControlError::Internal(_) => 500,
        }
    }

    /// The machine-readable code of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::BadRequest(_) => "bad_request",
            ControlError::Unauthorized => "unauthorized",
            ControlError::Forbidden { .. } => "forbidden",
            ControlError::NotFound { .. } => "not_found",
            ControlError::Conflict { code, .. } => code,
            ControlError::Invalid(_) => "invalid",
            ControlError::RateLimited { .. } => "rate_limited",
            ControlError::Unavailable(_) => "unavailable",
            ControlError::Internal(_) => "internal",
        }
    }

    /// The human-readable message (same as `Display`).
    pub fn message(&self) -> String {
        self.to_string()
    }

    pub(crate) fn store(e: StoreError) -> ControlError {
        match e {
            StoreError::NotFound { what, id } => ControlError::NotFound { what, id },
            StoreError::BadCursor { .. } | StoreError::InvalidGrantTtl { .. } => {
                ControlError::Invalid(e.to_string())
            }
            StoreError::AlreadyDecided { .. } => ControlError::Conflict {
                code: "already_decided",
                message: e.to_string(),
            },
            StoreError::TokenNameTaken { .. } => ControlError::Conflict {
                code: "name_taken",
                message: e.to_string(),
            },
            other => ControlError::Unavailable(format!("state store: {other}")),
        }
    }

    pub(crate) fn auth(e: AuthError) -> ControlError {
        match e {
            AuthError::InvalidToken | AuthError::Revoked { .. } => ControlError::Unauthorized,
            AuthError::RateLimited { retry_after, .. } => ControlError::RateLimited { retry_after },
            AuthError::Forbidden { required, .. } => ControlError::Forbidden { need: required },
            AuthError::InvalidTokenName { .. } => ControlError::Invalid(e.to_string()),
            AuthError::Store(s) => ControlError::store(s),
            other => ControlError::Internal(other.to_string()),
        }
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::BadRequest(m) | ControlError::Invalid(m) => f.write_str(m),
            ControlError::Unauthorized => f.write_str(
                "missing or invalid API token; send `Authorization: Bearer <token>` with a token from `clawctl token create` (the first admin token is in <state-dir>/admin.token)",
            ),
            ControlError::Forbidden { need } => {
                write!(f, "this needs a token with scope {need} or higher")
            }
            ControlError::NotFound { what, id } => write!(f, "no {what} {id}"),
            ControlError::Conflict { message, .. } => f.write_str(message),
            ControlError::RateLimited { retry_after } => write!(
                f,
                "too many failed authentications from this address; try again in {}s",
                retry_after.as_secs().max(1)
            ),
            ControlError::Unavailable(m) => write!(f, "unavailable: {m}"),
            ControlError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for ControlError {}
