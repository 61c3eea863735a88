//! `GET /api/v1/events`: the control plane's events as Server-Sent Events.
//!
//! Wire format, one frame per event: `id: N\nevent: KIND\ndata: JSON\n\n`. A client
//! that reconnects with `Last-Event-ID` (or `?last_event_id=`) first gets the buffered
//! events newer than that id; when the id is older than the buffer, or the client falls
//! so far behind that the broadcast channel drops events for it, it gets
//! `event: reset\ndata: {}\n\n` (refetch your state) and the stream goes on. A comment
//! `: keep-alive\n\n` every [`KEEP_ALIVE`] keeps proxies from closing an idle stream.
//! The stream is a lazily polled future: when the client goes away hyper drops the body
//! and with it the broadcast receiver; no task is left behind.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::control::EventEnvelope;

/// Interval between keep-alive comments on an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

const RESET_FRAME: &[u8] = b"event: reset\ndata: {}\n\n";
const KEEP_ALIVE_FRAME: &[u8] = b": keep-alive\n\n";

/// One event as an SSE frame.
pub fn frame(ev: &EventEnvelope) -> Bytes {
    // Compact JSON never contains a raw newline (string newlines are escaped), so the
    // data fits the single `data:` line SSE requires. The kind is ours, but a newline in
    // it would forge fields, so it is stripped all the same.
    let data = serde_json::to_string(&ev.data).unwrap_or_else(|_| "null".to_owned());
    let kind: String = ev.kind.chars().filter(|c| !c.is_control()).collect();
    Bytes::from(format!("id: {}\nevent: {kind}\ndata: {data}\n\n", ev.id))
}

/// Becomes `true` when the server shuts down: open streams end so that the graceful
/// shutdown does not wait for them forever.
#[derive(Clone, Debug)]
pub struct Shutdown(pub watch::Receiver<bool>);

/// Completes when `stop` says the server is shutting down; never without one.
async fn stopping(stop: &mut Option<Shutdown>) {
    match stop {
        Some(Shutdown(rx)) => {
            // An error means the sender is gone: the server is gone too.
            let _ = rx.wait_for(|stop| *stop).await;
        }
        None => std::future::pending().await,
    }
}

struct EventStream {
    queued: VecDeque<Bytes>,
    live: broadcast::Receiver<EventEnvelope>,
    keep_alive: Interval,
    /// Highest id sent: live events at or below it were already replayed.
    last_sent: Option<u64>,
    stop: Option<Shutdown>,
}

impl EventStream {
    async fn next_frame(mut self) -> Option<(Result<Bytes, Infallible>, EventStream)> {
        if let Some(b) = self.queued.pop_front() {
            return Some((Ok(b), self));
        }
        loop {
            tokio::select! {
                got = self.live.recv() => match got {
                    Ok(ev) => {
                        if self.last_sent.is_some_and(|last| ev.id <= last) {
                            continue;
                        }
                        self.last_sent = Some(ev.id);
                        let b = frame(&ev);
                        return Some((Ok(b), self));
                    }
                    Err(RecvError::Lagged(_)) => {
                        return Some((Ok(Bytes::from_static(RESET_FRAME)), self));
                    }
                    // The control plane is gone: the warden is shutting down.
                    Err(RecvError::Closed) => return None,
                },
                () = stopping(&mut self.stop) => return None,
                _ = self.keep_alive.tick() => {
                    return Some((Ok(Bytes::from_static(KEEP_ALIVE_FRAME)), self));
                }
            }
        }
    }
}

/// The SSE response for what [`crate::control::ControlPlane::subscribe`] returned.
pub fn response(
    (replay, live, reset): (Vec<EventEnvelope>, broadcast::Receiver<EventEnvelope>, bool),
    stop: Option<Shutdown>,
) -> Response {
    let mut queued = VecDeque::with_capacity(replay.len() + 1);
    if reset {
        queued.push_back(Bytes::from_static(RESET_FRAME));
    }
    let last_sent = replay.last().map(|e| e.id);
    queued.extend(replay.iter().map(frame));
    let mut keep_alive = tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = EventStream {
        queued,
        live,
        keep_alive,
        last_sent,
        stop,
    };
    let stream = futures_util::stream::unfold(state, EventStream::next_frame);
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // Tells a buffering reverse proxy (nginx) to pass frames through as they come.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// The id to resume after: the `Last-Event-ID` header wins over `?last_event_id=`.
pub fn resume_id(header: Option<&HeaderValue>, query: Option<&str>) -> Result<Option<u64>, String> {
    let text = match header {
        Some(h) => Some(
            h.to_str()
                .map_err(|_| "the Last-Event-ID header is not ASCII".to_owned())?,
        ),
        None => query,
    };
    text.map(|t| {
        t.trim().parse::<u64>().map_err(|_| {
            format!(
                "last event id {:?} is not valid; use the id of the last event received",
                super::error::truncate(t, 64)
            )
        })
    })
    .transpose()
}
