//! Tumbling windows per model and window length, with state that does not
//! grow with traffic: per feature the first `limit` values exactly, then a
//! uniform reservoir of `limit` (Vitter's Algorithm R); category counts capped
//! at `MAX_CATEGORIES` distinct values (the rest pooled into one overflow
//! category); missing counts. While a window has seen no more values than
//! its limit, its samples are exactly the rows sent, so its statistics equal
//! `driftwatch report` on those rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

pub mod evaluate;
pub mod performance;
pub mod reservoir;

use driftwatch_protocol::{Event, Label, Output};
pub use performance::Performance;
pub use reservoir::Reservoir;
use serde::Serialize;

use crate::config::Task;
use crate::models::{Feature, Model};
use crate::stats::rng::Rng;
use crate::stats::{ColumnType, Counts, Key, Numeric, Sample};

/// Distinct categories kept per feature per window.
pub const MAX_CATEGORIES: usize = 1000;
/// The category that pools values beyond `MAX_CATEGORIES`.
pub const OVERFLOW_CATEGORY: &str = "__other__";
/// Windows kept per length: the newest and the one before, for late events.
const KEPT_WINDOWS: usize = 2;

/// A feature value after validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Missing,
    Num(f64),
    Cat(Key),
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

/// A window's context for annotation templates.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowInfo {
    pub model: String,
    pub window: String,
    pub start: String,
    pub end: String,
    /// Drifted features, most drifted first: (feature, default test, statistic).
    pub top_features: Vec<(String, String, f64)>,
}

/// Hashable form of a category key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CatKey {
    Num(u64),
    Str(String),
}

#[derive(Debug, Clone)]
enum Values {
    Numeric(Reservoir<f64>),
    Categorical {
        counts: HashMap<CatKey, u64>,
        overflow: u64,
    },
}

#[derive(Debug, Clone)]
pub struct FeatureWindow {
    values: Values,
    pub missing: u64,
    /// Changes of the sample or the missing count so far: equal versions,
    /// equal statistics (a value the reservoir let go changes nothing).
    pub version: u64,
}

impl FeatureWindow {
    fn new(feature: &Feature) -> FeatureWindow {
        let values = match feature.column_type {
            ColumnType::Numeric => Values::Numeric(Reservoir::default()),
            ColumnType::Categorical => Values::Categorical {
                counts: HashMap::new(),
                overflow: 0,
            },
        };
        FeatureWindow {
            values,
            missing: 0,
            version: 0,
        }
    }

    fn add(&mut self, value: &Value, limit: usize, rng: &mut Rng) {
        match (&mut self.values, value) {
            (_, Value::Missing) => self.missing += 1,
            (Values::Numeric(values), Value::Num(x)) => {
                if !values.add(*x, limit, rng) {
                    return;
                }
            }
            (Values::Categorical { counts, overflow }, Value::Cat(k)) => {
                let key = match k {
                    Key::Num(x) => CatKey::Num((x + 0.0).to_bits()),
                    Key::Str(s) => CatKey::Str(s.clone()),
                };
                if let Some(c) = counts.get_mut(&key) {
                    *c += 1;
                } else if counts.len() < MAX_CATEGORIES {
                    counts.insert(key, 1);
                } else {
                    *overflow += 1;
                }
            }
            // Validation guarantees the value matches the feature's type.
            _ => self.missing += 1,
        }
        self.version += 1;
    }

    /// The window's sample, as the statistics take it.
    pub fn sample(&self, integer: bool) -> Sample {
        match &self.values {
            Values::Numeric(values) => {
                Sample::Numeric(Numeric::new(values.items().to_vec(), integer))
            }
            Values::Categorical { counts, overflow } => {
                let mut pairs: Vec<(Key, u64)> = counts
                    .iter()
                    .map(|(k, &c)| {
                        let key = match k {
                            CatKey::Num(bits) => Key::Num(f64::from_bits(*bits)),
                            CatKey::Str(s) => Key::Str(s.clone()),
                        };
                        (key, c)
                    })
                    .collect();
                if *overflow > 0 {
                    pairs.push((Key::Str(OVERFLOW_CATEGORY.to_string()), *overflow));
                }
                Sample::Categorical(Counts::from_pairs(pairs))
            }
        }
    }

