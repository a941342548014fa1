//! Multivariate drift by data reconstruction (`stats::reconstruction`,
//! NannyML's `DataReconstructionDriftCalculator`) on data sets: the
//! columns read row by row as `report` types them, fitted on the
//! reference (thresholds from its chunks), and the current data as one
//! chunk, as a live window is (`driftwatch report --multivariate`, and a
//! model's `multivariate:` block in the collector).

use serde_json::{json, Value};

use super::load::{to_rows, Dataset, RowValues};
use crate::stats::estimation::chunks;
pub use crate::stats::estimation::Chunking;
use crate::stats::reconstruction::{Column, Drift, Fitted, Input};
use crate::stats::ColumnType;

/// The reference's chunking from a chunk size or number (default 10
/// chunks).
pub fn chunking(size: Option<usize>, number: Option<usize>) -> Result<Chunking, String> {
    match (size, number) {
        (Some(0), _) | (_, Some(0)) => Err("chunks need at least one row".into()),
        (Some(_), Some(_)) => Err("give a chunk size or a chunk number, not both".into()),
        (Some(s), None) => Ok(Chunking::Size(s)),
        (None, Some(k)) => Ok(Chunking::Number(k)),
        (None, None) => Ok(Chunking::Number(10)),
    }
}

/// Each column of `data` row by row; `Err` names the file and column.
pub fn read(data: &Dataset, columns: &[(String, ColumnType)]) -> Result<Vec<RowValues>, String> {
    columns
        .iter()
        .map(|(name, t)| {
            let series = data.series(name)?.ok_or_else(|| {
                format!(
                    "{}: multivariate drift needs column {name:?} row by row (a CSV or Parquet file holding it)",
                    data.path().display()
                )
            })?;
            to_rows(&series, *t).map_err(|e| format!("{}: column {name:?}: {e}", data.path().display()))
        })
        .collect()
}

/// Fits on the reference's columns, thresholds from its `chunking`;
/// also returns each reference chunk's key and drift.
pub fn fit(
    reference: &Dataset,
    columns: &[(String, ColumnType)],
    chunking: Chunking,
) -> Result<(Fitted, Vec<(String, Drift)>), String> {
    let values = read(reference, columns)?;
    let n = values.first().map_or(0, rows);
    let reference_chunks = chunks(n, chunking)
        .filter(|c| c.len() >= 2)
        .ok_or_else(|| {
            format!(
                "{}: the reference ({n} rows) makes fewer than 2 chunks",
                reference.path().display()
            )
        })?;
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let inputs: Vec<Column<'_>> = values
        .iter()
        .map(|v| match v {
            RowValues::Numeric(x) => Column::Numeric(x),
            RowValues::Categorical(k) => Column::Categorical(k),
        })
        .collect();
    let fitted = Fitted::fit(&names, &inputs, &reference_chunks)
        .map_err(|e| format!("{}: {e}", reference.path().display()))?;
    let errors = errors(&fitted, &values);
    let drifts = reference_chunks
        .into_iter()
        .map(|c| (c.key.clone(), fitted.drift(&errors[c.rows()])))
        .collect();
    Ok((fitted, drifts))
}

fn rows(v: &RowValues) -> usize {
    match v {
        RowValues::Numeric(x) => x.len(),
        RowValues::Categorical(k) => k.len(),
    }
}

/// Each row's reconstruction error.
pub fn errors(fitted: &Fitted, values: &[RowValues]) -> Vec<f64> {
    let n = values.first().map_or(0, rows);
    (0..n)
        .map(|i| {
            fitted.row_error(|j| match &values[j] {
                RowValues::Numeric(x) => x[i].map_or(Input::Missing, Input::Num),
                RowValues::Categorical(k) => k[i].as_ref().map_or(Input::Missing, Input::Cat),
            })
        })
        .collect()
}

/// A chunk's drift as JSON.
pub fn drift_json(key: &str, period: &str, d: &Drift) -> Value {
    json!({
        "key": key, "period": period, "value": d.value, "sampling_error": d.sampling_error,
        "lower_confidence_boundary": d.lower_confidence_boundary,
        "upper_confidence_boundary": d.upper_confidence_boundary,
        "lower_threshold": d.lower_threshold, "upper_threshold": d.upper_threshold,
        "alert": d.alert,
    })
}

/// `report --multivariate`: the reference's chunks and the current data
/// as one chunk.
pub fn report(
    reference: &Dataset,
    current: &Dataset,
    columns: &[(String, ColumnType)],
) -> Result<Value, String> {
    let (fitted, reference_drifts) = fit(reference, columns, Chunking::Number(10))?;
    let current_values = read(current, columns)?;
    let current_drift = fitted.drift(&errors(&fitted, &current_values));
    let mut out: Vec<Value> = reference_drifts
        .iter()
        .map(|(key, d)| drift_json(key, "reference", d))
        .collect();
    out.push(drift_json("current", "current", &current_drift));
    Ok(json!({
        "method": "reconstruction",
        "columns": columns.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "components": fitted.components(),
        "chunks": out,
    }))
}
