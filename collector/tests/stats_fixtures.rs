//! Every statistic, default test and verdict against SciPy and Evidently on
//! the generated fixture cases (`fixtures/generate.py` → `stats_cases.json`).
//! Tolerances: statistics 1e-9 relative (1e-12 absolute near zero), p-values
//! 1e-6 relative or 1e-10 absolute.

mod common;

use common::gen::{column, Cell};
use driftwatch::report::load::{self, infer_type, to_side};
use driftwatch::report::{build, dataset_drift, evaluate, ColumnInput, ColumnReport, Overrides};
use driftwatch::stats::ColumnType;
use polars::prelude::*;
use serde_json::Value;

fn cases() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stats_cases.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture file"))
        .expect("fixture JSON")
}

/// The column as pandas would hold it, as a polars Series.
fn series(name: &str, cells: &[Cell]) -> Series {
    let has_missing = cells.iter().any(|c| matches!(c, Cell::Missing));
    let first = cells.iter().find(|c| !matches!(c, Cell::Missing));
    match first {
        Some(Cell::Int(_)) if !has_missing => Series::new(
            name.into(),
            cells
                .iter()
                .map(|c| if let Cell::Int(i) = c { *i } else { 0 })
                .collect::<Vec<i64>>(),
        ),
        Some(Cell::Str(_)) => Series::new(
            name.into(),
            cells
                .iter()
                .map(|c| {
                    if let Cell::Str(s) = c {
                        Some(s.clone())
                    } else {
                        None
                    }
                })
                .collect::<Vec<Option<String>>>(),
        ),
        Some(Cell::Bool(_)) => Series::new(
            name.into(),
            cells
                .iter()
                .map(|c| {
                    if let Cell::Bool(b) = c {
                        Some(*b)
                    } else {
                        None
                    }
                })
                .collect::<Vec<Option<bool>>>(),
        ),
        _ => Series::new(
            name.into(),
            cells
                .iter()
                .map(|c| match c {
                    Cell::Num(x) => Some(*x),
                    Cell::Int(i) => Some(*i as f64),
                    _ => None,
                })
                .collect::<Vec<Option<f64>>>(),
        ),
    }
}

fn expected_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s == "inf" => Some(f64::INFINITY),
        Value::String(s) if s == "-inf" => Some(f64::NEG_INFINITY),
        Value::String(s) if s == "nan" => Some(f64::NAN),
        _ => None,
    }
}

fn close(got: f64, want: f64, rel: f64, abs: f64) -> bool {
    (got - want).abs() <= abs || (got - want).abs() <= rel * want.abs()
}

