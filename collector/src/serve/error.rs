//! The one HTTP error of the collector's API: a status and
//! `{"error": "..."}`, with the status chosen in one place. Internal
//! details (storage errors, which name the database's path; worker
//! failures) are logged, never sent to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use driftwatch_telemetry::throttled;

use crate::ingest::{BodyError, IngestError};

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    BadRequest(String),
    /// No or a wrong bearer token (no detail about which tokens exist).
    Unauthorized,
    /// A known token without the scope the route needs (no detail either).
    Forbidden,
    NotFound(String),
    TooLarge(String),
    /// The body did not arrive in time.
    Timeout(String),
    UnsupportedEncoding(String),
    /// Storage or another dependency is unavailable: retry later.
    Unavailable(&'static str),
    /// A bug: the request did not finish.
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told, never longer than
    /// `driftwatch_protocol::MAX_ERROR_BYTES`.
    pub fn message(&self) -> String {
        driftwatch_protocol::clip(match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::TooLarge(m)
            | ApiError::Timeout(m)
            | ApiError::UnsupportedEncoding(m) => m.clone(),
            ApiError::Unauthorized => "missing or invalid bearer token".into(),
            ApiError::Forbidden => "this token may not do that".into(),
            ApiError::Unavailable(m) => (*m).into(),
            ApiError::Internal => "internal error; the request did not finish".into(),
        })
    }

    /// A storage failure: logged with its cause, the client told to retry.
    pub fn storage(what: &str, e: &dyn std::fmt::Display) -> ApiError {
        throttled!(
            crate::store::FAILURES_LOGGED,
            what,
            tracing::Level::ERROR,
            {},
            "{what} failed: {e}"
        );
        ApiError::Unavailable("storage unavailable")
    }

    /// A worker task that failed (a panic): logged.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
        tracing::error!("{what} failed: {e}");
        ApiError::Internal
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        match e {
            BodyError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
            BodyError::Encoding(_) => ApiError::UnsupportedEncoding(e.to_string()),
            BodyError::Decompress(_) | BodyError::Malformed(_) => {
                ApiError::BadRequest(e.to_string())
            }
        }
    }
}

impl From<IngestError> for ApiError {
    /// Ingest has counted and logged its failures already.
    fn from(e: IngestError) -> ApiError {
        match e {
            IngestError::Body(b) => b.into(),
            IngestError::Storage { .. } => {
                ApiError::Unavailable("storage unavailable; retry the batch")
            }
            IngestError::Unavailable(_) => {
                ApiError::Unavailable("the cluster's log is unavailable; retry the batch")
            }
            IngestError::Worker(_) => ApiError::Internal,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(serde_json::json!({ "error": self.message() })),
        )
            .into_response()
    }
}
