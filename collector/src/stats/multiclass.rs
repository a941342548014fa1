//! NannyML's CBPE for a multiclass classifier, as
//! `CBPE(problem_type="classification_multiclass")` computes it: each
//! class's probabilities calibrated one-vs-rest (isotonic, where
//! `needs_calibration` says so) and every row renormalized to sum to 1;
//! precision, recall, F1, specificity and ROC AUC estimated per class as
//! the binary estimator does and macro-averaged; accuracy as the mean
//! probability of the predicted class; the confusion matrix cell by cell.
//! Sampling errors combine the per-class variances
//! (√(Σ var / (n × fraction)) / K, ×1.2 for ROC AUC). The chunking,
//! thresholds, band and alert are `stats::estimation`'s.

use super::calibration::{needs_calibration, Isotonic};
use super::cbpe::{self, BusinessValue, CellError, Expected, Normalize};
use super::estimation::{
    cell_limits, finite, record, thresholds, Chunk, Estimate, Estimates, Fit, Limits, Metric,
    Settings, RATE,
};
use super::sum::{mean_std, pairwise_sum, pairwise_sum_with};

/// A multiclass data set: per class (in the fitted order) the probability
/// of each row, each row's predicted class and, where known, its actual
/// class (indices into the classes).
pub struct ClassRows<'a> {
    pub probabilities: &'a [Vec<f64>],
    pub predicted: &'a [usize],
    pub truth: Option<&'a [usize]>,
}

/// A column of a multiclass estimate: a macro-averaged rate, the
/// confusion-matrix cell of an actual and a predicted class, or the
/// business value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Column {
    Rate(Metric),
    Cell { truth: usize, predicted: usize },
    Business,
}

/// How a column's sampling error follows from the chunk's size.
#[derive(Debug, Clone, PartialEq)]
enum Error {
    /// Per class (variance, fraction of rows), and a factor.
    Classes(Vec<(f64, f64)>, f64),
    Accuracy(f64),
    Cell(CellError),
    /// Average precision: per class the bootstrap's variance and sample size.
    Bootstrap(Vec<(f64, usize)>),
    /// The per-row value's standard deviation over the reference, and
    /// whether the value is per prediction.
    Business(f64, bool),
}

impl Error {
    fn at(&self, n: usize) -> f64 {
        let n = n as f64;
        match self {
            Error::Classes(per_class, factor) => {
                let v: Vec<f64> = per_class.iter().map(|(var, f)| var / (n * f)).collect();
                pairwise_sum(&v).sqrt() / per_class.len() as f64 * factor
            }
            Error::Accuracy(std) => std / n.sqrt(),
            Error::Cell(c) => c.sampling_error(n as usize),
            Error::Business(std, per_prediction) => {
                cbpe::business_value_sampling_error(*std, *per_prediction, n as usize)
            }
            Error::Bootstrap(per_class) => {
                let v: Vec<f64> = per_class
                    .iter()
                    .map(|&(var, sample)| var * sample as f64 / n)
                    .collect();
                (pairwise_sum(&v) / v.len() as f64).sqrt()
            }
        }
    }
}

/// The standard deviation with ddof 1 (pandas' `Series.std`).
fn sample_std(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = pairwise_sum(xs) / n;
    let squares: Vec<f64> = xs.iter().map(|x| (x - mean) * (x - mean)).collect();
    (pairwise_sum(&squares) / (n - 1.0)).sqrt()
}

/// A chunk's rows, one class against the rest.
fn is(class: usize, rows: &[usize]) -> Vec<bool> {
    rows.iter().map(|&r| r == class).collect()
}

