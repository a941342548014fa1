//! The collector's HTTP API, and nothing else: routes, handlers, the
//! bearer-token check and the one error type (`error`). Each handler hands
//! its work to the stage that owns it (ingest, the rules runtime, the
//! store) and maps the outcome to a status.

mod alerts;
mod api;
pub mod error;
mod ingest;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::Router;
use driftwatch_telemetry::Telemetry;
use subtle::ConstantTimeEq;

pub use error::ApiError;

use crate::export::metrics::{Metrics, RejectReason};
use crate::ingest::Ingest;
use crate::rules::runtime::Alerting;
use crate::store::Store;

/// What the handlers reach: each stage's handle.
pub struct AppState {
    pub ingest: Arc<Ingest>,
    /// Rules and alert states, when rule files are configured.
    pub alerting: Option<Arc<Alerting>>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// OpenTelemetry spans; off unless `otlp:` is configured.
    pub telemetry: Arc<Telemetry>,
    /// Bearer tokens; none means no authentication.
    pub tokens: Vec<String>,
    /// Set once the windows are restored and the loops run.
    pub ready: AtomicBool,
}

pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/events",
            post(ingest::endpoint("ingest events", Ingest::events)),
        )
        .route(
            "/v1/feedback",
            post(ingest::endpoint("ingest labels", Ingest::labels)),
        )
        .route("/v1/models", get(api::list_models))
        .route("/v1/models/{model}/windows", get(api::model_windows))
        .route("/v1/notifications", get(api::list_notifications))
        .route("/v1/alerts", get(alerts::list_alerts))
        .route("/v1/rules", get(alerts::list_rules))
        .route(
            "/v1/silences",
            get(alerts::list_silences).post(alerts::create_silence),
        )
        .route("/v1/silences/{id}", delete(alerts::expire_silence))
        .route("/-/reload", post(alerts::reload_rules))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        // The handler bounds the body itself so that refusals are counted.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    state.ready.store(true, Ordering::SeqCst);
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// 401 (counted) unless the request carries a configured bearer token.
fn require_token(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.tokens.is_empty() {
        return Ok(());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compare against every token without stopping early.
    let ok = given.is_some_and(|given| {
        state.tokens.iter().fold(false, |ok, t| {
            ok | bool::from(t.as_bytes().ct_eq(given.trim().as_bytes()))
        })
    });
    if ok {
        Ok(())
    } else {
        state.metrics.reject(RejectReason::Unauthorized, 1);
        Err(ApiError::Unauthorized)
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        driftwatch_telemetry::render_metrics(state.metrics.registry()),
    )
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}
