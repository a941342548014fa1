//! The read-only JSON API: the models watched, each window's results as of
//! its last evaluation, and the notification outbox.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Uri};
use axum::Json;

use driftwatch_protocol::quoted;

use super::{ApiError, AppState};
use crate::cluster::{Cluster, FORWARDED};

/// `GET /v1/models`: what is watched, with each feature's type.
pub async fn list_models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let models: Vec<serde_json::Value> = state
        .ingest
        .live
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
pub struct WindowsQuery {
    window: Option<String>,
    limit: Option<usize>,
}

/// Most windows one request returns.
const MAX_WINDOWS: usize = 1000;

/// `GET /v1/models/{model}/windows?window=1h&limit=N`: each window's results
/// (as of its last evaluation), newest first.
pub async fn model_windows(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<WindowsQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some((_, model)) = state.ingest.live.model(&name) else {
        return Err(ApiError::NotFound(format!(
            "unknown model {}",
            quoted(&name)
        )));
    };
    // In cluster mode the model's owner holds its results.
    if let Some((cluster, owner)) = owner_elsewhere(&state, &name, &headers) {
        return forwarded(cluster, &owner, &uri, &headers).await;
    }
    let labels: Vec<String> = model.windows.iter().map(|w| w.label()).collect();
    let window = q.window.unwrap_or_else(|| labels[0].clone());
    if !labels.contains(&window) {
        return Err(ApiError::BadRequest(format!(
            "model {name} has no window {}; it has {}",
            quoted(&window),
            labels.join(", ")
        )));
    }
    let limit = q.limit.unwrap_or(24).clamp(1, MAX_WINDOWS);
    let store = state.store.clone();
    let (model_name, w) = (model.name.clone(), window.clone());
    let rows = tokio::task::spawn_blocking(move || store.results(&model_name, &w, limit))
        .await
        .map_err(|e| ApiError::internal("reading window results", e))?
        .map_err(|e| ApiError::storage("reading window results", &e))?;
    let windows: Vec<serde_json::Value> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    Ok(Json(
        serde_json::json!({ "model": name, "window": window, "windows": windows }),
    ))
}

/// Cluster mode: the collector that owns `model` and its URL, when it is
/// another one and the request was not forwarded here already.
fn owner_elsewhere<'a>(
    state: &'a AppState,
    model: &str,
    headers: &HeaderMap,
) -> Option<(&'a Cluster, String)> {
    let cluster = state.cluster.get()?;
    let owner = cluster
        .owner_url(model)
        .filter(|_| !headers.contains_key(FORWARDED))?;
    Some((cluster, owner))
}

/// A query answered by the model's owner, as it answered.
async fn forwarded(
    cluster: &Cluster,
    owner: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    match forward_json(cluster, owner, path, headers).await? {
        (200, value) => Ok(Json(value)),
        _ => Err(ApiError::Unavailable(
            "the model's owner did not answer as expected; retry",
        )),
    }
}

/// `path` asked of the model's owner: its status and JSON answer.
async fn forward_json(
    cluster: &Cluster,
    owner: &str,
    path: &str,
    headers: &HeaderMap,
) -> Result<(u16, serde_json::Value), ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (status, body) = cluster
        .forward(owner, path, authorization)
        .await
        .map_err(|e| {
            tracing::warn!("cluster: {e}");
            ApiError::Unavailable("the model's owner did not answer; retry")
        })?;
    serde_json::from_slice(&body)
        .map(|v| (status, v))
        .map_err(|_| ApiError::Unavailable("the model's owner did not answer as expected; retry"))
}

