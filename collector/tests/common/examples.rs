//! The example dataset (examples/credit) as live events, and the
//! collector arguments and offline verdicts the tests compare with.

use std::path::{Path, PathBuf};

use super::server::Server;

pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/credit")
        .join(name)
}

const NUMERIC: [&str; 4] = ["age", "income", "loan_amount", "bureau_score"];

/// The rows of examples/credit/current.csv as events (values copied as
/// text), with request ids r0, r1, ...
pub fn events_from_csv(path: &Path, timestamp: &str) -> Vec<String> {
    events_with_ids(path, timestamp, "r")
}

/// The rows of a CSV file as events with request ids `{prefix}{row}`.
pub fn events_with_ids(path: &Path, timestamp: &str, prefix: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("example CSV");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    lines
        .enumerate()
        .map(|(i, line)| {
            let features: Vec<String> = header
                .iter()
                .zip(line.split(','))
                .map(|(name, v)| {
                    let value = if v.is_empty() {
                        "null".to_string()
                    } else if NUMERIC.contains(name) || *name == "dependents" || *name == "has_card" {
                        v.to_string()
                    } else {
                        format!("\"{v}\"")
                    };
                    format!("\"{name}\": {value}")
                })
                .collect();
            format!(
                r#"{{"model": "credit", "request_id": "{prefix}{i}", "timestamp": "{timestamp}", "features": {{{}}}, "champion": {{"version": "v3", "label": "1", "score": 0.7, "latency_ms": 12.5}}, "shadow": {{"version": "v4", "label": "0", "score": 0.4, "latency_ms": 3.0}}}}"#,
                features.join(", ")
            )
        })
        .collect()
}

/// Posts every row of examples/credit/current.csv, stamped now.
pub fn post_examples(server: &Server) {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let events = events_from_csv(&example("current.csv"), &ts);
    let reply = server.post_items("/v1/events", "events", &events);
    assert_eq!(reply["accepted"], 1500, "{reply}");
}

/// `driftwatch serve` flags: model `model` with `reference`, and `extra`.
pub fn serve_args(model: &str, reference: &Path, extra: &[&str]) -> Vec<String> {
    let reference = reference.to_str().expect("UTF-8");
    ["--model", model, "--reference", reference]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// The example model with one 1-day window evaluated every 100 ms, and `rules`.
pub fn args_with_rules(rules: &Path) -> Vec<String> {
    let rules = rules.to_str().expect("UTF-8");
    let extra = [
        "--window",
        "1d",
        "--eval-interval",
        "100ms",
        "--rules",
        rules,
    ];
    serve_args("credit", &example("reference.csv"), &extra)
}

/// Rule group `drift`: alert FeatureDrift of model `credit` when
/// `driftwatch_feature_drift_detected == threshold`, with `lines` (YAML at
/// the rule's indentation) added.
pub fn drift_group(threshold: &str, lines: &str) -> String {
    format!(
        "groups:\n  - name: drift\n    rules:\n      - alert: FeatureDrift\n        model: credit\n        metric: driftwatch_feature_drift_detected\n        op: \"==\"\n        threshold: {threshold}\n{lines}"
    )
}

/// `driftwatch report` on the example files, as JSON.
pub fn offline_report() -> serde_json::Value {
    offline_report_with(&[])
}

/// `driftwatch report ARGS` on the example files, as JSON.
pub fn offline_report_with(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["report", "--reference"])
        .arg(example("reference.csv"))
        .arg("--current")
        .arg(example("current.csv"))
        .args(args)
        .output()
        .expect("report");
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

/// The columns `driftwatch report` finds drifted between the example files, sorted.
pub fn drifted_features() -> Vec<String> {
    let report = offline_report();
    let mut drifted: Vec<String> = report["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter(|c| c["drift"] == true)
        .map(|c| c["name"].as_str().expect("name").to_string())
        .collect();
    drifted.sort();
    drifted
}

/// Runs the `driftwatch` binary: exit code, standard output, standard error.
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(args)
        .output()
        .expect("run driftwatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The DLE fixture's directory (fixtures/generate_dle.py).
pub fn dle_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dle")
}

/// The DLE fixture's nanny models, one per loss (mae, mape, mse, msle),
/// unpacked into `dir` (committed gzipped).
pub fn nanny_models(dir: &Path) -> Vec<PathBuf> {
    use std::io::Read;
    std::fs::create_dir_all(dir).expect("dir");
    ["mae", "mape", "mse", "msle"]
        .iter()
        .map(|loss| {
            let gz = std::fs::File::open(dle_fixtures().join(format!("{loss}.onnx.gz")))
                .expect("fixture");
            let mut bytes = Vec::new();
            flate2::read::GzDecoder::new(gz)
                .read_to_end(&mut bytes)
                .expect("gunzip");
            let path = dir.join(format!("{loss}.onnx"));
            std::fs::write(&path, bytes).expect("write model");
            path
        })
        .collect()
}

/// `driftwatch performance --task regression` of the DLE fixture's columns
/// (target `y_true`, prediction `y_pred`) with `models` and `extra` flags.
pub fn dle_performance(
    reference: &Path,
    analysis: &Path,
    models: &[PathBuf],
    extra: &[&str],
) -> std::process::Output {
    let list: Vec<String> = models.iter().map(|p| p.display().to_string()).collect();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"));
    command.arg("performance").arg("--reference").arg(reference);
    command.arg("--analysis").arg(analysis);
    command.args([
        "--task",
        "regression",
        "--target",
        "y_true",
        "--prediction",
        "y_pred",
    ]);
    if !list.is_empty() {
        command.arg("--nanny-model").arg(list.join(","));
    }
    command.args(extra).output().expect("run driftwatch")
}
