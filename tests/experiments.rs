//! An A/B test end to end with the real binaries: two example champions
//! (champion.onnx as the control arm, challenger.onnx as the treatment)
//! behind one agent that splits traffic 50/50, sticky by `x-user-id`; the
//! collector judges the experiment from delayed labels in which the
//! treatment is right more often. It checks what a user would: every
//! answer names its arm and a user stays on one; the decision turns to
//! `promote` for the treatment (`GET /v1/experiments/ab` answers 200);
//! the promotion webhook is called once with a valid signature; a real
//! MLflow server (started here, SQLite backend) has its registered
//! model's `champion` alias moved to the treatment's version; and when the
//! treatment's upstream drops half of its requests, the sample-ratio
//! check makes the experiment invalid (409) and its alert fires. Every
//! query of the experiments dashboard returns series from a real
//! Prometheus scraping the collector.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use driftwatch_testkit::process::{
    bin, free_port, http, http_exchange, http_request, wait_until, write, Answer, Proc,
    CREDIT_REQUEST,
};
use driftwatch_testkit::{ort_library, prometheus, receiver, repo};
use serde_json::{json, Value};

const HMAC_SECRET: &str = "ab-secret";

/// The predicted class in a KServe v2 answer of the example champion.
fn predicted(body: &str) -> String {
    let v: Value = serde_json::from_str(body).expect("JSON answer");
    let label = v["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == "label"))
        .map(|t| t["data"][0].clone())
        .expect("a label output");
    match label {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// A loopback proxy in front of an upstream that, while `dropping` is
/// set, closes every other request's connection without an answer.
struct Flaky {
    addr: String,
    dropping: Arc<AtomicBool>,
}

impl Flaky {
    fn start(upstream: String) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let dropping = Arc::new(AtomicBool::new(false));
        let (flag, count) = (dropping.clone(), Arc::new(AtomicU64::new(0)));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (up, flag, count) = (upstream.clone(), flag.clone(), count.clone());
                std::thread::spawn(move || relay(client, &up, &flag, &count));
            }
        });
        Flaky { addr, dropping }
    }
}

fn relay(mut client: TcpStream, upstream: &str, dropping: &AtomicBool, count: &AtomicU64) {
    let (mut from_client, mut from_up) = (Vec::new(), Vec::new());
    let mut up: Option<TcpStream> = None;
    while let Some(request) = message(&mut client, &mut from_client) {
        if dropping.load(Ordering::SeqCst) && count.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            return;
        }
        if up.is_none() {
            up = TcpStream::connect(upstream).ok();
        }
        let Some(u) = up.as_mut() else { return };
        if u.write_all(&request).is_err() {
            return;
        }
        let Some(answer) = message(u, &mut from_up) else {
            return;
        };
        if client.write_all(&answer).is_err() {
            return;
        }
    }
}

/// The next HTTP/1.1 message (head and `content-length` body) read from
/// `s`, with what was read beyond it kept in `buf`.
fn message(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let rest = buf.split_off(end + 4 + len);
                return Some(std::mem::replace(buf, rest));
            }
        }
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn champion(dir: &Path, name: &str, model: &str) -> (Proc, String) {
    let mut cmd = Command::new(bin("driftwatch-example-champion"));
    cmd.arg("--model-file")
        .arg(repo(&format!("examples/credit/{model}")))
        .args(["--listen", "127.0.0.1:0"])
        .env("ORT_DYLIB_PATH", ort_library());
    let mut p = Proc::start(name, cmd, dir);
    let addr = p.wait_line("listening on ");
    (p, addr)
}

