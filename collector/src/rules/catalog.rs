//! The metrics a rule may judge: DESIGN.md's names, with the labels that
//! pick one series out of each (`test`, `role`, `performance`, `quantile`).

/// What a metric's series are labelled with, beyond `model` and `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    /// One series per feature (a rule fans out over them).
    pub per_feature: bool,
    /// Labelled with a drift `test`.
    pub test: bool,
    /// Labelled with a `role` (champion, shadow).
    pub role: bool,
    /// Labelled with a performance `metric` (accuracy, mae, ...).
    pub performance: bool,
    /// The performance `metric` is an estimated one (`ESTIMATED`, or a
    /// multiclass confusion-matrix cell `true_A_pred_B`).
    pub estimated: bool,
    /// A latency quantile (0.5, 0.95, 0.99).
    pub quantile: bool,
    /// Has a `window` label (the cost gauge does not).
    pub windowed: bool,
}

const fn def(name: &'static str) -> MetricDef {
    MetricDef {
        name,
        per_feature: false,
        test: false,
        role: false,
        performance: false,
        estimated: false,
        quantile: false,
        windowed: true,
    }
}

pub const METRICS: &[MetricDef] = &[
    MetricDef {
        per_feature: true,
        test: true,
        ..def("driftwatch_feature_drift_score")
    },
    MetricDef {
        per_feature: true,
        test: true,
        ..def("driftwatch_feature_drift_p_value")
    },
    MetricDef {
        per_feature: true,
        ..def("driftwatch_feature_drift_detected")
    },
    MetricDef {
        per_feature: true,
        ..def("driftwatch_feature_missing_ratio")
    },
    def("driftwatch_drifted_features_share"),
    MetricDef {
        role: true,
        test: true,
        ..def("driftwatch_prediction_drift_score")
    },
    MetricDef {
        role: true,
        test: true,
        ..def("driftwatch_prediction_drift_p_value")
    },
    MetricDef {
        role: true,
        ..def("driftwatch_prediction_drift_detected")
    },
    MetricDef {
        role: true,
        performance: true,
        ..def("driftwatch_model_performance")
    },
    MetricDef {
        role: true,
        performance: true,
        estimated: true,
        ..def("driftwatch_estimated_performance")
    },
    MetricDef {
        role: true,
        performance: true,
        estimated: true,
        ..def("driftwatch_estimated_performance_lower")
    },
    MetricDef {
        role: true,
        performance: true,
        estimated: true,
        ..def("driftwatch_estimated_performance_upper")
    },
    MetricDef {
        role: true,
        performance: true,
        estimated: true,
        ..def("driftwatch_estimated_performance_alert")
    },
    def("driftwatch_multivariate_drift"),
    def("driftwatch_multivariate_drift_lower_threshold"),
    def("driftwatch_multivariate_drift_upper_threshold"),
    def("driftwatch_multivariate_drift_alert"),
    // Per segment (a segment column's value): one series per segment, and
    // for the drift metrics per feature; an alert per series.
    MetricDef {
        per_feature: true,
        test: true,
        ..def("driftwatch_segment_drift_score")
    },
    MetricDef {
        per_feature: true,
        ..def("driftwatch_segment_drift_q_value")
    },
    MetricDef {
        per_feature: true,
        ..def("driftwatch_segment_drift_detected")
    },
    def("driftwatch_segment_events"),
    MetricDef {
        role: true,
        performance: true,
        ..def("driftwatch_segment_performance")
    },
    MetricDef {
        role: true,
        performance: true,
        estimated: true,
        ..def("driftwatch_segment_estimated_performance")
    },
    MetricDef {
        role: true,
        performance: true,
        estimated: true,
        ..def("driftwatch_segment_estimated_performance_alert")
    },
    def("driftwatch_label_coverage_ratio"),
    def("driftwatch_shadow_agreement_ratio"),
    def("driftwatch_shadow_score_mean_abs_diff"),
    def("driftwatch_shadow_comparison_p_value"),
    def("driftwatch_shadow_comparison_verdict"),
    def("driftwatch_shadow_always_valid_p_value"),
    def("driftwatch_shadow_always_valid_verdict"),
    MetricDef {
        role: true,
        windowed: false,
        ..def("driftwatch_cost_per_1k_predictions_usd")
    },
    def("driftwatch_window_samples"),
    MetricDef {
        role: true,
        quantile: true,
        ..def("driftwatch_inference_latency_quantile_seconds")
    },
    MetricDef {
        role: true,
        ..def("driftwatch_prediction_error_ratio")
    },
    // Experiments: labelled with `experiment` (and `arm`), over the
    // experiment's whole run rather than a window.
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_samples")
    },
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_requests")
    },
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_metric")
    },
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_error_ratio")
    },
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_latency_p99_seconds")
    },
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_lift")
    },
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_lift_lower")
    },
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_lift_upper")
    },
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_p_value")
    },
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_decision")
    },
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_invalid")
    },
    MetricDef {
        windowed: false,
        ..def("driftwatch_experiment_srm_p_value")
    },
];

pub fn find(name: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.name == name)
}

pub fn names() -> String {
    METRICS
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

pub const ROLES: &[&str] = &["champion", "shadow"];
pub const PERFORMANCE: &[&str] = &[
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "log_loss",
    "brier",
    "mae",
    "rmse",
    "mape",
    "r2",
];
pub const QUANTILES: &[&str] = &["0.5", "0.95", "0.99"];

/// The metrics CBPE and DLE estimate (binary cell names included); a
/// multiclass confusion-matrix cell is `true_A_pred_B`.
pub const ESTIMATED: &[&str] = &[
    "accuracy",
    "average_precision",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "specificity",
    "business_value",
    "true_positive",
    "true_negative",
    "false_positive",
    "false_negative",
    "mae",
    "mape",
    "mse",
    "rmse",
    "msle",
    "rmsle",
];

pub fn is_estimated(name: &str) -> bool {
    ESTIMATED.contains(&name)
        || name.strip_prefix("true_").is_some_and(|rest| {
            rest.split_once("_pred_")
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        })
}
