//! NannyML's CBPE over chunks, as `CBPE(...).fit(reference).estimate(analysis)`
//! computes it: the reference (with targets) decides whether scores need
//! calibration and fits the calibration, gives each metric its
//! sampling-error components and, from the realized metric of each of its
//! chunks, thresholds at the mean ± 3 standard deviations (clipped to the
//! metric's range); each chunk of the reference and the analysis then gets
//! the estimate from its calibrated probabilities, the sampling error, a
//! band of ± 3 sampling errors (clipped to the range), the realized metric
//! where targets exist, and an alert when the estimate leaves the
//! thresholds. This module holds what every task shares and the binary
//! task; `stats::multiclass` the multiclass one.

use std::ops::Range;

use super::calibration::{needs_calibration, Isotonic};
use super::cbpe::{self, BusinessValue, Cell, CellError, ErrorComponents, Expected, Normalize};
use super::order;
use super::sum::pairwise_sum;

/// How rows are cut into chunks (NannyML's chunkers, a leftover chunk
/// kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// This many rows per chunk.
    Size(usize),
    /// About this many chunks: rows ÷ number per chunk.
    Number(usize),
    /// One chunk per calendar period of the rows' timestamps (rows sorted
    /// by time; `period_chunks`).
    Period(Period),
}

/// A calendar period, as pandas' `to_period` offsets name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Minute,
    Hour,
    Day,
    /// Monday to Sunday (`W`, i.e. `W-SUN`).
    Week,
    Month,
    Quarter,
    Year,
}

impl Period {
    /// `min`, `h`, `D`, `W`, `M`, `Q`, `Y` (and pandas' other spellings
    /// of them: `T`, `H`, `ME`, `QE`, `A`, `YE`).
    pub fn parse(text: &str) -> Option<Period> {
        Some(match text {
            "min" | "T" => Period::Minute,
            "h" | "H" => Period::Hour,
            "D" | "d" => Period::Day,
            "W" | "W-SUN" => Period::Week,
            "M" | "ME" => Period::Month,
            "Q" | "QE" => Period::Quarter,
            "Y" | "YE" | "A" => Period::Year,
            _ => return None,
        })
    }

    /// The period holding `t`, written as pandas writes a `Period`.
    pub fn key(self, t: chrono::NaiveDateTime) -> String {
        use chrono::Datelike;
        match self {
            Period::Minute => t.format("%Y-%m-%d %H:%M").to_string(),
            Period::Hour => t.format("%Y-%m-%d %H:00").to_string(),
            Period::Day => t.format("%Y-%m-%d").to_string(),
            Period::Week => {
                let monday =
                    t.date() - chrono::Days::new(u64::from(t.weekday().num_days_from_monday()));
                format!("{monday}/{}", monday + chrono::Days::new(6))
            }
            Period::Month => t.format("%Y-%m").to_string(),
            Period::Quarter => format!("{}Q{}", t.year(), (t.month() - 1) / 3 + 1),
            Period::Year => t.format("%Y").to_string(),
        }
    }
}

/// NannyML's period chunks of rows sorted by their timestamps: one chunk
/// per period that has rows, keyed as pandas writes the period.
pub fn period_chunks(sorted: &[chrono::NaiveDateTime], period: Period) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    for (i, &t) in sorted.iter().enumerate() {
        let key = period.key(t);
        match out.last_mut() {
            Some(c) if c.key == key => c.end = i,
            _ => out.push(Chunk {
                key,
                start: i,
                end: i,
            }),
        }
    }
    out
}

/// A chunk: its key (`[start:end]`) and its rows `start..=end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub key: String,
    pub start: usize,
    pub end: usize,
}

impl Chunk {
    pub fn rows(&self) -> Range<usize> {
        self.start..self.end + 1
    }
}

