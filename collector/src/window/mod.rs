//! Tumbling windows per model and window length, with state that does not
//! grow with traffic: per feature the first `limit` values exactly, then a
//! uniform reservoir of `limit` (Vitter's Algorithm R); category counts capped
//! at `MAX_CATEGORIES` distinct values (the rest pooled into one overflow
//! category); missing counts. While a window has seen no more values than
//! its limit, its samples are exactly the rows sent, so its statistics equal
//! `driftwatch report` on those rows.

use std::collections::{BTreeMap, HashMap};

pub mod performance;

use driftwatch_protocol::{Event, Label, Output};
pub use performance::Performance;

use crate::config::Task;
use crate::models::{Feature, Model};
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

/// Hashable form of a category key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CatKey {
    Num(u64),
    Str(String),
}

#[derive(Debug, Clone)]
enum Values {
    Numeric {
        values: Vec<f64>,
        seen: u64,
    },
    Categorical {
        counts: HashMap<CatKey, u64>,
        overflow: u64,
    },
}

#[derive(Debug, Clone)]
pub struct FeatureWindow {
    values: Values,
    pub missing: u64,
}

impl FeatureWindow {
    fn new(feature: &Feature) -> FeatureWindow {
        let values = match feature.column_type {
            ColumnType::Numeric => Values::Numeric {
                values: Vec::new(),
                seen: 0,
            },
            ColumnType::Categorical => Values::Categorical {
                counts: HashMap::new(),
                overflow: 0,
            },
        };
        FeatureWindow { values, missing: 0 }
    }

    fn add(&mut self, value: &Value, limit: usize, rng: &mut Rng) {
        match (&mut self.values, value) {
            (_, Value::Missing) => self.missing += 1,
            (Values::Numeric { values, seen }, Value::Num(x)) => {
                *seen += 1;
                if values.len() < limit {
                    values.push(*x);
                } else {
                    let j = rng.below(*seen);
                    if (j as usize) < limit {
                        values[j as usize] = *x;
                    }
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
    }

    /// The window's sample, as the statistics take it.
    pub fn sample(&self, integer: bool) -> Sample {
        match &self.values {
            Values::Numeric { values, .. } => {
                Sample::Numeric(Numeric::new(values.clone(), integer))
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
            Values::Numeric { seen, .. } => *seen,
            Values::Categorical { counts, overflow } => counts.values().sum::<u64>() + overflow,
        }
    }
}

/// A small seeded generator for reservoir positions (xorshift64*).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One tumbling window of one length.
#[derive(Debug, Clone)]
pub struct Window {
    pub start_ms: i64,
    pub length_ms: i64,
    pub events: u64,
    pub features: Vec<FeatureWindow>,
    pub shadow: ShadowComparison,
    /// Champion [0] and shadow [1] traffic in this window.
    pub roles: [RoleTraffic; 2],
    /// Labels received for this window's predictions.
    pub labels: u64,
    pub champion_performance: Performance,
    pub shadow_performance: Performance,
    rng: Rng,
}

/// One role's predictions and reported latencies in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoleTraffic {
    pub predictions: u64,
    pub latency_seconds_sum: f64,
    pub latencies: u64,
}

impl RoleTraffic {
    fn add(&mut self, output: Option<&Output>) {
        let Some(o) = output else { return };
        self.predictions += 1;
        if let Some(ms) = o.latency_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
            self.latency_seconds_sum += ms / 1000.0;
            self.latencies += 1;
        }
    }

    /// Cost of 1000 predictions: capacity per hour spread over the
    /// predictions seen in `elapsed_hours`, or compute per second times the
    /// mean latency.
    pub fn cost_per_1k(&self, cost: &crate::config::RoleCost, elapsed_hours: f64) -> Option<f64> {
        match (cost.per_hour_usd, cost.per_second_usd) {
            (Some(per_hour), _) if self.predictions > 0 && elapsed_hours > 0.0 => {
                Some(per_hour * elapsed_hours / self.predictions as f64 * 1000.0)
            }
            (None, Some(per_second)) if self.latencies > 0 => {
                Some(per_second * self.latency_seconds_sum / self.latencies as f64 * 1000.0)
            }
            _ => None,
        }
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

    /// Counts a labelled request for the paired test (classification).
    fn add_truth(&mut self, champion: &Output, shadow: Option<&Output>, truth: &str) {
        let Some(shadow) = shadow else { return };
        if champion.error.is_some() || shadow.error.is_some() {
            return;
        }
        if let (Some(a), Some(b)) = (&champion.label, &shadow.label) {
            match (a == truth, b == truth) {
                (true, false) => self.only_champion_right += 1,
                (false, true) => self.only_shadow_right += 1,
                _ => {}
            }
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

    /// Whether an event at `ts_ms` still has a window in every length.
    pub fn check(&self, ts_ms: i64) -> Result<(), Placement> {
        for (len, windows) in self.lengths_ms.iter().zip(&self.by_length) {
            let start = ts_ms.div_euclid(*len) * len;
            if windows.len() >= KEPT_WINDOWS
                && windows.keys().next().is_some_and(|&oldest| start < oldest)
            {
                return Err(Placement::TooOld);
            }
        }
        Ok(())
    }

    /// Adds one validated event (values in the model's feature order).
    pub fn add(
        &mut self,
        model: &Model,
        ts_ms: i64,
        values: &[Value],
        champion: &Output,
        shadow: Option<&Output>,
    ) {
        for (len, windows) in self.lengths_ms.iter().zip(self.by_length.iter_mut()) {
            let start = ts_ms.div_euclid(*len) * len;
            let window = windows.entry(start).or_insert_with(|| Window {
                start_ms: start,
                length_ms: *len,
                events: 0,
                features: model.features.iter().map(FeatureWindow::new).collect(),
                shadow: ShadowComparison::default(),
                roles: [RoleTraffic::default(); 2],
                labels: 0,
                champion_performance: Performance::default(),
                shadow_performance: Performance::default(),
                rng: Rng((start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            });
            window.events += 1;
            window.shadow.add(champion, shadow);
            window.roles[0].add(Some(champion));
            window.roles[1].add(shadow);
            for (fw, v) in window.features.iter_mut().zip(values) {
                fw.add(v, self.limit, &mut window.rng);
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
            let limit = self.limit;
            let rng = &mut w.rng;
            let mut draw = |n: u64| rng.below(n);
            w.champion_performance.add(
                model.task,
                &model.positive_class,
                &event.champion,
                label,
                limit,
                &mut draw,
            );
            if let Some(shadow) = &event.shadow {
                w.shadow_performance.add(
                    model.task,
                    &model.positive_class,
                    shadow,
                    label,
                    limit,
                    &mut draw,
                );
            }
            if let (Some(truth), false) = (label.label.as_deref(), model.task == Task::Regression) {
                w.shadow
                    .add_truth(&event.champion, event.shadow.as_ref(), truth);
            }
            reached += 1;
        }
        reached
    }

    /// Every kept window of each length, oldest first (the last one is the
    /// live window), cloned for evaluation off the lock.
    pub fn kept(&self) -> Vec<Vec<Window>> {
        self.by_length
            .iter()
            .map(|w| w.values().cloned().collect())
            .collect()
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
        let mut rng = Rng(7);
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
    fn cost_per_1k_from_capacity_or_compute() {
        let t = RoleTraffic {
            predictions: 3600,
            latency_seconds_sum: 36.0,
            latencies: 3600,
        };
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
        let mut rng = Rng(1);
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
