//! Two-sample Kolmogorov–Smirnov test, as `scipy.stats.ks_2samp(method="auto")`:
//! the exact null distribution when both samples have at most 10 000 values,
//! Smirnov's asymptotic `kstwo` distribution otherwise.

use std::collections::HashMap;
use std::sync::Mutex;

use super::kolmogorov::kstwo_sf;
use super::sample::pooled_runs;

/// SciPy's `MAX_AUTO_N`: above this sample size `auto` switches to asymptotic.
const MAX_EXACT_N: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    pub statistic: f64,
    pub p_value: f64,
    pub exact: bool,
}

/// Both inputs sorted ascending and non-empty.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> KsResult {
    let (n1, n2) = (a.len(), b.len());
    let d = max_ecdf_difference(a, b);
    if n1.max(n2) <= MAX_EXACT_N {
        if let Some((d, p)) = exact(n1 as u64, n2 as u64, d) {
            return KsResult {
                statistic: d,
                p_value: p.clamp(0.0, 1.0),
                exact: true,
            };
        }
    }
    let (m, n) = if n1 >= n2 {
        (n1 as f64, n2 as f64)
    } else {
        (n2 as f64, n1 as f64)
    };
    let en = (m * n / (m + n)).round_ties_even();
    let p = kstwo_sf(en as u64, d);
    KsResult {
        statistic: d,
        p_value: p.clamp(0.0, 1.0),
        exact: false,
    }
}

/// `max |F1 − F2|` over the pooled sample, with each ECDF evaluated as
/// SciPy does (`searchsorted(side="right") / n`, then the difference).
pub fn max_ecdf_difference(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut max_s, mut min_s) = (f64::NEG_INFINITY, f64::INFINITY);
    for run in pooled_runs(a, b) {
        let diff = (run.below_a + run.in_a) as f64 / n1 - (run.below_b + run.in_b) as f64 / n2;
        max_s = max_s.max(diff);
        min_s = min_s.min(diff);
    }
    let min_s = (-min_s).clamp(0.0, 1.0);
    if min_s > max_s {
        min_s
    } else {
        max_s
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// SciPy's `_attempt_exact_2kssamp` (two-sided): D is snapped to the lattice
/// `h / lcm(n1, n2)` and the tail probability is counted over lattice paths.
/// `None` when the computation loses range, as SciPy falls back then too.
fn exact(n1: u64, n2: u64, d: f64) -> Option<(f64, f64)> {
    let g = gcd(n1, n2);
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round_ties_even() as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return Some((d, 1.0));
    }
    let p = remembered((n1.min(n2), n1.max(n2), h), || lattice_p_value(n1, n2, h));
    (p.is_finite() && (0.0..=1.0).contains(&p)).then_some((d, p))
}

/// `P(D >= h / lcm(n1, n2))` under the null, counted over lattice paths
/// every time (what [`ks_2samp`] remembers); `h` > 0. May be out of [0, 1]
/// where the computation loses range (SciPy then falls back).
pub fn lattice_p_value(n1: u64, n2: u64, h: u64) -> f64 {
    if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        outer_prob_inside(n1, n2, gcd(n1, n2), h)
    }
}

/// Exact p-values already computed, by (smaller size, larger size, h).
/// The p-value is a function of these three numbers alone, and a live
/// window at its sample limit tested against a fixed reference keeps both
/// sizes, so from one evaluation to the next (and across features of
/// similar drift) the same few hundred `h` come back: each costs one
/// lookup instead of millions of lattice cells. Bounded: emptied when full.
static EXACT: std::sync::LazyLock<Mutex<HashMap<Sizes, f64>>> =
    std::sync::LazyLock::new(Mutex::default);

/// (smaller sample size, larger sample size, h).
type Sizes = (u64, u64, u64);

/// Entries kept in [`EXACT`] (about 1 MB).
const EXACT_ENTRIES: usize = 32_768;

fn remembered(key: Sizes, compute: impl FnOnce() -> f64) -> f64 {
    let cached = EXACT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .copied();
    if let Some(p) = cached {
        return p;
    }
    let p = compute();
    let mut memo = EXACT.lock().unwrap_or_else(|p| p.into_inner());
    if memo.len() >= EXACT_ENTRIES {
        memo.clear();
    }
    memo.insert(key, p);
    p
}

