//! Calibrating scores into probabilities as NannyML 0.13.1 does before it
//! estimates performance (CBPE): scikit-learn's isotonic regression
//! (`IsotonicRegression(out_of_bounds="clip")`: pool adjacent violators,
//! linear interpolation between its steps, clipped to the fitted range),
//! and the decision whether calibration helps (`needs_calibration`: ten
//! `StratifiedShuffleSplit(test_size=0.1, random_state=42)` splits of the
//! reference, the expected calibration error over equal-count bins of the
//! pooled held-out scores before and after). Checked against scikit-learn
//! and NannyML on fixtures (`collector/tests/fixtures/generate_calibration.py`).

use super::numpy_rng::RandomState;

/// A fitted isotonic regression: increasing steps through `(x, y)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Isotonic {
    x: Vec<f64>,
    y: Vec<f64>,
}

impl Isotonic {
    /// Fits `y` (targets) on `x` (scores), unit weights; `None` without
    /// points or with a non-finite one.
    pub fn fit(x: &[f64], y: &[f64]) -> Option<Isotonic> {
        if x.is_empty() || x.len() != y.len() || x.iter().chain(y).any(|v| !v.is_finite()) {
            return None;
        }
        // np.lexsort((y, x)): by x, then y; points equal in both are
        // interchangeable, so the sort need not be stable.
        let mut points: Vec<(f64, f64)> = x.iter().copied().zip(y.iter().copied()).collect();
        points.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let (ux, mut uy, mut w) = make_unique(&points);
        pool_adjacent_violators(&mut uy, &mut w);
        // Keep the first and last points and those not equal to both
        // neighbours (their predictions are the same without them).
        let n = uy.len();
        let keep: Vec<usize> = (0..n)
            .filter(|&i| i == 0 || i == n - 1 || uy[i] != uy[i - 1] || uy[i] != uy[i + 1])
            .collect();
        Some(Isotonic {
            x: keep.iter().map(|&i| ux[i]).collect(),
            y: keep.iter().map(|&i| uy[i]).collect(),
        })
    }

    /// `predict` of each of `scores` given in ascending order, by one
    /// sweep along the steps instead of a search per score (the same
    /// step, the same value).
    pub fn predict_ascending(&self, scores: impl Iterator<Item = f64>) -> Vec<f64> {
        let (x, y) = (&self.x, &self.y);
        let last = x.len() - 1;
        let mut j = 0;
        scores
            .map(|score| {
                if last == 0 {
                    return y[0];
                }
                let s = score.clamp(x[0], x[last]);
                if s >= x[last] {
                    return y[last];
                }
                // The largest j with x[j] <= s (s only grows).
                while x[j + 1] <= s {
                    j += 1;
                }
                let slope = (y[j + 1] - y[j]) / (x[j + 1] - x[j]);
                slope * (s - x[j]) + y[j]
            })
            .collect()
    }

    /// The calibrated value of a score: clipped to the fitted range, then
    /// `numpy.interp` between the steps.
    pub fn predict(&self, score: f64) -> f64 {
        let (x, y) = (&self.x, &self.y);
        let last = x.len() - 1;
        if last == 0 {
            return y[0];
        }
        let s = score.clamp(x[0], x[last]);
        if s >= x[last] {
            return y[last];
        }
        // The largest j with x[j] <= s.
        let j = x.partition_point(|&v| v <= s) - 1;
        let slope = (y[j + 1] - y[j]) / (x[j + 1] - x[j]);
        slope * (s - x[j]) + y[j]
    }
}

/// scikit-learn's `_make_unique`: points sorted by x, runs of
/// x closer than 1e-15 merged into one point with the mean target and the
/// summed weight.
fn make_unique(points: &[(f64, f64)]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    const EPS: f64 = 1e-15;
    let (mut ux, mut uy, mut uw) = (Vec::new(), Vec::new(), Vec::new());
    let mut current_x = points[0].0;
    let (mut current_y, mut current_w) = (0.0, 0.0);
    for &(x, y) in points {
        if x - current_x >= EPS {
            ux.push(current_x);
            uw.push(current_w);
            uy.push(current_y / current_w);
            current_x = x;
            current_w = 1.0;
            current_y = y;
        } else {
            current_w += 1.0;
            current_y += y;
        }
    }
    ux.push(current_x);
    uw.push(current_w);
    uy.push(current_y / current_w);
    (ux, uy, uw)
}

/// scikit-learn's `_inplace_contiguous_isotonic_regression`: pool
/// adjacent violators in one pass with backtracking, then every block's
/// mean written over it.
fn pool_adjacent_violators(y: &mut [f64], w: &mut [f64]) {
    let n = y.len();
    let mut target: Vec<usize> = (0..n).collect();
    let mut i = 0;
    while i < n {
        let mut k = target[i] + 1;
        if k == n {
            break;
        }
        if y[i] < y[k] {
            i = k;
            continue;
        }
        let mut sum_wy = w[i] * y[i];
        let mut sum_w = w[i];
        loop {
            let prev_y = y[k];
            sum_wy += w[k] * y[k];
            sum_w += w[k];
            k = target[k] + 1;
            if k == n || prev_y < y[k] {
                y[i] = sum_wy / sum_w;
                w[i] = sum_w;
                target[i] = k - 1;
                target[k - 1] = i;
                if i > 0 {
                    i = target[i - 1];
                }
                break;
            }
        }
    }
    let mut i = 0;
    while i < n {
        let k = target[i] + 1;
        let v = y[i];
        y[i + 1..k].fill(v);
        i = k;
    }
}

