//! An estimator of a model's performance fitted on a reference data set
//! (NannyML's CBPE for classifiers, `stats::estimation` and
//! `stats::multiclass`; its DLE for regression, `report::dle`):
//! the columns read and checked as `driftwatch performance` reads them,
//! data sets estimated chunk by chunk, and a live window's outputs as one
//! chunk (`Estimator::row`, `Estimator::estimate_rows`).

use std::path::PathBuf;

use driftwatch_protocol::{FeatureValue, Output};
use serde_json::{json, Value};

use super::columns::{
    class_indices, complete, map_labels, optional_truth, positive, probabilities, scores,
    timestamps,
};
use super::dle::{self, NannyModel, Regression};
use super::load::Dataset;
use crate::stats::cbpe::{BusinessValue, Normalize};
use crate::stats::estimation::{
    chunks, period_chunks, Chunk, Chunking, Estimate, Estimates, Fitted, Metric, Period, Rows,
    Settings,
};
use crate::stats::multiclass::{self, ClassRows};
use chrono::NaiveDateTime;

/// What the model outputs: the probability of the positive class
/// (binary), a probability column per class (multiclass), or a number
/// whose loss nanny models predict (regression).
#[derive(Debug, Clone)]
pub enum Outputs {
    Score {
        column: String,
        positive_class: String,
    },
    Probabilities(Vec<(String, String)>),
    Value {
        nanny_models: Vec<PathBuf>,
        /// DLE's metrics (default: those the models' losses serve).
        metrics: Option<Vec<String>>,
    },
}

/// What to estimate and from which columns.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: String,
    pub prediction: String,
    pub outputs: Outputs,
    pub settings: Settings,
    /// The timestamp column, for chunks by period.
    pub timestamp: Option<String>,
}

