//! `driftwatch performance`: performance estimated before the labels
//! arrive, offline, as NannyML 0.13.1's CBPE computes it (`stats::estimation`):
//! a reference with targets and an analysis set read like `report` reads
//! them, the JSON of DESIGN.md ("Estimated performance"). Binary
//! classifiers for now.

use std::path::PathBuf;

use polars::prelude::*;
use serde_json::{json, Value};

use super::load::{self, Dataset};
use crate::stats::cbpe::{BusinessValue, Normalize};
use crate::stats::estimation::{chunks, Chunking, Estimates, Fitted, Metric, Rows, Settings};
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

/// Below this many reference chunks ±3σ thresholds false-alarm.
const FEW_CHUNKS: usize = 6;

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

/// Fits on the reference and estimates both data sets: whether scores
/// were calibrated (per class for multiclass) and the estimates.
type Fitted2 = (Value, Estimates, Estimates);

fn binary(
    reference: &Dataset,
    analysis: &Dataset,
    o: &Options,
    column: &str,
    positive_class: &str,
    warnings: &mut Vec<String>,
) -> Result<Fitted2, String> {
    let as_bool = |data: &Dataset, name: &str| -> Result<Vec<Option<bool>>, String> {
        Ok(labels(data, name)?
            .into_iter()
            .map(|v| v.map(|x| positive(&x, positive_class)))
            .collect())
    };
    let ref_score = scores(reference, column)?;
    let ref_pred = complete(as_bool(reference, &o.prediction)?, reference, &o.prediction)?;
    let ref_truth = complete(as_bool(reference, &o.target)?, reference, &o.target)?;
    if ref_truth.iter().all(|&t| t) || ref_truth.iter().all(|&t| !t) {
        return Err(format!(
            "{}: the target {:?} has one class only; CBPE needs both in the reference",
            reference.path().display(),
            o.target
        ));
    }
    let ana_score = scores(analysis, column)?;
    let ana_pred = complete(as_bool(analysis, &o.prediction)?, analysis, &o.prediction)?;
    let ana_truth = optional_truth(
        analysis,
        &o.target,
        || as_bool(analysis, &o.target),
        warnings,
    )?;
    let ref_rows = Rows {
        score: &ref_score,
        predicted: &ref_pred,
        truth: Some(&ref_truth),
    };
    let fitted = Fitted::fit(&ref_rows, &o.settings)
        .map_err(|e| format!("{}: {e}", reference.path().display()))?;
    let ana_rows = Rows {
        score: &ana_score,
        predicted: &ana_pred,
        truth: ana_truth.as_deref(),
    };
    Ok((
        json!(fitted.calibrated),
        fitted.estimate(&ref_rows),
        fitted.estimate(&ana_rows),
    ))
}

fn multiclass(
    reference: &Dataset,
    analysis: &Dataset,
    o: &Options,
    columns: &[(String, String)],
    warnings: &mut Vec<String>,
) -> Result<Fitted2, String> {
    let classes: Vec<String> = columns.iter().map(|(c, _)| c.clone()).collect();
    let ref_p = probabilities(reference, columns)?;
    let ref_pred = complete(
        class_indices(reference, &o.prediction, &classes)?,
        reference,
        &o.prediction,
    )?;
    let ref_truth = complete(
        class_indices(reference, &o.target, &classes)?,
        reference,
        &o.target,
    )?;
    let missing: Vec<&str> = (0..classes.len())
        .filter(|c| !ref_truth.contains(c))
        .map(|c| classes[c].as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{}: the target {:?} never has class {}; CBPE needs every class in the reference",
            reference.path().display(),
            o.target,
            missing.join(", ")
        ));
    }
    let ana_p = probabilities(analysis, columns)?;
    let ana_pred = complete(
        class_indices(analysis, &o.prediction, &classes)?,
        analysis,
        &o.prediction,
    )?;
    let ana_truth = optional_truth(
        analysis,
        &o.target,
        || class_indices(analysis, &o.target, &classes),
        warnings,
    )?;
    let ref_rows = ClassRows {
        probabilities: &ref_p,
        predicted: &ref_pred,
        truth: Some(&ref_truth),
    };
    let fitted = multiclass::Fitted::fit(&classes, &ref_rows, &o.settings)
        .map_err(|e| format!("{}: {e}", reference.path().display()))?;
    let ana_rows = ClassRows {
        probabilities: &ana_p,
        predicted: &ana_pred,
        truth: ana_truth.as_deref(),
    };
    let calibrated: Vec<&String> = classes
        .iter()
        .zip(&fitted.calibrated)
        .filter(|(_, &c)| c)
        .map(|(name, _)| name)
        .collect();
    Ok((
        json!(calibrated),
        fitted.estimate(&ref_rows),
        fitted.estimate(&ana_rows),
    ))
}

