//! The collector's Prometheus metrics, registered in one place. Label sets
//! are bounded: models, features, tests and windows come from the config,
//! reasons from a closed list; never a request id.

use driftwatch_telemetry::register_metric as register;
use prometheus::{Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub use super::reject::RejectReason;

pub struct Metrics {
    registry: Registry,
    pub predictions: IntCounterVec,
    pub prediction_errors: IntCounterVec,
    pub latency: HistogramVec,
    pub feature_drift_score: GaugeVec,
    pub feature_drift_p_value: GaugeVec,
    pub feature_drift_detected: GaugeVec,
    pub drifted_features_share: GaugeVec,
    pub feature_missing_ratio: GaugeVec,
    pub prediction_drift_score: GaugeVec,
    pub prediction_drift_p_value: GaugeVec,
    pub prediction_drift_detected: GaugeVec,
    pub window_samples: GaugeVec,
    pub shadow_agreement: GaugeVec,
    pub model_performance: GaugeVec,
    pub estimated_performance: GaugeVec,
    pub estimated_performance_lower: GaugeVec,
    pub estimated_performance_upper: GaugeVec,
    pub estimated_performance_alert: GaugeVec,
    pub multivariate_drift: GaugeVec,
    pub multivariate_drift_lower_threshold: GaugeVec,
    pub multivariate_drift_upper_threshold: GaugeVec,
    pub multivariate_drift_alert: GaugeVec,
    pub shadow_comparison_p_value: GaugeVec,
    pub shadow_comparison_verdict: GaugeVec,
    pub shadow_always_valid_p_value: GaugeVec,
    pub shadow_always_valid_verdict: GaugeVec,
    pub label_coverage: GaugeVec,
    pub cost_per_1k: GaugeVec,
    pub shadow_score_diff: GaugeVec,
    pub events_rejected: IntCounterVec,
    pub auth_refusals: IntCounterVec,
    pub connections_refused: IntCounterVec,
    pub tls_reloads: IntCounterVec,
    pub latency_quantile: GaugeVec,
    pub prediction_error_ratio: GaugeVec,
    pub alerts_firing: GaugeVec,
    pub rules_reload_success: Gauge,
    pub rules_reloads: IntCounterVec,
    pub notifications: IntCounterVec,
    pub outbox: GaugeVec,
    pub notifications_silenced: prometheus::IntCounter,
    pub actions: IntCounterVec,
    pub evaluation_seconds: HistogramVec,
    pub evaluation_cycle_seconds: prometheus::Histogram,
    pub evaluation_skipped: IntCounterVec,
    pub estimation_failures: IntCounterVec,
    pub segments: super::segments::SegmentMetrics,
    pub window_evaluated: GaugeVec,
    pub experiment_samples: GaugeVec,
    pub experiment_requests: GaugeVec,
    pub experiment_metric: GaugeVec,
    pub experiment_error_ratio: GaugeVec,
    pub experiment_latency_p99: GaugeVec,
    pub experiment_lift: GaugeVec,
    pub experiment_lift_lower: GaugeVec,
    pub experiment_lift_upper: GaugeVec,
    pub experiment_p_value: GaugeVec,
    pub experiment_decision: GaugeVec,
    pub experiment_invalid: GaugeVec,
    pub experiment_srm_p_value: GaugeVec,
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(registry, GaugeVec::new(Opts::new(name, help), labels))
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

impl Default for Metrics {
    /// Every metric, registered.
    fn default() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        // Model latencies: 1 ms to 10 s, denser where online models live.
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let latency = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "driftwatch_inference_latency_seconds",
                    "Model inference latency reported in events",
                )
                .buckets(buckets),
                &["model", "role"],
            ),
        );
        // Evaluation: 1 ms to 2 min.
        let evaluation_buckets = vec![
            0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
        ];
        let evaluation_seconds = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "driftwatch_evaluation_seconds",
                    "Time spent evaluating one model's windows in one evaluation cycle",
                )
                .buckets(evaluation_buckets.clone()),
                &["model"],
            ),
        );
        let evaluation_cycle_seconds = register(
            r,
            prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "driftwatch_evaluation_cycle_seconds",
                    "Time one evaluation cycle took (every model's windows, storing the results, the rules)",
                )
                .buckets(evaluation_buckets),
            ),
        );
        Metrics {
            evaluation_seconds,
            evaluation_cycle_seconds,
            evaluation_skipped: counter(
                r,
                "driftwatch_evaluation_skipped_total",
                "Window evaluations not run in a cycle, by reason (unchanged: no event or label since the last one; over_budget: the cycle ran out of its interval, the oldest results go first next time)",
                &["reason"],
            ),
            segments: super::segments::SegmentMetrics::register(r),
            estimation_failures: counter(
                r,
                "driftwatch_estimation_failures_total",
                "Window performance estimations that failed (a DLE nanny model that could not run; the reason is logged and in the window's JSON), tried again at the next evaluation",
                &["model"],
            ),
            experiment_samples: gauge(
                r,
                "driftwatch_experiment_samples",
                "Labelled requests an experiment arm's metric is scored on",
                &["model", "experiment", "arm"],
            ),
            experiment_requests: gauge(
                r,
                "driftwatch_experiment_requests",
                "Requests sent to an experiment arm, failed ones included (the sample-ratio check counts those answered)",
                &["model", "experiment", "arm"],
            ),
            experiment_metric: gauge(
                r,
                "driftwatch_experiment_metric",
                "An experiment arm's primary metric: its mean over the arm's labelled requests",
                &["model", "experiment", "arm", "metric"],
            ),
            experiment_error_ratio: gauge(
                r,
                "driftwatch_experiment_error_ratio",
                "Share of an experiment arm's requests that failed (guardrail)",
                &["model", "experiment", "arm"],
            ),
            experiment_latency_p99: gauge(
                r,
                "driftwatch_experiment_latency_p99_seconds",
                "An experiment arm's latency p99 (guardrail)",
                &["model", "experiment", "arm"],
            ),
            experiment_lift: gauge(
                r,
                "driftwatch_experiment_lift",
                "A treatment arm's difference from the baseline arm (absolute or relative, as configured)",
                &["model", "experiment", "arm"],
            ),
            experiment_lift_lower: gauge(
                r,
                "driftwatch_experiment_lift_lower",
                "Lower end of the lift's always-valid confidence sequence",
                &["model", "experiment", "arm"],
            ),
            experiment_lift_upper: gauge(
                r,
                "driftwatch_experiment_lift_upper",
                "Upper end of the lift's always-valid confidence sequence",
                &["model", "experiment", "arm"],
            ),
            experiment_p_value: gauge(
                r,
                "driftwatch_experiment_p_value",
                "Always-valid p-value of no difference between a treatment arm and the baseline",
                &["model", "experiment", "arm"],
            ),
            experiment_decision: gauge(
                r,
                "driftwatch_experiment_decision",
                "An experiment's decision: 1 promote, -1 rollback, 0 continue or invalid",
                &["model", "experiment"],
            ),
            experiment_invalid: gauge(
                r,
                "driftwatch_experiment_invalid",
                "1 while an experiment is invalid (sample ratio mismatch)",
                &["model", "experiment"],
            ),
            experiment_srm_p_value: gauge(
                r,
                "driftwatch_experiment_srm_p_value",
                "Sample-ratio-mismatch p-value of an experiment's arm counts against their weights (below 0.001: invalid)",
                &["model", "experiment"],
            ),
            shadow_always_valid_p_value: gauge(
                r,
                "driftwatch_shadow_always_valid_p_value",
                "Always-valid p-value of the paired champion-vs-shadow comparison in the live window (confidence sequence over per-request differences; safe to read at every evaluation)",
                &["model", "window"],
            ),
            shadow_always_valid_verdict: gauge(
                r,
                "driftwatch_shadow_always_valid_verdict",
                "The always-valid paired comparison's verdict: 1 shadow better, -1 champion better, 0 not known yet",
                &["model", "window"],
            ),
            window_evaluated: gauge(
                r,
                "driftwatch_window_evaluated_timestamp_seconds",
                "When the live window's published statistics were computed (Unix seconds): how stale they are",
                &["model", "window"],
            ),
            predictions: counter(
                r,
                "driftwatch_predictions_total",
                "Predictions received",
                &["model", "version", "role"],
            ),
            prediction_errors: counter(
                r,
                "driftwatch_prediction_errors_total",
                "Predictions that reported an error",
                &["model", "version", "role"],
            ),
            latency,
            feature_drift_score: gauge(
                r,
                "driftwatch_feature_drift_score",
                "Drift statistic of a feature's test in the live window",
                &["model", "feature", "test", "window"],
            ),
            feature_drift_p_value: gauge(
                r,
                "driftwatch_feature_drift_p_value",
                "P-value of a feature's test in the live window",
                &["model", "feature", "test", "window"],
            ),
            feature_drift_detected: gauge(
                r,
                "driftwatch_feature_drift_detected",
                "1 when the feature drifts by its default test",
                &["model", "feature", "window"],
            ),
            drifted_features_share: gauge(
                r,
                "driftwatch_drifted_features_share",
                "Share of a model's features that drift",
                &["model", "window"],
            ),
            feature_missing_ratio: gauge(
                r,
                "driftwatch_feature_missing_ratio",
                "Share of missing values of a feature in the live window",
                &["model", "feature", "window"],
            ),
            prediction_drift_score: gauge(
                r,
                "driftwatch_prediction_drift_score",
                "Drift statistic of a role's outputs against the reference's prediction column, live window",
                &["model", "role", "test", "window"],
            ),
            prediction_drift_p_value: gauge(
                r,
                "driftwatch_prediction_drift_p_value",
                "P-value of a role's prediction drift test in the live window",
                &["model", "role", "test", "window"],
            ),
            prediction_drift_detected: gauge(
                r,
                "driftwatch_prediction_drift_detected",
                "1 when a role's outputs drift by the prediction column's default test",
                &["model", "role", "window"],
            ),
            window_samples: gauge(
                r,
                "driftwatch_window_samples",
                "Events in the live window",
                &["model", "window"],
            ),
            model_performance: gauge(
                r,
                "driftwatch_model_performance",
                "Quality of a role's predictions against the labels received, in the live window",
                &["model", "role", "metric", "window"],
            ),
            estimated_performance: gauge(
                r,
                "driftwatch_estimated_performance",
                "A role's performance in the live window estimated before its labels (NannyML's CBPE)",
                &["model", "role", "metric", "window"],
            ),
            estimated_performance_lower: gauge(
                r,
                "driftwatch_estimated_performance_lower",
                "Lower end of the estimate's band (estimate minus 3 sampling errors, clipped to the metric's range)",
                &["model", "role", "metric", "window"],
            ),
            estimated_performance_upper: gauge(
                r,
                "driftwatch_estimated_performance_upper",
                "Upper end of the estimate's band (estimate plus 3 sampling errors, clipped to the metric's range)",
                &["model", "role", "metric", "window"],
            ),
            estimated_performance_alert: gauge(
                r,
                "driftwatch_estimated_performance_alert",
                "1 when the estimate is outside the thresholds from the reference's chunks (mean ± 3 standard deviations), else 0",
                &["model", "role", "metric", "window"],
            ),
            multivariate_drift: gauge(
                r,
                "driftwatch_multivariate_drift",
                "Mean reconstruction error of the live window's events (NannyML's data reconstruction: PCA keeping 65% of the reference's variance)",
                &["model", "window", "method"],
            ),
            multivariate_drift_lower_threshold: gauge(
                r,
                "driftwatch_multivariate_drift_lower_threshold",
                "Lower threshold of the reconstruction error: mean − 3 standard deviations over the reference's chunks (no series when at or below 0)",
                &["model", "window", "method"],
            ),
            multivariate_drift_upper_threshold: gauge(
                r,
                "driftwatch_multivariate_drift_upper_threshold",
                "Upper threshold of the reconstruction error: mean + 3 standard deviations over the reference's chunks",
                &["model", "window", "method"],
            ),
            multivariate_drift_alert: gauge(
                r,
                "driftwatch_multivariate_drift_alert",
                "1 when the window's reconstruction error is not strictly between its thresholds, else 0",
                &["model", "window", "method"],
            ),
            shadow_comparison_p_value: gauge(
                r,
                "driftwatch_shadow_comparison_p_value",
                "P-value of champion against shadow on labelled requests (exact McNemar for classification, Wilcoxon signed-rank on absolute errors for regression)",
                &["model", "window"],
            ),
            shadow_comparison_verdict: gauge(
                r,
                "driftwatch_shadow_comparison_verdict",
                "1: shadow significantly better (p < 0.05), -1: champion significantly better, 0: no difference",
                &["model", "window"],
            ),
            cost_per_1k: gauge(
                r,
                "driftwatch_cost_per_1k_predictions_usd",
                "Serving cost of 1000 predictions in the live window, from the cost model",
                &["model", "role"],
            ),
            label_coverage: gauge(
                r,
                "driftwatch_label_coverage_ratio",
                "Share of the live window's predictions that have a label",
                &["model", "window"],
            ),
            shadow_agreement: gauge(
                r,
                "driftwatch_shadow_agreement_ratio",
                "Share of requests where champion and shadow predict the same label",
                &["model", "window"],
            ),
            shadow_score_diff: gauge(
                r,
                "driftwatch_shadow_score_mean_abs_diff",
                "Mean absolute difference of champion and shadow scores",
                &["model", "window"],
            ),
            events_rejected: counter(
                r,
                "driftwatch_events_rejected_total",
                "Events (or requests, for request-level reasons) refused, by reason",
                &["reason"],
            ),
            auth_refusals: counter(
                r,
                "driftwatch_auth_refusals_total",
                "Requests refused for their bearer token, by the scope the route needs and status (401, 403)",
                &["scope", "status"],
            ),
            connections_refused: counter(
                r,
                "driftwatch_connections_refused_total",
                "Connections closed by the listener's bounds, by reason",
                &["reason"],
            ),
            tls_reloads: counter(
                r,
                "driftwatch_tls_reloads_total",
                "TLS certificate reloads after a file changed, by outcome",
                &["outcome"],
            ),
            latency_quantile: gauge(
                r,
                "driftwatch_inference_latency_quantile_seconds",
                "Latency quantile (0.5, 0.95, 0.99) of a role's reported latencies in the live window",
                &["model", "role", "quantile", "window"],
            ),
            prediction_error_ratio: gauge(
                r,
                "driftwatch_prediction_error_ratio",
                "Share of a role's outputs in the live window that reported an error",
                &["model", "role", "window"],
            ),
            alerts_firing: gauge(
                r,
                "driftwatch_alerts_firing",
                "Firing alerts",
                &["alertname", "model", "severity"],
            ),
            rules_reload_success: register(
                r,
                Gauge::new(
                    "driftwatch_rules_last_reload_success",
                    "1 when the last (re)load of the rule files succeeded, 0 when it was refused (the previous rules keep running)",
                ),
            ),
            rules_reloads: counter(
                r,
                "driftwatch_rules_reloads_total",
                "Rule file (re)loads, by outcome (success, failure)",
                &["outcome"],
            ),
            notifications: counter(
                r,
                "driftwatch_notifications_total",
                "Notification delivery attempts by receiver and outcome (delivered, failed: will retry, dead: given up)",
                &["receiver", "outcome"],
            ),
            outbox: gauge(
                r,
                "driftwatch_notifications_queued",
                "Notifications in the outbox by state (pending, dead)",
                &["state"],
            ),
            notifications_silenced: register(
                r,
                prometheus::IntCounter::new(
                    "driftwatch_notifications_silenced_total",
                    "Alert firings held back by a silence",
                ),
            ),
            actions: counter(
                r,
                "driftwatch_actions_total",
                "Actions (retraining webhooks) for firing alerts by action, model and outcome (queued, cooldown: held by the cooldown, render_error: the body template failed)",
                &["action", "model", "outcome"],
            ),
            registry,
        }
    }
}