    /// Values seen (not missing), including those the reservoir let go.
    pub fn seen(&self) -> u64 {
        match &self.values {
            Values::Numeric(values) => values.seen(),
            Values::Categorical { counts, overflow } => counts.values().sum::<u64>() + overflow,
        }
    }
}

/// One tumbling window of one length.
#[derive(Debug, Clone)]
pub struct Window {
    pub start_ms: i64,
    pub length_ms: i64,
    pub events: u64,
    pub features: Vec<FeatureWindow>,
    /// Champion's and shadow's outputs, when the model has a prediction column.
    pub predictions: Vec<FeatureWindow>,
    pub shadow: ShadowComparison,
    /// Champion [0] and shadow [1] traffic in this window.
    pub roles: [RoleTraffic; 2],
    /// Labels received for this window's predictions.
    pub labels: u64,
    pub champion_performance: Performance,
    pub shadow_performance: Performance,
    /// Events and labels added so far: an unchanged version, unchanged
    /// contents.
    pub version: u64,
    rng: Rng,
}

/// One role's predictions and reported latencies in a window.
#[derive(Debug, Clone, Default)]
pub struct RoleTraffic {
    pub predictions: u64,
    /// Outputs that reported an `error`.
    pub errors: u64,
    pub latency_seconds_sum: f64,
    /// Reported latencies in milliseconds (bounded like feature samples).
    pub latencies_ms: Reservoir<f64>,
}

impl RoleTraffic {
    fn add(&mut self, output: Option<&Output>, limit: usize, rng: &mut Rng) {
        let Some(o) = output else { return };
        self.predictions += 1;
        self.errors += u64::from(o.error.is_some());
        if let Some(ms) = o.latency_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
            self.latency_seconds_sum += ms / 1000.0;
            self.latencies_ms.add(ms, limit, rng);
        }
    }

    /// Share of outputs that reported an error.
    pub fn error_ratio(&self) -> Option<f64> {
        (self.predictions > 0).then(|| self.errors as f64 / self.predictions as f64)
    }

    /// Latency p50, p95 and p99 in milliseconds (linear interpolation
    /// between order statistics, NumPy's default), exact while the window
    /// holds no more latencies than its sample limit.
    pub fn latency_quantiles_ms(&self) -> Option<[f64; 3]> {
        let mut v = self.latencies_ms.items().to_vec();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable_by(f64::total_cmp);
        Some([0.5, 0.95, 0.99].map(|q| quantile_sorted(&v, q)))
    }

    /// Cost of 1000 predictions: capacity per hour spread over the
    /// predictions seen in `elapsed_hours`, or compute per second times the
    /// mean latency.
    pub fn cost_per_1k(&self, cost: &crate::config::RoleCost, elapsed_hours: f64) -> Option<f64> {
        match (cost.per_hour_usd, cost.per_second_usd) {
            (Some(per_hour), _) if self.predictions > 0 && elapsed_hours > 0.0 => {
                Some(per_hour * elapsed_hours / self.predictions as f64 * 1000.0)
            }
            (None, Some(per_second)) if self.latencies_ms.seen() > 0 => {
                let mean_seconds = self.latency_seconds_sum / self.latencies_ms.seen() as f64;
                Some(per_second * mean_seconds * 1000.0)
            }
            _ => None,
        }
    }
}

/// The `q` quantile of sorted, non-empty `v`, interpolating linearly
/// between the order statistics around position `q * (n - 1)`.
pub fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos.fract());
    match v.get(lo + 1) {
        Some(hi) if frac > 0.0 => v[lo] + (hi - v[lo]) * frac,
        _ => v[lo],
    }
}

