//! An estimator of a classifier's performance fitted on a reference data
//! set (NannyML's CBPE, `stats::estimation` and `stats::multiclass`):
//! the columns read and checked as `driftwatch performance` reads them,
//! data sets estimated chunk by chunk, and a live window's outputs as one
//! chunk (`Estimator::row`, `Estimator::estimate_rows`).

use driftwatch_protocol::Output;
use polars::prelude::*;
use serde_json::{json, Value};

use super::load::Dataset;
use crate::stats::cbpe::{BusinessValue, Normalize};
use crate::stats::estimation::{Chunking, Estimate, Estimates, Fitted, Metric, Rows, Settings};
use crate::stats::multiclass::{self, ClassRows};

/// What the model outputs: the probability of the positive class
/// (binary), or a probability column per class (multiclass).
#[derive(Debug, Clone)]
pub enum Outputs {
    Score {
        column: String,
        positive_class: String,
    },
    Probabilities(Vec<(String, String)>),
}

/// What to estimate and from which columns.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: String,
    pub prediction: String,
    pub outputs: Outputs,
    pub settings: Settings,
}

impl Options {
    /// The classes of a multiclass model, in order (none for binary).
    pub fn classes(&self) -> Vec<String> {
        match &self.outputs {
            Outputs::Score { .. } => Vec::new(),
            Outputs::Probabilities(columns) => columns.iter().map(|(c, _)| c.clone()).collect(),
        }
    }
}

/// What a user asked of the estimator, as `driftwatch performance`'s
/// flags and a model's `estimation:` block both say it.
#[derive(Debug, Clone, Default)]
pub struct Asked<'a> {
    pub chunk_size: Option<usize>,
    pub chunk_number: Option<usize>,
    pub metrics: Option<&'a [String]>,
    /// `none`, `all`, `true` or `pred`.
    pub normalize_confusion_matrix: Option<&'a str>,
    /// The business value of TN, FP, FN and TP.
    pub business_value_matrix: Option<[f64; 4]>,
    pub per_prediction: bool,
}

/// The estimator's settings; `Err` says what is wrong.
pub fn settings(a: &Asked<'_>) -> Result<Settings, String> {
    let chunking = match (a.chunk_size, a.chunk_number) {
        (Some(0), _) | (_, Some(0)) => return Err("chunks need at least one row".into()),
        (Some(_), Some(_)) => return Err("give a chunk size or a chunk number, not both".into()),
        (Some(s), _) => Chunking::Size(s),
        (_, Some(k)) => Chunking::Number(k),
        _ => Chunking::Number(10),
    };
    let mut settings = Settings::new(chunking);
    if let Some(list) = a.metrics {
        settings.metrics = list
            .iter()
            .map(|m| {
                Metric::parse(m).ok_or_else(|| {
                    let known: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                    format!("unknown metric {m:?}; CBPE has {}", known.join(", "))
                })
            })
            .collect::<Result<_, _>>()?;
    }
    settings.normalize = match a.normalize_confusion_matrix.unwrap_or("none") {
        "none" => Normalize::None,
        "all" => Normalize::All,
        "true" => Normalize::True,
        "pred" => Normalize::Pred,
        other => {
            return Err(format!(
                "the confusion matrix is normalized by none, all, true or pred, not {other:?}"
            ))
        }
    };
    settings.business_value = match a.business_value_matrix {
        None => None,
        Some(v) if v.iter().all(|x| x.is_finite()) => Some(BusinessValue {
            matrix: [[v[0], v[1]], [v[2], v[3]]],
            per_prediction: a.per_prediction,
        }),
        Some(_) => return Err("the business value matrix must hold finite numbers".into()),
    };
    if settings.metrics.contains(&Metric::BusinessValue) && settings.business_value.is_none() {
        return Err("business_value needs the value of each cell: TN, FP, FN, TP".into());
    }
    Ok(settings)
}

fn column(data: &Dataset, name: &str) -> Result<Series, String> {
    data.series(name)?.ok_or_else(|| {
        format!(
            "{}: no column {name:?} (it has {})",
            data.path().display(),
            data.column_names().join(", ")
        )
    })
}

