//! The collector's HTTP API, and nothing else: routes, handlers, the
//! bearer-token check and the one error type (`error`). Each handler hands
//! its work to the stage that owns it (ingest, the rules runtime, the
//! store) and maps the outcome to a status.

mod alerts;
mod api;
pub mod auth;
pub mod error;
mod ingest;
pub mod listen;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::Router;
use driftwatch_telemetry::tls::ServerTls;
use driftwatch_telemetry::Telemetry;

pub use auth::{Auth, Scope};
pub use error::ApiError;

use crate::cluster::Cluster;
use crate::config::HttpLimits;
use crate::export::metrics::{Metrics, RejectReason};
use crate::ingest::Ingest;
use crate::rules::runtime::Alerting;
use crate::store::Store;

/// What the handlers reach: each stage's handle.
pub struct AppState {
    pub ingest: Arc<Ingest>,
    /// Every experiment's latest look.
    pub experiments: Arc<crate::experiment::registry::Experiments>,
    /// Rules and alert states, when rule files are configured.
    pub alerting: Option<Arc<Alerting>>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// OpenTelemetry spans; off unless `otlp:` is configured.
    pub telemetry: Arc<Telemetry>,
    /// Bearer tokens by scope.
    pub auth: Auth,
    /// Bounds on connections and slow clients.
    pub http: HttpLimits,
    /// HTTPS, when configured.
    pub tls: Option<Arc<ServerTls>>,
    /// Set once the windows are restored and the loops run.
    pub ready: AtomicBool,
    /// Cluster mode: this collector's membership (set when it listens).
    pub cluster: OnceLock<Arc<Cluster>>,
}

/// The routes, grouped by the token scope each needs (`auth`).
pub fn app(state: Arc<AppState>) -> Router {
    let scoped = |scope: Scope, routes: Router<Arc<AppState>>| {
        routes.route_layer(middleware::from_fn_with_state(
            (state.clone(), scope),
            auth::guard,
        ))
    };
    let ingest = Router::new()
        .route(
            "/v1/events",
            post(ingest::endpoint("ingest events", Ingest::events)),
        )
        .route(
            "/v1/feedback",
            post(ingest::endpoint("ingest labels", Ingest::labels)),
        );
    let read = Router::new()
        .route("/v1/models", get(api::list_models))
        .route("/v1/models/{model}/windows", get(api::model_windows))
        .route("/v1/notifications", get(api::list_notifications))
        .route("/v1/alerts", get(alerts::list_alerts))
        .route("/v1/rules", get(alerts::list_rules))
        .route("/v1/silences", get(alerts::list_silences))
        .route("/v1/cluster", get(api::cluster))
        .route("/v1/experiments", get(api::list_experiments))
        .route(
            "/v1/experiments/{name}",
            get(api::experiment).post(api::experiment),
        );
    let admin = Router::new()
        .route("/v1/silences", post(alerts::create_silence))
        .route("/v1/silences/{id}", delete(alerts::expire_silence))
        .route("/-/reload", post(alerts::reload_rules));
    let metrics = Router::new().route("/metrics", get(metrics));
    Router::new()
        .merge(scoped(Scope::Ingest, ingest))
        .merge(scoped(Scope::Read, read))
        .merge(scoped(Scope::Admin, admin))
        .merge(scoped(Scope::Metrics, metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        // Handlers bound their bodies themselves so that refusals are counted.
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
    listen::serve(
        listener,
        app(state.clone()),
        state.http,
        state.tls.clone(),
        state.metrics.clone(),
        shutdown,
    )
    .await
}

/// A body of at most `max` bytes: refused with 413 (counted) as soon as
/// `Content-Length` announces more, before anything is read (so that
/// `Expect: 100-continue` is answered 413, not 100), else once more than
/// `max` bytes have arrived.
async fn body_within(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        state.metrics.reject(RejectReason::TooLarge, 1);
        ApiError::TooLarge(format!("body larger than {max} bytes"))
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let read = axum::body::to_bytes(body, max.saturating_add(1));
    match tokio::time::timeout(state.http.body_timeout, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => {
            listen::refuse(&state.metrics, listen::Refusal::BodyTimeout);
            Err(ApiError::Timeout(format!(
                "the body did not arrive within {} s",
                state.http.body_timeout.as_secs_f64()
            )))
        }
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        driftwatch_telemetry::render_metrics(state.metrics.registry()),
    )
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // In cluster mode nothing can be accepted before the log is reached.
    let connected = state
        .ingest
        .cluster
        .as_ref()
        .is_none_or(|log| log.bus.get().is_some());
    match (state.ready.load(Ordering::SeqCst), connected) {
        (true, true) => (StatusCode::OK, "ready\n"),
        (true, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the cluster's NATS servers\n",
        ),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
    }
}
