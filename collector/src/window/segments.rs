//! A window's drift per segment: per segment column of the model
//! (`segments:`), per segment (a top reference value of the column, or
//! `__other__`), every feature's sample, kept as the window's own (exact
//! up to the sample limit, then a reservoir); evaluated as `report
//! --segment` judges a data set: each feature of each segment against the
//! segment's reference rows, the verdicts of p-value tests on
//! Benjamini–Hochberg q-values over every segment × feature of the window
//! (`report::segments::judge`). The JSON API's `segments` and the
//! `driftwatch_segment_*` gauges.

use std::collections::BTreeMap;

use driftwatch_protocol::{Event, FeatureValue, Label};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::column::column;
use super::{Accepted, Estimation, FeatureWindow, Performance, Value, Window, ROLES};
use crate::export::metrics::Metrics;
use crate::export::set_or_remove;
use crate::models::Model;
use crate::report::segments::{self, Compared};
use crate::report::ColumnReport;
use crate::stats::rng::Rng;
use crate::stats::Key;

/// One segment of a window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Segment {
    /// Every feature's sample (the model's order).
    pub features: Vec<FeatureWindow>,
    /// Champion [0] and shadow [1] outputs for the performance estimator.
    #[serde(default)]
    pub estimation: [Estimation; 2],
    /// Champion [0] and shadow [1] performance from labels.
    #[serde(default)]
    pub performance: [Performance; 2],
    #[serde(default)]
    pub labels: u64,
}

/// Per segment column, per segment.
pub type SegmentWindows = Vec<Vec<Segment>>;

/// A model's segments with nothing in them.
pub(super) fn empty(model: &Model) -> SegmentWindows {
    model
        .segmentations
        .iter()
        .map(|s| {
            (0..=s.values.len())
                .map(|_| Segment {
                    features: model.features.iter().map(FeatureWindow::new).collect(),
                    estimation: Default::default(),
                    performance: Default::default(),
                    labels: 0,
                })
                .collect()
        })
        .collect()
}

/// Adds an event to its segment of each segment column.
pub(super) fn add(
    windows: &mut SegmentWindows,
    model: &Model,
    a: &Accepted,
    limit: usize,
    rng: &mut Rng,
) {
    for (s, by_segment) in model.segmentations.iter().zip(windows.iter_mut()) {
        let key: Option<&Key> = match &a.values[s.feature] {
            Value::Cat(k) => Some(k),
            _ => None,
        };
        let Some(segment) = by_segment.get_mut(s.segment(key)) else {
            continue;
        };
        for (fw, v) in segment.features.iter_mut().zip(&a.values) {
            fw.add(v, limit, rng);
        }
        if model.estimator.is_some() {
            segment.estimation[0].add(a.scored[0].as_ref(), limit, rng);
            if a.event.shadow.is_some() {
                segment.estimation[1].add(a.scored[1].as_ref(), limit, rng);
            }
        }
    }
}

/// The segment column's value of a stored event (its features hold the
/// segment columns), keyed as validation keys it.
fn key_of(event: &Event, name: &str) -> Option<Key> {
    match event.features.get(name)? {
        FeatureValue::String(s) => Some(Key::Str(s.clone())),
        FeatureValue::Bool(b) => Some(Key::Str(b.to_string())),
        FeatureValue::Number(x) => Some(Key::Num(*x)),
        FeatureValue::Null => None,
    }
}

/// Scores a label in its prediction's segment of each segment column.
pub(super) fn add_label(
    windows: &mut SegmentWindows,
    model: &Model,
    event: &Event,
    label: &Label,
    limit: usize,
    rng: &mut Rng,
) {
    for (s, by_segment) in model.segmentations.iter().zip(windows.iter_mut()) {
        let key = key_of(event, &model.features[s.feature].name);
        let Some(segment) = by_segment.get_mut(s.segment(key.as_ref())) else {
            continue;
        };
        segment.labels += 1;
        let [champion, shadow] = &mut segment.performance;
        champion.add(
            model.task,
            &model.positive_class,
            &event.champion,
            label,
            limit,
            rng,
        );
        if let Some(o) = &event.shadow {
            shadow.add(model.task, &model.positive_class, o, label, limit, rng);
        }
    }
}

