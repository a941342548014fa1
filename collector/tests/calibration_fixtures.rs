//! NannyML's calibration step against NumPy, scikit-learn and NannyML
//! 0.13.1 on the generated cases (`fixtures/generate_calibration.py` →
//! `calibration_cases.json`): the legacy RandomState's permutations and
//! scikit-learn's stratified splits exactly; isotonic predictions to
//! 1e-12; the calibration errors before and after to 1e-12 relative, with
//! the scores sorted stably; `needs_calibration`'s decision as NannyML's.
//! NannyML sorts with NumPy's default argsort, which orders tied scores as
//! the machine's SIMD sort happens to; isotonic scores tie in long runs,
//! so its error after calibration moves with the machine where ties
//! straddle a bin edge (by up to 0.008 in these cases), and a decision that
//! close to the boundary is NannyML's on one machine and not another: such
//! a case is reported, and decided here in the stable order.

use driftwatch::stats::calibration::{needs_calibration, stratified_shuffle_split, Isotonic};
use driftwatch::stats::numpy_rng::RandomState;
use serde_json::{json, Value};

fn cases() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/calibration_cases.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture file"))
        .expect("fixture JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn ints(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("integer") as usize)
        .collect()
}

#[test]
fn permutations_and_stratified_splits_are_numpy_s_and_scikit_learn_s() {
    let c = cases();
    let rng = c["rng"].as_array().expect("rng cases");
    for case in rng {
        let seed = case["seed"].as_u64().expect("seed") as u32;
        let n = case["n"].as_u64().expect("n") as usize;
        assert_eq!(
            RandomState::new(seed).permutation(n),
            ints(&case["permutation"]),
            "seed {seed}, n {n}"
        );
    }
    let splits = c["splits"].as_array().expect("split cases");
    for (k, case) in splits.iter().enumerate() {
        let classes: Vec<i64> = ints(&case["classes"]).iter().map(|&c| c as i64).collect();
        let got = stratified_shuffle_split(&classes, 10, 0.1, 42).expect("splittable");
        let want = case["splits"].as_array().expect("splits");
        assert_eq!(got.len(), want.len());
        for (s, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.0, ints(&w["train"]), "case {k} split {s}: train");
            assert_eq!(g.1, ints(&w["test"]), "case {k} split {s}: test");
        }
    }
    assert!(rng.len() >= 30 && splits.len() >= 6);
}

#[test]
fn isotonic_calibration_predicts_what_scikit_learn_does() {
    let c = cases();
    let mut checked = 0;
    for case in c["isotonic"].as_array().expect("isotonic cases") {
        let iso = Isotonic::fit(&floats(&case["x"]), &floats(&case["y"])).expect("fit");
        for (q, want) in floats(&case["q"]).iter().zip(floats(&case["predict"])) {
            let got = iso.predict(*q);
            assert!((got - want).abs() <= 1e-12, "at {q}: {got} against {want}");
            checked += 1;
        }
    }
    assert!(checked > 300, "{checked}");
}

#[test]
fn the_calibration_decision_is_nannyml_s() {
    let c = cases();
    let cases = c["needs"].as_array().expect("needs cases");
    let (mut same, mut tie_bound) = (0, 0);
    for case in cases {
        let shape = case["shape"].as_str().expect("shape");
        let y = floats(&case["y"]);
        let p = floats(&case["p"]);
        let got = needs_calibration(&y, &p, 10).expect("checkable");
        let nannyml = case["needs"].as_bool().expect("bool");
        let Some(before) = case["ece_before_stable"].as_f64() else {
            // Decided before any split: one class, or an AUC above 0.999.
            assert_eq!(got.needed, nannyml, "{shape}");
            assert_eq!(got.ece_before, None);
            same += 1;
            continue;
        };
        let after = case["ece_after_stable"].as_f64().expect("after");
        let rel = |g: f64, w: f64| ((g - w) / w).abs() < 1e-12;
        assert!(
            rel(got.ece_before.expect("split"), before),
            "{shape}: {got:?}, before {before}"
        );
        assert!(
            rel(got.ece_after.expect("split"), after),
            "{shape}: {got:?}, after {after}"
        );
        assert_eq!(got.needed, before > after, "{shape}");
        // NannyML's own figures, in NumPy's order of tied scores.
        let nannyml_margin = case["ece_before"].as_f64().expect("before")
            - case["ece_after"].as_f64().expect("after");
        if (nannyml_margin > 0.0) == (before > after) {
            assert_eq!(got.needed, nannyml, "{shape}");
            same += 1;
        } else {
            eprintln!(
                "{shape}: NannyML's margin {nannyml_margin:+.4} turns on how this machine's NumPy orders tied scores; in a stable order it is {:+.4}",
                before - after
            );
            tie_bound += 1;
        }
    }
    eprintln!("{same} decisions as NannyML's, {tie_bound} within the tie-order band");
    assert!(same >= 7 && tie_bound <= 1, "{same} / {tie_bound}");
    assert!(cases.iter().filter(|c| c["needs"] == true).count() >= 3);
    assert!(cases.iter().filter(|c| c["needs"] == false).count() >= 3);
}

