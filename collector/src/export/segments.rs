//! The metrics of drift per segment (`driftwatch_segment_*`): one series
//! per model, segment column, segment (a top reference value or
//! `__other__`), feature and window, so their number is bounded by the
//! configuration (`segments.top`), never by the traffic.

use prometheus::{GaugeVec, Opts, Registry};

pub struct SegmentMetrics {
    pub drift_score: GaugeVec,
    pub q_value: GaugeVec,
    pub drift_detected: GaugeVec,
    pub events: GaugeVec,
}

impl SegmentMetrics {
    pub fn register(registry: &Registry) -> SegmentMetrics {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            driftwatch_telemetry::register_metric(
                registry,
                GaugeVec::new(Opts::new(name, help), labels),
            )
        };
        let feature = ["model", "segment", "segment_value", "feature", "window"];
        SegmentMetrics {
            drift_score: gauge(
                "driftwatch_segment_drift_score",
                "The verdict test's statistic of a feature within a segment (the rows whose segment column has that value) of the live window",
                &[&feature[..], &["test"]].concat(),
            ),
            q_value: gauge(
                "driftwatch_segment_drift_q_value",
                "The Benjamini-Hochberg q-value of the verdict test's p-value over every segment and feature of the model's window (tests with a p-value)",
                &feature,
            ),
            drift_detected: gauge(
                "driftwatch_segment_drift_detected",
                "1 when a feature drifts within a segment (p-value tests judged on the q-value), else 0",
                &feature,
            ),
            events: gauge(
                "driftwatch_segment_events",
                "Events of the live window in a segment",
                &["model", "segment", "segment_value", "window"],
            ),
        }
    }
}