fn distinct(rows: &[usize]) -> usize {
    let mut seen: Vec<usize> = rows.to_vec();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// The mean of per-class values (`numpy.mean`).
fn macro_mean(values: &[f64]) -> f64 {
    pairwise_sum(values) / values.len() as f64
}

/// The realized confusion matrix of a chunk, `[actual][predicted]`,
/// normalized as scikit-learn's `confusion_matrix` does (NaN to 0).
fn confusion(k: usize, truth: &[usize], predicted: &[usize], by: Normalize) -> Vec<Vec<f64>> {
    let mut cm = vec![vec![0.0; k]; k];
    for (&t, &p) in truth.iter().zip(predicted) {
        cm[t][p] += 1.0;
    }
    normalize(&mut cm, by);
    for v in cm.iter_mut().flatten() {
        if v.is_nan() {
            *v = 0.0;
        }
    }
    cm
}

/// A matrix divided by its row sums (`True`), its column sums (`Pred`)
/// or its total (`All`), each summed as NumPy sums along that axis.
fn normalize(cm: &mut [Vec<f64>], by: Normalize) {
    match by {
        Normalize::None => {}
        Normalize::All => {
            let total = pairwise_sum(&cm.iter().flatten().copied().collect::<Vec<f64>>());
            cm.iter_mut().flatten().for_each(|v| *v /= total);
        }
        Normalize::True => {
            for row in cm.iter_mut() {
                let sum = pairwise_sum(row);
                row.iter_mut().for_each(|v| *v /= sum);
            }
        }
        Normalize::Pred => {
            for j in 0..cm.len() {
                // Along axis 0 NumPy adds row after row.
                let sum = cm.iter().fold(-0.0, |acc, row| acc + row[j]);
                cm.iter_mut().for_each(|row| row[j] /= sum);
            }
        }
    }
}

/// A fitted multiclass estimator.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub classes: Vec<String>,
    /// Per class, whether its probabilities are calibrated.
    pub calibrated: Vec<bool>,
    calibrations: Vec<Option<Isotonic>>,
    columns: Vec<Fit<Column, Error>>,
    normalize: Normalize,
    /// The business value's matrix, when it is estimated.
    business: Option<BusinessValue>,
}

/// What the metrics need of one chunk.
struct View<'a> {
    k: usize,
    predicted: &'a [usize],
    /// Per class: calibrated and raw probabilities.
    calibrated: Vec<&'a [f64]>,
    raw: Vec<&'a [f64]>,
}

