//! Collectors of a cluster as the cluster tests start and inspect them.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::server::Server;

/// `driftwatch serve --config CONFIG --node NODE`, its database in `dir`.
pub fn collector(config: &Path, node: &str, dir: &Path) -> Server {
    let args = [
        "--config".as_ref(),
        config.as_os_str(),
        "--node".as_ref(),
        node.as_ref(),
    ];
    Server::start_on(&args, &[], &dir.join(format!("{node}.db")))
}

/// `GET /v1/cluster` (null while a paused collector does not answer).
pub fn cluster_view(s: &Server) -> Value {
    let (_, body) = s.request("GET", "/v1/cluster", &[], b"");
    serde_json::from_str(&body).unwrap_or_default()
}

/// The owners of `model`'s `partitions` partitions as `s` sees them
/// (`None` while one has none).
pub fn partition_owners(s: &Server, model: &str, partitions: usize) -> Option<Vec<String>> {
    let view = cluster_view(s);
    (0..partitions)
        .map(|p| {
            view["owners"][format!("{model}/{p}")]
                .as_str()
                .map(String::from)
        })
        .collect()
}

/// Sends `sig` (`-STOP`, `-CONT`, `-TERM`) to a collector.
pub fn signal(s: &Server, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &s.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

/// A retraining action posting to `hooks`/retrain and the rule that calls
/// it: DatasetDrift when a quarter of a model's features drift (after
/// 1000 samples, for 1 s). YAML to follow a file's `route` and `receivers`.
pub fn drift_rules(hooks: &str) -> String {
    format!(
        r#"actions:
  - name: retrain
    cooldown: 1h
    webhook: {{url: "{hooks}/retrain"}}
groups:
  - name: drift
    rules:
      - alert: DatasetDrift
        metric: driftwatch_drifted_features_share
        op: ">="
        threshold: 0.25
        min_samples: 1000
        for: 1s
        actions: [retrain]
        annotations:
          summary: "{{{{ model }}}}: {{{{ (value * 100) | round(0) }}}}% of features drift"
"#
    )
}
