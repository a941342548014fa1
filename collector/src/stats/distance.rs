//! Wasserstein-1 distance normalised by the reference's population standard
//! deviation (Evidently's `wasserstein`), over `scipy.stats.wasserstein_distance`.

use super::sum::{mean_std, pairwise_sum};

/// The smallest norm Evidently divides by, for near-constant references.
const MIN_NORM: f64 = 0.001;

/// `Σ |F_u(x_k) − F_v(x_k)| · (x_{k+1} − x_k)` over the pooled sorted values
/// `x_k`, as SciPy's `_cdf_distance(p=1)`; both inputs sorted and non-empty.
pub fn wasserstein(u: &[f64], v: &[f64]) -> f64 {
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let total = u.len() + v.len();
    let mut terms = Vec::with_capacity(total.saturating_sub(1));
    let (mut i, mut j) = (0usize, 0usize);
    let mut prev = f64::NAN;
    for _ in 0..total {
        let take_u = j >= v.len() || (i < u.len() && u[i] <= v[j]);
        let x = if take_u {
            i += 1;
            u[i - 1]
        } else {
            j += 1;
            v[j - 1]
        };
        if !prev.is_nan() {
            // Where the step is positive every value <= prev has been consumed,
            // so the consumed counts are the right-continuous CDFs at prev; on
            // ties the step is zero and so is the term, as in SciPy.
            let (ci, cj) = if take_u { (i - 1, j) } else { (i, j - 1) };
            terms.push((ci as f64 / nu - cj as f64 / nv).abs() * (x - prev));
        }
        prev = x;
    }
    pairwise_sum(&terms)
}

/// Wasserstein distance divided by `max(std(reference), 0.001)`.
pub fn wasserstein_norm(reference: &[f64], current: &[f64]) -> f64 {
    let (_, std) = mean_std(reference);
    wasserstein(reference, current) / std.max(MIN_NORM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_by_constant_is_that_constant() {
        let u: Vec<f64> = (0..100).map(f64::from).collect();
        let v: Vec<f64> = u.iter().map(|x| x + 2.5).collect();
        assert!((wasserstein(&u, &v) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn scipy_doc_example() {
        // scipy.stats.wasserstein_distance([0, 1, 3], [5, 6, 8]) == 5.0
        assert!((wasserstein(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]) - 5.0).abs() < 1e-12);
    }
}
