//! Confidence-based performance estimation (CBPE) of a binary classifier,
//! as NannyML 0.13.1 computes each estimate from a chunk's predicted
//! classes and its calibrated probabilities of the positive class: every
//! row contributes its probability of being a true positive (predicted 1,
//! probability p), a false positive (predicted 1, 1 − p), a false negative
//! (predicted 0, p) or a true negative (predicted 0, 1 − p), summed as
//! NumPy sums. ROC AUC and average precision walk the rows by the
//! uncalibrated score, the calibrated probabilities as expected positives.
//! Checked against NannyML's `estimate_*` functions on fixtures.

use super::sum::pairwise_sum;

/// The expected confusion counts of a chunk: (TP, FP, FN, TN), each a
/// NumPy sum over the rows.
fn expected_counts(predicted: &[bool], p: &[f64]) -> (f64, f64, f64, f64) {
    let cell = |f: &dyn Fn(bool, f64) -> f64| -> f64 {
        let v: Vec<f64> = predicted.iter().zip(p).map(|(&y, &q)| f(y, q)).collect();
        pairwise_sum(&v)
    };
    (
        cell(&|y, q| if y { q } else { 0.0 }),
        cell(&|y, q| if y { 1.0 - q } else { 0.0 }),
        cell(&|y, q| if y { 0.0 } else { q }),
        cell(&|y, q| if y { 0.0 } else { 1.0 - q }),
    )
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
    let (tp, _, _, tn) = expected_counts(predicted, p);
    (tp + tn) / predicted.len() as f64
}

pub fn precision(predicted: &[bool], p: &[f64]) -> f64 {
    let (tp, fp, _, _) = expected_counts(predicted, p);
    ratio(tp, tp + fp)
}

pub fn recall(predicted: &[bool], p: &[f64]) -> f64 {
    let (tp, _, fn_, _) = expected_counts(predicted, p);
    ratio(tp, tp + fn_)
}

pub fn specificity(predicted: &[bool], p: &[f64]) -> f64 {
    let (_, fp, _, tn) = expected_counts(predicted, p);
    ratio(tn, tn + fp)
}

pub fn f1(predicted: &[bool], p: &[f64]) -> f64 {
    let (tp, fp, fn_, _) = expected_counts(predicted, p);
    ratio(tp, tp + 0.5 * (fp + fn_))
}

/// `numpy.round(x, 5)`: scaled, rounded half to even, scaled back.
fn round5(x: f64) -> f64 {
    (x * 1e5).round_ties_even() / 1e5
}

/// The calibrated probabilities in descending order of the uncalibrated
/// score, and their running sums (expected true positives) and the
/// expected false positives, rounded to 5 decimals as NannyML rounds
/// them. Tied scores have equal calibrated probabilities (calibration is
/// a function of the score), so their order changes nothing.
fn walk(calibrated: &[f64], uncalibrated: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut order: Vec<usize> = (0..uncalibrated.len()).collect();
    order.sort_by(|&a, &b| uncalibrated[b].total_cmp(&uncalibrated[a]));
    let mut tps = Vec::with_capacity(order.len());
    let mut fps = Vec::with_capacity(order.len());
    let mut sum = 0.0;
    for (k, &i) in order.iter().enumerate() {
        sum += calibrated[i];
        tps.push(round5(sum));
        fps.push(round5(1.0 + k as f64 - sum));
    }
    (tps, fps)
}

/// Estimated ROC AUC: the trapezoids under the expected ROC curve
/// (scikit-learn's `auc`), NaN without expected positives or negatives.
pub fn roc_auc(calibrated: &[f64], uncalibrated: &[f64]) -> f64 {
    let (tps, fps) = walk(calibrated, uncalibrated);
    let (Some(&tp_all), Some(&fp_all)) = (tps.last(), fps.last()) else {
        return f64::NAN;
    };
    let tpr: Vec<f64> = std::iter::once(0.0)
        .chain(tps.iter().map(|t| t / tp_all))
        .collect();
    let fpr: Vec<f64> = std::iter::once(0.0)
        .chain(fps.iter().map(|f| f / fp_all))
        .collect();
    let dx: Vec<f64> = fpr.windows(2).map(|w| w[1] - w[0]).collect();
    let direction = if dx.iter().any(|&d| d < 0.0) {
        if dx.iter().all(|&d| d <= 0.0) {
            -1.0
        } else {
            return f64::NAN;
        }
    } else {
        1.0
    };
    let terms: Vec<f64> = dx
        .iter()
        .zip(tpr.windows(2))
        .map(|(d, y)| d * (y[1] + y[0]) / 2.0)
        .collect();
    direction * pairwise_sum(&terms)
}

/// Estimated average precision: the precision at each row weighted by the
/// step in expected recall (scikit-learn's step-wise AP).
pub fn average_precision(calibrated: &[f64], uncalibrated: &[f64]) -> f64 {
    let (tps, _) = walk(calibrated, uncalibrated);
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
