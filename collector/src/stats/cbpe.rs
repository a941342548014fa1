//! Confidence-based performance estimation (CBPE) of a binary classifier,
//! as NannyML 0.13.1 computes each estimate from a chunk's predicted
//! classes and its calibrated probabilities of the positive class: every
//! row contributes its probability of being a true positive (predicted 1,
//! probability p), a false positive (predicted 1, 1 − p), a false negative
//! (predicted 0, p) or a true negative (predicted 0, 1 − p), summed as
//! NumPy sums. ROC AUC and average precision walk the rows by the
//! uncalibrated score, the calibrated probabilities as expected positives.
//! Checked against NannyML's `estimate_*` functions on fixtures.

use super::order::{descending, in_order};
use super::sum::pairwise_sum;

/// The expected confusion counts of a chunk, each a NumPy sum over the
/// rows; every estimate but ROC AUC and AP follows from them, so a chunk
/// computes them once (`expected`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
    pub tn: f64,
    pub n: f64,
}

/// The expected counts of a chunk: a row predicted 1 with probability p
/// is a true positive with probability p and a false positive with 1 − p;
/// predicted 0, a false negative with p and a true negative with 1 − p.
pub fn expected(predicted: &[bool], p: &[f64]) -> Expected {
    let n = predicted.len();
    // Each cell's array summed as NumPy sums it (zeros where the row is
    // in another cell), without making the arrays.
    let cell = |positive: bool, q: fn(f64) -> f64| {
        super::sum::pairwise_sum_with(0..n, &|i| {
            if predicted[i] == positive {
                q(p[i])
            } else {
                0.0
            }
        })
    };
    let (tp, fp) = (cell(true, |q| q), cell(true, |q| 1.0 - q));
    let (fn_, tn) = (cell(false, |q| q), cell(false, |q| 1.0 - q));
    Expected {
        tp,
        fp,
        fn_,
        tn,
        n: n as f64,
    }
}

impl Expected {
    pub fn accuracy(&self) -> f64 {
        (self.tp + self.tn) / self.n
    }

    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    pub fn specificity(&self) -> f64 {
        ratio(self.tn, self.tn + self.fp)
    }

    pub fn f1(&self) -> f64 {
        ratio(self.tp, self.tp + 0.5 * (self.fp + self.fn_))
    }

    /// The estimated cell, as NannyML's `get_*_estimate`: the cell's
    /// expected share of rows (a NumPy mean), times the rows, or times the
    /// reciprocal of its row's or column's expected share.
    pub fn confusion(&self, cell: Cell, by: Normalize) -> f64 {
        let n = self.n;
        let ratios = [self.tp / n, self.fp / n, self.fn_ / n, self.tn / n];
        let own = ratios[cell.index()];
        match by {
            Normalize::None => own * n,
            Normalize::All => own,
            Normalize::True | Normalize::Pred => {
                let normalizer = 1.0 / (own + ratios[cell.partner(by).index()]);
                own * normalizer
            }
        }
    }

    /// The estimated business value: the expected cell shares (NumPy
    /// means) times the rows.
    pub fn business_value(&self, bv: &BusinessValue) -> f64 {
        let n = self.n;
        bv.total(vec![
            vec![self.tn / n * n, self.fp / n * n],
            vec![self.fn_ / n * n, self.tp / n * n],
        ])
    }
}

/// `a / b`, 0 when `b` is 0 (NannyML's guard).
fn ratio(a: f64, b: f64) -> f64 {
    if b != 0.0 {
        a / b
    } else {
        0.0
    }
}

pub fn accuracy(predicted: &[bool], p: &[f64]) -> f64 {
    expected(predicted, p).accuracy()
}

pub fn precision(predicted: &[bool], p: &[f64]) -> f64 {
    expected(predicted, p).precision()
}

pub fn recall(predicted: &[bool], p: &[f64]) -> f64 {
    expected(predicted, p).recall()
}

pub fn specificity(predicted: &[bool], p: &[f64]) -> f64 {
    expected(predicted, p).specificity()
}

pub fn f1(predicted: &[bool], p: &[f64]) -> f64 {
    expected(predicted, p).f1()
}

/// `numpy.round(x, 5)`: scaled, rounded half to even, scaled back.
fn round5(x: f64) -> f64 {
    (x * 1e5).round_ties_even() / 1e5
}

/// The running sums of the calibrated probabilities in descending order
/// of the score (expected true positives) and the expected false
/// positives, rounded to 5 decimals as NannyML rounds them.
fn walk(descending: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut tps = Vec::with_capacity(descending.len());
    let mut fps = Vec::with_capacity(descending.len());
    let mut sum = 0.0;
    for (k, &c) in descending.iter().enumerate() {
        sum += c;
        tps.push(round5(sum));
        fps.push(round5(1.0 + k as f64 - sum));
    }
    (tps, fps)
}

