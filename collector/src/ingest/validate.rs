//! Validation of one event or label against the models: known model,
//! RFC 3339 time not too far ahead, known features of the right types,
//! outputs typed like the reference's prediction column. A bad event gets
//! its own error and a counted reason; it never poisons its batch.

use driftwatch_protocol::{quoted, Event, FeatureValue, ItemError, Label, Output};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::BodyError;
use crate::config::{OutputField, Task};
use crate::export::metrics::RejectReason;
use crate::models::{Model, Prediction};
use crate::stats::reconstruction::Input;
use crate::stats::{ColumnType, Key};
use crate::store::NewLabel;
use crate::window::{Accepted, Value};

/// An event as it arrives: the wire's `Event`, its features borrowed from
/// the text where they need no unescaping and kept in a list (validation
/// maps them to the model's columns; nothing keeps them by name).
#[derive(Deserialize)]
struct Incoming<'a> {
    model: String,
    request_id: String,
    timestamp: String,
    #[serde(default, borrow)]
    features: Features<'a>,
    champion: Output,
    #[serde(default)]
    shadow: Option<Output>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    arm: Option<String>,
}

#[derive(Default)]
struct Features<'a>(Vec<(std::borrow::Cow<'a, str>, FeatureValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Features<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Features<'a>, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Features<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of feature names to values")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Features<'a>, M::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(entry) = map.next_entry::<Name<'a>, FeatureValue>()? {
                    out.push((entry.0 .0, entry.1));
                }
                Ok(Features(out))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// A feature name, borrowed when it can be.
struct Name<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name<'a>, D::Error> {
        #[derive(Deserialize)]
        struct Borrowed<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);
        Borrowed::deserialize(d).map(|b| Name(b.0))
    }
}

#[derive(Deserialize)]
struct LabelEnvelope<'a> {
    #[serde(borrow)]
    labels: Vec<&'a RawValue>,
}

/// A label that passed validation: its index in the batch, its model's index, the label.
pub type ValidLabel = (usize, usize, NewLabel);
/// A refused label: the counted reason and the error for the reply.
pub type LabelRefusal = (RejectReason, ItemError);

/// Parses `{"labels": [...]}`; each label is checked on its own against the
/// models (known model, a class label for classification, a finite value for
/// regression).
pub fn parse_labels(
    body: &[u8],
    models: &[Model],
) -> Result<(Vec<LabelRefusal>, Vec<ValidLabel>), BodyError> {
    let text =
        std::str::from_utf8(body).map_err(|e| BodyError::Malformed(format!("not UTF-8: {e}")))?;
    let env: LabelEnvelope = serde_json::from_str(text)
        .map_err(|e| BodyError::Malformed(format!("expected {{\"labels\": [...]}}: {e}")))?;
    let mut refused = Vec::new();
    let mut valid = Vec::new();
    for (index, raw) in env.labels.iter().enumerate() {
        let fail = |reason, error: String| (reason, ItemError { index, error });
        let label: Label = match serde_json::from_str(raw.get()) {
            Ok(l) => l,
            Err(e) => {
                refused.push(fail(
                    RejectReason::MalformedLabel,
                    format!("invalid label: {e}"),
                ));
                continue;
            }
        };
        let Some(mi) = models.iter().position(|m| m.name == label.model) else {
            refused.push(fail(
                RejectReason::UnknownModel,
                format!("unknown model {}", quoted(&label.model)),
            ));
            continue;
        };
        let rewarded = models[mi]
            .experiments
            .iter()
            .any(|e| e.metric == crate::config::experiment::Metric::Reward);
        if let Some(r) = label.reward {
            let why = if !r.is_finite() {
                Some("\"reward\" must be a finite number".to_string())
            } else if !rewarded {
                Some(format!(
                    "model {} has no experiment whose metric is reward; \"reward\" is not taken",
                    label.model
                ))
            } else {
                None
            };
            if let Some(why) = why {
                refused.push(fail(RejectReason::MalformedLabel, why));
                continue;
            }
        }
        let ok = match models[mi].task {
            Task::Regression => label.value.is_some_and(f64::is_finite),
            _ => label.label.is_some(),
        } || label.reward.is_some();
        if !ok {
            let want = if models[mi].task == Task::Regression {
                "a finite \"value\""
            } else {
                "a \"label\" (or a \"reward\")"
            };
            refused.push(fail(
                RejectReason::MalformedLabel,
                format!("a label for model {} needs {want}", label.model),
            ));
            continue;
        }
        valid.push((
            index,
            mi,
            NewLabel {
                model: label.model,
                request_id: label.request_id,
                label: label.label,
                value: label.value,
                reward: label.reward,
            },
        ));
    }
    Ok((refused, valid))
}

pub type Rejection = (RejectReason, String);

