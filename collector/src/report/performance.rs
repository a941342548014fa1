//! `driftwatch performance`: performance estimated before the labels
//! arrive, offline, as NannyML 0.13.1's CBPE computes it (`stats::estimation`):
//! a reference with targets and an analysis set read like `report` reads
//! them, the JSON of DESIGN.md ("Estimated performance"). Binary
//! classifiers for now.

use std::path::PathBuf;

use polars::prelude::*;
use serde_json::{json, Value};

use super::load::{self, Dataset};
use crate::stats::estimation::{chunks, Chunking, Fitted, Rows, METRICS};

/// What to estimate and from which columns.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: String,
    pub prediction: String,
    pub score: String,
    /// The class `score` is the probability of (default "1").
    pub positive_class: String,
    pub chunking: Chunking,
    /// Metrics to report (default: all of `METRICS`).
    pub metrics: Option<Vec<String>>,
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

/// A class column as "is the positive class" per row (`None`: missing).
fn classes(data: &Dataset, name: &str, positive: &str) -> Result<Vec<Option<bool>>, String> {
    let s = column(data, name)?;
    if s.dtype().is_primitive_numeric() {
        let want: f64 = positive.parse().map_err(|_| {
            format!(
                "{}: column {name:?} is numeric; the positive class {positive:?} is not a number",
                data.path().display()
            )
        })?;
        let s = s.cast(&DataType::Float64).map_err(|e| e.to_string())?;
        return Ok(s
            .f64()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| v.map(|x| x == want))
            .collect());
    }
    if let Ok(b) = s.bool() {
        let want = matches!(positive, "1" | "true" | "True");
        return Ok(b.iter().map(|v| v.map(|x| x == want)).collect());
    }
    let s = s.cast(&DataType::String).map_err(|e| e.to_string())?;
    Ok(s.str()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v.map(|x| x == positive))
        .collect())
}

fn complete(values: Vec<Option<bool>>, data: &Dataset, name: &str) -> Result<Vec<bool>, String> {
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

/// Estimates every chunk of the reference and the analysis; the JSON of
/// DESIGN.md. `Err` names the file and column at fault.
pub fn estimate(reference: &Dataset, analysis: &Dataset, o: &Options) -> Result<Value, String> {
    let metrics: Vec<&str> = match &o.metrics {
        None => METRICS.to_vec(),
        Some(list) => list
            .iter()
            .map(|m| {
                METRICS.iter().copied().find(|k| k == m).ok_or_else(|| {
                    format!(
                        "unknown metric {m:?}; binary CBPE has {}",
                        METRICS.join(", ")
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let ref_score = scores(reference, &o.score)?;
    let ref_pred = complete(
        classes(reference, &o.prediction, &o.positive_class)?,
        reference,
        &o.prediction,
    )?;
    let ref_truth = complete(
        classes(reference, &o.target, &o.positive_class)?,
        reference,
        &o.target,
    )?;
    if ref_truth.iter().all(|&t| t) || ref_truth.iter().all(|&t| !t) {
        return Err(format!(
            "{}: the target {:?} has one class only; CBPE needs both in the reference",
            reference.path().display(),
            o.target
        ));
    }
    let ana_score = scores(analysis, &o.score)?;
    let ana_pred = complete(
        classes(analysis, &o.prediction, &o.positive_class)?,
        analysis,
        &o.prediction,
    )?;
    let mut warnings = Vec::new();
    // Targets in the analysis are optional: realized values where all are known.
    let ana_truth = match analysis.series(&o.target)? {
        None => None,
        Some(_) => {
            let t = classes(analysis, &o.target, &o.positive_class)?;
            match t.iter().all(Option::is_some) {
                true => Some(t.into_iter().flatten().collect::<Vec<bool>>()),
                false => {
                    warnings.push(format!(
                        "the analysis target {:?} has missing values: realized metrics are left out",
                        o.target
                    ));
                    None
                }
            }
        }
    };
    let reference_chunks = chunks(ref_score.len(), o.chunking).map_or(0, |c| c.len());
    if reference_chunks < 2 {
        return Err(format!(
            "the reference ({} rows) makes {reference_chunks} chunk(s); thresholds need at least 2",
            ref_score.len()
        ));
    }
    if reference_chunks < FEW_CHUNKS {
        warnings.push(format!(
            "only {reference_chunks} reference chunks: thresholds at ±3 standard deviations of so few chunks false-alarm; use at least {FEW_CHUNKS}"
        ));
    }
    let ref_rows = Rows {
        score: &ref_score,
        predicted: &ref_pred,
        truth: Some(&ref_truth),
    };
    let fitted = Fitted::fit(&ref_rows, o.chunking)
        .map_err(|e| format!("{}: {e}", reference.path().display()))?;
    let ana_rows = Rows {
        score: &ana_score,
        predicted: &ana_pred,
        truth: ana_truth.as_deref(),
    };
    let mut out = Vec::new();
    for (period, rows) in [("reference", &ref_rows), ("analysis", &ana_rows)] {
        for (chunk, estimates) in fitted.estimate(rows) {
            let mut m = serde_json::Map::new();
            for (name, e) in METRICS.iter().zip(estimates) {
                if metrics.contains(name) {
                    m.insert(
                        name.to_string(),
                        json!({
                            "value": e.value, "sampling_error": e.sampling_error,
                            "lower_confidence_boundary": e.lower_confidence_boundary,
                            "upper_confidence_boundary": e.upper_confidence_boundary,
                            "lower_threshold": e.lower_threshold, "upper_threshold": e.upper_threshold,
                            "alert": e.alert, "realized": e.realized,
                        }),
                    );
                }
            }
            out.push(json!({
                "key": chunk.key, "start_index": chunk.start, "end_index": chunk.end,
                "period": period, "metrics": m,
            }));
        }
    }
    Ok(json!({
        "method": "cbpe", "task": "binary", "calibrated": fitted.calibrated,
        "reference_chunks": reference_chunks, "chunks": out, "warnings": warnings,
    }))
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
    /// Metrics to report, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    metrics: Option<Vec<String>>,
    #[arg(long, value_parser = ["json", "html"], default_value = "json")]
    format: String,
    /// Write the result here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs the command: the JSON text for standard output (`None` when it
/// went to `--out`); warnings to standard error.
pub fn run(args: Args) -> Result<Option<String>, String> {
    let not_yet = |what: &str| format!("{what} is not built yet (binary CBPE is; see the README)");
    match args.task {
        Task::Binary => {}
        Task::Multiclass => return Err(not_yet("--task multiclass")),
        Task::Regression => return Err(not_yet("--task regression (DLE)")),
    }
    if !args.probabilities.is_empty() || args.nanny_model.is_some() {
        return Err("--probabilities and --nanny-model are for multiclass and regression; a binary task takes --score".into());
    }
    if args.chunk_period.is_some() || args.timestamp.is_some() {
        return Err(not_yet("--chunk-period"));
    }
    if args.format == "html" {
        return Err(not_yet("--format html"));
    }
    let score = args
        .score
        .ok_or("a binary task needs --score (the probability of --positive-class)")?;
    let chunking = match (args.chunk_size, args.chunk_number) {
        (Some(0), _) | (_, Some(0)) => return Err("chunks need at least one row".into()),
        (Some(s), _) => Chunking::Size(s),
        (_, Some(k)) => Chunking::Number(k),
        _ => Chunking::Number(10),
    };
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
        score,
        positive_class: args.positive_class,
        chunking,
        metrics: args.metrics,
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