/// Estimated ROC AUC: the trapezoids under the expected ROC curve
/// (scikit-learn's `auc`), NaN without expected positives or negatives.
pub fn roc_auc(calibrated: &[f64], uncalibrated: &[f64]) -> f64 {
    roc_auc_descending(&in_order(calibrated, &descending(uncalibrated)))
}

/// `roc_auc` of the calibrated probabilities in descending order of the
/// score.
pub fn roc_auc_descending(descending: &[f64]) -> f64 {
    let (tps, fps) = walk(descending);
    let (Some(&tp_all), Some(&fp_all)) = (tps.last(), fps.last()) else {
        return f64::NAN;
    };
    // The trapezoids between consecutive points of (FPR, TPR), from (0, 0).
    let mut terms = Vec::with_capacity(tps.len());
    let (mut x0, mut y0) = (0.0, 0.0);
    let (mut falls, mut rises) = (false, false);
    for (t, f) in tps.iter().zip(&fps) {
        let (x1, y1) = (f / fp_all, t / tp_all);
        let dx = x1 - x0;
        falls |= dx < 0.0;
        rises |= dx > 0.0;
        terms.push(dx * (y1 + y0) / 2.0);
        (x0, y0) = (x1, y1);
    }
    // scikit-learn's `auc`: x must be monotone.
    let direction = match (falls, rises) {
        (false, _) => 1.0,
        (true, false) => -1.0,
        (true, true) => return f64::NAN,
    };
    direction * pairwise_sum(&terms)
}

/// Estimated average precision: the precision at each row weighted by the
/// step in expected recall (scikit-learn's step-wise AP).
pub fn average_precision(calibrated: &[f64], uncalibrated: &[f64]) -> f64 {
    average_precision_descending(&in_order(calibrated, &descending(uncalibrated)))
}

/// `average_precision` of the calibrated probabilities in descending
/// order of the score.
pub fn average_precision_descending(descending: &[f64]) -> f64 {
    let (tps, _) = walk(descending);
    let Some(&tp_all) = tps.last() else {
        return f64::NAN;
    };
    let precision: Vec<f64> = std::iter::once(1.0)
        .chain(tps.iter().enumerate().map(|(k, t)| t / (k + 1) as f64))
        .collect();
    let recall: Vec<f64> = std::iter::once(0.0)
        .chain(tps.iter().map(|t| t / tp_all))
        .collect();
    // Reversed (recall descending), as NannyML writes it.
    let (precision, recall): (Vec<f64>, Vec<f64>) = (
        precision.into_iter().rev().collect(),
        recall.into_iter().rev().collect(),
    );
    let terms: Vec<f64> = recall
        .windows(2)
        .zip(&precision)
        .map(|(r, p)| (r[1] - r[0]) * p)
        .collect();
    -pairwise_sum(&terms)
}

/// What a metric's sampling error is made of, from the reference: the
/// standard deviation of its per-row contributions and the share of rows
/// that contribute; a chunk of `n` rows then has the error
/// `std / sqrt(n × fraction)` (NannyML's "modified standard error of the
/// mean").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorComponents {
    pub std: f64,
    pub fraction: f64,
}

impl ErrorComponents {
    pub fn sampling_error(&self, n: usize) -> f64 {
        self.std / (n as f64 * self.fraction).sqrt()
    }

    /// Components from the per-row values (in NannyML's order) and the
    /// share of rows they stand for.
    fn of(values: &[f64], fraction: f64) -> ErrorComponents {
        ErrorComponents {
            std: super::sum::mean_std(values).1,
            fraction,
        }
    }
}

/// Average precision's sampling error from the reference (NannyML's
/// `ap_sampling_error_components`): the spread of the AP of 50 bootstrap
/// samples of min(n / 2, 50,000) rows, drawn from NumPy's legacy
/// generator seeded with `seed` (NannyML draws from NumPy's global one,
/// unseeded: seeded the same, the draws and the spread are the same); a
/// chunk of n rows then has `std × √(sample / n)`. `None` without
/// positives.
pub fn average_precision_error_components(
    truth: &[bool],
    score: &[f64],
    seed: u32,
) -> Option<(f64, usize)> {
    if !truth.iter().any(|&t| t) {
        return None;
    }
    let mut rng = super::numpy_rng::RandomState::new(seed);
    Some(average_precision_bootstrap(truth, score, &mut rng))
}

