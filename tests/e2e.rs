//! The whole loop with the real binaries: the collector, the example
//! champion, the agent in front of it with the challenger as shadow, and
//! the example traffic generator sending drifting loan applications with
//! delayed labels; a real SMTP server (aiosmtpd), an HTTP receiver for the
//! Slack and retraining webhooks, and a real Prometheus (Debian's
//! `prometheus`) scraping the collector and the agent. It checks what a
//! user would: the drift email names the drifted features, the retraining
//! webhook is called once with a valid signature, accuracy appears once
//! labels arrive, the alert resolves after the drift stops, and every
//! query of every dashboard in dashboards/ parses and returns series from
//! that Prometheus.

use driftwatch_testkit::process as support;
use driftwatch_testkit::{mail, prometheus, receiver};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use driftwatch_testkit::repo;
use mail::mails;
use serde_json::Value;
use support::{bin, get_json, http, metric, wait_until, write, Proc};

const HMAC_SECRET: &str = "e2e-secret";
/// The agents' and the traffic's token for the collector's ingest routes.
const INGEST_TOKEN: &str = "e2e-ingest-token-5f1c";
/// The key in the Slack webhook's URL.
const SLACK_KEY: &str = "e2eSlackKey42";

fn subject(mail: &str) -> &str {
    mail.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
}

fn config_files(dir: &Path, smtp_port: &str, hooks: &str) -> PathBuf {
    write(
        &dir.join("receivers.yaml"),
        &format!(
            r#"route:
  receiver: mail
  group_by: [alertname, model]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: slack
receivers:
  - name: mail
    email: {{to: [ml-team@example.com], from: driftwatch@example.com, smarthost: "127.0.0.1:{smtp_port}", tls: none}}
  - name: slack
    slack: {{url_env: SLACK_URL}}
actions:
  - name: retrain
    cooldown: 1h
    webhook:
      url: {hooks}/retrain
      hmac_secret_env: RETRAIN_HMAC
groups: []
"#
        ),
    );
    write(
        &dir.join("rules.yaml"),
        r#"groups:
  - name: e2e
    rules:
      - alert: FeatureDrift
        metric: driftwatch_feature_drift_detected
        op: "=="
        threshold: 1
        min_samples: 600
        for: 3s
        severity: warning
        annotations:
          summary: "{{ model }}: feature {{ feature }} drifted in the {{ window }} window"
      - alert: DatasetDrift
        metric: driftwatch_drifted_features_share
        op: ">="
        threshold: 0.25
        min_samples: 600
        for: 3s
        severity: critical
        actions: [retrain]
        annotations:
          summary: "{{ model }}: {{ (value * 100) | round(0) }}% of features drift"
"#,
    );
    let config = dir.join("collector.yaml");
    write(
        &config,
        &format!(
            r#"db: {db}
eval_interval: 1s
log: {{format: json}}
auth:
  ingest: {{tokens_env: E2E_INGEST_TOKENS}}
external_url: http://driftwatch.e2e.example
rules: [{dir}/receivers.yaml, {dir}/rules.yaml]
models:
  - name: credit
    task: binary_classification
    positive_class: "1"
    reference: {reference}
    windows: [20s]
    label_ttl: 1h
    cost:
      champion: {{per_hour_usd: 1.20}}
      shadow: {{per_second_usd: 0.0004}}
    estimation:
      reference: {estimation}
      target: default
      prediction: label
      score: score
    multivariate: {{}}
    segments: {{columns: [country], top: 3}}
"#,
            db = dir.join("driftwatch.db").display(),
            dir = dir.display(),
            reference = repo("examples/credit/reference.csv").display(),
            estimation = repo("examples/credit/estimation.csv").display(),
        ),
    );
    config
}

