//! Delivery to a webhook: driftwatch's JSON message or Alertmanager's
//! version 4 payload, the configured headers, and a signature when an HMAC
//! secret is set.

use serde_json::json;

use super::{Config, Format};
use crate::notify::alertmanager::am_alert;
use crate::notify::http::{json_body, post, signature};
use crate::notify::{AlertView, Context, DeliveryError, Message};

/// One attempt.
pub async fn send(
    config: &Config,
    message: &Message,
    cx: Context<'_>,
) -> Result<(), DeliveryError> {
    let body = match config.format {
        Format::Driftwatch => json_body(message)?,
        Format::Alertmanager => json_body(&alertmanager_v4(message, cx.external_url))?,
    };
    let mut headers = config.headers.clone();
    if let Some(secret) = &config.hmac_secret {
        headers.extend(signature(secret, &body)?);
    }
    post(
        cx.client,
        &config.url,
        &message.idempotency_key,
        &headers,
        body,
    )
    .await
}

/// Alertmanager's webhook payload, version 4.
fn alertmanager_v4(m: &Message, external_url: Option<&str>) -> serde_json::Value {
    let common = |pick: fn(&AlertView) -> &std::collections::BTreeMap<String, String>| {
        let mut it = m.alerts.iter().map(pick);
        let first = it.next().cloned().unwrap_or_default();
        let rest: Vec<_> = it.collect();
        first
            .into_iter()
            .filter(|(k, v)| rest.iter().all(|o| o.get(k) == Some(v)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let labels = common(|a| &a.labels);
    let group: std::collections::BTreeMap<_, _> = labels
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "alertname" | "model"))
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{:?}", group),
        "truncatedAlerts": 0,
        "status": m.status,
        "receiver": m.receiver,
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": common(|a| &a.annotations),
        "externalURL": external_url.unwrap_or(""),
        "alerts": m.alerts.iter().map(|a| {
            // Alertmanager's zero time marks an alert that has not ended.
            let mut alert = am_alert(a, external_url, "0001-01-01T00:00:00Z");
            alert.insert("status".into(), json!(a.status));
            alert.insert("fingerprint".into(), json!(a.fingerprint));
            serde_json::Value::Object(alert)
        }).collect::<Vec<_>>(),
    })
}
