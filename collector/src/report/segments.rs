//! Drift per segment (`driftwatch report --segment COL`): the rows of
//! both data sets split by the value of a segment column, the reference's
//! `top` most frequent values each a segment of its own and every other
//! value (a missing one included) pooled as `__other__`, so the number of
//! segments stays bounded; each segment's columns compared as the whole
//! report compares them (each column typed as in the whole report), and
//! the verdicts of the tests with a p-value decided on Benjamini–Hochberg
//! q-values over every segment × column of the run (`stats::fdr`), so that
//! among the drifts reported the expected share of false ones stays at the
//! threshold. Distance tests (no p-value) keep their own threshold.

use std::collections::HashMap;

use polars::prelude::{IdxCa, NamedFrom};
use serde::Serialize;
use serde_json::Value;

use super::load::{self, Dataset, Selection};
use super::{build, ColumnReport, Overrides, Report};
use crate::stats::{fdr, ColumnType, Key, TestKind, TestOutcome};

/// The segment of every value outside a column's top values.
pub const OTHER: &str = "__other__";
/// Segments per segment column by default (the rest pooled).
pub const DEFAULT_TOP: usize = 10;

/// One column of one segment: its verdict test and the q-value it was
/// judged on.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentColumn {
    pub name: String,
    pub test: Option<&'static str>,
    pub statistic: Option<f64>,
    pub p_value: Option<f64>,
    /// Benjamini–Hochberg over the run's p-values (null for a distance
    /// test or an untested column).
    pub q_value: Option<f64>,
    pub threshold: Option<f64>,
    pub drift: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untestable: Option<String>,
}

/// One segment: a value of a segment column (or `__other__`).
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub column: String,
    pub value: String,
    pub reference_rows: usize,
    pub current_rows: usize,
    pub drifted_columns: usize,
    pub columns: Vec<SegmentColumn>,
}

/// A category's text (numbers as they read: `1`, not `1.0`).
pub fn key_text(k: &Key) -> String {
    match k {
        Key::Str(s) => s.clone(),
        Key::Num(x) => super::columns::number_text(*x),
    }
}

/// A data set's segment column as text per row (`None`: missing).
fn segment_values(data: &Dataset, column: &str) -> Result<Vec<Option<String>>, String> {
    let series = data.series(column)?.ok_or_else(|| {
        format!(
            "{}: no segment column {column:?} (a CSV or Parquet file holding it)",
            data.path().display()
        )
    })?;
    match load::to_rows(&series, ColumnType::Categorical)
        .map_err(|e| format!("{}: column {column:?}: {e}", data.path().display()))?
    {
        load::RowValues::Categorical(keys) => {
            Ok(keys.iter().map(|k| k.as_ref().map(key_text)).collect())
        }
        load::RowValues::Numeric(_) => Err(format!("column {column:?} is not categorical")),
    }
}

/// Segment `s` of a column whose top values are `top`: one of them, or
/// `__other__` after them.
pub fn name(top: &[String], s: usize) -> &str {
    top.get(s).map_or(OTHER, String::as_str)
}

/// The `top` most frequent values of the reference (ties by value).
pub fn top_values<'a>(values: impl Iterator<Item = &'a str>, top: usize) -> Vec<String> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let mut by_count: Vec<(&str, u64)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    by_count
        .into_iter()
        .take(top)
        .map(|(v, _)| v.to_string())
        .collect()
}

/// The rows of each segment (the top values in order, then `__other__`).
fn split(values: &[Option<String>], top: &[String]) -> Vec<Vec<u32>> {
    let index: HashMap<&str, usize> = top
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_str(), i))
        .collect();
    let mut rows = vec![Vec::new(); top.len() + 1];
    for (r, v) in values.iter().enumerate() {
        let s = v
            .as_deref()
            .and_then(|v| index.get(v).copied())
            .unwrap_or(top.len());
        rows[s].push(r as u32);
    }
    rows
}

/// Each segment of every segment column compared, with q-values over all
/// of them. `whole` is the report of all rows (its column types are kept).
pub fn segments(
    reference: &Dataset,
    current: &Dataset,
    segment_columns: &[String],
    top: usize,
    selection: &Selection,
    overrides: &Overrides,
    whole: &Report,
) -> Result<Vec<Segment>, String> {
    if top == 0 {
        return Err("--segment-top must be at least 1".into());
    }
    let (reference, current) = (load::in_memory(reference)?, load::in_memory(current)?);
    let mut typed = selection.clone();
    for c in &whole.columns {
        match c.column_type {
            Some(ColumnType::Categorical) => typed.categorical.insert(c.name.clone()),
            Some(ColumnType::Numeric) => typed.numeric.insert(c.name.clone()),
            None => false,
        };
    }
    typed.exclude.extend(segment_columns.iter().cloned());
    let mut reports: Vec<Compared> = Vec::new();
    for column in segment_columns {
        let (rv, cv) = (
            segment_values(&reference, column)?,
            segment_values(&current, column)?,
        );
        let top_values = top_values(rv.iter().flatten().map(String::as_str), top);
        let (rs, cs) = (split(&rv, &top_values), split(&cv, &top_values));
        for (s, (r_rows, c_rows)) in rs.into_iter().zip(cs).enumerate() {
            let value = name(&top_values, s).to_string();
            if s == top_values.len() && r_rows.is_empty() && c_rows.is_empty() {
                continue;
            }
            let (r, c) = (subset(&reference, &r_rows)?, subset(&current, &c_rows)?);
            let inputs = load::columns(&r, &c, &typed);
            let report = build(r.rows(), c.rows(), inputs, overrides, false, &|| {});
            reports.push(Compared {
                column: column.clone(),
                value,
                reference_rows: r.rows(),
                current_rows: c.rows(),
                columns: report.columns,
            });
        }
    }
    Ok(judge(reports))
}

