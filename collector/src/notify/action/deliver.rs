//! One attempt of an action call: the body rendered when it was queued,
//! with the action's headers, its secret headers read now, and a signature.

use super::{Action, Call};
use crate::notify::http::{post, signature};
use crate::notify::DeliveryError;

/// One attempt. A 409 Conflict counts as done: the job exists already
/// (Airflow answers so to a `dag_run_id` it has seen).
pub async fn call(
    client: &reqwest::Client,
    action: &Action,
    payload: &str,
) -> Result<(), DeliveryError> {
    let call: Call = serde_json::from_str(payload)
        .map_err(|e| DeliveryError::permanent(format!("unreadable queued action call: {e}")))?;
    let body = call.body.into_bytes();
    let mut headers = action.headers.clone();
    for (name, secret) in &action.secret_headers {
        let value = secret.read_text().map_err(DeliveryError::retry)?;
        headers.push((name.clone(), value));
    }
    if let Some(secret) = &action.hmac_secret {
        headers.extend(signature(secret, &body)?);
    }
    match post(client, &action.url, &call.idempotency_key, &headers, body).await {
        Err(e) if e.status == Some(409) => Ok(()),
        other => other,
    }
}
