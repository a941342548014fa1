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
    pub performance: GaugeVec,
    pub estimated: GaugeVec,
    pub estimated_alert: GaugeVec,
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
        let role = [
            "model",
            "segment",
            "segment_value",
            "role",
            "metric",
            "window",
        ];
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
            performance: gauge(
                "driftwatch_segment_performance",
                "A role's performance from the labels of a segment's predictions in the live window",
                &role,
            ),
            estimated: gauge(
                "driftwatch_segment_estimated_performance",
                "A role's performance in a segment of the live window estimated before its labels (the model's estimator, fitted on the whole reference, on the segment's outputs)",
                &role,
            ),
            estimated_alert: gauge(
                "driftwatch_segment_estimated_performance_alert",
                "1 when a segment's estimate is outside the thresholds (the whole reference's), else 0",
                &role,
            ),
        }
    }
}
