//! Benjamini–Hochberg control of the false discovery rate: the adjusted
//! p-values (q-values) of a family of tests, as statsmodels'
//! `multipletests(method="fdr_bh")` computes them. A test whose q-value
//! is below α is a discovery with the expected share of false ones among
//! all discoveries at most α.

/// The q-value of each p-value, in the given order: sorted ascending,
/// `p_(i) / (i / m)`, made monotone from the largest down, capped at 1.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    // Tied p-values end with the same q-value whatever their order.
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut q = vec![0.0; m];
    let mut running = f64::INFINITY;
    for (rank, &i) in order.iter().enumerate().rev() {
        // p / (i / m), the order of operations statsmodels uses.
        running = running.min(p[i] / ((rank + 1) as f64 / m as f64));
        q[i] = running.min(1.0);
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from statsmodels 0.15.0
    /// `multipletests(p, method="fdr_bh")[1]`.
    #[test]
    fn q_values_are_statsmodels() {
        let cases: [(&[f64], &[f64]); 4] = [
            (
                &[0.01, 0.04, 0.03, 0.005, 0.2, 0.9],
                &[
                    0.030000000000000002,
                    0.060000000000000005,
                    0.06,
                    0.030000000000000002,
                    0.24,
                    0.9,
                ],
            ),
            (&[0.5], &[0.5]),
            (
                &[0.001, 0.001, 0.02, 0.02, 0.04],
                &[
                    0.0025,
                    0.0025,
                    0.024999999999999998,
                    0.024999999999999998,
                    0.04,
                ],
            ),
            (&[0.04, 0.06, 0.05, 0.01], &[0.06, 0.06, 0.06, 0.04]),
        ];
        for (p, want) in cases {
            assert_eq!(benjamini_hochberg(p), want, "{p:?}");
        }
        assert!(benjamini_hochberg(&[]).is_empty());
    }
}