impl View<'_> {
    /// A metric's estimate; `expected`: each class's expected counts,
    /// one class against the rest.
    fn estimate(&self, metric: Metric, expected: &[Expected]) -> f64 {
        let per_class = |c: usize| -> f64 {
            let e = &expected[c];
            match metric {
                Metric::Precision => e.precision(),
                Metric::Recall => e.recall(),
                Metric::F1 => e.f1(),
                Metric::Specificity => e.specificity(),
                Metric::AveragePrecision => {
                    cbpe::average_precision(self.calibrated[c], self.raw[c])
                }
                _ => cbpe::roc_auc(self.calibrated[c], self.raw[c]),
            }
        };
        match metric {
            Metric::Precision
            | Metric::Recall
            | Metric::F1
            | Metric::Specificity
            | Metric::RocAuc
            | Metric::AveragePrecision => {
                macro_mean(&(0..self.k).map(per_class).collect::<Vec<f64>>())
            }
            Metric::Accuracy => {
                let p: Vec<f64> = (0..self.predicted.len())
                    .map(|i| self.calibrated[self.predicted[i]][i])
                    .collect();
                pairwise_sum(&p) / p.len() as f64
            }
            _ => f64::NAN,
        }
    }

    /// The expected counts `[actual][predicted]`: per cell the sum of the
    /// calibrated probability of the actual class over the rows predicted
    /// as the other (NannyML's business value sums them so).
    fn counts(&self) -> Vec<Vec<f64>> {
        let rows = 0..self.predicted.len();
        (0..self.k)
            .map(|i| {
                let calibrated = self.calibrated[i];
                (0..self.k)
                    .map(|j| {
                        pairwise_sum_with(rows.clone(), &|r| {
                            if self.predicted[r] == j {
                                calibrated[r]
                            } else {
                                0.0
                            }
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// The estimated confusion matrix: the mean of the calibrated
    /// probability of the actual class over the rows predicted as each
    /// class, normalized.
    fn confusion(&self, by: Normalize) -> Vec<Vec<f64>> {
        let n = self.predicted.len() as f64;
        let mut cm = self.counts();
        // NumPy's means first, as NannyML takes them.
        cm.iter_mut().flatten().for_each(|v| *v /= n);
        match by {
            Normalize::None => cm.iter_mut().flatten().for_each(|v| *v *= n),
            _ => normalize(&mut cm, by),
        }
        cm
    }
}

/// A macro-averaged rate realized on rows with targets (scikit-learn's
/// macro averages over the classes, a class without predictions or
/// actual rows counting 0); `None` with one actual or predicted class.
fn realized_rate(
    metric: Metric,
    k: usize,
    truth: &[usize],
    predicted: &[usize],
    raw: &[&[f64]],
) -> Option<f64> {
    // scikit-learn's macro averages of a score's binary metric, class
    // against the rest: ROC AUC needs every class, AP more than one.
    let ranked = |of: fn(&[(f64, bool)]) -> Option<f64>| -> Option<f64> {
        let per_class: Vec<f64> = (0..k)
            .map(|c| {
                let pairs: Vec<(f64, bool)> = raw[c]
                    .iter()
                    .zip(truth)
                    .map(|(&s, &t)| (s, t == c))
                    .collect();
                of(&pairs).unwrap_or(f64::NAN)
            })
            .collect();
        finite(macro_mean(&per_class))
    };
    match metric {
        Metric::RocAuc => {
            return (distinct(truth) == k)
                .then(|| ranked(super::roc_auc))
                .flatten()
        }
        Metric::AveragePrecision => {
            return (distinct(truth) > 1)
                .then(|| ranked(super::average_precision))
                .flatten()
        }
        _ => {}
    }
    if distinct(truth) <= 1 || distinct(predicted) <= 1 {
        return None;
    }
    if metric == Metric::Accuracy {
        let right = truth.iter().zip(predicted).filter(|(t, p)| t == p).count();
        return Some(right as f64 / truth.len() as f64);
    }
    let share = |a: usize, b: usize| {
        if a + b == 0 {
            0.0
        } else {
            a as f64 / (a + b) as f64
        }
    };
    let per_class: Vec<f64> = (0..k)
        .map(|c| {
            let (tp, fp, fn_, tn) = cbpe::outcomes(&is(c, truth), &is(c, predicted));
            match metric {
                Metric::Precision => share(tp, fp),
                Metric::Recall => share(tp, fn_),
                Metric::F1 => {
                    let d = 2 * tp + fp + fn_;
                    if d == 0 {
                        0.0
                    } else {
                        2.0 * tp as f64 / d as f64
                    }
                }
                _ => tn as f64 / (tn + fp) as f64,
            }
        })
        .collect();
    finite(macro_mean(&per_class))
}

/// A class's (variance, fraction) of a rate's sampling error, from the
/// reference (`nannyml.sampling_error.multiclass_classification`).
fn class_components(
    metric: Metric,
    truth: &[bool],
    predicted: &[bool],
    score: &[f64],
) -> (f64, f64) {
    let c = match metric {
        Metric::Precision => cbpe::precision_error_components(truth, predicted),
        Metric::Recall => cbpe::recall_error_components(truth, predicted),
        Metric::Specificity => cbpe::specificity_error_components(truth, predicted),
        Metric::RocAuc => cbpe::roc_auc_error_components(truth, score),
        _ => {
            // F1: true positives 1, false negatives and positives 0.
            let (tp, fp, fn_, _) = cbpe::outcomes(truth, predicted);
            let values = cbpe::ones_then_zeros(tp, fn_ + fp, 1.0);
            let std = mean_std(&values).1;
            return (std * std, values.len() as f64 / truth.len() as f64);
        }
    };
    (c.std * c.std, c.fraction)
}

/// A confusion-matrix cell's sampling-error components from the
/// reference counts `cm`: the spread of a 0/1 array with the cell's count
/// of ones among its actual class's rows (`True`), its predicted class's
/// (`Pred`) or all rows, and that share of the rows.
fn cell_error(cm: &[Vec<f64>], i: usize, j: usize, n: usize, by: Normalize) -> CellError {
    let row = pairwise_sum(&cm[i]);
    let column = cm.iter().fold(-0.0, |acc, r| acc + r[j]);
    let (len, proportion) = match by {
        Normalize::True => (row, row / n as f64),
        Normalize::Pred => (column, column / n as f64),
        Normalize::All | Normalize::None => (n as f64, 1.0),
    };
    let ones = cm[i][j] as usize;
    let values = cbpe::ones_then_zeros(ones, len as usize - ones, 1.0);
    CellError {
        std: mean_std(&values).1,
        proportion,
        normalize: by,
    }
}

impl Fitted {
    /// Fits on the reference: `classes` name the probability columns, in
    /// sorted order (NannyML sorts them); targets required. `Err` names
    /// what is wrong.
    pub fn fit(
        classes: &[String],
        reference: &ClassRows<'_>,
        reference_chunks: &[Chunk],
        settings: &Settings,
    ) -> Result<Fitted, String> {
        let truth = reference
            .truth
            .ok_or("the reference needs targets to fit the estimator")?;
        let (k, n) = (classes.len(), reference.predicted.len());
        let (predicted, raw) = (reference.predicted, reference.probabilities);
        if k < 2 || raw.len() != k || raw.iter().any(|p| p.len() != n) || truth.len() != n {
            return Err("a multiclass estimator needs a probability column per class, each as long as the predictions".into());
        }
        let mut calibrations = Vec::with_capacity(k);
        let mut calibrated = Vec::with_capacity(k);
        for (c, name) in classes.iter().enumerate() {
            let target: Vec<f64> = truth.iter().map(|&t| f64::from(u8::from(t == c))).collect();
            let check = needs_calibration(&target, &raw[c], 10)
                .map_err(|e| format!("class {name:?}: {e}"))?;
            calibrated.push(check.needed);
            calibrations.push(match check.needed {
                true => Some(
                    Isotonic::fit(&raw[c], &target)
                        .ok_or_else(|| format!("class {name:?}: probabilities must be finite"))?,
                ),
                false => None,
            });
        }
        let by = settings.normalize;
        let chunk_raw = |r: &std::ops::Range<usize>| -> Vec<&[f64]> {
            raw.iter().map(|p| &p[r.clone()]).collect()
        };
        let mut columns = Vec::new();
        let mut business = None;
        for &metric in &settings.metrics {
            match metric {
                Metric::BusinessValue => {
                    let bv = settings
                        .business_value
                        .clone()
                        .ok_or("business_value needs the value of each confusion-matrix cell")?;
                    if bv.classes() != k {
                        return Err(format!(
                            "the business value matrix is {0} × {0}, the model has {k} classes (a row per actual class, a value per predicted class, in sorted order)",
                            bv.classes()
                        ));
                    }
                    // pandas' standard deviation (ddof 1), as NannyML's
                    // multiclass components take it.
                    let values: Vec<f64> = truth
                        .iter()
                        .zip(predicted)
                        .map(|(&t, &p)| bv.matrix[t][p])
                        .collect();
                    let std = sample_std(&values);
                    let none = Limits {
                        lower: None,
                        upper: None,
                    };
                    columns.push(Fit {
                        column: Column::Business,
                        error: Error::Business(std, bv.per_prediction),
                        limits: none,
                        thresholds: thresholds(reference_chunks, none, |r| {
                            let cm =
                                confusion(k, &truth[r.clone()], &predicted[r], Normalize::None);
                            Some(bv.total(cm))
                        }),
                    });
                    business = Some(bv);
                }
                Metric::ConfusionMatrix => {
                    let counts = confusion(k, truth, predicted, Normalize::None);
                    for i in 0..k {
                        for j in 0..k {
                            let limits = cell_limits(by);
                            columns.push(Fit {
                                column: Column::Cell {
                                    truth: i,
                                    predicted: j,
                                },
                                error: Error::Cell(cell_error(&counts, i, j, n, by)),
                                limits,
                                thresholds: thresholds(reference_chunks, limits, |r| {
                                    let (t, p) = (&truth[r.clone()], &predicted[r]);
                                    (distinct(t) > 1 && distinct(p) > 1)
                                        .then(|| confusion(k, t, p, by)[i][j])
                                }),
                            });
                        }
                    }
                }
                metric => {
                    let error = match metric {
                        Metric::AveragePrecision => {
                            // One generator for every class, in order.
                            let mut rng =
                                super::numpy_rng::RandomState::new(super::estimation::AP_SEED);
                            Error::Bootstrap(
                                (0..k)
                                    .map(|c| {
                                        let (std, sample) = cbpe::average_precision_bootstrap(
                                            &is(c, truth),
                                            &raw[c],
                                            &mut rng,
                                        );
                                        (std * std, sample)
                                    })
                                    .collect(),
                            )
                        }
                        Metric::Accuracy => {
                            let right: Vec<f64> = truth
                                .iter()
                                .zip(predicted)
                                .map(|(t, p)| f64::from(u8::from(t == p)))
                                .collect();
                            Error::Accuracy(mean_std(&right).1)
                        }
                        _ => Error::Classes(
                            (0..k)
                                .map(|c| {
                                    class_components(
                                        metric,
                                        &is(c, truth),
                                        &is(c, predicted),
                                        &raw[c],
                                    )
                                })
                                .collect(),
                            if metric == Metric::RocAuc { 1.2 } else { 1.0 },
                        ),
                    };
                    columns.push(Fit {
                        column: Column::Rate(metric),
                        error,
                        limits: RATE,
                        thresholds: thresholds(reference_chunks, RATE, |r| {
                            realized_rate(
                                metric,
                                k,
                                &truth[r.clone()],
                                &predicted[r.clone()],
                                &chunk_raw(&r),
                            )
                        }),
                    });
                }
            }
        }
        Ok(Fitted {
            classes: classes.to_vec(),
            calibrated,
            calibrations,
            columns,
            normalize: by,
            business,
        })
    }

    /// The calibrated probabilities, each row renormalized to sum to 1
    /// (uniform where they sum to 0).
    fn calibrate(&self, raw: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let k = self.classes.len();
        let mut cal: Vec<Vec<f64>> = raw
            .iter()
            .zip(&self.calibrations)
            .map(|(p, iso)| match iso {
                Some(iso) => p.iter().map(|&s| iso.predict(s)).collect(),
                None => p.clone(),
            })
            .collect();
        let n = raw.first().map_or(0, Vec::len);
        for i in 0..n {
            let row: Vec<f64> = cal.iter().map(|p| p[i]).collect();
            let sum = pairwise_sum(&row);
            for p in cal.iter_mut() {
                p[i] = if sum != 0.0 {
                    p[i] / sum
                } else {
                    1.0 / k as f64
                };
            }
        }
        cal
    }

    /// Each of the `chunks` of `rows` with each column's estimate.
    pub fn estimate(&self, rows: &ClassRows<'_>, chunks: &[Chunk]) -> Estimates {
        let calibrated = self.calibrate(rows.probabilities);
        chunks
            .iter()
            .cloned()
            .map(|c| {
                let estimates = self.estimate_rows(rows, &calibrated, c.rows());
                (c, estimates)
            })
            .collect()
    }

    /// All of `rows` as one chunk (a live window).
    pub fn estimate_all(&self, rows: &ClassRows<'_>) -> Vec<(String, Estimate)> {
        let calibrated = self.calibrate(rows.probabilities);
        self.estimate_rows(rows, &calibrated, 0..rows.predicted.len())
    }

    /// Each column's estimate over the rows `r`.
    fn estimate_rows(
        &self,
        rows: &ClassRows<'_>,
        calibrated: &[Vec<f64>],
        r: std::ops::Range<usize>,
    ) -> Vec<(String, Estimate)> {
        let k = self.classes.len();
        let by = self.normalize;
        let has_cells = self
            .columns
            .iter()
            .any(|f| matches!(f.column, Column::Cell { .. }));
        let view = View {
            k,
            predicted: &rows.predicted[r.clone()],
            calibrated: calibrated.iter().map(|p| &p[r.clone()]).collect(),
            raw: rows.probabilities.iter().map(|p| &p[r.clone()]).collect(),
        };
        let truth = rows.truth.map(|t| &t[r]);
        let expected: Vec<Expected> = (0..k)
            .map(|c| cbpe::expected(&is(c, view.predicted), view.calibrated[c]))
            .collect();
        let estimated_cells = if has_cells {
            view.confusion(by)
        } else {
            Vec::new()
        };
        let realized_cells = truth
            .filter(|t| has_cells && distinct(t) > 1 && distinct(view.predicted) > 1)
            .map(|t| confusion(k, t, view.predicted, by));
        self.columns
            .iter()
            .map(|f| {
                let (name, value, realized) = match f.column {
                    Column::Rate(m) => (
                        m.name().to_string(),
                        view.estimate(m, &expected),
                        truth.and_then(|t| realized_rate(m, k, t, view.predicted, &view.raw)),
                    ),
                    Column::Cell {
                        truth: i,
                        predicted: j,
                    } => (
                        format!("true_{}_pred_{}", self.classes[i], self.classes[j]),
                        estimated_cells[i][j],
                        realized_cells.as_ref().map(|cm| cm[i][j]),
                    ),
                    Column::Business => {
                        let bv = self.business.as_ref();
                        (
                            Metric::BusinessValue.name().to_string(),
                            bv.map_or(f64::NAN, |bv| bv.total(view.counts())),
                            truth.zip(bv).map(|(t, bv)| {
                                bv.total(confusion(k, t, view.predicted, Normalize::None))
                            }),
                        )
                    }
                };
                let error = f.error.at(view.predicted.len());
                let mut e = record(value, error, realized, f.thresholds, f.limits);
                if f.column == Column::Rate(Metric::AveragePrecision)
                    && truth.is_some_and(|t| (2..k).contains(&distinct(t)))
                {
                    // scikit-learn refuses the macro AP of targets missing
                    // a class, and NannyML then reports the whole chunk's
                    // AP as NaN, its estimate included.
                    e = record(f64::NAN, f64::NAN, None, (None, None), f.limits);
                }
                if matches!(f.column, Column::Cell { .. }) && (value + error).is_nan() {
                    // NannyML clips the cells' band with Python's
                    // min and max, which keep the limit over NaN.
                    e.upper_confidence_boundary = f.limits.upper;
                    e.lower_confidence_boundary = f.limits.lower;
                }
                (name, e)
            })
            .collect()
    }
}