/// Champion against shadow on the same requests, where both answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowComparison {
    /// Requests where both gave a label.
    pub labelled: u64,
    /// ... and the labels were equal.
    pub agreed: u64,
    /// Requests where both gave a score.
    pub scored: u64,
    pub abs_score_diff_sum: f64,
    /// Labelled requests where only the champion was right (McNemar's b).
    pub only_champion_right: u64,
    /// Labelled requests where only the shadow was right (McNemar's c).
    pub only_shadow_right: u64,
    /// Regression, labelled requests: |champion error| − |shadow error|
    /// (bounded like feature samples), for the Wilcoxon signed-rank test.
    pub abs_error_diffs: Reservoir<f64>,
}

/// Which of champion and shadow is better on the labelled requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// `mcnemar` (classification) or `wilcoxon` (regression).
    pub test: &'static str,
    pub p_value: f64,
    /// 1: shadow significantly better, −1: champion, 0: no significant difference.
    pub verdict: i8,
    /// Pairs that carry information: discordant predictions (McNemar) or
    /// non-zero error differences (Wilcoxon).
    pub pairs: u64,
}

impl ShadowComparison {
    fn add(&mut self, champion: &Output, shadow: Option<&Output>) {
        let Some(shadow) = shadow else { return };
        if champion.error.is_some() || shadow.error.is_some() {
            return;
        }
        if let (Some(a), Some(b)) = (&champion.label, &shadow.label) {
            self.labelled += 1;
            self.agreed += u64::from(a == b);
        }
        if let (Some(a), Some(b)) = (champion.score, shadow.score) {
            if a.is_finite() && b.is_finite() {
                self.scored += 1;
                self.abs_score_diff_sum += (a - b).abs();
            }
        }
    }

    /// Counts a labelled request for the paired test.
    fn add_truth(
        &mut self,
        champion: &Output,
        shadow: Option<&Output>,
        truth: &Label,
        limit: usize,
        rng: &mut Rng,
    ) {
        let Some(shadow) = shadow else { return };
        if champion.error.is_some() || shadow.error.is_some() {
            return;
        }
        if let (Some(a), Some(b), Some(t)) = (&champion.label, &shadow.label, &truth.label) {
            match (a == t, b == t) {
                (true, false) => self.only_champion_right += 1,
                (false, true) => self.only_shadow_right += 1,
                _ => {}
            }
        }
        if let (Some(a), Some(b), Some(y)) = (champion.value, shadow.value, truth.value) {
            let d = (a - y).abs() - (b - y).abs();
            if d.is_finite() {
                self.abs_error_diffs.add(d, limit, rng);
            }
        }
    }

    /// The paired test of the task: McNemar for classification, Wilcoxon
    /// signed-rank on the absolute errors for regression.
    pub fn comparison(&self, task: Task, alpha: f64) -> Option<Comparison> {
        match task {
            Task::Regression => {
                let w = crate::stats::wilcoxon::wilcoxon(self.abs_error_diffs.items())?;
                let verdict = match (w.p_value < alpha, w.r_plus > w.r_minus) {
                    (false, _) => 0,
                    // Positive differences: the champion's errors were larger.
                    (true, true) => 1,
                    (true, false) => -1,
                };
                Some(Comparison {
                    test: "wilcoxon",
                    p_value: w.p_value,
                    verdict,
                    pairs: w.nonzero as u64,
                })
            }
            _ => self.mcnemar(alpha).map(|(p_value, verdict)| Comparison {
                test: "mcnemar",
                p_value,
                verdict,
                pairs: self.only_champion_right + self.only_shadow_right,
            }),
        }
    }

