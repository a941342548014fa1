//! `driftwatch performance`: performance estimated before the labels
//! arrive, offline, as NannyML 0.13.1's CBPE (`stats::estimation`) and
//! DLE (`stats::dle`) compute it: a reference with targets and an
//! analysis set read like `report` reads them, the JSON of DESIGN.md
//! ("Estimated performance"); binary and multiclass classifiers, and
//! regression models with nanny models (`report::estimator`).

use std::path::PathBuf;

use serde_json::{json, Value};

use super::estimator::{self, Asked, Estimator, Options, Outputs};
use super::load::{self, Dataset};
use crate::stats::estimation::Settings;

/// Below this many reference chunks ±3σ thresholds false-alarm.
const FEW_CHUNKS: usize = 6;

/// Segments of the analysis to estimate apart: the segment columns and
/// how many of each one's top reference values are a segment.
pub struct Segments<'a> {
    pub columns: &'a [String],
    pub top: usize,
}

/// Each chunk's estimates as JSON records.
fn chunks_json(period: &str, estimates: crate::stats::estimation::Estimates) -> Vec<Value> {
    estimates
        .into_iter()
        .map(|(chunk, columns)| {
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
            json!({
                "key": chunk.key, "start_index": chunk.start, "end_index": chunk.end,
                "period": period, "metrics": m,
            })
        })
        .collect()
}

/// Estimates every chunk of the reference and the analysis (and of each
/// segment of the analysis); the JSON of DESIGN.md. `Err` names the file
/// and column at fault.
pub fn estimate(
    reference: &Dataset,
    analysis: &Dataset,
    o: &Options,
    segments: &Segments<'_>,
) -> Result<Value, String> {
    let mut warnings = Vec::new();
    let (estimator, on_reference) = Estimator::fit(reference, o)?;
    let reference_chunks = on_reference.len();
    if reference_chunks < FEW_CHUNKS {
        warnings.push(format!(
            "only {reference_chunks} reference chunks: thresholds at ±3 standard deviations of so few chunks false-alarm; use at least {FEW_CHUNKS}"
        ));
    }
    let on_analysis = estimator.estimate(analysis, o, &mut warnings)?;
    let (task, calibrated) = (estimator.task(), estimator.calibrated());
    let mut out = chunks_json("reference", on_reference);
    out.extend(chunks_json("analysis", on_analysis));
    let mut by_segment = Vec::new();
    if !segments.columns.is_empty() {
        // Read whole once, for every segment column.
        let analysis = super::load::in_memory(analysis)?;
        for column in segments.columns {
            let split = super::segments::split_by(reference, &analysis, column, segments.top)?;
            for (value, rows) in split {
                let estimates = estimator.estimate(&rows, o, &mut warnings)?;
                by_segment.push(json!({
                    "column": column, "value": value, "rows": rows.rows(),
                    "chunks": chunks_json("analysis", estimates),
                }));
            }
        }
    }
    let method = if task == "regression" { "dle" } else { "cbpe" };
    let mut result = json!({
        "method": method, "task": task, "reference_chunks": reference_chunks,
        "chunks": out, "warnings": warnings,
    });
    if !segments.columns.is_empty() {
        result["segments"] = json!(by_segment);
    }
    match calibrated {
        Value::Null => {}
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
    /// The nanny models (regression, DLE): ONNX files with `driftwatch.nanny`
    /// metadata, comma separated (one per loss: mae, mape, mse/rmse,
    /// msle/rmsle). ONNX Runtime comes from ORT_DYLIB_PATH.
    #[arg(long, value_delimiter = ',')]
    nanny_model: Vec<PathBuf>,
    /// Rows per chunk.
    #[arg(long, conflicts_with_all = ["chunk_number", "chunk_period"])]
    chunk_size: Option<usize>,
    /// Chunks per dataset (default 10).
    #[arg(long, conflicts_with = "chunk_period")]
    chunk_number: Option<usize>,
    /// Chunks by calendar period of --timestamp: min, h, D, W (Monday to
    /// Sunday), M, Q or Y (pandas' offsets, as NannyML takes them).
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
    /// The value of each confusion-matrix cell for business_value, row by
    /// row (actual, then predicted class): TN,FP,FN,TP for a binary model,
    /// K x K values for a multiclass one (classes in sorted order).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    business_value_matrix: Option<Vec<f64>>,
    /// Business value per prediction instead of the chunk's total.
    #[arg(long, value_parser = ["per_prediction"])]
    normalize_business_value: Option<String>,
    /// Also estimate each segment of the analysis by these columns (comma
    /// separated): the reference's most frequent values each a segment,
    /// the rest pooled as `__other__` (the estimator and thresholds are
    /// the whole reference's).
    #[arg(long, value_delimiter = ',')]
    segment: Vec<String>,
    /// Segments per segment column.
    #[arg(long, default_value_t = super::segments::DEFAULT_TOP)]
    segment_top: usize,
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
                return Err(
                    "--probabilities is for a multiclass task; a binary task takes --score".into(),
                );
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
        Task::Regression => {
            if args.score.is_some() || !args.probabilities.is_empty() {
                return Err(
                    "a regression task takes --nanny-model, not --score or --probabilities".into(),
                );
            }
            if args.nanny_model.is_empty() {
                return Err("a regression task needs --nanny-model F.onnx,... (examples/regression/train_nanny_models.py trains them)".into());
            }
            Ok(Outputs::Value {
                nanny_models: args.nanny_model.clone(),
                metrics: args.metrics.clone(),
            })
        }
    }
}

/// The estimator's settings from the flags.
fn settings(args: &Args) -> Result<Settings, String> {
    estimator::settings(&Asked {
        chunk_size: args.chunk_size,
        chunk_number: args.chunk_number,
        chunk_period: args.chunk_period.as_deref(),
        metrics: args.metrics.as_deref(),
        normalize_confusion_matrix: Some(args.normalize_confusion_matrix.as_str()),
        business_value_matrix: args.business_value_matrix.as_deref(),
        per_prediction: args.normalize_business_value.is_some(),
        regression: matches!(args.task, Task::Regression),
    })
}

/// Runs the command: the JSON (or HTML) text for standard output (`None`
/// when it went to `--out`); warnings to standard error.
pub fn run(args: Args) -> Result<Option<String>, String> {
    if !args.nanny_model.is_empty() && !matches!(args.task, Task::Regression) {
        return Err("--nanny-model is for a regression task (DLE)".into());
    }
    let outputs = outputs(&args)?;
    if args.chunk_period.is_some() != args.timestamp.is_some() {
        return Err("--chunk-period and --timestamp go together".into());
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
        timestamp: args.timestamp,
    };
    if args.segment_top == 0 {
        return Err("--segment-top must be at least 1".into());
    }
    let segments = Segments {
        columns: &args.segment,
        top: args.segment_top,
    };
    let result = estimate(&reference, &analysis, &options, &segments)?;
    for w in result["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", w.as_str().unwrap_or_default());
    }
    let text = match args.format.as_str() {
        "html" => super::performance_html::render(
            &result,
            &args.reference.display().to_string(),
            &args.analysis.display().to_string(),
        ),
        _ => serde_json::to_string_pretty(&result).map_err(|e| e.to_string())? + "\n",
    };
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .map(|()| None)
            .map_err(|e| format!("{}: cannot write the result: {e}", path.display())),
        None => Ok(Some(text)),
    }
}
