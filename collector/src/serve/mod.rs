//! `driftwatch serve`: the HTTP server (ingest, metrics, health) and the
//! evaluation loop that recomputes the live windows' statistics every
//! interval, off the async reactor.

mod eval;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use driftwatch_protocol::{IngestReply, ItemError};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::export::metrics::{Metrics, RejectReason};
use crate::ingest;
use crate::models::Model;
use crate::window::{ModelWindows, Placement};

/// Everything the handlers and the evaluation loop share.
pub struct AppState {
    pub models: Vec<Model>,
    pub windows: Vec<Mutex<ModelWindows>>,
    pub metrics: Metrics,
    pub tokens: Vec<String>,
    pub max_body_bytes: usize,
    pub max_future_skew: Duration,
    pub ready: AtomicBool,
}

impl AppState {
    pub fn new(config: &Config, models: Vec<Model>) -> AppState {
        AppState {
            windows: models
                .iter()
                .map(|m| Mutex::new(ModelWindows::new(m)))
                .collect(),
            models,
            metrics: Metrics::new(),
            tokens: config.tokens.clone(),
            max_body_bytes: config.max_body_bytes,
            max_future_skew: config.max_future_skew,
            ready: AtomicBool::new(false),
        }
    }
}

/// The one HTTP error shape: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/events", post(events))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        // The handler bounds the body itself so that refusals are counted.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves until `shutdown` resolves; evaluates live windows every `interval`.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let evaluator = tokio::spawn(eval::run_loop(state.clone(), interval));
    state.ready.store(true, Ordering::SeqCst);
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    evaluator.abort();
    result
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    if state.tokens.is_empty() {
        return true;
    }
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Compare against every token without stopping early.
    state.tokens.iter().fold(false, |ok, t| {
        ok | bool::from(t.as_bytes().ct_eq(given.trim().as_bytes()))
    })
}

async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestReply>, ApiError> {
    if !authorized(&state, &headers) {
        state.metrics.reject(RejectReason::Unauthorized, 1);
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or invalid bearer token".into(),
        });
    }
    let max = state.max_body_bytes;
    let bytes = axum::body::to_bytes(body, max.saturating_add(1))
        .await
        .map_err(|_| {
            state.metrics.reject(RejectReason::TooLarge, 1);
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("body larger than {max} bytes"),
            }
        })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Decompression, parsing and validation are CPU work: keep them off the reactor.
    let worker = state.clone();
    tokio::task::spawn_blocking(move || ingest_batch(&worker, encoding.as_deref(), &bytes))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("ingest worker failed: {e}"),
        })?
        .map(Json)
}

/// Validates and applies one batch; per-event errors go into the reply.
fn ingest_batch(
    state: &AppState,
    encoding: Option<&str>,
    body: &[u8],
) -> Result<IngestReply, ApiError> {
    let refuse = |e: ingest::BodyError| {
        state.metrics.reject(e.reason(), 1);
        let status = match e {
            ingest::BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ingest::BodyError::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            message: e.to_string(),
        }
    };
    let decoded = ingest::decode(encoding, body, state.max_body_bytes).map_err(refuse)?;
    let raw_events = ingest::split_events(&decoded).map_err(refuse)?;
    let now = now_ms();
    let skew = state.max_future_skew.as_millis() as i64;
    let mut reply = IngestReply::default();
    let mut accepted = Vec::with_capacity(raw_events.len());
    for (index, raw) in raw_events.iter().enumerate() {
        match ingest::validate(raw, &state.models, now, skew) {
            Ok(a) => accepted.push((index, a)),
            Err((reason, error)) => {
                state.metrics.reject(reason, 1);
                reply.errors.push(ItemError { index, error });
            }
        }
    }
    for (index, a) in accepted {
        let model = &state.models[a.model];
        {
            let mut windows = state.windows[a.model]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if windows.check(a.ts_ms) == Err(Placement::TooOld) {
                state.metrics.reject(RejectReason::TooOld, 1);
                reply.errors.push(ItemError {
                    index,
                    error: format!(
                        "timestamp {} is older than the windows kept",
                        a.event.timestamp
                    ),
                });
                continue;
            }
            windows.add(model, a.ts_ms, &a.values);
        }
        let outputs = std::iter::once(("champion", Some(&a.event.champion)))
            .chain(std::iter::once(("shadow", a.event.shadow.as_ref())));
        for (role, output) in outputs {
            let Some(o) = output else { continue };
            let version = o.version.as_deref().unwrap_or("");
            state
                .metrics
                .predictions
                .with_label_values(&[model.name.as_str(), version, role])
                .inc();
            if o.error.is_some() {
                state
                    .metrics
                    .prediction_errors
                    .with_label_values(&[model.name.as_str(), version, role])
                    .inc();
            }
            if let Some(ms) = o.latency_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
                state
                    .metrics
                    .latency
                    .with_label_values(&[model.name.as_str(), role])
                    .observe(ms / 1000.0);
            }
        }
        reply.accepted += 1;
    }
    reply.errors.sort_by_key(|e| e.index);
    reply.rejected = reply.errors.len();
    Ok(reply)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}