impl Metrics {
    /// Every gauge's series with its current value: what rules judge.
    pub fn gauge_series(&self) -> Vec<super::Series> {
        let mut out = Vec::new();
        for family in self.registry.gather() {
            if family.get_field_type() != prometheus::proto::MetricType::GAUGE {
                continue;
            }
            for m in family.get_metric() {
                out.push(super::Series {
                    metric: family.name().to_string(),
                    labels: m
                        .get_label()
                        .iter()
                        .map(|l| (l.name().to_string(), l.value().to_string()))
                        .collect(),
                    value: m.get_gauge().get_value(),
                });
            }
        }
        out
    }

    /// Counts a batch's outputs: predictions, errors and latencies (one
    /// lookup of each series per batch).
    pub fn count_outputs(&self, tally: OutputTally) {
        for ((model, version, role), (n, errors)) in tally.predictions {
            let labels = [model.as_str(), version.as_str(), role];
            self.predictions.with_label_values(&labels).inc_by(n);
            if errors > 0 {
                self.prediction_errors
                    .with_label_values(&labels)
                    .inc_by(errors);
            }
        }
        for ((model, role), seconds) in tally.latencies {
            let h = self.latency.with_label_values(&[model.as_str(), role]);
            for s in seconds {
                h.observe(s);
            }
        }
    }

