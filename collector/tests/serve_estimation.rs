//! Performance estimated live before the labels arrive (NannyML's CBPE
//! for classifiers, DLE for regression): a window's estimates over HTTP
//! and as gauges equal `driftwatch performance` on the same outputs, for
//! the champion and the shadow, with outputs the estimator cannot use
//! counted, not guessed.

mod common;

use std::path::Path;

use common::examples::{
    dle_fixtures, dle_performance, events_from_csv, example, nanny_models, run_cli,
};
use common::server::Server;
use serde_json::Value;

/// An output's predicted class and score.
type Scored = (String, f64);

/// The champion's and the shadow's (label, score) of request `i`: scores
/// spread over [0, 1] (the shadow's squeezed towards 0.5, where the
/// estimated accuracy falls); `None` for an output the estimator cannot
/// use (a champion output without a score, a failed shadow call).
fn outputs(i: usize) -> [Option<Scored>; 2] {
    let u = ((i * 7919) % 1000) as f64 / 1000.0 + 0.0005;
    let champion = (i % 26 != 7).then(|| (u32::from(u >= 0.5).to_string(), u));
    let s = 0.3 + 0.4 * (((i * 104_729) % 997) as f64 / 997.0);
    let shadow = (i % 26 != 3).then(|| (u32::from(s >= 0.45).to_string(), s));
    [champion, shadow]
}

/// The first `n` rows of current.csv as events whose champion and shadow
/// outputs are `outputs(i)`'s.
fn scored_events(n: usize, ts: &str) -> Vec<String> {
    events_from_csv(&example("current.csv"), ts)
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(i, e)| {
            let [champion, shadow] = outputs(i);
            let mut e: Value = serde_json::from_str(&e).expect("event");
            e["champion"] = match champion {
                Some((label, score)) => serde_json::json!({"label": label, "score": score}),
                None => serde_json::json!({"label": "1"}),
            };
            e["shadow"] = match shadow {
                Some((label, score)) => serde_json::json!({"label": label, "score": score}),
                None => serde_json::json!({"error": "timeout"}),
            };
            e.to_string()
        })
        .collect()
}

/// `driftwatch performance` of a binary model (the example's columns:
/// target `default`, prediction `label`, score `score`) with `extra` flags.
fn binary_performance(reference: &Path, analysis: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "performance",
        "--reference",
        reference.to_str().expect("UTF-8"),
        "--analysis",
        analysis.to_str().expect("UTF-8"),
        "--task",
        "binary",
        "--target",
        "default",
        "--prediction",
        "label",
        "--score",
        "score",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("JSON")
}

/// `driftwatch performance` of `rows` (label, score) against the example's
/// estimation reference, all rows one chunk (and the reference in chunks
/// of as many rows, as the live model's `chunk_size` says): that chunk's
/// metrics.
fn offline(dir: &Path, role: &str, rows: &[Scored]) -> Value {
    let analysis = dir.join(format!("{role}.csv"));
    let mut csv = String::from("label,score\n");
    for (label, score) in rows {
        // `{:?}`: the shortest text that reads back as the same f64.
        csv.push_str(&format!("{label},{score:?}\n"));
    }
    std::fs::write(&analysis, csv).expect("analysis");
    let result = binary_performance(
        &example("estimation.csv"),
        &analysis,
        &[
            "--chunk-size",
            &rows.len().to_string(),
            "--metrics",
            "roc_auc,f1,precision,recall,specificity,accuracy,confusion_matrix,business_value",
            "--business-value-matrix",
            "0,-100,-500,400",
        ],
    );
    let chunk = result["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .find(|c| c["period"] == "analysis")
        .expect("the analysis chunk")
        .clone();
    assert_eq!(chunk["end_index"], rows.len() - 1);
    chunk["metrics"].clone()
}

/// A collector config of the example model `credit` (the example's
/// reference, one 1-day window, evaluated every 100 ms) with `lines` added
/// to the model, written in `dir`.
fn credit_config(dir: &Path, lines: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let config = dir.join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "eval_interval: 100ms\nmodels:\n  - name: credit\n    positive_class: \"1\"\n    reference: {}\n    windows: [1d]\n{lines}",
            example("reference.csv").display()
        ),
    )
    .expect("config");
    config
}