#[test]
fn binary_estimates_are_nannyml_s() {
    use driftwatch::stats::cbpe;
    let c = cases();
    let mut checked = 0;
    for (k, case) in c["estimates"]
        .as_array()
        .expect("estimate cases")
        .iter()
        .enumerate()
    {
        let predicted: Vec<bool> = ints(&case["predicted"]).iter().map(|&v| v == 1).collect();
        let calibrated = floats(&case["calibrated"]);
        let score = floats(&case["score"]);
        let got = [
            ("accuracy", cbpe::accuracy(&predicted, &calibrated)),
            ("precision", cbpe::precision(&predicted, &calibrated)),
            ("recall", cbpe::recall(&predicted, &calibrated)),
            ("specificity", cbpe::specificity(&predicted, &calibrated)),
            ("f1", cbpe::f1(&predicted, &calibrated)),
            ("roc_auc", cbpe::roc_auc(&calibrated, &score)),
            (
                "average_precision",
                cbpe::average_precision(&calibrated, &score),
            ),
        ];
        for (name, g) in got {
            match case[name].as_f64() {
                None => assert!(g.is_nan(), "case {k} {name}: {g}, expected NaN"),
                Some(w) => assert!(
                    (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "case {k} {name}: {g}, expected {w}"
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 35);
}

#[test]
fn binary_sampling_errors_are_nannyml_s() {
    use driftwatch::stats::cbpe::{self, ErrorComponents};
    let c = cases();
    let mut checked = 0;
    for (k, case) in c["sampling_errors"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let truth: Vec<bool> = ints(&case["truth"]).iter().map(|&v| v == 1).collect();
        let predicted: Vec<bool> = ints(&case["predicted"]).iter().map(|&v| v == 1).collect();
        let score = floats(&case["score"]);
        let got: [(&str, Option<ErrorComponents>); 6] = [
            (
                "accuracy",
                Some(cbpe::accuracy_error_components(&truth, &predicted)),
            ),
            (
                "precision",
                Some(cbpe::precision_error_components(&truth, &predicted)),
            ),
            (
                "recall",
                Some(cbpe::recall_error_components(&truth, &predicted)),
            ),
            (
                "specificity",
                Some(cbpe::specificity_error_components(&truth, &predicted)),
            ),
            ("f1", cbpe::f1_error_components(&truth, &predicted)),
            (
                "roc_auc",
                Some(cbpe::roc_auc_error_components(&truth, &score)),
            ),
        ];
        for (name, g) in got {
            let want = &case[name];
            let Some(g) = g else {
                assert!(want["std"].is_null(), "case {k} {name}");
                continue;
            };
            let close = |a: f64, b: &Value| {
                let b = b.as_f64().expect("number");
                (a - b).abs() <= 1e-12 * b.abs().max(1e-300)
            };
            assert!(
                close(g.std, &want["std"]),
                "case {k} {name}: {g:?} against {want}"
            );
            assert!(
                close(g.fraction, &want["fraction"]),
                "case {k} {name}: {g:?} against {want}"
            );
            assert!(
                close(g.sampling_error(100), &want["error_100"]),
                "case {k} {name}"
            );
            assert!(
                close(g.sampling_error(1234), &want["error_1234"]),
                "case {k} {name}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 24);
}

/// A case's chunking (`chunk_number` or `chunk_size`).
fn chunking(case: &Value) -> driftwatch::stats::estimation::Chunking {
    use driftwatch::stats::estimation::Chunking;
    match (
        case["chunking"]["chunk_number"].as_u64(),
        case["chunking"]["chunk_size"].as_u64(),
    ) {
        (Some(n), _) => Chunking::Number(n as usize),
        (_, Some(s)) => Chunking::Size(s as usize),
        _ => panic!("chunking"),
    }
}

/// A case's chunking and settings.
fn settings(case: &Value) -> driftwatch::stats::estimation::Settings {
    use driftwatch::stats::cbpe::{BusinessValue, Normalize};
    use driftwatch::stats::estimation::{Metric, Settings};
    let mut s = Settings::new(chunking(case));
    s.metrics = case["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| Metric::parse(m.as_str().expect("name")).expect("metric"))
        .collect();
    s.normalize = match case["normalize_confusion_matrix"].as_str() {
        Some("all") => Normalize::All,
        Some("true") => Normalize::True,
        Some("pred") => Normalize::Pred,
        _ => Normalize::None,
    };
    s.business_value = case["business_value_matrix"]
        .as_array()
        .map(|m| BusinessValue {
            matrix: m.iter().map(floats).collect(),
            per_prediction: case["normalize_business_value"] == "per_prediction",
        });
    s
}

/// Every column of every chunk against NannyML's: 1e-9 relative (1e-12
/// absolute near zero), NaN where NannyML has NaN, alerts identical.
/// Returns the number of values compared.
fn compare_chunks(k: usize, got: &driftwatch::stats::estimation::Estimates, want: &Value) -> usize {
    let want = want.as_array().expect("chunks");
    assert_eq!(got.len(), want.len(), "case {k}: chunks");
    let mut checked = 0;
    for ((chunk, estimates), w) in got.iter().zip(want) {
        assert_eq!(chunk.key, w["key"].as_str().expect("key"), "case {k}");
        let names: Vec<&str> = estimates.iter().map(|(n, _)| n.as_str()).collect();
        let wanted: Vec<&str> = w["metrics"]
            .as_object()
            .expect("metrics")
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, wanted, "case {k}: columns");
        for (name, e) in estimates {
            let w = &w["metrics"][name];
            let at = format!("case {k} chunk {} {name}", chunk.key);
            for (field, g) in [
                ("value", e.value),
                ("sampling_error", e.sampling_error),
                ("realized", e.realized),
                ("upper_confidence_boundary", e.upper_confidence_boundary),
                ("lower_confidence_boundary", e.lower_confidence_boundary),
                ("upper_threshold", e.upper_threshold),
                ("lower_threshold", e.lower_threshold),
            ] {
                match (g, w[field].as_f64()) {
                    (None, None) => {}
                    (Some(g), Some(v)) => assert!(
                        (g - v).abs() <= (1e-9 * v.abs()).max(1e-12),
                        "{at} {field}: {g} against {v}"
                    ),
                    (g, v) => panic!("{at} {field}: {g:?} against {v:?}"),
                }
                checked += 1;
            }
            assert_eq!(e.alert, w["alert"].as_bool().expect("alert"), "{at}: alert");
        }
    }
    checked
}

#[test]
fn cbpe_over_chunks_is_nannyml_s() {
    use driftwatch::stats::estimation::{chunks, Fitted, Rows};
    let c = cases();
    let mut checked = 0;
    for (k, case) in c["cbpe"].as_array().expect("cbpe cases").iter().enumerate() {
        let data = |side: &str| {
            let d = &case[side];
            let truth: Vec<bool> = ints(&d["y"]).iter().map(|&v| v == 1).collect();
            let predicted: Vec<bool> = ints(&d["yhat"]).iter().map(|&v| v == 1).collect();
            (floats(&d["p"]), predicted, truth)
        };
        let (rs, rp, rt) = data("reference");
        let (as_, ap, at) = data("analysis");
        let reference = Rows {
            score: &rs,
            predicted: &rp,
            truth: Some(&rt),
        };
        let analysis = Rows {
            score: &as_,
            predicted: &ap,
            truth: Some(&at),
        };
        let settings = settings(case);
        let split = |n: usize| chunks(n, settings.chunking).expect("chunks");
        let fitted = Fitted::fit(&reference, &split(rs.len()), &settings).expect("fit");
        assert_eq!(
            fitted.calibrated,
            case["calibrated"].as_bool().expect("bool"),
            "case {k}"
        );
        let got: Vec<_> = fitted
            .estimate(&reference, &split(rs.len()))
            .into_iter()
            .chain(fitted.estimate(&analysis, &split(as_.len())))
            .collect();
        checked += compare_chunks(k, &got, &case["chunks"]);
    }
    eprintln!("{checked} binary values as NannyML's");
    assert!(checked > 3000, "{checked}");
}

#[test]
fn multiclass_cbpe_is_nannyml_s() {
    use driftwatch::stats::estimation::chunks;
    use driftwatch::stats::multiclass::{ClassRows, Fitted};
    let c = cases();
    let mut checked = 0;
    for (k, case) in c["multiclass"]
        .as_array()
        .expect("multiclass cases")
        .iter()
        .enumerate()
    {
        let classes: Vec<String> = case["classes"]
            .as_array()
            .expect("classes")
            .iter()
            .map(|c| c.as_str().expect("class").to_string())
            .collect();
        let data = |side: &str| {
            let d = &case[side];
            let index = |v: &Value| -> Vec<usize> {
                v.as_array()
                    .expect("labels")
                    .iter()
                    .map(|l| {
                        classes
                            .iter()
                            .position(|c| c == l.as_str().expect("label"))
                            .expect("known")
                    })
                    .collect()
            };
            let p: Vec<Vec<f64>> = classes
                .iter()
                .map(|c| floats(&d[format!("p_{c}")]))
                .collect();
            (p, index(&d["yhat"]), index(&d["y"]))
        };
        let (rp, rpred, rt) = data("reference");
        let (ap, apred, at) = data("analysis");
        let reference = ClassRows {
            probabilities: &rp,
            predicted: &rpred,
            truth: Some(&rt),
        };
        let analysis = ClassRows {
            probabilities: &ap,
            predicted: &apred,
            truth: Some(&at),
        };
        let settings = settings(case);
        let split = |n: usize| chunks(n, settings.chunking).expect("chunks");
        let fitted =
            Fitted::fit(&classes, &reference, &split(rpred.len()), &settings).expect("fit");
        let calibrated: Vec<&str> = classes
            .iter()
            .zip(&fitted.calibrated)
            .filter(|(_, &c)| c)
            .map(|(c, _)| c.as_str())
            .collect();
        assert_eq!(json!(calibrated), case["calibrated_classes"], "case {k}");
        let got: Vec<_> = fitted
            .estimate(&reference, &split(rpred.len()))
            .into_iter()
            .chain(fitted.estimate(&analysis, &split(apred.len())))
            .collect();
        checked += compare_chunks(k, &got, &case["chunks"]);
    }
    eprintln!("{checked} multiclass values as NannyML's");
    assert!(checked > 3000, "{checked}");
}

/// `driftwatch performance` of a binary model (`p`, `yhat`, `y`) on
/// `reference` and `analysis` with `extra` flags.
fn binary_performance(
    reference: &std::path::Path,
    analysis: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .arg("performance")
        .arg("--reference")
        .arg(reference)
        .arg("--analysis")
        .arg(analysis)
        .args([
            "--task",
            "binary",
            "--target",
            "y",
            "--prediction",
            "yhat",
            "--score",
            "p",
        ])
        .args(extra)
        .output()
        .expect("run driftwatch")
}

/// Writes one side of a CBPE case as CSV (`p`, `yhat`, `y`).
fn write_csv(path: &std::path::Path, side: &Value, with_target: bool) {
    let (p, yhat, y) = (floats(&side["p"]), ints(&side["yhat"]), ints(&side["y"]));
    let mut text = String::from(if with_target {
        "p,yhat,y\n"
    } else {
        "p,yhat\n"
    });
    for i in 0..p.len() {
        // `{:?}` writes the shortest text that reads back as the same f64.
        text += &match with_target {
            true => format!("{:?},{},{}\n", p[i], yhat[i], y[i]),
            false => format!("{:?},{}\n", p[i], yhat[i]),
        };
    }
    std::fs::write(path, text).expect("write csv");
}

#[test]
fn driftwatch_performance_prints_nannyml_s_estimates_and_refuses_bad_input() {
    let c = cases();
    let case = &c["cbpe"][0];
    let dir = driftwatch_testkit::temp_dir("performance-cli");
    std::fs::create_dir_all(&dir).expect("dir");
    let (reference, analysis) = (dir.join("reference.csv"), dir.join("analysis.csv"));
    write_csv(&reference, &case["reference"], true);
    write_csv(&analysis, &case["analysis"], true);
    let run = |extra: &[&str], reference: &std::path::Path| {
        binary_performance(reference, &analysis, extra)
    };
    let out = run(
        &[
            "--chunk-number",
            "10",
            "--metrics",
            "roc_auc,f1,precision,recall,specificity,accuracy,average_precision,confusion_matrix,business_value",
            "--business-value-matrix",
            "0,-5,-10,20",
        ],
        &reference,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(got["method"], "cbpe");
    assert_eq!(got["calibrated"], case["calibrated"]);
    assert_eq!(got["reference_chunks"], 10);
    let want = case["chunks"].as_array().expect("chunks");
    let chunks = got["chunks"].as_array().expect("chunks");
    assert_eq!(chunks.len(), want.len());
    for (g, w) in chunks.iter().zip(want) {
        assert_eq!(g["key"], w["key"]);
        assert_eq!(g["period"], w["period"]);
        let metrics = w["metrics"].as_object().expect("metrics");
        assert_eq!(metrics.len(), 12);
        assert_eq!(g["metrics"].as_object().expect("metrics").len(), 12);
        for (metric, w) in metrics {
            let g = &g["metrics"][metric];
            for field in [
                "value",
                "sampling_error",
                "realized",
                "lower_threshold",
                "upper_threshold",
            ] {
                match (g[field].as_f64(), w[field].as_f64()) {
                    (Some(a), Some(b)) => assert!(
                        (a - b).abs() <= (1e-9 * b.abs()).max(1e-12),
                        "{metric} {field}: {a} against {b}"
                    ),
                    (a, b) => assert_eq!(a, b, "{metric} {field}"),
                }
            }
            assert_eq!(g["alert"], w["alert"], "{metric}");
        }
    }
    // The same as HTML: a chart per metric, a point per chunk for the
    // estimate and the realized value, the alerts marked and counted.
    let out = run(&["--chunk-number", "10", "--format", "html"], &reference);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(html.starts_with("<!doctype html>") && !html.contains("<script"));
    assert_eq!(
        html.matches("<svg").count(),
        6,
        "one chart per default metric"
    );
    assert_eq!(html.matches("<polygon class=\"band\"").count(), 6);
    let points = html.matches("<circle").count();
    assert_eq!(
        points,
        6 * 2 * want.len(),
        "estimate and realized per chunk"
    );
    let alerts: usize = want
        .iter()
        .flat_map(|c| {
            [
                "roc_auc",
                "f1",
                "precision",
                "recall",
                "specificity",
                "accuracy",
            ]
            .map(|m| c["metrics"][m]["alert"] == true)
        })
        .filter(|&a| a)
        .count();
    assert_eq!(html.matches("<circle class=\"alert\"").count(), alerts);
    // Bad input: a clear error naming what is wrong, exit status 2.
    let bad = dir.join("bad.csv");
    let text = std::fs::read_to_string(&reference).expect("read");
    std::fs::write(&bad, text.replacen("\n0.", "\n1.5", 1)).expect("write");
    let out = run(&[], &bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("column \"p\", row 0") && err.contains("not a probability"),
        "{err}"
    );
    let one_class: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| match i {
            0 => format!("{l}\n"),
            _ => format!("{},0\n", l.rsplit_once(',').expect("row").0),
        })
        .collect();
    std::fs::write(&bad, one_class).expect("write");
    let err = String::from_utf8_lossy(&run(&[], &bad).stderr).to_string();
    assert!(err.contains("has one class only"), "{err}");
    let err =
        String::from_utf8_lossy(&run(&["--chunk-size", "2000"], &reference).stderr).to_string();
    assert!(
        err.contains("makes 0 chunk(s)") || err.contains("makes 1 chunk(s)"),
        "{err}"
    );
    let out = run(&["--chunk-number", "4"], &reference);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only 4 reference chunks"));
    let err = String::from_utf8_lossy(&run(&["--metrics", "roc_auc,mape"], &reference).stderr)
        .to_string();
    assert!(err.contains("unknown metric \"mape\""), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn confusion_matrix_estimates_and_errors_are_nannyml_s() {
    use driftwatch::stats::cbpe::{self, Cell, Normalize};
    let c = cases();
    let mut checked = 0;
    for case in c["confusion"].as_array().expect("confusion cases") {
        let p = floats(&case["p"]);
        let predicted: Vec<bool> = ints(&case["yhat"]).iter().map(|&v| v == 1).collect();
        let truth: Vec<bool> = ints(&case["y"]).iter().map(|&v| v == 1).collect();
        for w in case["cells"].as_array().expect("cells") {
            let cell = match w["cell"].as_str().expect("cell") {
                "true_positive" => Cell::TruePositive,
                "true_negative" => Cell::TrueNegative,
                "false_positive" => Cell::FalsePositive,
                _ => Cell::FalseNegative,
            };
            let by = match w["normalize"].as_str().expect("normalize") {
                "none" => Normalize::None,
                "all" => Normalize::All,
                "true" => Normalize::True,
                _ => Normalize::Pred,
            };
            let at = format!("{cell:?} {by:?}");
            let close = |g: f64, key: &str| {
                let v = w[key].as_f64().expect("number");
                assert!(
                    (g - v).abs() <= 1e-12 * v.abs().max(1.0),
                    "{at} {key}: {g} against {v}"
                );
            };
            close(
                cbpe::confusion_estimate(cell, by, &predicted, &p),
                "estimate",
            );
            let e = cbpe::confusion_error_components(cell, by, &truth, &predicted);
            close(e.std, "std");
            close(e.proportion, "proportion");
            close(e.sampling_error(100), "error_100");
            close(e.sampling_error(777), "error_777");
            checked += 1;
        }
    }
    assert_eq!(checked, 32);
}

#[test]
fn driftwatch_performance_estimates_a_multiclass_model_as_nannyml_does() {
    let c = cases();
    let case = &c["multiclass"][1];
    let dir = driftwatch_testkit::temp_dir("performance-multiclass");
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |name: &str, side: &Value, edit: &dyn Fn(usize, String) -> String| {
        let columns = ["p_bird", "p_cat", "p_dog", "yhat", "y"];
        let mut text = columns.join(",") + "\n";
        for i in 0..side["y"].as_array().expect("rows").len() {
            let row: Vec<String> = columns
                .iter()
                .map(|c| match &side[*c][i] {
                    Value::String(s) => s.clone(),
                    v => format!("{:?}", v.as_f64().expect("number")),
                })
                .collect();
            text += &edit(i, row.join(","));
            text += "\n";
        }
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write csv");
        path
    };
    let keep = |_: usize, row: String| row;
    let reference = write("reference.csv", &case["reference"], &keep);
    let analysis = write("analysis.csv", &case["analysis"], &keep);
    let run = |reference: &std::path::Path, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"))
            .arg("performance")
            .arg("--reference")
            .arg(reference)
            .arg("--analysis")
            .arg(&analysis)
            .args([
                "--task",
                "multiclass",
                "--target",
                "y",
                "--prediction",
                "yhat",
            ])
            .args(["--probabilities", "dog=p_dog,bird=p_bird,cat=p_cat"])
            .args(extra)
            .output()
            .expect("run driftwatch")
    };
    let out = run(
        &reference,
        &[
            "--chunk-size",
            "150",
            "--metrics",
            "roc_auc,f1,precision,recall,specificity,accuracy,average_precision,confusion_matrix,business_value",
            "--normalize-confusion-matrix",
            "true",
            // The case's 3 × 3 matrix, a row per actual class (sorted).
            "--business-value-matrix",
            &case["business_value_matrix"]
                .as_array()
                .expect("matrix")
                .iter()
                .flat_map(floats)
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(","),
            "--normalize-business-value",
            "per_prediction",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(got["task"], "multiclass");
    assert_eq!(got["calibrated_classes"], case["calibrated_classes"]);
    let (chunks, want) = (
        got["chunks"].as_array().expect("chunks"),
        case["chunks"].as_array().expect("chunks"),
    );
    assert_eq!(chunks.len(), want.len());
    let mut checked = 0;
    for (g, w) in chunks.iter().zip(want) {
        assert_eq!(g["key"], w["key"]);
        let metrics = w["metrics"].as_object().expect("metrics");
        assert_eq!(
            g["metrics"].as_object().expect("metrics").len(),
            metrics.len()
        );
        for (metric, w) in metrics {
            for (field, want) in w.as_object().expect("fields") {
                let g = &g["metrics"][metric][field];
                match (g.as_f64(), want.as_f64()) {
                    (Some(a), Some(b)) => assert!(
                        (a - b).abs() <= (1e-9 * b.abs()).max(1e-12),
                        "{metric} {field}: {a} against {b}"
                    ),
                    _ => assert_eq!(g, want, "{metric} {field}"),
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "{checked}");
    // Bad input: probabilities that do not sum to 1, a class without a
    // probability column, a binary flag on a multiclass task.
    let bad = write("bad.csv", &case["reference"], &|i, row| match i {
        3 => row.replacen("0.", "0.9", 1),
        _ => row,
    });
    let err = String::from_utf8_lossy(&run(&bad, &[]).stderr).to_string();
    assert!(err.contains("row 3") && err.contains("not 1"), "{err}");
    let bad = write("bad.csv", &case["reference"], &|i, row| match i {
        5 => format!(
            "{},fish,{}",
            row.splitn(4, ',').take(3).collect::<Vec<_>>().join(","),
            row.rsplit(',').next().expect("y")
        ),
        _ => row,
    });
    let err = String::from_utf8_lossy(&run(&bad, &[]).stderr).to_string();
    assert!(err.contains("row 5") && err.contains("\"fish\""), "{err}");
    let err = String::from_utf8_lossy(&run(&reference, &["--score", "p_dog"]).stderr).to_string();
    assert!(err.contains("--score is for a binary task"), "{err}");
    let err = String::from_utf8_lossy(
        &run(
            &reference,
            &[
                "--metrics",
                "business_value",
                "--business-value-matrix",
                "1,2,3,4",
            ],
        )
        .stderr,
    )
    .to_string();
    assert!(
        err.contains("the business value matrix is 2 × 2, the model has 3 classes"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn driftwatch_performance_chunks_by_period_as_nannyml_does() {
    let c = cases();
    let dir = driftwatch_testkit::temp_dir("performance-period");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut checked = 0;
    for (k, case) in c["period"]
        .as_array()
        .expect("period cases")
        .iter()
        .enumerate()
    {
        let write = |name: &str, side: &Value| {
            let mut text = String::from("ts,p,yhat,y\n");
            for i in 0..side["y"].as_array().expect("rows").len() {
                text += &format!(
                    "{},{:?},{},{}\n",
                    side["ts"][i].as_str().expect("ts"),
                    side["p"][i].as_f64().expect("p"),
                    side["yhat"][i],
                    side["y"][i]
                );
            }
            let path = dir.join(format!("{k}-{name}.csv"));
            std::fs::write(&path, text).expect("write csv");
            path
        };
        let (reference, analysis) = (
            write("reference", &case["reference"]),
            write("analysis", &case["analysis"]),
        );
        let period = case["chunk_period"].as_str().expect("period");
        let out = binary_performance(
            &reference,
            &analysis,
            &["--timestamp", "ts", "--chunk-period", period],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(got["calibrated"], case["calibrated"], "case {k}");
        let (chunks, want) = (
            got["chunks"].as_array().expect("chunks"),
            case["chunks"].as_array().expect("chunks"),
        );
        assert_eq!(chunks.len(), want.len(), "case {k}");
        for (g, w) in chunks.iter().zip(want) {
            for field in ["key", "period", "start_index", "end_index"] {
                assert_eq!(g[field], w[field], "case {k} {field}");
            }
            for (metric, w) in w["metrics"].as_object().expect("metrics") {
                for (field, want) in w.as_object().expect("fields") {
                    let g = &g["metrics"][metric][field];
                    match (g.as_f64(), want.as_f64()) {
                        (Some(a), Some(b)) => assert!(
                            (a - b).abs() <= (1e-9 * b.abs()).max(1e-12),
                            "case {k} {} {metric} {field}: {a} against {b}",
                            w["key"]
                        ),
                        _ => assert_eq!(g, want, "case {k} {metric} {field}"),
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1500, "{checked}");
    // A timestamp that is not one names its row; a period without a column.
    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        "ts,p,yhat,y\n2024-01-01 00:00:00,0.4,0,0\nyesterday,0.6,1,1\n",
    )
    .expect("write");
    let out = binary_performance(&bad, &bad, &["--timestamp", "ts", "--chunk-period", "D"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("row 1") && err.contains("\"yesterday\" is not a date-time"),
        "{err}"
    );
    let out = binary_performance(
        &bad,
        &bad,
        &["--chunk-period", "fortnight", "--timestamp", "ts"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown chunk period \"fortnight\""), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reconstruction_drift_is_nannyml_s() {
    use driftwatch::stats::estimation::chunks;
    use driftwatch::stats::reconstruction::{Column, Fitted, Input};
    use driftwatch::stats::Key;
    let c = cases();
    let mut checked = 0;
    for (k, case) in c["reconstruction"]
        .as_array()
        .expect("cases")
        .iter()
        .enumerate()
    {
        let chunking = chunking(case);
        let numeric = |side: &str, col: &str| -> Vec<Option<f64>> {
            case[side][col]
                .as_array()
                .expect("column")
                .iter()
                .map(Value::as_f64)
                .collect()
        };
        let categorical = |side: &str| -> Vec<Option<Key>> {
            case[side]["cat"]
                .as_array()
                .expect("column")
                .iter()
                .map(|v| v.as_str().map(|s| Key::Str(s.to_string())))
                .collect()
        };
        let names = ["a", "b", "c", "cat"];
        let side = |s: &str| {
            (
                numeric(s, "a"),
                numeric(s, "b"),
                numeric(s, "c"),
                categorical(s),
            )
        };
        let (ra, rb, rc, rcat) = side("reference");
        let (aa, ab, ac, acat) = side("analysis");
        let reference_chunks = chunks(ra.len(), chunking).expect("chunks");
        let fitted = Fitted::fit(
            &names,
            &[
                Column::Numeric(&ra),
                Column::Numeric(&rb),
                Column::Numeric(&rc),
                Column::Categorical(&rcat),
            ],
            &reference_chunks,
        )
        .expect("fit");
        assert_eq!(
            fitted.components() as u64,
            case["components"].as_u64().expect("k"),
            "case {k}"
        );
        let errors = |a: &[Option<f64>],
                      b: &[Option<f64>],
                      c: &[Option<f64>],
                      cat: &[Option<Key>]|
         -> Vec<f64> {
            (0..a.len())
                .map(|i| {
                    fitted.row_error(|j| {
                        let num = |v: Option<f64>| v.map_or(Input::Missing, Input::Num);
                        match j {
                            0 => num(a[i]),
                            1 => num(b[i]),
                            2 => num(c[i]),
                            _ => cat[i].as_ref().map_or(Input::Missing, Input::Cat),
                        }
                    })
                })
                .collect()
        };
        let (re, ae) = (errors(&ra, &rb, &rc, &rcat), errors(&aa, &ab, &ac, &acat));
        let got: Vec<_> = reference_chunks
            .iter()
            .map(|ch| (ch.key.clone(), fitted.drift(&re[ch.rows()])))
            .chain(
                chunks(aa.len(), chunking)
                    .expect("chunks")
                    .iter()
                    .map(|ch| (ch.key.clone(), fitted.drift(&ae[ch.rows()]))),
            )
            .collect();
        let want = case["chunks"].as_array().expect("chunks");
        assert_eq!(got.len(), want.len(), "case {k}");
        for ((key, d), w) in got.iter().zip(want) {
            assert_eq!(key, w["key"].as_str().expect("key"), "case {k}");
            for (field, g) in [
                ("value", d.value),
                ("sampling_error", d.sampling_error),
                ("upper_confidence_boundary", d.upper_confidence_boundary),
                ("lower_confidence_boundary", d.lower_confidence_boundary),
                ("upper_threshold", d.upper_threshold),
                ("lower_threshold", d.lower_threshold),
            ] {
                match (g, w[field].as_f64()) {
                    (None, None) => {}
                    (Some(g), Some(v)) => assert!(
                        (g - v).abs() <= (1e-9 * v.abs()).max(1e-12),
                        "case {k} {key} {field}: {g} against {v}"
                    ),
                    (g, v) => panic!("case {k} {key} {field}: {g:?} against {v:?}"),
                }
                checked += 1;
            }
            assert_eq!(
                d.alert,
                w["alert"].as_bool().expect("alert"),
                "case {k} {key}: alert"
            );
        }
    }
    assert!(checked > 150, "{checked}");
}
