//! Wire types shared by the agent and the collector (`POST /v1/events`,
//! `POST /v1/feedback`), exactly as DESIGN.md fixes them. Versioned under
//! `/v1/`: fields may be added, never renamed.
#![forbid(unsafe_code)]

pub mod subjects;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A feature value as sent: number, string, boolean or null (missing).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FeatureValue {
    Bool(bool),
    Number(f64),
    String(String),
    Null,
}

// A visitor instead of `#[serde(untagged)]`: untagged deserialisation tries
// each variant in turn and formats an error for every miss, which dominated
// the collector's ingest profile.
impl<'de> Deserialize<'de> for FeatureValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FeatureValue, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FeatureValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, string, boolean or null")
            }
            fn visit_bool<E>(self, v: bool) -> Result<FeatureValue, E> {
                Ok(FeatureValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<FeatureValue, E> {
                Ok(FeatureValue::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<FeatureValue, E> {
                Ok(FeatureValue::Number(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<FeatureValue, E> {
                Ok(FeatureValue::Number(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<FeatureValue, E> {
                Ok(FeatureValue::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<FeatureValue, E> {
                Ok(FeatureValue::String(v))
            }
            fn visit_unit<E>(self) -> Result<FeatureValue, E> {
                Ok(FeatureValue::Null)
            }
            fn visit_none<E>(self) -> Result<FeatureValue, E> {
                Ok(FeatureValue::Null)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// What a model said for one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Output {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Predicted class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Probability of the positive class (binary tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Class → probability (multiclass tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<BTreeMap<String, f64>>,
    /// Regression output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Set when the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One observed inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub model: String,
    pub request_id: String,
    /// RFC 3339 timestamp.
    pub timestamp: String,
    #[serde(default)]
    pub features: BTreeMap<String, FeatureValue>,
    pub champion: Output,
    /// Absent when the shadow did not score the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Output>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The experiment arm that served the request (the agent's traffic
    /// split), absent outside experiments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
}

/// Body of `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub events: Vec<Event>,
}

/// A ground-truth label arriving later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub model: String,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Regression ground truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// What the request earned (a conversion, a click, revenue), for
    /// experiments whose metric is `reward`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
}

/// Body of `POST /v1/feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackBatch {
    pub labels: Vec<Label>,
}

/// One refused item of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemError {
    pub index: usize,
    pub error: String,
}

/// Most characters of a client's text quoted back in an error.
pub const QUOTED_CHARS: usize = 64;

/// A client's text as an error quotes it: Debug-quoted, and clipped to
/// `QUOTED_CHARS` with its full size said, so that an error reply never
/// grows with what was sent.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

/// Longest error message a reply carries, in bytes.
pub const MAX_ERROR_BYTES: usize = 512;

/// An error message cut to `MAX_ERROR_BYTES` (at a character boundary),
/// whatever it quotes: the last guard on an error reply's size.
pub fn clip(mut message: String) -> String {
    if message.len() > MAX_ERROR_BYTES {
        let mut end = MAX_ERROR_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// Reply to both endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestReply {
    pub accepted: usize,
    pub rejected: usize,
    pub errors: Vec<ItemError>,
}

/// Whether a name may travel in events, metric labels and URL paths as
/// it is: letters, digits, `_`, `.` and `-` (experiment and arm names).
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// What is wrong with experiment arms as configured, the agent's and the
/// collector's alike: each (name, weight) in order; plain distinct names,
/// non-negative weights with a positive sum.
pub fn arm_problems<'a>(arms: impl IntoIterator<Item = (&'a str, f64)>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut total = 0.0;
    for (j, (name, weight)) in arms.into_iter().enumerate() {
        if !plain_name(name) {
            problems.push(format!(
                "arms[{j}].name: {name:?}: use letters, digits, `_`, `.` and `-`"
            ));
        }
        if !names.insert(name) {
            problems.push(format!("arms[{j}] ({name}): the name is used twice"));
        }
        if !(weight.is_finite() && weight >= 0.0) {
            problems.push(format!(
                "arms[{j}] ({name}).weight: must be a non-negative number"
            ));
        }
        total += weight;
    }
    if !(total.is_finite() && total > 0.0) {
        problems.push("arms: the weights must sum to a positive number".to_string());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_is_clipped_with_its_size() {
        assert_eq!(quoted("a\"b"), r#""a\"b""#);
        let long = "é".repeat(1000);
        let q = quoted(&long);
        assert_eq!(q, format!("{:?}… (2000 bytes)", "é".repeat(QUOTED_CHARS)));
        let clipped = clip("é".repeat(MAX_ERROR_BYTES));
        assert!(clipped.len() <= MAX_ERROR_BYTES + '…'.len_utf8());
        assert_eq!(clip("short".into()), "short");
    }

    #[test]
    fn design_example_round_trips() {
        let text = r#"{"events": [{
          "model": "credit-risk", "request_id": "9f1c2a", "timestamp": "2026-11-28T12:00:00.123Z",
          "features": {"age": 42.0, "country": "DE", "has_card": true, "bureau_score": null},
          "champion": {"version": "v3", "label": "1", "score": 0.83, "latency_ms": 12.5},
          "shadow":   {"version": "v4-rc1", "label": "0", "score": 0.41, "latency_ms": 3.1},
          "node": "node-a"}]}"#;
        let batch: EventBatch = serde_json::from_str(text).expect("the design example parses");
        let e = &batch.events[0];
        assert_eq!(e.features["age"], FeatureValue::Number(42.0));
        assert_eq!(e.features["country"], FeatureValue::String("DE".into()));
        assert_eq!(e.features["has_card"], FeatureValue::Bool(true));
        assert_eq!(e.features["bureau_score"], FeatureValue::Null);
        assert_eq!(e.shadow.as_ref().and_then(|s| s.score), Some(0.41));
        let again: EventBatch =
            serde_json::from_str(&serde_json::to_string(&batch).expect("serialises"))
                .expect("parses");
        assert_eq!(again, batch);
    }

    #[test]
    fn feature_values_of_every_kind_and_refusals() {
        let f: BTreeMap<String, FeatureValue> =
            serde_json::from_str(r#"{"a": 1, "b": -2, "c": 2.5, "d": "x", "e": false, "f": null}"#)
                .expect("parses");
        assert_eq!(f["a"], FeatureValue::Number(1.0));
        assert_eq!(f["b"], FeatureValue::Number(-2.0));
        assert_eq!(f["c"], FeatureValue::Number(2.5));
        assert_eq!(f["d"], FeatureValue::String("x".into()));
        assert_eq!(f["e"], FeatureValue::Bool(false));
        assert_eq!(f["f"], FeatureValue::Null);
        let err = serde_json::from_str::<BTreeMap<String, FeatureValue>>(r#"{"a": [1]}"#)
            .expect_err("arrays are refused");
        assert!(
            err.to_string()
                .contains("a number, string, boolean or null"),
            "{err}"
        );
    }

    #[test]
    fn feedback_accepts_class_or_value() {
        let b: FeedbackBatch = serde_json::from_str(
            r#"{"labels": [{"model": "m", "request_id": "a", "label": "1"}, {"model": "m", "request_id": "b", "value": 12.3}]}"#,
        )
        .expect("parses");
        assert_eq!(b.labels[0].label.as_deref(), Some("1"));
        assert_eq!(b.labels[1].value, Some(12.3));
    }
}