/// Posts `events` to the server, waits until the model's `1d` window has
/// them all, and returns the window.
fn window_after(server: &Server, model: &str, events: &[String]) -> Value {
    let reply = server.post_items("/v1/events", "events", events);
    assert_eq!(reply["accepted"], events.len(), "{reply}");
    server.wait_for_samples(model, "1d", events.len() as u64);
    fetch_window(server, model)
}

/// The model's `1d` window as the JSON API shows it now.
fn fetch_window(server: &Server, model: &str) -> Value {
    let (status, body) = server.request(
        "GET",
        &format!("/v1/models/{model}/windows?window=1d"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let windows: Value = serde_json::from_str(&body).expect("JSON");
    windows["windows"][0].clone()
}

/// A collector of the example model with `lines` added, the first `n`
/// rows of current.csv posted: the server and its `1d` window.
fn credit_window(dir: &Path, lines: &str, n: usize) -> (Server, Value) {
    let config = credit_config(dir, lines);
    let server = Server::start(&["--config", config.to_str().expect("UTF-8")], &[]);
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let events: Vec<String> = events_from_csv(&example("current.csv"), &ts)
        .into_iter()
        .take(n)
        .collect();
    let window = window_after(&server, "credit", &events);
    (server, window)
}

/// `driftwatch report` of the example's reference and the first `n` rows
/// of current.csv (the rows `credit_window` posts) with `extra` flags.
fn report_first_rows(dir: &Path, n: usize, extra: &[&str]) -> Value {
    let text = std::fs::read_to_string(example("current.csv")).expect("current.csv");
    let current = dir.join("current.csv");
    std::fs::write(
        &current,
        text.lines().take(n + 1).collect::<Vec<_>>().join("\n") + "\n",
    )
    .expect("write");
    let reference = example("reference.csv");
    let mut args = vec![
        "report",
        "--reference",
        reference.to_str().expect("UTF-8"),
        "--current",
        current.to_str().expect("UTF-8"),
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run_cli(&args);
    assert!(code == 0 || code == 1, "{err}");
    serde_json::from_str(&out).expect("JSON")
}

/// An estimate's (or a drift chunk's) fields a live window shares with
/// `driftwatch performance` (or `report --multivariate`).
const FIELDS: [&str; 7] = [
    "value",
    "sampling_error",
    "lower_confidence_boundary",
    "upper_confidence_boundary",
    "lower_threshold",
    "upper_threshold",
    "alert",
];

/// A collector of the example model with `lines` and an `estimation:`
/// block (the example's estimation reference in chunks of `ROWS`, and
/// `estimation_lines`), and the events' timestamp.
fn estimating_server(dir: &Path, lines: &str, estimation_lines: &str) -> (Server, String) {
    let config = credit_config(
        dir,
        &format!(
            "{lines}    estimation:\n      reference: {}\n      target: default\n      prediction: label\n      score: score\n      chunk_size: {ROWS}\n{estimation_lines}",
            example("estimation.csv").display()
        ),
    );
    let server = Server::start(&["--config", config.to_str().expect("UTF-8")], &[]);
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    (server, ts)
}

/// Scored outputs per role of the 260 requests (10 of each role's unusable).
const ROWS: usize = 250;

#[test]
fn a_window_s_estimated_performance_equals_driftwatch_performance_on_the_same_outputs() {
    let dir = driftwatch_testkit::temp_dir("estimation");
    let (server, ts) = estimating_server(
        &dir,
        "",
        "      metrics: [roc_auc, f1, precision, recall, specificity, accuracy, confusion_matrix, business_value]\n      business_value_matrix: [[0, -100], [-500, 400]]\n",
    );
    let n = 260;
    let events = scored_events(n, &ts);
    let live = &window_after(&server, "credit", &events)["estimated_performance"];
    let mut compared = 0;
    for (ri, role) in ["champion", "shadow"].into_iter().enumerate() {
        let rows: Vec<Scored> = (0..n).filter_map(|i| outputs(i)[ri].clone()).collect();
        let got = &live[role];
        assert_eq!(rows.len(), ROWS);
        assert_eq!(got["rows"], rows.len(), "{role}: {got}");
        assert_eq!(got["unscored"], n - rows.len(), "{role}");
        let want = offline(&dir, role, &rows);
        let metrics = want.as_object().expect("metrics");
        assert_eq!(metrics.len(), 11);
        for (metric, w) in metrics {
            let g = &got["metrics"][metric];
            for field in FIELDS {
                // The same rows in the same order: the same bits.
                assert_eq!(g[field], w[field], "{role} {metric} {field}");
                compared += 1;
            }
            let series = [
                ("role", role),
                ("metric", metric.as_str()),
                ("window", "1d"),
            ];
            let gauge = |name: &str| server.metric(name, &series);
            assert_eq!(
                gauge("driftwatch_estimated_performance"),
                w["value"].as_f64(),
                "{role} {metric}"
            );
            assert_eq!(
                gauge("driftwatch_estimated_performance_lower"),
                w["lower_confidence_boundary"].as_f64()
            );
            assert_eq!(
                gauge("driftwatch_estimated_performance_upper"),
                w["upper_confidence_boundary"].as_f64()
            );
            assert_eq!(
                gauge("driftwatch_estimated_performance_alert"),
                w["alert"].as_bool().map(|a| f64::from(u8::from(a)))
            );
        }
    }
    assert_eq!(compared, 2 * 11 * 7);
    // The shadow's scores near 0.5: its estimated accuracy is the lower.
    let accuracy = |role: &str| live[role]["metrics"]["accuracy"]["value"].as_f64();
    assert!(accuracy("shadow") < accuracy("champion"), "{live}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_estimation_block_is_refused_with_its_place_named() {
    let dir = driftwatch_testkit::temp_dir("estimation-bad");
    let write = |estimation: &str| {
        let config = credit_config(
            &dir,
            &format!(
                "    estimation:\n      reference: {}\n{estimation}",
                example("estimation.csv").display()
            ),
        );
        let (code, _, err) = run_cli(&[
            "serve",
            "--config",
            config.to_str().expect("UTF-8"),
            "--listen",
            "127.0.0.1:0",
        ]);
        (code, err)
    };
    let (code, err) = write("      target: default\n      prediction: label\n");
    assert_ne!(code, 0);
    assert!(
        err.contains("models[0] (credit).estimation: a binary model's estimation needs `score`"),
        "{err}"
    );
    let (code, err) = write("      target: default\n      prediction: label\n      score: score\n      metrics: [accuracy, mape]\n");
    assert_ne!(code, 0);
    assert!(err.contains("unknown metric \"mape\""), "{err}");
    let (code, err) = write("      target: nothere\n      prediction: label\n      score: score\n");
    assert_ne!(code, 0);
    assert!(
        err.contains("estimation") && err.contains("no column \"nothere\""),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_window_s_multivariate_drift_equals_report_multivariate_on_the_same_rows() {
    let dir = driftwatch_testkit::temp_dir("multivariate");
    let n = 600;
    let (server, window) = credit_window(&dir, "    multivariate: {}\n", n);
    let live = &window["multivariate"];
    assert_eq!(live["rows"], n, "{live}");
    // The same rows offline: the first 600 rows of current.csv.
    let offline = report_first_rows(&dir, n, &["--multivariate"]);
    let chunk = offline["multivariate"]["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .find(|c| c["period"] == "current")
        .expect("the current chunk")
        .clone();
    assert_eq!(live["components"], offline["multivariate"]["components"]);
    for field in FIELDS {
        // The same rows in the same order: the same bits.
        assert_eq!(live[field], chunk[field], "{field}: {live} vs {chunk}");
    }
    // The drifted rows (lower incomes, a new country) leave the range.
    assert_eq!(live["alert"], true, "{live}");
    let series = [("window", "1d"), ("method", "reconstruction")];
    assert_eq!(
        server.metric("driftwatch_multivariate_drift", &series),
        chunk["value"].as_f64()
    );
    assert_eq!(
        server.metric("driftwatch_multivariate_drift_alert", &series),
        Some(1.0)
    );
    assert_eq!(
        server.metric("driftwatch_multivariate_drift_upper_threshold", &series),
        chunk["upper_threshold"].as_f64()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rows of the DLE fixture's analysis set with a prediction: its header
/// and lines (x1,x2,x3,region,y_pred,y_true).
fn regression_rows(n: usize) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(dle_fixtures().join("analysis.csv")).expect("analysis");
    let mut lines = text.lines();
    let header = lines.next().expect("header").to_string();
    let rows = lines
        .filter(|l| !l.split(',').nth(4).unwrap_or("").is_empty())
        .take(n)
        .map(str::to_string)
        .collect();
    (header, rows)
}

/// A CSV cell as the event's JSON value (empty: null).
fn cell(text: &str, numeric: bool) -> Value {
    match (text.is_empty(), numeric) {
        (true, _) => Value::Null,
        (false, true) => serde_json::json!(text.parse::<f64>().expect("number")),
        (false, false) => serde_json::json!(text),
    }
}

#[test]
fn a_regression_window_s_estimated_performance_equals_driftwatch_performance() {
    let dir = driftwatch_testkit::temp_dir("estimation-dle");
    let models = nanny_models(&dir.join("nanny"));
    let reference = dle_fixtures().join("reference.csv");
    let chunk = 450;
    let config = dir.join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "eval_interval: 100ms\nmodels:\n  - name: prices\n    task: regression\n    reference: {}\n    features: [x1, x2, x3, region]\n    windows: [1d]\n    estimation:\n      target: y_true\n      prediction: y_pred\n      nanny_models: [{}]\n      chunk_size: {chunk}\n",
            reference.display(),
            models.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    )
    .expect("config");
    let server = Server::start(&["--config", config.to_str().expect("UTF-8")], &[]);
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // Every 46th champion output lacks a value, every 46th shadow call
    // fails: 450 usable rows per role of 460.
    let n = 460;
    let (header, rows) = regression_rows(n);
    let shadow_value = |y: f64| (y * 1.15 * 100.0).round() / 100.0;
    let events: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let c: Vec<&str> = line.split(',').collect();
            let y: f64 = c[4].parse().expect("y_pred");
            serde_json::json!({
                "model": "prices", "request_id": format!("r{i}"), "timestamp": ts,
                "features": {"x1": cell(c[0], true), "x2": cell(c[1], true),
                             "x3": cell(c[2], true), "region": cell(c[3], false)},
                "champion": if i % 46 == 7 { serde_json::json!({}) } else { serde_json::json!({"value": y}) },
                "shadow": if i % 46 == 3 { serde_json::json!({"error": "timeout"}) }
                          else { serde_json::json!({"value": shadow_value(y)}) },
            })
            .to_string()
        })
        .collect();
    let live = &window_after(&server, "prices", &events)["estimated_performance"];
    let mut compared = 0;
    for (role, skip) in [("champion", 7), ("shadow", 3)] {
        // The role's rows offline: features and its prediction.
        let analysis = dir.join(format!("{role}.csv"));
        let mut csv = header.clone() + "\n";
        for (_, line) in rows.iter().enumerate().filter(|(i, _)| i % 46 != skip) {
            let mut c: Vec<String> = line.split(',').map(str::to_string).collect();
            if role == "shadow" {
                c[4] = format!("{:?}", shadow_value(c[4].parse().expect("y_pred")));
            }
            csv += &(c.join(",") + "\n");
        }
        std::fs::write(&analysis, csv).expect("analysis");
        let out = dle_performance(
            &reference,
            &analysis,
            &models,
            &["--chunk-size", &chunk.to_string()],
        );
        let (code, out, err) = (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        );
        assert_eq!(code, 0, "{err}");
        let result: Value = serde_json::from_str(&out).expect("JSON");
        let want = result["chunks"]
            .as_array()
            .expect("chunks")
            .iter()
            .find(|c| c["period"] == "analysis")
            .expect("the analysis chunk")["metrics"]
            .clone();
        let got = &live[role];
        assert_eq!(got["rows"], chunk, "{role}: {got}");
        assert_eq!(got["unscored"], n - chunk, "{role}");
        let metrics = want.as_object().expect("metrics");
        assert_eq!(metrics.len(), 6);
        for (metric, w) in metrics {
            for field in FIELDS {
                // The same inputs to the same nanny models: the same bits.
                assert_eq!(
                    got["metrics"][metric][field], w[field],
                    "{role} {metric} {field}"
                );
                compared += 1;
            }
            let series = [
                ("role", role),
                ("metric", metric.as_str()),
                ("window", "1d"),
            ];
            assert_eq!(
                server.metric("driftwatch_estimated_performance", &series),
                w["value"].as_f64(),
                "{role} {metric}"
            );
        }
    }
    assert_eq!(compared, 2 * 6 * 7);
    // Each role is estimated from its own predictions (an input of the
    // nanny models).
    let mae = |role: &str| live[role]["metrics"]["mae"]["value"].as_f64();
    assert_ne!(mae("shadow"), mae("champion"), "{live}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_window_s_segments_equal_report_segment_on_the_same_rows() {
    let dir = driftwatch_testkit::temp_dir("segments");
    let n = 600;
    let (server, window) = credit_window(
        &dir,
        "    segments:\n      columns: [country]\n      top: 3\n",
        n,
    );
    let live = &window["segments"];
    // The same rows offline.
    let offline = report_first_rows(&dir, n, &["--segment", "country", "--segment-top", "3"]);
    // Every segment, column, statistic, p-value, q-value and verdict: the same bits.
    assert_eq!(live, &offline["segments"]);
    let segments = live["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), 4, "{live}");
    let drifted: usize = segments
        .iter()
        .map(|s| s["drifted_columns"].as_u64().unwrap_or(0) as usize)
        .sum();
    assert!(drifted > 0, "{live}");
    for s in segments {
        let value = s["value"].as_str().expect("value");
        let series = [
            ("segment", "country"),
            ("segment_value", value),
            ("window", "1d"),
        ];
        assert_eq!(
            server.metric("driftwatch_segment_events", &series),
            s["current_rows"].as_f64(),
            "{value}"
        );
        for c in s["columns"].as_array().expect("columns") {
            let name = c["name"].as_str().expect("name");
            let series = [
                ("segment", "country"),
                ("segment_value", value),
                ("feature", name),
                ("window", "1d"),
            ];
            assert_eq!(
                server.metric("driftwatch_segment_drift_detected", &series),
                c["drift"].as_bool().map(|d| f64::from(u8::from(d))),
                "{value} {name}"
            );
            assert_eq!(
                server.metric("driftwatch_segment_drift_q_value", &series),
                c["q_value"].as_f64(),
                "{value} {name}"
            );
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_window_s_performance_per_segment_equals_driftwatch_performance_per_segment() {
    let dir = driftwatch_testkit::temp_dir("segment-performance");
    let (server, ts) = estimating_server(
        &dir,
        "    segments:\n      columns: [country]\n      top: 3\n",
        "",
    );
    let n = 260;
    let current = std::fs::read_to_string(example("current.csv")).expect("current.csv");
    let countries: Vec<String> = current
        .lines()
        .skip(1)
        .take(n)
        .map(|l| l.split(',').nth(4).expect("country").to_string())
        .collect();
    let events = scored_events(n, &ts);
    window_after(&server, "credit", &events);
    // Labels for every other request: the truth is "1" for a third.
    let labels: Vec<String> = (0..n)
        .step_by(2)
        .map(|i| {
            serde_json::json!({"model": "credit", "request_id": format!("r{i}"), "label": if i % 3 == 0 { "1" } else { "0" }}).to_string()
        })
        .collect();
    let reply = server.post_items("/v1/feedback", "labels", &labels);
    assert_eq!(reply["accepted"], labels.len(), "{reply}");
    let window = loop {
        let w = fetch_window(&server, "credit");
        if w["labels"] == labels.len() {
            break w;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let live = window["segment_performance"].as_array().expect("segments");
    assert_eq!(live.len(), 4, "{window}");
    // Offline: a reference holding the segment column beside the
    // estimation's (the same rows), each role's scored rows with their
    // country, every segment one chunk (fewer rows than ROWS).
    let reference = dir.join("reference.csv");
    let countries_ref: Vec<String> = std::fs::read_to_string(example("reference.csv"))
        .expect("reference")
        .lines()
        .map(|l| l.split(',').nth(4).expect("country").to_string())
        .collect();
    let joined: String = std::fs::read_to_string(example("estimation.csv"))
        .expect("estimation")
        .lines()
        .zip(&countries_ref)
        .map(|(l, c)| format!("{l},{c}\n"))
        .collect();
    std::fs::write(&reference, joined).expect("reference");
    let mut compared = 0;
    for (ri, role) in ["champion", "shadow"].into_iter().enumerate() {
        let analysis = dir.join(format!("{role}.csv"));
        let mut csv = String::from("label,score,country\n");
        for (i, country) in countries.iter().enumerate() {
            if let Some((label, score)) = &outputs(i)[ri] {
                csv.push_str(&format!("{label},{score:?},{country}\n"));
            }
        }
        std::fs::write(&analysis, csv).expect("analysis");
        let offline = binary_performance(
            &reference,
            &analysis,
            &[
                "--chunk-size",
                &ROWS.to_string(),
                "--segment",
                "country",
                "--segment-top",
                "3",
            ],
        );
        for want in offline["segments"].as_array().expect("segments") {
            let chunks = want["chunks"].as_array().expect("chunks");
            assert_eq!(chunks.len(), 1, "{want}");
            let got = live
                .iter()
                .find(|s| s["value"] == want["value"])
                .expect("the segment live");
            let got = &got["estimated_performance"][role];
            assert_eq!(got["rows"], want["rows"], "{role} {}", want["value"]);
            for (metric, w) in chunks[0]["metrics"].as_object().expect("metrics") {
                for field in FIELDS {
                    // The same rows in the same order: the same bits.
                    assert_eq!(
                        got["metrics"][metric][field], w[field],
                        "{role} {} {metric} {field}",
                        want["value"]
                    );
                    compared += 1;
                }
            }
        }
    }
    assert!(compared >= 2 * 3 * 6 * 7, "{compared}");
    // Realized per segment: the labelled champion outputs of each segment.
    for s in live {
        let in_segment = |i: usize| match s["value"].as_str() {
            Some("__other__") => !live[..3]
                .iter()
                .any(|t| t["value"] == countries[i].as_str()),
            Some(v) => countries[i] == v,
            None => false,
        };
        let labelled: Vec<usize> = (0..n).step_by(2).filter(|&i| in_segment(i)).collect();
        assert_eq!(s["labels"], labelled.len(), "{s}");
        let right = labelled
            .iter()
            .filter(|&&i| {
                let predicted = outputs(i)[0]
                    .as_ref()
                    .map_or("1".to_string(), |o| o.0.clone());
                predicted == if i % 3 == 0 { "1" } else { "0" }
            })
            .count();
        let accuracy = s["performance"]["champion"]["accuracy"]
            .as_f64()
            .expect("accuracy");
        assert!(
            (accuracy - right as f64 / labelled.len() as f64).abs() < 1e-12,
            "{s}"
        );
        let series = [
            ("segment", "country"),
            ("segment_value", s["value"].as_str().expect("value")),
            ("role", "champion"),
            ("metric", "accuracy"),
            ("window", "1d"),
        ];
        assert_eq!(
            server.metric("driftwatch_segment_performance", &series),
            Some(accuracy)
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
