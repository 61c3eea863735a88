//! The web dashboard: static HTML, CSS and JavaScript compiled into the binary and served
//! at `/`, plus the login session endpoints under `/api/v1/session`.
//!
//! Everything the dashboard shows or does goes through the ordinary API routes; a
//! browser authenticates them with the `clawrden_session` cookie set here instead of a
//! bearer header (see [`authenticate_cookie`]). Every dashboard response carries a
//! strict Content-Security-Policy (no inline script or style, nothing from another
//! origin) and refuses to be framed.

pub mod sessions;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::Identity;
use crate::control::{ControlError, ControlPlane};
pub use sessions::{check_origin, request_origin};
use sessions::{sessions, Session, SessionToken};

/// The Content-Security-Policy of every dashboard response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Largest login body accepted.
const MAX_LOGIN_BODY: usize = 4096;

/// How the dashboard is deployed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DashboardConfig {
    /// The warden sits behind a reverse proxy that terminates TLS: believe its
    /// `X-Forwarded-Proto` / `X-Forwarded-Host` (session cookies then get `Secure`).
    /// Leave off when clients reach the warden directly, or they could forge them.
    pub trust_proxy: bool,
}

/// One file of the dashboard.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("assets/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/style.css"),
    },
    Asset {
        path: "/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("assets/icon.svg"),
    },
];

/// Strong ETags of the assets, `"<first 16 bytes of SHA-256 in hex>"`, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", crate::store::hex(&Sha256::digest(a.body)[..16])))
            .collect()
    })
}

/// The dashboard's routes, to merge into the API router before it gets its state:
/// `api_routes.merge(dashboard::routes(config)).with_state(control)`.
pub fn routes(config: DashboardConfig) -> Router<Arc<ControlPlane>> {
    let mut router = Router::new();
    for (index, asset) in ASSETS.iter().enumerate() {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve_asset(index, &headers) }),
        );
    }
    router
        .route(
            "/api/v1/session",
            get(
                |State(control): State<Arc<ControlPlane>>, request: Request| async move {
                    current_session(&control, request).await
                },
            )
            .post(
                move |State(control): State<Arc<ControlPlane>>, request: Request| async move {
                    login(&control, config, request).await
                },
            )
            .delete(|request: Request| async move { logout(request) }),
        )
        .layer(axum::middleware::map_response(security_headers))
}

/// The dashboard as a router of its own, for serving it without the API's router.
pub fn router(control: Arc<ControlPlane>, config: DashboardConfig) -> Router {
    routes(config).with_state(control)
}

/// Adds the CSP, anti-framing and no-sniff headers to a dashboard response.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn serve_asset(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    let common = [
        (header::ETAG, etag.clone()),
        // Revalidate every time: a warden upgrade changes the assets under the same URL.
        (header::CACHE_CONTROL, "no-cache".to_owned()),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, asset.content_type)],
        Body::from(asset.body),
    )
        .into_response()
}

/// An error of the session endpoints or of cookie authentication, in the API's shape
/// `{"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRejection {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 429: how long to wait.
    pub retry_after: Option<Duration>,
}

impl SessionRejection {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        SessionRejection {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn expired() -> Self {
        SessionRejection::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no dashboard session, or it expired; log in again with an API token",
        )
    }
}

impl From<ControlError> for SessionRejection {
    fn from(e: ControlError) -> Self {
        let retry_after = match &e {
            ControlError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        };
        SessionRejection {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: e.code(),
            message: e.to_string(),
            retry_after,
        }
    }
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        no_store(resp)
    }
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn identity_body(identity: &Identity) -> serde_json::Value {
    json!({"name": identity.name, "scope": identity.scope.as_str()})
}

