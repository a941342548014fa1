//! A window's performance estimated before its labels arrive: each
//! role's outputs as the model's estimator (NannyML's CBPE, fitted on the
//! reference; DLE's nanny models for regression) takes them, one chunk per
//! window; recomputed only when the
//! role's rows changed. The JSON API's `estimated_performance` and the
//! `driftwatch_estimated_performance*` gauges. And its multivariate drift
//! (data reconstruction): the events' reconstruction errors as one chunk,
//! `multivariate` and `driftwatch_multivariate_drift*`.

use serde_json::{json, Value};

use super::{Window, ROLES};
use crate::export::metrics::Metrics;
use crate::export::set_or_remove;
use crate::models::Model;
use crate::stats::estimation::Estimate;

/// A role's estimates and the version of the rows they were made from.
pub type RoleEstimates = Option<(u64, Vec<(String, Estimate)>)>;

/// Each role's estimates as JSON, and as kept for the next evaluation;
/// the live window's (`live` holds the metrics) also as gauges.
pub(super) fn roles(
    live: Option<&Metrics>,
    model: &Model,
    label: &str,
    window: &Window,
    last: Option<&[RoleEstimates]>,
) -> (serde_json::Map<String, Value>, Vec<RoleEstimates>) {
    let mut estimated_performance = serde_json::Map::new();
    let mut estimated = vec![None; ROLES.len()];
    let Some(estimator) = &model.estimator else {
        return (estimated_performance, estimated);
    };
    for (ri, (role, e)) in ROLES.into_iter().zip(&window.estimation).enumerate() {
        if e.version == 0 {
            continue;
        }
        let previous = last.and_then(|l| l.get(ri)).and_then(Option::as_ref);
        let mut failed = None;
        let estimates = match previous {
            Some((version, v)) if *version == e.version => v.clone(),
            _ if e.rows.items().is_empty() => Vec::new(),
            _ => estimator
                .estimate_rows(e.rows.items())
                .unwrap_or_else(|error| {
                    if let Some(m) = live {
                        m.estimation_failures.with_label_values(&[&model.name]).inc();
                        tracing::warn!(model = %model.name, role, "performance estimation failed: {error}");
                    }
                    failed = Some(error);
                    Vec::new()
                }),
        };
        if let Some(m) = live {
            publish(m, &model.name, role, label, &estimates);
        }
        let metrics: serde_json::Map<String, Value> = estimates
            .iter()
            .map(|(name, e)| (name.clone(), estimate_json(e)))
            .collect();
        let mut entry = json!({
            "rows": e.rows.items().len(), "seen": e.rows.seen(),
            "unscored": e.unscored, "metrics": metrics,
        });
        if let Some(error) = &failed {
            entry["error"] = json!(error);
        }
        estimated_performance.insert(role.to_string(), entry);
        // A failed estimation is tried again at the next evaluation.
        estimated[ri] = failed.is_none().then_some((e.version, estimates));
    }
    (estimated_performance, estimated)
}

/// An estimate as the JSON API shows it (DESIGN.md's record; the
/// realized values are `performance`'s).
pub(super) fn estimate_json(e: &Estimate) -> Value {
    json!({
        "value": e.value, "sampling_error": e.sampling_error,
        "lower_confidence_boundary": e.lower_confidence_boundary,
        "upper_confidence_boundary": e.upper_confidence_boundary,
        "lower_threshold": e.lower_threshold, "upper_threshold": e.upper_threshold,
        "alert": e.alert,
    })
}

/// A role's estimated performance gauges; a metric without a value (NaN
/// in NannyML) has no series.
fn publish(m: &Metrics, model: &str, role: &str, window: &str, estimates: &[(String, Estimate)]) {
    for (metric, e) in estimates {
        let labels = [model, role, metric.as_str(), window];
        set_or_remove(&m.estimated_performance, &labels, e.value);
        set_or_remove(
            &m.estimated_performance_lower,
            &labels,
            e.lower_confidence_boundary,
        );
        set_or_remove(
            &m.estimated_performance_upper,
            &labels,
            e.upper_confidence_boundary,
        );
        set_or_remove(
            &m.estimated_performance_alert,
            &labels,
            e.value.map(|_| f64::from(u8::from(e.alert))),
        );
    }
}

/// The window's multivariate drift as JSON (`null` for a model without
/// one); the live window's also as gauges.
pub(super) fn multivariate(
    live: Option<&Metrics>,
    model: &Model,
    label: &str,
    window: &Window,
) -> Value {
    let Some(r) = &model.reconstruction else {
        return Value::Null;
    };
    let d = r.fitted.drift(window.multivariate.items());
    if let Some(m) = live {
        let labels = [model.name.as_str(), label, "reconstruction"];
        set_or_remove(&m.multivariate_drift, &labels, d.value);
        set_or_remove(
            &m.multivariate_drift_lower_threshold,
            &labels,
            d.lower_threshold,
        );
        set_or_remove(
            &m.multivariate_drift_upper_threshold,
            &labels,
            d.upper_threshold,
        );
        set_or_remove(
            &m.multivariate_drift_alert,
            &labels,
            d.value.map(|_| f64::from(u8::from(d.alert))),
        );
    }
    json!({
        "method": "reconstruction", "components": r.fitted.components(),
        "rows": window.multivariate.items().len(), "seen": window.multivariate.seen(),
        "value": d.value, "sampling_error": d.sampling_error,
        "lower_confidence_boundary": d.lower_confidence_boundary,
        "upper_confidence_boundary": d.upper_confidence_boundary,
        "lower_threshold": d.lower_threshold, "upper_threshold": d.upper_threshold,
        "alert": d.alert,
    })
}
