//! `driftwatch serve`: the HTTP server (ingest, metrics, health) and the
//! evaluation loop that recomputes the live windows' statistics every
//! interval, off the async reactor.

pub mod alerting;
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
use crate::ingest::{self, Accepted};
use crate::models::Model;
use crate::store::{LabelOutcome, NewEvent, NewLabel, Store, StoreError};
use crate::window::{ModelWindows, Placement};

/// Everything the handlers and the evaluation loop share.
pub struct AppState {
    pub models: Vec<Model>,
    pub windows: Vec<Mutex<ModelWindows>>,
    pub metrics: Metrics,
    pub store: Store,
    pub tokens: Vec<String>,
    pub max_body_bytes: usize,
    pub max_future_skew: Duration,
    /// Where users reach the collector, for links in notifications.
    pub external_url: Option<String>,
    pub ready: AtomicBool,
    /// Rules and alert states, when rule files are configured.
    pub alerting: Option<alerting::Alerting>,
    /// OpenTelemetry spans and metrics; off unless `otlp:` is configured.
    pub telemetry: driftwatch_telemetry::Telemetry,
}

impl AppState {
    pub fn new(config: &Config, models: Vec<Model>, store: Store) -> AppState {
        AppState {
            store,
            windows: models
                .iter()
                .map(|m| Mutex::new(ModelWindows::new(m)))
                .collect(),
            models,
            metrics: Metrics::new(),
            tokens: config.tokens.clone(),
            max_body_bytes: config.max_body_bytes,
            max_future_skew: config.max_future_skew,
            external_url: config.external_url.clone(),
            ready: AtomicBool::new(false),
            alerting: None,
            telemetry: driftwatch_telemetry::Telemetry::off(),
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
        .route("/v1/feedback", post(feedback))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}/windows", get(model_windows))
        .route("/v1/alerts", get(list_alerts))
        .route("/v1/rules", get(list_rules))
        .route("/v1/notifications", get(list_notifications))
        .route("/v1/silences", get(list_silences).post(create_silence))
        .route("/v1/silences/{id}", axum::routing::delete(expire_silence))
        .route("/-/reload", post(reload_rules))
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
    let hangups = tokio::spawn(reload_on_sighup(state.clone()));
    let deliverer = tokio::spawn(crate::notify::deliver::run(state.clone()));
    state.ready.store(true, Ordering::SeqCst);
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    evaluator.abort();
    hangups.abort();
    deliverer.abort();
    result
}

/// Reloads the rule files on every SIGHUP.
async fn reload_on_sighup(state: Arc<AppState>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(a) = &s.alerting {
                    let _ = a.reload(&s.metrics);
                }
            })
            .await;
        }
    }
    #[cfg(not(unix))]
    let _ = state;
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A batch the database could not commit: counted, logged, and a 503 that
/// tells the client to retry it (nothing of it was acknowledged).
fn storage_unavailable(state: &AppState, what: &str, n: usize, e: &StoreError) -> ApiError {
    state.metrics.reject(RejectReason::StorageError, n as u64);
    eprintln!("error: storing {what} failed: {e}");
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "storage unavailable; retry the batch".into(),
    }
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
    let started = SystemTime::now();
    let reply = ingest_events(&state, &headers, body).await;
    ingest_span(&state, "ingest events", &headers, started, &reply);
    reply
}

/// A span for one ingest request, continuing the client's `traceparent`.
fn ingest_span(
    state: &AppState,
    name: &'static str,
    headers: &HeaderMap,
    started: SystemTime,
    reply: &Result<Json<IngestReply>, ApiError>,
) {
    use driftwatch_telemetry::{KeyValue, SpanKind};
    if !state.telemetry.tracing() {
        return;
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
                i64::from(e.status.as_u16()),
            )],
            Some(e.message.clone()),
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
    );
}

