//! Notifications: alerts reach receivers through the route tree (or the
//! receivers their rule names), grouped into messages as Alertmanager does
//! it (`group`), or pushed one by one to Alertmanager receivers
//! (`alertmanager::push`); firing alerts may call actions (`action`). Every
//! message is queued in the SQLite outbox in the same transaction as the
//! alert and group states (so a crash neither loses nor invents one), then
//! delivered at least once by `deliver::run` with exponential backoff and
//! jitter, and dead-lettered after `MAX_ATTEMPTS`.
//!
//! Each receiver kind is a folder with the same files: `config.rs` (its
//! part of a rule file, checked) and `deliver.rs` (one attempt), joined by
//! the closed enum `receiver::ReceiverKind`.

pub mod action;
pub mod alertmanager;
pub mod deliver;
pub mod email;
pub mod group;
pub mod http;
pub mod jobs;
pub mod log;
pub mod matcher;
pub mod receiver;
pub mod route;
pub mod secret;
pub mod silence;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use action::Action;
pub use receiver::{Receiver, ReceiverKind};
pub use route::Route;

use crate::alert::Alert;
use crate::clock::rfc3339;
use crate::store::NewNotification;

/// Where alerts go, as the rule files say: the receivers, the route tree
/// and the actions (Alertmanager's defaults when no file gives a route).
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub receivers: Vec<Receiver>,
    pub route: Route,
    pub actions: Vec<Action>,
}

/// What every delivery attempt may use: the HTTP client, and where users
/// reach the collector (for links).
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub client: &'a reqwest::Client,
    pub external_url: Option<&'a str>,
}

/// Why one delivery attempt failed, and whether another attempt may pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub message: String,
    /// Worth another attempt later (a timeout, a 5xx, a secret not there yet).
    pub retry: bool,
    /// The receiver's HTTP status, when it answered one.
    pub status: Option<u16>,
}

impl DeliveryError {
    /// A failure that may pass later.
    pub fn retry(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            message: message.into(),
            retry: true,
            status: None,
        }
    }

    /// A failure that will not pass by trying again (dead-lettered at once).
    pub fn permanent(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            message: message.into(),
            retry: false,
            status: None,
        }
    }
}

/// Attempts before a notification is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 8;
/// First retry delay; doubled per attempt up to `MAX_BACKOFF_MS`.
pub const FIRST_BACKOFF_MS: i64 = 1000;
pub const MAX_BACKOFF_MS: i64 = 5 * 60 * 1000;

/// A queued message, rendered per receiver kind at delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub receiver: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// The same for every attempt of this message (receivers deduplicate on it).
    pub idempotency_key: String,
    pub alerts: Vec<AlertView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// When the condition began to hold (RFC 3339).
    pub starts_at: String,
    pub fired_at: Option<String>,
    pub ends_at: Option<String>,
    pub value: f64,
    pub threshold: f64,
    pub fingerprint: String,
    /// The window's drifted features: (feature, default test, statistic).
    #[serde(default)]
    pub top_features: Vec<(String, String, f64)>,
}

/// Where users see every active alert (the collector's `/v1/alerts`), for
/// links in notifications; none without `external_url`.
pub fn alerts_link(external_url: Option<&str>) -> Option<String> {
    external_url.map(|u| format!("{u}/v1/alerts"))
}

/// `[FIRING] FeatureDrift credit`, or `[FIRING:3] ...` for a message of
/// several alerts (counting the firing ones, as Alertmanager does).
pub fn title(m: &Message) -> String {
    let first = m.alerts.first();
    let label = |k: &str| {
        first
            .and_then(|a| a.labels.get(k))
            .map_or("", String::as_str)
    };
    let status = m.status.to_uppercase();
    let status = if m.alerts.len() > 1 {
        let n = m.alerts.iter().filter(|a| a.status == m.status).count();
        format!("{status}:{n}")
    } else {
        status
    };
    format!("[{status}] {} {}", label("alertname"), label("model"))
        .trim_end()
        .to_string()
}

