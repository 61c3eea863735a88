//! The handlers: each authenticates (by its extractor's type), parses its input into the
//! typed arguments of ONE [`ControlPlane`] method, calls it and serializes the view.
//! Decisions, validation of state and every side effect live in the control plane.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Admin, Approve, Caller, MetricsAccess, Read};
use super::body::{parse_duration_field, parse_limit, JsonBody, PathParam, QueryParams};
use super::error::{ApiError, ApiResult};
use super::{export, sse};
use crate::auth::Scope;
use crate::control::{ControlPlane, ExplainInput, ExportFormat, HistoryParams, PrisonerAction};

type Control = State<Arc<ControlPlane>>;

/// The OpenAPI 3.1 document of every route.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Most rows one `GET /api/v1/requests` returns: the live queue is listed whole (an
/// operator facing a thousand waiting calls needs to see them all, not a first page).
const MAX_LIST: u32 = 5000;
/// Largest history page (`limit`).
const MAX_HISTORY_PAGE: u32 = 500;
/// Rows `GET /api/v1/requests` returns without `limit`.
const DEFAULT_LIST: u32 = 100;

/// `GET /healthz`: the process is alive and serving.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when every check passes, else 503 with the failing ones.
pub async fn readyz(State(control): Control) -> Response {
    let view = control.readiness().await;
    let status = if view.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(view)).into_response()
}

/// `GET /metrics`: Prometheus text exposition format 0.0.4.
pub async fn metrics(State(control): Control, _: MetricsAccess) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        control.metrics_text(),
    )
        .into_response()
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

/// `GET /api/v1/status`.
pub async fn status(State(control): Control, _: Caller<Read>) -> Response {
    Json(control.status().await).into_response()
}

/// Query of `GET /api/v1/requests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
}

/// `GET /api/v1/requests?state=&limit=`.
pub async fn list_requests(
    State(control): Control,
    _: Caller<Read>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Response> {
    let limit = parse_limit("limit", q.limit.as_deref(), 1, MAX_LIST)?.unwrap_or(DEFAULT_LIST);
    let requests = control.list_requests(q.state.as_deref(), limit).await?;
    Ok(Json(json!({ "requests": requests })).into_response())
}

/// `GET /api/v1/requests/{id}`.
pub async fn get_request(
    State(control): Control,
    _: Caller<Read>,
    PathParam(id): PathParam,
) -> ApiResult<Response> {
    Ok(Json(control.get_request(&id).await?).into_response())
}

/// History filters as sent; numbers stay text until checked so a bad one is a 422.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    prisoner: Option<String>,
    command: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    /// Export only: `csv` or `jsonl`.
    format: Option<String>,
}

impl HistoryQuery {
    fn into_params(self) -> ApiResult<(HistoryParams, Option<String>)> {
        let limit = parse_limit("limit", self.limit.as_deref(), 1, MAX_HISTORY_PAGE)?;
        let params = HistoryParams {
            prisoner: self.prisoner,
            command: self.command,
            action: self.action,
            since: self.since,
            until: self.until,
            q: self.q,
            limit,
            cursor: self.cursor,
        };
        Ok((params, self.format))
    }
}

/// `GET /api/v1/history?...`.
pub async fn history(
    State(control): Control,
    _: Caller<Read>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> ApiResult<Response> {
    let (params, format) = q.into_params()?;
    if format.is_some() {
        return Err(ApiError::bad_request(
            "format is a parameter of /api/v1/history/export, not of /api/v1/history",
        ));
    }
    Ok(Json(control.history(params).await?).into_response())
}

/// `GET /api/v1/history/export?format=csv|jsonl&...`: a streamed attachment.
pub async fn history_export(
    State(control): Control,
    _: Caller<Read>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> ApiResult<Response> {
    let (params, format) = q.into_params()?;
    let format: ExportFormat = format
        .as_deref()
        .ok_or_else(|| ApiError::invalid("format is required: format=csv or format=jsonl"))?
        .parse()
        .map_err(ApiError::invalid)?;
    export::response(control, params, format).await
}

/// `GET /api/v1/prisoners`.
pub async fn prisoners(State(control): Control, _: Caller<Read>) -> Response {
    let prisoners = control.prisoners().await;
    Json(json!({ "prisoners": prisoners })).into_response()
}

/// `GET /api/v1/grants`.
pub async fn grants(State(control): Control, _: Caller<Read>) -> ApiResult<Response> {
    let grants = control.grants().await?;
    Ok(Json(json!({ "grants": grants })).into_response())
}

/// `GET /api/v1/policy`.
pub async fn policy(State(control): Control, _: Caller<Read>) -> Response {
    Json(control.policy_view()).into_response()
}

/// Query of `GET /api/v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    last_event_id: Option<String>,
}

/// `GET /api/v1/events`: Server-Sent Events.
pub async fn events(
    State(control): Control,
    _: Caller<Read>,
    headers: HeaderMap,
    stop: Option<Extension<sse::Shutdown>>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> ApiResult<Response> {
    let after = sse::resume_id(headers.get("last-event-id"), q.last_event_id.as_deref())
        .map_err(ApiError::bad_request)?;
    Ok(sse::response(
        control.subscribe(after),
        stop.map(|Extension(s)| s),
    ))
}

/// `remember`: a TTL like `"1h"`, or `true` for the default TTL, or `false` for none.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Remember {
    Flag(bool),
    For(String),
}

/// Body of `POST /api/v1/requests/{id}/approve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    remember: Option<Remember>,
    note: Option<String>,
}