/// `StratifiedShuffleSplit(n_splits, test_size, random_state=seed)`:
/// per split the (train, test) row positions, as scikit-learn draws them.
/// `classes` holds each row's class as a sortable code. `None` when a
/// class has fewer than 2 rows or either side would hold fewer rows than
/// there are classes (scikit-learn raises).
pub fn stratified_shuffle_split(
    classes: &[i64],
    n_splits: usize,
    test_size: f64,
    seed: u32,
) -> Option<Vec<(Vec<usize>, Vec<usize>)>> {
    let n = classes.len();
    let n_test = (test_size * n as f64).ceil() as usize;
    let n_train = n.checked_sub(n_test)?;
    // np.unique (sorted) and a stable argsort of the class codes.
    let mut codes: Vec<i64> = classes.to_vec();
    codes.sort_unstable();
    codes.dedup();
    let index_of = |c: i64| codes.binary_search(&c).unwrap_or(0);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); codes.len()];
    for (row, &c) in classes.iter().enumerate() {
        by_class[index_of(c)].push(row);
    }
    let counts: Vec<u64> = by_class.iter().map(|v| v.len() as u64).collect();
    if counts.iter().any(|&c| c < 2) || n_train < codes.len() || n_test < codes.len() {
        return None;
    }
    let mut rng = RandomState::new(seed);
    let mut splits = Vec::with_capacity(n_splits);
    for _ in 0..n_splits {
        let n_i = approximate_mode(&counts, n_train as u64, &mut rng);
        let left: Vec<u64> = counts.iter().zip(&n_i).map(|(c, t)| c - t).collect();
        let t_i = approximate_mode(&left, n_test as u64, &mut rng);
        let (mut train, mut test) = (Vec::with_capacity(n_train), Vec::with_capacity(n_test));
        for (k, rows) in by_class.iter().enumerate() {
            let perm = rng.permutation(rows.len());
            let (a, b) = (n_i[k] as usize, (n_i[k] + t_i[k]) as usize);
            train.extend(perm[..a].iter().map(|&p| rows[p]));
            test.extend(perm[a..b].iter().map(|&p| rows[p]));
        }
        rng.shuffle(&mut train);
        rng.shuffle(&mut test);
        splits.push((train, test));
    }
    Some(splits)
}

/// scikit-learn's `_approximate_mode`: `n_draws` spread over the classes
/// in proportion to `counts`, floors first, the rest to the largest
/// remainders (ties broken by a draw).
fn approximate_mode(counts: &[u64], n_draws: u64, rng: &mut RandomState) -> Vec<u64> {
    let total: u64 = counts.iter().sum();
    let continuous: Vec<f64> = counts
        .iter()
        .map(|&c| c as f64 / total as f64 * n_draws as f64)
        .collect();
    let mut floored: Vec<f64> = continuous.iter().map(|c| c.floor()).collect();
    let mut need = n_draws as i64 - floored.iter().sum::<f64>() as i64;
    if need > 0 {
        let remainder: Vec<f64> = continuous
            .iter()
            .zip(&floored)
            .map(|(c, f)| c - f)
            .collect();
        let mut values = remainder.clone();
        values.sort_by(|a, b| b.total_cmp(a));
        values.dedup();
        for value in values {
            let inds: Vec<usize> = (0..remainder.len())
                .filter(|&i| remainder[i] == value)
                .collect();
            let add_now = inds.len().min(need as usize);
            for i in rng.choice_without_replacement(&inds, add_now) {
                floored[i] += 1.0;
            }
            need -= add_now as i64;
            if need == 0 {
                break;
            }
        }
    }
    floored.iter().map(|&f| f as u64).collect()
}

/// NannyML's equal-count bins over `n` sorted scores: `(start, end)`
/// positions; fewer bins for short vectors (at least 2).
pub fn bin_edges(n: usize, bins: usize) -> Option<Vec<(usize, usize)>> {
    let bins = if n <= 2 * bins { n / 2 } else { bins };
    if bins < 2 {
        return None;
    }
    let width = n / bins;
    let mut edges: Vec<usize> = (0..=n).step_by(width).collect();
    if let Some(last) = edges.last_mut() {
        *last = n;
    }
    Some(edges.windows(2).map(|w| (w[0], w[1])).collect())
}