    /// Exact McNemar test (two-sided binomial on the discordant pairs):
    /// the p-value and the verdict, 1 when the shadow is significantly
    /// better at `alpha`, −1 when the champion is, 0 otherwise.
    pub fn mcnemar(&self, alpha: f64) -> Option<(f64, i8)> {
        let (b, c) = (self.only_champion_right, self.only_shadow_right);
        let n = b + c;
        if n == 0 {
            return None;
        }
        let k = b.min(c);
        let binomial = statrs::distribution::Binomial::new(0.5, n).ok()?;
        let p = (2.0 * statrs::distribution::DiscreteCDF::cdf(&binomial, k)).min(1.0);
        let verdict = match (p < alpha, c > b) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => -1,
        };
        Some((p, verdict))
    }

    /// Share of requests on which the predicted labels agree.
    pub fn agreement_ratio(&self) -> Option<f64> {
        (self.labelled > 0).then(|| self.agreed as f64 / self.labelled as f64)
    }

    /// Mean absolute difference of the positive-class scores.
    pub fn mean_abs_score_diff(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.abs_score_diff_sum / self.scored as f64)
    }
}

/// Why an event could not be placed in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    TooOld,
}

/// The live state of every model: its configuration and reference, and
/// its windows behind a lock of their own (ingest adds, evaluation clones).
pub struct Live {
    pub models: Arc<[Model]>,
    windows: Vec<Mutex<ModelWindows>>,
}

impl Live {
    pub fn new(models: Vec<Model>) -> Live {
        Live {
            windows: models
                .iter()
                .map(|m| Mutex::new(ModelWindows::new(m)))
                .collect(),
            models: models.into(),
        }
    }

    /// The windows of model `mi` (a poisoned lock is taken over: the
    /// windows stay consistent between single updates).
    pub fn windows(&self, mi: usize) -> MutexGuard<'_, ModelWindows> {
        self.windows[mi].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A model by name, with its index.
    pub fn model(&self, name: &str) -> Option<(usize, &Model)> {
        self.models.iter().enumerate().find(|(_, m)| m.name == name)
    }
}

/// All windows of one model.
#[derive(Debug)]
pub struct ModelWindows {
    /// Per window length (the model's order): windows by start time.
    by_length: Vec<BTreeMap<i64, Window>>,
    lengths_ms: Vec<i64>,
    limit: usize,
}

impl ModelWindows {
    pub fn new(model: &Model) -> ModelWindows {
        ModelWindows {
            by_length: model.windows.iter().map(|_| BTreeMap::new()).collect(),
            lengths_ms: model
                .windows
                .iter()
                .map(|w| w.duration.as_millis() as i64)
                .collect(),
            limit: model.sample_limit,
        }
    }

    /// Whether an event at `ts_ms` still has a window in every length at
    /// `now_ms`: the live window and the one before it, whether or not they
    /// hold events, and never older than the oldest window kept.
    pub fn check(&self, ts_ms: i64, now_ms: i64) -> Result<(), Placement> {
        for (len, windows) in self.lengths_ms.iter().zip(&self.by_length) {
            let start = ts_ms.div_euclid(*len) * len;
            let live = now_ms.div_euclid(*len) * len;
            let oldest_kept = (windows.len() >= KEPT_WINDOWS)
                .then(|| windows.keys().next().copied())
                .flatten();
            if start < live - (KEPT_WINDOWS as i64 - 1) * len
                || oldest_kept.is_some_and(|oldest| start < oldest)
            {
                return Err(Placement::TooOld);
            }
        }
        Ok(())
    }

    /// Adds one validated event.
    pub fn add(&mut self, model: &Model, a: &Accepted) {
        let (champion, shadow) = (&a.event.champion, a.event.shadow.as_ref());
        for (len, windows) in self.lengths_ms.iter().zip(self.by_length.iter_mut()) {
            let start = a.ts_ms.div_euclid(*len) * len;
            let window = windows.entry(start).or_insert_with(|| Window {
                start_ms: start,
                length_ms: *len,
                events: 0,
                features: model.features.iter().map(FeatureWindow::new).collect(),
                predictions: model
                    .prediction
                    .iter()
                    .flat_map(|p| {
                        [
                            FeatureWindow::new(&p.reference),
                            FeatureWindow::new(&p.reference),
                        ]
                    })
                    .collect(),
                shadow: ShadowComparison::default(),
                roles: Default::default(),
                labels: 0,
                champion_performance: Performance::default(),
                shadow_performance: Performance::default(),
                version: 0,
                rng: Rng::new(start as u64),
            });
            window.events += 1;
            window.version += 1;
            window.shadow.add(champion, shadow);
            window.roles[0].add(Some(champion), self.limit, &mut window.rng);
            window.roles[1].add(shadow, self.limit, &mut window.rng);
            for (fw, v) in window.features.iter_mut().zip(&a.values) {
                fw.add(v, self.limit, &mut window.rng);
            }
            for (pw, v) in window.predictions.iter_mut().zip(&a.predicted) {
                if let Some(v) = v {
                    pw.add(v, self.limit, &mut window.rng);
                }
            }
            while windows.len() > KEPT_WINDOWS {
                windows.pop_first();
            }
        }
    }

