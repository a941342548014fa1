//! NannyML's CBPE for a binary classifier over chunks, as
//! `CBPE(...).fit(reference).estimate(analysis)` computes it: the
//! reference (with targets) decides whether scores need calibration and
//! fits the calibration, gives each metric its sampling-error components
//! and, from the realized metric of each of its chunks, thresholds at the
//! mean ± 3 standard deviations (clipped to [0, 1]); each chunk of the
//! reference and the analysis then gets the estimate from its calibrated
//! probabilities, the sampling error, a band of ± 3 sampling errors
//! (clipped to [0, 1]), the realized metric where targets exist, and an
//! alert when the estimate leaves the thresholds.

use super::calibration::{needs_calibration, Isotonic};
use super::cbpe::{self, ErrorComponents};
use super::sum::pairwise_sum;

/// How rows are cut into chunks (NannyML's chunkers, a leftover chunk
/// kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// This many rows per chunk.
    Size(usize),
    /// About this many chunks: rows ÷ number per chunk.
    Number(usize),
}

/// A chunk: its key (`[start:end]`) and its rows `start..=end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub key: String,
    pub start: usize,
    pub end: usize,
}

/// NannyML's size-based chunks of `n` rows (a leftover chunk kept); the
/// default is 10 chunks. `None` when a chunk would hold no row.
pub fn chunks(n: usize, chunking: Chunking) -> Option<Vec<Chunk>> {
    let size = match chunking {
        Chunking::Size(s) => s,
        Chunking::Number(k) => n / k.max(1),
    };
    if size == 0 || n == 0 {
        return None;
    }
    let chunk = |start: usize, len: usize| Chunk {
        key: format!("[{start}:{}]", start + len - 1),
        start,
        end: start + len - 1,
    };
    let mut out: Vec<Chunk> = (0..n / size).map(|i| chunk(i * size, size)).collect();
    if !n.is_multiple_of(size) {
        out.push(chunk(size * (n / size), n % size));
    }
    Some(out)
}

/// The metrics estimated, by NannyML's names.
pub const METRICS: [&str; 6] = [
    "roc_auc",
    "f1",
    "precision",
    "recall",
    "specificity",
    "accuracy",
];

/// One metric of one chunk, as NannyML's result row has it (`None`: NaN).
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub value: Option<f64>,
    pub sampling_error: Option<f64>,
    pub realized: Option<f64>,
    pub lower_confidence_boundary: Option<f64>,
    pub upper_confidence_boundary: Option<f64>,
    pub lower_threshold: Option<f64>,
    pub upper_threshold: Option<f64>,
    pub alert: bool,
}

/// A fitted estimator: the calibration (if the scores need one), and per
/// metric its sampling-error components and thresholds.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub calibrated: bool,
    calibration: Option<Isotonic>,
    components: Vec<Option<ErrorComponents>>,
    thresholds: Vec<(Option<f64>, Option<f64>)>,
    chunking: Chunking,
}

/// A data set: scores (probability of class 1), predicted classes, and
/// targets where known.
pub struct Rows<'a> {
    pub score: &'a [f64],
    pub predicted: &'a [bool],
    pub truth: Option<&'a [bool]>,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// A metric realized on rows with targets; `None` where NannyML gives NaN
/// (one class among the targets or the predictions, for the metrics that
/// need both).
fn realized(metric: &str, truth: &[bool], predicted: &[bool], score: &[f64]) -> Option<f64> {
    let (tp, fp, fn_, tn) = cbpe::outcomes(truth, predicted);
    let (tp, fp, fn_, tn) = (tp as f64, fp as f64, fn_ as f64, tn as f64);
    let one_class = |v: &[bool]| v.iter().all(|&x| x) || v.iter().all(|&x| !x);
    match metric {
        "accuracy" => finite((tp + tn) / truth.len() as f64),
        "specificity" => (tn + fp > 0.0).then(|| tn / (tn + fp)),
        _ if one_class(truth) => None,
        "roc_auc" => {
            let pairs: Vec<(f64, bool)> =
                score.iter().copied().zip(truth.iter().copied()).collect();
            super::roc_auc(&pairs)
        }
        _ if one_class(predicted) => None,
        "precision" => Some(tp / (tp + fp)),
        "recall" => Some(tp / (tp + fn_)),
        "f1" => Some(2.0 * tp / (2.0 * tp + fp + fn_)),
        _ => None,
    }
}

/// `numpy.nanmean` and `numpy.nanstd` (ddof 0): NaN positions count as 0
/// in the sums and not in the count.
fn nan_mean_std(values: &[Option<f64>]) -> Option<(f64, f64)> {
    let n = values.iter().flatten().count();
    if n == 0 {
        return None;
    }
    let zeroed: Vec<f64> = values.iter().map(|v| v.unwrap_or(0.0)).collect();
    let mean = pairwise_sum(&zeroed) / n as f64;
    let squares: Vec<f64> = values
        .iter()
        .map(|v| v.map_or(0.0, |x| (x - mean) * (x - mean)))
        .collect();
    Some((mean, (pairwise_sum(&squares) / n as f64).sqrt()))
}

