//! Notifications from the real collector to real HTTP receivers: one signed
//! message per firing alert, retried after a 500 with the same idempotency
//! key, appended by the log receiver, Alertmanager's v4 payload on request,
//! dead-lettered when a receiver kind cannot be delivered, and none lost
//! when the collector is killed with messages still pending.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::examples::{args_with_rules, drifted_features, post_examples};
use common::receiver::Receiver;
use common::server::Server;
use serde_json::Value;

fn rules_file(dir: &Path, hook: &Receiver, format: &str) -> PathBuf {
    let rules = dir.join("rules.yaml");
    let log = dir.join("notifications.log");
    std::fs::write(
        &rules,
        format!(
            r#"receivers:
  - name: hook
    webhook:
      url: {}/hook
      headers: {{X-Team: risk}}
      hmac_secret_env: HOOK_SECRET
      format: {format}
  - name: file
    log: {{path: {}}}
  - name: mail
    email: {{to: [a@example.com], from: b@example.com, smarthost: "127.0.0.1:9", tls: none}}
groups:
  - name: drift
    rules:
      - alert: FeatureDrift
        model: credit
        metric: driftwatch_feature_drift_detected
        op: "=="
        threshold: 1
        annotations:
          summary: "{{{{ feature }}}} drifted"
        receivers: [hook, file, mail]
"#,
            hook.url,
            log.display()
        ),
    )
    .expect("rules");
    rules
}

fn start(rules: &Path, db: &Path) -> Server {
    let args = args_with_rules(rules);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_on(&args, &[("HOOK_SECRET", "s3cret")], db)
}

/// Features the offline report finds drifted (one alert each).
fn drifted() -> usize {
    drifted_features().len()
}

fn keys(hook: &Receiver) -> BTreeSet<String> {
    hook.requests()
        .iter()
        .filter_map(|r| r.header("Idempotency-Key").map(String::from))
        .collect()
}

#[test]
fn signed_webhooks_are_retried_and_logged_and_undeliverable_kinds_dead_letter() {
    let dir = common::server::temp_db_dir();
    let n = drifted();
    assert!(n >= 2);
    // The first delivery fails with a 500.
    let hook = Receiver::start(&[500]);
    let rules = rules_file(&dir, &hook, "driftwatch");
    let server = start(&rules, &dir.join("driftwatch.db"));
    post_examples(&server);
    server.wait_for(Duration::from_secs(30), "every message delivered", |_| {
        keys(&hook).len() == n && hook.requests().len() == n + 1
    });
    for r in hook.requests() {
        assert_eq!(r.path, "/hook");
        assert_eq!(r.header("X-Team"), Some("risk"));
        let ts = r.header("X-Driftwatch-Timestamp").expect("timestamp");
        let want = driftwatch::notify::deliver::sign(b"s3cret", ts, &r.body);
        assert_eq!(r.header("X-Driftwatch-Signature"), Some(want.as_str()));
        let m = r.json();
        assert_eq!(m["status"], "firing");
        assert_eq!(m["receiver"], "hook");
        let a = &m["alerts"][0];
        assert_eq!(a["labels"]["alertname"], "FeatureDrift");
        let feature = a["labels"]["feature"].as_str().expect("feature");
        assert_eq!(a["annotations"]["summary"], format!("{feature} drifted"));
        assert_eq!(
            m["idempotency_key"],
            r.header("Idempotency-Key").expect("key")
        );
    }
    // The retried message carries the key of the first attempt.
    let first = hook.requests()[0]
        .header("Idempotency-Key")
        .map(String::from);
    assert_eq!(
        hook.requests()
            .iter()
            .filter(|r| r.header("Idempotency-Key").map(String::from) == first)
            .count(),
        2
    );
    let metric = |receiver: &str, outcome: &str| {
        server.metric(
            "driftwatch_notifications_total",
            &[("receiver", receiver), ("outcome", outcome)],
        )
    };
    server.wait_for(Duration::from_secs(10), "counters", |_| {
        metric("hook", "delivered") == Some(n as f64) && metric("mail", "dead") == Some(n as f64)
    });
    assert_eq!(metric("hook", "failed"), Some(1.0));
    assert_eq!(metric("file", "delivered"), Some(n as f64));
    let log = std::fs::read_to_string(dir.join("notifications.log")).expect("log file");
    assert_eq!(log.lines().count(), n, "{log}");
    let (status, body) = server.request("GET", "/v1/notifications?state=dead", &[], b"");
    assert_eq!(status, 200);
    let dead: Value = serde_json::from_str(&body).expect("JSON");
    let dead = dead["notifications"].as_array().expect("list");
    assert_eq!(dead.len(), n);
    assert!(dead[0]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("not in this release")));
    assert_eq!(
        server.metric("driftwatch_notifications_queued", &[("state", "dead")]),
        Some(n as f64)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_kill_9_with_pending_notifications_loses_none() {
    let dir = common::server::temp_db_dir();
    let n = drifted();
    // Every attempt fails until the collector has been killed.
    let hook = Receiver::start(&[503; 1000]);
    let rules = rules_file(&dir, &hook, "alertmanager");
    let db = dir.join("driftwatch.db");
    let first = start(&rules, &db);
    post_examples(&first);
    first.wait_for(Duration::from_secs(30), "attempts that failed", |_| {
        keys(&hook).len() == n
    });
    first.kill();
    hook.answer(200, 0);
    let before = hook.requests().len();
    let second = start(&rules, &db);
    second.wait_for(
        Duration::from_secs(60),
        "the pending messages delivered",
        |s| {
            s.metric(
                "driftwatch_notifications_total",
                &[("receiver", "hook"), ("outcome", "delivered")],
            ) == Some(n as f64)
        },
    );
    let after: Vec<_> = hook.requests().into_iter().skip(before).collect();
    let delivered: BTreeSet<String> = after
        .iter()
        .filter_map(|r| r.header("Idempotency-Key").map(String::from))
        .collect();
    assert_eq!(delivered, keys(&hook), "every message, by its key");
    // Alertmanager's version 4 webhook payload.
    let body = after[0].json();
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "FeatureDrift");
    assert_eq!(body["commonLabels"]["model"], "credit");
    // No new alerts after the restart: the restored states did not fire again.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(keys(&hook).len(), n);
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