/// The bootstrap of `average_precision_error_components` drawing from
/// `rng` (a multiclass model's classes draw one after another from one
/// generator): the spread of the 50 samples' AP and the sample size.
pub fn average_precision_bootstrap(
    truth: &[bool],
    score: &[f64],
    rng: &mut super::numpy_rng::RandomState,
) -> (f64, usize) {
    let n = truth.len();
    let sample = (n / 2).min(50_000);
    let results: Vec<f64> = (0..50)
        .map(|_| {
            let pairs: Vec<(f64, bool)> = rng
                .choice_with_replacement(n, sample)
                .into_iter()
                .map(|i| (score[i], truth[i]))
                .collect();
            super::average_precision(&pairs).unwrap_or(f64::NAN)
        })
        .collect();
    (super::sum::mean_std(&results).1, sample)
}

/// Rows by outcome: (TP, FP, FN, TN) counts.
pub fn outcomes(truth: &[bool], predicted: &[bool]) -> (usize, usize, usize, usize) {
    let count = |f: &dyn Fn(bool, bool) -> bool| {
        truth
            .iter()
            .zip(predicted)
            .filter(|(&t, &p)| f(t, p))
            .count()
    };
    (
        count(&|t, p| t && p),
        count(&|t, p| !t && p),
        count(&|t, p| t && !p),
        count(&|t, p| !t && !p),
    )
}

/// Ones then zeros, as NannyML concatenates its per-row indicators.
pub(crate) fn ones_then_zeros(ones: usize, zeros: usize, one: f64) -> Vec<f64> {
    let mut v = vec![one; ones];
    v.resize(ones + zeros, 0.0);
    v
}

pub fn accuracy_error_components(truth: &[bool], predicted: &[bool]) -> ErrorComponents {
    let correct: Vec<f64> = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| f64::from(u8::from(t == p)))
        .collect();
    ErrorComponents::of(&correct, 1.0)
}

pub fn precision_error_components(truth: &[bool], predicted: &[bool]) -> ErrorComponents {
    let (tp, fp, _, _) = outcomes(truth, predicted);
    let positive_predictions = predicted.iter().filter(|&&p| p).count();
    ErrorComponents::of(
        &ones_then_zeros(tp, fp, 1.0),
        positive_predictions as f64 / predicted.len() as f64,
    )
}

pub fn recall_error_components(truth: &[bool], predicted: &[bool]) -> ErrorComponents {
    let (tp, _, fn_, _) = outcomes(truth, predicted);
    let positives = truth.iter().filter(|&&t| t).count();
    ErrorComponents::of(
        &ones_then_zeros(tp, fn_, 1.0),
        positives as f64 / predicted.len() as f64,
    )
}

pub fn specificity_error_components(truth: &[bool], predicted: &[bool]) -> ErrorComponents {
    let (_, fp, _, tn) = outcomes(truth, predicted);
    ErrorComponents::of(
        &ones_then_zeros(tn, fp, 1.0),
        (tn + fp) as f64 / predicted.len() as f64,
    )
}

/// `None` without true positives, false negatives or false positives
/// (NannyML's NaN).
pub fn f1_error_components(truth: &[bool], predicted: &[bool]) -> Option<ErrorComponents> {
    let (tp, fp, fn_, _) = outcomes(truth, predicted);
    let relevant = tp + fn_ + fp;
    if relevant == 0 {
        return None;
    }
    let correcting = relevant as f64 / ((fn_ + fp) as f64 * 0.5 + tp as f64);
    Some(ErrorComponents::of(
        &ones_then_zeros(tp, fn_ + fp, correcting),
        relevant as f64 / predicted.len() as f64,
    ))
}

/// ROC AUC as a Mann–Whitney statistic: the spread of the number of
/// negatives ranked below each positive (the minority class taken as
/// positive), over the negatives. Scores sorted stably: NannyML's NumPy
/// sort orders tied scores as the machine's SIMD sort happens to.
pub fn roc_auc_error_components(truth: &[bool], score: &[f64]) -> ErrorComponents {
    let n = truth.len();
    let positives = truth.iter().filter(|&&t| t).count();
    let flip = positives as f64 / n as f64 > 0.5;
    let truth: Vec<bool> = truth.iter().map(|&t| t != flip).collect();
    let score: Vec<f64> = score
        .iter()
        .map(|&s| if flip { 1.0 - s } else { s })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    // np.unique(y_true * rank)[1:]: the ranks of the positives but rank 0.
    let ranks: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(rank, &i)| truth[i] && *rank > 0)
        .map(|(rank, _)| rank)
        .collect();
    let n_pos = truth.iter().filter(|&&t| t).count();
    let n_neg = (n - n_pos) as f64;
    let below: Vec<f64> = ranks
        .iter()
        .enumerate()
        .map(|(i, &r)| (r - i) as f64 / n_neg)
        .collect();
    ErrorComponents::of(&below, n_pos as f64 / n as f64)
}

