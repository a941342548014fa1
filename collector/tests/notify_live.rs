//! Notifications from the real collector to real HTTP receivers: one signed
//! message per firing alert, retried after a 500 with the same idempotency
//! key, appended by the log receiver, Alertmanager's v4 payload on request,
//! dead-lettered on a final refusal, none lost when the collector is killed
//! with messages still pending; Slack Block Kit, a real Alertmanager and
//! email through a real SMTP server (aiosmtpd).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::examples::{
    args_with_rules, drift_group, drifted_features, events_with_ids, example, post_examples,
    run_cli, serve_args,
};
use common::server::Server;
use driftwatch_testkit::mail::{mails, SmtpSink};
use driftwatch_testkit::receiver::Receiver;
use serde_json::Value;

/// A route that sends each alert alone, at the first evaluation.
const EACH_AT_ONCE: &str = "route:\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 1s\n";

/// A rule file: `receivers` (YAML list items) and one FeatureDrift rule per
/// drifted feature of the example model that notifies `names` (each alert
/// alone, at once); `extra` adds annotation lines.
fn drift_rules(receivers: &str, names: &str, threshold: u32, extra: &str) -> String {
    let group = drift_group(
        &threshold.to_string(),
        &format!(
            "        annotations:\n          summary: \"{{{{ feature }}}} drifted\"\n{extra}        receivers: [{names}]\n"
        ),
    );
    format!("{EACH_AT_ONCE}receivers:\n{receivers}\n{group}")
}

/// A collector config for the example model (1-day window, evaluated every
/// 100 ms) with `rules` and `external_url`.
fn config_file(dir: &Path, rules: &Path, external_url: &str) -> PathBuf {
    let text = format!(
        "eval_interval: 100ms\nexternal_url: {external_url}\nrules: [{}]\nmodels:\n  - name: credit\n    reference: {}\n    windows: [1d]\n",
        rules.display(),
        example("reference.csv").display()
    );
    driftwatch_testkit::file(dir, "driftwatch.yaml", text)
}

fn rules_file(dir: &Path, hook: &Receiver, gone: &Receiver, format: &str) -> PathBuf {
    let rules = dir.join("rules.yaml");
    let log = dir.join("notifications.log");
    std::fs::write(
        &rules,
        drift_rules(
            &format!(
                "  - name: hook\n    webhook:\n      url: {}/hook\n      headers: {{X-Team: risk}}\n      hmac_secret_env: HOOK_SECRET\n      format: {format}\n  - name: file\n    log: {{path: {}}}\n  - name: gone\n    webhook: {{url: \"{}/gone\"}}",
                hook.url,
                log.display(),
                gone.url
            ),
            "hook, file, gone",
            1,
            "",
        ),
    )
    .expect("rules");
    rules
}

/// The drift rule notifying one webhook receiver `hook` at `{url}/hook`.
/// A database directory with the rules of `hook_rules` in it, and the hook.
fn hooked() -> (std::path::PathBuf, Receiver, std::path::PathBuf) {
    let dir = common::server::temp_db_dir();
    let hook = Receiver::start(&[]);
    let rules = driftwatch_testkit::file(&dir, "rules.yaml", hook_rules(&hook));
    (dir, hook, rules)
}

fn hook_rules(hook: &Receiver) -> String {
    drift_rules(
        &format!(
            "  - name: hook\n    webhook: {{url: \"{}/hook\"}}",
            hook.url
        ),
        "hook",
        1,
        "",
    )
}