/// Expected calibration error: the scores sorted (stably; NumPy's sort
/// may order tied scores otherwise, which moves only ties that straddle
/// a bin edge), per bin its share of rows times |mean score − mean target|.
pub fn expected_calibration_error(target: &[f64], score: &[f64], edges: &[(usize, usize)]) -> f64 {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let n = score.len() as f64;
    edges
        .iter()
        .map(|&(lo, hi)| {
            let rows = &order[lo..hi];
            let len = rows.len() as f64;
            let mean_score = rows.iter().map(|&i| score[i]).sum::<f64>() / len;
            let mean_target = rows.iter().map(|&i| target[i]).sum::<f64>() / len;
            len / n * (mean_score - mean_target).abs()
        })
        .sum()
}

/// What NannyML's `needs_calibration` saw: the expected calibration error
/// of the held-out scores before and after isotonic calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationCheck {
    pub needed: bool,
    /// `None` when the decision was made before any split (one class, or
    /// an AUC above 0.999).
    pub ece_before: Option<f64>,
    pub ece_after: Option<f64>,
}

/// Whether isotonic calibration lowers the expected calibration error of
/// `score` against binary `target` (0/1) on held-out data, as NannyML
/// decides it: one class, or an AUC above 0.999, needs none; otherwise ten
/// stratified splits (10% held out, seed 42), each fitted on its training
/// part, the held-out parts pooled, `bins` equal-count bins. `Err` names
/// what is wrong with the input.
pub fn needs_calibration(
    target: &[f64],
    score: &[f64],
    bins: usize,
) -> Result<CalibrationCheck, String> {
    if target.len() != score.len() {
        return Err("targets and scores differ in length".into());
    }
    if score.iter().any(|s| s.is_nan()) {
        return Err("scores contain NaN".into());
    }
    if target.iter().any(|t| !(*t == 0.0 || *t == 1.0)) {
        return Err("targets must be 0 or 1".into());
    }
    let none = CalibrationCheck {
        needed: false,
        ece_before: None,
        ece_after: None,
    };
    let positives = target.iter().filter(|&&t| t == 1.0).count();
    if positives == 0 || positives == target.len() {
        return Ok(none);
    }
    let pairs: Vec<(f64, bool)> = score
        .iter()
        .zip(target)
        .map(|(&s, &t)| (s, t == 1.0))
        .collect();
    if super::roc_auc(&pairs).is_some_and(|auc| auc > 0.999) {
        return Ok(none);
    }
    let classes: Vec<i64> = target.iter().map(|&t| t as i64).collect();
    let splits = stratified_shuffle_split(&classes, 10, 0.1, 42)
        .ok_or("too few rows of a class to split the reference ten times (10% held out)")?;
    // Each split keeps only its held-out predictions, pooled in split
    // order. (Fitted one after another: in parallel they were faster but
    // each thread's allocator kept its own freed memory, a quarter more
    // at the peak.)
    let predictions: Vec<Vec<f64>> = splits
        .iter()
        .map(|(train, test)| {
            let xs: Vec<f64> = train.iter().map(|&i| score[i]).collect();
            let ys: Vec<f64> = train.iter().map(|&i| target[i]).collect();
            let iso = Isotonic::fit(&xs, &ys).ok_or("scores must be finite")?;
            Ok(test.iter().map(|&i| iso.predict(score[i])).collect())
        })
        .collect::<Result<_, &str>>()?;
    let held_target: Vec<f64> = splits
        .iter()
        .flat_map(|(_, t)| t.iter().map(|&i| target[i]))
        .collect();
    let held_score: Vec<f64> = splits
        .iter()
        .flat_map(|(_, t)| t.iter().map(|&i| score[i]))
        .collect();
    let held_calibrated: Vec<f64> = predictions.into_iter().flatten().collect();
    let edges = bin_edges(held_score.len(), bins).ok_or("too few held-out rows for 2 bins")?;
    let before = expected_calibration_error(&held_target, &held_score, &edges);
    let after = expected_calibration_error(&held_target, &held_calibrated, &edges);
    Ok(CalibrationCheck {
        needed: before > after,
        ece_before: Some(before),
        ece_after: Some(after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotonic_pools_violators_and_interpolates_between_steps() {
        // y is decreasing on its middle three points: they pool to 2/3... as
        // scikit-learn's IsotonicRegression().fit([1,2,3,4,5], [0,1,1,0,1]).
        let iso =
            Isotonic::fit(&[1.0, 2.0, 3.0, 4.0, 5.0], &[0.0, 1.0, 1.0, 0.0, 1.0]).expect("fit");
        let got: Vec<f64> = [0.0, 1.0, 2.0, 3.0, 4.0, 4.5, 5.0, 9.0]
            .iter()
            .map(|&s| iso.predict(s))
            .collect();
        let two_thirds = 2.0 / 3.0;
        let want = [
            0.0,
            0.0,
            two_thirds,
            two_thirds,
            two_thirds,
            (two_thirds + 1.0) / 2.0,
            1.0,
            1.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{got:?}");
        }
        assert_eq!(
            bin_edges(20, 4),
            Some(vec![(0, 5), (5, 10), (10, 15), (15, 20)])
        );
        assert_eq!(bin_edges(3, 10), None);
    }
}
