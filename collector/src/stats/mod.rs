//! Drift statistics: every test named in DESIGN.md, each defined as Evidently
//! 0.7 defines it and computed as SciPy computes it, over prepared samples.
//! Pure functions over slices; the report and the collector's windows call
//! `run` and `default_test` and never reimplement a test.

pub mod anderson;
pub mod binning;
pub mod calibration;
pub mod categorical;
pub mod cbpe;
pub mod cvm;
pub mod distance;
pub mod dle;
pub mod estimation;
pub mod fdr;
pub mod kolmogorov;
pub mod ks;
pub mod multiclass;
pub mod numpy_rng;
pub mod order;
pub mod reconstruction;
pub mod rng;
pub mod sample;
pub mod sequential;
pub mod special;
pub mod sum;
pub mod wilcoxon;

pub use sample::{Counts, Key, Numeric, Sample};

use serde::{Deserialize, Serialize};

/// How a column is tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Numeric,
    Categorical,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Numeric => "numeric",
            ColumnType::Categorical => "categorical",
        }
    }
}

/// The drift tests, by their contract names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TestKind {
    Ks,
    Psi,
    Wasserstein,
    JensenShannon,
    Kl,
    ChiSquare,
    ZTest,
    Anderson,
    CramerVonMises,
}

/// Which side of the threshold means drift, per Evidently's own rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    PValueAtMost,
    PValueBelow,
    StatisticAtLeast,
}

impl TestKind {
    pub const ALL: [TestKind; 9] = [
        TestKind::Ks,
        TestKind::Psi,
        TestKind::Wasserstein,
        TestKind::JensenShannon,
        TestKind::Kl,
        TestKind::ChiSquare,
        TestKind::ZTest,
        TestKind::Anderson,
        TestKind::CramerVonMises,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TestKind::Ks => "ks",
            TestKind::Psi => "psi",
            TestKind::Wasserstein => "wasserstein",
            TestKind::JensenShannon => "jensenshannon",
            TestKind::Kl => "kl",
            TestKind::ChiSquare => "chisquare",
            TestKind::ZTest => "ztest",
            TestKind::Anderson => "anderson",
            TestKind::CramerVonMises => "cramer_von_mises",
        }
    }

    /// Parses a contract name; Evidently's names (`kl_div`, `z`) are accepted too.
    pub fn parse(name: &str) -> Option<TestKind> {
        let alias = match name {
            "kl_div" => "kl",
            "z" => "ztest",
            other => other,
        };
        TestKind::ALL.into_iter().find(|t| t.name() == alias)
    }

    pub fn names() -> String {
        TestKind::ALL
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn rule(self) -> Rule {
        match self {
            TestKind::Ks | TestKind::CramerVonMises => Rule::PValueAtMost,
            TestKind::ChiSquare | TestKind::ZTest | TestKind::Anderson => Rule::PValueBelow,
            TestKind::Psi | TestKind::Wasserstein | TestKind::JensenShannon | TestKind::Kl => {
                Rule::StatisticAtLeast
            }
        }
    }

    /// Evidently's default threshold for the test.
    pub fn default_threshold(self) -> f64 {
        match self {
            TestKind::Ks | TestKind::ChiSquare | TestKind::ZTest => 0.05,
            TestKind::Anderson | TestKind::CramerVonMises => 0.1,
            TestKind::Psi | TestKind::Wasserstein | TestKind::JensenShannon | TestKind::Kl => 0.1,
        }
    }

    /// Whether the test has a p-value (and judges by it).
    pub fn has_p_value(self) -> bool {
        self.rule() != Rule::StatisticAtLeast
    }

    /// Whether the outcome means drift at `threshold`; NaN never drifts.
    pub fn drifted(self, outcome: &TestOutcome, threshold: f64) -> bool {
        match self.rule() {
            Rule::PValueAtMost => outcome.p_value.is_some_and(|p| p <= threshold),
            Rule::PValueBelow => outcome.p_value.is_some_and(|p| p < threshold),
            Rule::StatisticAtLeast => outcome.statistic >= threshold,
        }
    }

    /// Whether the test is meaningful for a column of this type with
    /// `distinct` values on both sides together (the report runs these).
    pub fn applies(self, column: ColumnType, distinct: usize) -> bool {
        match self {
            TestKind::Ks
            | TestKind::Wasserstein
            | TestKind::Anderson
            | TestKind::CramerVonMises => column == ColumnType::Numeric,
            TestKind::Psi | TestKind::Kl | TestKind::JensenShannon => true,
            TestKind::ChiSquare => column == ColumnType::Categorical || distinct <= 5,
            TestKind::ZTest => distinct <= 2,
        }
    }
}

/// Evidently's automatic choice (`_get_default_stattest`): small references
/// get p-value tests, large ones distances; numeric columns with at most five
/// distinct values are treated as categories.
pub fn default_test(column: ColumnType, reference_rows: usize, distinct: usize) -> TestKind {
    let few_values = column == ColumnType::Categorical || distinct <= 5;
    match (reference_rows <= 1000, few_values) {
        (true, true) if distinct > 2 => TestKind::ChiSquare,
        (true, true) => TestKind::ZTest,
        (true, false) => TestKind::Ks,
        (false, true) => TestKind::JensenShannon,
        (false, false) => TestKind::Wasserstein,
    }
}