/// A drift test without a SciPy or Evidently case is unchecked: adding a
/// test means adding its case to `fixtures/generate.py` (README, Recipes).
#[test]
fn every_drift_test_has_reference_cases() {
    let cases = cases();
    let covered: std::collections::BTreeSet<String> = cases["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .flat_map(|c| c["columns"].as_array().expect("columns"))
        .filter_map(|col| col["tests"].as_object())
        .flat_map(|tests| tests.keys().cloned())
        .collect();
    for kind in driftwatch::stats::TestKind::ALL {
        assert!(
            covered.contains(kind.name()),
            "no fixture case checks `{}`: add one to collector/tests/fixtures/generate.py",
            kind.name()
        );
    }
}

#[test]
fn every_statistic_and_verdict_matches_scipy_and_evidently() {
    let cases = cases();
    let mut checked = 0usize;
    let mut failures = Vec::new();
    for case in cases["cases"].as_array().expect("cases") {
        let cname = case["name"].as_str().expect("name");
        let (nr, nc) = (
            case["reference_rows"].as_u64().expect("rows") as usize,
            case["current_rows"].as_u64().expect("rows") as usize,
        );
        let mut reports = Vec::new();
        for col in case["columns"].as_array().expect("columns") {
            let name = col["name"].as_str().expect("column name");
            let rs = series(name, &column(&col["reference"], nr));
            let cs = series(name, &column(&col["current"], nc));
            let at = format!("{cname}/{name}");
            if col.get("untestable").is_some() {
                let t = infer_type(&rs).expect("supported type");
                let integer = rs.dtype().is_integer() && cs.dtype().is_integer();
                let (r, c) = (
                    to_side(&rs, t, integer).expect("reference"),
                    to_side(&cs, t, integer).expect("current"),
                );
                let input = ColumnInput {
                    name: name.into(),
                    column_type: t,
                    reference: r.sample,
                    current: c.sample,
                    missing_reference: r.missing,
                    missing_current: c.missing,
                };
                let report = evaluate(&input, &Overrides::default());
                assert!(
                    report.untestable.is_some(),
                    "{at}: Evidently could not test it, neither should we"
                );
                reports.push(report);
                continue;
            }
            let want_type = if col["type"] == "numeric" {
                ColumnType::Numeric
            } else {
                ColumnType::Categorical
            };
            let got_type = infer_type(&rs).expect("supported type");
            if got_type != want_type {
                failures.push(format!("{at}: type {got_type:?}, Evidently {want_type:?}"));
                continue;
            }
            let integer = rs.dtype().is_integer()
                && rs.null_count() == 0
                && cs.dtype().is_integer()
                && cs.null_count() == 0;
            let (r, c) = (
                to_side(&rs, got_type, integer).expect("reference"),
                to_side(&cs, got_type, integer).expect("current"),
            );
            let input = ColumnInput {
                name: name.into(),
                column_type: got_type,
                reference: r.sample,
                current: c.sample,
                missing_reference: r.missing,
                missing_current: c.missing,
            };
            let report = evaluate(&input, &Overrides::default());
            checked += check_column(&at, col, &report, &mut failures);
            reports.push(report);
        }
        let d = dataset_drift(&reports);
        let want = &case["dataset_drift"];
        if d.drifted_columns as u64 != want["drifted_columns"].as_u64().expect("count")
            || d.drift != want["drift"].as_bool().expect("drift")
        {
            failures.push(format!("{cname}: dataset drift {d:?}, Evidently {want}"));
        }
        if !close(d.share, want["share"].as_f64().expect("share"), 1e-12, 0.0) {
            failures.push(format!(
                "{cname}: share {}, Evidently {}",
                d.share, want["share"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 150, "only {checked} test results were compared");
}

/// Compares one column's default test, verdict and every test's values with
/// the expectations; returns how many test results were compared.
fn check_column(at: &str, col: &Value, report: &ColumnReport, failures: &mut Vec<String>) -> usize {
    let mut checked = 0;
    let missing = (
        col["missing_reference"].as_u64(),
        col["missing_current"].as_u64(),
    );
    if missing != (Some(report.missing_reference), Some(report.missing_current)) {
        failures.push(format!(
            "{at}: missing {:?}, expected {missing:?}",
            (report.missing_reference, report.missing_current)
        ));
    }
    if report.default_test != col["default_test"].as_str() {
        failures.push(format!(
            "{at}: default test {:?}, Evidently {}",
            report.default_test, col["default_test"]
        ));
    }
    if report.drift != col["drift"].as_bool().expect("drift") {
        failures.push(format!(
            "{at}: drift {}, Evidently {}",
            report.drift, col["drift"]
        ));
    }
    for (test, want) in col["tests"].as_object().expect("tests") {
        let Some(got) = report.tests.iter().find(|t| t.test == test) else {
            failures.push(format!("{at}/{test}: not reported"));
            continue;
        };
        checked += 1;
        if want.get("error").is_some() {
            if got.statistic.is_some() || got.note.is_none() {
                failures.push(format!(
                    "{at}/{test}: SciPy refused ({want}), we gave {got:?}"
                ));
            }
            continue;
        }
        let (ws, wp) = (expected_number(&want[0]), expected_number(&want[1]));
        match (ws, got.statistic) {
            (Some(w), Some(g)) if close(g, w, 1e-9, 1e-12) => {}
            (Some(w), None) if !w.is_finite() && got.note.is_some() => {}
            (w, g) => failures.push(format!("{at}/{test}: statistic {g:?}, expected {w:?}")),
        }
        match (wp, got.p_value) {
            (None, None) => {}
            (Some(w), None) if w.is_nan() => {}
            (Some(w), Some(g)) if close(g, w, 1e-6, 1e-10) => {}
            (w, g) => failures.push(format!("{at}/{test}: p-value {g:?}, expected {w:?}")),
        }
    }
    checked
}

#[test]
fn csv_files_end_to_end_match_evidently_reading_them_with_pandas() {
    let cases = cases();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/credit");
    let reference =
        load::read(&std::path::Path::new(examples).join("reference.csv")).expect("reference");
    let current = load::read(&std::path::Path::new(examples).join("current.csv")).expect("current");
    let inputs = load::columns(&reference, &current, &load::Selection::default());
    let report = build(
        reference.rows(),
        current.rows(),
        inputs,
        &Overrides::default(),
        false,
        &|| {},
    );
    let want = &cases["files"][0];
    let mut failures = Vec::new();
    let mut checked = 0;
    for col in want["columns"].as_array().expect("columns") {
        let name = col["name"].as_str().expect("name");
        let got = report
            .columns
            .iter()
            .find(|c| c.name == name)
            .expect("column reported");
        let want_type = if col["type"] == "numeric" {
            ColumnType::Numeric
        } else {
            ColumnType::Categorical
        };
        assert_eq!(got.column_type, Some(want_type), "{name}: type");
        checked += check_column(&format!("files/{name}"), col, got, &mut failures);
    }
    assert_eq!(
        report.dataset_drift.drifted_columns as u64,
        want["dataset_drift"]["drifted_columns"]
            .as_u64()
            .expect("count")
    );
    assert_eq!(
        report.dataset_drift.drift,
        want["dataset_drift"]["drift"].as_bool().expect("drift")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 40, "{checked}");
}

#[test]
fn kolmogorov_distribution_matches_scipy_in_every_region() {
    let cases = cases();
    let mut failures = Vec::new();
    let rows = cases["kstwo"].as_array().expect("kstwo table");
    for row in rows {
        let (n, x, want) = (
            row[0].as_u64().expect("n"),
            row[1].as_f64().expect("x"),
            row[2].as_f64().expect("sf"),
        );
        let got = driftwatch::stats::kolmogorov::kstwo_sf(n, x);
        if !close(got, want, 1e-6, 1e-10) {
            failures.push(format!("kstwo.sf({x}, {n}) = {got}, SciPy {want}"));
        }
    }
    assert!(rows.len() > 150);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn cramer_von_mises_limit_cdf_matches_scipy() {
    let cases = cases();
    for row in cases["cvm_inf"].as_array().expect("cvm table") {
        let (x, want) = (row[0].as_f64().expect("x"), row[1].as_f64().expect("cdf"));
        let got = driftwatch::stats::cvm::cdf_cvm_inf(x);
        assert!(
            close(got, want, 1e-9, 1e-12),
            "cdf_cvm_inf({x}) = {got}, SciPy {want}"
        );
    }
}

#[test]
fn wilcoxon_signed_rank_matches_scipy_in_every_method() {
    let cases = cases();
    let rows = cases["wilcoxon"].as_array().expect("wilcoxon table");
    let mut failures = Vec::new();
    for row in rows {
        let name = row["name"].as_str().expect("name");
        let n = row["n"].as_u64().expect("n") as usize;
        let d: Vec<f64> = column(&row["spec"], n)
            .iter()
            .map(|c| match c {
                Cell::Num(x) => *x,
                Cell::Int(i) => *i as f64,
                other => panic!("{name}: unexpected cell {other:?}"),
            })
            .collect();
        let got = driftwatch::stats::wilcoxon::wilcoxon(&d).expect("non-zero differences");
        let (want_stat, want_p) = (
            row["statistic"].as_f64().expect("statistic"),
            row["p_value"].as_f64().expect("p"),
        );
        if !close(got.statistic, want_stat, 1e-12, 0.0) || !close(got.p_value, want_p, 1e-9, 1e-15)
        {
            failures.push(format!(
                "{name}: statistic {} p {} vs SciPy {want_stat} p {want_p}",
                got.statistic, got.p_value
            ));
        }
    }
    assert_eq!(rows.len(), 9);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn sequential_comparisons_and_sample_ratio_checks_match_gbstats() {
    use driftwatch::stats::sequential::{Arm, Difference, Running, Sequential, Values};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sequential_cases.json"
    );
    let cases_root: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture file"))
            .expect("fixture JSON");
    let arm = |v: &Value| Arm {
        n: v["n"].as_f64().expect("n"),
        sum: v["sum"].as_f64().expect("sum"),
        sum_squares: v["sum_squares"].as_f64().expect("sum_squares"),
    };
    let cases = cases_root["cases"].as_array().expect("cases");
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let s = Sequential {
            values: match c["values"].as_str() {
                Some("proportion") => Values::Proportion,
                _ => Values::Mean,
            },
            difference: match c["difference"].as_str() {
                Some("relative") => Difference::Relative,
                _ => Difference::Absolute,
            },
            alpha: c["alpha"].as_f64().expect("alpha"),
            tuning: c["tuning"].as_f64().expect("tuning"),
        };
        let got = s.compare(&arm(&c["a"]), &arm(&c["b"])).expect("comparable");
        check_comparison(&format!("case {i}"), &got, c, "gbstats", &mut failures);
    }
    let paired = cases_root["paired"].as_array().expect("paired cases");
    assert!(paired.len() >= 12, "{} paired cases", paired.len());
    for (i, c) in paired.iter().enumerate() {
        let s = Sequential {
            values: Values::Mean,
            difference: Difference::Absolute,
            alpha: c["alpha"].as_f64().expect("alpha"),
            tuning: c["tuning"].as_f64().expect("tuning"),
        };
        let got = s.paired(&arm(&c["d"])).expect("comparable");
        check_comparison(
            &format!("paired case {i}"),
            &got,
            c,
            "the paper's formula",
            &mut failures,
        );
    }
    let msprt = cases_root["msprt"].as_array().expect("mSPRT series");
    for (i, series) in msprt.iter().enumerate() {
        let s = Sequential {
            alpha: series["alpha"].as_f64().expect("alpha"),
            ..Sequential::default()
        };
        let tau2 = series["tau2"].as_f64().expect("tau2");
        let mut running = Running::default();
        let looks = series["looks"].as_array().expect("looks");
        assert!(looks.len() >= 15, "series {i}: {} looks", looks.len());
        for (j, c) in looks.iter().enumerate() {
            let got = s
                .msprt(&arm(&c["a"]), &arm(&c["b"]), tau2, &mut running)
                .expect("comparable");
            check_comparison(
                &format!("mSPRT series {i} look {j}"),
                &got,
                c,
                "the paper's formula",
                &mut failures,
            );
        }
    }
    let srm = cases_root["srm"].as_array().expect("srm cases");
    assert!(srm.len() >= 50, "{} sample-ratio cases", srm.len());
    for (i, c) in srm.iter().enumerate() {
        let counts: Vec<u64> = c["counts"]
            .as_array()
            .expect("counts")
            .iter()
            .map(|v| v.as_u64().expect("count"))
            .collect();
        let weights: Vec<f64> = c["weights"]
            .as_array()
            .expect("weights")
            .iter()
            .map(|v| v.as_f64().expect("weight"))
            .collect();
        let got = driftwatch::stats::categorical::sample_ratio_mismatch(&counts, &weights);
        let want = c["p_value"].as_f64().expect("p_value");
        if !close(got, want, 1e-6, 1e-10) {
            failures.push(format!(
                "srm case {i} {counts:?} {weights:?}: {got} against gbstats {want}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A comparison's estimate, bounds and p-value against a fixture case's,
/// to 1e-9 relative (1e-12 absolute near zero).
fn check_comparison(
    at: &str,
    got: &driftwatch::stats::sequential::Comparison,
    case: &Value,
    oracle: &str,
    failures: &mut Vec<String>,
) {
    for (name, value) in [
        ("estimate", got.estimate),
        ("lower", got.lower),
        ("upper", got.upper),
        ("p_value", got.p_value),
    ] {
        let want = case[name].as_f64().expect(name);
        if !close(value, want, 1e-9, 1e-12) {
            failures.push(format!("{at} {name}: {value} against {oracle} {want}"));
        }
    }
}
