//! `driftwatch report`: compares a reference and a current dataset column by
//! column with every applicable drift test, in the JSON shape of DESIGN.md.
//! Loading lives in `load`, rendering in `html`; the verdict logic here is the
//! one the collector's live windows use too.

mod columns;
pub mod dle;
pub mod estimator;
pub mod html;
pub mod load;
pub mod multivariate;
pub mod performance;
mod performance_html;
pub mod profile;
pub mod segments;

use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use crate::stats::{self, ColumnType, Sample, TestKind};

/// Dataset drift when at least this share of tested columns drifted (Evidently's default).
pub const DATASET_DRIFT_SHARE: f64 = 0.5;

/// User overrides of the verdict test and thresholds.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Verdict test for every column (`--test NAME`).
    pub test: Option<TestKind>,
    /// Verdict test per column (`--test COLUMN=NAME`).
    pub column_test: HashMap<String, TestKind>,
    /// Threshold per test (`--threshold NAME=VALUE`).
    pub threshold: HashMap<TestKind, f64>,
    /// Threshold per column and test (`--threshold COLUMN:NAME=VALUE`).
    pub column_threshold: HashMap<(String, TestKind), f64>,
}

impl Overrides {
    /// Overrides as `report` takes them: each test `NAME` (every column) or
    /// `COLUMN=NAME`, each threshold `NAME=VALUE` or `COLUMN:NAME=VALUE`.
    /// The same syntax sets a model's live overrides (`drift:` in the
    /// collector's config), so live verdicts equal `report`'s.
    pub fn parse(tests: &[String], thresholds: &[String]) -> Result<Overrides, String> {
        let mut o = Overrides::default();
        for t in tests {
            match t.split_once('=') {
                Some((col, name)) => {
                    o.column_test.insert(col.to_string(), parse_test(name)?);
                }
                None => o.test = Some(parse_test(t)?),
            }
        }
        for t in thresholds {
            let (key, value) = t.split_once('=').ok_or_else(|| {
                format!("threshold {t:?}: expected NAME=VALUE or COLUMN:NAME=VALUE")
            })?;
            let value: f64 = value
                .parse()
                .map_err(|_| format!("threshold {t:?}: {value:?} is not a number"))?;
            if !value.is_finite() {
                return Err(format!("threshold {t:?}: the value must be finite"));
            }
            match key.rsplit_once(':') {
                Some((col, name)) => {
                    o.column_threshold
                        .insert((col.to_string(), parse_test(name)?), value);
                }
                None => {
                    o.threshold.insert(parse_test(key)?, value);
                }
            }
        }
        Ok(o)
    }

    /// The columns the overrides name.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.column_test
            .keys()
            .chain(self.column_threshold.keys().map(|(c, _)| c))
            .map(String::as_str)
    }

    fn threshold(&self, column: &str, test: TestKind) -> f64 {
        self.column_threshold
            .get(&(column.to_string(), test))
            .or_else(|| self.threshold.get(&test))
            .copied()
            .unwrap_or_else(|| test.default_threshold())
    }

    fn verdict_test(&self, column: &str) -> Option<TestKind> {
        self.column_test.get(column).copied().or(self.test)
    }
}

fn parse_test(name: &str) -> Result<TestKind, String> {
    TestKind::parse(name).ok_or_else(|| {
        format!(
            "unknown test {name:?}; expected one of {}",
            TestKind::names()
        )
    })
}

/// A column that cannot be compared, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Untestable {
    pub name: String,
    pub column_type: Option<ColumnType>,
    pub reason: String,
}

impl From<Untestable> for ColumnReport {
    fn from(u: Untestable) -> ColumnReport {
        ColumnReport::untestable(&u.name, u.column_type, (0, 0), u.reason)
    }
}

