//! What the live collector says about the models' own outputs: prediction
//! drift against the reference's prediction column (equal to `driftwatch
//! report` on the same values), latency quantiles per role, and the
//! Wilcoxon champion-vs-shadow test of a regression model.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::examples::serve_args;
use common::server::Server;
use serde_json::Value;

/// A directory with a reference of `age` and the model's `score` on it.
fn reference_dir() -> PathBuf {
    let dir = common::server::temp_db_dir();
    let mut csv = String::from("age,score\n");
    for i in 0..300 {
        csv.push_str(&format!(
            "{},{}\n",
            20 + (i * 7) % 50,
            ((i * 37) % 100) as f64 / 100.0 + 0.005
        ));
    }
    std::fs::write(dir.join("reference.csv"), csv).expect("reference");
    dir
}

/// Champion and shadow scores and latencies of request `i`.
fn outputs(i: usize) -> (f64, f64, f64, f64) {
    let champion = ((i * 13) % 100) as f64 / 125.0 + 0.2;
    let shadow = ((i * 37) % 100) as f64 / 100.0 + 0.005;
    (
        champion,
        shadow,
        (i % 97) as f64 + 0.5,
        (i % 11) as f64 * 0.25,
    )
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `driftwatch report` of the `score` column: reference against `scores`.
fn report_on_scores(dir: &Path, role: &str, scores: &[f64]) -> Value {
    let current = dir.join(format!("{role}.csv"));
    let mut csv = String::from("score\n");
    for s in scores {
        csv.push_str(&format!("{s}\n"));
    }
    std::fs::write(&current, csv).expect("current");
    let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["report", "--columns", "score", "--reference"])
        .arg(dir.join("reference.csv"))
        .arg("--current")
        .arg(&current)
        .output()
        .expect("report");
    let report: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    report["columns"][0].clone()
}

/// NumPy's default percentile: linear between the order statistics.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    match sorted.get(lo + 1) {
        Some(hi) => sorted[lo] + (hi - sorted[lo]) * (pos - lo as f64),
        None => sorted[lo],
    }
}