    /// Scores a label against the prediction it belongs to, in every window
    /// still kept that holds it; returns how many windows it reached.
    pub fn add_label(&mut self, model: &Model, ts_ms: i64, event: &Event, label: &Label) -> usize {
        let mut reached = 0;
        for (len, windows) in self.lengths_ms.iter().zip(self.by_length.iter_mut()) {
            let start = ts_ms.div_euclid(*len) * len;
            let Some(w) = windows.get_mut(&start) else {
                continue;
            };
            w.labels += 1;
            w.version += 1;
            let limit = self.limit;
            w.champion_performance.add(
                model.task,
                &model.positive_class,
                &event.champion,
                label,
                limit,
                &mut w.rng,
            );
            if let Some(shadow) = &event.shadow {
                w.shadow_performance.add(
                    model.task,
                    &model.positive_class,
                    shadow,
                    label,
                    limit,
                    &mut w.rng,
                );
            }
            w.shadow.add_truth(
                &event.champion,
                event.shadow.as_ref(),
                label,
                limit,
                &mut w.rng,
            );
            reached += 1;
        }
        reached
    }

    /// Every kept window of each length as (start, version), oldest first
    /// (the last one is the live window): what changed since the last look.
    pub fn versions(&self) -> Vec<Vec<(i64, u64)>> {
        self.by_length
            .iter()
            .map(|w| w.values().map(|w| (w.start_ms, w.version)).collect())
            .collect()
    }