/// A score column: finite numbers in [0, 1], none missing.
fn scores(data: &Dataset, name: &str) -> Result<Vec<f64>, String> {
    let s = column(data, name)?;
    let s = s
        .cast(&DataType::Float64)
        .map_err(|_| format!("{}: column {name:?} is not numeric", data.path().display()))?;
    let values: Vec<Option<f64>> = s.f64().map_err(|e| e.to_string())?.iter().collect();
    let mut out = Vec::with_capacity(values.len());
    for (row, v) in values.into_iter().enumerate() {
        match v {
            Some(x) if (0.0..=1.0).contains(&x) => out.push(x),
            Some(x) => {
                return Err(format!(
                    "{}: column {name:?}, row {row}: {x} is not a probability in [0, 1]",
                    data.path().display()
                ))
            }
            None => {
                return Err(format!(
                    "{}: column {name:?}, row {row}: missing score",
                    data.path().display()
                ))
            }
        }
    }
    Ok(out)
}

/// A class column as text per row (`None`: missing); numbers as they are
/// written (`1`, not `1.0`, for whole numbers).
fn labels(data: &Dataset, name: &str) -> Result<Vec<Option<String>>, String> {
    let s = column(data, name)?;
    if s.dtype().is_float() {
        let s = s.cast(&DataType::Float64).map_err(|e| e.to_string())?;
        return Ok(s
            .f64()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| {
                v.map(|x| {
                    if x.fract() == 0.0 {
                        format!("{x:.0}")
                    } else {
                        x.to_string()
                    }
                })
            })
            .collect());
    }
    if let Ok(b) = s.bool() {
        return Ok(b
            .iter()
            .map(|v| v.map(|x| u8::from(x).to_string()))
            .collect());
    }
    let s = s.cast(&DataType::String).map_err(|e| e.to_string())?;
    Ok(s.str()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

/// Whether a class label is the positive class: the same text, the same
/// number, or both a spelling of true.
fn positive(value: &str, positive: &str) -> bool {
    let truthy = |v: &str| matches!(v, "1" | "true" | "True");
    value == positive
        || (truthy(positive) && truthy(value))
        || matches!((value.parse::<f64>(), positive.parse::<f64>()), (Ok(a), Ok(b)) if a == b)
}

/// A class column as an index into `classes` per row (`None`: missing);
/// a value outside the classes is an error naming it.
fn class_indices(
    data: &Dataset,
    name: &str,
    classes: &[String],
) -> Result<Vec<Option<usize>>, String> {
    labels(data, name)?
        .into_iter()
        .enumerate()
        .map(|(row, v)| match v {
            None => Ok(None),
            Some(v) => classes.iter().position(|c| *c == v).map(Some).ok_or_else(|| {
                format!(
                    "{}: column {name:?}, row {row}: class {v:?} has no probability column (--probabilities names {})",
                    data.path().display(),
                    classes.join(", ")
                )
            }),
        })
        .collect()
}

fn complete<T>(values: Vec<Option<T>>, data: &Dataset, name: &str) -> Result<Vec<T>, String> {
    values
        .into_iter()
        .enumerate()
        .map(|(row, v)| {
            v.ok_or_else(|| {
                format!(
                    "{}: column {name:?}, row {row}: missing value",
                    data.path().display()
                )
            })
        })
        .collect()
}

/// The analysis targets, if the column is there and complete (realized
/// metrics); a warning when it is there with gaps.
fn optional_truth<T>(
    analysis: &Dataset,
    target: &str,
    read: impl Fn() -> Result<Vec<Option<T>>, String>,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<T>>, String> {
    if analysis.series(target)?.is_none() {
        return Ok(None);
    }
    let t = read()?;
    if t.iter().all(Option::is_some) {
        return Ok(Some(t.into_iter().flatten().collect()));
    }
    warnings.push(format!(
        "the analysis target {target:?} has missing values: realized metrics are left out"
    ));
    Ok(None)
}

/// Per class (sorted), its probability column; rows must sum to 1.
fn probabilities(data: &Dataset, columns: &[(String, String)]) -> Result<Vec<Vec<f64>>, String> {
    let p: Vec<Vec<f64>> = columns
        .iter()
        .map(|(_, c)| scores(data, c))
        .collect::<Result<_, _>>()?;
    for row in 0..p.first().map_or(0, Vec::len) {
        let sum: f64 = p.iter().map(|c| c[row]).sum();
        // numpy.allclose(1, sum), as scikit-learn checks it.
        if (sum - 1.0).abs() > 1e-8 + 1e-5 {
            return Err(format!(
                "{}: row {row}: the class probabilities ({}) sum to {sum}, not 1",
                data.path().display(),
                columns
                    .iter()
                    .map(|(_, c)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(p)
}

/// A data set's rows as the task reads them.
enum Parsed {
    Binary {
        score: Vec<f64>,
        predicted: Vec<bool>,
        truth: Option<Vec<bool>>,
    },
    Multiclass {
        probabilities: Vec<Vec<f64>>,
        predicted: Vec<usize>,
        truth: Option<Vec<usize>>,
    },
}

/// Whether a data set must have complete targets (a reference) or may
/// lack them (an analysis: realized values only where all are known).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Targets {
    Required,
    Optional,
}

fn parse(
    data: &Dataset,
    o: &Options,
    targets: Targets,
    warnings: &mut Vec<String>,
) -> Result<Parsed, String> {
    match &o.outputs {
        Outputs::Score {
            column,
            positive_class,
        } => {
            let as_bool = |name: &str| -> Result<Vec<Option<bool>>, String> {
                Ok(labels(data, name)?
                    .into_iter()
                    .map(|v| v.map(|x| positive(&x, positive_class)))
                    .collect())
            };
            let score = scores(data, column)?;
            let predicted = complete(as_bool(&o.prediction)?, data, &o.prediction)?;
            let truth = match targets {
                Targets::Required => Some(complete(as_bool(&o.target)?, data, &o.target)?),
                Targets::Optional => {
                    optional_truth(data, &o.target, || as_bool(&o.target), warnings)?
                }
            };
            Ok(Parsed::Binary {
                score,
                predicted,
                truth,
            })
        }
        Outputs::Probabilities(columns) => {
            let classes: Vec<String> = columns.iter().map(|(c, _)| c.clone()).collect();
            let probabilities = probabilities(data, columns)?;
            let predicted = complete(
                class_indices(data, &o.prediction, &classes)?,
                data,
                &o.prediction,
            )?;
            let read_truth = || class_indices(data, &o.target, &classes);
            let truth = match targets {
                Targets::Required => Some(complete(read_truth()?, data, &o.target)?),
                Targets::Optional => optional_truth(data, &o.target, read_truth, warnings)?,
            };
            Ok(Parsed::Multiclass {
                probabilities,
                predicted,
                truth,
            })
        }
    }
}

/// One live output as the estimator takes it: the predicted class (for a
/// binary model 1 when it is the positive class) and the probabilities
/// (the positive class's, or one per class in the fitted order).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoredRow {
    pub predicted: u32,
    pub p: Box<[f64]>,
}

/// A fitted estimator of a binary or multiclass classifier.
#[derive(Debug, Clone)]
pub enum Estimator {
    Binary {
        fitted: Fitted,
        positive_class: String,
    },
    Multiclass(multiclass::Fitted),
}

impl Estimator {
    /// Fits on the reference (complete targets, every class present).
    /// `Err` names the file and the column at fault.
    pub fn fit(reference: &Dataset, o: &Options) -> Result<Estimator, String> {
        let at = |e: String| format!("{}: {e}", reference.path().display());
        match parse(reference, o, Targets::Required, &mut Vec::new())? {
            Parsed::Binary {
                score,
                predicted,
                truth,
            } => {
                let truth = truth.unwrap_or_default();
                if truth.iter().all(|&t| t) || truth.iter().all(|&t| !t) {
                    return Err(at(format!(
                        "the target {:?} has one class only; CBPE needs both in the reference",
                        o.target
                    )));
                }
                let rows = Rows {
                    score: &score,
                    predicted: &predicted,
                    truth: Some(&truth),
                };
                let positive_class = match &o.outputs {
                    Outputs::Score { positive_class, .. } => positive_class.clone(),
                    Outputs::Probabilities(_) => String::new(),
                };
                Ok(Estimator::Binary {
                    fitted: Fitted::fit(&rows, &o.settings).map_err(at)?,
                    positive_class,
                })
            }
            Parsed::Multiclass {
                probabilities,
                predicted,
                truth,
            } => {
                let classes = o.classes();
                let truth = truth.unwrap_or_default();
                let missing: Vec<&str> = (0..classes.len())
                    .filter(|c| !truth.contains(c))
                    .map(|c| classes[c].as_str())
                    .collect();
                if !missing.is_empty() {
                    return Err(at(format!(
                        "the target {:?} never has class {}; CBPE needs every class in the reference",
                        o.target,
                        missing.join(", ")
                    )));
                }
                let rows = ClassRows {
                    probabilities: &probabilities,
                    predicted: &predicted,
                    truth: Some(&truth),
                };
                Ok(Estimator::Multiclass(
                    multiclass::Fitted::fit(&classes, &rows, &o.settings).map_err(at)?,
                ))
            }
        }
    }

    /// Every chunk of a data set read with the same columns (targets
    /// optional: realized values where they are all known).
    pub fn estimate(
        &self,
        data: &Dataset,
        o: &Options,
        warnings: &mut Vec<String>,
    ) -> Result<Estimates, String> {
        Ok(match (self, parse(data, o, Targets::Optional, warnings)?) {
            (
                Estimator::Binary { fitted, .. },
                Parsed::Binary {
                    score,
                    predicted,
                    truth,
                },
            ) => fitted.estimate(&Rows {
                score: &score,
                predicted: &predicted,
                truth: truth.as_deref(),
            }),
            (
                Estimator::Multiclass(fitted),
                Parsed::Multiclass {
                    probabilities,
                    predicted,
                    truth,
                },
            ) => fitted.estimate(&ClassRows {
                probabilities: &probabilities,
                predicted: &predicted,
                truth: truth.as_deref(),
            }),
            _ => return Err("the data set was read for another task than the estimator's".into()),
        })
    }

    pub fn task(&self) -> &'static str {
        match self {
            Estimator::Binary { .. } => "binary",
            Estimator::Multiclass(_) => "multiclass",
        }
    }

    /// Whether the scores were calibrated: a boolean, or for multiclass
    /// the classes calibrated.
    pub fn calibrated(&self) -> Value {
        match self {
            Estimator::Binary { fitted, .. } => json!(fitted.calibrated),
            Estimator::Multiclass(fitted) => {
                let classes: Vec<&String> = fitted
                    .classes
                    .iter()
                    .zip(&fitted.calibrated)
                    .filter(|(_, &c)| c)
                    .map(|(name, _)| name)
                    .collect();
                json!(classes)
            }
        }
    }

    /// A live output as a row; `None` for a failed call, or an output
    /// without a predicted class and probabilities the estimator can use
    /// (a score outside [0, 1], a class it was not fitted on, a missing
    /// class probability).
    pub fn row(&self, output: &Output) -> Option<ScoredRow> {
        if output.error.is_some() {
            return None;
        }
        let probability = |x: f64| (0.0..=1.0).contains(&x).then_some(x);
        let label = output.label.as_deref()?;
        match self {
            Estimator::Binary { positive_class, .. } => Some(ScoredRow {
                predicted: u32::from(positive(label, positive_class)),
                p: Box::new([probability(output.score?)?]),
            }),
            Estimator::Multiclass(fitted) => {
                let map = output.probabilities.as_ref()?;
                let p: Option<Box<[f64]>> = fitted
                    .classes
                    .iter()
                    .map(|c| map.get(c).copied().and_then(probability))
                    .collect();
                Some(ScoredRow {
                    predicted: fitted.classes.iter().position(|c| c == label)? as u32,
                    p: p?,
                })
            }
        }
    }

    /// A live window's rows estimated as one chunk.
    pub fn estimate_rows(&self, rows: &[ScoredRow]) -> Vec<(String, Estimate)> {
        match self {
            Estimator::Binary { fitted, .. } => {
                let score: Vec<f64> = rows.iter().map(|r| r.p[0]).collect();
                let predicted: Vec<bool> = rows.iter().map(|r| r.predicted == 1).collect();
                fitted.estimate_all(&Rows {
                    score: &score,
                    predicted: &predicted,
                    truth: None,
                })
            }
            Estimator::Multiclass(fitted) => {
                let probabilities: Vec<Vec<f64>> = (0..fitted.classes.len())
                    .map(|c| rows.iter().map(|r| r.p[c]).collect())
                    .collect();
                let predicted: Vec<usize> = rows.iter().map(|r| r.predicted as usize).collect();
                fitted.estimate_all(&ClassRows {
                    probabilities: &probabilities,
                    predicted: &predicted,
                    truth: None,
                })
            }
        }
    }
}
