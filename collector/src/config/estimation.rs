//! A model's performance estimation before its labels arrive (NannyML's
//! CBPE for classifiers, DLE for regression), as written in the configuration: where the reference holds the
//! targets and the model's outputs, and what to estimate; and its
//! multivariate drift by data reconstruction. DESIGN.md "Estimated
//! performance".

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::Task;
use crate::report::estimator::{self, Asked, Options, Outputs};

/// The `estimation:` block of a model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEstimation {
    /// Rows with targets and the model's outputs on them (CSV or Parquet);
    /// the model's reference when absent.
    pub reference: Option<PathBuf>,
    /// The column of actual classes (regression: values).
    pub target: String,
    /// The column of predicted classes (regression: values).
    pub prediction: String,
    /// Binary: the column with the positive class's probability.
    pub score: Option<String>,
    /// Multiclass: class → the column with its probability.
    #[serde(default)]
    pub probabilities: BTreeMap<String, String>,
    /// Regression: DLE's nanny models, ONNX files with `driftwatch.nanny`
    /// metadata (examples/regression/train_nanny_models.py).
    #[serde(default)]
    pub nanny_models: Vec<PathBuf>,
    /// Reference rows per chunk (thresholds come from the reference's chunks).
    pub chunk_size: Option<usize>,
    /// Reference chunks (default 10).
    pub chunk_number: Option<usize>,
    /// Reference chunks by calendar period of `timestamp`: min, h, D, W,
    /// M, Q or Y.
    pub chunk_period: Option<String>,
    /// The reference's timestamp column, for `chunk_period`.
    pub timestamp: Option<String>,
    /// Metrics to estimate (default: roc_auc, f1, precision, recall,
    /// specificity, accuracy).
    pub metrics: Option<Vec<String>>,
    /// `none` (counts), `all`, `true` or `pred`.
    pub normalize_confusion_matrix: Option<String>,
    /// The value of each cell, `[[TN, FP], [FN, TP]]` (binary) or a row
    /// per actual class, a column per predicted class (multiclass, the
    /// classes in sorted order).
    pub business_value_matrix: Option<Vec<Vec<f64>>>,
    /// `per_prediction`: business value per prediction, not per window.
    pub normalize_business_value: Option<String>,
}

impl RawEstimation {
    /// The estimator's options for a model of `task`; `Err` says what is
    /// wrong (the field named).
    pub fn options(&self, task: Task, positive_class: &str) -> Result<Options, String> {
        let outputs = match (task, &self.score, self.probabilities.is_empty()) {
            (Task::BinaryClassification, Some(score), true) => Outputs::Score {
                column: score.clone(),
                positive_class: positive_class.to_string(),
            },
            (Task::BinaryClassification, _, _) => {
                return Err("a binary model's estimation needs `score` (and no `probabilities`)".into())
            }
            (Task::MulticlassClassification, None, false) if self.probabilities.len() >= 2 => {
                Outputs::Probabilities(
                    self.probabilities
                        .iter()
                        .map(|(c, col)| (c.clone(), col.clone()))
                        .collect(),
                )
            }
            (Task::MulticlassClassification, _, _) => {
                return Err("a multiclass model's estimation needs `probabilities` with a column for each of at least 2 classes (and no `score`)".into())
            }
            (Task::Regression, None, true) if !self.nanny_models.is_empty() => Outputs::Value {
                nanny_models: self.nanny_models.clone(),
                metrics: self.metrics.clone(),
            },
            (Task::Regression, _, _) => {
                return Err("a regression model's estimation (DLE) needs `nanny_models` (and no `score` or `probabilities`)".into())
            }
        };
        if !matches!(task, Task::Regression) && !self.nanny_models.is_empty() {
            return Err("`nanny_models` are for a regression model (DLE)".into());
        }
        if self.chunk_period.is_some() != self.timestamp.is_some() {
            return Err("chunk_period and timestamp go together".into());
        }
        let per_prediction = match self.normalize_business_value.as_deref() {
            None => false,
            Some("per_prediction") => true,
            Some(other) => {
                return Err(format!(
                    "normalize_business_value is per_prediction or absent, not {other:?}"
                ))
            }
        };
        let matrix: Option<Vec<f64>> = match &self.business_value_matrix {
            None => None,
            Some(rows) if rows.iter().any(|r| r.len() != rows.len()) => {
                return Err("business_value_matrix must be square: a row per actual class, a value per predicted class".into())
            }
            Some(rows) => Some(rows.iter().flatten().copied().collect()),
        };
        let settings = estimator::settings(&Asked {
            chunk_size: self.chunk_size,
            chunk_number: self.chunk_number,
            chunk_period: self.chunk_period.as_deref(),
            metrics: self.metrics.as_deref(),
            normalize_confusion_matrix: self.normalize_confusion_matrix.as_deref(),
            business_value_matrix: matrix.as_deref(),
            per_prediction,
            regression: matches!(task, Task::Regression),
        })?;
        Ok(Options {
            target: self.target.clone(),
            prediction: self.prediction.clone(),
            outputs,
            settings,
            timestamp: self.timestamp.clone(),
        })
    }
}

/// Checks a model's `estimation:` block without loading its reference.
pub fn check(
    at: &str,
    task: Task,
    positive_class: &str,
    estimation: Option<&RawEstimation>,
    errors: &mut Vec<String>,
) {
    let Some(e) = estimation else { return };
    if let Err(why) = e.options(task, positive_class) {
        errors.push(format!("{at}.estimation: {why}"));
    }
    if let Some(path) = e.reference.as_ref().filter(|p| !p.exists()) {
        errors.push(format!(
            "{at}.estimation.reference: {} does not exist",
            path.display()
        ));
    }
    for (i, path) in e.nanny_models.iter().enumerate() {
        if !path.exists() {
            errors.push(format!(
                "{at}.estimation.nanny_models[{i}]: {} does not exist",
                path.display()
            ));
        }
    }
}

/// The `multivariate:` block of a model: drift by data reconstruction
/// (NannyML's PCA method) over some of its features.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMultivariate {
    /// The features reconstructed (default: every feature).
    pub columns: Option<Vec<String>>,
    /// Reference rows per chunk (its thresholds come from the chunks).
    pub chunk_size: Option<usize>,
    /// Reference chunks (default 10).
    pub chunk_number: Option<usize>,
}

impl RawMultivariate {
    /// How the reference is chunked for the thresholds; `Err` says what
    /// is wrong.
    pub fn chunking(&self) -> Result<crate::report::multivariate::Chunking, String> {
        crate::report::multivariate::chunking(self.chunk_size, self.chunk_number)
    }
}

/// The `segments:` block of a model: drift per value of some of its
/// categorical features (`report --segment`), the reference's `top` most
/// frequent values a segment each, the rest pooled as `__other__`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSegments {
    /// Categorical features to segment by.
    pub columns: Vec<String>,
    /// Segments per column (default 10).
    #[serde(default = "default_top")]
    pub top: usize,
}

fn default_top() -> usize {
    crate::report::segments::DEFAULT_TOP
}
