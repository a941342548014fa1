//! Histogram-based divergences (`psi`, `kl`, `jensenshannon`) over Evidently's
//! binning (`get_binned_data` in `legacy/calculations/stattests/utils.py`).

use super::sample::{align, Numeric, Sample};
use super::sum::{pairwise_sum, pairwise_sum_map};

/// Numeric columns with more distinct reference values than this get Sturges
/// bins; others get one bin per distinct value.
const MAX_DISTINCT_FOR_VALUE_BINS: usize = 20;

/// Normalised reference and current histograms, as Evidently builds them.
/// `fill_zeroes` replaces empty bins by a small share (PSI and KL need it).
pub fn binned(reference: &Sample, current: &Sample, fill_zeroes: bool) -> (Vec<f64>, Vec<f64>) {
    let (mut r, mut c) = match (reference, current) {
        (Sample::Numeric(a), Sample::Numeric(b)) if a.distinct() > MAX_DISTINCT_FOR_VALUE_BINS => {
            let edges = sturges_edges(a, b);
            (
                shares(&histogram(&a.sorted, &edges), a.len()),
                shares(&histogram(&b.sorted, &edges), b.len()),
            )
        }
        _ => {
            let pairs = align(&reference.counts(), &current.counts());
            let (nr, nc) = (reference.len() as f64, current.len() as f64);
            pairs
                .iter()
                .map(|&(x, y)| (x as f64 / nr, y as f64 / nc))
                .unzip()
        }
    };
    if fill_zeroes {
        fill(&mut r);
        fill(&mut c);
    }
    (r, c)
}

fn shares(counts: &[u64], n: usize) -> Vec<f64> {
    counts.iter().map(|&c| c as f64 / n as f64).collect()
}

/// Empty bins get the smallest non-empty share / 1e6 when that share is at
/// most 1e-4, else 1e-4 (Evidently's `feel_zeroes`).
fn fill(p: &mut [f64]) {
    let min = p
        .iter()
        .cloned()
        .filter(|&x| x != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !min.is_finite() {
        return;
    }
    let value = if min <= 0.0001 { min / 1e6 } else { 0.0001 };
    for x in p.iter_mut().filter(|x| **x == 0.0) {
        *x = value;
    }
}

/// `numpy.histogram_bin_edges(concat(a, b), bins="sturges")`: width
/// `ptp / (log2(N) + 1)`, `ceil(ptp / width)` equal bins from `linspace`.
pub fn sturges_edges(a: &Numeric, b: &Numeric) -> Vec<f64> {
    let first = a.sorted[0].min(b.sorted[0]);
    let last = a.sorted[a.len() - 1].max(b.sorted[b.len() - 1]);
    let (first, last) = if first == last {
        (first - 0.5, last + 0.5)
    } else {
        (first, last)
    };
    let size = (a.len() + b.len()) as f64;
    let mut width = (last - first) / (size.log2() + 1.0);
    if a.integer && b.integer && width < 1.0 {
        width = 1.0;
    }
    let bins = if width > 0.0 {
        ((last - first) / width).ceil() as usize
    } else {
        1
    };
    linspace(first, last, bins + 1)
}

/// `numpy.linspace(start, stop, num)` with its exact arithmetic.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut out: Vec<f64> = (0..num)
        .map(|i| {
            if step == 0.0 {
                i as f64 / div * delta + start
            } else {
                i as f64 * step + start
            }
        })
        .collect();
    if num > 1 {
        out[num - 1] = stop;
    }
    out
}

/// Counts per bin for sorted values: `[e_i, e_{i+1})`, the last bin closed.
pub fn histogram(sorted: &[f64], edges: &[f64]) -> Vec<u64> {
    let nb = edges.len() - 1;
    let mut cum = Vec::with_capacity(edges.len());
    for (i, &e) in edges.iter().enumerate() {
        let pos = if i == nb {
            sorted.partition_point(|&x| x <= e)
        } else {
            sorted.partition_point(|&x| x < e)
        };
        cum.push(pos as u64);
    }
    cum.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Population stability index `Σ (r − c)·ln(r / c)`.
pub fn psi(r: &[f64], c: &[f64]) -> f64 {
    let terms: Vec<f64> = r
        .iter()
        .zip(c)
        .map(|(&r, &c)| (r - c) * (r / c).ln())
        .collect();
    pairwise_sum(&terms)
}

/// `scipy.special.rel_entr`.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

fn normalised(p: &[f64]) -> Vec<f64> {
    let s = pairwise_sum(p);
    p.iter().map(|x| 1.0 * x / s).collect()
}

/// Kullback–Leibler divergence `scipy.stats.entropy(r, c)`: both histograms
/// are normalised to sum to one first.
pub fn kl(r: &[f64], c: &[f64]) -> f64 {
    let (r, c) = (normalised(r), normalised(c));
    let terms: Vec<f64> = r.iter().zip(&c).map(|(&x, &y)| rel_entr(x, y)).collect();
    pairwise_sum(&terms)
}

/// Jensen–Shannon distance with natural logarithms
/// (`scipy.spatial.distance.jensenshannon`).
pub fn jensenshannon(r: &[f64], c: &[f64]) -> f64 {
    let (p, q) = (normalised(r), normalised(c));
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    let idx: Vec<usize> = (0..m.len()).collect();
    let left = pairwise_sum_map(&idx, |&i| rel_entr(p[i], m[i]));
    let right = pairwise_sum_map(&idx, |&i| rel_entr(q[i], m[i]));
    ((left + right) / 2.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_closes_the_last_bin() {
        let edges = [0.0, 1.0, 2.0];
        assert_eq!(histogram(&[0.0, 0.5, 1.0, 2.0], &edges), vec![2, 2]);
    }

    #[test]
    fn fill_uses_the_smallest_share() {
        let mut p = vec![0.5, 0.0, 0.5];
        fill(&mut p);
        assert_eq!(p, vec![0.5, 0.0001, 0.5]);
        let mut p = vec![0.00005, 0.0, 0.99995];
        fill(&mut p);
        assert_eq!(p[1], 0.00005 / 1e6);
    }

    #[test]
    fn identical_histograms_have_zero_divergence() {
        let p = [0.2, 0.3, 0.5];
        assert_eq!(psi(&p, &p), 0.0);
        assert_eq!(kl(&p, &p), 0.0);
        assert_eq!(jensenshannon(&p, &p), 0.0);
    }
}