fn client_ip(request: &Request) -> Result<IpAddr, SessionRejection> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .ok_or_else(|| {
            SessionRejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the dashboard is served without peer addresses; serve the router with \
                 into_make_service_with_connect_info::<SocketAddr>()",
            )
        })
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Authenticates a request by its dashboard session cookie. What the API's auth
/// extractor calls when a request has no `Authorization` header:
///
/// - `Ok(None)`: no session cookie; answer the usual 401;
/// - `Ok(Some(identity))`: a live session whose token still verifies (a revoked token
///   ends the session); the caller still checks the route's scope;
/// - `Err(_)`: 401 for an unknown or expired session, 403 for a state-changing request
///   (any method but GET, HEAD, OPTIONS) whose `Origin`/`Referer` is not the origin the
///   session logged in from (CSRF), or whatever `authenticate` refused with (429...).
pub async fn authenticate_cookie(
    control: &ControlPlane,
    headers: &HeaderMap,
    method: &Method,
    client: IpAddr,
) -> Result<Option<Identity>, SessionRejection> {
    let Some(id) = sessions::session_cookie(headers) else {
        return Ok(None);
    };
    let session = sessions()
        .get(&id, Instant::now())
        .ok_or_else(SessionRejection::expired)?;
    if !is_safe(method) && !check_origin(headers, &session.origin) {
        return Err(SessionRejection::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "cross-origin request refused: a {method} with a dashboard session must come \
                 from {} (Origin header); use a bearer token for scripts",
                session.origin
            ),
        ));
    }
    match control.authenticate(session.token.expose(), client).await {
        Ok(identity) => Ok(Some(identity)),
        Err(ControlError::Unauthorized) => {
            sessions().remove(&id);
            Err(SessionRejection::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the token this dashboard session logged in with is no longer valid \
                 (revoked?); log in again",
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// The identity a live session cookie logged in with, as verified at login, without
/// re-verifying the token or checking the origin. For display only: authorization goes
/// through [`authenticate_cookie`].
pub fn identity_from_cookie(headers: &HeaderMap) -> Option<Identity> {
    let id = sessions::session_cookie(headers)?;
    sessions().get(&id, Instant::now()).map(|s| s.identity)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    token: String,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /api/v1/session {"token": "..."}`: verifies the token and starts a session.
async fn login(control: &ControlPlane, config: DashboardConfig, request: Request) -> Response {
    match login_inner(control, config, request).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn login_inner(
    control: &ControlPlane,
    config: DashboardConfig,
    request: Request,
) -> Result<Response, SessionRejection> {
    let client = client_ip(&request)?;
    let headers = request.headers().clone();
    let origin = request_origin(&headers, config.trust_proxy).ok_or_else(|| {
        SessionRejection::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request has no usable Host header",
        )
    })?;
    // Login CSRF: another site must not log a browser in with the other site's token.
    if !check_origin(&headers, &origin) {
        return Err(SessionRejection::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("cross-origin login refused: log in from the dashboard at {origin}/"),
        ));
    }
    if !is_json(&headers) {
        return Err(SessionRejection::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "send {\"token\": \"...\"} with Content-Type: application/json",
        ));
    }
    let bytes = axum::body::to_bytes(request.into_body(), MAX_LOGIN_BODY)
        .await
        .map_err(|_| {
            SessionRejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the login body is larger than {MAX_LOGIN_BODY} bytes"),
            )
        })?;
    let body: LoginBody = serde_json::from_slice(&bytes).map_err(|e| {
        SessionRejection::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the login body must be {{\"token\": \"...\"}}: {e}"),
        )
    })?;
    let token = body.token.trim();
    let identity = control.authenticate(token, client).await?;
    let id = sessions::new_session_id().map_err(|e| {
        SessionRejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot read random bytes from /dev/urandom for a session id: {e}"),
        )
    })?;
    let now = Instant::now();
    let secure = origin.starts_with("https://");
    sessions().insert(
        &id,
        Session {
            identity: identity.clone(),
            token: SessionToken::new(token),
            origin,
            created: now,
            expires: now + sessions::SESSION_TTL,
        },
        now,
    );
    tracing::info!(name = %identity.name, scope = %identity.scope, %client, "dashboard login");
    let resp = (
        [(header::SET_COOKIE, sessions::set_cookie(&id, secure))],
        axum::Json(identity_body(&identity)),
    )
        .into_response();
    Ok(no_store(resp))
}

/// `GET /api/v1/session`: who this browser is logged in as, or 401.
async fn current_session(control: &ControlPlane, request: Request) -> Response {
    let result = async {
        let client = client_ip(&request)?;
        let (parts, _) = request.into_parts();
        authenticate_cookie(control, &parts.headers, &parts.method, client)
            .await?
            .ok_or_else(SessionRejection::expired)
    }
    .await;
    match result {
        Ok(identity) => no_store(axum::Json(identity_body(&identity)).into_response()),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /api/v1/session`: ends this browser's session (from its own origin only).
fn logout(request: Request) -> Response {
    let headers = request.headers();
    let mut secure = false;
    if let Some(id) = sessions::session_cookie(headers) {
        if let Some(session) = sessions().get(&id, Instant::now()) {
            if !check_origin(headers, &session.origin) {
                return SessionRejection::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "cross-origin logout refused: log out from the dashboard at {}/",
                        session.origin
                    ),
                )
                .into_response();
            }
            secure = session.origin.starts_with("https://");
            sessions().remove(&id);
        }
    }
    let resp = (
        [(header::SET_COOKIE, sessions::clear_cookie(secure))],
        axum::Json(json!({"logged_out": true})),
    )
        .into_response();
    no_store(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_strong_etag() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        for t in tags {
            assert_eq!(t.len(), 34);
            assert!(t.starts_with('"') && t.ends_with('"'));
        }
        let mut sorted = tags.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ASSETS.len());
    }

    #[test]
    fn matching_if_none_match_gives_304_without_body() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&etags()[1]).unwrap(),
        );
        let resp = serve_asset(1, &h);
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        let resp = serve_asset(1, &HeaderMap::new());
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
    }

    #[test]
    fn index_loads_no_inline_script_or_style() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(html.contains("<script src=\"/app.js\" defer></script>"));
        assert!(!html.contains("style="));
        assert!(!html.contains("<style"));
        assert!(!html.contains("onclick") && !html.contains("onload"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn app_js_never_assigns_inner_html() {
        let js = std::str::from_utf8(ASSETS[1].body).unwrap();
        assert!(!js.contains("innerHTML"));
        assert!(!js.contains("outerHTML"));
        assert!(!js.contains("insertAdjacentHTML"));
        assert!(!js.contains("eval("));
    }

    #[test]
    fn safe_methods_skip_the_origin_check() {
        assert!(is_safe(&Method::GET));
        assert!(!is_safe(&Method::POST));
        assert!(!is_safe(&Method::DELETE));
    }
}