async fn ingest_events(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<IngestReply>, ApiError> {
    let (bytes, encoding) = read_body(state, headers, body).await?;
    // Decompression, parsing and validation are CPU work: keep them off the reactor.
    let worker = state.clone();
    let (mut reply, accepted) =
        tokio::task::spawn_blocking(move || validate_batch(&worker, encoding.as_deref(), &bytes))
            .await
            .map_err(|e| ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("ingest worker failed: {e}"),
            })??;
    // Nothing is acknowledged before it is committed.
    let new_events = accepted
        .iter()
        .map(|(_, a)| NewEvent {
            model: state.models[a.model].name.clone(),
            request_id: a.event.request_id.clone(),
            ts_ms: a.ts_ms,
            json: a.json.clone(),
        })
        .collect();
    let inserted = match state.store.insert(new_events).await {
        Ok(flags) => flags,
        Err(e) => return Err(storage_unavailable(state, "events", accepted.len(), &e)),
    };
    for ((index, a), new) in accepted.into_iter().zip(inserted) {
        if !new {
            state.metrics.reject(RejectReason::DuplicateRequestId, 1);
            reply.errors.push(ItemError {
                index,
                error: format!(
                    "duplicate request_id {:?} for model {}",
                    a.event.request_id, a.event.model
                ),
            });
            continue;
        }
        match apply(state, &a) {
            Ok(()) => reply.accepted += 1,
            Err(error) => reply.errors.push(ItemError { index, error }),
        }
    }
    reply.errors.sort_by_key(|e| e.index);
    reply.rejected = reply.errors.len();
    Ok(Json(reply))
}

/// Decodes the body of either endpoint (auth and size already checked).
fn decode_body(state: &AppState, encoding: Option<&str>, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    ingest::decode(encoding, body, state.max_body_bytes).map_err(|e| refuse(state, e))
}

fn refuse(state: &AppState, e: ingest::BodyError) -> ApiError {
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
}

/// Reads an authorised, size-bounded body.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<u8>, Option<String>), ApiError> {
    require_token(state, headers)?;
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
    Ok((bytes.to_vec(), encoding))
}

/// `POST /v1/feedback`: labels join their stored predictions and update the
/// windows those predictions belong to.
async fn feedback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestReply>, ApiError> {
    let started = SystemTime::now();
    let reply = ingest_labels(&state, &headers, body).await;
    ingest_span(&state, "ingest labels", &headers, started, &reply);
    reply
}

async fn ingest_labels(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<IngestReply>, ApiError> {
    let (bytes, encoding) = read_body(state, headers, body).await?;
    let worker = state.clone();
    let (refusals, labels) = tokio::task::spawn_blocking(move || {
        let decoded = decode_body(&worker, encoding.as_deref(), &bytes)?;
        ingest::parse_labels(&decoded, &worker.models).map_err(|e| refuse(&worker, e))
    })
    .await
    .map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("feedback worker failed: {e}"),
    })??;
    let mut reply = IngestReply::default();
    for (reason, error) in refusals {
        state.metrics.reject(reason, 1);
        reply.errors.push(error);
    }
    let stored = match state
        .store
        .insert_labels(labels.iter().map(|(_, _, l)| l.clone()).collect())
        .await
    {
        Ok(outcomes) => outcomes,
        Err(e) => return Err(storage_unavailable(state, "labels", labels.len(), &e)),
    };
    for ((index, model, label), outcome) in labels.into_iter().zip(stored) {
        match outcome {
            LabelOutcome::Stored { ts_ms, event } => {
                apply_label(state, model, ts_ms, &event, &label);
                reply.accepted += 1;
            }
            LabelOutcome::UnknownRequest => {
                state.metrics.reject(RejectReason::UnknownRequestId, 1);
                let error = format!("no prediction with request_id {:?} for model {} (never sent, or older than its label TTL)", label.request_id, label.model);
                reply.errors.push(ItemError { index, error });
            }
            LabelOutcome::Duplicate => {
                state.metrics.reject(RejectReason::DuplicateLabel, 1);
                reply.errors.push(ItemError {
                    index,
                    error: format!("request_id {:?} already has a label", label.request_id),
                });
            }
        }
    }
    reply.errors.sort_by_key(|e| e.index);
    reply.rejected = reply.errors.len();
    Ok(Json(reply))
}