/// What a test computed. `statistic` may be infinite (chi-square with a
/// category the reference never saw) or NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestOutcome {
    pub statistic: f64,
    pub p_value: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatError {
    #[error("{test} applies to numeric columns only")]
    NeedsNumeric { test: &'static str },
    #[error("{test} needs {what}")]
    TooFew {
        test: &'static str,
        what: &'static str,
    },
}

/// Runs one test on a column's two sides (both non-empty).
pub fn run(kind: TestKind, reference: &Sample, current: &Sample) -> Result<TestOutcome, StatError> {
    let numeric = || match (reference, current) {
        (Sample::Numeric(a), Sample::Numeric(b)) => Ok((&a.sorted[..], &b.sorted[..])),
        _ => Err(StatError::NeedsNumeric { test: kind.name() }),
    };
    let outcome = match kind {
        TestKind::Ks => {
            let (a, b) = numeric()?;
            let r = ks::ks_2samp(a, b);
            TestOutcome {
                statistic: r.statistic,
                p_value: Some(r.p_value),
            }
        }
        TestKind::Wasserstein => {
            let (a, b) = numeric()?;
            TestOutcome {
                statistic: distance::wasserstein_norm(a, b),
                p_value: None,
            }
        }
        TestKind::Anderson => {
            let (a, b) = numeric()?;
            let r = anderson::anderson_ksamp(a, b).ok_or(StatError::TooFew {
                test: kind.name(),
                what: "at least two distinct values and four observations",
            })?;
            TestOutcome {
                statistic: r.statistic,
                p_value: Some(r.p_value),
            }
        }
        TestKind::CramerVonMises => {
            let (a, b) = numeric()?;
            let r = cvm::cramervonmises_2samp(a, b).ok_or(StatError::TooFew {
                test: kind.name(),
                what: "at least two values on each side",
            })?;
            TestOutcome {
                statistic: r.statistic,
                p_value: Some(r.p_value),
            }
        }
        TestKind::Psi => {
            let (r, c) = binning::binned(reference, current, true);
            TestOutcome {
                statistic: binning::psi(&r, &c),
                p_value: None,
            }
        }
        TestKind::Kl => {
            let (r, c) = binning::binned(reference, current, true);
            TestOutcome {
                statistic: binning::kl(&r, &c),
                p_value: None,
            }
        }
        TestKind::JensenShannon => {
            let (r, c) = binning::binned(reference, current, false);
            TestOutcome {
                statistic: binning::jensenshannon(&r, &c),
                p_value: None,
            }
        }
        TestKind::ChiSquare => {
            let r = categorical::chisquare(&reference.counts(), &current.counts());
            TestOutcome {
                statistic: r.statistic,
                p_value: Some(r.p_value).filter(|p| !p.is_nan()),
            }
        }
        TestKind::ZTest => {
            let r = categorical::ztest(&reference.counts(), &current.counts());
            TestOutcome {
                statistic: r.statistic,
                p_value: Some(r.p_value).filter(|p| !p.is_nan()),
            }
        }
    };
    Ok(outcome)
}

/// Average precision as scikit-learn's `average_precision_score`
/// computes it: precision and recall at each distinct score from the
/// highest down, summed step-wise over recall; `None` without positives.
pub fn average_precision(pairs: &[(f64, bool)]) -> Option<f64> {
    let mut sorted: Vec<(f64, bool)> = pairs.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    // (true positives, false positives) at the end of each run of a score.
    let mut points: Vec<(f64, f64)> = Vec::new();
    let mut tp = 0.0;
    for (i, &(score, positive)) in sorted.iter().enumerate() {
        tp += f64::from(u8::from(positive));
        if sorted.get(i + 1).is_none_or(|next| next.0 != score) {
            points.push((tp, 1.0 + i as f64 - tp));
        }
    }
    let &(all, _) = points.last()?;
    if all == 0.0 {
        return None;
    }
    // Reversed (recall descending), then precision 1 at recall 0.
    let precision: Vec<f64> = points
        .iter()
        .rev()
        .map(|&(t, f)| if t + f != 0.0 { t / (t + f) } else { 0.0 })
        .chain(std::iter::once(1.0))
        .collect();
    let recall: Vec<f64> = points
        .iter()
        .rev()
        .map(|&(t, _)| t / all)
        .chain(std::iter::once(0.0))
        .collect();
    let terms: Vec<f64> = recall
        .windows(2)
        .zip(&precision)
        .map(|(r, p)| (r[1] - r[0]) * p)
        .collect();
    Some(-sum::pairwise_sum(&terms))
}

/// Area under the ROC curve by the rank-sum (Mann–Whitney) formula with
/// average ranks for tied scores; `None` without both classes.
pub fn roc_auc(pairs: &[(f64, bool)]) -> Option<f64> {
    let positives = pairs.iter().filter(|p| p.1).count() as f64;
    let negatives = pairs.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let rank = (i + j + 1) as f64 / 2.0;
        rank_sum += rank * sorted[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_test_follows_evidently() {
        assert_eq!(default_test(ColumnType::Numeric, 1000, 6), TestKind::Ks);
        assert_eq!(
            default_test(ColumnType::Numeric, 1000, 5),
            TestKind::ChiSquare
        );
        assert_eq!(default_test(ColumnType::Numeric, 1000, 2), TestKind::ZTest);
        assert_eq!(
            default_test(ColumnType::Categorical, 10, 1),
            TestKind::ZTest
        );
        assert_eq!(
            default_test(ColumnType::Numeric, 1001, 6),
            TestKind::Wasserstein
        );
        assert_eq!(
            default_test(ColumnType::Numeric, 1001, 5),
            TestKind::JensenShannon
        );
        assert_eq!(
            default_test(ColumnType::Categorical, 5000, 50),
            TestKind::JensenShannon
        );
    }

    #[test]
    fn names_round_trip() {
        for t in TestKind::ALL {
            assert_eq!(TestKind::parse(t.name()), Some(t));
        }
        assert_eq!(TestKind::parse("kl_div"), Some(TestKind::Kl));
        assert_eq!(TestKind::parse("nope"), None);
    }

    #[test]
    fn drift_rules_differ_per_test_at_the_threshold() {
        let at = |p: f64| TestOutcome {
            statistic: 0.0,
            p_value: Some(p),
        };
        assert!(TestKind::Ks.drifted(&at(0.05), 0.05));
        assert!(!TestKind::ChiSquare.drifted(&at(0.05), 0.05));
        assert!(TestKind::CramerVonMises.drifted(&at(0.1), 0.1));
        assert!(!TestKind::Anderson.drifted(&at(0.1), 0.1));
        let stat = TestOutcome {
            statistic: 0.1,
            p_value: None,
        };
        assert!(TestKind::Psi.drifted(&stat, 0.1));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn numeric(values: Vec<f64>) -> Sample {
        Sample::Numeric(Numeric::new(values, false))
    }

    fn values() -> impl Strategy<Value = Vec<f64>> {
        // Rounded values so that ties are common.
        prop::collection::vec((-1000i32..1000).prop_map(|v| f64::from(v) / 8.0), 5..200)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn p_values_are_probabilities_and_statistics_are_finite(a in values(), b in values()) {
            let (ra, rb) = (numeric(a), numeric(b));
            for kind in TestKind::ALL {
                if let Ok(out) = run(kind, &ra, &rb) {
                    if let Some(p) = out.p_value {
                        prop_assert!((0.0..=1.0).contains(&p), "{} p = {p}", kind.name());
                    }
                    if kind != TestKind::ChiSquare {
                        prop_assert!(out.statistic.is_finite(), "{} statistic {}", kind.name(), out.statistic);
                    }
                }
            }
        }

        #[test]
        fn divergences_are_non_negative_and_bounded(a in values(), b in values()) {
            let (ra, rb) = (numeric(a), numeric(b));
            let js = run(TestKind::JensenShannon, &ra, &rb).expect("applies").statistic;
            prop_assert!((0.0..=std::f64::consts::LN_2.sqrt() + 1e-12).contains(&js));
            prop_assert!(run(TestKind::Psi, &ra, &rb).expect("applies").statistic >= 0.0);
            prop_assert!(run(TestKind::Kl, &ra, &rb).expect("applies").statistic >= -1e-15);
            let ks = run(TestKind::Ks, &ra, &rb).expect("applies").statistic;
            prop_assert!((0.0..=1.0).contains(&ks));
        }

        #[test]
        fn a_sample_against_itself_never_drifts(a in values()) {
            let r = numeric(a);
            for kind in [TestKind::Ks, TestKind::Wasserstein, TestKind::Psi, TestKind::JensenShannon, TestKind::Kl] {
                let out = run(kind, &r, &r).expect("applies");
                prop_assert!(out.statistic.abs() < 1e-12, "{} {}", kind.name(), out.statistic);
                prop_assert!(!kind.drifted(&out, kind.default_threshold()));
            }
        }

        #[test]
        fn ks_and_wasserstein_are_symmetric(a in values(), b in values()) {
            let (ra, rb) = (numeric(a.clone()), numeric(b.clone()));
            let ab = run(TestKind::Ks, &ra, &rb).expect("applies");
            let ba = run(TestKind::Ks, &rb, &ra).expect("applies");
            prop_assert_eq!(ab.statistic, ba.statistic);
            let (sa, sb) = (Numeric::new(a, false), Numeric::new(b, false));
            let w1 = distance::wasserstein(&sa.sorted, &sb.sorted);
            let w2 = distance::wasserstein(&sb.sorted, &sa.sorted);
            prop_assert!((w1 - w2).abs() <= 1e-12 * w1.abs().max(1.0));
        }
    }
}