/// One segment's columns compared, before the q-values.
pub struct Compared {
    pub column: String,
    pub value: String,
    pub reference_rows: usize,
    pub current_rows: usize,
    pub columns: Vec<ColumnReport>,
}

/// The segments' columns judged on q-values over every p-value of the
/// run (offline here, a live window's in `window::segments`).
pub fn judge(reports: Vec<Compared>) -> Vec<Segment> {
    let p_values: Vec<f64> = reports
        .iter()
        .flat_map(|r| r.columns.iter())
        .filter_map(|c| c.verdict().and_then(|t| t.p_value))
        .collect();
    let mut q_values = fdr::benjamini_hochberg(&p_values).into_iter();
    reports
        .into_iter()
        .map(|r| {
            let columns: Vec<SegmentColumn> = r
                .columns
                .iter()
                .map(|c| {
                    let verdict = c.verdict();
                    let q_value = verdict
                        .and_then(|t| t.p_value)
                        .and_then(|_| q_values.next());
                    let drift = match (verdict, q_value) {
                        (Some(t), Some(q)) => TestKind::parse(t.test).is_some_and(|k| {
                            k.drifted(
                                &TestOutcome {
                                    statistic: t.value,
                                    p_value: Some(q),
                                },
                                t.threshold,
                            )
                        }),
                        (Some(t), None) => t.drift,
                        (None, _) => false,
                    };
                    SegmentColumn {
                        name: c.name.clone(),
                        test: verdict.map(|t| t.test),
                        statistic: verdict.and_then(|t| t.statistic),
                        p_value: verdict.and_then(|t| t.p_value),
                        q_value,
                        threshold: verdict.map(|t| t.threshold),
                        drift,
                        untestable: c.untestable.clone(),
                    }
                })
                .collect();
            Segment {
                drifted_columns: columns.iter().filter(|c| c.drift).count(),
                column: r.column,
                value: r.value,
                reference_rows: r.reference_rows,
                current_rows: r.current_rows,
                columns,
            }
        })
        .collect()
}

/// A reference split for live segments by `column`: its top values, and
/// per segment (the top values, then `__other__`) its rows as a data set.
pub fn split_reference(
    reference: &Dataset,
    column: &str,
    top: usize,
) -> Result<(Vec<String>, Vec<Dataset>), String> {
    let reference = load::in_memory(reference)?;
    let values = segment_values(&reference, column)?;
    let top_values = top_values(values.iter().flatten().map(String::as_str), top);
    let parts = split(&values, &top_values)
        .iter()
        .map(|rows| subset(&reference, rows))
        .collect::<Result<_, _>>()?;
    Ok((top_values, parts))
}

/// `data` (held in memory: `load::in_memory`) split by `column` into the
/// segments of the reference's `top` values (then `__other__`, when it has
/// rows): each segment's name and rows.
pub fn split_by(
    reference: &Dataset,
    data: &Dataset,
    column: &str,
    top: usize,
) -> Result<Vec<(String, Dataset)>, String> {
    let top_values = top_values(
        segment_values(reference, column)?
            .iter()
            .flatten()
            .map(String::as_str),
        top,
    );
    let mut out = Vec::new();
    for (s, rows) in split(&segment_values(data, column)?, &top_values)
        .into_iter()
        .enumerate()
    {
        if s == top_values.len() && rows.is_empty() {
            continue;
        }
        out.push((name(&top_values, s).to_string(), subset(data, &rows)?));
    }
    Ok(out)
}

/// The rows `rows` of a data set held in memory.
fn subset(data: &Dataset, rows: &[u32]) -> Result<Dataset, String> {
    match data {
        Dataset::Csv { path, frame } => Ok(Dataset::Csv {
            path: path.clone(),
            frame: frame
                .take(&IdxCa::new("rows".into(), rows))
                .map_err(|e| format!("{}: {e}", path.display()))?,
        }),
        other => Err(format!(
            "{}: a profile has no rows to segment",
            other.path().display()
        )),
    }
}

/// The segments as the report's JSON carries them, with the family the
/// q-values were computed over.
pub fn json(segments: &[Segment]) -> Value {
    let tests = segments
        .iter()
        .flat_map(|s| &s.columns)
        .filter(|c| c.q_value.is_some())
        .count();
    serde_json::json!({
        "fdr": {"method": "benjamini-hochberg", "tests": tests},
        "segments": segments,
    })
}
