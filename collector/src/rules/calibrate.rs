//! Calibrated thresholds, as NannyML sets them: split the reference into
//! random chunks, compute the drift statistic of each chunk against the
//! whole reference, and take mean + k·σ (population σ). Meaningless shifts
//! of the size the reference itself shows never cross it, however large
//! the live sample.

use crate::stats::rng::Rng;
use crate::stats::{self, Counts, Numeric, Sample, TestKind};

/// The calibrated threshold of `kind` on `reference`, or `None` when the
/// reference is too small for `chunks` chunks or the test cannot run on it.
pub fn threshold(reference: &Sample, kind: TestKind, chunks: usize, sigmas: f64) -> Option<f64> {
    // The reference's values one by one, shuffled with a fixed seed.
    let mut rng = Rng::new(0x5EED);
    let stats: Vec<f64> = match reference {
        Sample::Numeric(n) => {
            let mut values = n.sorted.clone();
            shuffle(&mut values, &mut rng);
            split(&values, chunks)?
                .iter()
                .map(|c| {
                    let chunk = Sample::Numeric(Numeric::new(c.to_vec(), n.integer));
                    stats::run(kind, reference, &chunk)
                        .ok()
                        .map(|o| o.statistic)
                })
                .collect::<Option<Vec<f64>>>()?
        }
        Sample::Categorical(counts) => {
            let mut items: Vec<usize> = counts
                .counts
                .iter()
                .enumerate()
                .flat_map(|(i, &c)| std::iter::repeat_n(i, c as usize))
                .collect();
            shuffle(&mut items, &mut rng);
            split(&items, chunks)?
                .iter()
                .map(|c| {
                    let mut per = vec![0u64; counts.keys.len()];
                    for &i in *c {
                        per[i] += 1;
                    }
                    let pairs = counts
                        .keys
                        .iter()
                        .cloned()
                        .zip(per)
                        .filter(|(_, n)| *n > 0)
                        .collect();
                    let chunk = Sample::Categorical(Counts::from_pairs(pairs));
                    stats::run(kind, reference, &chunk)
                        .ok()
                        .map(|o| o.statistic)
                })
                .collect::<Option<Vec<f64>>>()?
        }
    };
    let n = stats.len() as f64;
    let mean = stats.iter().sum::<f64>() / n;
    let var = stats.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n;
    let t = mean + sigmas * var.sqrt();
    t.is_finite().then_some(t)
}

/// Fisher–Yates with the seeded generator.
fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// `chunks` equal parts (the remainder left out); None when a part would
/// hold fewer than 2 values.
fn split<T>(items: &[T], chunks: usize) -> Option<Vec<&[T]>> {
    let size = items.len() / chunks.max(1);
    (size >= 2).then(|| items.chunks_exact(size).take(chunks).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calibrated_threshold_sits_above_the_reference_chunks_own_statistics() {
        // 5000 values of a smooth distribution.
        let values: Vec<f64> = (0..5000)
            .map(|i| ((i * 7919) % 5000) as f64 / 50.0)
            .collect();
        let reference = Sample::Numeric(Numeric::new(values.clone(), false));
        let t = threshold(&reference, TestKind::Psi, 10, 3.0).expect("threshold");
        assert!(t > 0.0 && t < 0.1, "{t}");
        // A shifted sample of the same size as a chunk crosses it.
        let shifted: Vec<f64> = values.iter().take(500).map(|v| v + 20.0).collect();
        let psi = stats::run(
            TestKind::Psi,
            &reference,
            &Sample::Numeric(Numeric::new(shifted, false)),
        )
        .expect("psi")
        .statistic;
        assert!(psi > t, "{psi} vs {t}");
        // More sigmas, higher threshold; too few values, none.
        assert!(threshold(&reference, TestKind::Psi, 10, 5.0).expect("t") > t);
        let tiny = Sample::Numeric(Numeric::new(vec![1.0, 2.0, 3.0], false));
        assert_eq!(threshold(&tiny, TestKind::Psi, 10, 3.0), None);
    }
}
