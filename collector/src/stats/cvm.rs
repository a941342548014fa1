//! Two-sample Cramér–von Mises test, as `scipy.stats.cramervonmises_2samp`
//! (and Evidently's copy of it): exact null distribution when neither sample
//! has more than 20 values (Xiao, Gordon & Yakovlev 2006, J. Stat. Softw.
//! 17(8)), otherwise the limiting distribution of the normalised statistic
//! (Anderson 1962; series of Csörgő & Faraway 1996, eq. 1.2).

use super::sample::pooled_runs;
use super::special::{ln_gamma, scaled_bessel_k_quarter};
use super::sum::pairwise_sum;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CvmResult {
    pub statistic: f64,
    pub p_value: f64,
}

/// Both samples sorted, each with at least two values.
pub fn cramervonmises_2samp(x: &[f64], y: &[f64]) -> Option<CvmResult> {
    let (nx, ny) = (x.len(), y.len());
    if nx <= 1 || ny <= 1 {
        return None;
    }
    // Midranks of the pooled sample: a run of tied values below `below`
    // shares the rank below + (tied + 1) / 2 (`rankdata(method="average")`).
    let (mut tx, mut ty) = (Vec::with_capacity(nx), Vec::with_capacity(ny));
    for run in pooled_runs(x, y) {
        let rank = run.below() as f64 + (run.tied() as f64 + 1.0) / 2.0;
        for idx in run.below_a..run.below_a + run.in_a {
            let d = rank - (idx + 1) as f64;
            tx.push(d * d);
        }
        for idx in run.below_b..run.below_b + run.in_b {
            let d = rank - (idx + 1) as f64;
            ty.push(d * d);
        }
    }
    let u = nx as f64 * pairwise_sum(&tx) + ny as f64 * pairwise_sum(&ty);
    let k = nx as u128 * ny as u128;
    let big_n = (nx + ny) as u128;
    let (kf, nf) = (k as f64, big_n as f64);
    let t = u / ((k * big_n) as f64) - ((4 * k - 1) as f64) / ((6 * big_n) as f64);
    let p_value = if nx.max(ny) <= 20 {
        exact_p(u, nx as u64, ny as u64)
    } else {
        let et = (1.0 + 1.0 / nf) / 6.0;
        let vt = (nf + 1.0) * (4.0 * kf * nf - 3.0 * ((nx * nx + ny * ny) as f64) - 2.0 * kf);
        let vt = vt / (45.0 * nf * nf * 4.0 * kf);
        let tn = 1.0 / 6.0 + (t - et) / (45.0 * vt).sqrt();
        if tn < 0.003 {
            1.0
        } else {
            (1.0 - cdf_cvm_inf(tn)).max(0.0)
        }
    };
    Some(CvmResult {
        statistic: t,
        p_value,
    })
}

/// CDF of the limiting one-sample Cramér–von Mises distribution, summing the
/// series until a term falls below 1e-7 (the same stopping rule as SciPy, so
/// that the truncation agrees too).
pub fn cdf_cvm_inf(x: f64) -> f64 {
    let pi15 = std::f64::consts::PI.powf(1.5);
    let mut total = 0.0;
    let mut k = 0u32;
    loop {
        let kf = f64::from(k);
        let u = (ln_gamma(kf + 0.5) - ln_gamma(kf + 1.0)).exp() / (pi15 * x.sqrt());
        let y = 4.0 * kf + 1.0;
        let q = y * y / (16.0 * x);
        // exp(-q)·K_{1/4}(q) = exp(-2q)·(e^q K_{1/4}(q)).
        let z = u * y.sqrt() * (-2.0 * q).exp() * scaled_bessel_k_quarter(q);
        total += z;
        if z.abs() < 1e-7 || k > 10_000 {
            break;
        }
        k += 1;
    }
    total
}

/// Python's float floor division `a // b`.
fn py_floordiv(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    let fl = div.floor();
    if div - fl > 0.5 {
        fl + 1.0
    } else {
        fl
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Exact p-value `P(U >= u)` by the frequency tables g_{u,v} of Xiao et al.
/// (p. 6, eq. 11): every lattice path's sum of (a·v − b·u)² counted per value.
fn exact_p(s: f64, m: u64, n: u64) -> f64 {
    let lcm = m / gcd(m, n) * n;
    let (a, b) = (lcm / m, lcm / n);
    let mn = m * n;
    let numerator = (lcm * lcm * (m + n)) as f64 * (6.0 * s - (mn * (4 * mn - 1)) as f64);
    let zeta = py_floordiv(numerator, (6 * mn * mn) as f64);
    // combinations(m + n, m) as Evidently computes it (a float ratio of factorials).
    let combinations = (1..=(m + n)).fold(1.0f64, |acc, i| acc * i as f64)
        / ((1..=m).fold(1.0f64, |acc, i| acc * i as f64)
            * (1..=n).fold(1.0f64, |acc, i| acc * i as f64));
    // gs[v] holds (value, frequency) pairs sorted by value.
    let mut gs: Vec<Vec<(u64, u64)>> = vec![Vec::new(); m as usize + 1];
    gs[0] = vec![(0, 1)];
    for u in 0..=n {
        let mut next: Vec<Vec<(u64, u64)>> = Vec::with_capacity(m as usize + 1);
        let mut tmp: Vec<(u64, u64)> = Vec::new();
        for (v, g) in gs.iter().enumerate() {
            tmp = merge(&tmp, g);
            let diff = (a * v as u64) as i64 - (b * u) as i64;
            let add = (diff * diff) as u64;
            for e in tmp.iter_mut() {
                e.0 += add;
            }
            next.push(tmp.clone());
        }
        gs = next;
    }
    let tail: u64 = gs[m as usize]
        .iter()
        .filter(|(value, _)| *value as f64 >= zeta)
        .map(|&(_, f)| f)
        .sum();
    tail as f64 / combinations
}

/// Merges two frequency tables sorted by value, adding equal values' counts.
fn merge(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((a[i].0, a[i].1 + b[j].1));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floordiv_matches_python() {
        assert_eq!(py_floordiv(7.0, 2.0), 3.0);
        assert_eq!(py_floordiv(-7.0, 2.0), -4.0);
        assert_eq!(py_floordiv(-7.5, 2.5), -3.0);
    }

    #[test]
    fn exact_tail_at_minimum_is_one() {
        // The smallest attainable U has every path at or above it.
        let x = [1.0, 3.0, 5.0];
        let y = [2.0, 4.0, 6.0];
        let r = cramervonmises_2samp(&x, &y).expect("two values each");
        assert!((r.p_value - 1.0).abs() < 1e-12, "{}", r.p_value);
    }
}
