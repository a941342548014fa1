//! Window evaluation: find what changed in each model's kept windows since
//! the last cycle, evaluate those (oldest result first, within the cycle's
//! budget) on the caller's blocking thread, publish the live (newest)
//! window as gauges and store every evaluated window's results for the
//! JSON API. The statistics are `report`'s own, so a window within its
//! sample limit shows exactly what `driftwatch report` computes on its
//! rows as of its evaluation; what was not evaluated keeps its last result
//! and says when that was (`evaluated_at`, and
//! `driftwatch_window_evaluated_timestamp_seconds` for the live window).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use driftwatch_telemetry::{throttled, Telemetry};

use super::column::column;
use super::ROLES;
use super::{Live, Window, WindowInfo};
use crate::clock::rfc3339;
use crate::export::metrics::Metrics;
use crate::export::set_or_remove;
use crate::models::Model;
use crate::report::{self, ColumnReport};
use crate::store::{Store, WindowResult};

/// What evaluation needs: the live windows, the store for results, the
/// gauges it publishes, telemetry for its span, and what the last cycles
/// found (so that what did not change is not evaluated again).
pub struct Evaluator {
    pub live: Arc<Live>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub telemetry: Arc<Telemetry>,
    pub memory: Mutex<HashMap<WindowKey, Evaluated>>,
    /// Per model: the generation of its windows the memory is of.
    generations: Mutex<Vec<u64>>,
}

/// One kept window: its model, its length (the model's order) and start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowKey {
    model: usize,
    length: usize,
    start_ms: i64,
}

/// A window's last evaluation: what it saw, when, and its results.
#[derive(Debug)]
pub struct Evaluated {
    version: u64,
    at_ms: i64,
    live: bool,
    ended: bool,
    /// Per feature: the sample's version and its report.
    features: Vec<(u64, ColumnReport)>,
    /// Per role: the outputs' version and their report.
    predictions: Vec<Option<(u64, ColumnReport)>>,
    /// Per role: the estimator's rows' version and its estimates.
    estimated: Vec<super::estimated::RoleEstimates>,
    /// Per segment column, segment and feature: the sample's version and
    /// its report.
    segments: Vec<(u64, ColumnReport)>,
    info: WindowInfo,
}

/// Why a window evaluation was not run in a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skipped {
    /// Nothing arrived since its last evaluation, which already saw it in
    /// its current state (live or not, ended or not).
    Unchanged,
    /// The cycle ran out of its budget; the oldest results go first next
    /// time.
    OverBudget,
}

impl Skipped {
    fn as_str(self) -> &'static str {
        match self {
            Skipped::Unchanged => "unchanged",
            Skipped::OverBudget => "over_budget",
        }
    }
}

/// A window due for evaluation: when it was last evaluated (never: the
/// smallest), whether it is the live one.
struct Due {
    last_ms: i64,
    key: WindowKey,
    live: bool,
}

impl Evaluator {
    pub fn new(
        live: Arc<Live>,
        store: Store,
        metrics: Arc<Metrics>,
        telemetry: Arc<Telemetry>,
    ) -> Evaluator {
        Evaluator {
            generations: Mutex::new(vec![0; live.models.len()]),
            live,
            store,
            metrics,
            telemetry,
            memory: Mutex::default(),
        }
    }