/// NannyML's size-based chunks of `n` rows (a leftover chunk kept); the
/// default is 10 chunks. `None` when a chunk would hold no row, and for
/// period chunks, which need the rows' timestamps
/// (`period_chunks`).
pub fn chunks(n: usize, chunking: Chunking) -> Option<Vec<Chunk>> {
    let size = match chunking {
        Chunking::Size(s) => s,
        Chunking::Number(k) => n / k.max(1),
        Chunking::Period(_) => return None,
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

/// A metric to estimate, by NannyML's name. The confusion matrix stands
/// for its cells (`true_positive` ... for a binary task,
/// `true_A_pred_B` for a multiclass one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    RocAuc,
    AveragePrecision,
    F1,
    Precision,
    Recall,
    Specificity,
    Accuracy,
    ConfusionMatrix,
    BusinessValue,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::RocAuc,
        Metric::AveragePrecision,
        Metric::F1,
        Metric::Precision,
        Metric::Recall,
        Metric::Specificity,
        Metric::Accuracy,
        Metric::ConfusionMatrix,
        Metric::BusinessValue,
    ];

    /// The metrics estimated when none are named.
    pub const DEFAULT: [Metric; 6] = [
        Metric::RocAuc,
        Metric::F1,
        Metric::Precision,
        Metric::Recall,
        Metric::Specificity,
        Metric::Accuracy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::RocAuc => "roc_auc",
            Metric::AveragePrecision => "average_precision",
            Metric::F1 => "f1",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::Specificity => "specificity",
            Metric::Accuracy => "accuracy",
            Metric::ConfusionMatrix => "confusion_matrix",
            Metric::BusinessValue => "business_value",
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// What to estimate and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub chunking: Chunking,
    pub metrics: Vec<Metric>,
    /// How confusion-matrix cells are normalized.
    pub normalize: Normalize,
    /// The value of each cell, for `business_value` (binary only).
    pub business_value: Option<BusinessValue>,
}

impl Settings {
    /// NannyML's defaults: 10 chunks, the six rates, counts.
    pub fn new(chunking: Chunking) -> Settings {
        Settings {
            chunking,
            metrics: Metric::DEFAULT.to_vec(),
            normalize: Normalize::None,
            business_value: None,
        }
    }
}

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

/// Each chunk with its estimates, by column name in NannyML's order.
pub type Estimates = Vec<(Chunk, Vec<(String, Estimate)>)>;

/// The range a metric's thresholds and band are clipped to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limits {
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

/// Rates: [0, 1].
pub(crate) const RATE: Limits = Limits {
    lower: Some(0.0),
    upper: Some(1.0),
};

/// Confusion-matrix cells: counts have no upper limit.
pub(crate) fn cell_limits(by: Normalize) -> Limits {
    Limits {
        lower: Some(0.0),
        upper: (by != Normalize::None).then_some(1.0),
    }
}

pub(crate) type Thresholds = (Option<f64>, Option<f64>);

/// A fitted column of a task: what it is, its sampling error, range and
/// thresholds.
#[derive(Debug, Clone)]
pub(crate) struct Fit<C, E> {
    pub column: C,
    pub error: E,
    pub limits: Limits,
    pub thresholds: Thresholds,
}

pub(crate) fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// `numpy.nanmean` and `numpy.nanstd` (ddof 0): NaN positions count as 0
/// in the sums and not in the count.
pub(crate) fn nan_mean_std(values: &[Option<f64>]) -> Option<(f64, f64)> {
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

/// NannyML's `StandardDeviationThreshold` over the realized values of the
/// reference chunks, each side replaced by the limit when it reaches it.
pub(crate) fn thresholds(
    reference: &[Chunk],
    limits: Limits,
    realized: impl Fn(Range<usize>) -> Option<f64>,
) -> Thresholds {
    let per_chunk: Vec<Option<f64>> = reference.iter().map(|c| realized(c.rows())).collect();
    match nan_mean_std(&per_chunk) {
        None => (None, None),
        Some((mean, std)) => {
            let (lower, upper) = (mean - 3.0 * std, mean + 3.0 * std);
            (
                Some(match limits.lower {
                    Some(l) if lower <= l => l,
                    _ => lower,
                }),
                Some(match limits.upper {
                    Some(u) if upper >= u => u,
                    _ => upper,
                }),
            )
        }
    }
}

/// One column of one chunk, as NannyML's `get_chunk_record`: the band of
/// ± 3 sampling errors clipped to the limits (NaN stays NaN), the alert
/// when the estimate leaves the thresholds.
pub(crate) fn record(
    value: f64,
    error: f64,
    realized: Option<f64>,
    (lower, upper): Thresholds,
    limits: Limits,
) -> Estimate {
    Estimate {
        value: finite(value),
        sampling_error: finite(error),
        realized,
        upper_confidence_boundary: finite(value + 3.0 * error)
            .map(|b| limits.upper.map_or(b, |u| b.min(u))),
        lower_confidence_boundary: finite(value - 3.0 * error)
            .map(|b| limits.lower.map_or(b, |l| b.max(l))),
        lower_threshold: lower,
        upper_threshold: upper,
        alert: lower.is_some_and(|l| value < l) || upper.is_some_and(|u| value > u),
    }
}

/// A binary data set: scores (probability of class 1), predicted classes,
/// and targets where known.
pub struct Rows<'a> {
    pub score: &'a [f64],
    pub predicted: &'a [bool],
    pub truth: Option<&'a [bool]>,
}

/// A column of a binary estimate: a rate, a confusion-matrix cell, or
/// the business value.
#[derive(Debug, Clone, PartialEq)]
enum Column {
    Rate(Metric),
    Cell(Cell),
    Business(BusinessValue),
}

/// How a column's sampling error follows from the chunk's size.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Error {
    Rate(Option<ErrorComponents>),
    /// Average precision: the bootstrap's spread and its sample size.
    Bootstrap(Option<(f64, usize)>),
    Cell(CellError),
    Business {
        std: f64,
        per_prediction: bool,
    },
}