/// A cell of the confusion matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    TruePositive,
    TrueNegative,
    FalsePositive,
    FalseNegative,
}

/// How a confusion-matrix cell is normalized (NannyML's
/// `normalize_confusion_matrix`): counts, shares of all rows, of the
/// actual class, or of the predicted class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    None,
    All,
    True,
    Pred,
}

impl Cell {
    /// NannyML's order of the cells.
    pub const ALL: [Cell; 4] = [
        Cell::TruePositive,
        Cell::TrueNegative,
        Cell::FalsePositive,
        Cell::FalseNegative,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cell::TruePositive => "true_positive",
            Cell::TrueNegative => "true_negative",
            Cell::FalsePositive => "false_positive",
            Cell::FalseNegative => "false_negative",
        }
    }

    /// The realized cell (scikit-learn's `confusion_matrix` with
    /// `normalize`): a count, a share of all rows, or a share of its
    /// actual or predicted class (0 when that class is empty).
    pub fn realized(self, by: Normalize, truth: &[bool], predicted: &[bool]) -> f64 {
        let (tp, fp, fn_, tn) = outcomes(truth, predicted);
        let counts = [tp, fp, fn_, tn].map(|c| c as f64);
        let own = counts[self.index()];
        match by {
            Normalize::None => own,
            Normalize::All => own / truth.len() as f64,
            Normalize::True | Normalize::Pred => {
                let class = own + counts[self.partner(by).index()];
                if class == 0.0 {
                    0.0
                } else {
                    own / class
                }
            }
        }
    }

    /// The cell that shares this cell's row (`True`: the actual class) or
    /// column (`Pred`: the predicted class).
    fn partner(self, by: Normalize) -> Cell {
        use Cell::*;
        match (self, by) {
            // The actual class: positives are TP + FN, negatives TN + FP.
            (TruePositive, Normalize::True) => FalseNegative,
            (FalseNegative, Normalize::True) => TruePositive,
            (TrueNegative, Normalize::True) => FalsePositive,
            (FalsePositive, Normalize::True) => TrueNegative,
            // The predicted class: positives are TP + FP, negatives TN + FN.
            (TruePositive, _) => FalsePositive,
            (FalsePositive, _) => TruePositive,
            (TrueNegative, _) => FalseNegative,
            (FalseNegative, _) => TrueNegative,
        }
    }

    fn index(self) -> usize {
        match self {
            Cell::TruePositive => 0,
            Cell::FalsePositive => 1,
            Cell::FalseNegative => 2,
            Cell::TrueNegative => 3,
        }
    }
}

/// The estimated cell of a chunk (`Expected::confusion`).
pub fn confusion_estimate(cell: Cell, by: Normalize, predicted: &[bool], p: &[f64]) -> f64 {
    expected(predicted, p).confusion(cell, by)
}

/// What a confusion-matrix cell's sampling error is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellError {
    pub std: f64,
    pub proportion: f64,
    pub normalize: Normalize,
}

impl CellError {
    pub fn sampling_error(&self, n: usize) -> f64 {
        let n = n as f64;
        match self.normalize {
            Normalize::None => self.std / n.sqrt() * n,
            Normalize::All => self.std / n.sqrt(),
            Normalize::True | Normalize::Pred => self.std / (n * self.proportion).sqrt(),
        }
    }
}

/// A cell's sampling-error components from the reference, as NannyML's
/// `*_sampling_error_components`: the spread of the per-row indicator of
/// the cell (over every row; or, normalized by class, over the rows of its
/// actual or predicted class) and the share of rows that counts.
pub fn confusion_error_components(
    cell: Cell,
    by: Normalize,
    truth: &[bool],
    predicted: &[bool],
) -> CellError {
    let (tp, fp, fn_, tn) = outcomes(truth, predicted);
    let counts = [tp, fp, fn_, tn];
    let own = counts[cell.index()];
    let (std, proportion) = match by {
        Normalize::None | Normalize::All => {
            let indicator: Vec<f64> = truth
                .iter()
                .zip(predicted)
                .map(|(&t, &p)| {
                    let this = match cell {
                        Cell::TruePositive => t && p,
                        Cell::FalsePositive => !t && p,
                        Cell::FalseNegative => t && !p,
                        Cell::TrueNegative => !t && !p,
                    };
                    f64::from(u8::from(this))
                })
                .collect();
            (super::sum::mean_std(&indicator).1, 1.0)
        }
        Normalize::True | Normalize::Pred => {
            let relevant = own + counts[cell.partner(by).index()];
            (
                super::sum::mean_std(&ones_then_zeros(own, relevant - own, 1.0)).1,
                relevant as f64 / truth.len() as f64,
            )
        }
    };
    CellError {
        std,
        proportion,
        normalize: by,
    }
}