    /// Evaluates the kept windows that changed since their last evaluation,
    /// oldest result first, until `budget` is spent (at least one, so that
    /// every window gets its turn); publishes the live ones and stores what
    /// it evaluated. Returns every live window's context as last evaluated
    /// (for rules and their templates). Blocking: run it off the reactor.
    pub fn evaluate_all(&self, budget: Duration) -> Vec<WindowInfo> {
        use driftwatch_telemetry::{KeyValue, SpanKind};
        let started = Instant::now();
        let wall = std::time::SystemTime::now();
        let now = crate::clock::now_ms();
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let (due, live_keys) = self.due(&mut memory, now);
        let mut results = Vec::new();
        let mut spent = vec![Duration::ZERO; self.live.models.len()];
        for (n, d) in due.iter().enumerate() {
            if n > 0 && started.elapsed() >= budget {
                self.skipped(Skipped::OverBudget, due.len() - n);
                break;
            }
            // A lease lost during the cycle: the new owner publishes now.
            if !self.live.owns(d.key.model) {
                continue;
            }
            let t0 = Instant::now();
            let window = self.live.window(d.key.model, d.key.length, d.key.start_ms);
            let Some(window) = window else { continue };
            let model = &self.live.models[d.key.model];
            let label = model.windows[d.key.length].label();
            let live = d.live.then_some(&*self.metrics);
            let (summary, evaluated) =
                evaluate_window(live, model, &label, &window, memory.get(&d.key), now);
            memory.insert(d.key, evaluated);
            results.push(WindowResult {
                model: model.name.clone(),
                window: label,
                start_ms: window.start_ms,
                json: summary.to_string(),
            });
            spent[d.key.model] += t0.elapsed();
        }
        for (model, t) in self.live.models.iter().zip(spent) {
            if !t.is_zero() {
                self.metrics
                    .evaluation_seconds
                    .with_label_values(&[model.name.as_str()])
                    .observe(t.as_secs_f64());
            }
        }
        let evaluated = results.len() as i64;
        let stored = match results.is_empty() {
            true => Ok(()),
            false => self.store.save_results_blocking(results),
        };
        let error = stored
            .err()
            .map(|e| format!("storing window results failed: {e}"));
        if let Some(e) = &error {
            throttled!(
                crate::store::FAILURES_LOGGED,
                "store window results",
                tracing::Level::ERROR,
                {},
                "{e}"
            );
        }
        self.telemetry.span(
            "evaluate windows",
            SpanKind::Internal,
            None,
            wall,
            std::time::SystemTime::now(),
            vec![KeyValue::new("driftwatch.windows", evaluated)],
            error,
        );
        live_keys
            .iter()
            .filter_map(|k| memory.get(k).map(|e| e.info.clone()))
            .collect()
    }

    /// The kept windows that changed since their last evaluation, oldest
    /// result first (the live window first among equals), and the keys of
    /// the live windows; forgets the windows no longer kept and counts the
    /// unchanged ones.
    fn due(
        &self,
        memory: &mut HashMap<WindowKey, Evaluated>,
        now: i64,
    ) -> (Vec<Due>, Vec<WindowKey>) {
        let (mut due, mut live_keys, mut kept) = (Vec::new(), Vec::new(), HashSet::new());
        let mut unchanged = 0;
        let mut generations = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        for (mi, model) in self.live.models.iter().enumerate() {
            // Windows emptied and filled again (a model taken over in
            // cluster mode) may hold other events at the same versions.
            let generation = self.live.generation(mi);
            if generations[mi] != generation {
                generations[mi] = generation;
                memory.retain(|k, _| k.model != mi);
            }
            // Not this collector's, or a partition's state is missing.
            if !self.live.owns(mi) || !self.live.complete(mi) {
                continue;
            }
            let versions = self.live.versions(mi);
            // Cost per hour spreads over the hours elapsed: the live
            // window's figures move with the clock alone.
            let clocked = [&model.cost.champion, &model.cost.shadow]
                .iter()
                .any(|c| c.as_ref().is_some_and(|c| c.per_hour_usd.is_some()));
            for (li, windows) in versions.into_iter().enumerate() {
                let newest = windows.len().saturating_sub(1);
                let length_ms = model.windows[li].duration.as_millis() as i64;
                for (i, (start_ms, version)) in windows.into_iter().enumerate() {
                    let key = WindowKey {
                        model: mi,
                        length: li,
                        start_ms,
                    };
                    let live = i == newest;
                    let ended = start_ms + length_ms <= now;
                    kept.insert(key);
                    if live {
                        live_keys.push(key);
                    }
                    let last = memory.get(&key);
                    let same = last.is_some_and(|e| {
                        e.version == version
                            && e.live == live
                            && e.ended == ended
                            && (ended || !clocked)
                    });
                    if same {
                        unchanged += 1;
                        continue;
                    }
                    due.push(Due {
                        last_ms: last.map_or(i64::MIN, |e| e.at_ms),
                        key,
                        live,
                    });
                }
            }
        }
        memory.retain(|k, _| kept.contains(k));
        self.skipped(Skipped::Unchanged, unchanged);
        due.sort_by_key(|d| (d.last_ms, !d.live));
        (due, live_keys)
    }