    /// Removes every series of a model's windows from the gauges: a model
    /// this collector stopped evaluating (another owns it in cluster mode)
    /// must not go on showing its last figures.
    pub fn forget_model(&self, model: &str) {
        use prometheus::core::Collector;
        let windowed = [
            &self.feature_drift_score,
            &self.feature_drift_p_value,
            &self.feature_drift_detected,
            &self.drifted_features_share,
            &self.feature_missing_ratio,
            &self.prediction_drift_score,
            &self.prediction_drift_p_value,
            &self.prediction_drift_detected,
            &self.window_samples,
            &self.shadow_agreement,
            &self.model_performance,
            &self.estimated_performance,
            &self.estimated_performance_lower,
            &self.estimated_performance_upper,
            &self.estimated_performance_alert,
            &self.multivariate_drift,
            &self.multivariate_drift_lower_threshold,
            &self.multivariate_drift_upper_threshold,
            &self.multivariate_drift_alert,
            &self.shadow_comparison_p_value,
            &self.shadow_comparison_verdict,
            &self.shadow_always_valid_p_value,
            &self.shadow_always_valid_verdict,
            &self.label_coverage,
            &self.cost_per_1k,
            &self.shadow_score_diff,
            &self.latency_quantile,
            &self.prediction_error_ratio,
            &self.window_evaluated,
            &self.experiment_samples,
            &self.experiment_requests,
            &self.experiment_metric,
            &self.experiment_error_ratio,
            &self.experiment_latency_p99,
            &self.experiment_lift,
            &self.experiment_lift_lower,
            &self.experiment_lift_upper,
            &self.experiment_p_value,
            &self.experiment_decision,
            &self.experiment_invalid,
            &self.experiment_srm_p_value,
            &self.segments.drift_score,
            &self.segments.q_value,
            &self.segments.drift_detected,
            &self.segments.events,
            &self.segments.performance,
            &self.segments.estimated,
            &self.segments.estimated_alert,
        ];
        for gauge in windowed {
            for family in gauge.collect() {
                for m in family.get_metric() {
                    let labels: std::collections::HashMap<&str, &str> = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name(), l.value()))
                        .collect();
                    if labels.get("model") == Some(&model) {
                        let _ = gauge.remove(&labels);
                    }
                }
            }
        }
    }

    pub fn reject(&self, reason: RejectReason, n: u64) {
        self.events_rejected
            .with_label_values(&[reason.as_str()])
            .inc_by(n);
    }

    /// The registry, for the OTLP export of the same metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// A series of the prediction counters: model, version, role.