impl Value {
    /// The value as an event carries it (`key_of` reads it back).
    pub fn to_feature_value(&self) -> FeatureValue {
        match self {
            Value::Cat(Key::Str(t)) => FeatureValue::String(t.clone()),
            Value::Cat(Key::Num(x)) | Value::Num(x) => FeatureValue::Number(*x),
            Value::Missing => FeatureValue::Null,
        }
    }
}

/// The segment columns' values of an event, as a stored event's features
/// (what a label needs to find its segments).
pub fn features_of(model: &Model, values: &[Value]) -> BTreeMap<String, FeatureValue> {
    model
        .segmentations
        .iter()
        .map(|s| {
            (
                model.features[s.feature].name.clone(),
                values[s.feature].to_feature_value(),
            )
        })
        .collect()
}

/// Takes in another partition's segments of the same window.
pub(super) fn merge(
    mine: &mut SegmentWindows,
    theirs: &SegmentWindows,
    limit: usize,
    rng: &mut Rng,
) {
    for (a, b) in mine.iter_mut().zip(theirs) {
        for (x, y) in a.iter_mut().zip(b) {
            for (fx, fy) in x.features.iter_mut().zip(&y.features) {
                fx.merge(fy, limit, rng);
            }
            for (ex, ey) in x.estimation.iter_mut().zip(&y.estimation) {
                ex.merge(ey, limit, rng);
            }
            for (px, py) in x.performance.iter_mut().zip(&y.performance) {
                px.merge(py, limit, rng);
            }
            x.labels += y.labels;
        }
    }
}

/// The window's segments judged (JSON: `report --segment`'s `segments`),
/// each column's report kept for the next evaluation (reused while its
/// sample is unchanged); for the live window (`live` holds the metrics)
/// also the gauges.
pub(super) fn evaluate(
    live: Option<&Metrics>,
    model: &Model,
    label: &str,
    window: &Window,
    last: Option<&[(u64, ColumnReport)]>,
) -> (Json, Vec<(u64, ColumnReport)>) {
    if model.segmentations.is_empty() {
        return (Json::Null, Vec::new());
    }
    let excluded: Vec<usize> = model.segmentations.iter().map(|s| s.feature).collect();
    let mut kept = Vec::new();
    let mut compared = Vec::new();
    for (s, by_segment) in model.segmentations.iter().zip(&window.segments) {
        for (g, segment) in by_segment.iter().enumerate() {
            let features = &segment.features;
            // A window kept under another configuration has other shapes.
            let (Some((reference_rows, reference)), Some(own)) =
                (s.reference.get(g), features.get(s.feature))
            else {
                continue;
            };
            let events = own.seen() + own.missing;
            let mut columns = Vec::new();
            for (i, (fw, reference)) in features.iter().zip(reference).enumerate() {
                if excluded.contains(&i) {
                    continue;
                }
                let c = column(
                    last.and_then(|l| l.get(kept.len())),
                    reference,
                    fw,
                    &model.drift,
                );
                columns.push(c.1.clone());
                kept.push(c);
            }
            compared.push(Compared {
                column: model.features[s.feature].name.clone(),
                value: s.name(g).to_string(),
                reference_rows: *reference_rows,
                current_rows: events as usize,
                columns,
            });
        }
    }
    let judged = segments::judge(compared);
    if let Some(m) = live {
        publish(m, &model.name, label, &judged);
    }
    (segments::json(&judged), kept)
}

fn publish(m: &Metrics, model: &str, window: &str, judged: &[segments::Segment]) {
    let g = &m.segments;
    for s in judged {
        g.events
            .with_label_values(&[model, &s.column, &s.value, window])
            .set(s.current_rows as f64);
        for c in &s.columns {
            let labels = [
                model,
                s.column.as_str(),
                s.value.as_str(),
                c.name.as_str(),
                window,
            ];
            match (c.test, &c.untestable) {
                (Some(test), None) => {
                    let with_test = [&labels[..], &[test]].concat();
                    set_or_remove(&g.drift_score, &with_test, c.statistic);
                    set_or_remove(&g.q_value, &labels, c.q_value);
                    g.drift_detected
                        .with_label_values(&labels)
                        .set(f64::from(u8::from(c.drift)));
                }
                _ => {
                    let _ = g.drift_detected.remove_label_values(&labels);
                    let _ = g.q_value.remove_label_values(&labels);
                }
            }
        }
    }
}