    fn skipped(&self, why: Skipped, n: usize) {
        if n > 0 {
            self.metrics
                .evaluation_skipped
                .with_label_values(&[why.as_str()])
                .inc_by(n as u64);
        }
    }
}

/// A window's features and each role's outputs against the reference.
struct Columns {
    features: Vec<(u64, ColumnReport)>,
    prediction_drift: serde_json::Map<String, Value>,
    predictions: Vec<Option<(u64, ColumnReport)>>,
}

/// Every feature's and each role's outputs' drift, reusing the last
/// evaluation's columns that did not change; for the live window also
/// their gauges.
fn columns(
    live: Option<&Metrics>,
    model: &Model,
    label: &str,
    window: &Window,
    last: Option<&Evaluated>,
) -> Columns {
    let mut features = Vec::with_capacity(model.features.len());
    for (i, (feature, fw)) in model.features.iter().zip(&window.features).enumerate() {
        let c = column(
            last.and_then(|e| e.features.get(i)),
            feature,
            fw,
            &model.drift,
        );
        if let Some(m) = live {
            publish_feature(m, &model.name, label, &c.1, fw.missing, fw.seen());
        }
        features.push(c);
    }
    // Each role's outputs against the reference's prediction column.
    let mut prediction_drift = serde_json::Map::new();
    let mut predictions = vec![None; ROLES.len()];
    if let Some(p) = &model.prediction {
        for (ri, (role, pw)) in ROLES.into_iter().zip(&window.predictions).enumerate() {
            if pw.seen() + pw.missing == 0 {
                continue;
            }
            let previous = last
                .and_then(|e| e.predictions.get(ri))
                .and_then(Option::as_ref);
            let c = column(previous, &p.reference, pw, &model.drift);
            if let Some(m) = live {
                publish_prediction(m, &model.name, role, label, &c.1);
            }
            prediction_drift.insert(role.to_string(), json!(c.1));
            predictions[ri] = Some(c);
        }
    }
    Columns {
        features,
        prediction_drift,
        predictions,
    }
}