type Series3 = (String, String, &'static str);

/// Outputs of a batch of events, counted before they reach the metrics
/// (a batch holds few distinct series: a short list, no allocation per
/// event).
#[derive(Debug, Default)]
pub struct OutputTally {
    /// Predictions and errors by model, version and role.
    predictions: Vec<(Series3, (u64, u64))>,
    /// Reported latencies (seconds) by model and role.
    latencies: Vec<((String, &'static str), Vec<f64>)>,
}

impl OutputTally {
    /// Counts the champion's and the shadow's outputs of an event.
    pub fn add(&mut self, model: &str, event: &driftwatch_protocol::Event) {
        let outputs = [
            ("champion", Some(&event.champion)),
            ("shadow", event.shadow.as_ref()),
        ];
        for (role, output) in outputs {
            let Some(o) = output else { continue };
            let version = o.version.as_deref().unwrap_or("");
            let at = self
                .predictions
                .iter()
                .position(|((m, v, r), _)| m == model && v == version && *r == role)
                .unwrap_or_else(|| {
                    let key = (model.to_string(), version.to_string(), role);
                    self.predictions.push((key, (0, 0)));
                    self.predictions.len() - 1
                });
            let counts = &mut self.predictions[at].1;
            counts.0 += 1;
            counts.1 += u64::from(o.error.is_some());
            if let Some(ms) = o.latency_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
                let at = self
                    .latencies
                    .iter()
                    .position(|((m, r), _)| m == model && *r == role)
                    .unwrap_or_else(|| {
                        self.latencies.push(((model.to_string(), role), Vec::new()));
                        self.latencies.len() - 1
                    });
                self.latencies[at].1.push(ms / 1000.0);
            }
        }
    }
}
