//! A window's drift per segment: per segment column of the model
//! (`segments:`), per segment (a top reference value of the column, or
//! `__other__`), every feature's sample, kept as the window's own (exact
//! up to the sample limit, then a reservoir); evaluated as `report
//! --segment` judges a data set: each feature of each segment against the
//! segment's reference rows, the verdicts of p-value tests on
//! Benjamini–Hochberg q-values over every segment × feature of the window
//! (`report::segments::judge`). The JSON API's `segments` and the
//! `driftwatch_segment_*` gauges.

use serde_json::Value as Json;

use super::column::column;
use super::{FeatureWindow, Value, Window};
use crate::export::metrics::Metrics;
use crate::export::set_or_remove;
use crate::models::Model;
use crate::report::segments::{self, Compared};
use crate::report::ColumnReport;
use crate::stats::rng::Rng;
use crate::stats::Key;

/// Per segment column, per segment, per feature of the model: its sample.
pub type SegmentWindows = Vec<Vec<Vec<FeatureWindow>>>;

/// A model's segments with nothing in them.
pub(super) fn empty(model: &Model) -> SegmentWindows {
    model
        .segmentations
        .iter()
        .map(|s| {
            (0..=s.values.len())
                .map(|_| model.features.iter().map(FeatureWindow::new).collect())
                .collect()
        })
        .collect()
}

/// Adds an event's feature values to its segment of each segment column.
pub(super) fn add(
    windows: &mut SegmentWindows,
    model: &Model,
    values: &[Value],
    limit: usize,
    rng: &mut Rng,
) {
    for (s, by_segment) in model.segmentations.iter().zip(windows.iter_mut()) {
        let key: Option<&Key> = match &values[s.feature] {
            Value::Cat(k) => Some(k),
            _ => None,
        };
        let Some(features) = by_segment.get_mut(s.segment(key)) else {
            continue;
        };
        for (fw, v) in features.iter_mut().zip(values) {
            fw.add(v, limit, rng);
        }
    }
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
            for (fx, fy) in x.iter_mut().zip(y) {
                fx.merge(fy, limit, rng);
            }
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
        for (g, features) in by_segment.iter().enumerate() {
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
