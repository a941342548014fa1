//! The evaluation loop: every interval, snapshot each model's live windows
//! under the lock, then run the drift tests on a blocking thread and publish
//! the results as gauges. The statistics are `report`'s own, so a window
//! within its sample limit shows exactly what `driftwatch report` computes.

use std::sync::Arc;
use std::time::Duration;

use super::AppState;
use crate::report::{self, ColumnReport, Overrides};
use crate::stats::{Numeric, Sample};

pub async fn run_loop(state: Arc<AppState>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let s = state.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || evaluate_all(&s)).await {
            eprintln!("error: window evaluation failed: {e}");
        }
    }
}

/// Recomputes and publishes every model's live-window statistics.
pub fn evaluate_all(state: &AppState) {
    let m = &state.metrics;
    for (mi, model) in state.models.iter().enumerate() {
        let live = state.windows[mi]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live();
        for (wi, window) in live.into_iter().enumerate() {
            let Some(window) = window else { continue };
            let label = model.windows[wi].label();
            let series = [model.name.as_str(), label.as_str()];
            m.window_samples
                .with_label_values(&series)
                .set(window.events as f64);
            if let Some(r) = window.shadow.agreement_ratio() {
                m.shadow_agreement.with_label_values(&series).set(r);
            }
            if let Some(d) = window.shadow.mean_abs_score_diff() {
                m.shadow_score_diff.with_label_values(&series).set(d);
            }
            if let Some((p, verdict)) = window.shadow.mcnemar(0.05) {
                m.shadow_comparison_p_value
                    .with_label_values(&series)
                    .set(p);
                m.shadow_comparison_verdict
                    .with_label_values(&series)
                    .set(f64::from(verdict));
            }
            if window.events > 0 {
                m.label_coverage
                    .with_label_values(&series)
                    .set(window.labels as f64 / window.events as f64);
            }
            for (role, perf) in [
                ("champion", &window.champion_performance),
                ("shadow", &window.shadow_performance),
            ] {
                for (metric, value) in perf.metrics(model.task, &model.positive_class) {
                    m.model_performance
                        .with_label_values(&[model.name.as_str(), role, metric, label.as_str()])
                        .set(value);
                }
            }
            let mut reports: Vec<ColumnReport> = Vec::with_capacity(model.features.len());
            for (feature, fw) in model.features.iter().zip(&window.features) {
                // Integer histogram widths apply only when, as in a file, every
                // value is an integer and nothing is missing.
                let mut current = fw.sample(false);
                if let Sample::Numeric(n) = &current {
                    if feature.integer
                        && fw.missing == 0
                        && n.sorted.iter().all(|x| x.fract() == 0.0)
                    {
                        current = Sample::Numeric(Numeric::from_sorted(n.sorted.clone(), true));
                    }
                }
                let reference = match (&feature.reference, &current) {
                    (Sample::Numeric(r), Sample::Numeric(c)) if r.integer != c.integer => {
                        std::borrow::Cow::Owned(Sample::Numeric(Numeric::from_sorted(
                            r.sorted.clone(),
                            c.integer,
                        )))
                    }
                    (r, _) => std::borrow::Cow::Borrowed(r),
                };
                let missing = (feature.reference_missing, fw.missing);
                let r = report::evaluate_samples(
                    &feature.name,
                    feature.column_type,
                    &reference,
                    &current,
                    missing,
                    &Overrides::default(),
                );
                publish(state, &model.name, &label, &r, fw.missing, fw.seen());
                reports.push(r);
            }
            let d = report::dataset_drift(&reports);
            m.drifted_features_share
                .with_label_values(&[model.name.as_str(), label.as_str()])
                .set(d.share);
        }
    }
}

fn publish(state: &AppState, model: &str, window: &str, r: &ColumnReport, missing: u64, seen: u64) {
    let m = &state.metrics;
    let total = missing + seen;
    if total > 0 {
        m.feature_missing_ratio
            .with_label_values(&[model, r.name.as_str(), window])
            .set(missing as f64 / total as f64);
    }
    if r.untestable.is_some() {
        let _ = m
            .feature_drift_detected
            .remove_label_values(&[model, r.name.as_str(), window]);
        return;
    }
    m.feature_drift_detected
        .with_label_values(&[model, r.name.as_str(), window])
        .set(if r.drift { 1.0 } else { 0.0 });
    for t in &r.tests {
        let labels = [model, r.name.as_str(), t.test, window];
        // A chi-square with a category the reference never had is +Inf, which
        // Prometheus represents; a test that could not run has no series.
        if t.value.is_nan() {
            let _ = m.feature_drift_score.remove_label_values(&labels);
        } else {
            m.feature_drift_score
                .with_label_values(&labels)
                .set(t.value);
        }
        match t.p_value {
            Some(p) => m.feature_drift_p_value.with_label_values(&labels).set(p),
            None => {
                let _ = m.feature_drift_p_value.remove_label_values(&labels);
            }
        }
    }
}