impl Options {
    /// The classes of a multiclass model, in order (none for binary).
    pub fn classes(&self) -> Vec<String> {
        match &self.outputs {
            Outputs::Score { .. } | Outputs::Value { .. } => Vec::new(),
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
    /// A pandas offset: `min`, `h`, `D`, `W`, `M`, `Q`, `Y`.
    pub chunk_period: Option<&'a str>,
    pub metrics: Option<&'a [String]>,
    /// `none`, `all`, `true` or `pred`.
    pub normalize_confusion_matrix: Option<&'a str>,
    /// The business value of each confusion-matrix cell, row by row
    /// (actual class, then predicted): TN, FP, FN, TP for a binary model,
    /// K × K values for a multiclass one (classes in sorted order).
    pub business_value_matrix: Option<&'a [f64]>,
    pub per_prediction: bool,
    /// A regression model: `metrics` are DLE's (`report::dle::load`).
    pub regression: bool,
}

/// The estimator's settings; `Err` says what is wrong.
pub fn settings(a: &Asked<'_>) -> Result<Settings, String> {
    let chunking = match (a.chunk_size, a.chunk_number, a.chunk_period) {
        (Some(0), _, _) | (_, Some(0), _) => return Err("chunks need at least one row".into()),
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err("give one of a chunk size, a chunk number and a chunk period".into())
        }
        (Some(s), _, _) => Chunking::Size(s),
        (_, Some(k), _) => Chunking::Number(k),
        (_, _, Some(p)) => Chunking::Period(Period::parse(p).ok_or_else(|| {
            format!("unknown chunk period {p:?}: min, h, D, W (Monday to Sunday), M, Q or Y")
        })?),
        _ => Chunking::Number(10),
    };
    let mut settings = Settings::new(chunking);
    if let (Some(list), false) = (a.metrics, a.regression) {
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
        Some(v) if !v.iter().all(|x| x.is_finite()) => {
            return Err("the business value matrix must hold finite numbers".into())
        }
        Some(v) => Some(BusinessValue::square(v, a.per_prediction).ok_or_else(|| {
            format!(
                "the business value matrix is square (TN, FP, FN, TP for a binary model, K × K values for K classes), not {} values",
                v.len()
            )
        })?),
    };
    if settings.metrics.contains(&Metric::BusinessValue) && settings.business_value.is_none() {
        return Err("business_value needs the value of each cell: TN, FP, FN, TP".into());
    }
    Ok(settings)
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
    Regression(dle::Parsed),
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
    models: &[NannyModel],
) -> Result<Parsed, String> {
    match &o.outputs {
        Outputs::Value { .. } => {
            let truth = match (targets, dle::numbers(data, &o.target)?) {
                (_, Some(t)) => Some(t),
                (Targets::Optional, None) => None,
                (Targets::Required, None) => {
                    return Err(format!(
                        "{}: no target column {:?}",
                        data.path().display(),
                        o.target
                    ))
                }
            };
            Ok(Parsed::Regression(dle::parse(
                data,
                models,
                &o.prediction,
                truth,
            )?))
        }
        Outputs::Score {
            column,
            positive_class,
        } => {
            let as_bool = |name: &str| -> Result<Vec<Option<bool>>, String> {
                map_labels(data, name, |x| positive(x, positive_class))
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

impl Parsed {
    fn rows(&self) -> usize {
        match self {
            Parsed::Binary { predicted, .. } => predicted.len(),
            Parsed::Multiclass { predicted, .. } => predicted.len(),
            Parsed::Regression(p) => p.rows(),
        }
    }

    /// The rows in `order`.
    fn reorder(&mut self, order: &[usize]) {
        use crate::stats::order::put_in_order as pick;
        match self {
            Parsed::Binary {
                score,
                predicted,
                truth,
            } => {
                pick(score, order);
                pick(predicted, order);
                truth.iter_mut().for_each(|t| pick(t, order));
            }
            Parsed::Multiclass {
                probabilities,
                predicted,
                truth,
            } => {
                probabilities.iter_mut().for_each(|p| pick(p, order));
                pick(predicted, order);
                truth.iter_mut().for_each(|t| pick(t, order));
            }
            Parsed::Regression(p) => p.reorder(order),
        }
    }
}

/// A data set read for the task and cut into chunks: by size or number,
/// or by period (the rows put in time order first, ties kept in file
/// order).
fn read(
    data: &Dataset,
    o: &Options,
    targets: Targets,
    warnings: &mut Vec<String>,
    models: &[NannyModel],
) -> Result<(Parsed, Vec<Chunk>), String> {
    let mut parsed = parse(data, o, targets, warnings, models)?;
    let n = parsed.rows();
    let chunks = match o.settings.chunking {
        Chunking::Period(period) => {
            let column = o
                .timestamp
                .as_deref()
                .ok_or("chunks by period need a timestamp column")?;
            let times = timestamps(data, column)?;
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&i| times[i]);
            parsed.reorder(&order);
            let sorted: Vec<NaiveDateTime> = order.iter().map(|&i| times[i]).collect();
            period_chunks(&sorted, period)
        }
        c => chunks(n, c).unwrap_or_default(),
    };
    Ok((parsed, chunks))
}

/// A row's numbers, inline up to four (a binary model's score, up to four
/// class probabilities): a window of rows is copied without an
/// allocation per row.
pub type Values = smallvec::SmallVec<[f64; 4]>;

/// One live output as the estimator takes it: the predicted class (for a
/// binary model 1 when it is the positive class) and the probabilities
/// (the positive class's, or one per class in the fitted order).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoredRow {
    pub predicted: u32,
    pub p: Values,
}

/// A fitted estimator of a binary or multiclass classifier, or of a
/// regression model.
#[derive(Debug)]
pub enum Estimator {
    Binary {
        fitted: Fitted,
        positive_class: String,
    },
    Multiclass(multiclass::Fitted),
    Regression(Regression),
}

impl Estimator {
    /// Fits on the reference (complete targets, every class present).
    /// `Err` names the file and the column at fault.
    /// Also returns the reference's own chunks estimated (at least 2).
    pub fn fit(reference: &Dataset, o: &Options) -> Result<(Estimator, Estimates), String> {
        let at = |e: String| format!("{}: {e}", reference.path().display());
        let (models, metrics) = match &o.outputs {
            Outputs::Value {
                nanny_models,
                metrics,
            } => dle::load(nanny_models, metrics.as_deref())?,
            _ => Default::default(),
        };
        let (parsed, chunks) = read(reference, o, Targets::Required, &mut Vec::new(), &models)?;
        if chunks.len() < 2 {
            return Err(format!(
                "the reference ({} rows) makes {} chunk(s); thresholds need at least 2",
                parsed.rows(),
                chunks.len()
            ));
        }
        let estimator = match parsed {
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
                    _ => String::new(),
                };
                let fitted = Fitted::fit(&rows, &chunks, &o.settings).map_err(at)?;
                let estimates = fitted.estimate(&rows, &chunks);
                (
                    Estimator::Binary {
                        fitted,
                        positive_class,
                    },
                    estimates,
                )
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
                let fitted =
                    multiclass::Fitted::fit(&classes, &rows, &chunks, &o.settings).map_err(at)?;
                let estimates = fitted.estimate(&rows, &chunks);
                (Estimator::Multiclass(fitted), estimates)
            }
            Parsed::Regression(parsed) => {
                let fitted = Regression::fit(models, &metrics, &parsed, &chunks).map_err(at)?;
                let estimates = fitted.estimate(&parsed, &chunks);
                (Estimator::Regression(fitted), estimates)
            }
        };
        Ok(estimator)
    }

    /// Every chunk of a data set read with the same columns (targets
    /// optional: realized values where they are all known).
    pub fn estimate(
        &self,
        data: &Dataset,
        o: &Options,
        warnings: &mut Vec<String>,
    ) -> Result<Estimates, String> {
        let models = match self {
            Estimator::Regression(r) => r.models(),
            _ => &[],
        };
        let (parsed, chunks) = read(data, o, Targets::Optional, warnings, models)?;
        Ok(match (self, parsed) {
            (Estimator::Regression(fitted), Parsed::Regression(parsed)) => {
                fitted.estimate(&parsed, &chunks)
            }
            (
                Estimator::Binary { fitted, .. },
                Parsed::Binary {
                    score,
                    predicted,
                    truth,
                },
            ) => fitted.estimate(
                &Rows {
                    score: &score,
                    predicted: &predicted,
                    truth: truth.as_deref(),
                },
                &chunks,
            ),
            (
                Estimator::Multiclass(fitted),
                Parsed::Multiclass {
                    probabilities,
                    predicted,
                    truth,
                },
            ) => fitted.estimate(
                &ClassRows {
                    probabilities: &probabilities,
                    predicted: &predicted,
                    truth: truth.as_deref(),
                },
                &chunks,
            ),
            _ => return Err("the data set was read for another task than the estimator's".into()),
        })
    }

    pub fn task(&self) -> &'static str {
        match self {
            Estimator::Binary { .. } => "binary",
            Estimator::Multiclass(_) => "multiclass",
            Estimator::Regression(_) => "regression",
        }
    }

