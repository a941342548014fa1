//! Delivery to an existing Alertmanager: `POST /api/v2/alerts` with the
//! message's alerts, each valid for 4 minutes while it fires.

use serde_json::json;

use super::Config;
use crate::clock::{now_ms, rfc3339};
use crate::notify::http::{json_body, post};
use crate::notify::{alerts_link, AlertView, Context, DeliveryError, Message};

/// One attempt.
pub async fn send(
    config: &Config,
    message: &Message,
    cx: Context<'_>,
) -> Result<(), DeliveryError> {
    let body = json_body(&alerts(message, cx.external_url))?;
    let endpoint = format!("{}/api/v2/alerts", config.url.trim_end_matches('/'));
    post(cx.client, &endpoint, &message.idempotency_key, &[], body).await
}

/// Alertmanager's `POST /api/v2/alerts` body. A firing alert is valid for 4
/// minutes (`endsAt`) and resent every minute while it fires, as Prometheus
/// does; a resolved one ends when it resolved.
pub fn alerts(m: &Message, external_url: Option<&str>) -> serde_json::Value {
    let valid_until = rfc3339(now_ms() + 4 * 60 * 1000);
    let alerts: Vec<serde_json::Value> = m
        .alerts
        .iter()
        .map(|a| am_alert(a, external_url, &valid_until).into())
        .collect();
    json!(alerts)
}

/// An alert as Alertmanager takes it; `open_end` is the `endsAt` of an
/// alert that has not resolved.
pub(crate) fn am_alert(
    a: &AlertView,
    external_url: Option<&str>,
    open_end: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut alert = serde_json::Map::new();
    alert.insert("labels".into(), json!(a.labels));
    alert.insert("annotations".into(), json!(a.annotations));
    let starts = a.fired_at.as_ref().unwrap_or(&a.starts_at);
    alert.insert("startsAt".into(), json!(starts));
    alert.insert(
        "endsAt".into(),
        json!(a.ends_at.as_deref().unwrap_or(open_end)),
    );
    let generator = alerts_link(external_url).unwrap_or_default();
    alert.insert("generatorURL".into(), json!(generator));
    alert
}