#[test]
fn prediction_drift_equals_the_report_on_the_same_outputs_and_latency_quantiles_are_exact() {
    let dir = reference_dir();
    let reference = dir.join("reference.csv");
    let extra = [
        "--prediction-column",
        "score",
        "--window",
        "1d",
        "--eval-interval",
        "100ms",
    ];
    let server = Server::start(&serve_args("scorer", &reference, &extra), &[]);
    let ts = now_rfc3339();
    let n = 400;
    let events: Vec<String> = (0..n)
        .map(|i| {
            let (c, s, cl, sl) = outputs(i);
            // Every 50th shadow call failed: its output is not a prediction.
            let shadow = if i % 50 == 49 {
                r#"{"error": "timeout"}"#.to_string()
            } else {
                format!(r#"{{"label": "1", "score": {s}, "latency_ms": {sl}}}"#)
            };
            format!(
                r#"{{"model": "scorer", "request_id": "q{i}", "timestamp": "{ts}", "features": {{"age": {}}}, "champion": {{"label": "1", "score": {c}, "latency_ms": {cl}}}, "shadow": {shadow}}}"#,
                18 + (i * 11) % 60
            )
        })
        .collect();
    server.post_items("/v1/events", "events", &events);
    server.wait_for_samples("scorer", "1d", n as u64);

    // The prediction column is not a feature.
    let (_, body) = server.request("GET", "/v1/models", &[], b"");
    let models: Value = serde_json::from_str(&body).expect("JSON");
    let model = &models["models"][0];
    assert_eq!(
        model["features"].as_array().map(Vec::len),
        Some(1),
        "{model}"
    );
    assert_eq!(model["prediction"]["output"], "score", "{model}");

    let champion: Vec<f64> = (0..n).map(|i| outputs(i).0).collect();
    let shadow: Vec<f64> = (0..n)
        .filter(|i| i % 50 != 49)
        .map(|i| outputs(i).1)
        .collect();
    let mut compared = 0;
    for (role, scores) in [("champion", &champion), ("shadow", &shadow)] {
        let col = report_on_scores(&dir, role, scores);
        let series = [("model", "scorer"), ("role", role), ("window", "1d")];
        compared += server.assert_column_matches("prediction", &col, &series);
    }
    assert!(compared >= 10, "{compared}");
    // The champion's scores are shifted: its default test sees it.
    assert_eq!(
        server.metric(
            "driftwatch_prediction_drift_detected",
            &[("role", "champion")]
        ),
        Some(1.0)
    );

    let (status, body) = server.request("GET", "/v1/models/scorer/windows?window=1d", &[], b"");
    assert_eq!(status, 200, "{body}");
    let windows: Value = serde_json::from_str(&body).expect("JSON");
    let live = &windows["windows"][0];
    assert_eq!(live["prediction_drift"]["shadow"]["name"], "score");
    for (role, pick) in [
        (
            "champion",
            (|i| Some(outputs(i).2)) as fn(usize) -> Option<f64>,
        ),
        ("shadow", |i| (i % 50 != 49).then(|| outputs(i).3)),
    ] {
        let mut ms: Vec<f64> = (0..n).filter_map(pick).collect();
        ms.sort_by(f64::total_cmp);
        let got = &live["traffic"][role]["latency_ms"];
        for (key, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
            let want = percentile(&ms, q);
            let v = got[key].as_f64().expect("quantile");
            assert!(
                (v - want).abs() <= 1e-9 * want.max(1.0),
                "{role} {key}: {v} vs {want}"
            );
        }
    }
    assert_eq!(live["traffic"]["champion"]["predictions"], n);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_regression_shadow_is_compared_by_wilcoxon_on_absolute_errors() {
    let dir = reference_dir();
    let config = driftwatch_testkit::file(&dir, "driftwatch.yaml", format!(
            "eval_interval: 100ms\nmodels:\n  - name: price\n    task: regression\n    reference: {}\n    prediction: {{column: score}}\n    windows: [1d]\n",
            dir.join("reference.csv").display()
        ));
    let server = Server::start(&["--config", config.to_str().expect("UTF-8")], &[]);
    let ts = now_rfc3339();
    // Truth y; the shadow's error is about half the champion's.
    let case = |i: usize| {
        let y = (i % 17) as f64 + 1.0;
        let e = ((i * 7) % 11) as f64 / 10.0 - 0.5;
        (y + e + 0.3, y + e / 2.0 + 0.1, y)
    };
    let n = 120;
    let events: Vec<String> = (0..n)
        .map(|i| {
            let (c, s, _) = case(i);
            format!(
                r#"{{"model": "price", "request_id": "v{i}", "timestamp": "{ts}", "features": {{"age": 40}}, "champion": {{"value": {c}}}, "shadow": {{"value": {s}}}}}"#
            )
        })
        .collect();
    server.post_items("/v1/events", "events", &events);
    let labels: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"model": "price", "request_id": "v{i}", "value": {}}}"#,
                case(i).2
            )
        })
        .collect();
    server.post_items("/v1/feedback", "labels", &labels);
    let diffs: Vec<f64> = (0..n)
        .map(|i| {
            let (c, s, y) = case(i);
            (c - y).abs() - (s - y).abs()
        })
        .collect();
    let want = driftwatch::stats::wilcoxon::wilcoxon(&diffs).expect("differences");
    assert!(want.p_value < 0.05, "{want:?}");
    server.wait_for(
        std::time::Duration::from_secs(20),
        "the Wilcoxon verdict",
        |s| {
            s.metric(
                "driftwatch_shadow_comparison_verdict",
                &[("model", "price")],
            ) == Some(1.0)
        },
    );
    assert_eq!(
        server.metric(
            "driftwatch_shadow_comparison_p_value",
            &[("model", "price")]
        ),
        Some(want.p_value)
    );
    let mae = |role: &str| {
        server.metric(
            "driftwatch_model_performance",
            &[("model", "price"), ("role", role), ("metric", "mae")],
        )
    };
    let want_mae = |pick: fn((f64, f64, f64)) -> f64| {
        (0..n)
            .map(|i| (pick(case(i)) - case(i).2).abs())
            .sum::<f64>()
            / n as f64
    };
    let (c, s) = (mae("champion").expect("mae"), mae("shadow").expect("mae"));
    assert!((c - want_mae(|t| t.0)).abs() < 1e-12 && (s - want_mae(|t| t.1)).abs() < 1e-12);
    let (_, body) = server.request("GET", "/v1/models/price/windows", &[], b"");
    let windows: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        windows["windows"][0]["shadow"]["test"], "wilcoxon",
        "{body}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
