//! Extractors that authenticate the caller and check its scope before a handler runs.
//!
//! The bearer token goes to [`ControlPlane::authenticate`] together with the peer's
//! address, which is the key of the failed-authentication rate limit; the peer address
//! comes from [`ConnectInfo`], so the server must be started with
//! `into_make_service_with_connect_info::<SocketAddr>()` (as [`super::serve`] does).
//! A request without an `Authorization` header may instead carry the dashboard's
//! session cookie ([`crate::dashboard::authenticate_cookie`]). The token itself is never
//! logged, echoed or kept after the call.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};

use super::error::ApiError;
use crate::auth::{AuthError, Identity, Scope};
use crate::control::ControlPlane;

/// A scope a route needs, as a type so that a handler's signature states it.
pub trait RequiredScope {
    /// The least scope that may call the route.
    const SCOPE: Scope;
}

/// Routes that only look.
#[derive(Debug)]
pub struct Read;
/// Routes that decide requests or revoke grants.
#[derive(Debug)]
pub struct Approve;
/// Routes that control prisoners, lockdown and tokens.
#[derive(Debug)]
pub struct Admin;

impl RequiredScope for Read {
    const SCOPE: Scope = Scope::Read;
}
impl RequiredScope for Approve {
    const SCOPE: Scope = Scope::Approve;
}
impl RequiredScope for Admin {
    const SCOPE: Scope = Scope::Admin;
}

/// The authenticated caller of a route that needs scope `S`.
#[derive(Debug)]
pub struct Caller<S> {
    pub identity: Identity,
    _scope: PhantomData<S>,
}

/// Filled with the caller's token name once authenticated, so the access log can
/// say who called without ever touching the token.
#[derive(Clone, Debug, Default)]
pub struct CallerName(pub Arc<OnceLock<String>>);

/// The peer's address, from the connection.
pub fn client_ip(parts: &Parts) -> Result<IpAddr, ApiError> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .ok_or_else(|| {
            ApiError::internal(
                "the API server does not know peer addresses; it must be served with \
                 into_make_service_with_connect_info::<SocketAddr>()",
            )
        })
}

fn missing_token() -> ApiError {
    ApiError::unauthorized(
        "this needs an API token; send it as `Authorization: Bearer <token>` \
         (create one with `clawctl token create`)",
    )
}

/// The token of an `Authorization: Bearer <token>` header. A missing header or another
/// scheme is a 401 that does not count as a failed guess: no token was offered.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing_token)?;
    let text = value.to_str().map_err(|_| {
        ApiError::unauthorized("the Authorization header is not ASCII; send `Bearer <token>`")
    })?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthorized(
            "the Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`",
        ));
    }
    Ok(token.trim())
}

impl<S> FromRequestParts<Arc<ControlPlane>> for Caller<S>
where
    S: RequiredScope + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        control: &Arc<ControlPlane>,
    ) -> Result<Self, ApiError> {
        let client = client_ip(parts)?;
        let identity = if parts.headers.contains_key(header::AUTHORIZATION) {
            control
                .authenticate(bearer(&parts.headers)?, client)
                .await?
        } else {
            // A browser logged in to the dashboard sends its session cookie instead; the
            // dashboard checks the cookie, the origin of state changes, and re-verifies
            // the token behind the session.
            match crate::dashboard::authenticate_cookie(
                control,
                &parts.headers,
                &parts.method,
                client,
            )
            .await
            {
                Ok(Some(identity)) => identity,
                Ok(None) => return Err(missing_token()),
                Err(r) => {
                    return Err(ApiError {
                        status: r.status,
                        code: r.code,
                        message: r.message,
                        retry_after: r.retry_after,
                    })
                }
            }
        };
        if let Some(CallerName(slot)) = parts.extensions.get::<CallerName>() {
            let _ = slot.set(identity.name.clone());
        }
        if !identity.scope.allows(S::SCOPE) {
            let e = AuthError::Forbidden {
                name: identity.name.clone(),
                scope: identity.scope,
                required: S::SCOPE,
            };
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                e.to_string(),
            ));
        }
        Ok(Caller {
            identity,
            _scope: PhantomData,
        })
    }
}

/// Access to `/metrics`: open unless a metrics token is configured, then only with
/// `Authorization: Bearer <metrics token>` (the control plane compares in constant time).
#[derive(Debug)]
pub struct MetricsAccess;

impl FromRequestParts<Arc<ControlPlane>> for MetricsAccess {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        control: &Arc<ControlPlane>,
    ) -> Result<Self, ApiError> {
        if !control.metrics_token_required() {
            return Ok(MetricsAccess);
        }
        let presented = bearer(&parts.headers)?;
        control.metrics_auth(Some(presented)).map_err(|_| {
            ApiError::unauthorized(
                "invalid metrics token; send the token of `metrics_token_file` as \
                 `Authorization: Bearer <token>`",
            )
        })?;
        Ok(MetricsAccess)
    }
}
