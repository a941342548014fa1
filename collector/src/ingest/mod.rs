//! Ingest of `POST /v1/events`: decompression with a size bound, the batch
//! envelope, and per-event validation against the model's features. A bad
//! event gets its own error and a counted reason; it never poisons the
//! good events of its batch.

use std::io::Read;

use driftwatch_protocol::{Event, FeatureValue, ItemError, Label, Output};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{OutputField, Task};
use crate::export::metrics::RejectReason;
use crate::models::{Model, Prediction};
use crate::stats::{ColumnType, Key};
use crate::store::NewLabel;
use crate::window::Value;

/// Request-level failures, before any event is looked at.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("unsupported Content-Encoding {0:?} (gzip, zstd or identity)")]
    Encoding(String),
    #[error("cannot decompress the body: {0}")]
    Decompress(String),
    #[error("malformed body: {0}")]
    Malformed(String),
}

impl BodyError {
    pub fn reason(&self) -> RejectReason {
        match self {
            BodyError::TooLarge(_) => RejectReason::TooLarge,
            BodyError::Encoding(_) => RejectReason::UnsupportedEncoding,
            BodyError::Decompress(_) | BodyError::Malformed(_) => RejectReason::MalformedBody,
        }
    }
}

/// The body after `Content-Encoding`, refusing more than `max` bytes
/// decompressed (a small compressed body can expand enormously).
pub fn decode(encoding: Option<&str>, body: &[u8], max: usize) -> Result<Vec<u8>, BodyError> {
    let limited = |r: &mut dyn Read| -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        r.take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| BodyError::Decompress(e.to_string()))?;
        if out.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        Ok(out)
    };
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() > max {
                return Err(BodyError::TooLarge(max));
            }
            Ok(body.to_vec())
        }
        Some("gzip") | Some("x-gzip") => limited(&mut flate2::read::GzDecoder::new(body)),
        Some("zstd") => {
            let mut d = zstd::stream::read::Decoder::new(body)
                .map_err(|e| BodyError::Decompress(e.to_string()))?;
            limited(&mut d)
        }
        Some(other) => Err(BodyError::Encoding(other.to_string())),
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// Splits `{"events": [...]}` into the raw text of each event.
pub fn split_events(body: &[u8]) -> Result<Vec<&RawValue>, BodyError> {
    let text =
        std::str::from_utf8(body).map_err(|e| BodyError::Malformed(format!("not UTF-8: {e}")))?;
    let env: Envelope = serde_json::from_str(text)
        .map_err(|e| BodyError::Malformed(format!("expected {{\"events\": [...]}}: {e}")))?;
    Ok(env.events)
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
                format!("unknown model {:?}", label.model),
            ));
            continue;
        };
        let ok = match models[mi].task {
            Task::Regression => label.value.is_some_and(f64::is_finite),
            _ => label.label.is_some(),
        };
        if !ok {
            let want = if models[mi].task == Task::Regression {
                "a finite \"value\""
            } else {
                "a \"label\""
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
            },
        ));
    }
    Ok((refused, valid))
}

/// An event that passed validation.
#[derive(Debug)]
pub struct Accepted {
    pub model: usize,
    pub ts_ms: i64,
    /// Feature values in the model's feature order.
    pub values: Vec<Value>,
    /// The champion's and the shadow's outputs in the field the reference's
    /// prediction column holds (`None`: no prediction column, or no shadow).
    pub predicted: [Option<Value>; 2],
    pub event: Event,
    /// The event as sent, for storage.
    pub json: String,
}

pub type Rejection = (RejectReason, String);

/// Validates one event's text against the models.
pub fn validate(
    raw: &RawValue,
    models: &[Model],
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<Accepted, Rejection> {
    let event: Event = serde_json::from_str(raw.get())
        .map_err(|e| (RejectReason::MalformedEvent, format!("invalid event: {e}")))?;
    let Some(model_idx) = models.iter().position(|m| m.name == event.model) else {
        return Err((
            RejectReason::UnknownModel,
            format!("unknown model {:?}", event.model),
        ));
    };
    let model = &models[model_idx];
    let ts = chrono::DateTime::parse_from_rfc3339(&event.timestamp).map_err(|e| {
        (
            RejectReason::BadTimestamp,
            format!("timestamp {:?} is not RFC 3339: {e}", event.timestamp),
        )
    })?;
    let ts_ms = ts.timestamp_millis();
    if ts_ms > now_ms + max_skew_ms {
        return Err((
            RejectReason::FutureTimestamp,
            format!(
                "timestamp {} is more than {} s in the future",
                event.timestamp,
                max_skew_ms / 1000
            ),
        ));
    }
    let mut values = vec![Value::Missing; model.features.len()];
    for (name, value) in &event.features {
        let Some(i) = model.feature_index(name) else {
            return Err((
                RejectReason::UnknownFeature,
                format!("model {} has no feature {name:?}", model.name),
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
                        "feature {name:?} must be {want} or null, got {}",
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
    Ok(Accepted {
        model: model_idx,
        ts_ms,
        values,
        predicted,
        event,
        json: raw.get().to_string(),
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
        FeatureValue::String(s) => format!("string {s:?}"),
        FeatureValue::Null => "null".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
    fn decode_bounds_decompressed_size() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&vec![b' '; 10_000]).expect("compress");
        let body = gz.finish().expect("compress");
        assert!(body.len() < 200);
        assert_eq!(
            decode(Some("gzip"), &body, 1000),
            Err(BodyError::TooLarge(1000))
        );
        assert_eq!(
            decode(Some("gzip"), &body, 20_000).map(|b| b.len()),
            Ok(10_000)
        );
        let z = zstd::encode_all(&b"{\"events\": []}"[..], 3).expect("zstd");
        assert_eq!(
            decode(Some("zstd"), &z, 100).as_deref(),
            Ok(&b"{\"events\": []}"[..])
        );
        assert!(matches!(
            decode(Some("br"), b"x", 10),
            Err(BodyError::Encoding(_))
        ));
        assert!(matches!(
            decode(Some("gzip"), b"not gzip", 10),
            Err(BodyError::Decompress(_))
        ));
    }

    #[test]
    fn envelope_errors_are_clear() {
        assert!(split_events(b"[]").is_err());
        assert!(split_events(b"{\"events\": 3}").is_err());
        assert_eq!(
            split_events(b"{\"events\": [1, {\"a\": 2}]}").map(|v| v.len()),
            Ok(2)
        );
    }
}