    /// A copy of one kept window (length `li`, starting at `start_ms`), for
    /// evaluation off the lock.
    pub fn window(&self, li: usize, start_ms: i64) -> Option<Window> {
        self.by_length.get(li)?.get(&start_ms).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_feature() -> Feature {
        Feature {
            name: "x".into(),
            column_type: ColumnType::Numeric,
            reference: Sample::Numeric(Numeric::new(vec![1.0, 2.0], false)),
            reference_missing: 0,
            integer: false,
            numeric_keys: false,
        }
    }

    #[test]
    fn reservoir_keeps_the_limit_and_counts_everything() {
        let f = numeric_feature();
        let mut w = FeatureWindow::new(&f);
        let mut rng = Rng::new(7);
        for i in 0..10_000 {
            w.add(&Value::Num(f64::from(i)), 100, &mut rng);
        }
        w.add(&Value::Missing, 100, &mut rng);
        assert_eq!(w.seen(), 10_000);
        assert_eq!(w.missing, 1);
        let Sample::Numeric(n) = w.sample(false) else {
            panic!("numeric")
        };
        assert_eq!(n.len(), 100);
        // A uniform sample of 0..10000 has a mean near 5000.
        let mean = n.sorted.iter().sum::<f64>() / 100.0;
        assert!((3500.0..6500.0).contains(&mean), "{mean}");
    }

    #[test]
    fn shadow_agreement_counts_only_requests_both_answered() {
        let out = |label: &str, score: f64| Output {
            label: Some(label.into()),
            score: Some(score),
            ..Output::default()
        };
        let mut c = ShadowComparison::default();
        c.add(&out("1", 0.9), Some(&out("1", 0.7)));
        c.add(&out("1", 0.6), Some(&out("0", 0.4)));
        c.add(&out("0", 0.2), None);
        c.add(
            &out("0", 0.2),
            Some(&Output {
                error: Some("timeout".into()),
                ..Output::default()
            }),
        );
        assert_eq!(c.agreement_ratio(), Some(0.5));
        assert!((c.mean_abs_score_diff().expect("scored") - 0.2).abs() < 1e-12);
    }

    #[test]
    fn latency_quantiles_interpolate_like_numpy() {
        let mut t = RoleTraffic::default();
        let mut rng = Rng::new(1);
        for ms in [4.0, 1.0, 10.0, 3.0, 2.0, f64::NAN, -1.0] {
            let o = Output {
                latency_ms: Some(ms),
                ..Output::default()
            };
            t.add(Some(&o), 100, &mut rng);
        }
        // numpy.percentile([1, 2, 3, 4, 10], [50, 95, 99]) = [3, 8.8, 9.76];
        // NaN and negative latencies are not latencies.
        let q = t.latency_quantiles_ms().expect("quantiles");
        for (got, want) in q.iter().zip([3.0, 8.8, 9.76]) {
            assert!((got - want).abs() < 1e-12, "{q:?}");
        }
        assert_eq!(t.predictions, 7);
        assert_eq!(RoleTraffic::default().latency_quantiles_ms(), None);
    }

    #[test]
    fn cost_per_1k_from_capacity_or_compute() {
        let mut t = RoleTraffic::default();
        let mut rng = Rng::new(1);
        let o = Output {
            latency_ms: Some(10.0),
            ..Output::default()
        };
        for _ in 0..3600 {
            t.add(Some(&o), 100, &mut rng);
        }
        let per_hour = crate::config::RoleCost {
            per_hour_usd: Some(1.8),
            per_second_usd: None,
        };
        // 1.8 USD for an hour that served 3600 predictions: 0.5 USD per 1000.
        assert!((t.cost_per_1k(&per_hour, 1.0).expect("cost") - 0.5).abs() < 1e-12);
        let per_second = crate::config::RoleCost {
            per_hour_usd: None,
            per_second_usd: Some(0.002),
        };
        // 10 ms each at 0.002 USD/s: 0.02 USD per 1000.
        assert!((t.cost_per_1k(&per_second, 1.0).expect("cost") - 0.02).abs() < 1e-12);
        assert_eq!(RoleTraffic::default().cost_per_1k(&per_hour, 1.0), None);
    }

    #[test]
    fn mcnemar_matches_the_exact_binomial_test() {
        // scipy.stats.binomtest(2, 12, 0.5).pvalue == 0.03857421875
        let c = ShadowComparison {
            only_champion_right: 2,
            only_shadow_right: 10,
            ..ShadowComparison::default()
        };
        let (p, verdict) = c.mcnemar(0.05).expect("discordant pairs");
        assert!((p - 0.038_574_218_75).abs() < 1e-12, "{p}");
        assert_eq!(verdict, 1);
        let even = ShadowComparison {
            only_champion_right: 5,
            only_shadow_right: 5,
            ..ShadowComparison::default()
        };
        assert_eq!(even.mcnemar(0.05), Some((1.0, 0)));
        assert_eq!(ShadowComparison::default().mcnemar(0.05), None);
    }

    #[test]
    fn categories_beyond_the_cap_pool_into_overflow() {
        let f = Feature {
            column_type: ColumnType::Categorical,
            ..numeric_feature()
        };
        let mut w = FeatureWindow::new(&f);
        let mut rng = Rng::new(1);
        for i in 0..(MAX_CATEGORIES + 5) {
            w.add(&Value::Cat(Key::Str(format!("c{i}"))), 10, &mut rng);
        }
        let Sample::Categorical(c) = w.sample(false) else {
            panic!("categorical")
        };
        assert_eq!(c.distinct(), MAX_CATEGORIES + 1);
        assert_eq!(c.total, (MAX_CATEGORIES + 5) as u64);
    }
}