/// Scores a stored label in the live windows of its prediction.
fn apply_label(state: &AppState, model: usize, ts_ms: i64, event_json: &str, label: &NewLabel) {
    let mut windows = state.windows[model]
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    apply_windows_label(&mut windows, &state.models[model], ts_ms, event_json, label);
}

fn apply_windows_label(
    windows: &mut ModelWindows,
    model: &Model,
    ts_ms: i64,
    event_json: &str,
    label: &NewLabel,
) {
    // The event was validated before it was stored.
    let Ok(event) = serde_json::from_str::<driftwatch_protocol::Event>(event_json) else {
        return;
    };
    let wire = driftwatch_protocol::Label {
        model: label.model.clone(),
        request_id: label.request_id.clone(),
        label: label.label.clone(),
        value: label.value,
    };
    windows.add_label(model, ts_ms, &event, &wire);
}

/// Decodes and validates a batch: the refusals so far, and the accepted
/// events with their index in the batch.
fn validate_batch(
    state: &AppState,
    encoding: Option<&str>,
    body: &[u8],
) -> Result<(IngestReply, Vec<(usize, Accepted)>), ApiError> {
    let decoded = decode_body(state, encoding, body)?;
    let raw_events = ingest::split_events(&decoded).map_err(|e| refuse(state, e))?;
    let now = now_ms();
    let skew = state.max_future_skew.as_millis() as i64;
    let mut reply = IngestReply::default();
    let mut accepted = Vec::with_capacity(raw_events.len());
    for (index, raw) in raw_events.iter().enumerate() {
        let checked = ingest::validate(raw, &state.models, now, skew).and_then(|a| {
            let windows = state.windows[a.model]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match windows.check(a.ts_ms) {
                Ok(()) => Ok(a),
                Err(Placement::TooOld) => Err((
                    RejectReason::TooOld,
                    format!(
                        "timestamp {} is older than the windows kept",
                        a.event.timestamp
                    ),
                )),
            }
        });
        match checked {
            Ok(a) => accepted.push((index, a)),
            Err((reason, error)) => {
                state.metrics.reject(reason, 1);
                reply.errors.push(ItemError { index, error });
            }
        }
    }
    Ok((reply, accepted))
}

/// Adds a stored event to its windows and counts its predictions.
fn apply(state: &AppState, a: &Accepted) -> Result<(), String> {
    let model = &state.models[a.model];
    {
        let mut windows = state.windows[a.model]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The windows may have moved on since validation.
        if windows.check(a.ts_ms) == Err(Placement::TooOld) {
            state.metrics.reject(RejectReason::TooOld, 1);
            return Err(format!(
                "timestamp {} is older than the windows kept",
                a.event.timestamp
            ));
        }
        windows.add(model, a);
    }
    let outputs = [
        ("champion", Some(&a.event.champion)),
        ("shadow", a.event.shadow.as_ref()),
    ];
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
    Ok(())
}

/// Rebuilds the windows from the stored events (at start, before serving);
/// returns how many events were replayed. Counters are not replayed: they
/// restart from zero as Prometheus expects.
pub fn restore(state: &AppState) -> Result<usize, StoreError> {
    let mut replayed = 0;
    for (mi, model) in state.models.iter().enumerate() {
        let longest = model
            .windows
            .iter()
            .map(|w| w.duration.as_millis() as i64)
            .max()
            .unwrap_or(0);
        // The live window and the one before it, for the longest length.
        let since = now_ms() - 2 * longest;
        let mut windows = state.windows[mi].lock().unwrap_or_else(|p| p.into_inner());
        let mut skipped = 0usize;
        for json in state.store.events_since(&model.name, since)? {
            let parsed = serde_json::value::RawValue::from_string(json).ok();
            match parsed
                .as_deref()
                .map(|raw| ingest::validate(raw, &state.models, i64::MAX / 2, 0))
            {
                Some(Ok(a)) if a.model == mi => {
                    windows.add(model, &a);
                    replayed += 1;
                }
                _ => skipped += 1,
            }
        }
        if skipped > 0 {
            eprintln!("warning: model {}: {skipped} stored events no longer match its configuration and were not replayed", model.name);
        }
        for stored in state.store.labels_since(&model.name, since)? {
            let label = NewLabel {
                model: model.name.clone(),
                request_id: String::new(),
                label: stored.label,
                value: stored.value,
            };
            apply_windows_label(&mut windows, model, stored.ts_ms, &stored.event, &label);
        }
    }
    Ok(replayed)
}