/// `POST /api/v1/requests/{id}/approve`.
pub async fn approve(
    State(control): Control,
    caller: Caller<Approve>,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<ApproveBody>,
) -> ApiResult<Response> {
    let remember = match body.remember {
        None | Some(Remember::Flag(false)) => None,
        Some(Remember::Flag(true)) => Some(crate::store::DEFAULT_GRANT_TTL),
        Some(Remember::For(text)) => parse_duration_field("remember", Some(&text))?,
    };
    let view = control
        .approve(&id, &caller.identity, remember, body.note)
        .await?;
    Ok(Json(view).into_response())
}

/// Body of `POST /api/v1/requests/{id}/deny`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyBody {
    reason: Option<String>,
}

/// `POST /api/v1/requests/{id}/deny`.
pub async fn deny(
    State(control): Control,
    caller: Caller<Approve>,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<DenyBody>,
) -> ApiResult<Response> {
    let view = control.deny(&id, &caller.identity, body.reason).await?;
    Ok(Json(view).into_response())
}

/// `DELETE /api/v1/grants/{id}`.
pub async fn revoke_grant(
    State(control): Control,
    caller: Caller<Approve>,
    PathParam(id): PathParam,
) -> ApiResult<Response> {
    Ok(Json(control.revoke_grant(&id, &caller.identity).await?).into_response())
}

/// `POST /api/v1/policy/explain`.
pub async fn explain(
    State(control): Control,
    _: Caller<Approve>,
    JsonBody(input): JsonBody<ExplainInput>,
) -> ApiResult<Response> {
    Ok(Json(control.explain(input)?).into_response())
}

/// Body of `POST /api/v1/prisoners/{name}/kill` and `/resume`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrisonerBody {
    reason: Option<String>,
}

/// Body of `POST /api/v1/prisoners/{name}/pause`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    reason: Option<String>,
    /// Resume by itself after this long (`10m`).
    duration: Option<String>,
}

async fn prisoner_action(
    control: &ControlPlane,
    caller: &Caller<Admin>,
    name: &str,
    action: PrisonerAction,
    reason: Option<String>,
) -> ApiResult<Response> {
    let view = control
        .prisoner_action(name, action, &caller.identity, reason)
        .await?;
    Ok(Json(view).into_response())
}

/// `POST /api/v1/prisoners/{name}/kill`.
pub async fn kill_prisoner(
    State(control): Control,
    caller: Caller<Admin>,
    PathParam(name): PathParam,
    JsonBody(body): JsonBody<PrisonerBody>,
) -> ApiResult<Response> {
    prisoner_action(&control, &caller, &name, PrisonerAction::Kill, body.reason).await
}

/// `POST /api/v1/prisoners/{name}/pause`.
pub async fn pause_prisoner(
    State(control): Control,
    caller: Caller<Admin>,
    PathParam(name): PathParam,
    JsonBody(body): JsonBody<PauseBody>,
) -> ApiResult<Response> {
    let for_: Option<Duration> = parse_duration_field("duration", body.duration.as_deref())?;
    prisoner_action(
        &control,
        &caller,
        &name,
        PrisonerAction::Pause { for_ },
        body.reason,
    )
    .await
}

/// `POST /api/v1/prisoners/{name}/resume`.
pub async fn resume_prisoner(
    State(control): Control,
    caller: Caller<Admin>,
    PathParam(name): PathParam,
    JsonBody(body): JsonBody<PrisonerBody>,
) -> ApiResult<Response> {
    prisoner_action(
        &control,
        &caller,
        &name,
        PrisonerAction::Resume,
        body.reason,
    )
    .await
}

/// Body of `POST /api/v1/lockdown`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockdownBody {
    on: bool,
    #[serde(default)]
    kill_running: bool,
    reason: Option<String>,
}

/// `POST /api/v1/lockdown`.
pub async fn lockdown(
    State(control): Control,
    caller: Caller<Admin>,
    JsonBody(body): JsonBody<LockdownBody>,
) -> ApiResult<Response> {
    let view = control
        .set_lockdown(body.on, body.kill_running, &caller.identity, body.reason)
        .await?;
    Ok(Json(view).into_response())
}

/// `GET /api/v1/tokens`.
pub async fn list_tokens(State(control): Control, _: Caller<Admin>) -> ApiResult<Response> {
    let tokens = control.list_tokens().await?;
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    name: String,
    scope: String,
}

/// `POST /api/v1/tokens`: 201 with the secret, shown this once.
pub async fn create_token(
    State(control): Control,
    caller: Caller<Admin>,
    JsonBody(body): JsonBody<CreateTokenBody>,
) -> ApiResult<Response> {
    let scope: Scope = body.scope.parse().map_err(ApiError::invalid)?;
    let view = control
        .create_token(&body.name, scope, &caller.identity)
        .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `DELETE /api/v1/tokens/{id}`.
pub async fn revoke_token(
    State(control): Control,
    caller: Caller<Admin>,
    PathParam(id): PathParam,
) -> ApiResult<Response> {
    Ok(Json(control.revoke_token(&id, &caller.identity).await?).into_response())
}
