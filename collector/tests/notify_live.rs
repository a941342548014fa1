//! Notifications from the real collector to real HTTP receivers: one signed
//! message per firing alert, retried after a 500 with the same idempotency
//! key, appended by the log receiver, Alertmanager's v4 payload on request,
//! dead-lettered when a receiver kind cannot be delivered, and none lost
//! when the collector is killed with messages still pending.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::examples::{args_with_rules, drifted_features, example, post_examples};
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

/// A real Alertmanager (Debian's `prometheus-alertmanager`, installed by
/// scripts/test) on a free loopback port, killed on drop.
struct Alertmanager {
    child: std::process::Child,
    url: String,
    dir: PathBuf,
}

impl Alertmanager {
    fn start() -> Alertmanager {
        let bin = "/usr/bin/prometheus-alertmanager";
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: scripts/test installs Debian's prometheus-alertmanager"
        );
        let dir = common::server::temp_db_dir();
        let config = dir.join("am.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        )
        .expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let start = std::time::Instant::now();
        while am.alerts().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "alertmanager did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// Active alerts named FeatureDrift: their `feature` labels, sorted.
    fn alerts(&self) -> Option<Vec<String>> {
        let addr = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        use std::io::{Read, Write};
        write!(
            stream,
            "GET /api/v2/alerts?filter=alertname%3D%22FeatureDrift%22 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        // Chunked or not, the JSON array is between the first [ and the last ].
        let json = &body[body.find('[')?..=body.rfind(']')?];
        let v: Value = serde_json::from_str(json).ok()?;
        let mut f: Vec<String> = v
            .as_array()?
            .iter()
            .filter(|a| a["status"]["state"] == "active")
            .filter_map(|a| a["labels"]["feature"].as_str().map(String::from))
            .collect();
        f.sort();
        Some(f)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn slack_gets_block_kit_and_a_real_alertmanager_gets_the_alerts_until_they_resolve() {
    let dir = common::server::temp_db_dir();
    let slack = Receiver::start(&[]);
    let am = Alertmanager::start();
    let drifted = drifted_features();
    let rule = |threshold: u32| {
        format!(
            r#"receivers:
  - name: slack
    slack: {{url_env: SLACK_URL}}
  - name: am
    alertmanager: {{url: "{}"}}
groups:
  - name: drift
    rules:
      - alert: FeatureDrift
        model: credit
        metric: driftwatch_feature_drift_detected
        op: "=="
        threshold: {threshold}
        annotations:
          summary: "{{{{ feature }}}} drifted"
        receivers: [slack, am]
"#,
            am.url
        )
    };
    let rules = dir.join("rules.yaml");
    std::fs::write(&rules, rule(1)).expect("rules");
    let config = dir.join("driftwatch.yaml");
    std::fs::write(
        &config,
        format!(
            "eval_interval: 100ms\nexternal_url: http://driftwatch.example:8080/\nrules: [{}]\nmodels:\n  - name: credit\n    reference: {}\n    windows: [1d]\n",
            rules.display(),
            example("reference.csv").display()
        ),
    )
    .expect("config");
    let slack_url = format!("{}/services/T0/B0/X", slack.url);
    let server = Server::start(
        &["--config", config.to_str().expect("UTF-8")],
        &[("SLACK_URL", slack_url.as_str())],
    );
    post_examples(&server);
    server.wait_for(
        Duration::from_secs(30),
        "Alertmanager holding the alerts",
        |_| am.alerts().as_ref() == Some(&drifted),
    );
    server.wait_for(Duration::from_secs(10), "Slack messages", |_| {
        slack.requests().len() == drifted.len()
    });
    for r in slack.requests() {
        assert_eq!(r.path, "/services/T0/B0/X");
        let v = r.json();
        assert_eq!(v["blocks"][0]["type"], "header");
        assert_eq!(
            v["blocks"][0]["text"]["text"],
            "[FIRING] FeatureDrift credit"
        );
        let section = v["blocks"][1]["text"]["text"].as_str().expect("section");
        assert!(section.contains(" drifted*"), "{section}");
        let last = v["blocks"]
            .as_array()
            .and_then(|b| b.last())
            .expect("blocks");
        assert_eq!(
            last["text"]["text"],
            "<http://driftwatch.example:8080/v1/alerts|All active alerts>"
        );
    }
    // Drift "stops" (the rule no longer holds): the alerts resolve in
    // Alertmanager and Slack gets the resolved messages.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&rules, rule(2)).expect("rules");
    server.wait_for(
        Duration::from_secs(30),
        "Alertmanager resolving them",
        |_| am.alerts().is_some_and(|a| a.is_empty()),
    );
    server.wait_for(Duration::from_secs(10), "resolved Slack messages", |_| {
        slack
            .requests()
            .iter()
            .filter(|r| r.json()["blocks"][0]["text"]["text"] == "[RESOLVED] FeatureDrift credit")
            .count()
            == drifted.len()
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