/// Each segment's performance per role: realized from its labels, and
/// estimated by the model's estimator from its outputs as one chunk
/// (JSON: `segment_performance`); for the live window also the gauges.
/// `null` for a model without segments.
pub(super) fn performance(
    live: Option<&Metrics>,
    model: &Model,
    label: &str,
    window: &Window,
) -> Json {
    if model.segmentations.is_empty() {
        return Json::Null;
    }
    let mut out = Vec::new();
    for (s, by_segment) in model.segmentations.iter().zip(&window.segments) {
        let column = model.features[s.feature].name.as_str();
        for (g, segment) in by_segment.iter().enumerate() {
            let value = s.name(g);
            let Some(own) = segment.features.get(s.feature) else {
                continue;
            };
            let (mut realized, mut estimated) = (serde_json::Map::new(), serde_json::Map::new());
            for (ri, role) in ROLES.into_iter().enumerate() {
                let metrics = segment.performance[ri].metrics(model.task, &model.positive_class);
                if let Some(m) = live {
                    for (metric, v) in &metrics {
                        m.segments
                            .performance
                            .with_label_values(&[&model.name, column, value, role, metric, label])
                            .set(*v);
                    }
                }
                realized.insert(
                    role.to_string(),
                    metrics
                        .iter()
                        .map(|(k, v)| (k.to_string(), json!(v)))
                        .collect(),
                );
                let (Some(estimator), e) = (&model.estimator, &segment.estimation[ri]) else {
                    continue;
                };
                if e.version == 0 {
                    continue;
                }
                let (estimates, error) = match e.rows.items() {
                    [] => (Vec::new(), None),
                    rows => match estimator.estimate_rows(rows) {
                        Ok(v) => (v, None),
                        Err(why) => (Vec::new(), Some(why)),
                    },
                };
                if let Some(m) = live {
                    for (metric, est) in &estimates {
                        let labels = [
                            model.name.as_str(),
                            column,
                            value,
                            role,
                            metric.as_str(),
                            label,
                        ];
                        set_or_remove(&m.segments.estimated, &labels, est.value);
                        set_or_remove(
                            &m.segments.estimated_alert,
                            &labels,
                            est.value.map(|_| f64::from(u8::from(est.alert))),
                        );
                    }
                }
                let mut entry = json!({
                    "rows": e.rows.items().len(), "seen": e.rows.seen(), "unscored": e.unscored,
                    "metrics": estimates.iter().map(|(k, v)| (k.clone(), super::estimated::estimate_json(v))).collect::<serde_json::Map<_, _>>(),
                });
                if let Some(why) = error {
                    entry["error"] = json!(why);
                }
                estimated.insert(role.to_string(), entry);
            }
            out.push(json!({
                "column": column, "value": value,
                "events": own.seen() + own.missing, "labels": segment.labels,
                "performance": realized, "estimated_performance": estimated,
            }));
        }
    }
    Json::Array(out)
}

#[cfg(test)]
mod tests {
    use crate::ingest::validate;
    use crate::window::ModelWindows;

    /// Segments draw from the analyses' generator: beyond the sample
    /// limit, a model's feature samples are the same with and without them.
    #[test]
    fn segments_leave_the_feature_samples_as_they_are() {
        let plain = crate::models::example_model("    window_sample_limit: 50\n");
        let segmented = crate::models::example_model(
            "    window_sample_limit: 50\n    segments: {columns: [country], top: 2}\n",
        );
        let (mut a, mut b) = (ModelWindows::new(&plain), ModelWindows::new(&segmented));
        for i in 0..500 {
            let json = format!(
                r#"{{"model": "credit", "request_id": "r{i}", "timestamp": "2026-12-06T00:00:00Z", "features": {{"age": {}, "country": "{}"}}, "champion": {{"label": "1"}}}}"#,
                18 + i % 50,
                ["DE", "FR", "IT"][i % 3]
            );
            for (m, w) in [(&plain, &mut a), (&segmented, &mut b)] {
                let e = validate(&json, std::slice::from_ref(m), i64::MAX / 2, 0).expect("valid");
                w.add(m, &e);
            }
        }
        let start = a.versions()[0][0].0;
        let (wa, wb) = (
            a.window(0, start).expect("w"),
            b.window(0, start).expect("w"),
        );
        assert_eq!(
            wb.segments[0]
                .iter()
                .map(|s| s.features[0].seen())
                .sum::<u64>(),
            500
        );
        for (x, y) in wa.features.iter().zip(&wb.features) {
            assert_eq!(x.sample(false), y.sample(false));
        }
    }
}