impl Error {
    fn at(&self, n: usize) -> f64 {
        match self {
            Error::Rate(c) => c.map_or(f64::NAN, |c| c.sampling_error(n)),
            Error::Bootstrap(c) => c.map_or(f64::NAN, |(std, sample)| {
                std * (sample as f64 / n as f64).sqrt()
            }),
            Error::Cell(c) => c.sampling_error(n),
            Error::Business {
                std,
                per_prediction,
            } => cbpe::business_value_sampling_error(*std, *per_prediction, n),
        }
    }
}

/// A metric realized on rows with targets; `None` where NannyML gives NaN
/// (one class among the targets or the predictions, for the metrics that
/// need both).
fn realized_rate(metric: Metric, truth: &[bool], predicted: &[bool], score: &[f64]) -> Option<f64> {
    let (tp, fp, fn_, tn) = cbpe::outcomes(truth, predicted);
    let (tp, fp, fn_, tn) = (tp as f64, fp as f64, fn_ as f64, tn as f64);
    let one_class = |v: &[bool]| v.iter().all(|&x| x) || v.iter().all(|&x| !x);
    match metric {
        Metric::Accuracy => finite((tp + tn) / truth.len() as f64),
        Metric::Specificity => (tn + fp > 0.0).then(|| tn / (tn + fp)),
        // NaN only without positives.
        Metric::AveragePrecision => {
            let pairs: Vec<(f64, bool)> =
                score.iter().copied().zip(truth.iter().copied()).collect();
            super::average_precision(&pairs)
        }
        _ if one_class(truth) => None,
        Metric::RocAuc => {
            let pairs: Vec<(f64, bool)> =
                score.iter().copied().zip(truth.iter().copied()).collect();
            super::roc_auc(&pairs)
        }

        _ if one_class(predicted) => None,
        Metric::Precision => Some(tp / (tp + fp)),
        Metric::Recall => Some(tp / (tp + fn_)),
        Metric::F1 => Some(2.0 * tp / (2.0 * tp + fp + fn_)),
        _ => None,
    }
}

impl Column {
    fn name(&self) -> String {
        match self {
            Column::Rate(m) => m.name().to_string(),
            Column::Cell(c) => c.name().to_string(),
            Column::Business(_) => Metric::BusinessValue.name().to_string(),
        }
    }

    fn limits(&self, by: Normalize) -> Limits {
        match self {
            Column::Rate(_) => RATE,
            Column::Cell(_) => cell_limits(by),
            Column::Business(_) => Limits {
                lower: None,
                upper: None,
            },
        }
    }

