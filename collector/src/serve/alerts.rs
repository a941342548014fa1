//! The alerting API: alerts and rules as they run, reloading the rule
//! files, and silences (created, listed, expired).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;

use driftwatch_protocol::quoted;

use super::{body_within, ApiError, AppState};
use crate::clock::now_ms;
use crate::notify::matcher::Matcher;
use crate::notify::silence::Silence;
use crate::rules::runtime::Alerting;

/// `GET /v1/alerts`: pending and firing alerts.
pub async fn list_alerts(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(match &state.alerting {
        Some(a) => a.alerts_json().await,
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

fn alerting(state: &AppState) -> Result<&Arc<Alerting>, ApiError> {
    state.alerting.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "no rule files are configured (--rules or `rules:` in the config)".into(),
        )
    })
}

/// The largest silence body accepted.
const MAX_SILENCE_BYTES: usize = 64 * 1024;

/// `POST /v1/silences`: 200 `{"id": ...}`, or 400 naming what is wrong.
pub async fn create_silence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let a = alerting(&state)?;
    let body = body_within(&state, &headers, body, MAX_SILENCE_BYTES).await?;
    let new: NewSilence = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a silence: {e}")))?;
    let mut matchers = Vec::new();
    for m in &new.matchers {
        let parsed = match m {
            serde_json::Value::String(t) => Matcher::parse(t),
            other => {
                serde_json::from_value(other.clone()).map_err(|e| format!("matcher {other}: {e}"))
            }
        };
        matchers.push(parsed.map_err(ApiError::BadRequest)?);
    }
    if matchers.is_empty() {
        return Err(ApiError::BadRequest(
            "a silence needs at least one matcher".into(),
        ));
    }
    if new.created_by.trim().is_empty() || new.comment.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "created_by and comment must not be empty".into(),
        ));
    }
    let time = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.timestamp_millis())
            .map_err(|e| ApiError::BadRequest(format!("{} is not RFC 3339: {e}", quoted(t))))
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
            let d = crate::config::Span::parse(d).map_err(ApiError::BadRequest)?;
            starts + d.duration.as_millis() as i64
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give one of ends_at and duration".into(),
            ))
        }
    };
    if ends <= starts.max(now) {
        return Err(ApiError::BadRequest(
            "the silence must end in the future, after it starts".into(),
        ));
    }
    let id = crate::notify::fingerprint(&format!(
        "{now}{}{:?}{}",
        new.comment, new.matchers, new.created_by
    ));
    let silence = Silence {
        id: id.clone(),
        matchers,
        starts_at_ms: starts,
        ends_at_ms: ends,
        created_by: new.created_by,
        comment: new.comment,
    };
    a.add_silence(silence)
        .await
        .map_err(|e| ApiError::storage("storing a silence", &e))?;
    Ok(Json(serde_json::json!({ "id": id })))
}

/// `GET /v1/silences`.
pub async fn list_silences(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(alerting(&state)?.silences_json()))
}

/// `DELETE /v1/silences/{id}`: expires the silence now.
pub async fn expire_silence(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match alerting(&state)?.expire_silence(&id).await {
        Ok(true) => Ok(Json(serde_json::json!({ "id": id, "state": "expired" }))),
        Ok(false) => Err(ApiError::NotFound(format!("no silence {}", quoted(&id)))),
        Err(e) => Err(ApiError::storage("storing a silence", &e)),
    }
}

/// `GET /v1/rules`: the rules running and the last reload's outcome.
pub async fn list_rules(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(match &state.alerting {
        Some(a) => a.rules_json(),
        None => serde_json::json!({ "files": [], "groups": [] }),
    })
}

/// `POST /-/reload`: reloads the rule files now; 400 with every problem
/// when they are refused (the previous rules keep running).
pub async fn reload_rules(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let alerting = alerting(&state)?.clone();
    let a = alerting.clone();
    match tokio::task::spawn_blocking(move || a.reload()).await {
        Ok(Ok(())) => Ok(Json(alerting.rules_json())),
        Ok(Err(errors)) => Err(ApiError::BadRequest(errors.to_string())),
        Err(e) => Err(ApiError::internal("reloading the rules", e)),
    }
}