/// Validates one event's text against the models.
pub fn validate(
    json: &str,
    models: &[Model],
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<Accepted, Rejection> {
    let incoming: Incoming<'_> = serde_json::from_str(json)
        .map_err(|e| (RejectReason::MalformedEvent, format!("invalid event: {e}")))?;
    // In the order sent: the last of a repeated name wins, as in a map.
    let features = incoming.features.0;
    let event = Event {
        model: incoming.model,
        request_id: incoming.request_id,
        timestamp: incoming.timestamp,
        features: Default::default(),
        champion: incoming.champion,
        shadow: incoming.shadow,
        node: incoming.node,
        arm: incoming.arm,
    };
    let Some(model_idx) = models.iter().position(|m| m.name == event.model) else {
        return Err((
            RejectReason::UnknownModel,
            format!("unknown model {}", quoted(&event.model)),
        ));
    };
    let model = &models[model_idx];
    let ts = chrono::DateTime::parse_from_rfc3339(&event.timestamp).map_err(|e| {
        (
            RejectReason::BadTimestamp,
            format!(
                "timestamp {} is not RFC 3339: {e}",
                quoted(&event.timestamp)
            ),
        )
    })?;
    let ts_ms = ts.timestamp_millis();
    if ts_ms > now_ms + max_skew_ms {
        return Err((
            RejectReason::FutureTimestamp,
            format!(
                "timestamp {} is more than {} s in the future",
                quoted(&event.timestamp),
                max_skew_ms / 1000
            ),
        ));
    }
    let mut values = vec![Value::Missing; model.features.len()];
    for (name, value) in &features {
        let Some(i) = model.feature_index(name) else {
            // Of several unknown names, the first by name (as a map orders them).
            let first = features
                .iter()
                .map(|(n, _)| n)
                .filter(|n| model.feature_index(n).is_none())
                .min()
                .unwrap_or(name);
            return Err((
                RejectReason::UnknownFeature,
                format!("model {} has no feature {}", model.name, quoted(first)),
            ));
        };
        let f = &model.features[i];
        values[i] = match (f.column_type, value) {
            (_, FeatureValue::Null) => Value::Missing,
            (ColumnType::Numeric, FeatureValue::Number(x)) => Value::Num(*x),
            (ColumnType::Categorical, FeatureValue::Number(x))
                if f.numeric_keys || f.reference.is_empty() =>
            {
                Value::Cat(Key::Num(*x))
            }
            (ColumnType::Categorical, FeatureValue::String(s)) if !f.numeric_keys => {
                Value::Cat(Key::Str(s.clone()))
            }
            (ColumnType::Categorical, FeatureValue::Bool(b)) if !f.numeric_keys => {
                Value::Cat(Key::Str(b.to_string()))
            }
            (t, v) => {
                let want = match (t, f.numeric_keys) {
                    (ColumnType::Numeric, _) | (ColumnType::Categorical, true) => "a number",
                    (ColumnType::Categorical, false) => "a string or boolean",
                };
                return Err((
                    RejectReason::WrongType,
                    format!(
                        "feature {} must be {want} or null, got {}",
                        quoted(name),
                        describe(v)
                    ),
                ));
            }
        };
    }
    let predicted = match &model.prediction {
        None => [None, None],
        Some(p) => [
            Some(output_value(p, &event.champion)),
            event.shadow.as_ref().map(|o| output_value(p, o)),
        ],
    };
    // What the estimator takes of each role's output (`None` where it
    // cannot use it: counted per window as unscored).
    let scored = match &model.estimator {
        None => [None, None],
        Some(e) => {
            // A feature's value as sent (DLE's nanny models take features).
            let feature = |name: &str| -> Option<FeatureValue> {
                Some(values[model.feature_index(name)?].to_feature_value())
            };
            [
                e.row(&feature, &event.champion),
                event.shadow.as_ref().and_then(|o| e.row(&feature, o)),
            ]
        }
    };
    // The row's reconstruction error (multivariate drift).
    let reconstruction = model.reconstruction.as_ref().map(|r| {
        r.fitted.row_error(|j| match &values[r.features[j]] {
            Value::Missing => Input::Missing,
            Value::Num(x) => Input::Num(*x),
            Value::Cat(k) => Input::Cat(k),
        })
    });
    Ok(Accepted {
        model: model_idx,
        ts_ms,
        values,
        predicted,
        scored,
        reconstruction,
        event,
        json: String::new(),
    })
}

/// An output's field, typed like the reference's prediction column; a
/// failed call, an absent or non-finite field, or a label that is not a
/// number where the reference's labels are numbers counts as missing.
fn output_value(p: &Prediction, output: &Output) -> Value {
    if output.error.is_some() {
        return Value::Missing;
    }
    let number = |x: Option<f64>| {
        x.filter(|x| x.is_finite())
            .map_or(Value::Missing, Value::Num)
    };
    match p.output {
        OutputField::Score => number(output.score),
        OutputField::Value => number(output.value),
        OutputField::Label => match &output.label {
            None => Value::Missing,
            Some(s) if p.reference.numeric_keys => match s.trim().parse::<f64>() {
                Ok(x) if x.is_finite() => Value::Cat(Key::Num(x)),
                _ => Value::Missing,
            },
            Some(s) => Value::Cat(Key::Str(s.clone())),
        },
    }
}

fn describe(v: &FeatureValue) -> String {
    match v {
        FeatureValue::Bool(b) => format!("boolean {b}"),
        FeatureValue::Number(x) => format!("number {x}"),
        FeatureValue::String(s) => format!("string {}", quoted(s)),
        FeatureValue::Null => "null".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reward_needs_an_experiment_that_takes_it() {
        let plain = crate::models::example_model("");
        let rewarded = crate::models::example_model(
            "    experiments:\n      - {name: t, metric: reward, arms: [{name: a, weight: 1}, {name: b, weight: 1}]}\n",
        );
        let body = br#"{"labels": [
            {"model": "credit", "request_id": "r1", "reward": 1.5},
            {"model": "credit", "request_id": "r2", "label": "1", "reward": 0},
            {"model": "credit", "request_id": "r3"}]}"#;
        let (refused, valid) = parse_labels(body, &[plain]).expect("envelope");
        let errors: Vec<&str> = refused.iter().map(|(_, e)| e.error.as_str()).collect();
        assert_eq!(valid.len(), 0, "{errors:?}");
        assert!(
            errors[0].contains("no experiment whose metric is reward"),
            "{errors:?}"
        );
        assert!(errors[2].contains("needs a \"label\""), "{errors:?}");
        let (refused, valid) = parse_labels(body, &[rewarded]).expect("envelope");
        assert_eq!(refused.len(), 1, "a label with neither label nor reward");
        assert_eq!(valid.len(), 2);
        assert_eq!(valid[0].2.reward, Some(1.5));
        assert_eq!(valid[0].2.label, None);
    }

    #[test]
    fn outputs_take_the_reference_columns_type() {
        let column = |numeric_keys: bool| crate::models::Feature {
            name: "prediction".into(),
            column_type: ColumnType::Categorical,
            reference: crate::stats::Sample::Categorical(crate::stats::Counts::from_pairs(vec![])),
            reference_missing: 0,
            integer: false,
            numeric_keys,
        };
        let label = |numeric_keys| Prediction {
            output: OutputField::Label,
            reference: column(numeric_keys),
        };
        let out = |label: &str| Output {
            label: Some(label.into()),
            score: Some(0.25),
            ..Output::default()
        };
        assert_eq!(
            output_value(&label(true), &out(" 1 ")),
            Value::Cat(Key::Num(1.0))
        );
        assert_eq!(output_value(&label(true), &out("yes")), Value::Missing);
        assert_eq!(
            output_value(&label(false), &out("yes")),
            Value::Cat(Key::Str("yes".into()))
        );
        let failed = Output {
            error: Some("timeout".into()),
            ..out("1")
        };
        assert_eq!(output_value(&label(false), &failed), Value::Missing);
        let score = Prediction {
            output: OutputField::Score,
            reference: column(false),
        };
        assert_eq!(output_value(&score, &out("1")), Value::Num(0.25));
        assert_eq!(output_value(&score, &Output::default()), Value::Missing);
    }

    #[test]
    fn feature_names_may_be_escaped_and_the_last_of_a_repeated_one_wins() {
        let models = [crate::models::example_model("")];
        let event = |features: &str| {
            format!(
                r#"{{"model": "credit", "request_id": "r", "timestamp": "2026-12-06T00:00:00Z", "features": {{{features}}}, "champion": {{"label": "1"}}}}"#
            )
        };
        let age = models[0].feature_index("age").expect("age");
        let a = validate(
            &event(r#""\u0061ge": 41, "age": 42"#),
            &models,
            i64::MAX / 2,
            0,
        )
        .expect("valid");
        assert_eq!(a.values[age], Value::Num(42.0));
        let a = validate(
            &event(r#""age": 42, "a\u0067e": 43"#),
            &models,
            i64::MAX / 2,
            0,
        )
        .expect("valid");
        assert_eq!(a.values[age], Value::Num(43.0));
        // Of two unknown names, the first by name is named.
        let (reason, error) =
            validate(&event(r#""zz": 1, "yy": 2"#), &models, i64::MAX / 2, 0).expect_err("unknown");
        assert_eq!(reason, RejectReason::UnknownFeature);
        assert!(error.contains("\"yy\""), "{error}");
        let (reason, _) =
            validate(&event(r#""age": [1]"#), &models, i64::MAX / 2, 0).expect_err("malformed");
        assert_eq!(reason, RejectReason::MalformedEvent);
    }
}
