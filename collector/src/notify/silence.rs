//! Silences, as in Alertmanager: label matchers with a start and an end.
//! A firing alert that an active silence matches is not notified; if it
//! still fires when the silence ends it is notified then, and a resolution
//! is only sent for alerts whose firing was sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::matcher::Matcher;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
}

impl Silence {
    pub fn state(&self, now_ms: i64) -> &'static str {
        if now_ms < self.starts_at_ms {
            "pending"
        } else if now_ms < self.ends_at_ms {
            "active"
        } else {
            "expired"
        }
    }

    /// Whether the silence is active now and matches every matcher.
    pub fn silences(&self, labels: &BTreeMap<String, String>, now_ms: i64) -> bool {
        self.state(now_ms) == "active" && self.matchers.iter().all(|m| m.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silence_mutes_matching_alerts_while_it_is_active() {
        let labels: BTreeMap<String, String> = [("alertname", "FeatureDrift"), ("feature", "age")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let s = Silence {
            id: "s".into(),
            matchers: vec![Matcher::parse("feature=age").expect("m")],
            starts_at_ms: 10,
            ends_at_ms: 20,
            created_by: "me".into(),
            comment: "known".into(),
        };
        assert!(!s.silences(&labels, 5) && s.silences(&labels, 15) && !s.silences(&labels, 20));
    }
}
