//! `driftwatch performance --task regression` (DLE) against what NannyML
//! 0.13.1's DLE estimates on the same data with the same nanny models
//! (fixtures/dle, written by fixtures/generate_dle.py). The nanny models
//! take float32 inputs where NannyML's LightGBM takes float64, so the
//! estimates (and the band around them) agree to 1e-6 of the estimate;
//! what does not go through a nanny model (sampling errors, realized
//! values, thresholds) to 1e-9; every alert is identical. Needs ONNX
//! Runtime (`ORT_DYLIB_PATH`, as `scripts/test` sets it).

mod common;

use std::path::Path;
use std::process::Output;

use common::examples::{dle_fixtures as fixtures, dle_performance as performance, nanny_models};
use serde_json::Value;

fn close(got: f64, want: f64, tolerance: f64, scale: f64) -> bool {
    (got - want).abs() <= tolerance * scale.abs().max(want.abs()) || (got - want).abs() <= 1e-12
}

#[test]
fn dle_estimates_are_nannyml_s() {
    let dir = driftwatch_testkit::temp_dir("dle-fixtures");
    std::fs::create_dir_all(&dir).expect("dir");
    let models = nanny_models(&dir);
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json"),
    )
    .expect("json");
    let out = performance(
        &fixtures().join("reference.csv"),
        &fixtures().join("analysis.csv"),
        &models,
        &["--chunk-size", "450"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got["method"], "dle");
    assert_eq!(got["task"], "regression");
    let (got_chunks, want_chunks) = (
        got["chunks"].as_array().expect("chunks"),
        want["chunks"].as_array().expect("chunks"),
    );
    assert_eq!(got_chunks.len(), want_chunks.len());
    let (mut checked, mut alerts, mut nulls) = (0, 0, 0);
    for (g, w) in got_chunks.iter().zip(want_chunks) {
        for field in ["key", "period", "start_index", "end_index"] {
            assert_eq!(g[field], w[field], "{field} of {}", w["key"]);
        }
        for (metric, fields) in w["metrics"].as_object().expect("metrics") {
            let gm = &g["metrics"][metric];
            let estimate = fields["value"].as_f64().unwrap_or(0.0);
            for (field, value) in fields.as_object().expect("fields") {
                let at = format!("{} {metric} {field}", w["key"]);
                if field == "alert" {
                    assert_eq!(gm[field].as_bool(), value.as_bool(), "{at}");
                    alerts += usize::from(value.as_bool() == Some(true));
                    continue;
                }
                let Some(v) = value.as_f64() else {
                    assert!(
                        gm[field].is_null(),
                        "{at}: {} where NannyML has NaN",
                        gm[field]
                    );
                    nulls += 1;
                    continue;
                };
                let g = gm[field].as_f64().unwrap_or(f64::NAN);
                let through_the_model = field.contains("value") || field.contains("confidence");
                let ok = if through_the_model {
                    close(g, v, 1e-6, estimate)
                } else {
                    close(g, v, 1e-9, v)
                };
                assert!(ok, "{at}: {g} vs NannyML's {v}");
                checked += 1;
            }
        }
    }
    eprintln!("{checked} DLE values as NannyML's, {alerts} alerts, {nulls} NaN");
    // 17 chunks × 6 metrics × 7 numbers, less the realized values of the
    // chunk without targets.
    assert!(checked > 650, "{checked}");
    assert!(alerts > 5, "the drifted half alerts: {alerts}");
    assert!(
        nulls >= 6,
        "the chunk without targets has no realized values: {nulls}"
    );
}

#[test]
fn dle_refuses_bad_input_with_the_file_and_column_named() {
    let dir = driftwatch_testkit::temp_dir("dle-bad-input");
    std::fs::create_dir_all(&dir).expect("dir");
    let models = nanny_models(&dir);
    let (reference, analysis) = (
        fixtures().join("reference.csv"),
        fixtures().join("analysis.csv"),
    );
    let fails = |out: Output, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "expected a failure with {needle:?}");
        assert!(err.contains(needle), "{needle:?} not in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    // An analysis set without a feature the nanny model takes.
    // Columns x1,x2,x3,region,y_pred,y_true: a copy without column `drop`.
    let without = |from: &Path, drop: usize, name: &str| {
        let text: String = std::fs::read_to_string(from)
            .expect("csv")
            .lines()
            .map(|l| {
                let mut cells: Vec<&str> = l.split(',').collect();
                cells.remove(drop);
                cells.join(",") + "\n"
            })
            .collect();
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let lacking = without(&analysis, 1, "lacking.csv");
    fails(
        performance(&reference, &lacking, &models, &[]),
        "no column \"x2\", an input of nanny model",
    );
    // An ONNX file that is not a nanny model (the example champion).
    let champion = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/credit/champion.onnx");
    fails(
        performance(&reference, &analysis, &[champion], &[]),
        "no `driftwatch.nanny` metadata",
    );
    // A metric no model's loss serves, an unknown metric, no model at all.
    fails(
        performance(&reference, &analysis, &models[..1], &["--metrics", "rmse"]),
        "no nanny model predicts the loss of rmse",
    );
    fails(
        performance(&reference, &analysis, &models, &["--metrics", "r2"]),
        "unknown metric \"r2\"",
    );
    fails(
        performance(&reference, &analysis, &[], &[]),
        "needs --nanny-model",
    );
    // A reference without its target column.
    fails(
        performance(
            &without(&reference, 5, "untargeted.csv"),
            &analysis,
            &models,
            &[],
        ),
        "no target column \"y_true\"",
    );
    // Few reference chunks: a warning in the JSON.
    let out = performance(&reference, &analysis, &models, &["--chunk-number", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("only 3 reference chunks")),
        "{v}"
    );
    // Only the metrics asked for, and rmse from the model of mse.
    let out = performance(&reference, &analysis, &models[2..3], &["--metrics", "rmse"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<&String> = v["chunks"][0]["metrics"]
        .as_object()
        .expect("metrics")
        .keys()
        .collect();
    assert_eq!(names, ["rmse"]);
}
