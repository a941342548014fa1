//! Notifications: every alert change becomes one message per receiver the
//! alert names, queued in the SQLite outbox in the same transaction as the
//! alert states (so a crash neither loses nor invents one), then delivered
//! at least once by `deliver::run` with exponential backoff and jitter, and
//! dead-lettered after `MAX_ATTEMPTS`.

pub mod deliver;
pub mod email;
pub mod silence;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rules::engine::{rfc3339, Alert, Change};
use crate::rules::Receiver;
use crate::store::NewNotification;

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

/// A stable 64-bit FNV-1a fingerprint of an alert's identity, in hex.
pub fn fingerprint(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn view(a: &Alert, status: &str, ends_ms: Option<i64>) -> AlertView {
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

/// One alert's message to `receiver`, keyed by the alert, its status and
/// the time of the change (`at_ms`) so every retry carries the same key.
fn queue(receiver: &str, v: AlertView, at_ms: i64) -> NewNotification {
    let message = Message {
        receiver: receiver.to_string(),
        status: v.status.clone(),
        idempotency_key: format!("{}-{}-{at_ms}", v.fingerprint, v.status),
        alerts: vec![v],
    };
    NewNotification {
        receiver: receiver.to_string(),
        payload: serde_json::to_string(&message).unwrap_or_default(),
    }
}

/// The messages for one evaluation's changes: one per change and receiver
/// (resolved ones only to receivers with `send_resolved`). A receiver an
/// alert names that is not configured is skipped (rule files are checked
/// for that at load).
pub fn messages(changes: &[Change], receivers: &[Receiver]) -> Vec<NewNotification> {
    let mut out = Vec::new();
    for change in changes {
        let (alert, status, at_ms, ends) = match change {
            Change::Firing(a) => (
                a,
                "firing",
                a.fired_at_ms.unwrap_or(a.active_since_ms),
                None,
            ),
            Change::Resolved(a, at) => (a, "resolved", *at, Some(*at)),
        };
        for name in &alert.receivers {
            let Some(r) = receivers.iter().find(|r| &r.name == name) else {
                continue;
            };
            if status == "resolved" && !r.send_resolved {
                continue;
            }
            out.push(queue(name, view(alert, status, ends), at_ms));
        }
    }
    out
}

/// How often a firing alert is sent again to Alertmanager receivers, which
/// resolve an alert that is not refreshed before its `endsAt` (4 minutes).
pub const ALERTMANAGER_RESEND_MS: i64 = 60_000;

/// Messages that refresh firing alerts at Alertmanager receivers: one per
/// alert and receiver once `ALERTMANAGER_RESEND_MS` has passed since the
/// last (`last` remembers when, by alert and receiver).
pub fn alertmanager_resends<'a>(
    firing: impl Iterator<Item = &'a Alert>,
    receivers: &[Receiver],
    last: &mut std::collections::HashMap<String, i64>,
    now_ms: i64,
) -> Vec<NewNotification> {
    let mut out = Vec::new();
    let mut live = std::collections::HashSet::new();
    for a in firing {
        for name in &a.receivers {
            let Some(r) = receivers.iter().find(|r| &r.name == name) else {
                continue;
            };
            if !matches!(
                r.kind,
                crate::rules::receivers::ReceiverKind::Alertmanager { .. }
            ) {
                continue;
            }
            let key = format!("{}\u{1f}{name}", a.key());
            live.insert(key.clone());
            let sent = last.entry(key).or_insert(now_ms);
            if now_ms - *sent < ALERTMANAGER_RESEND_MS {
                continue;
            }
            *sent = now_ms;
            out.push(queue(name, view(a, "firing", None), now_ms));
        }
    }
    last.retain(|k, _| live.contains(k));
    out
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
