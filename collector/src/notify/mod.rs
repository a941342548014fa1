//! Notifications: alerts reach receivers through the route tree (or the
//! receivers their rule names), grouped into messages as Alertmanager does
//! it (`group`), or pushed one by one to Alertmanager receivers; firing
//! alerts may call actions (`action`). Every message is queued in the
//! SQLite outbox in the same transaction as the alert and group states (so
//! a crash neither loses nor invents one), then delivered at least once by
//! `deliver::run` with exponential backoff and jitter, and dead-lettered
//! after `MAX_ATTEMPTS`.

pub mod action;
pub mod deliver;
pub mod email;
pub mod group;
pub mod silence;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::rules::engine::{rfc3339, Alert};
use crate::rules::receivers::ReceiverKind;
use crate::rules::{Receiver, Route, RuleSet};
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
fn queue(receiver: &str, alerts: Vec<AlertView>, idempotency_key: String) -> NewNotification {
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
    }
}

/// Where an alert goes: the receivers its rule names (grouped as the root
/// route says), or else the receivers of the routes its labels reach.
pub fn targets<'a>(rules: &'a RuleSet, a: &Alert) -> Vec<(&'a Route, &'a Receiver)> {
    let find = |name: &str| rules.receivers.iter().find(|r| r.name == name);
    if !a.receivers.is_empty() {
        return a
            .receivers
            .iter()
            .filter_map(|name| Some((&rules.route, find(name)?)))
            .collect();
    }
    rules
        .route
        .find(&a.labels)
        .into_iter()
        .filter_map(|route| Some((route, find(route.receiver.as_deref()?)?)))
        .collect()
}

fn is_alertmanager(r: &Receiver) -> bool {
    matches!(r.kind, ReceiverKind::Alertmanager { .. })
}

/// How often a firing alert is sent again to Alertmanager receivers, which
/// resolve an alert that is not refreshed before its `endsAt` (4 minutes).
pub const ALERTMANAGER_RESEND_MS: i64 = 60_000;

/// Messages to Alertmanager receivers, which group, route and repeat by
/// themselves (as Prometheus does it): each firing alert at once and again
/// every `ALERTMANAGER_RESEND_MS`, each resolution at once. `last`
/// remembers when each alert was last sent to each receiver.
pub fn alertmanager_pushes(
    rules: &RuleSet,
    firing: &[&Alert],
    resolved: &[(&Alert, i64)],
    last: &mut HashMap<String, i64>,
    now_ms: i64,
) -> Vec<NewNotification> {
    let mut out = Vec::new();
    let mut live = HashSet::new();
    for a in firing {
        for (_, r) in targets(rules, a)
            .into_iter()
            .filter(|(_, r)| is_alertmanager(r))
        {
            let key = format!("{}\u{1f}{}", a.key(), r.name);
            live.insert(key.clone());
            if last
                .get(&key)
                .is_some_and(|t| now_ms - t < ALERTMANAGER_RESEND_MS)
            {
                continue;
            }
            last.insert(key, now_ms);
            let v = view(a, "firing", None);
            let k = format!("{}-firing-{now_ms}", v.fingerprint);
            out.push(queue(&r.name, vec![v], k));
        }
    }
    for (a, at) in resolved {
        for (_, r) in targets(rules, a)
            .into_iter()
            .filter(|(_, r)| is_alertmanager(r))
        {
            if r.send_resolved {
                let v = view(a, "resolved", Some(*at));
                let k = format!("{}-resolved-{at}", v.fingerprint);
                out.push(queue(&r.name, vec![v], k));
            }
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
