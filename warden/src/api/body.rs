//! Strict request parsing: JSON bodies, query strings and path parameters, each
//! failing with the API's JSON error instead of axum's plain-text rejection.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::{truncate, ApiError};

/// A JSON object body deserialized into `T` (whose fields are `deny_unknown_fields`).
///
/// - `Content-Type` must be `application/json` (or `application/*+json`), else 400;
/// - an empty body with no `Content-Type` counts as `{}`, so that `curl -X POST` works
///   for routes whose fields are all optional;
/// - malformed JSON, anything but an object, an unknown field, a missing field or a
///   value of the wrong type: 400 naming the problem;
/// - more than [`super::MAX_BODY_BYTES`]: 413.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

fn is_json(headers: &HeaderMap) -> Option<bool> {
    let ct = headers.get(header::CONTENT_TYPE)?;
    let Ok(ct) = ct.to_str() else {
        return Some(false);
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((ty, sub)) = essence.split_once('/') else {
        return Some(false);
    };
    Some(
        ty.eq_ignore_ascii_case("application")
            && (sub.eq_ignore_ascii_case("json")
                || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json")),
    )
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the body is larger than {} bytes; send a smaller JSON object",
            super::MAX_BODY_BYTES
        ),
    )
}

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::bad_request(format!("cannot read the body: {}", e.body_text()))
    }
}

/// Parses `bytes` (already known to be meant as JSON) into `T`.
pub fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object, like {\"reason\": \"...\"}",
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("unacceptable JSON body: {e}")))
}

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = is_json(req.headers());
        // Refuse an announced oversized body before reading any of it.
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > super::MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        match content_type {
            None if bytes.is_empty() => parse_json_object(b"{}").map(JsonBody),
            Some(true) => parse_json_object(&bytes).map(JsonBody),
            _ => Err(ApiError::bad_request(
                "the body must be a JSON object sent with Content-Type: application/json",
            )),
        }
    }
}

/// A query string deserialized into `T` (`deny_unknown_fields`; fields are strings and
/// the handler converts them, so that a bad value is a 422 naming the parameter).
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(q) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(QueryParams(q))
    }
}

/// The single `{id}` / `{name}` parameter of a route's path.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S> FromRequestParts<S> for PathParam
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(p) = Path::<String>::from_request_parts(parts, state).await?;
        if p.is_empty() || p.len() > 256 {
            return Err(ApiError::bad_request(format!(
                "bad path parameter {:?}: expected 1 to 256 bytes",
                truncate(&p, 64)
            )));
        }
        Ok(PathParam(p))
    }
}

/// Parses an optional numeric query parameter, 422 naming it when it is not a number
/// in `min..=max`.
pub fn parse_limit(
    name: &str,
    value: Option<&str>,
    min: u32,
    max: u32,
) -> Result<Option<u32>, ApiError> {
    let Some(text) = value else {
        return Ok(None);
    };
    match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::invalid(format!(
            "{name}={:?} is not valid; use a whole number from {min} to {max}",
            truncate(text, 64)
        ))),
    }
}

/// Parses an optional duration (`30s`, `10m`, `1h30m`), 422 naming the field.
pub fn parse_duration_field(
    name: &str,
    value: Option<&str>,
) -> Result<Option<std::time::Duration>, ApiError> {
    value
        .map(|text| {
            clawrden_policy::parse_duration(text).map_err(|e| {
                ApiError::invalid(format!("{name} {:?} is not valid: {e}", truncate(text, 64)))
            })
        })
        .transpose()
}
