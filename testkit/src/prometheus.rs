//! A real Prometheus (Debian's `prometheus`; scripts/test installs it)
//! scraping the test's processes every second, and the dashboards in
//! dashboards/ queried against it as Grafana would.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::{encode, free_port, http, wait_until, write, Proc};
use crate::repo;

/// Prometheus scraping `targets` (job name, address) every second, on a
/// free port; the process and its address, once ready.
pub fn start(dir: &Path, targets: &[(&str, &str)]) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let jobs: String = targets
        .iter()
        .map(|(job, target)| {
            format!("  - job_name: {job}\n    static_configs: [{{targets: ['{target}']}}]\n")
        })
        .collect();
    write(
        &dir.join("prometheus.yml"),
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}"
        ),
    );
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!(
        "--config.file={}",
        dir.join("prometheus.yml").display()
    ))
    .arg(format!(
        "--storage.tsdb.path={}",
        dir.join("prometheus").display()
    ))
    .arg(format!("--web.listen-address={addr}"))
    .arg("--log.level=warn");
    let prometheus = Proc::start("prometheus", cmd, dir);
    wait_until(
        "Prometheus to be ready (Debian's prometheus; ./scripts/test installs it)",
        Duration::from_secs(60),
        &[&prometheus],
        || http(&addr, "GET", "/-/ready").is_some_and(|(s, _)| s == 200),
    );
    (prometheus, addr)
}

/// Runs every variable's and every panel's query of the dashboards `names` as
/// Grafana would (variables substituted with the values their own queries
/// return, range queries over the test's time range) and fails on any that
/// does not parse or returns no series.
pub fn check_dashboards(prometheus: &str, names: &[&str], start: u64, end: u64) {
    let range = format!("{}s", end - start);
    let mut checked = 0;
    let mut failures = Vec::new();
    for name in names {
        let path = repo(&format!("dashboards/{name}.json"));
        let text = std::fs::read_to_string(&path).expect("dashboard");
        let d: Value = serde_json::from_str(&text).expect("dashboard JSON");
        let mut vars: Vec<(String, String)> = Vec::new();
        for v in d["templating"]["list"].as_array().expect("variables") {
            if v["type"] != "query" {
                continue;
            }
            let name = v["name"].as_str().expect("variable name");
            let query = substitute(v["query"]["query"].as_str().expect("query"), &vars, &range);
            let values = label_values(prometheus, &query, start, end)
                .unwrap_or_else(|e| panic!("dashboards/{}: variable {name}: {e}", path.display()));
            checked += 1;
            if values.is_empty() {
                failures.push(format!(
                    "{} variable {name}: {query}: no values",
                    d["title"]
                ));
                continue;
            }
            let value = if v["multi"] == true {
                values.join("|")
            } else {
                values[0].clone()
            };
            if name == "model" {
                assert_eq!(value, "credit");
            }
            vars.push((name.to_string(), value));
        }
        for p in d["panels"].as_array().expect("panels") {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = substitute(t["expr"].as_str().expect("expr"), &vars, &range);
                checked += 1;
                let path = format!(
                    "/api/v1/query_range?query={}&start={start}&end={end}&step=2",
                    encode(&expr)
                );
                let reply = get_json_any(prometheus, &path);
                if reply["status"] != "success" {
                    failures.push(format!(
                        "{} / {}: {expr}: {}",
                        d["title"], p["title"], reply
                    ));
                } else if reply["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                    failures.push(format!(
                        "{} / {}: {expr}: no series",
                        d["title"], p["title"]
                    ));
                }
            }
        }
    }
    assert!(checked > 5 * names.len(), "{checked} queries checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn get_json_any(addr: &str, path: &str) -> Value {
    http(addr, "GET", path)
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

/// Grafana's substitutions: the dashboard's variables, `$__range`, and
/// `$__rate_interval` (at least four scrape intervals; the test scrapes
/// every second).
fn substitute(expr: &str, vars: &[(String, String)], range: &str) -> String {
    let mut out = expr
        .replace("$__rate_interval", "10s")
        .replace("$__range", range);
    for (k, v) in vars {
        out = out.replace(&format!("${k}"), v);
    }
    assert!(!out.contains('$'), "an unknown variable in {out}");
    out
}

/// `label_values(SELECTOR, LABEL)` through Prometheus's label values API.
fn label_values(
    prometheus: &str,
    query: &str,
    start: u64,
    end: u64,
) -> Result<Vec<String>, String> {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .ok_or_else(|| format!("{query}: not label_values(...)"))?;
    let (selector, label) = inner
        .rsplit_once(',')
        .ok_or_else(|| format!("{query}: no label"))?;
    let path = format!(
        "/api/v1/label/{}/values?match[]={}&start={start}&end={end}",
        label.trim(),
        encode(selector.trim())
    );
    let reply = get_json_any(prometheus, &path);
    if reply["status"] != "success" {
        return Err(format!("{query}: {reply}"));
    }
    Ok(reply["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect())
}