#[test]
fn drifting_traffic_alerts_retrains_resolves_and_fills_the_dashboards() {
    let dir = driftwatch_testkit::temp_dir("e2e");
    let _ = std::fs::remove_dir_all(&dir);
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).expect("temp dir");

    let python = repo(".cache/testenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/test, which installs aiosmtpd there",
        python.display()
    );
    let mut cmd = Command::new(&python);
    cmd.arg(repo("collector/tests/support/smtp_sink.py"))
        .arg(&inbox);
    let mut smtp = Proc::start("smtp", cmd, &dir);
    let smtp_port = smtp.wait_for("its port", |l| {
        l.trim().parse::<u16>().ok().map(|p| p.to_string())
    });
    let hooks = receiver::Receiver::start(&[]);
    let config = config_files(&dir, &smtp_port, &hooks.url);

    let slack = format!("{}/slack/{SLACK_KEY}", hooks.url);
    let (collector, collector_addr) = support::start_collector(
        &dir,
        &config,
        &[
            ("SLACK_URL", slack.as_str()),
            ("RETRAIN_HMAC", HMAC_SECRET),
            ("E2E_INGEST_TOKENS", INGEST_TOKEN),
        ],
    );
    let (champion, champion_addr) = support::start_champion(&dir);
    let challenger = repo("examples/credit/challenger.onnx");
    let (agent, agent_addr, admin_addr) = support::start_agent_with(
        &dir,
        &champion_addr,
        &collector_addr,
        &[
            "--shadow-model",
            challenger.to_str().expect("UTF-8 path"),
            "--shadow-inputs",
            "age,income,loan_amount,bureau_score,dependents,has_card",
            "--log-format",
            "json",
        ],
        &[("DRIFTWATCH_TOKEN", INGEST_TOKEN)],
    );
    wait_until(
        "the agent to be ready",
        Duration::from_secs(60),
        &[&agent],
        || http(&admin_addr, "GET", "/readyz").is_some_and(|(s, _)| s == 200),
    );

    let (prometheus, prometheus_addr) = prometheus::start(
        &dir,
        &[
            ("driftwatch-collector", &collector_addr),
            ("driftwatch-agent", &admin_addr),
        ],
    );
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut cmd = Command::new(bin("driftwatch-example-traffic"));
    cmd.arg("--agent")
        .arg(format!("http://{agent_addr}"))
        .arg("--collector")
        .arg(format!("http://{collector_addr}"))
        .arg("--reference")
        .arg(repo("examples/credit/reference.csv"))
        .arg("--drifted")
        .arg(repo("examples/credit/current.csv"))
        .args(["--rate", "60", "--drift-after", "25s", "--drift-for", "50s"])
        .args([
            "--label-delay",
            "3s",
            "--window",
            "20s",
            "--status-every",
            "5s",
        ])
        .args(["--seed", "11"])
        .env("DRIFTWATCH_TOKEN", INGEST_TOKEN);
    let traffic = Proc::start("traffic", cmd, &dir);
    let all = [&collector, &agent, &champion, &traffic, &prometheus, &smtp];
    // Clean traffic raises no alert: nothing is mailed before the drift
    // starts (25 s, more than a 20 s window with its 600 events).
    std::thread::sleep(Duration::from_secs(24));
    let early: Vec<String> = mails(&inbox)
        .iter()
        .map(|m| subject(m).to_string())
        .collect();
    assert!(early.is_empty(), "alerts before any drift: {early:?}");

    // The drift email names the features that drifted (income and country
    // in examples/credit/current.csv; others may join on a noisy window).
    wait_until(
        "a FeatureDrift email naming income and country",
        Duration::from_secs(240),
        &all,
        || {
            let firing: Vec<String> = mails(&inbox)
                .into_iter()
                .filter(|m| {
                    subject(m).starts_with("[FIRING") && subject(m).contains("FeatureDrift")
                })
                .collect();
            ["income", "country"].iter().all(|f| {
                firing.iter().any(|m| {
                    m.contains(&format!("feature={f}"))
                        || m.contains(&format!("feature {f} drifted"))
                })
            })
        },
    );
    for m in mails(&inbox) {
        assert!(m.contains("To: ml-team@example.com"), "{m}");
        assert!(m.contains("http://driftwatch.e2e.example/v1/alerts"), "{m}");
    }

    // The retraining webhook, signed, from the DatasetDrift alert; the
    // critical alert also reached Slack.
    wait_until(
        "the retraining webhook",
        Duration::from_secs(60),
        &all,
        || hooks.requests().iter().any(|r| r.path == "/retrain"),
    );
    let slack_firing = |status: &str| {
        hooks.requests().iter().any(|r| {
            r.path.starts_with("/slack/")
                && String::from_utf8_lossy(&r.body)
                    .contains(&format!("[{status}] DatasetDrift credit"))
        })
    };
    wait_until(
        "DatasetDrift on Slack",
        Duration::from_secs(30),
        &all,
        || slack_firing("FIRING"),
    );

    // Accuracy, per role, once the delayed labels arrive.
    wait_until(
        "accuracy of the champion and the shadow",
        Duration::from_secs(60),
        &all,
        || {
            let text = http(&collector_addr, "GET", "/metrics").map_or(String::new(), |r| r.1);
            ["champion", "shadow"].iter().all(|role| {
                metric(
                    &text,
                    "driftwatch_model_performance",
                    &[("role", role), ("metric", "accuracy"), ("window", "20s")],
                )
                .is_some_and(|a| (0.0..=1.0).contains(&a))
            })
        },
    );

    // The drift stops 75 s after the start; the alerts resolve on the next
    // clean window.
    wait_until(
        "DatasetDrift resolved on Slack and income's drift resolved by email",
        Duration::from_secs(240),
        &all,
        || {
            // A group's message lists each alert as FIRING or RESOLVED;
            // income's resolution may share one with a feature still firing.
            slack_firing("RESOLVED")
                && mails(&inbox).iter().any(|m| {
                    m.contains("RESOLVED FeatureDrift\r\ncredit: feature income drifted")
                        || m.contains("RESOLVED FeatureDrift\ncredit: feature income drifted")
                })
        },
    );
    let alerts = get_json(&collector_addr, "/v1/alerts");
    assert!(
        alerts["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .all(|a| a["labels"]["alertname"] != "DatasetDrift"),
        "DatasetDrift is no longer active: {alerts}"
    );

    // Called once (the cooldown holds the rest), with a valid signature
    // and the evidence.
    let calls: Vec<receiver::Request> = hooks
        .requests()
        .into_iter()
        .filter(|r| r.path == "/retrain")
        .collect();
    assert_eq!(calls.len(), 1, "one retraining call");
    assert!(
        calls[0].signed_with(HMAC_SECRET),
        "HMAC signature checks out"
    );
    let evidence = calls[0].json();
    assert_eq!(evidence["kind"], "driftwatch.retraining");
    assert_eq!(evidence["model"], "credit");
    assert_eq!(evidence["rule"], "DatasetDrift");
    let drifted: Vec<&str> = evidence["drifted_features"]
        .as_array()
        .expect("drifted features")
        .iter()
        .filter_map(|f| f["feature"].as_str())
        .collect();
    assert!(
        drifted.contains(&"income") && drifted.contains(&"country"),
        "{drifted:?}"
    );

    // Nothing the agent saw was lost on the way.
    let agent_metrics = http(&admin_addr, "GET", "/metrics").map_or(String::new(), |r| r.1);
    assert!(
        !agent_metrics
            .lines()
            .any(|l| l.starts_with("driftwatch_agent_events_dropped_total{") && !l.ends_with(" 0")),
        "no event dropped:\n{agent_metrics}"
    );

    let ended = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 1;
    // One more scrape after the last change.
    std::thread::sleep(Duration::from_secs(2));
    prometheus::check_dashboards(
        &prometheus_addr,
        &["overview", "drift", "performance", "alerts"],
        started,
        ended,
    );

    // The logs of the whole run: the collector's and the agent's are JSON
    // lines, and no process wrote a secret it was given (the ingest token,
    // the HMAC secret, the Slack URL's key).
    for p in [&collector, &agent] {
        assert!(!support::json_log(&p.output()).is_empty());
    }
    for p in all {
        let out = p.output();
        for secret in [INGEST_TOKEN, HMAC_SECRET, SLACK_KEY] {
            assert!(!out.contains(secret), "a secret in a log:\n{out}");
        }
    }
    drop(traffic);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_dashboards_are_what_build_py_writes_and_provisioning_names_them() {
    let dir = driftwatch_testkit::temp_dir("dash");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    // build.py writes next to itself: run a copy, compare with the committed files.
    std::fs::copy(repo("dashboards/build.py"), dir.join("build.py")).expect("copy");
    let status = Command::new("python3")
        .arg(dir.join("build.py"))
        .status()
        .expect("python3");
    assert!(status.success());
    for name in ["overview", "drift", "performance", "alerts", "experiments"] {
        let file = format!("{name}.json");
        let built = std::fs::read_to_string(dir.join(&file)).expect("built");
        let committed =
            std::fs::read_to_string(repo(&format!("dashboards/{file}"))).expect("committed");
        assert!(
            built == committed,
            "dashboards/{file} differs from what build.py writes: run python3 dashboards/build.py"
        );
        let d: Value = serde_json::from_str(&committed).expect("JSON");
        assert_eq!(d["uid"], format!("driftwatch-{name}"));
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .expect("variables")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        // Experiments run longer than any window: no window variable.
        assert!(
            vars.contains(&"model") && (vars.contains(&"window") || name == "experiments"),
            "{vars:?}"
        );
        // Panels do not overlap in Grafana's 24-column grid.
        let cells: Vec<(i64, i64, i64, i64)> = d["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .map(|p| {
                let g = &p["gridPos"];
                let n = |k: &str| g[k].as_i64().expect("grid position");
                (n("x"), n("y"), n("w"), n("h"))
            })
            .collect();
        for (i, a) in cells.iter().enumerate() {
            assert!(a.0 + a.2 <= 24, "{name}: panel {i} is wider than the grid");
            for b in &cells[i + 1..] {
                let apart =
                    a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
                assert!(apart, "{name}: panels {a:?} and {b:?} overlap");
            }
        }
    }
    let datasource =
        std::fs::read_to_string(repo("dashboards/provisioning/datasources/driftwatch.yaml"))
            .expect("datasource");
    assert!(datasource.contains("type: prometheus"));
    let provider =
        std::fs::read_to_string(repo("dashboards/provisioning/dashboards/driftwatch.yaml"))
            .expect("provider");
    assert!(provider.contains("type: file") && provider.contains("path: "));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_config_and_rules_load_in_the_collector() {
    let dir = driftwatch_testkit::temp_dir("demo");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut cmd = Command::new(bin("driftwatch"));
    cmd.current_dir(repo(""))
        .args(["serve", "--config", "examples/demo/collector.yaml"])
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("demo.db"));
    let mut collector = Proc::start("collector", cmd, &dir);
    let addr = collector.wait_line("driftwatch listening on ");
    let rules = get_json(&addr, "/v1/rules");
    let names: Vec<&str> = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(
        names,
        ["FeatureDrift", "DatasetDrift", "EstimatedAccuracyDrop"],
        "{rules}"
    );
    let models = get_json(&addr, "/v1/models");
    assert_eq!(models["models"][0]["name"], "credit", "{models}");
    drop(collector);
    let _ = std::fs::remove_dir_all(&dir);
}