/// `GET /v1/models`: what is watched, with each feature's type.
async fn list_models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let models: Vec<serde_json::Value> = state
        .models
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "task": m.task,
                "positive_class": m.positive_class,
                "windows": m.windows.iter().map(|w| w.label()).collect::<Vec<_>>(),
                "window_sample_limit": m.sample_limit,
                "label_ttl_seconds": m.label_ttl.as_secs(),
                "features": m.features.iter().map(|f| serde_json::json!({"name": f.name, "type": f.column_type})).collect::<Vec<_>>(),
                "prediction": m.prediction.as_ref().map(|p| serde_json::json!({"column": p.reference.name, "output": p.output.as_str(), "type": p.reference.column_type})),
            })
        })
        .collect();
    Json(serde_json::json!({ "models": models }))
}

#[derive(serde::Deserialize)]
struct WindowsQuery {
    window: Option<String>,
    limit: Option<usize>,
}

/// Most windows one request returns.
const MAX_WINDOWS: usize = 1000;

/// `GET /v1/models/{model}/windows?window=1h&limit=N`: each window's results
/// (as of its last evaluation), newest first.
async fn model_windows(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<WindowsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(model) = state.models.iter().find(|m| m.name == name) else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("unknown model {name:?}"),
        });
    };
    let labels: Vec<String> = model.windows.iter().map(|w| w.label()).collect();
    let window = q.window.unwrap_or_else(|| labels[0].clone());
    if !labels.contains(&window) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "model {name} has no window {window:?}; it has {}",
                labels.join(", ")
            ),
        });
    }
    let limit = q.limit.unwrap_or(24).clamp(1, MAX_WINDOWS);
    let worker = state.clone();
    let (model_name, w) = (model.name.clone(), window.clone());
    let rows = tokio::task::spawn_blocking(move || worker.store.results(&model_name, &w, limit))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("query failed: {e}"),
        })?
        .map_err(|e| {
            eprintln!("error: reading window results failed: {e}");
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "storage unavailable".into(),
            }
        })?;
    let windows: Vec<serde_json::Value> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    Ok(Json(
        serde_json::json!({ "model": name, "window": window, "windows": windows }),
    ))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// `GET /v1/alerts`: pending and firing alerts.
async fn list_alerts(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(match &state.alerting {
        Some(a) => a.alerts_json(),
        None => serde_json::json!({ "alerts": [] }),
    })
}

/// A silence as posted: matchers as `name=value` strings (or Alertmanager
/// objects), an end (`ends_at` RFC 3339 or `duration` like `2h`), who and why.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    matchers: Vec<serde_json::Value>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    duration: Option<String>,
    created_by: String,
    comment: String,
}

fn bad_request(message: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        message,
    }
}

fn alerting(state: &AppState) -> Result<&alerting::Alerting, ApiError> {
    state.alerting.as_ref().ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no rule files are configured (--rules or `rules:` in the config)".into(),
    })
}

/// 401 (counted) unless the request carries a configured bearer token.
fn require_token(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if authorized(state, headers) {
        Ok(())
    } else {
        state.metrics.reject(RejectReason::Unauthorized, 1);
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or invalid bearer token".into(),
        })
    }
}