    fn realized(
        &self,
        by: Normalize,
        truth: &[bool],
        predicted: &[bool],
        score: &[f64],
    ) -> Option<f64> {
        match self {
            Column::Rate(m) => realized_rate(*m, truth, predicted, score),
            Column::Cell(c) => finite(c.realized(by, truth, predicted)),
            Column::Business(bv) => finite(cbpe::business_value_realized(bv, truth, predicted)),
        }
    }

    /// The column's estimate from the chunk's expected counts (`e`) and
    /// its calibrated probabilities in descending order of the score (ROC
    /// AUC, average precision).
    fn estimate<'s>(&self, by: Normalize, e: &Expected, descending: &dyn Fn() -> &'s [f64]) -> f64 {
        match self {
            Column::Rate(Metric::Accuracy) => e.accuracy(),
            Column::Rate(Metric::Precision) => e.precision(),
            Column::Rate(Metric::Recall) => e.recall(),
            Column::Rate(Metric::Specificity) => e.specificity(),
            Column::Rate(Metric::F1) => e.f1(),
            Column::Rate(Metric::RocAuc) => cbpe::roc_auc_descending(descending()),
            Column::Rate(Metric::AveragePrecision) => {
                cbpe::average_precision_descending(descending())
            }
            Column::Rate(_) => f64::NAN,
            Column::Cell(c) => e.confusion(*c, by),
            Column::Business(bv) => e.business_value(bv),
        }
    }

    fn error(&self, by: Normalize, truth: &[bool], predicted: &[bool], score: &[f64]) -> Error {
        match self {
            Column::Rate(Metric::AveragePrecision) => Error::Bootstrap(
                cbpe::average_precision_error_components(truth, score, AP_SEED),
            ),
            Column::Rate(m) => Error::Rate(match m {
                Metric::Accuracy => Some(cbpe::accuracy_error_components(truth, predicted)),
                Metric::Precision => Some(cbpe::precision_error_components(truth, predicted)),
                Metric::Recall => Some(cbpe::recall_error_components(truth, predicted)),
                Metric::Specificity => Some(cbpe::specificity_error_components(truth, predicted)),
                Metric::F1 => cbpe::f1_error_components(truth, predicted),
                Metric::RocAuc => Some(cbpe::roc_auc_error_components(truth, score)),
                _ => None,
            }),
            Column::Cell(c) => {
                Error::Cell(cbpe::confusion_error_components(*c, by, truth, predicted))
            }
            Column::Business(bv) => Error::Business {
                std: cbpe::business_value_error_std(bv, truth, predicted),
                per_prediction: bv.per_prediction,
            },
        }
    }
}

/// The seed of average precision's bootstrap (NumPy's legacy generator).
pub const AP_SEED: u32 = 42;

/// The columns the settings ask of a binary task, in NannyML's order.
fn binary_columns(settings: &Settings) -> Result<Vec<Column>, String> {
    let mut out = Vec::new();
    for &m in &settings.metrics {
        match m {
            Metric::ConfusionMatrix => out.extend(Cell::ALL.map(Column::Cell)),
            Metric::BusinessValue => {
                let bv = settings
                    .business_value
                    .clone()
                    .ok_or("business_value needs the value of each confusion-matrix cell")?;
                if bv.classes() != 2 {
                    return Err(format!(
                        "a binary classifier's business value matrix is 2 × 2 (TN, FP, FN, TP), not {0} × {0}",
                        bv.classes()
                    ));
                }
                out.push(Column::Business(bv))
            }
            m => out.push(Column::Rate(m)),
        }
    }
    Ok(out)
}

/// A fitted binary estimator: the calibration (if the scores need one),
/// and per column its sampling error and thresholds.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub calibrated: bool,
    calibration: Option<Isotonic>,
    columns: Vec<Fit<Column, Error>>,
    normalize: Normalize,
}

