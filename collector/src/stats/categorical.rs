//! Tests on category counts: Pearson's chi-square (`chisquare`) and the
//! two-proportion z-test (`ztest`), as Evidently defines them.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

use super::sample::{align, Counts};
use super::sum::pairwise_sum;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PTest {
    pub statistic: f64,
    pub p_value: f64,
}

/// Chi-square goodness of fit of the current counts against the reference
/// proportions: expected = reference count × n_current / n_reference over the
/// union of categories (`scipy.stats.chisquare`). A category the reference
/// never saw makes the statistic infinite and the p-value 0.
pub fn chisquare(reference: &Counts, current: &Counts) -> PTest {
    let pairs = align(reference, current);
    let k_norm = current.total as f64 / reference.total as f64;
    let terms: Vec<f64> = pairs
        .iter()
        .map(|&(r, c)| {
            let exp = r as f64 * k_norm;
            let d = c as f64 - exp;
            d * d / exp
        })
        .collect();
    let statistic = pairwise_sum(&terms);
    let df = pairs.len() as f64 - 1.0;
    let p_value = chi2_sf(statistic, df);
    PTest { statistic, p_value }
}

/// Sample-ratio mismatch of an experiment: chi-square goodness of fit of
/// each arm's count against its share of the weights, as GrowthBook's
/// gbstats `check_srm` computes it (an arm of weight 0 or less adds
/// nothing; degrees of freedom: arms − 1). No counts at all: 1. A p-value
/// below 0.001 says the split is broken (the arms' results are not
/// comparable), whatever the metrics say.
pub fn sample_ratio_mismatch(counts: &[u64], weights: &[f64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 1.0;
    }
    let weight: f64 = weights.iter().sum();
    let statistic: f64 = counts
        .iter()
        .zip(weights)
        .filter(|(_, &w)| w > 0.0)
        .map(|(&o, &w)| {
            let e = w / weight * total as f64;
            (o as f64 - e).powi(2) / e
        })
        .sum();
    chi2_sf(statistic, counts.len() as f64 - 1.0)
}

/// `scipy.stats.chi2.sf`: NaN for zero degrees of freedom, 0 at infinity.
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    if df <= 0.0 || x.is_nan() {
        return f64::NAN;
    }
    if x == f64::INFINITY {
        return 0.0;
    }
    match ChiSquared::new(df) {
        Ok(d) => d.sf(x),
        Err(_) => f64::NAN,
    }
}

/// Two-proportion z-test (Evidently's `proportions_diff_z_stat_ind`): the
/// smallest category against all others, p = 2·(1 − Φ(|z|)). When both sides
/// hold the same single value the p-value is 1 and the statistic 0.
pub fn ztest(reference: &Counts, current: &Counts) -> PTest {
    if reference.distinct() == 1 && current.distinct() == 1 && reference.keys[0] == current.keys[0]
    {
        return PTest {
            statistic: 0.0,
            p_value: 1.0,
        };
    }
    let first = reference
        .keys
        .first()
        .into_iter()
        .chain(current.keys.first())
        .min()
        .cloned();
    let count_of = |c: &Counts| {
        first
            .as_ref()
            .and_then(|k| c.keys.binary_search(k).ok())
            .map_or(0, |i| c.counts[i])
    };
    let (n1, n2) = (reference.total as f64, current.total as f64);
    let p1 = (reference.total - count_of(reference)) as f64 / n1;
    let p2 = (current.total - count_of(current)) as f64 / n2;
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let normal = Normal::new(0.0, 1.0).expect("the standard normal is valid");
    PTest {
        statistic: z,
        p_value: 2.0 * (1.0 - normal.cdf(z.abs())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample::Key;
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> Counts {
        Counts::from_pairs(
            pairs
                .iter()
                .map(|&(k, c)| (Key::Str(k.into()), c))
                .collect(),
        )
    }

    #[test]
    fn unseen_category_gives_infinite_statistic_and_zero_p() {
        let r = chisquare(
            &counts(&[("a", 10), ("b", 10)]),
            &counts(&[("a", 5), ("c", 5)]),
        );
        assert!(r.statistic.is_infinite());
        assert_eq!(r.p_value, 0.0);
    }

    #[test]
    fn identical_proportions_do_not_drift() {
        let r = chisquare(
            &counts(&[("a", 10), ("b", 30)]),
            &counts(&[("a", 20), ("b", 60)]),
        );
        assert_eq!(r.statistic, 0.0);
        assert!((r.p_value - 1.0).abs() < 1e-15);
        let z = ztest(
            &counts(&[("a", 10), ("b", 30)]),
            &counts(&[("a", 20), ("b", 60)]),
        );
        assert!((z.p_value - 1.0).abs() < 1e-15);
    }
}