/// A stable 64-bit FNV-1a fingerprint of an alert's identity, in hex.
pub fn fingerprint(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub fn view(a: &Alert, status: &str, ends_ms: Option<i64>) -> AlertView {
    AlertView {
        status: status.to_string(),
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        starts_at: rfc3339(a.active_since_ms),
        fired_at: a.fired_at_ms.map(rfc3339),
        ends_at: ends_ms.map(rfc3339),
        value: a.value,
        threshold: a.threshold,
        fingerprint: fingerprint(&a.key()),
        top_features: a.top_features.clone(),
    }
}

/// A message of `alerts` to `receiver`, with a key that every retry of it
/// carries (receivers deduplicate on it).
pub(crate) fn queue(
    receiver: &str,
    alerts: Vec<AlertView>,
    idempotency_key: String,
) -> NewNotification {
    let first = alerts.first().and_then(|a| a.labels.get("model"));
    let model = first
        .filter(|m| alerts.iter().all(|a| a.labels.get("model") == Some(*m)))
        .cloned();
    let status = if alerts.iter().any(|a| a.status == "firing") {
        "firing"
    } else {
        "resolved"
    };
    let message = Message {
        receiver: receiver.to_string(),
        status: status.to_string(),
        idempotency_key,
        alerts,
    };
    NewNotification {
        receiver: receiver.to_string(),
        payload: serde_json::to_string(&message).unwrap_or_default(),
        model,
    }
}

/// Where an alert goes: the receivers its rule names (grouped as the root
/// route says), or else the receivers of the routes its labels reach.
pub fn targets<'a>(routing: &'a Routing, a: &Alert) -> Vec<(&'a Route, &'a Receiver)> {
    let find = |name: &str| routing.receivers.iter().find(|r| r.name == name);
    if !a.receivers.is_empty() {
        return a
            .receivers
            .iter()
            .filter_map(|name| Some((&routing.route, find(name)?)))
            .collect();
    }
    routing
        .route
        .find(&a.labels)
        .into_iter()
        .filter_map(|route| Some((route, find(route.receiver.as_deref()?)?)))
        .collect()
}

/// When to try again after `attempts` failed attempts (None: give up).
/// `jitter` in [0, 1) spreads retries between 0.5× and 1.5× the delay.
pub fn retry_at(now_ms: i64, attempts: u32, jitter: f64) -> Option<i64> {
    if attempts >= MAX_ATTEMPTS {
        return None;
    }
    let base = FIRST_BACKOFF_MS
        .saturating_mul(1 << attempts.saturating_sub(1).min(20))
        .min(MAX_BACKOFF_MS);
    Some(now_ms + (base as f64 * (0.5 + jitter)) as i64)
}

/// `text` cut to at most `max` characters, ending in "…" when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A firing message of one `FeatureDrift` alert with this summary, for tests.
#[cfg(test)]
pub fn test_message(summary: &str) -> Message {
    Message {
        receiver: "slack".into(),
        status: "firing".into(),
        idempotency_key: "k".into(),
        alerts: vec![AlertView {
            status: "firing".into(),
            labels: [
                ("alertname", "FeatureDrift"),
                ("model", "credit"),
                ("feature", "age"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
            annotations: [("summary".to_string(), summary.to_string())].into(),
            starts_at: "2026-11-29T10:00:00Z".into(),
            fired_at: Some("2026-11-29T10:05:00Z".into()),
            ends_at: None,
            value: 0.42,
            threshold: 0.2,
            fingerprint: "f".into(),
            top_features: Vec::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_gives_up() {
        assert_eq!(retry_at(0, 1, 0.5), Some(1000));
        assert_eq!(retry_at(0, 2, 0.5), Some(2000));
        assert_eq!(retry_at(0, 3, 0.0), Some(2000));
        assert_eq!(retry_at(0, 3, 0.999).map(|t| t / 100), Some(59));
        assert_eq!(retry_at(0, 7, 0.5), Some(64_000));
        assert_eq!(retry_at(0, MAX_ATTEMPTS, 0.5), None);
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }
}
