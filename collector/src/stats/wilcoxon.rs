//! Wilcoxon signed-rank test on paired differences, two-sided, as SciPy's
//! `scipy.stats.wilcoxon(d)` with its defaults (`zero_method="wilcox"`,
//! `correction=False`, `method="auto"`): zeros are dropped before ranking;
//! the exact null distribution when there are at most 50 differences and no
//! ties or zeros; an exact enumeration of all sign flips (SciPy's
//! permutation test, deterministic below 2^13 outcomes) for at most 13
//! differences with ties or zeros; otherwise the normal approximation with
//! the tie correction.

use statrs::distribution::{ContinuousCDF, Normal};

/// The test's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignedRank {
    /// Sum of the ranks of the positive differences.
    pub r_plus: f64,
    /// Sum of the ranks of the negative differences.
    pub r_minus: f64,
    /// SciPy's reported statistic: `min(r_plus, r_minus)`.
    pub statistic: f64,
    pub p_value: f64,
    /// Differences that were not zero.
    pub nonzero: usize,
}

/// Largest sample for the exact distribution (SciPy's `auto` rule).
const EXACT_MAX: usize = 50;
/// Largest sample whose sign flips are enumerated when there are ties.
const PERMUTATION_MAX: usize = 13;

/// Tests whether the differences `d` are symmetric about zero. `None` when
/// no difference is non-zero (or one is not finite).
pub fn wilcoxon(d: &[f64]) -> Option<SignedRank> {
    if d.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let zeros = d.iter().filter(|&&x| x == 0.0).count();
    // Non-zero differences by absolute value, with average ranks.
    let mut nz: Vec<f64> = d.iter().copied().filter(|&x| x != 0.0).collect();
    let n = nz.len();
    if n == 0 {
        return None;
    }
    nz.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    let mut ranks = vec![0.0; n];
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && nz[j].abs() == nz[i].abs() {
            j += 1;
        }
        let avg = (i + 1 + j) as f64 / 2.0;
        ranks[i..j].iter_mut().for_each(|r| *r = avg);
        let t = (j - i) as f64;
        tie_term += t * t * t - t;
        i = j;
    }
    let has_ties = tie_term > 0.0;
    let r_plus: f64 = nz
        .iter()
        .zip(&ranks)
        .filter(|(x, _)| **x > 0.0)
        .map(|(_, r)| r)
        .sum();
    let r_minus: f64 = nz
        .iter()
        .zip(&ranks)
        .filter(|(x, _)| **x < 0.0)
        .map(|(_, r)| r)
        .sum();
    let p_value = if d.len() <= EXACT_MAX && !has_ties && zeros == 0 {
        exact_p(n, r_plus)
    } else if (has_ties || zeros > 0) && d.len() <= PERMUTATION_MAX {
        sign_flip_p(&ranks, r_plus)
    } else {
        let nf = n as f64;
        let mean = nf * (nf + 1.0) / 4.0;
        let se = ((nf * (nf + 1.0) * (2.0 * nf + 1.0) - tie_term / 2.0) / 24.0).sqrt();
        let z = (r_plus - mean) / se;
        let normal = Normal::new(0.0, 1.0).expect("the standard normal is valid");
        (2.0 * normal.cdf(z).min(normal.sf(z))).min(1.0)
    };
    Some(SignedRank {
        r_plus,
        r_minus,
        statistic: r_plus.min(r_minus),
        p_value,
        nonzero: n,
    })
}

/// Two-sided p-value from the exact null distribution of `r_plus` over `n`
/// untied ranks: `2 min(P(T >= r), P(T <= r))`, clipped to 1.
fn exact_p(n: usize, r_plus: f64) -> f64 {
    let max = n * (n + 1) / 2;
    // counts[s]: sign assignments whose positive ranks sum to s.
    let mut counts = vec![0.0f64; max + 1];
    counts[0] = 1.0;
    for k in 1..=n {
        for s in (k..=k * (k + 1) / 2).rev() {
            counts[s] += counts[s - k];
        }
    }
    let total = 2f64.powi(n as i32);
    let pmf: Vec<f64> = counts.iter().map(|c| c / total).collect();
    let mean = (n * (n + 1)) as f64 / 4.0;
    // SciPy sums the shorter tail and takes the complement of the other.
    let cdf = |k: usize| -> f64 {
        if k as f64 <= mean {
            pmf[..=k].iter().sum()
        } else {
            1.0 - pmf[k + 1..].iter().sum::<f64>()
        }
    };
    let sf = |k: usize| -> f64 {
        if k as f64 <= mean {
            pmf[k..].iter().sum()
        } else {
            1.0 - pmf[..k].iter().sum::<f64>()
        }
    };
    let lo = r_plus.floor() as usize;
    let hi = (r_plus.ceil() as usize).min(max);
    (2.0 * sf(lo).min(cdf(hi))).clamp(0.0, 1.0)
}

/// Two-sided p-value over all 2^n sign flips of the ranked differences
/// (zeros, already dropped, flip onto themselves and change nothing).
fn sign_flip_p(ranks: &[f64], r_plus: f64) -> f64 {
    let n = ranks.len();
    let tolerance = (r_plus * f64::EPSILON * 100.0).abs();
    let (mut le, mut ge) = (0u64, 0u64);
    for mask in 0u64..(1 << n) {
        let t: f64 = (0..n)
            .filter(|i| mask >> i & 1 == 1)
            .map(|i| ranks[i])
            .sum();
        le += u64::from(t <= r_plus + tolerance);
        ge += u64::from(t >= r_plus - tolerance);
    }
    // Zeros double every outcome alike, so they cancel in the ratio.
    let total = (1u64 << n) as f64;
    (2.0 * (le as f64 / total).min(ge as f64 / total)).min(1.0)
}
