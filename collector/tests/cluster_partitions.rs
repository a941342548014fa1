//! A model split into partitions, with real processes: a NATS server
//! with JetStream and three collectors. The example model is loaded twice,
//! `credit` split into 3 partitions and `whole` not split, and gets the
//! same events and labels under both names: the owner of credit's
//! partition 0 merges the partitions' windows, and every statistic it
//! shows equals what `whole` shows and what `driftwatch report` computes
//! on the same rows, before and after the owner of another partition is
//! killed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{cluster_view, collector, partition_owners};
use common::examples::{events_from_csv, example, offline_report};
use common::server::Server;
use driftwatch_testkit::nats::Nats;

/// The lease TTL of this test (the default is 10 s).
const TTL: Duration = Duration::from_secs(3);

/// The gauges of a model's live window that a partitioned model must
/// show as an unsplit one does.
const WINDOW_GAUGES: [&str; 11] = [
    "driftwatch_window_samples",
    "driftwatch_feature_drift_score",
    "driftwatch_feature_drift_p_value",
    "driftwatch_feature_drift_detected",
    "driftwatch_feature_missing_ratio",
    "driftwatch_drifted_features_share",
    "driftwatch_model_performance",
    "driftwatch_label_coverage_ratio",
    "driftwatch_shadow_agreement_ratio",
    "driftwatch_inference_latency_quantile_seconds",
    "driftwatch_prediction_error_ratio",
];

fn config(dir: &Path, nats: &Nats) -> std::path::PathBuf {
    let path = dir.join("partitions.yaml");
    let model = |name: &str, partitions: usize| {
        format!(
            "  - name: {name}\n    reference: {}\n    windows: [1d]\n    partitions: {partitions}\n",
            example("reference.csv").display()
        )
    };
    let text = format!(
        "eval_interval: 500ms\ncluster:\n  urls: [{}]\n  lease_ttl: {}s\nmodels:\n{}{}",
        nats.url,
        TTL.as_secs(),
        model("credit", 3),
        model("whole", 1)
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// The collector named `node`.
fn node<'a>(nodes: &'a [Server], names: &[&str], node: &str) -> &'a Server {
    &nodes[names.iter().position(|n| *n == node).expect("a node")]
}

/// The live-window gauges `s` exports for `model`, keyed by name and the
/// other labels.
fn window_gauges(s: &Server, model: &str) -> BTreeMap<String, f64> {
    let (_, text) = s.request("GET", "/metrics", &[], b"");
    let label = format!("model=\"{model}\"");
    text.lines()
        .filter(|l| {
            WINDOW_GAUGES
                .iter()
                .any(|g| l.starts_with(&format!("{g}{{")))
        })
        .filter(|l| l.contains(&label))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.replace(&label, "model=\"*\""), value.parse().ok()?))
        })
        .collect()
}

/// Every live-window gauge of credit (at its partition 0's owner) equals
/// whole's (at its owner): bit for bit, but for the sums of floats that
/// partitions add in another order (performance, ratios).
fn assert_same_as_whole(credit: &Server, whole: &Server) {
    let (split, one) = (
        window_gauges(credit, "credit"),
        window_gauges(whole, "whole"),
    );
    assert_eq!(
        split.keys().collect::<Vec<_>>(),
        one.keys().collect::<Vec<_>>(),
        "the same series"
    );
    assert!(split.len() >= 100, "{} series", split.len());
    for (series, a) in &split {
        let b = one[series];
        if series.starts_with("driftwatch_feature_drift") {
            assert_eq!(a.to_bits(), b.to_bits(), "{series}: {a} {b}");
        } else {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                "{series}: {a} {b}"
            );
        }
    }
}