/// One window's statistics as JSON and its evaluation (with its context
/// for alert templates), reusing the last one's columns that did not
/// change; for the live window (`live` holds the metrics), also its
/// gauges.
fn evaluate_window(
    live: Option<&Metrics>,
    model: &Model,
    label: &str,
    window: &Window,
    last: Option<&Evaluated>,
    now: i64,
) -> (Value, Evaluated) {
    // The features' and outputs' drift beside the estimated performance:
    // two independent computations, on two cores when there are.
    let (drift_columns, (estimated_performance, estimated)) = rayon::join(
        || columns(live, model, label, window, last),
        || {
            super::estimated::roles(
                live,
                model,
                label,
                window,
                last.map(|l| l.estimated.as_slice()),
            )
        },
    );
    let Columns {
        features,
        prediction_drift,
        predictions,
    } = drift_columns;
    let reports: Vec<ColumnReport> = features.iter().map(|(_, r)| r.clone()).collect();
    let drift = report::dataset_drift(&reports);
    let (segments_json, segments) = super::segments::evaluate(
        live,
        model,
        label,
        window,
        last.map(|l| l.segments.as_slice()),
    );
    // Each role's metrics from its labels, computed once (ROC AUC sorts).
    let performance: Vec<Vec<(&str, f64)>> =
        [&window.champion_performance, &window.shadow_performance]
            .into_iter()
            .map(|p| p.metrics(model.task, &model.positive_class))
            .collect();
    let performance_json = |metrics: &[(&str, f64)]| -> Value {
        metrics
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect()
    };
    let comparison = window.shadow.comparison(model.task, SIGNIFICANCE);
    let always_valid = window.shadow.always_valid(SIGNIFICANCE);
    let coverage = (window.events > 0).then(|| window.labels as f64 / window.events as f64);
    // Hours of the window elapsed so far (all of it once it has ended).
    let elapsed_ms = (now.min(window.start_ms + window.length_ms) - window.start_ms).max(0);
    let elapsed_hours = elapsed_ms as f64 / 3_600_000.0;
    // Each role's traffic, computed once for the JSON and the gauges.
    let roles: Vec<RoleSummary> = [&model.cost.champion, &model.cost.shadow]
        .into_iter()
        .zip(&window.roles)
        .map(|(cost, t)| RoleSummary {
            predictions: t.predictions,
            error_ratio: t.error_ratio(),
            latency_ms: t.latency_quantiles_ms(),
            cost_per_1k: cost.as_ref().and_then(|c| t.cost_per_1k(c, elapsed_hours)),
        })
        .collect();
    let o = Outcomes {
        drift,
        comparison,
        always_valid,
        coverage,
        roles,
        performance,
    };
    if let Some(m) = live {
        publish_window(m, model, label, window, &o);
    }
    let info = WindowInfo {
        model: model.name.clone(),
        window: label.to_string(),
        start: rfc3339(window.start_ms),
        end: rfc3339(window.start_ms + window.length_ms),
        top_features: top_features(&reports),
    };
    let summary = json!({
        "start": rfc3339(window.start_ms),
        "end": rfc3339(window.start_ms + window.length_ms),
        "live": live.is_some(),
        "evaluated_at": crate::clock::rfc3339_ms(now),
        "events": window.events,
        "labels": window.labels,
        "label_coverage": o.coverage,
        "dataset_drift": o.drift,
        "features": reports,
        "prediction_drift": prediction_drift,
        "performance": {"champion": performance_json(&o.performance[0]), "shadow": performance_json(&o.performance[1])},
        "estimated_performance": estimated_performance,
        "multivariate": super::estimated::multivariate(live, model, label, window),
        "segments": segments_json,
        "segment_performance": super::segments::performance(live, model, label, window),
        "traffic": {"champion": o.roles[0].json(), "shadow": o.roles[1].json()},
        "shadow": {
            "agreement_ratio": window.shadow.agreement_ratio(),
            "mean_abs_score_diff": window.shadow.mean_abs_score_diff(),
            "test": o.comparison.map(|c| c.test),
            "p_value": o.comparison.map(|c| c.p_value),
            "verdict": o.comparison.map(|c| c.verdict),
            "pairs": o.comparison.map(|c| c.pairs),
            "always_valid": o.always_valid,
        },
    });
    if let Some(m) = live {
        m.window_evaluated
            .with_label_values(&[model.name.as_str(), label])
            .set(now as f64 / 1000.0);
    }
    let evaluated = Evaluated {
        version: window.version,
        at_ms: now,
        live: live.is_some(),
        ended: window.start_ms + window.length_ms <= now,
        features,
        predictions,
        estimated,
        segments,
        info,
    };
    (summary, evaluated)
}
/// Drifted features, largest verdict statistic first: (feature, test, statistic).
fn top_features(reports: &[ColumnReport]) -> Vec<(String, String, f64)> {
    let mut top: Vec<(String, String, f64)> = reports
        .iter()
        .filter(|r| r.drift)
        .filter_map(|r| {
            let test = r.verdict_test.or(r.default_test)?;
            let t = r.tests.iter().find(|t| t.test == test)?;
            Some((r.name.clone(), test.to_string(), t.value))
        })
        .collect();
    top.sort_by(|a, b| b.2.total_cmp(&a.2));
    top
}