    /// Whether the scores were calibrated: a boolean, or for multiclass
    /// the classes calibrated (null for regression).
    pub fn calibrated(&self) -> Value {
        match self {
            Estimator::Regression(_) => Value::Null,
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
    /// `feature` gives the event's value of a feature by name (what a
    /// regression model's nanny models take).
    pub fn row(
        &self,
        feature: &dyn Fn(&str) -> Option<FeatureValue>,
        output: &Output,
    ) -> Option<ScoredRow> {
        if output.error.is_some() {
            return None;
        }
        if let Estimator::Regression(r) = self {
            return Some(ScoredRow {
                predicted: 0,
                p: Values::from_vec(r.row(feature, output.value.filter(|v| v.is_finite())?)),
            });
        }
        let probability = |x: f64| (0.0..=1.0).contains(&x).then_some(x);
        let label = output.label.as_deref()?;
        match self {
            Estimator::Binary { positive_class, .. } => Some(ScoredRow {
                predicted: u32::from(positive(label, positive_class)),
                p: smallvec::smallvec![probability(output.score?)?],
            }),
            Estimator::Multiclass(fitted) => {
                let map = output.probabilities.as_ref()?;
                let p: Option<Values> = fitted
                    .classes
                    .iter()
                    .map(|c| map.get(c).copied().and_then(probability))
                    .collect();
                Some(ScoredRow {
                    predicted: fitted.classes.iter().position(|c| c == label)? as u32,
                    p: p?,
                })
            }
            Estimator::Regression(_) => None,
        }
    }

    /// A live window's rows estimated as one chunk; `Err` when a nanny
    /// model fails to run.
    pub fn estimate_rows(&self, rows: &[ScoredRow]) -> Result<Vec<(String, Estimate)>, String> {
        Ok(match self {
            Estimator::Regression(r) => {
                let inputs: Vec<&[f64]> = rows.iter().map(|r| &r.p[..]).collect();
                r.estimate_rows(&inputs)?
            }
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
        })
    }
}
