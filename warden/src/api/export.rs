//! `GET /api/v1/history/export`: every matching request, streamed as CSV or JSON Lines.
//!
//! [`ControlPlane::export`] pages through the store and sends the encoded rows into a
//! bounded channel; the response body is fed from that channel, so at most a few pages
//! are in memory whatever the history holds, and a slow client slows the export down
//! instead of buffering it. A failure before the first chunk is an ordinary JSON error;
//! a failure after it aborts the body, so the client sees a truncated (chunked)
//! response rather than a silently short file.

use std::io;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

use super::error::{ApiError, ApiResult};
use crate::control::{ControlError, ControlPlane, ExportFormat, HistoryParams};

/// Encoded chunks in flight between the export task and the response body.
const CHANNEL_CHUNKS: usize = 4;

struct Feed {
    rx: mpsc::Receiver<Vec<u8>>,
    /// The export's result once the channel is drained; `None` after it was taken.
    done: Option<oneshot::Receiver<Result<(), ControlError>>>,
}

impl Feed {
    async fn next_chunk(mut self) -> Option<(io::Result<Bytes>, Feed)> {
        if let Some(chunk) = self.rx.recv().await {
            return Some((Ok(Bytes::from(chunk)), self));
        }
        let done = self.done.take()?;
        match done.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "history export failed midway; the response is cut short");
                Some((Err(io::Error::other(e.to_string())), self))
            }
            Err(_) => Some((
                Err(io::Error::other(
                    "the history export task ended without a result",
                )),
                self,
            )),
        }
    }
}

/// Starts the export and answers with the streamed attachment, or with the export's
/// error when it fails before producing anything.
pub async fn response(
    control: Arc<ControlPlane>,
    params: HistoryParams,
    format: ExportFormat,
) -> ApiResult<Response> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CHANNEL_CHUNKS);
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        // The export stops by itself when the body (and so `rx`) is dropped: its next
        // send fails.
        let result = control.export(params, format, tx).await;
        let _ = done_tx.send(result);
    });
    // Wait for the first chunk, or for the export to fail before writing anything (a
    // bad filter), so that such a failure keeps its status and JSON body.
    // Wait for the first chunk: the export either produces one or ends (dropping its
    // sender) first. Ending first with an error (a bad filter) keeps that error's
    // status and JSON body; nothing has been sent yet.
    let body = match rx.recv().await {
        Some(chunk) => {
            let rest = futures_util::stream::unfold(
                Feed {
                    rx,
                    done: Some(done_rx),
                },
                Feed::next_chunk,
            );
            Body::from_stream(futures_util::StreamExt::chain(
                futures_util::stream::once(async move { Ok::<_, io::Error>(Bytes::from(chunk)) }),
                rest,
            ))
        }
        None => match done_rx.await {
            Ok(Ok(())) => Body::empty(),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(ApiError::internal(
                    "the history export task ended without a result",
                ))
            }
        },
    };
    let disposition = format!(
        "attachment; filename=\"clawrden-history.{}\"",
        format.extension()
    );
    let mut resp = (StatusCode::OK, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    Ok(resp)
}