/// Estimates every chunk of the reference and the analysis; the JSON of
/// DESIGN.md. `Err` names the file and column at fault.
pub fn estimate(reference: &Dataset, analysis: &Dataset, o: &Options) -> Result<Value, String> {
    let mut warnings = Vec::new();
    let reference_chunks = chunks(reference.rows(), o.settings.chunking).map_or(0, |c| c.len());
    if reference_chunks < 2 {
        return Err(format!(
            "the reference ({} rows) makes {reference_chunks} chunk(s); thresholds need at least 2",
            reference.rows()
        ));
    }
    if reference_chunks < FEW_CHUNKS {
        warnings.push(format!(
            "only {reference_chunks} reference chunks: thresholds at ±3 standard deviations of so few chunks false-alarm; use at least {FEW_CHUNKS}"
        ));
    }
    let (task, (calibrated, on_reference, on_analysis)) = match &o.outputs {
        Outputs::Score {
            column,
            positive_class,
        } => (
            "binary",
            binary(
                reference,
                analysis,
                o,
                column,
                positive_class,
                &mut warnings,
            )?,
        ),
        Outputs::Probabilities(columns) => (
            "multiclass",
            multiclass(reference, analysis, o, columns, &mut warnings)?,
        ),
    };
    let mut out = Vec::new();
    for (period, estimates) in [("reference", on_reference), ("analysis", on_analysis)] {
        for (chunk, columns) in estimates {
            let m: serde_json::Map<String, Value> = columns
                .into_iter()
                .map(|(name, e)| {
                    let record = json!({
                        "value": e.value, "sampling_error": e.sampling_error,
                        "lower_confidence_boundary": e.lower_confidence_boundary,
                        "upper_confidence_boundary": e.upper_confidence_boundary,
                        "lower_threshold": e.lower_threshold, "upper_threshold": e.upper_threshold,
                        "alert": e.alert, "realized": e.realized,
                    });
                    (name, record)
                })
                .collect();
            out.push(json!({
                "key": chunk.key, "start_index": chunk.start, "end_index": chunk.end,
                "period": period, "metrics": m,
            }));
        }
    }
    let mut result = json!({
        "method": "cbpe", "task": task, "reference_chunks": reference_chunks,
        "chunks": out, "warnings": warnings,
    });
    match calibrated {
        Value::Bool(b) => result["calibrated"] = json!(b),
        classes => {
            result["calibrated"] = json!(classes.as_array().is_some_and(|c| !c.is_empty()));
            result["calibrated_classes"] = classes;
        }
    }
    Ok(result)
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Task {
    Binary,
    Multiclass,
    Regression,
}

/// `driftwatch performance`'s flags (DESIGN.md).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reference dataset with targets (.csv or .parquet).
    #[arg(long)]
    reference: PathBuf,
    /// Analysis dataset (.csv or .parquet); targets optional.
    #[arg(long)]
    analysis: PathBuf,
    #[arg(long, value_enum)]
    task: Task,
    /// The target (ground truth) column.
    #[arg(long)]
    target: String,
    /// The predicted class column.
    #[arg(long)]
    prediction: String,
    /// The column with the probability of the positive class (binary).
    #[arg(long)]
    score: Option<String>,
    /// The class `--score` is the probability of.
    #[arg(long, default_value = "1")]
    positive_class: String,
    /// Class probability columns (multiclass): CLASS=COLUMN, comma separated.
    #[arg(long, value_delimiter = ',')]
    probabilities: Vec<String>,
    /// The nanny model (regression, DLE): an ONNX file.
    #[arg(long)]
    nanny_model: Option<PathBuf>,
    /// Rows per chunk.
    #[arg(long, conflicts_with_all = ["chunk_number", "chunk_period"])]
    chunk_size: Option<usize>,
    /// Chunks per dataset (default 10).
    #[arg(long, conflicts_with = "chunk_period")]
    chunk_number: Option<usize>,
    /// Chunks by time period (with --timestamp).
    #[arg(long)]
    chunk_period: Option<String>,
    #[arg(long)]
    timestamp: Option<String>,
    /// Metrics to estimate, comma separated (default: roc_auc, f1,
    /// precision, recall, specificity, accuracy; also confusion_matrix,
    /// business_value).
    #[arg(long, value_delimiter = ',')]
    metrics: Option<Vec<String>>,
    /// How confusion-matrix cells are normalized.
    #[arg(long, value_parser = ["none", "all", "true", "pred"], default_value = "none")]
    normalize_confusion_matrix: String,
    /// The value of each confusion-matrix cell for business_value (binary):
    /// TN,FP,FN,TP.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    business_value_matrix: Option<Vec<f64>>,
    /// Business value per prediction instead of the chunk's total.
    #[arg(long, value_parser = ["per_prediction"])]
    normalize_business_value: Option<String>,
    #[arg(long, value_parser = ["json", "html"], default_value = "json")]
    format: String,
    /// Write the result here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The model's outputs from the flags of its task.
fn outputs(args: &Args) -> Result<Outputs, String> {
    match args.task {
        Task::Binary => {
            if !args.probabilities.is_empty() {
                return Err("--probabilities is for a multiclass task; a binary task takes --score".into());
            }
            Ok(Outputs::Score {
                column: args
                    .score
                    .clone()
                    .ok_or("a binary task needs --score (the probability of --positive-class)")?,
                positive_class: args.positive_class.clone(),
            })
        }
        Task::Multiclass => {
            if args.score.is_some() {
                return Err("--score is for a binary task; a multiclass task takes --probabilities CLASS=COLUMN,...".into());
            }
            let mut pairs = Vec::new();
            for p in &args.probabilities {
                let (class, column) = p
                    .split_once('=')
                    .filter(|(c, col)| !c.is_empty() && !col.is_empty())
                    .ok_or_else(|| format!("--probabilities: {p:?} is not CLASS=COLUMN"))?;
                if pairs.iter().any(|(c, _): &(String, String)| c == class) {
                    return Err(format!("--probabilities names class {class:?} twice"));
                }
                pairs.push((class.to_string(), column.to_string()));
            }
            if pairs.len() < 2 {
                return Err("a multiclass task needs --probabilities with a column for each of at least 2 classes".into());
            }
            // NannyML orders the classes by name.
            pairs.sort();
            Ok(Outputs::Probabilities(pairs))
        }
        Task::Regression => Err("--task regression (DLE) is not built yet (binary and multiclass CBPE are; see the README)".into()),
    }
}

/// The estimator's settings from the flags.
fn settings(args: &Args) -> Result<Settings, String> {
    let chunking = match (args.chunk_size, args.chunk_number) {
        (Some(0), _) | (_, Some(0)) => return Err("chunks need at least one row".into()),
        (Some(s), _) => Chunking::Size(s),
        (_, Some(k)) => Chunking::Number(k),
        _ => Chunking::Number(10),
    };
    let mut settings = Settings::new(chunking);
    if let Some(list) = &args.metrics {
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
    settings.normalize = match args.normalize_confusion_matrix.as_str() {
        "all" => Normalize::All,
        "true" => Normalize::True,
        "pred" => Normalize::Pred,
        _ => Normalize::None,
    };
    settings.business_value = match &args.business_value_matrix {
        None => None,
        Some(v) if v.len() == 4 && v.iter().all(|x| x.is_finite()) => Some(BusinessValue {
            matrix: [[v[0], v[1]], [v[2], v[3]]],
            per_prediction: args.normalize_business_value.is_some(),
        }),
        Some(_) => return Err("--business-value-matrix takes four numbers: TN,FP,FN,TP".into()),
    };
    if settings.metrics.contains(&Metric::BusinessValue) && settings.business_value.is_none() {
        return Err("business_value needs --business-value-matrix TN,FP,FN,TP".into());
    }
    Ok(settings)
}

/// Runs the command: the JSON text for standard output (`None` when it
/// went to `--out`); warnings to standard error.
pub fn run(args: Args) -> Result<Option<String>, String> {
    let not_yet = |what: &str| {
        format!("{what} is not built yet (binary and multiclass CBPE are; see the README)")
    };
    if args.nanny_model.is_some() {
        return Err("--nanny-model is for a regression task (DLE)".into());
    }
    let outputs = outputs(&args)?;
    if args.chunk_period.is_some() || args.timestamp.is_some() {
        return Err(not_yet("--chunk-period"));
    }
    if args.format == "html" {
        return Err(not_yet("--format html"));
    }
    let settings = settings(&args)?;
    let (reference, analysis) = rayon::join(
        || load::read(&args.reference),
        || load::read(&args.analysis),
    );
    let (reference, analysis) = (
        reference.map_err(|e| e.to_string())?,
        analysis.map_err(|e| e.to_string())?,
    );
    let options = Options {
        target: args.target,
        prediction: args.prediction,
        outputs,
        settings,
    };
    let result = estimate(&reference, &analysis, &options)?;
    for w in result["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", w.as_str().unwrap_or_default());
    }
    let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())? + "\n";
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .map(|()| None)
            .map_err(|e| format!("{}: cannot write the result: {e}", path.display())),
        None => Ok(Some(text)),
    }
}