/// A real MLflow tracking server (`.cache/mlflowenv`, installed by
/// scripts/test) with registered model `credit`, versions 1 and 2, alias
/// `champion` on 1; `None` (and why) when MLflow is not installed.
fn mlflow(dir: &Path) -> Result<(Proc, String), String> {
    let exe = repo(".cache/mlflowenv/bin/mlflow");
    if !exe.exists() {
        return Err(format!(
            "{} is missing (scripts/test installs it)",
            exe.display()
        ));
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let (host, port) = addr.split_once(':').expect("host:port");
    let mut cmd = Command::new(exe);
    cmd.args(["server", "--host", host, "--port", port, "--workers", "1"])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--default-artifact-root")
        .arg(dir.join("mlartifacts"))
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true");
    let p = Proc::start("mlflow", cmd, dir);
    wait_until("MLflow to answer", Duration::from_secs(120), &[&p], || {
        http(&addr, "GET", "/health").is_some_and(|(s, _)| s == 200)
    });
    let api = |path: &str, body: Value| {
        let got = http_request(
            &addr,
            "POST",
            &format!("/api/2.0/mlflow/{path}"),
            &[("content-type", "application/json")],
            &body.to_string(),
        );
        assert_eq!(got.as_ref().map(|r| r.0), Some(200), "{path}: {got:?}");
    };
    api("registered-models/create", json!({"name": "credit"}));
    for v in ["1", "2"] {
        api(
            "model-versions/create",
            json!({"name": "credit", "source": format!("s3://models/credit/v{v}")}),
        );
    }
    api(
        "registered-models/alias",
        json!({"name": "credit", "alias": "champion", "version": "1"}),
    );
    Ok((p, addr))
}

fn champion_alias(mlflow: &str) -> Option<String> {
    let (_, body) = http(
        mlflow,
        "GET",
        "/api/2.0/mlflow/registered-models/alias?name=credit&alias=champion",
    )?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["model_version"]["version"].as_str().map(String::from)
}

fn collector_config(dir: &Path, hooks: &str, mlflow: Option<&str>) -> PathBuf {
    let mlflow_action = mlflow.map_or(String::new(), |m| {
        format!(
            r#"  - name: mlflow
    cooldown: 1h
    webhook:
      url: http://{m}/api/2.0/mlflow/registered-models/alias
      headers: {{content-type: application/json}}
      body: '{{"name": "credit", "alias": "champion", "version": "{{{{ evidence.experiment.winner_version }}}}"}}'
"#
        )
    });
    let actions = if mlflow.is_some() {
        "[promote, mlflow]"
    } else {
        "[promote]"
    };
    write(
        &dir.join("rules.yaml"),
        &format!(
            r#"route:
  receiver: log
receivers:
  - name: log
    log: {{path: {log}}}
actions:
  - name: promote
    cooldown: 1h
    webhook:
      url: {hooks}/promote
      hmac_secret_env: PROMOTE_HMAC
{mlflow_action}groups:
  - name: experiments
    rules:
      - alert: ExperimentPromote
        metric: driftwatch_experiment_decision
        op: "=="
        threshold: 1
        for: 1s
        severity: info
        actions: {actions}
        annotations:
          summary: "{{{{ labels.experiment }}}}: promote"
      - alert: ExperimentInvalid
        metric: driftwatch_experiment_invalid
        op: "=="
        threshold: 1
        for: 1s
        severity: critical
        annotations:
          summary: "{{{{ labels.experiment }}}}: sample ratio mismatch"
"#,
            log = dir.join("notifications.log").display(),
        ),
    );
    let config = dir.join("collector.yaml");
    write(
        &config,
        &format!(
            r#"db: {db}
eval_interval: 1s
rules: [{rules}]
models:
  - name: credit
    reference: {reference}
    windows: [1h]
    experiments:
      - name: ab
        metric: accuracy
        min_samples: 150
        arms:
          - {{name: control, weight: 50, version: "1"}}
          - {{name: treatment, weight: 50, version: "2"}}
        guardrails: {{error_ratio_increase: 0.05}}
"#,
            db = dir.join("driftwatch.db").display(),
            rules = dir.join("rules.yaml").display(),
            reference = repo("examples/credit/reference.csv").display(),
        ),
    );
    config
}

/// Sends one request per user through the agent; each answered request's
/// (user, arm, request id, predicted class); requests not answered 200
/// are counted.
/// Every other request goes as HTTP/1.1 on one kept-alive connection
/// (the agent's fast path), the others as HTTP/1.0 (its hyper path).
fn send(
    agent: &str,
    users: impl Iterator<Item = String>,
) -> (Vec<(String, String, String, String)>, usize) {
    let (mut answered, mut failed) = (Vec::new(), 0);
    let mut kept: Option<(TcpStream, Vec<u8>)> = None;
    for (i, user) in users.enumerate() {
        let a = if i % 2 == 0 {
            http_exchange(
                agent,
                "POST",
                "/v2/models/credit/infer",
                &[("content-type", "application/json"), ("x-user-id", &user)],
                CREDIT_REQUEST,
            )
            .expect("the agent answers")
        } else {
            let (conn, buf) = kept
                .get_or_insert_with(|| (TcpStream::connect(agent).expect("connect"), Vec::new()));
            let request = format!(
                "POST /v2/models/credit/infer HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\nx-user-id: {user}\r\ncontent-length: {}\r\n\r\n{CREDIT_REQUEST}",
                CREDIT_REQUEST.len()
            );
            conn.write_all(request.as_bytes()).expect("send");
            let raw = message(conn, buf).expect("the agent answers on a kept connection");
            let a = Answer::parse(&raw).expect("an HTTP answer");
            if a.headers.get("connection").is_some_and(|c| c == "close") {
                kept = None;
            }
            a
        };
        let arm = a
            .headers
            .get("x-driftwatch-arm")
            .cloned()
            .expect("x-driftwatch-arm on every answer");
        if a.status != 200 {
            failed += 1;
            continue;
        }
        let id = a
            .headers
            .get("x-request-id")
            .cloned()
            .expect("x-request-id");
        answered.push((user, arm, id, predicted(&a.body)));
    }
    (answered, failed)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn experiment(collector: &str) -> (u16, Value) {
    let (status, body) =
        http(collector, "GET", "/v1/experiments/ab").expect("the collector answers");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn an_ab_test_promotes_the_better_arm_moves_the_mlflow_alias_and_catches_a_lost_split() {
    let dir = driftwatch_testkit::temp_dir("experiments");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ml = mlflow(&dir);
    if let Err(why) = &ml {
        eprintln!("MLflow not available, the alias is not checked: {why}");
    }
    let ml_addr = ml.as_ref().ok().map(|(_, a)| a.clone());
    let hooks = receiver::Receiver::start(&[]);
    let config = collector_config(&dir, &hooks.url, ml_addr.as_deref());
    let (collector, collector_addr) = driftwatch_testkit::process::start_collector(
        &dir,
        &config,
        &[("PROMOTE_HMAC", HMAC_SECRET)],
    );
    let (control, control_addr) = champion(&dir, "control", "champion.onnx");
    let (treatment, treatment_addr) = champion(&dir, "treatment", "challenger.onnx");
    let flaky = Flaky::start(treatment_addr);
    let agent_config = dir.join("agent.yaml");
    write(
        &agent_config,
        &format!(
            r#"collector: {{url: "http://{collector_addr}", batch_wait: 200ms}}
models:
  - name: credit
    protocol: kserve-v2
    arms:
      - {{name: control, upstream: "http://{control_addr}", weight: 50}}
      - {{name: treatment, upstream: "http://{}", weight: 50}}
    arm_key: {{header: x-user-id}}
"#,
            flaky.addr
        ),
    );
    let mut cmd = Command::new(bin("driftwatch-agent"));
    cmd.arg("--config")
        .arg(&agent_config)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("ORT_DYLIB_PATH", ort_library());
    let mut agent = Proc::start("agent", cmd, &dir);
    let agent_addr = agent.wait_line("listening on ");
    let admin_addr = agent.wait_line("admin on ");
    let procs = [&collector, &agent, &control, &treatment];
    let (prometheus, prometheus_addr) =
        prometheus::start(&dir, &[("driftwatch-collector", &collector_addr)]);
    let started = now();

    // 500 users once each, then 20 of them three more times: a user stays
    // on one arm, and the arms share the users about evenly.
    let (mut answered, failed) = send(&agent_addr, (0..500).map(|u| format!("user-{u}")));
    assert_eq!(failed, 0);
    let first: HashMap<String, String> = answered
        .iter()
        .map(|(u, arm, _, _)| (u.clone(), arm.clone()))
        .collect();
    let (again, _) = send(&agent_addr, (0..60).map(|i| format!("user-{}", i % 20)));
    for (user, arm, _, _) in &again {
        assert_eq!(&first[user], arm, "{user} changed arms");
    }
    answered.extend(again);
    let on = |name: &str| answered.iter().filter(|a| a.1 == name).count();
    let (c, t) = (on("control"), on("treatment"));
    assert!(
        c + t == 560 && c > 200 && t > 200,
        "control {c}, treatment {t}"
    );

    // Every event reached the collector before its label is sent.
    wait_until(
        "the collector to count 560 requests",
        Duration::from_secs(60),
        &procs,
        || {
            let (_, v) = experiment(&collector_addr);
            v["arms"].as_array().is_some_and(|a| {
                a.iter()
                    .map(|x| x["requests"].as_u64().unwrap_or(0))
                    .sum::<u64>()
                    >= 560
            })
        },
    );
    // Delayed labels: the treatment's prediction is right 90% of the time,
    // the control's 60% (a fixed pseudo-random sequence).
    let mut seed: u64 = 42;
    let labels: Vec<Value> = answered
        .iter()
        .map(|(_, arm, id, predicted)| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
            let right = u < if arm == "treatment" { 0.9 } else { 0.6 };
            let truth = match (right, predicted.as_str()) {
                (true, p) => p.to_string(),
                (false, "1") => "0".to_string(),
                (false, _) => "1".to_string(),
            };
            json!({"model": "credit", "request_id": id, "label": truth})
        })
        .collect();
    let got = http_request(
        &collector_addr,
        "POST",
        "/v1/feedback",
        &[("content-type", "application/json")],
        &json!({ "labels": labels }).to_string(),
    )
    .expect("feedback answered");
    assert_eq!(got.0, 200, "{}", got.1);
    let reply: Value = serde_json::from_str(&got.1).expect("JSON");
    assert_eq!(reply["accepted"], 560, "{reply}");

    wait_until(
        "the decision to promote the treatment",
        Duration::from_secs(60),
        &procs,
        || experiment(&collector_addr).0 == 200,
    );
    let (_, v) = experiment(&collector_addr);
    eprintln!("decision: {v}");
    assert_eq!(v["decision"], "promote");
    assert_eq!(v["winner"], "treatment");
    assert_eq!(v["winner_version"], "2");
    assert!(v["lift_lower"].as_f64().is_some_and(|l| l > 0.0), "{v}");
    assert!(v["p_value"].as_f64().is_some_and(|p| p < 0.05), "{v}");
    assert!(v["srm_p_value"].as_f64().is_some_and(|p| p > 0.001), "{v}");

    wait_until(
        "the promotion webhook",
        Duration::from_secs(30),
        &procs,
        || hooks.requests().iter().any(|r| r.path == "/promote"),
    );
    if let Some(m) = &ml_addr {
        wait_until(
            "MLflow's champion alias to move to version 2",
            Duration::from_secs(30),
            &procs,
            || champion_alias(m).as_deref() == Some("2"),
        );
    }

    // The treatment's upstream now drops every other request: its answered
    // requests fall behind its weight and the experiment becomes invalid.
    flaky.dropping.store(true, Ordering::SeqCst);
    let (_, failed) = send(&agent_addr, (1000..1600).map(|u| format!("user-{u}")));
    assert!(
        failed > 100,
        "the treatment's upstream failed {failed} requests"
    );
    wait_until(
        "the experiment to turn invalid",
        Duration::from_secs(60),
        &procs,
        || experiment(&collector_addr).1["decision"] == "invalid",
    );
    let (status, v) = experiment(&collector_addr);
    assert_eq!(status, 409);
    // Argo Rollouts' web metrics take a non-2xx answer as an error: with
    // gate=false the same decision comes with 200.
    let (status, body) =
        http(&collector_addr, "GET", "/v1/experiments/ab?gate=false").expect("answer");
    assert_eq!(status, 200);
    assert!(body.contains("\"decision\":\"invalid\""), "{body}");
    // Flagger's webhooks POST: a rollback gate opens on an invalid experiment.
    let flagger = json!({"name": "credit", "namespace": "ml", "phase": "Progressing"}).to_string();
    let got = http_request(
        &collector_addr,
        "POST",
        "/v1/experiments/ab?gate=rollback",
        &[("content-type", "application/json")],
        &flagger,
    );
    assert_eq!(got.map(|r| r.0), Some(200));
    let list: Value = serde_json::from_str(
        &http(&collector_addr, "GET", "/v1/experiments")
            .expect("list")
            .1,
    )
    .expect("JSON");
    assert_eq!(list["experiments"][0]["name"], "ab");
    assert!(v["srm_p_value"].as_f64().is_some_and(|p| p < 0.001), "{v}");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("sample ratio mismatch")),
        "{v}"
    );
    wait_until(
        "the ExperimentInvalid alert to fire",
        Duration::from_secs(30),
        &procs,
        || {
            let (_, body) = http(&collector_addr, "GET", "/v1/alerts").unwrap_or_default();
            body.contains("ExperimentInvalid") && body.contains("firing")
        },
    );
    let promotions: Vec<receiver::Request> = hooks
        .requests()
        .into_iter()
        .filter(|r| r.path == "/promote")
        .collect();
    assert_eq!(promotions.len(), 1, "one promotion for one decision");
    let p = &promotions[0];
    assert!(p.signed_with(HMAC_SECRET), "the promotion is signed");
    let body = p.json();
    assert_eq!(body["kind"], "driftwatch.experiment");
    assert_eq!(body["experiment"]["winner"], "treatment");
    assert!(p.header("idempotency-key").is_some());
    if let Some(m) = &ml_addr {
        assert_eq!(champion_alias(m).as_deref(), Some("2"));
    }
    // Every query of the experiments dashboard returns series, as Grafana
    // would run it (a few scrapes after the last change).
    std::thread::sleep(Duration::from_secs(3));
    prometheus::check_dashboards(&prometheus_addr, &["experiments"], started, now());

    // New weights on SIGHUP, without a restart: a connection kept open
    // across the reload goes on serving, and new users all go to control.
    // (a user on control: the treatment still drops every other request)
    let user = first
        .iter()
        .find(|(_, arm)| *arm == "control")
        .map(|(u, _)| u.clone())
        .expect("a user on control");
    let mut kept = TcpStream::connect(&agent_addr).expect("connect");
    let one = format!(
        "POST /v2/models/credit/infer HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\nx-user-id: {user}\r\ncontent-length: {}\r\n\r\n{CREDIT_REQUEST}",
        CREDIT_REQUEST.len()
    );
    let mut pending = Vec::new();
    kept.write_all(one.as_bytes()).expect("send");
    let answer = message(&mut kept, &mut pending).expect("an answer");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let text = std::fs::read_to_string(&agent_config).expect("agent config");
    write(
        &agent_config,
        &text
            .replace(
                "weight: 50}\n      - {name: treatment",
                "weight: 100}\n      - {name: treatment",
            )
            .replace("\", weight: 50}", "\", weight: 0}"),
    );
    let hup = Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    wait_until(
        "the agent to take the new weights",
        Duration::from_secs(30),
        &procs,
        || {
            http(&admin_addr, "GET", "/metrics").is_some_and(|(_, m)| {
                driftwatch_testkit::process::metric(
                    &m,
                    "driftwatch_agent_config_reloads_total",
                    &[("outcome", "success")],
                ) == Some(1.0)
            })
        },
    );
    kept.write_all(one.as_bytes())
        .expect("send on the kept connection");
    let answer = message(&mut kept, &mut pending).expect("an answer on the kept connection");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (after, _) = send(&agent_addr, (2000..2050).map(|u| format!("user-{u}")));
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|a| a.1 == "control"),
        "weight 0 gets nothing"
    );
    drop((agent, prometheus));
}
