//! `POST /v1/events` and `POST /v1/feedback`: the token, the body read
//! within `max_body_bytes` (refusals counted), then the ingest stage; one
//! span per request, continuing the client's `traceparent`.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use driftwatch_protocol::IngestReply;
use driftwatch_telemetry::SpanIds;

use super::{body_within, ApiError, AppState};
use crate::ingest::{Ingest, IngestError};

/// The handler of an ingest endpoint: `POST /v1/events` with
/// `Ingest::events`, `POST /v1/feedback` (labels join their stored
/// predictions) with `Ingest::labels`.
pub fn endpoint<F, Fut>(
    span: &'static str,
    ingest: F,
) -> impl Fn(State<Arc<AppState>>, HeaderMap, Body) -> Reply + Clone + Send + Sync + 'static
where
    F: Fn(Arc<Ingest>, Option<String>, Vec<u8>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<IngestReply, IngestError>> + Send + 'static,
{
    move |State(state), headers, body| {
        Box::pin(async move { handle(&state, span, &headers, body, ingest).await })
    }
}

/// An ingest endpoint's answer, to come.
type Reply = std::pin::Pin<Box<dyn Future<Output = Result<Json<IngestReply>, ApiError>> + Send>>;

/// Reads an authorised body and gives it to `ingest`, inside a span.
async fn handle<F, Fut>(
    state: &AppState,
    span: &'static str,
    headers: &HeaderMap,
    body: Body,
    ingest: F,
) -> Result<Json<IngestReply>, ApiError>
where
    F: FnOnce(Arc<Ingest>, Option<String>, Vec<u8>) -> Fut,
    Fut: Future<Output = Result<IngestReply, IngestError>>,
{
    let started = SystemTime::now();
    let reply = match read_body(state, headers, body).await {
        Ok((bytes, encoding)) => ingest(state.ingest.clone(), encoding, bytes)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let ids = ingest_span(state, span, headers, started, &reply);
    log_refusals(span, &reply, ids.as_ref());
    reply.map(Json)
}

/// Refusals at `debug` (their counters are the signal): a whole request's,
/// and each refused item's, with the request span's ids.
fn log_refusals(span: &str, reply: &Result<IngestReply, ApiError>, ids: Option<&SpanIds>) {
    let (trace_id, span_id) = (
        ids.map(|i| i.trace_id.as_str()),
        ids.map(|i| i.span_id.as_str()),
    );
    match reply {
        Ok(r) => {
            for e in &r.errors {
                tracing::debug!(
                    index = e.index,
                    trace_id,
                    span_id,
                    "{span}: item {} refused: {}",
                    e.index,
                    e.error
                );
            }
        }
        Err(e) => tracing::debug!(
            status = e.status().as_u16(),
            trace_id,
            span_id,
            "{span}: request refused: {}",
            e.message()
        ),
    }
}

/// Reads a size-bounded body and its `Content-Encoding`.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<u8>, Option<String>), ApiError> {
    let bytes = body_within(state, headers, body, state.ingest.max_body_bytes).await?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((bytes.to_vec(), encoding))
}

/// A span for one ingest request, continuing the client's `traceparent`;
/// its ids.
fn ingest_span(
    state: &AppState,
    name: &'static str,
    headers: &HeaderMap,
    started: SystemTime,
    reply: &Result<IngestReply, ApiError>,
) -> Option<SpanIds> {
    use driftwatch_telemetry::{KeyValue, SpanKind};
    if !state.telemetry.tracing() {
        return None;
    }
    let parent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    let (attributes, error) = match reply {
        Ok(r) => (
            vec![
                KeyValue::new("http.response.status_code", 200),
                KeyValue::new("driftwatch.accepted", r.accepted as i64),
                KeyValue::new("driftwatch.rejected", r.rejected as i64),
            ],
            None,
        ),
        Err(e) => (
            vec![KeyValue::new(
                "http.response.status_code",
                i64::from(e.status().as_u16()),
            )],
            Some(e.message()),
        ),
    };
    state.telemetry.span(
        name,
        SpanKind::Server,
        parent,
        started,
        SystemTime::now(),
        attributes,
        error,
    )
}