fn components(
    metric: &str,
    truth: &[bool],
    predicted: &[bool],
    score: &[f64],
) -> Option<ErrorComponents> {
    Some(match metric {
        "accuracy" => cbpe::accuracy_error_components(truth, predicted),
        "precision" => cbpe::precision_error_components(truth, predicted),
        "recall" => cbpe::recall_error_components(truth, predicted),
        "specificity" => cbpe::specificity_error_components(truth, predicted),
        "f1" => cbpe::f1_error_components(truth, predicted)?,
        "roc_auc" => cbpe::roc_auc_error_components(truth, score),
        _ => return None,
    })
}

fn estimate(metric: &str, predicted: &[bool], calibrated: &[f64], score: &[f64]) -> f64 {
    match metric {
        "accuracy" => cbpe::accuracy(predicted, calibrated),
        "precision" => cbpe::precision(predicted, calibrated),
        "recall" => cbpe::recall(predicted, calibrated),
        "specificity" => cbpe::specificity(predicted, calibrated),
        "f1" => cbpe::f1(predicted, calibrated),
        "roc_auc" => cbpe::roc_auc(calibrated, score),
        _ => f64::NAN,
    }
}

impl Fitted {
    /// Fits on the reference (targets required). `Err` names what is wrong.
    pub fn fit(reference: &Rows<'_>, chunking: Chunking) -> Result<Fitted, String> {
        let truth = reference
            .truth
            .ok_or("the reference needs targets to fit the estimator")?;
        let target: Vec<f64> = truth.iter().map(|&t| f64::from(u8::from(t))).collect();
        let check = needs_calibration(&target, reference.score, 10)?;
        let calibration = match check.needed {
            true => Some(Isotonic::fit(reference.score, &target).ok_or("scores must be finite")?),
            false => None,
        };
        let reference_chunks =
            chunks(reference.score.len(), chunking).ok_or("the reference is too small to chunk")?;
        let mut comps = Vec::new();
        let mut thresholds = Vec::new();
        for metric in METRICS {
            comps.push(components(
                metric,
                truth,
                reference.predicted,
                reference.score,
            ));
            let per_chunk: Vec<Option<f64>> = reference_chunks
                .iter()
                .map(|c| {
                    let r = c.start..c.end + 1;
                    realized(
                        metric,
                        &truth[r.clone()],
                        &reference.predicted[r.clone()],
                        &reference.score[r],
                    )
                })
                .collect();
            thresholds.push(match nan_mean_std(&per_chunk) {
                Some((mean, std)) => {
                    let (lower, upper) = (mean - 3.0 * std, mean + 3.0 * std);
                    (
                        Some(if lower <= 0.0 { 0.0 } else { lower }),
                        Some(if upper >= 1.0 { 1.0 } else { upper }),
                    )
                }
                None => (None, None),
            });
        }
        Ok(Fitted {
            calibrated: check.needed,
            calibration,
            components: comps,
            thresholds,
            chunking,
        })
    }

    /// Every chunk of `rows`: its key and each metric's estimate, in
    /// `METRICS` order.
    pub fn estimate(&self, rows: &Rows<'_>) -> Vec<(Chunk, Vec<Estimate>)> {
        let calibrated: Vec<f64> = match &self.calibration {
            Some(iso) => rows.score.iter().map(|&s| iso.predict(s)).collect(),
            None => rows.score.to_vec(),
        };
        let Some(list) = chunks(rows.score.len(), self.chunking) else {
            return Vec::new();
        };
        list.into_iter()
            .map(|c| {
                let r = c.start..c.end + 1;
                let (predicted, cal, score) = (
                    &rows.predicted[r.clone()],
                    &calibrated[r.clone()],
                    &rows.score[r.clone()],
                );
                let truth = rows.truth.map(|t| &t[r.clone()]);
                let estimates = METRICS
                    .iter()
                    .enumerate()
                    .map(|(m, metric)| {
                        let value = estimate(metric, predicted, cal, score);
                        let error = self.components[m]
                            .map_or(f64::NAN, |e| e.sampling_error(predicted.len()));
                        let (lower, upper) = self.thresholds[m];
                        Estimate {
                            value: finite(value),
                            sampling_error: finite(error),
                            realized: truth.and_then(|t| realized(metric, t, predicted, score)),
                            // np.minimum / np.maximum: NaN stays NaN.
                            upper_confidence_boundary: finite(value + 3.0 * error)
                                .map(|b| b.min(1.0)),
                            lower_confidence_boundary: finite(value - 3.0 * error)
                                .map(|b| b.max(0.0)),
                            lower_threshold: lower,
                            upper_threshold: upper,
                            alert: lower.is_some_and(|l| value < l)
                                || upper.is_some_and(|u| value > u),
                        }
                    })
                    .collect();
                (c, estimates)
            })
            .collect()
    }
}
