//! The warden's HTTP API (axum on hyper, HTTP/1.1), a thin layer over [`ControlPlane`].
//!
//! Every handler authenticates the caller (`Authorization: Bearer <token>`), checks the
//! route's scope, parses its input strictly into typed arguments, calls one
//! [`ControlPlane`] method and serializes the returned view; errors of every kind share
//! one JSON shape ([`error::ApiError`]). Nothing here decides anything.
//!
//! The failed-authentication rate limit is keyed by the peer's IP address, taken from
//! axum's `ConnectInfo<SocketAddr>`: serve [`router`] with
//! `into_make_service_with_connect_info::<SocketAddr>()`, as [`serve`] does, or every
//! authenticated route answers 500.
//!
//! Every response carries `X-Content-Type-Options: nosniff` and `Cache-Control:
//! no-store`. The access log has method, route, status, latency and the caller's token
//! NAME; never the Authorization header.

mod auth;
mod body;
pub mod error;
mod export;
mod routes;
pub mod sse;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::auth::CallerName;
use self::error::{truncate, ApiError};
use crate::control::ControlPlane;
use crate::dashboard::DashboardConfig;

pub use self::routes::OPENAPI;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

type State = Arc<ControlPlane>;

/// Every route: method, path (axum syntax), handler. [`router`] is built from this table
/// and [`route_table`] lists it, so the served set and the documented set can be
/// compared exactly.
fn routes() -> Vec<(Method, &'static str, MethodRouter<State>)> {
    use routes as r;
    vec![
        (Method::GET, "/healthz", get(r::healthz)),
        (Method::GET, "/readyz", get(r::readyz)),
        (Method::GET, "/metrics", get(r::metrics)),
        (Method::GET, "/api/v1/openapi.json", get(r::openapi)),
        (Method::GET, "/api/v1/status", get(r::status)),
        (Method::GET, "/api/v1/requests", get(r::list_requests)),
        (Method::GET, "/api/v1/requests/{id}", get(r::get_request)),
        (
            Method::POST,
            "/api/v1/requests/{id}/approve",
            post(r::approve),
        ),
        (Method::POST, "/api/v1/requests/{id}/deny", post(r::deny)),
        (Method::GET, "/api/v1/history", get(r::history)),
        (
            Method::GET,
            "/api/v1/history/export",
            get(r::history_export),
        ),
        (Method::GET, "/api/v1/prisoners", get(r::prisoners)),
        (
            Method::POST,
            "/api/v1/prisoners/{name}/kill",
            post(r::kill_prisoner),
        ),
        (
            Method::POST,
            "/api/v1/prisoners/{name}/pause",
            post(r::pause_prisoner),
        ),
        (
            Method::POST,
            "/api/v1/prisoners/{name}/resume",
            post(r::resume_prisoner),
        ),
        (Method::GET, "/api/v1/grants", get(r::grants)),
        (
            Method::DELETE,
            "/api/v1/grants/{id}",
            delete(r::revoke_grant),
        ),
        (Method::GET, "/api/v1/policy", get(r::policy)),
        (Method::POST, "/api/v1/policy/explain", post(r::explain)),
        (Method::GET, "/api/v1/events", get(r::events)),
        (Method::POST, "/api/v1/lockdown", post(r::lockdown)),
        (Method::GET, "/api/v1/tokens", get(r::list_tokens)),
        (Method::POST, "/api/v1/tokens", post(r::create_token)),
        (
            Method::DELETE,
            "/api/v1/tokens/{id}",
            delete(r::revoke_token),
        ),
    ]
}

/// Routes of the dashboard's login session that the API router also serves (they
/// live in [`crate::dashboard`]; listed here so that the OpenAPI document can be checked
/// against everything served under `/api/v1`).
const DASHBOARD_API_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/session"),
    ("POST", "/api/v1/session"),
    ("DELETE", "/api/v1/session"),
];

/// `(method, path)` of every API route the router serves, paths in OpenAPI syntax
/// (`/api/v1/requests/{id}`). The dashboard's static files (`/`, `/app.js`, ...) are
/// not API routes and are not listed.
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    let mut table: Vec<_> = routes()
        .into_iter()
        .map(|(m, p, _)| (method_str(&m), p))
        .collect();
    table.extend_from_slice(DASHBOARD_API_ROUTES);
    table
}

fn method_str(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// The API's router with the dashboard (default [`DashboardConfig`]). Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` (see the module docs), or use
/// [`serve`].
pub fn router(control: Arc<ControlPlane>) -> Router {
    router_with(control, DashboardConfig::default())
}

/// Like [`router`] with an explicit dashboard configuration.
pub fn router_with(control: Arc<ControlPlane>, dashboard: DashboardConfig) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        router = router.route(path, handler);
    }
    router
        .merge(crate::dashboard::routes(dashboard))
        .fallback(no_route)
        // After every route is added: it applies to the routes that exist now.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(access_log))
        .with_state(control)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then stops accepting,
/// ends open event streams and waits for in-flight requests to finish (bound that wait
/// from outside if needed).
pub async fn serve(
    listener: TcpListener,
    control: Arc<ControlPlane>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, control, DashboardConfig::default(), shutdown).await
}

/// Like [`serve`] with an explicit dashboard configuration.
pub async fn serve_with(
    listener: TcpListener,
    control: Arc<ControlPlane>,
    dashboard: DashboardConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = router_with(control, dashboard).layer(Extension(sse::Shutdown(stop_rx)));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        // SSE responses never complete by themselves; tell them to end so that the
        // graceful shutdown does not wait for them forever.
        let _ = stop_tx.send(true);
    })
    .await
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::no_route(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

/// Access log line and the security headers, for every response.
async fn access_log(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(m) => m.as_str().to_owned(),
        None => truncate(req.uri().path(), 200).to_owned(),
    };
    let caller = CallerName::default();
    req.extensions_mut().insert(caller.clone());
    let mut resp = next.run(req).await.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The dashboard's static files set their own (ETag revalidation); all else: no-store.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    tracing::info!(
        method = %method,
        path = %route,
        status = resp.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        token = caller.0.get().map_or("-", String::as_str),
        "api request"
    );
    resp
}