/// One experiment's latest look: from this collector, or (cluster mode)
/// from its model's owner. Not looked at yet: `continue`.
async fn experiment_json(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
) -> Result<serde_json::Value, ApiError> {
    let Some(mi) = state.experiments.model_of(name) else {
        return Err(ApiError::NotFound(format!(
            "unknown experiment {}",
            quoted(name)
        )));
    };
    let model = &state.ingest.live.models[mi].name;
    if let Some((cluster, owner)) = owner_elsewhere(state, model, headers) {
        let path = format!("/v1/experiments/{name}");
        return match forward_json(cluster, &owner, &path, headers).await? {
            (200 | 409, value) => Ok(value),
            _ => Err(ApiError::Unavailable(
                "the model's owner did not answer as expected; retry",
            )),
        };
    }
    Ok(match state.experiments.report(name) {
        Some(r) => serde_json::to_value(r).unwrap_or_default(),
        None => serde_json::json!({
            "name": name, "model": model, "decision": "continue",
            "reason": "not evaluated yet", "winner": null, "looks": 0,
        }),
    })
}

#[derive(serde::Deserialize)]
pub struct ExperimentQuery {
    /// Which decisions answer 200: `promote` (the default; a Flagger
    /// confirm-promotion gate), `rollback` (rollback or invalid; a Flagger
    /// rollback webhook), `false` (every decision: Argo Rollouts' web
    /// metrics take any other status as an error, not a measurement).
    gate: Option<String>,
}

/// `GET /v1/experiments/{name}[?gate=promote|rollback|false]` (and POST,
/// as Flagger's webhooks call it): the decision JSON; 200 when the
/// decision is the gate's, 409 otherwise (DESIGN.md).
pub async fn experiment(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<ExperimentQuery>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let gate = q.gate.as_deref().unwrap_or("promote");
    if !matches!(gate, "promote" | "rollback" | "false") {
        return Err(ApiError::BadRequest(format!(
            "gate {} is not one of promote, rollback, false",
            quoted(gate)
        )));
    }
    let value = experiment_json(&state, &name, &headers).await?;
    let open = matches!(
        (gate, value["decision"].as_str()),
        ("false", _) | ("promote", Some("promote")) | ("rollback", Some("rollback" | "invalid"))
    );
    let status = match open {
        true => axum::http::StatusCode::OK,
        false => axum::http::StatusCode::CONFLICT,
    };
    Ok((status, Json(value)).into_response())
}

/// `GET /v1/experiments`: every configured experiment's latest look.
pub async fn list_experiments(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut out = Vec::new();
    for model in state.ingest.live.models.iter() {
        for e in &model.experiments {
            out.push(experiment_json(&state, &e.name, &headers).await?);
        }
    }
    Ok(Json(serde_json::json!({ "experiments": out })))
}

/// `GET /v1/cluster`: this collector, the members alive and each model's
/// owner (404 when not in cluster mode).
pub async fn cluster(
    State(state): State<Arc<AppState>>,
) -> Result<Json<crate::cluster::View>, ApiError> {
    match state.cluster.get() {
        Some(c) => Ok(Json(c.view())),
        None => Err(ApiError::NotFound(
            "this collector is not in cluster mode".into(),
        )),
    }
}

#[derive(serde::Deserialize)]
pub struct NotificationsQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/notifications?state=pending|delivered|dead&limit=N`: the outbox, newest first.
pub async fn list_notifications(
    State(state): State<Arc<AppState>>,
    Query(q): Query<NotificationsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let which = q.state.unwrap_or_else(|| "pending".into());
    if !matches!(which.as_str(), "pending" | "delivered" | "dead") {
        return Err(ApiError::BadRequest(format!(
            "state {}: expected pending, delivered or dead",
            quoted(&which)
        )));
    }
    let limit = q.limit.unwrap_or(100).min(1000);
    let store = state.store.clone();
    let rows = tokio::task::spawn_blocking(move || store.notifications(&which, limit))
        .await
        .map_err(|e| ApiError::internal("reading the outbox", e))?
        .map_err(|e| ApiError::storage("reading the outbox", &e))?;
    let items: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "receiver": r.receiver,
                "state": r.state,
                "attempts": r.attempts,
                "created": crate::clock::rfc3339(r.created_ms),
                "last_error": r.last_error,
                "message": serde_json::from_str::<serde_json::Value>(&r.payload).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "notifications": items })))
}