fn start(rules: &Path, db: &Path) -> Server {
    let args = args_with_rules(rules);
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
fn signed_webhooks_are_retried_and_logged_and_final_refusals_dead_letter() {
    let dir = common::server::temp_db_dir();
    let n = drifted();
    assert!(n >= 2);
    // The first delivery fails with a 500.
    let hook = Receiver::start(&[500]);
    // A receiver that answers 404: a client error is final, dead-lettered at once.
    let gone = Receiver::start(&[404; 1000]);
    let rules = rules_file(&dir, &hook, &gone, "driftwatch");
    let server = start(&rules, &dir.join("driftwatch.db"));
    post_examples(&server);
    server.wait_for(Duration::from_secs(30), "every message delivered", |_| {
        keys(&hook).len() == n && hook.requests().len() == n + 1
    });
    for r in hook.requests() {
        assert_eq!(r.path, "/hook");
        assert_eq!(r.header("X-Team"), Some("risk"));
        let ts = r.header("X-Driftwatch-Timestamp").expect("timestamp");
        let want = driftwatch::notify::http::sign(b"s3cret", ts, &r.body);
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
        metric("hook", "delivered") == Some(n as f64) && metric("gone", "dead") == Some(n as f64)
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
        .is_some_and(|e| e.contains("HTTP 404")));
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
    let gone = Receiver::start(&[404; 1000]);
    let rules = rules_file(&dir, &hook, &gone, "alertmanager");
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
        let config = driftwatch_testkit::file(
            &dir,
            "am.yml",
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        );
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
        drift_rules(
            &format!(
                "  - name: slack\n    slack: {{url_env: SLACK_URL}}\n  - name: am\n    alertmanager: {{url: \"{}\"}}",
                am.url
            ),
            "slack, am",
            threshold,
            "",
        )
    };
    let rules = driftwatch_testkit::file(&dir, "rules.yaml", rule(1));
    let config = config_file(&dir, &rules, "http://driftwatch.example:8080/");
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

#[test]
fn drift_alerts_arrive_by_email_through_a_real_smtp_server() {
    let dir = common::server::temp_db_dir();
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    // The first message is refused with a transient 451, then retried.
    std::fs::write(inbox.join("reject-next"), "").expect("flag");
    let smtp = SmtpSink::start(&inbox);
    let drifted = drifted_features();
    let rules = driftwatch_testkit::file(&dir, "rules.yaml", drift_rules(
            &format!(
                "  - name: mail\n    email:\n      to: [ml-oncall@example.com]\n      from: driftwatch@example.com\n      smarthost: \"127.0.0.1:{}\"\n      tls: none",
                smtp.port
            ),
            "mail",
            1,
            "          description: \"Most drifted: {{ top_features | map(attribute='name') | join(', ') }}\"\n",
        ));
    let config = config_file(&dir, &rules, "http://driftwatch.example:8080");
    let server = Server::start(&["--config", config.to_str().expect("UTF-8")], &[]);
    post_examples(&server);
    server.wait_for(
        Duration::from_secs(30),
        "one email per drifted feature",
        |_| mails(&inbox).len() == drifted.len(),
    );
    let mut subjects: Vec<String> = Vec::new();
    for m in mails(&inbox) {
        assert!(m.contains("From: driftwatch@example.com"), "{m}");
        assert!(m.contains("To: ml-oncall@example.com"), "{m}");
        assert!(m.contains("Content-Type: text/plain"), "{m}");
        assert!(m.contains("Content-Type: text/html"), "{m}");
        let subject = m
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .expect("subject")
            .to_string();
        assert!(m.contains("threshold: 1"), "{m}");
        assert!(m.contains("drifted features in the window:"), "{m}");
        assert!(
            m.contains("http://driftwatch.example:8080/v1/alerts"),
            "{m}"
        );
        for f in &drifted {
            assert!(m.contains(f.as_str()), "{f} not named in {m}");
        }
        subjects.push(subject);
    }
    subjects.sort();
    let mut want: Vec<String> = drifted
        .iter()
        .map(|f| format!("[FIRING] FeatureDrift credit: {f} drifted"))
        .collect();
    want.sort();
    assert_eq!(subjects, want);
    // Each email carries its outbox message's key as Message-ID and
    // Idempotency-Key; the attempt refused with 451 carried the same ones as
    // the resend that was accepted.
    let header = |m: &str, name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {m}"))
            .trim()
            .to_string()
    };
    let ids: BTreeSet<String> = mails(&inbox)
        .iter()
        .map(|m| header(m, "Message-ID"))
        .collect();
    let (_, outbox) = server.request("GET", "/v1/notifications?state=delivered", &[], b"");
    let outbox: serde_json::Value = serde_json::from_str(&outbox).expect("JSON");
    let want_ids: BTreeSet<String> = outbox["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| {
            let key = n["message"]["idempotency_key"].as_str().expect("key");
            format!("<{key}@driftwatch>")
        })
        .collect();
    assert_eq!(ids, want_ids);
    for m in mails(&inbox) {
        let key = header(&m, "Idempotency-Key");
        assert_eq!(header(&m, "Message-ID"), format!("<{key}@driftwatch>"));
    }
    let refused = std::fs::read_to_string(inbox.join("refused.txt")).expect("the refused attempt");
    assert!(ids.contains(&header(&refused, "Message-ID")), "{refused}");
    let metric = |outcome: &str| {
        server.metric(
            "driftwatch_notifications_total",
            &[("receiver", "mail"), ("outcome", outcome)],
        )
    };
    assert_eq!(metric("failed"), Some(1.0), "the 451 was retried");
    assert_eq!(metric("delivered"), Some(drifted.len() as f64));
    drop(server);
    drop(smtp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_silence_holds_back_a_firing_until_it_is_expired() {
    let (dir, hook, rules) = hooked();
    let drifted = drifted_features();
    let server = start(&rules, &dir.join("driftwatch.db"));
    let url = format!("http://{}", server.addr);
    let quiet = &drifted[0];
    let matcher = format!("feature={quiet}");
    let (code, out, err) = run_cli(&[
        "silence",
        "add",
        "alertname=FeatureDrift",
        &matcher,
        "--duration",
        "1h",
        "--comment",
        "known shift",
        "--author",
        "ci",
        "--url",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    assert_eq!(id.len(), 16, "{out}");
    // A bad matcher is refused with the reason.
    let (code, _, err) = run_cli(&[
        "silence",
        "add",
        "feature",
        "--comment",
        "x",
        "--author",
        "ci",
        "--url",
        &url,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a matcher"), "{err}");
    post_examples(&server);
    let features = |hook: &Receiver| {
        let mut f: Vec<String> = hook
            .requests()
            .iter()
            .filter_map(|r| {
                r.json()["alerts"][0]["labels"]["feature"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        f.sort();
        f
    };
    let others: Vec<String> = drifted.iter().filter(|f| *f != quiet).cloned().collect();
    server.wait_for(Duration::from_secs(30), "the unsilenced alerts", |_| {
        features(&hook) == others
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(features(&hook), others, "the silenced alert was not sent");
    assert_eq!(
        server.metric("driftwatch_notifications_silenced_total", &[]),
        Some(1.0)
    );
    let (code, out, _) = run_cli(&["silence", "list", "--url", &url]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("active") && out.contains(&matcher),
        "{out}"
    );
    let (code, _, err) = run_cli(&["silence", "expire", &id, "--url", &url]);
    assert_eq!(code, 0, "{err}");
    server.wait_for(
        Duration::from_secs(30),
        "the held-back alert after the silence",
        |_| features(&hook) == drifted,
    );
    let (_, out, _) = run_cli(&["silence", "list", "--url", &url]);
    assert!(out.contains("expired"), "{out}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Features named by a message's alerts, sorted, with their status.
fn message_features(m: &Value) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = m["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            (
                a["labels"]["feature"].as_str().unwrap_or("").to_string(),
                a["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    f.sort();
    f
}

fn reload(server: &Server) {
    let (status, body) = server.request("POST", "/-/reload", &[], b"");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn alerts_are_grouped_into_one_message_and_retraining_is_called_once_per_cooldown() {
    let dir = common::server::temp_db_dir();
    let team = Receiver::start(&[]);
    // The first call fails: it is retried with the same key and body.
    let airflow = Receiver::start(&[500]);
    let drifted = drifted_features();
    let n = drifted.len();
    let rules = dir.join("rules.yaml");
    let write = |threshold: u32| {
        std::fs::write(
            &rules,
            format!(
                r#"route:
  receiver: team
  group_by: [alertname, model]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: team
    webhook: {{url: "{}/team"}}
actions:
  - name: retrain
    cooldown: 1h
    webhook:
      url: "{}/api/v1/dags/retrain_credit/dagRuns"
      headers_env: {{Authorization: AIRFLOW_AUTH}}
      hmac_secret_env: RETRAIN_SECRET
      body: |
        {{"dag_run_id": "{{{{ idempotency_key }}}}", "conf": {{{{ evidence | tojson }}}}}}
{}"#,
                team.url,
                airflow.url,
                drift_group(&threshold.to_string(), "        actions: [retrain]\n")
            ),
        )
        .expect("rules")
    };
    write(1);
    let args = args_with_rules(&rules);
    let server = Server::start_on(
        &args,
        &[
            ("AIRFLOW_AUTH", "Basic YWRtaW46YWRtaW4="),
            ("RETRAIN_SECRET", "k3y"),
        ],
        &dir.join("driftwatch.db"),
    );
    post_examples(&server);
    // One message for the whole group, after group_wait.
    server.wait_for(Duration::from_secs(30), "the group's message", |_| {
        !team.requests().is_empty()
    });
    std::thread::sleep(Duration::from_millis(1500));
    let sent = team.requests();
    assert_eq!(sent.len(), 1, "one message for {n} alerts");
    let m = sent[0].json();
    assert_eq!(m["status"], "firing");
    let firing: Vec<(String, String)> = drifted
        .iter()
        .map(|f| (f.clone(), "firing".to_string()))
        .collect();
    assert_eq!(message_features(&m), firing);

    // The retraining call: once for the rule's n alerts, retried after the
    // 500 with the same key and body, signed, with the secret header.
    server.wait_for(Duration::from_secs(30), "the retried call", |_| {
        airflow.requests().len() == 2
    });
    let calls = airflow.requests();
    assert_eq!(calls[0].body, calls[1].body);
    let key = calls[0].header("Idempotency-Key").expect("key").to_string();
    assert_eq!(calls[1].header("Idempotency-Key"), Some(key.as_str()));
    for c in &calls {
        assert_eq!(c.path, "/api/v1/dags/retrain_credit/dagRuns");
        assert_eq!(c.header("Authorization"), Some("Basic YWRtaW46YWRtaW4="));
        let ts = c.header("X-Driftwatch-Timestamp").expect("timestamp");
        let want = driftwatch::notify::http::sign(b"k3y", ts, &c.body);
        assert_eq!(c.header("X-Driftwatch-Signature"), Some(want.as_str()));
    }
    let body = calls[0].json();
    assert_eq!(body["dag_run_id"], key);
    let conf = &body["conf"];
    assert_eq!(conf["model"], "credit");
    assert_eq!(conf["rule"], "FeatureDrift");
    assert_eq!(conf["idempotency_key"], key);
    let mut named: Vec<String> = conf["drifted_features"]
        .as_array()
        .expect("drifted features")
        .iter()
        .map(|f| f["feature"].as_str().expect("feature").to_string())
        .collect();
    named.sort();
    assert_eq!(named, drifted);
    assert!(conf["drifted_features"][0]["statistic"].is_number());
    assert_eq!(conf["window"]["length"], "1d");
    let reference = std::fs::read(example("reference.csv")).expect("reference");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&reference));
    assert_eq!(conf["reference"]["sha256"], sha);
    assert_eq!(conf["reference"]["rows"], 2000);
    let actions = |outcome: &str| {
        server.metric(
            "driftwatch_actions_total",
            &[
                ("action", "retrain"),
                ("model", "credit"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(actions("queued"), Some(1.0));
    assert_eq!(actions("cooldown"), Some((n - 1) as f64));

    // Drift "stops": one resolved message for the group.
    write(2);
    reload(&server);
    server.wait_for(Duration::from_secs(30), "the resolved message", |_| {
        team.requests().len() == 2
    });
    let m = team.requests()[1].json();
    assert_eq!(m["status"], "resolved");
    let resolved: Vec<(String, String)> = drifted
        .iter()
        .map(|f| (f.clone(), "resolved".to_string()))
        .collect();
    assert_eq!(message_features(&m), resolved);
    assert_ne!(
        m["idempotency_key"],
        team.requests()[0].json()["idempotency_key"]
    );
    // It fires again inside the cooldown: a new firing message, no new call.
    write(1);
    reload(&server);
    server.wait_for(Duration::from_secs(30), "the new firing message", |_| {
        team.requests().len() == 3
    });
    assert_eq!(team.requests()[2].json()["status"], "firing");
    server.wait_for(Duration::from_secs(10), "the cooldown counted", |_| {
        actions("cooldown") == Some((2 * n - 1) as f64)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(airflow.requests().len(), 2, "no second retraining call");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_resolved_message_follows_when_drift_stops_in_the_traffic() {
    let (dir, hook, rules) = hooked();
    let drifted = drifted_features();
    // Windows of 12 s: the drifted rows fill one, the reference's rows the
    // next (long enough for the firing messages to arrive within the first
    // on a busy 2-core machine running the other tests at the same time).
    const WINDOW_MS: i64 = 12_000;
    let rules = rules.to_str().expect("UTF-8");
    let extra = [
        "--window",
        "12s",
        "--eval-interval",
        "100ms",
        "--rules",
        rules,
    ];
    let reference = example("reference.csv");
    let server = Server::start_on(
        &serve_args("credit", &reference, &extra),
        &[],
        &dir.join("driftwatch.db"),
    );
    let now = || chrono::Utc::now().timestamp_millis();
    let stamp = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // Start early in a window so the alerts fire well within it.
    while now() % WINDOW_MS > 500 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_window = now() / WINDOW_MS;
    let events = events_with_ids(&example("current.csv"), &stamp(), "cur");
    assert_eq!(
        server.post_items("/v1/events", "events", &events)["accepted"],
        1500
    );
    let statuses = |hook: &Receiver, status: &str| {
        let mut f: Vec<String> = hook
            .requests()
            .iter()
            .map(|r| r.json())
            .filter(|m| m["status"] == status)
            .filter_map(|m| {
                m["alerts"][0]["labels"]["feature"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        f.sort();
        f
    };
    server.wait_for(Duration::from_secs(9), "the firing messages", |_| {
        statuses(&hook, "firing") == drifted
    });
    // The window ends with no new traffic: nothing resolves by itself.
    while now() / WINDOW_MS == first_window {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(statuses(&hook, "resolved").is_empty());
    // Traffic like the reference arrives in the new window: drift stopped.
    let events = events_with_ids(&reference, &stamp(), "ref");
    assert_eq!(
        server.post_items("/v1/events", "events", &events)["accepted"],
        2000
    );
    server.wait_for(Duration::from_secs(10), "the resolved messages", |_| {
        statuses(&hook, "resolved") == drifted
    });
    let (_, body) = server.request("GET", "/v1/alerts", &[], b"");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["alerts"].as_array().map(Vec::len), Some(0), "{body}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hanging_or_refusing_receiver_delays_no_other_and_is_retried() {
    let dir = common::server::temp_db_dir();
    let n = drifted();
    // The first attempt fails: its retry must not wait for the hanging one.
    let hook = Receiver::start(&[500]);
    // Accepts connections (the kernel's backlog) and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = |l: std::net::TcpListener| l.local_addr().expect("addr").port();
    let refused = closed(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    let smtp_down = closed(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    let rules = driftwatch_testkit::file(&dir, "rules.yaml", drift_rules(
            &format!(
                "  - name: hook\n    webhook: {{url: \"{}/hook\"}}\n  - name: hang\n    webhook: {{url: \"http://{}/hang\"}}\n  - name: refused\n    webhook: {{url: \"http://127.0.0.1:{refused}/x\"}}\n  - name: smtp-down\n    email: {{to: [ml@example.com], from: dw@example.com, smarthost: \"127.0.0.1:{smtp_down}\", tls: none}}",
                hook.url,
                hang.local_addr().expect("addr"),
            ),
            "hook, hang, refused, smtp-down",
            1,
            "",
        ));
    let server = start(&rules, &dir.join("driftwatch.db"));
    post_examples(&server);
    let metric = |receiver: &str, outcome: &str| {
        server
            .metric(
                "driftwatch_notifications_total",
                &[("receiver", receiver), ("outcome", outcome)],
            )
            .unwrap_or(0.0)
    };
    // Well before the hanging attempts time out (10 s), the failed hook
    // message has been retried and every hook message delivered.
    server.wait_for(Duration::from_secs(6), "the hook's retry", |_| {
        hook.requests().len() == n + 1 && metric("hook", "delivered") == n as f64
    });
    assert_eq!(metric("hang", "failed"), 0.0, "still waiting for an answer");
    assert!(metric("refused", "failed") >= n as f64);
    assert!(metric("smtp-down", "failed") >= n as f64);
    server.wait_for(
        Duration::from_secs(20),
        "the hanging attempts timing out",
        |_| metric("hang", "failed") >= n as f64,
    );
    let (status, body) = server.request("GET", "/v1/notifications?state=pending", &[], b"");
    assert_eq!(status, 200);
    let pending: Value = serde_json::from_str(&body).expect("JSON");
    let errors: Vec<(String, String)> = pending["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| {
            (
                m["receiver"].as_str().unwrap_or("").to_string(),
                m["last_error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let error_of = |r: &str| {
        errors
            .iter()
            .find(|(name, e)| name == r && !e.is_empty())
            .map(|(_, e)| e.clone())
            .unwrap_or_default()
    };
    assert!(
        error_of("hang").contains("no answer within 10 s"),
        "{errors:?}"
    );
    assert!(!error_of("refused").is_empty(), "{errors:?}");
    assert!(
        error_of("smtp-down").contains("SMTP 127.0.0.1:"),
        "{errors:?}"
    );
    let (status, _) = server.request("GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
    drop(hang);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
