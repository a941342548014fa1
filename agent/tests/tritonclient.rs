//! The agent in front of the example champion, called with the official
//! KServe v2 client, tritonclient[http] 2.73.0 (`tritonclient_calls.py`,
//! run by the test venv's Python): JSON and binary tensors each way,
//! health, readiness and metadata. Every answer through the agent equals
//! the direct one (checked by the script), every inference's events equal
//! those of its all-JSON form, and nothing is counted as unparsed.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{repo, Agent, Champion, Collector};
use serde_json::Value;

const INPUTS: &str = "[age, income, loan_amount, bureau_score, dependents, has_card]";

/// An event without what differs between two calls of the same rows.
fn comparable(e: &Value) -> Value {
    let mut e = e.clone();
    if let Some(o) = e.as_object_mut() {
        o.remove("request_id");
        o.remove("timestamp");
    }
    for side in ["champion", "shadow"] {
        if let Some(o) = e[side].as_object_mut() {
            o.remove("latency_ms");
        }
    }
    e
}

#[test]
fn tritonclient_binary_and_json_tensors_give_the_same_events_and_answers() {
    let champion = Champion::start();
    let collector = Collector::start();
    let agent = Agent::start(&format!(
        "collector:\n  url: {}\n  batch_wait: 100ms\nmodels:\n  - name: credit\n    upstream: http://{}\n    champion_version: v3\n    shadow:\n      path: {}\n      version: v4\n      inputs: {INPUTS}\n",
        collector.url(),
        champion.addr,
        repo("examples/credit/challenger.onnx").display(),
    ));
    let out = Command::new(repo(".cache/testenv/bin/python"))
        .arg(repo("agent/tests/tritonclient_calls.py"))
        .args([&champion.addr, &agent.addr])
        .arg(repo("examples/credit/expected.json"))
        .output()
        .expect("run the test venv's Python (./scripts/test installs tritonclient there)");
    assert!(
        out.status.success(),
        "tritonclient_calls.py failed:\n{}{}\nagent:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        agent.stderr()
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON line");
    let variants: Vec<&str> = report["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| v.as_str().expect("name"))
        .collect();
    assert_eq!(
        variants,
        [
            "json-json",
            "json-binary",
            "binary-json",
            "binary-binary",
            "binary-default"
        ]
    );
    let rows = report["rows"].as_array().expect("rows").len();
    assert!(rows >= 20, "{rows} example rows without a missing value");
    let events = collector.wait_for_events(variants.len() * rows);
    let by_id: BTreeMap<String, &Value> = events
        .iter()
        .map(|e| (e["request_id"].as_str().expect("id").to_string(), e))
        .collect();
    for i in 0..rows {
        let json = comparable(by_id[&format!("json-json-{i}")]);
        // The rows as sent and both models' outputs are in the event.
        assert_eq!(json["features"]["age"], report["rows"][i][0], "row {i}");
        assert!(json["champion"]["score"].is_number(), "{json}");
        assert!(json["shadow"]["score"].is_number(), "{json}");
        for v in &variants[1..] {
            let e = comparable(by_id[&format!("{v}-{i}")]);
            assert_eq!(
                e, json,
                "{v}, row {i}: its event differs from the JSON call's"
            );
        }
    }
    // Health, readiness and metadata passed through, counted as such;
    // nothing the client sent was unreadable to the agent.
    assert_eq!(
        agent.metric("driftwatch_agent_passthrough_total", &[("model", "credit")]),
        6.0
    );
    for part in ["request", "response"] {
        for reason in ["not_json", "shape", "binary", "no_rows", "too_large"] {
            let labels = [("model", "credit"), ("part", part), ("reason", reason)];
            assert_eq!(
                agent.metric("driftwatch_agent_unparsed_total", &labels),
                0.0,
                "{part} {reason}"
            );
        }
    }
}