/// A window's outcomes beyond its columns, computed once for its JSON and
/// its gauges.
struct Outcomes {
    drift: report::DatasetDrift,
    comparison: Option<super::Comparison>,
    always_valid: Option<super::AlwaysValid>,
    coverage: Option<f64>,
    roles: Vec<RoleSummary>,
    performance: Vec<Vec<(&'static str, f64)>>,
}

/// The live window's gauges (the columns' are published as they are tested).
fn publish_window(m: &Metrics, model: &Model, label: &str, window: &Window, o: &Outcomes) {
    let series = [model.name.as_str(), label];
    m.window_samples
        .with_label_values(&series)
        .set(window.events as f64);
    m.drifted_features_share
        .with_label_values(&series)
        .set(o.drift.share);
    if let Some(r) = window.shadow.agreement_ratio() {
        m.shadow_agreement.with_label_values(&series).set(r);
    }
    if let Some(d) = window.shadow.mean_abs_score_diff() {
        m.shadow_score_diff.with_label_values(&series).set(d);
    }
    if let Some(c) = o.comparison {
        m.shadow_comparison_p_value
            .with_label_values(&series)
            .set(c.p_value);
        m.shadow_comparison_verdict
            .with_label_values(&series)
            .set(f64::from(c.verdict));
    }
    if let Some(c) = o.always_valid {
        m.shadow_always_valid_p_value
            .with_label_values(&series)
            .set(c.p_value);
        m.shadow_always_valid_verdict
            .with_label_values(&series)
            .set(f64::from(c.verdict));
    }
    if let Some(c) = o.coverage {
        m.label_coverage.with_label_values(&series).set(c);
    }
    // The cost gauge has no window label: the shortest window sets it.
    let shortest = model.windows.first().is_some_and(|w| w.label() == label);
    for (role, r) in ROLES.into_iter().zip(&o.roles) {
        if let Some(v) = r.cost_per_1k.filter(|_| shortest) {
            m.cost_per_1k
                .with_label_values(&[model.name.as_str(), role])
                .set(v);
        }
        if let Some(q) = r.latency_ms {
            for (quantile, ms) in ["0.5", "0.95", "0.99"].into_iter().zip(q) {
                m.latency_quantile
                    .with_label_values(&[model.name.as_str(), role, quantile, label])
                    .set(ms / 1000.0);
            }
        }
        if let Some(ratio) = r.error_ratio {
            m.prediction_error_ratio
                .with_label_values(&[model.name.as_str(), role, label])
                .set(ratio);
        }
    }
    for (role, metrics) in ROLES.into_iter().zip(&o.performance) {
        for &(metric, value) in metrics {
            m.model_performance
                .with_label_values(&[model.name.as_str(), role, metric, label])
                .set(value);
        }
    }
}

/// One role's traffic in a window, as the JSON API and the gauges show it.
struct RoleSummary {
    predictions: u64,
    error_ratio: Option<f64>,
    latency_ms: Option<[f64; 3]>,
    cost_per_1k: Option<f64>,
}

impl RoleSummary {
    fn json(&self) -> Value {
        json!({
            "predictions": self.predictions,
            "error_ratio": self.error_ratio,
            "latency_ms": self.latency_ms.map(|[p50, p95, p99]| json!({"p50": p50, "p95": p95, "p99": p99})),
            "cost_per_1k_usd": self.cost_per_1k,
        })
    }
}

/// Significance level of the champion-vs-shadow verdict.
const SIGNIFICANCE: f64 = 0.05;

/// A role's prediction drift gauges: every test's statistic and p-value,
/// and the verdict of the default test.
fn publish_prediction(m: &Metrics, model: &str, role: &str, window: &str, r: &ColumnReport) {
    if r.untestable.is_some() {
        let _ = m
            .prediction_drift_detected
            .remove_label_values(&[model, role, window]);
        return;
    }
    m.prediction_drift_detected
        .with_label_values(&[model, role, window])
        .set(if r.drift { 1.0 } else { 0.0 });
    for t in &r.tests {
        let labels = [model, role, t.test, window];
        set_or_remove(&m.prediction_drift_score, &labels, Some(t.value));
        set_or_remove(&m.prediction_drift_p_value, &labels, t.p_value);
    }
}

fn publish_feature(
    m: &Metrics,
    model: &str,
    window: &str,
    r: &ColumnReport,
    missing: u64,
    seen: u64,
) {
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
        // A chi-square with a category the reference never had is +Inf.
        let labels = [model, r.name.as_str(), t.test, window];
        set_or_remove(&m.feature_drift_score, &labels, Some(t.value));
        set_or_remove(&m.feature_drift_p_value, &labels, t.p_value);
    }
}