/// `P(D_{n,n} >= h/n)` for equal sample sizes: the alternating series of
/// binomial ratios evaluated Horner-style to avoid cancellation.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let mut p = 0.0;
    let mut k = (n / h) as i64;
    let (nf, hf) = (n as f64, h as f64);
    while k >= 0 {
        let kf = k as f64;
        let mut p1 = 1.0;
        for j in 0..h {
            let jf = j as f64;
            p1 = (nf - kf * hf - jf) * p1 / (nf + kf * hf + jf + 1.0);
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// Proportion of lattice paths from (0,0) to (m,n) that leave the band
/// `|x/m − y/n| < h/lcm`, computed directly as 1 − p with Viehmann's stable
/// recursion (arXiv:2102.08037), as SciPy's
/// `_compute_outer_prob_inside_method` does (Hodges 1958): column `i` of
/// the lattice, for the rows `j` inside its band, is
/// `A(i, j) = (A(i−1, j)·i + A(i, j−1)·j) / (i + j)`, with 1 above the band
/// (those paths have left) and the answer `A(m, maxj − 1)`.
///
/// Each cell waits on the one below it, so a column is a chain of
/// divisions, each waiting for the last. [`COLUMNS`] columns are computed
/// side by side instead, each one row behind the one before (a wavefront):
/// their chains are independent, so the processor overlaps their
/// divisions. Every cell is the same operations on the same operands as
/// one column at a time, so the result is the same to the last bit.
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = ((m / g) as i64, (n / g) as i64);
    let (m, n, h) = (m as i64, n as i64, h as i64);
    let ceil_div = |a: i64, b: i64| (a as f64 / b as f64).ceil() as i64;
    let floor_div = |a: i64, b: i64| (a as f64 / b as f64).floor() as i64;
    // Column i's band of rows: [minj, maxj). Both ends only grow with i.
    let band = |i: i64| {
        let minj = (floor_div(ng * i - h, mg) + 1).max(0).min(n);
        (minj, ceil_div(ng * i + h, mg).min(n + 1))
    };
    // Every path has left once a band is empty (SciPy stops there).
    if (1..=m).any(|i| {
        let (lo, hi) = band(i);
        hi <= lo
    }) {
        return 1.0;
    }
    // One column by absolute row: a row above every band so far still
    // holds its initial 1; column 0 is 0 inside its band.
    let mut a = vec![1.0f64; (n + 1) as usize];
    let first = ceil_div(h, mg).min(n + 1) as usize;
    a[..first].fill(0.0);
    let mut i = 1;
    while i <= m {
        let width = COLUMNS.min((m - i + 1) as usize);
        let mut lo = [0i64; COLUMNS];
        let mut hi = [0i64; COLUMNS];
        let mut val = [0.0f64; COLUMNS];
        let mut fi = [0.0f64; COLUMNS];
        for k in 0..width {
            (lo[k], hi[k]) = band(i + k as i64);
            val[k] = if lo[k] == 0 { 0.0 } else { 1.0 };
            fi[k] = (i + k as i64) as f64;
        }
        // Column k works on row t − k at step t. Cell (i+k, j) needs
        // (i+k−1, j), written one step earlier, and its own row below.
        let steps_lo = (0..width).map(|k| lo[k] + k as i64).min().unwrap_or(0);
        let steps_hi = (0..width).map(|k| hi[k] + k as i64).max().unwrap_or(0);
        let all_lo = (0..width).map(|k| lo[k] + k as i64).max().unwrap_or(0);
        let all_hi = (0..width).map(|k| hi[k] + k as i64).min().unwrap_or(0);
        let cell = |a: &mut [f64], t: i64, k: usize, val: &mut [f64; COLUMNS]| {
            let j = t - k as i64;
            if lo[k] <= j && j < hi[k] {
                let jf = j as f64;
                let v = (a[j as usize] * fi[k] + val[k] * jf) / (fi[k] + jf);
                val[k] = v;
                a[j as usize] = v;
            }
        };
        if width == COLUMNS && all_lo < all_hi {
            for t in steps_lo..all_lo {
                (0..COLUMNS).for_each(|k| cell(&mut a, t, k, &mut val));
            }
            for t in all_lo..all_hi {
                // Every column inside its band: no bounds to check.
                let base = t as usize;
                for k in 0..COLUMNS {
                    let j = base - k;
                    let jf = j as f64;
                    let v = (a[j] * fi[k] + val[k] * jf) / (fi[k] + jf);
                    val[k] = v;
                    a[j] = v;
                }
            }
            for t in all_hi..steps_hi {
                (0..COLUMNS).for_each(|k| cell(&mut a, t, k, &mut val));
            }
        } else {
            for t in steps_lo..steps_hi {
                (0..width).for_each(|k| cell(&mut a, t, k, &mut val));
            }
        }
        i += width as i64;
    }
    a[(band(m).1 - 1) as usize]
}

/// Columns of the lattice computed side by side by [`outer_prob_inside`].
const COLUMNS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    /// The recursion one column at a time over a sliding window, as SciPy
    /// writes it (and as this module computed it before the wavefront).
    fn outer_prob_inside_by_column(m: u64, n: u64, g: u64, h: u64) -> f64 {
        let (m, n) = if m < n { (n, m) } else { (m, n) };
        let (mg, ng) = ((m / g) as i64, (n / g) as i64);
        let (n, h) = (n as i64, h as i64);
        let ceil_div = |a: i64, b: i64| (a as f64 / b as f64).ceil() as i64;
        let floor_div = |a: i64, b: i64| (a as f64 / b as f64).floor() as i64;
        let mut minj: i64 = 0;
        let mut maxj: i64 = ceil_div(h, mg).min(n + 1);
        let mut curlen = maxj - minj;
        let len_a = (2 * maxj + 2).min(n + 1) as usize;
        let mut a = vec![1.0f64; len_a];
        for x in a.iter_mut().take(maxj as usize).skip(minj as usize) {
            *x = 0.0;
        }
        for i in 1..=(m as i64) {
            let (lastminj, lastlen) = (minj, curlen);
            minj = (floor_div(ng * i - h, mg) + 1).max(0).min(n);
            maxj = ceil_div(ng * i + h, mg).min(n + 1);
            if maxj <= minj {
                return 1.0;
            }
            let mut val = if minj == 0 { 0.0 } else { 1.0 };
            let fi = i as f64;
            for jj in 0..(maxj - minj) {
                let j = (jj + minj) as f64;
                val = (a[(jj + minj - lastminj) as usize] * fi + val * j) / (fi + j);
                a[jj as usize] = val;
            }
            curlen = maxj - minj;
            if lastlen > curlen {
                let from = (maxj - minj) as usize;
                for x in a.iter_mut().skip(from).take((lastlen - curlen) as usize) {
                    *x = 1.0;
                }
            }
        }
        a[(maxj - minj - 1) as usize]
    }

    #[test]
    fn a_remembered_p_value_is_the_computed_one() {
        let mut a: Vec<f64> = (0..300).map(|i| f64::from(i * 7 % 113)).collect();
        let mut b: Vec<f64> = (0..500).map(|i| f64::from(i * 11 % 127) + 3.0).collect();
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let first = ks_2samp(&a, &b);
        let again = ks_2samp(&a, &b);
        assert!(first.exact);
        let h = (first.statistic * 1500.0).round() as u64;
        assert_eq!(
            first.p_value.to_bits(),
            lattice_p_value(300, 500, h).to_bits()
        );
        assert_eq!(first.p_value.to_bits(), again.p_value.to_bits());
    }

    #[test]
    fn the_wavefront_equals_the_column_by_column_recursion_to_the_bit() {
        let mut rng = crate::stats::rng::Rng::new(7);
        let mut checked = 0;
        for _ in 0..3000 {
            let n1 = 1 + rng.below(400);
            let n2 = 1 + rng.below(400);
            if n1 == n2 {
                continue;
            }
            let g = gcd(n1, n2);
            let lcm = (n1 / g) * n2;
            let h = 1 + rng.below(lcm);
            let fast = outer_prob_inside(n1, n2, g, h);
            let slow = outer_prob_inside_by_column(n1, n2, g, h);
            assert_eq!(
                fast.to_bits(),
                slow.to_bits(),
                "{n1} {n2} {h}: {fast} {slow}"
            );
            checked += 1;
        }
        assert!(checked > 2500);
        // The live shape: 5,000 reference rows against 10,000, and sizes
        // with a large gcd, at the statistics a window shows.
        for (n1, n2) in [(5000, 10_000), (4999, 10_000), (3000, 7000), (10_000, 9000)] {
            let g = gcd(n1, n2);
            let lcm = (n1 / g) * n2;
            for d in [0.001, 0.01, 0.017, 0.03, 0.1] {
                let h = (d * lcm as f64).round() as u64;
                let fast = outer_prob_inside(n1, n2, g, h);
                let slow = outer_prob_inside_by_column(n1, n2, g, h);
                assert_eq!(fast.to_bits(), slow.to_bits(), "{n1} {n2} {h}");
            }
        }
    }

    #[test]
    fn identical_samples_have_zero_statistic_and_unit_p() {
        let a: Vec<f64> = (0..50).map(f64::from).collect();
        let r = ks_2samp(&a, &a);
        assert_eq!(r.statistic, 0.0);
        assert_eq!(r.p_value, 1.0);
    }

    #[test]
    fn disjoint_samples_have_statistic_one() {
        let a: Vec<f64> = (0..30).map(f64::from).collect();
        let b: Vec<f64> = (100..140).map(f64::from).collect();
        let r = ks_2samp(&a, &b);
        assert_eq!(r.statistic, 1.0);
        assert!(r.p_value < 1e-10, "{}", r.p_value);
    }

    #[test]
    fn equal_sizes_and_unequal_sizes_agree_on_the_exact_path_counts() {
        // n=3 vs n=3 with D=1: P = 2 / C(6,3) = 0.1.
        let r = ks_2samp(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert!((r.p_value - 0.1).abs() < 1e-15, "{}", r.p_value);
        // n=2 vs n=4 with D=1: P = 2 / C(6,2) = 2/15.
        let r = ks_2samp(&[1.0, 2.0], &[4.0, 5.0, 6.0, 7.0]);
        assert!((r.p_value - 2.0 / 15.0).abs() < 1e-15, "{}", r.p_value);
    }
}
