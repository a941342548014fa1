//! The example dataset (examples/credit) as live events.

use std::path::{Path, PathBuf};

pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/credit")
        .join(name)
}

const NUMERIC: [&str; 4] = ["age", "income", "loan_amount", "bureau_score"];

/// The rows of examples/credit/current.csv as events (values copied as text).
pub fn events_from_csv(path: &Path, timestamp: &str) -> Vec<String> {
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
                r#"{{"model": "credit", "request_id": "r{i}", "timestamp": "{timestamp}", "features": {{{}}}, "champion": {{"version": "v3", "label": "1", "score": 0.7, "latency_ms": 12.5}}, "shadow": {{"version": "v4", "label": "0", "score": 0.4, "latency_ms": 3.0}}}}"#,
                features.join(", ")
            )
        })
        .collect()
}