impl Fitted {
    /// Fits on the reference (targets required), its thresholds from
    /// `reference_chunks` of it. `Err` names what is wrong.
    pub fn fit(
        reference: &Rows<'_>,
        reference_chunks: &[Chunk],
        settings: &Settings,
    ) -> Result<Fitted, String> {
        let truth = reference
            .truth
            .ok_or("the reference needs targets to fit the estimator")?;
        let target: Vec<f64> = truth.iter().map(|&t| f64::from(u8::from(t))).collect();
        let check = needs_calibration(&target, reference.score, 10)?;
        let calibration = match check.needed {
            true => Some(Isotonic::fit(reference.score, &target).ok_or("scores must be finite")?),
            false => None,
        };
        let by = settings.normalize;
        let (predicted, score) = (reference.predicted, reference.score);
        let columns = binary_columns(settings)?
            .into_iter()
            .map(|column| {
                let limits = column.limits(by);
                let error = column.error(by, truth, predicted, score);
                let thresholds = thresholds(reference_chunks, limits, |r| {
                    column.realized(by, &truth[r.clone()], &predicted[r.clone()], &score[r])
                });
                Fit {
                    column,
                    error,
                    limits,
                    thresholds,
                }
            })
            .collect();
        Ok(Fitted {
            calibrated: check.needed,
            calibration,
            columns,
            normalize: by,
        })
    }

    /// Each of the `chunks` of `rows` with each column's estimate.
    pub fn estimate(&self, rows: &Rows<'_>, chunks: &[Chunk]) -> Estimates {
        // A search per score: a data set's order would cost memory
        // (millions of rows) for little time.
        let calibrated = match &self.calibration {
            Some(iso) => rows.score.iter().map(|&s| iso.predict(s)).collect(),
            None => rows.score.to_vec(),
        };
        chunks
            .iter()
            .cloned()
            .map(|c| {
                let estimates = self.estimate_rows(rows, &calibrated, c.rows(), None);
                (c, estimates)
            })
            .collect()
    }

    /// All of `rows` as one chunk (a live window): the scores sorted once,
    /// for the calibration and ROC AUC alike.
    pub fn estimate_all(&self, rows: &Rows<'_>) -> Vec<(String, Estimate)> {
        let order = order::descending(rows.score);
        let calibrated = self.calibrate(rows.score, &order);
        let descending = order::in_order(&calibrated, &order);
        self.estimate_rows(rows, &calibrated, 0..rows.score.len(), Some(descending))
    }

    /// The calibrated probabilities, given the scores' `order`
    /// (`order::descending`): one sweep along the calibration's steps.
    fn calibrate(&self, score: &[f64], order: &[usize]) -> Vec<f64> {
        match &self.calibration {
            Some(iso) => {
                let ascending = iso.predict_ascending(order.iter().rev().map(|&i| score[i]));
                let mut out = vec![0.0; score.len()];
                for (&i, c) in order.iter().rev().zip(ascending) {
                    out[i] = c;
                }
                out
            }
            None => score.to_vec(),
        }
    }

    /// Each column's estimate over the rows `r`.
    /// `descending`: the rows' calibrated probabilities in descending
    /// order of the score, when already known.
    fn estimate_rows(
        &self,
        rows: &Rows<'_>,
        calibrated: &[f64],
        r: Range<usize>,
        descending: Option<Vec<f64>>,
    ) -> Vec<(String, Estimate)> {
        let by = self.normalize;
        let (predicted, cal, score) = (
            &rows.predicted[r.clone()],
            &calibrated[r.clone()],
            &rows.score[r.clone()],
        );
        let truth = rows.truth.map(|t| &t[r]);
        let expected = cbpe::expected(predicted, cal);
        // Sorted once for ROC AUC and average precision alike.
        let sorted = std::cell::OnceCell::new();
        if let Some(d) = descending {
            let _ = sorted.set(d);
        }
        let descending = || {
            sorted
                .get_or_init(|| order::in_order(cal, &order::descending(score)))
                .as_slice()
        };
        self.columns
            .iter()
            .map(|f| {
                let value = f.column.estimate(by, &expected, &descending);
                let realized = truth.and_then(|t| f.column.realized(by, t, predicted, score));
                let e = record(
                    value,
                    f.error.at(predicted.len()),
                    realized,
                    f.thresholds,
                    f.limits,
                );
                (f.column.name(), e)
            })
            .collect()
    }
}
