//! The champion and the shadow in a window: each role's predictions,
//! errors, latencies and cost, and the paired comparison of the two on
//! the same requests.

use driftwatch_protocol::{Label, Output};

use super::Reservoir;
use crate::config::Task;
use crate::stats::rng::Rng;

/// One role's predictions and reported latencies in a window.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RoleTraffic {
    pub predictions: u64,
    /// Outputs that reported an `error`.
    pub errors: u64,
    pub latency_seconds_sum: f64,
    /// Reported latencies in milliseconds (bounded like feature samples).
    pub latencies_ms: Reservoir<f64>,
}

impl RoleTraffic {
    pub(crate) fn add(&mut self, output: Option<&Output>, limit: usize, rng: &mut Rng) {
        let Some(o) = output else { return };
        self.predictions += 1;
        self.errors += u64::from(o.error.is_some());
        if let Some(ms) = o.latency_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
            self.latency_seconds_sum += ms / 1000.0;
            self.latencies_ms.add(ms, limit, rng);
        }
    }

    /// Takes in another partition's traffic of the same window.
    pub(crate) fn merge(&mut self, other: &RoleTraffic, limit: usize, rng: &mut Rng) {
        self.predictions += other.predictions;
        self.errors += other.errors;
        self.latency_seconds_sum += other.latency_seconds_sum;
        self.latencies_ms.merge(&other.latencies_ms, limit, rng);
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
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Per labelled request where both answered, how much better the
    /// shadow did: right − right (−1, 0, 1) or |champion error| − |shadow
    /// error|; sums for the always-valid paired comparison.
    #[serde(default)]
    pub paired: crate::stats::sequential::Arm,
}

/// The always-valid paired comparison of shadow and champion: the mean
/// per-request difference (positive: the shadow does better) with its
/// confidence sequence, valid at every evaluation of the window.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AlwaysValid {
    pub difference: f64,
    pub lower: f64,
    pub upper: f64,
    pub p_value: f64,
    /// 1: shadow better, −1: champion better, 0: not known yet.
    pub verdict: i8,
    pub pairs: u64,
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
    pub(super) fn add(&mut self, champion: &Output, shadow: Option<&Output>) {
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

    /// Takes in another partition's comparison of the same window.
    pub(super) fn merge(&mut self, other: &ShadowComparison, limit: usize, rng: &mut Rng) {
        self.labelled += other.labelled;
        self.agreed += other.agreed;
        self.scored += other.scored;
        self.abs_score_diff_sum += other.abs_score_diff_sum;
        self.only_champion_right += other.only_champion_right;
        self.only_shadow_right += other.only_shadow_right;
        self.abs_error_diffs
            .merge(&other.abs_error_diffs, limit, rng);
        self.paired.n += other.paired.n;
        self.paired.sum += other.paired.sum;
        self.paired.sum_squares += other.paired.sum_squares;
    }

    /// Counts a labelled request for the paired test.
    pub(super) fn add_truth(
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
            self.paired
                .add(f64::from(u8::from(b == t)) - f64::from(u8::from(a == t)));
        }
        if let (Some(a), Some(b), Some(y)) = (champion.value, shadow.value, truth.value) {
            let d = (a - y).abs() - (b - y).abs();
            if d.is_finite() {
                self.abs_error_diffs.add(d, limit, rng);
                self.paired.add(d);
            }
        }
    }

    /// The always-valid paired comparison at `alpha` (the confidence
    /// sequence of `stats::sequential`, tuned for 5000 pairs); `None`
    /// while the differences cannot be compared (too few, or all equal).
    pub fn always_valid(&self, alpha: f64) -> Option<AlwaysValid> {
        use crate::stats::sequential::{Difference, Sequential, Values};
        let test = Sequential {
            values: Values::Mean,
            difference: Difference::Absolute,
            alpha,
            ..Sequential::default()
        };
        let c = test.paired(&self.paired).ok()?;
        let verdict = match (c.lower > 0.0, c.upper < 0.0) {
            (true, _) => 1,
            (_, true) => -1,
            _ => 0,
        };
        Some(AlwaysValid {
            difference: c.estimate,
            lower: c.lower,
            upper: c.upper,
            p_value: c.p_value,
            verdict,
            pairs: self.paired.n as u64,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_always_valid_paired_comparison_reads_the_differences_the_right_way() {
        let out = |label: &str| Output {
            label: Some(label.into()),
            ..Output::default()
        };
        let truth = Label {
            model: "m".into(),
            request_id: "r".into(),
            label: Some("1".into()),
            value: None,
            reward: None,
        };
        let mut c = ShadowComparison::default();
        let mut rng = Rng::new(1);
        // 600 pairs: the shadow alone right on 150, the champion alone on 30.
        for i in 0..600 {
            let (a, b) = match i % 20 {
                0..=4 => ("0", "1"),
                5 => ("1", "0"),
                _ => ("1", "1"),
            };
            c.add_truth(&out(a), Some(&out(b)), &truth, 100, &mut rng);
        }
        assert_eq!((c.paired.n, c.paired.sum), (600.0, 120.0));
        let v = c.always_valid(0.05).expect("comparable");
        assert_eq!(v.verdict, 1, "{v:?}");
        assert!((v.difference - 0.2).abs() < 1e-12 && v.lower > 0.0 && v.pairs == 600);
        // It agrees with McNemar's direction, and is wider than a fixed look.
        assert_eq!(c.mcnemar(0.05).map(|m| m.1), Some(1));
        let mut even = ShadowComparison::default();
        for i in 0..100 {
            let (a, b) = if i % 2 == 0 { ("0", "1") } else { ("1", "0") };
            even.add_truth(&out(a), Some(&out(b)), &truth, 100, &mut rng);
        }
        assert_eq!(even.always_valid(0.05).map(|v| v.verdict), Some(0));
        assert_eq!(ShadowComparison::default().always_valid(0.05), None);
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
}