/// One column ready to compare: both sides cleaned, with what was dropped.
#[derive(Debug, Clone)]
pub struct ColumnInput {
    pub name: String,
    pub column_type: ColumnType,
    pub reference: Sample,
    pub current: Sample,
    pub missing_reference: u64,
    pub missing_current: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TestReport {
    pub test: &'static str,
    pub statistic: Option<f64>,
    pub p_value: Option<f64>,
    pub threshold: f64,
    pub drift: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The statistic as computed, infinite or NaN included (for metrics; JSON
    /// carries `statistic` and `note`).
    #[serde(skip)]
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ColumnReport {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: Option<ColumnType>,
    pub missing_reference: u64,
    pub missing_current: u64,
    pub tests: Vec<TestReport>,
    pub default_test: Option<&'static str>,
    pub drift: bool,
    /// Why the column could not be compared, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untestable: Option<String>,
    /// The verdict test, when overridden (`default_test` stays Evidently's choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict_test: Option<&'static str>,
    /// Reference and current histograms for the HTML report (not in JSON).
    #[serde(skip)]
    pub histogram: Option<html::Histogram>,
}

impl ColumnReport {
    pub fn untestable(
        name: &str,
        column_type: Option<ColumnType>,
        missing: (u64, u64),
        why: String,
    ) -> ColumnReport {
        ColumnReport {
            name: name.to_string(),
            column_type,
            missing_reference: missing.0,
            missing_current: missing.1,
            tests: Vec::new(),
            default_test: None,
            drift: false,
            untestable: Some(why),
            verdict_test: None,
            histogram: None,
        }
    }

    /// The test that decides the verdict, with its result.
    pub fn verdict(&self) -> Option<&TestReport> {
        let name = self.verdict_test.or(self.default_test)?;
        self.tests.iter().find(|t| t.test == name)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DatasetDrift {
    pub drifted_columns: usize,
    pub share: f64,
    pub threshold: f64,
    pub drift: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub reference_rows: usize,
    pub current_rows: usize,
    pub columns: Vec<ColumnReport>,
    pub dataset_drift: DatasetDrift,
    /// Multivariate drift (`--multivariate`; `report::multivariate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multivariate: Option<serde_json::Value>,
    /// Drift per segment (`--segment`; `report::segments`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<serde_json::Value>,
}

/// Runs every applicable test on one column and decides its verdict.
pub fn evaluate(input: &ColumnInput, overrides: &Overrides) -> ColumnReport {
    let missing = (input.missing_reference, input.missing_current);
    evaluate_samples(
        &input.name,
        input.column_type,
        &input.reference,
        &input.current,
        missing,
        overrides,
    )
}

/// `evaluate` over borrowed samples (the collector's live windows compare
/// against a reference they keep).
pub fn evaluate_samples(
    name: &str,
    column_type: ColumnType,
    reference: &Sample,
    current: &Sample,
    missing: (u64, u64),
    overrides: &Overrides,
) -> ColumnReport {
    for (side, sample) in [("reference", reference), ("current", current)] {
        if sample.is_empty() {
            let why = format!(
                "no values in {side} (all {} missing or infinite)",
                if side == "reference" {
                    missing.0
                } else {
                    missing.1
                }
            );
            return ColumnReport::untestable(name, Some(column_type), missing, why);
        }
    }
    let distinct = stats::sample::union_distinct(reference, current);
    let default = stats::default_test(column_type, reference.len(), distinct);
    let verdict_test = overrides.verdict_test(name);
    let mut kinds: Vec<TestKind> = TestKind::ALL
        .into_iter()
        .filter(|t| t.applies(column_type, distinct) || *t == default || Some(*t) == verdict_test)
        .collect();
    kinds.sort();
    let tests: Vec<TestReport> = kinds
        .into_iter()
        .map(|kind| {
            let threshold = overrides.threshold(name, kind);
            match stats::run(kind, reference, current) {
                Ok(outcome) => {
                    let drift = kind.drifted(&outcome, threshold);
                    let (statistic, note) = finite_or_note(kind, outcome.statistic);
                    let p_value = outcome.p_value;
                    let note = note.or_else(|| {
                        (kind.has_p_value() && p_value.is_none())
                            .then(|| "p-value undefined (one category only)".to_string())
                    });
                    TestReport {
                        test: kind.name(),
                        statistic,
                        p_value,
                        threshold,
                        drift,
                        note,
                        value: outcome.statistic,
                    }
                }
                Err(e) => TestReport {
                    test: kind.name(),
                    statistic: None,
                    p_value: None,
                    threshold,
                    drift: false,
                    note: Some(e.to_string()),
                    value: f64::NAN,
                },
            }
        })
        .collect();
    let chosen = verdict_test.unwrap_or(default);
    let drift = tests
        .iter()
        .find(|t| t.test == chosen.name())
        .is_some_and(|t| t.drift);
    ColumnReport {
        name: name.to_string(),
        column_type: Some(column_type),
        missing_reference: missing.0,
        missing_current: missing.1,
        tests,
        default_test: Some(default.name()),
        drift,
        untestable: None,
        verdict_test: verdict_test.map(TestKind::name),
        histogram: None,
    }
}

fn finite_or_note(kind: TestKind, statistic: f64) -> (Option<f64>, Option<String>) {
    if statistic.is_finite() {
        (Some(statistic), None)
    } else if statistic.is_infinite() && kind == TestKind::ChiSquare {
        (
            None,
            Some(
                "statistic is infinite: the current data has a category the reference never had"
                    .to_string(),
            ),
        )
    } else if statistic.is_infinite() {
        (None, Some("statistic is infinite".to_string()))
    } else {
        (None, Some("statistic undefined for this data".to_string()))
    }
}

/// The dataset verdict over the columns that could be compared.
pub fn dataset_drift(columns: &[ColumnReport]) -> DatasetDrift {
    let tested = columns.iter().filter(|c| c.untestable.is_none()).count();
    let drifted = columns.iter().filter(|c| c.drift).count();
    let share = if tested == 0 {
        0.0
    } else {
        drifted as f64 / tested as f64
    };
    DatasetDrift {
        drifted_columns: drifted,
        share,
        threshold: DATASET_DRIFT_SHARE,
        drift: tested > 0 && share >= DATASET_DRIFT_SHARE,
    }
}

/// Evaluates all columns in parallel (one rayon task per column) and builds
/// the report; `untestable` columns are carried through as they are.
/// `histograms` adds the distributions the HTML report draws.
pub fn build(
    reference_rows: usize,
    current_rows: usize,
    inputs: Vec<Result<ColumnInput, Untestable>>,
    overrides: &Overrides,
    histograms: bool,
    progress: &(dyn Fn() + Sync),
) -> Report {
    let columns: Vec<ColumnReport> = inputs
        .into_par_iter()
        .map(|input| {
            let r = match input {
                Ok(input) => {
                    let mut r = evaluate(&input, overrides);
                    if histograms && r.untestable.is_none() {
                        r.histogram = Some(html::Histogram::of(&input.reference, &input.current));
                    }
                    r
                }
                Err(untestable) => untestable.into(),
            };
            progress();
            r
        })
        .collect();
    let dataset_drift = dataset_drift(&columns);
    Report {
        reference_rows,
        current_rows,
        columns,
        dataset_drift,
        multivariate: None,
        segments: None,
    }
}