/// The business value of a classifier (NannyML's `business_value`):
/// each cell of the confusion matrix has a value, `matrix[actual][predicted]`
/// (binary: `[[TN, FP], [FN, TP]]`; multiclass: the classes in sorted
/// order); a chunk's value is the sum over the cells of value × count, or
/// with `per_prediction` value × the cell's share of its predicted class.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessValue {
    pub matrix: Vec<Vec<f64>>,
    pub per_prediction: bool,
}

impl BusinessValue {
    /// A square matrix from its values row by row; `None` when their
    /// number is not a square.
    pub fn square(values: &[f64], per_prediction: bool) -> Option<BusinessValue> {
        let k = (values.len() as f64).sqrt().round() as usize;
        (k >= 2 && k * k == values.len()).then(|| BusinessValue {
            matrix: values.chunks(k).map(<[f64]>::to_vec).collect(),
            per_prediction,
        })
    }

    /// The number of classes the matrix is for.
    pub fn classes(&self) -> usize {
        self.matrix.len()
    }

    /// `cm[actual][predicted]`, normalized per predicted class (NaN to 0)
    /// when asked, weighted and summed as NumPy sums.
    pub fn total(&self, mut cm: Vec<Vec<f64>>) -> f64 {
        if self.per_prediction {
            for j in 0..cm.len() {
                // NumPy's sum along axis 0: row after row.
                let class = cm.iter().map(|row| row[j]).fold(0.0, |a, b| a + b);
                for row in cm.iter_mut() {
                    let v = row[j] / class;
                    row[j] = if v.is_nan() { 0.0 } else { v };
                }
            }
        }
        let products: Vec<f64> = self
            .matrix
            .iter()
            .zip(&cm)
            .flat_map(|(m, c)| m.iter().zip(c).map(|(a, b)| a * b))
            .collect();
        pairwise_sum(&products)
    }
}

/// The estimated business value of a chunk (`Expected::business_value`).
pub fn business_value(bv: &BusinessValue, predicted: &[bool], p: &[f64]) -> f64 {
    expected(predicted, p).business_value(bv)
}

/// The realized business value of rows with targets.
pub fn business_value_realized(bv: &BusinessValue, truth: &[bool], predicted: &[bool]) -> f64 {
    let (tp, fp, fn_, tn) = outcomes(truth, predicted);
    bv.total(vec![
        vec![tn as f64, fp as f64],
        vec![fn_ as f64, tp as f64],
    ])
}

/// The spread of the per-row value (its cell's value) over the reference.
pub fn business_value_error_std(bv: &BusinessValue, truth: &[bool], predicted: &[bool]) -> f64 {
    let values: Vec<f64> = truth
        .iter()
        .zip(predicted)
        .map(|(&t, &p)| bv.matrix[usize::from(t)][usize::from(p)])
        .collect();
    super::sum::mean_std(&values).1
}

/// The business value's sampling error in a chunk of `n` rows: the total's
/// (std × n) or, per prediction, the per-row value's over √n.
pub fn business_value_sampling_error(std: f64, per_prediction: bool, n: usize) -> f64 {
    let n = n as f64;
    let spread = if per_prediction { std } else { std * n };
    spread / n.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_probabilities_give_the_realized_metrics() {
        // Probabilities of 0 or 1 are the truth itself: the estimates are
        // the realized metrics of predictions [1, 1, 0, 0] on truth [1, 0, 1, 0].
        let predicted = [true, true, false, false];
        let p = [1.0, 0.0, 1.0, 0.0];
        assert_eq!(accuracy(&predicted, &p), 0.5);
        assert_eq!(precision(&predicted, &p), 0.5);
        assert_eq!(recall(&predicted, &p), 0.5);
        assert_eq!(specificity(&predicted, &p), 0.5);
        assert_eq!(f1(&predicted, &p), 0.5);
        // Scores ranking the two positives first: AUC 1, AP 1.
        assert_eq!(roc_auc(&p, &[0.9, 0.2, 0.8, 0.1]), 1.0);
        assert_eq!(average_precision(&p, &[0.9, 0.2, 0.8, 0.1]), 1.0);
        assert_eq!(precision(&[false, false], &[0.3, 0.6]), 0.0);
    }
}
