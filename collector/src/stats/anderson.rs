//! k-sample Anderson–Darling test for two samples, as
//! `scipy.stats.anderson_ksamp` with midranks (Scholz & Stephens 1987,
//! "K-Sample Anderson–Darling Tests", JASA 82(399), eq. 7 and Table 2).
//! The p-value is interpolated from the table's critical values and capped to
//! [0.001, 0.25] as SciPy does.

use super::sample::{pooled_runs, Run};
use super::sum::pairwise_sum;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AndersonResult {
    pub statistic: f64,
    pub p_value: f64,
}

/// Both samples sorted; `None` when there are fewer than two distinct values
/// (or fewer than four observations), where the test is undefined.
pub fn anderson_ksamp(x: &[f64], y: &[f64]) -> Option<AndersonResult> {
    let k = 2.0f64;
    let nn = x.len() + y.len();
    let n_f = nn as f64;
    // Eq. 7 with midranks: for each sample i and distinct value z_j,
    // M_ij = #(s_i < z_j) + f_ij / 2 and B_j = #(Z < z_j) + l_j / 2; one pass
    // over the pooled values fills both samples' terms.
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let (mut inner_x, mut inner_y) = (Vec::new(), Vec::new());
    let term = |below_i: usize, fij: usize, ni: f64, r: &Run| {
        let lj = r.tied() as f64;
        let bj = r.below() as f64 + lj / 2.0;
        let mij = (below_i + fij) as f64 - fij as f64 / 2.0;
        let num = n_f * mij - bj * ni;
        lj / n_f * num * num / (bj * (n_f - bj) - n_f * lj / 4.0)
    };
    for r in pooled_runs(x, y) {
        inner_x.push(term(r.below_a, r.in_a, nx, &r));
        inner_y.push(term(r.below_b, r.in_b, ny, &r));
    }
    if inner_x.len() < 2 || nn < 4 {
        return None;
    }
    let mut a2akn = pairwise_sum(&inner_x) / nx + pairwise_sum(&inner_y) / ny;
    a2akn *= (n_f - 1.0) / n_f;

    let h_cap = 1.0 / x.len() as f64 + 1.0 / y.len() as f64;
    // hs_cs = cumsum(1 / [N-1, N-2, ..., 2]); h = hs_cs[-1] + 1; g = Σ hs_cs[j] / (j + 2).
    let mut cum = 0.0;
    let mut g_terms = Vec::with_capacity(nn.saturating_sub(2));
    for (j, d) in (2..nn).rev().enumerate() {
        cum += 1.0 / d as f64;
        g_terms.push(cum / (j + 2) as f64);
    }
    let h = cum + 1.0;
    let g = pairwise_sum(&g_terms);
    let a = (4.0 * g - 6.0) * (k - 1.0) + (10.0 - 6.0 * g) * h_cap;
    let b = (2.0 * g - 4.0) * k * k + 8.0 * h * k + (2.0 * g - 14.0 * h - 4.0) * h_cap - 8.0 * h
        + 4.0 * g
        - 6.0;
    let c = (6.0 * h + 2.0 * g - 2.0) * k * k
        + (4.0 * h - 4.0 * g + 6.0) * k
        + (2.0 * h - 6.0) * h_cap
        + 4.0 * h;
    let d = (2.0 * h + 6.0) * k * k - 4.0 * h * k;
    let sigmasq =
        (a * n_f.powi(3) + b * n_f * n_f + c * n_f + d) / ((n_f - 1.0) * (n_f - 2.0) * (n_f - 3.0));
    let m = k - 1.0;
    let statistic = (a2akn - m) / sigmasq.sqrt();
    Some(AndersonResult {
        statistic,
        p_value: p_value(statistic, m),
    })
}

/// Scholz & Stephens Table 2 interpolation: a quadratic least-squares fit of
/// log(significance) on the critical values, evaluated at the statistic.
fn p_value(a2: f64, m: f64) -> f64 {
    const B0: [f64; 7] = [0.675, 1.281, 1.645, 1.96, 2.326, 2.573, 3.085];
    const B1: [f64; 7] = [-0.245, 0.25, 0.678, 1.149, 1.822, 2.364, 3.615];
    const B2: [f64; 7] = [-0.105, -0.305, -0.362, -0.391, -0.396, -0.345, -0.154];
    const SIG: [f64; 7] = [0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001];
    let critical: Vec<f64> = (0..7)
        .map(|i| B0[i] + B1[i] / m.sqrt() + B2[i] / m)
        .collect();
    let min = critical.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = critical.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if a2 < min {
        return 0.25;
    }
    if a2 > max {
        return 0.001;
    }
    let logsig: Vec<f64> = SIG.iter().map(|s| s.ln()).collect();
    let coef = super::special::polyfit2(&critical, &logsig);
    (((coef[0] * a2) + coef[1]) * a2 + coef[2]).exp()
}
