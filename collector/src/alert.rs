//! An alert: what the rule engine keeps of a rule's condition on one
//! series (its state, timers, value and targets) and what notifications,
//! silences and actions are made from. Its identity is its rule group and
//! label set, kept across evaluations and restarts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Firing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub group: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub state: State,
    pub active_since_ms: i64,
    pub fired_at_ms: Option<i64>,
    /// Last evaluation at which the condition held.
    pub last_true_ms: i64,
    pub value: f64,
    pub threshold: f64,
    pub receivers: Vec<String>,
    /// The window's drifted features at the last evaluation, most drifted
    /// first: (feature, default test, statistic), for notifications.
    #[serde(default)]
    pub top_features: Vec<(String, String, f64)>,
    /// A silence matched it at the last evaluation (not notified, no actions).
    #[serde(default, alias = "unnotified")]
    pub silenced: bool,
    /// The rule's actions (retraining webhooks).
    #[serde(default)]
    pub actions: Vec<String>,
    /// This firing has had its actions called (or held back by a cooldown).
    #[serde(default)]
    pub actions_done: bool,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// The identity of an alert: its group and label set.
    pub fn key(&self) -> String {
        key(&self.group, &self.labels)
    }
}

#[cfg(test)]
impl Alert {
    /// A firing `FeatureDrift` alert of model `credit` for `feature` in the
    /// 1h window, fired at `at_ms`, for tests.
    pub fn firing_for_test(feature: &str, at_ms: i64) -> Alert {
        Alert {
            group: "g".into(),
            labels: [
                ("alertname", "FeatureDrift"),
                ("model", "credit"),
                ("feature", feature),
                ("window", "1h"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
            annotations: BTreeMap::new(),
            state: State::Firing,
            active_since_ms: at_ms,
            fired_at_ms: Some(at_ms),
            last_true_ms: at_ms,
            value: 0.4,
            threshold: 0.2,
            receivers: Vec::new(),
            top_features: vec![("age".into(), "psi".into(), 0.4)],
            silenced: false,
            actions: Vec::new(),
            actions_done: false,
        }
    }
}

pub fn key(group: &str, labels: &BTreeMap<String, String>) -> String {
    let mut k = group.to_string();
    for (n, v) in labels {
        k.push('\u{1f}');
        k.push_str(n);
        k.push('=');
        k.push_str(v);
    }
    k
}