#[test]
fn a_model_in_three_partitions_shows_what_one_collector_shows() {
    let dir = driftwatch_testkit::temp_dir("partitions");
    let nats = Nats::start(&dir);
    let config = config(&dir, &nats);
    let names = ["a", "b", "c"];
    let nodes: Vec<Server> = names.iter().map(|n| collector(&config, n, &dir)).collect();
    for s in &nodes {
        s.wait_for(
            Duration::from_secs(30),
            "three members and every owner",
            |s| {
                let v = cluster_view(s);
                v["members"].as_array().is_some_and(|m| m.len() == 3)
                    && v["owners"]["whole"].is_string()
                    && partition_owners(s, "credit", 3).is_some()
            },
        );
    }
    let owners = partition_owners(&nodes[0], "credit", 3).expect("owners");
    println!("credit's partitions are owned by {owners:?}");
    let distinct: BTreeSet<&String> = owners.iter().collect();
    assert!(distinct.len() >= 2, "partitions spread: {owners:?}");
    let whole_owner = cluster_view(&nodes[0])["owners"]["whole"]
        .as_str()
        .expect("whole's owner")
        .to_string();

    // The same events and labels under both names, sent to every collector.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let credit = events_from_csv(&example("current.csv"), &now);
    let whole: Vec<String> = credit
        .iter()
        .map(|e| e.replacen("\"model\": \"credit\"", "\"model\": \"whole\"", 1))
        .collect();
    for (i, (c, w)) in credit.chunks(250).zip(whole.chunks(250)).enumerate() {
        let to = &nodes[i % 3];
        assert_eq!(to.post_items("/v1/events", "events", c)["accepted"], 250);
        assert_eq!(to.post_items("/v1/events", "events", w)["accepted"], 250);
    }
    let labels = |model: &str| -> Vec<String> {
        (0..600)
            .map(|i| {
                format!(
                    r#"{{"model": "{model}", "request_id": "r{i}", "label": "{}"}}"#,
                    u8::from(i % 3 != 0)
                )
            })
            .collect()
    };
    for model in ["credit", "whole"] {
        let reply = nodes[1].post_items("/v1/feedback", "labels", &labels(model));
        assert_eq!(reply["accepted"], 600, "{reply}");
    }

    let merger = node(&nodes, &names, &owners[0]);
    let single = node(&nodes, &names, &whole_owner);
    merger.wait_for_samples("credit", "1d", 1500);
    single.wait_for_samples("whole", "1d", 1500);
    let coverage = [("model", "credit"), ("window", "1d")];
    merger.wait_for(Duration::from_secs(10), "every label merged", |s| {
        s.metric("driftwatch_label_coverage_ratio", &coverage) == Some(0.4)
    });
    merger.assert_features_match(&offline_report(), "credit", "1d");
    single.assert_features_match(&offline_report(), "whole", "1d");
    assert_same_as_whole(merger, single);
    // Only the owner of partition 0 shows the model's window.
    for (s, n) in nodes.iter().zip(names) {
        if n != owners[0] {
            assert_eq!(
                s.metric("driftwatch_window_samples", &coverage),
                None,
                "{n}"
            );
        }
    }

    // The owner of another partition (not partition 0's) killed: the
    // model waits until the partition's new owner has read its records,
    // then shows the same figures again.
    let victim = owners
        .iter()
        .find(|o| **o != owners[0])
        .expect("another owner")
        .clone();
    let at = names.iter().position(|n| *n == victim).expect("victim");
    let mut nodes = nodes;
    let killed = nodes.remove(at);
    let names: Vec<&str> = names.into_iter().filter(|n| *n != victim).collect();
    let killed_at = Instant::now();
    killed.kill();
    let survivor = &nodes[0];
    survivor.wait_for(
        6 * TTL,
        "new owners of the killed collector's leases",
        |s| {
            partition_owners(s, "credit", 3).is_some_and(|o| !o.contains(&victim))
                && cluster_view(s)["owners"]["whole"].as_str() != Some(victim.as_str())
        },
    );
    let owners = partition_owners(survivor, "credit", 3).expect("owners");
    let merger = node(&nodes, &names, &owners[0]);
    let whole_owner = cluster_view(survivor)["owners"]["whole"]
        .as_str()
        .expect("whole's owner")
        .to_string();
    let single = node(&nodes, &names, &whole_owner);
    let gathered = |s: &Server| {
        s.metric(
            "driftwatch_cluster_partial_gathers_total",
            &[("model", "credit"), ("outcome", "complete")],
        )
        .unwrap_or(0.0)
    };
    let before = gathered(merger);
    merger.wait_for(6 * TTL, "a complete gathering after the failover", |s| {
        gathered(s) > before + 1.0
    });
    println!(
        "partition failover: collector {victim} killed, every partition's windows at hand again {:.2} s later",
        killed_at.elapsed().as_secs_f64()
    );
    merger.wait_for_samples("credit", "1d", 1500);
    single.wait_for_samples("whole", "1d", 1500);
    merger.wait_for(Duration::from_secs(10), "every label merged", |s| {
        s.metric("driftwatch_label_coverage_ratio", &coverage) == Some(0.4)
    });
    merger.assert_features_match(&offline_report(), "credit", "1d");
    assert_same_as_whole(merger, single);
    let _ = std::fs::remove_dir_all(&dir);
}