/// `POST /v1/silences`: 200 `{"id": ...}`, or 400 naming what is wrong.
async fn create_silence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_token(&state, &headers)?;
    let a = alerting(&state)?;
    let new: NewSilence =
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("not a silence: {e}")))?;
    let mut matchers = Vec::new();
    for m in &new.matchers {
        let parsed = match m {
            serde_json::Value::String(t) => crate::notify::silence::Matcher::parse(t),
            other => {
                serde_json::from_value(other.clone()).map_err(|e| format!("matcher {other}: {e}"))
            }
        };
        matchers.push(parsed.map_err(bad_request)?);
    }
    if matchers.is_empty() {
        return Err(bad_request("a silence needs at least one matcher".into()));
    }
    if new.created_by.trim().is_empty() || new.comment.trim().is_empty() {
        return Err(bad_request(
            "created_by and comment must not be empty".into(),
        ));
    }
    let time = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.timestamp_millis())
            .map_err(|e| bad_request(format!("{t:?} is not RFC 3339: {e}")))
    };
    let now = now_ms();
    let starts = new
        .starts_at
        .as_deref()
        .map(time)
        .transpose()?
        .unwrap_or(now);
    let ends = match (&new.ends_at, &new.duration) {
        (Some(t), None) => time(t)?,
        (None, Some(d)) => {
            let d = crate::config::Span::parse(d).map_err(bad_request)?;
            starts + d.duration.as_millis() as i64
        }
        _ => return Err(bad_request("give one of ends_at and duration".into())),
    };
    if ends <= starts.max(now) {
        return Err(bad_request(
            "the silence must end in the future, after it starts".into(),
        ));
    }
    let id = crate::notify::fingerprint(&format!(
        "{now}{}{:?}{}",
        new.comment, new.matchers, new.created_by
    ));
    let silence = crate::notify::silence::Silence {
        id: id.clone(),
        matchers,
        starts_at_ms: starts,
        ends_at_ms: ends,
        created_by: new.created_by,
        comment: new.comment,
    };
    a.add_silence(&state, silence).await.map_err(|e| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: e,
    })?;
    Ok(Json(serde_json::json!({ "id": id })))
}

/// `GET /v1/silences`.
async fn list_silences(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(alerting(&state)?.silences_json()))
}

/// `DELETE /v1/silences/{id}`: expires the silence now.
async fn expire_silence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_token(&state, &headers)?;
    match alerting(&state)?.expire_silence(&state, &id).await {
        Ok(true) => Ok(Json(serde_json::json!({ "id": id, "state": "expired" }))),
        Ok(false) => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no silence {id:?}"),
        }),
        Err(e) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e,
        }),
    }
}

#[derive(serde::Deserialize)]
struct NotificationsQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/notifications?state=pending|delivered|dead&limit=N`: the outbox, newest first.
async fn list_notifications(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(q): axum::extract::Query<NotificationsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let which = q.state.unwrap_or_else(|| "pending".into());
    if !matches!(which.as_str(), "pending" | "delivered" | "dead") {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("state {which:?}: expected pending, delivered or dead"),
        });
    }
    let limit = q.limit.unwrap_or(100).min(1000);
    let s = state.clone();
    let rows = tokio::task::spawn_blocking(move || s.store.notifications(&which, limit))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
        })?
        .map_err(|e| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
        })?;
    let items: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "receiver": r.receiver,
                "state": r.state,
                "attempts": r.attempts,
                "created": crate::rules::engine::rfc3339(r.created_ms),
                "last_error": r.last_error,
                "message": serde_json::from_str::<serde_json::Value>(&r.payload).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "notifications": items })))
}

/// `GET /v1/rules`: the rules running and the last reload's outcome.
async fn list_rules(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(match &state.alerting {
        Some(a) => a.rules_json(),
        None => serde_json::json!({ "files": [], "groups": [] }),
    })
}

/// `POST /-/reload`: reloads the rule files now; 400 with every problem
/// when they are refused (the previous rules keep running).
async fn reload_rules(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let alerting = alerting(&state)?;
    let s = state.clone();
    let outcome =
        tokio::task::spawn_blocking(move || s.alerting.as_ref().map(|a| a.reload(&s.metrics)))
            .await;
    match outcome {
        Ok(Some(Ok(()))) => Ok(Json(alerting.rules_json())),
        Ok(Some(Err(errors))) => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: errors.to_string(),
        }),
        _ => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "the reload did not finish".into(),
        }),
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}
