//! The agent binary in front of real HTTP model servers on loopback: the
//! example champion (ONNX through ort) and small servers that fail, hang
//! or answer oddly; a collector stand-in records what is shipped.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    expected, free_addr, http, kserve_request, repo, wait_for, Agent, Champion, Collector, Mini,
};
use serde_json::Value;

const INPUTS: &str = "[age, income, loan_amount, bureau_score, dependents, has_card]";

/// A config for model `credit` in front of `upstream`, shipping to
/// `collector` every 100 ms, with `extra` model lines and `collector_extra`.
fn config(upstream: &str, collector: &str, extra: &str, collector_extra: &str) -> String {
    format!(
        "collector:\n  url: {collector}\n  batch_wait: 100ms\n{collector_extra}models:\n  - name: credit\n    upstream: http://{upstream}\n    upstream_timeout: 1s\n    champion_version: v3\n{extra}"
    )
}

/// A TF Serving stand-in answering `predictions`, a collector stand-in,
/// and the agent in front of it with `extra` model lines and
/// `collector_extra`.
fn tfserving(predictions: &str, extra: &str, collector_extra: &str) -> (Mini, Collector, Agent) {
    let body = format!(r#"{{"predictions": {predictions}}}"#).into_bytes();
    let upstream = Mini::start(move |_| (200, body.clone(), Duration::ZERO));
    let collector = Collector::start();
    let agent = Agent::start(&config(
        &upstream.addr,
        &collector.url(),
        &format!("    protocol: tfserving\n{extra}"),
        collector_extra,
    ));
    (upstream, collector, agent)
}

/// The example champion, a collector stand-in, and the agent in front of
/// the champion with the challenger as its shadow (`extra` shadow lines).
fn challenger(extra: &str) -> (Champion, Collector, Agent) {
    let champion = Champion::start();
    let collector = Collector::start();
    let agent = Agent::start(&config(
        &champion.addr,
        &collector.url(),
        &shadow("examples/credit/challenger.onnx", extra),
        "",
    ));
    (champion, collector, agent)
}

fn shadow(path: &str, extra: &str) -> String {
    format!(
        "    shadow:\n      path: {}\n      version: v4\n      inputs: {INPUTS}\n{extra}",
        repo(path).display()
    )
}

fn rows_of(e: &Value) -> (Vec<String>, Vec<Vec<f64>>) {
    let features: Vec<String> = e["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| f.as_str().expect("name").to_string())
        .collect();
    let rows: Vec<Vec<f64>> = e["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    (features, rows)
}

#[test]
fn proxied_requests_are_teed_and_scored_like_python_onnxruntime() {
    let (champion, collector, agent) = challenger("");
    let e = expected();
    let (features, rows) = rows_of(&e);
    let body = kserve_request(&features, &rows);
    let direct = http(
        &champion.addr,
        "POST",
        "/v2/models/credit/infer",
        &[],
        &body,
    );
    let proxied = agent.post(
        "/v2/models/credit/infer",
        &[("x-request-id", "batch-1")],
        &body,
    );
    // The client gets the champion's answer, byte for byte, and its id.
    assert_eq!(proxied.status, 200);
    assert_eq!(proxied.body, direct.body);
    assert_eq!(proxied.header("x-request-id"), Some("batch-1"));
    collector.wait_for_events(32);
    let mut events = collector.events();
    events.sort_by_key(|v| {
        v["request_id"]
            .as_str()
            .and_then(|id| id.rsplit('-').next())
            .and_then(|i| i.parse::<usize>().ok())
    });
    let champ = &e["models"]["champion"];
    let shadow = &e["models"]["challenger"];
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev["model"], "credit");
        assert_eq!(ev["request_id"], format!("batch-1-{i}"));
        assert_eq!(ev["node"], "node-test");
        // Features as sent (a missing bureau score is absent or null).
        assert_eq!(ev["features"]["age"].as_f64(), Some(rows[i][0]));
        // The champion's outputs as the champion answered.
        assert_eq!(ev["champion"]["version"], "v3");
        assert_eq!(ev["champion"]["label"], champ["label"][i].to_string());
        let p1 = champ["probabilities"][i][1].as_f64().expect("p");
        assert!((ev["champion"]["score"].as_f64().expect("score") - p1).abs() < 1e-6);
        assert!(ev["champion"]["latency_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0));
        // The shadow's outputs equal Python onnxruntime's on the same rows.
        assert_eq!(ev["shadow"]["version"], "v4");
        assert_eq!(ev["shadow"]["label"], shadow["label"][i].to_string());
        assert_eq!(
            ev["shadow"]["score"].as_f64(),
            shadow["probabilities"][i][1].as_f64(),
            "row {i}"
        );
        // A binary model's events carry the positive class's score alone.
        assert!(ev["shadow"].get("probabilities").is_none());
    }
    assert_eq!(
        agent.metric("driftwatch_agent_shadow_up", &[("model", "credit")]),
        1.0
    );
    assert_eq!(agent.requests("200"), 1.0);
    assert!(
        agent.metric(
            "driftwatch_agent_added_latency_seconds_count",
            &[("model", "credit")]
        ) >= 1.0
    );
    assert_eq!(
        agent.metric("driftwatch_agent_events_shipped_total", &[]),
        32.0
    );
}

/// Each thread of a process: its name and scheduling policy (Linux:
/// 0 `SCHED_OTHER`, 5 `SCHED_IDLE`) and nice value.
fn thread_policies(pid: u32) -> Vec<(String, u32, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc") {
        let dir = task.expect("task").path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let policy = read("sched")
            .lines()
            .find(|l| l.starts_with("policy"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .expect("policy");
        // The nice value: the 19th field of stat, after the name's ')'.
        let stat = read("stat");
        let nice = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(16)?.parse().ok())
            .expect("nice");
        out.push((read("comm").trim().to_string(), policy, nice));
    }
    out
}

#[test]
fn the_agents_own_work_runs_below_its_traffic_and_scores_alike_on_two_threads() {
    // A shadow with two inference threads: ONNX Runtime's pool threads
    // are started by the agent, at the background priority.
    let (_champion, collector, agent) = challenger("      threads: 2\n");
    let e = expected();
    let (features, rows) = rows_of(&e);
    let reply = agent.post(
        "/v2/models/credit/infer",
        &[("x-request-id", "two")],
        &kserve_request(&features, &rows),
    );
    assert_eq!(reply.status, 200);
    let events = collector.wait_for_events(32);
    let shadow = &e["models"]["challenger"];
    for ev in &events {
        let i: usize = ev["request_id"]
            .as_str()
            .and_then(|id| id.rsplit('-').next()?.parse().ok())
            .expect("row");
        assert_eq!(
            ev["shadow"]["score"].as_f64(),
            shadow["probabilities"][i][1].as_f64(),
            "row {i}"
        );
    }
    let threads = thread_policies(agent.pid());
    let named = |prefix: &str| -> Vec<&(String, u32, i64)> {
        threads.iter().filter(|t| t.0.starts_with(prefix)).collect()
    };
    // `background_scheduling: idle` (the default): SCHED_IDLE.
    for prefix in ["driftwatch-back", "shadow-credit", "shadow-pool"] {
        let group = named(prefix);
        assert!(!group.is_empty(), "no {prefix} thread in {threads:?}");
        assert!(group.iter().all(|t| t.1 == 5), "{prefix}: {threads:?}");
    }
    // The traffic threads stay SCHED_OTHER at nice 0.
    let traffic = named("driftwatch-traf");
    assert!(!traffic.is_empty(), "{threads:?}");
    assert!(traffic.iter().all(|t| t.1 == 0 && t.2 == 0), "{threads:?}");
}

#[test]
fn request_ids_are_taken_or_made_and_always_returned() {
    let (upstream, collector, agent) =
        tfserving("[0.5]", "    request_id_header: x-correlation-id\n", "");
    let body = br#"{"instances": [{"age": 40}]}"#;
    let made = agent.post("/v1/models/credit:predict", &[], body);
    let id = made.header("x-request-id").expect("an id").to_string();
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    // It begins with the milliseconds since 1970, so ids sort by time.
    let made_ms = i64::from_str_radix(&id[..12], 16).expect("hex");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    assert!(
        (now_ms - made_ms).abs() < 60_000,
        "{id}: {made_ms} against {now_ms}"
    );
    let other = agent.post("/v1/models/credit:predict", &[], body);
    assert_ne!(other.header("x-request-id"), Some(id.as_str()));
    let traced = agent.post(
        "/v1/models/credit:predict",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
        body,
    );
    assert_eq!(
        traced.header("x-request-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7")
    );
    let configured = agent.post(
        "/v1/models/credit:predict",
        &[("x-correlation-id", "corr-7")],
        body,
    );
    assert_eq!(configured.header("x-request-id"), Some("corr-7"));
    // The upstream sees the same id.
    let seen: Vec<String> = upstream
        .seen()
        .iter()
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert!(
        seen.contains(&id) && seen.contains(&"corr-7".to_string()),
        "{seen:?}"
    );
    collector.wait_for_events(4);
    let ids = collector.request_ids();
    assert!(ids.contains(&id) && ids.contains("corr-7"));
    assert_eq!(collector.events()[0]["champion"]["value"], 0.5);
}

#[test]
fn upstream_failures_reach_the_client_clearly_and_are_counted() {
    let collector = Collector::start();
    // 500 with a body, a hang past the timeout.
    let upstream = Mini::start(|req| {
        if req.path.contains("slow") {
            (200, b"{}".to_vec(), Duration::from_secs(30))
        } else {
            (
                500,
                br#"{"error": "model crashed"}"#.to_vec(),
                Duration::ZERO,
            )
        }
    });
    let agent = Agent::start(&config(&upstream.addr, &collector.url(), "", ""));
    let body = kserve_request(&["age".to_string()], &[vec![40.0]]);
    let failed = agent.post("/v2/models/credit/infer", &[], &body);
    assert_eq!(failed.status, 500);
    assert_eq!(failed.body, br#"{"error": "model crashed"}"#);
    let started = std::time::Instant::now();
    let slow = agent.post("/slow", &[], &body);
    assert_eq!(slow.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the 1 s timeout held (the champion answers after 30 s)"
    );
    assert!(String::from_utf8_lossy(&slow.body).contains("did not answer within 1000 ms"));
    // An upstream that is down: 502 at once.
    let down = Agent::start(&config(&free_addr(), &collector.url(), "", ""));
    let refused = down.post("/v2/models/credit/infer", &[], &body);
    assert_eq!(refused.status, 502);
    assert!(
        String::from_utf8_lossy(&refused.body).contains("failed"),
        "{:?}",
        refused.body
    );
    // Each is an event whose champion output carries the error.
    collector.wait_for_events(3);
    let errors: Vec<String> = collector
        .events()
        .iter()
        .map(|e| e["champion"]["error"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(errors.iter().any(|e| e == "HTTP 500"), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("did not answer")),
        "{errors:?}"
    );
    assert_eq!(agent.requests("504"), 1.0);
    assert_eq!(down.requests("502"), 1.0);
}

#[test]
fn bodies_the_adapter_cannot_read_are_forwarded_unchanged_and_counted() {
    let collector = Collector::start();
    // An upstream that echoes the body it got.
    let upstream = Mini::start(|req| (200, req.body.clone(), Duration::ZERO));
    let agent = Agent::start(&config(
        &upstream.addr,
        &collector.url(),
        "    max_body_bytes: 1000\n",
        "",
    ));
    let cases: Vec<Vec<u8>> = vec![
        b"this is not JSON".to_vec(),
        br#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1]}]}"#.to_vec(),
        format!(
            r#"{{"inputs": [{{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["{}"]}}]}}"#,
            "y".repeat(5000)
        )
        .into_bytes(),
    ];
    for body in &cases {
        let r = agent.post("/v2/models/credit/infer", &[], body);
        assert_eq!(r.status, 200);
        assert_eq!(&r.body, body, "forwarded and answered unchanged");
    }
    let got: Vec<Vec<u8>> = upstream.seen().iter().map(|s| s.body.clone()).collect();
    assert_eq!(got, cases);
    wait_for(Duration::from_secs(5), "the counters", || {
        agent.metric(
            "driftwatch_agent_unparsed_total",
            &[("part", "request"), ("reason", "not_json")],
        ) == 1.0
            && agent.metric(
                "driftwatch_agent_unparsed_total",
                &[("part", "request"), ("reason", "shape")],
            ) == 1.0
            && agent.metric(
                "driftwatch_agent_unparsed_total",
                &[("part", "request"), ("reason", "too_large")],
            ) == 1.0
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(collector.events().is_empty());
    assert!(!agent.stderr().contains("panicked"));
}

#[test]
fn a_missing_corrupt_or_misshapen_shadow_leaves_the_agent_proxying() {
    let champion = Champion::start();
    let collector = Collector::start();
    let dir = common::temp_dir();
    let corrupt = driftwatch_testkit::file(&dir, "corrupt.onnx", b"not an onnx model");
    let cases = [
        (
            dir.join("missing.onnx").display().to_string(),
            "missing.onnx",
        ),
        (corrupt.display().to_string(), "corrupt.onnx"),
    ];
    let body = kserve_request(
        &["age".to_string(), "income".to_string()],
        &[vec![40.0, 30000.0]],
    );
    for (path, name) in cases {
        let agent = Agent::start(&config(
            &champion.addr,
            &collector.url(),
            &format!("    shadow:\n      path: {path}\n      inputs: {INPUTS}\n"),
            "",
        ));
        assert_eq!(
            agent.metric("driftwatch_agent_shadow_up", &[("model", "credit")]),
            0.0
        );
        assert!(
            agent.stderr().contains("the shadow model is unavailable"),
            "{}",
            agent.stderr()
        );
        assert!(agent.stderr().contains(name), "{}", agent.stderr());
        let r = agent.post("/v2/models/credit/infer", &[], &body);
        assert_eq!(r.status, 200);
        let before = collector.events().len();
        wait_for(Duration::from_secs(10), "its event", || {
            collector.events().len() > before
        });
    }
    // Three input names for a model that takes six columns.
    let agent = Agent::start(&config(
        &champion.addr,
        &collector.url(),
        &format!(
            "    shadow:\n      path: {}\n      inputs: [age, income, loan_amount]\n",
            repo("examples/credit/challenger.onnx").display()
        ),
        "",
    ));
    assert_eq!(
        agent.metric("driftwatch_agent_shadow_up", &[("model", "credit")]),
        0.0
    );
    assert!(
        agent
            .stderr()
            .contains("the model takes 6 columns, `shadow.inputs` names 3"),
        "{}",
        agent.stderr()
    );
    assert_eq!(
        agent.post("/v2/models/credit/infer", &[], &body).status,
        200
    );
    collector.wait_for_events(3);
    assert!(collector.events().iter().all(|e| e.get("shadow").is_none()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_shadow_slower_than_the_traffic_is_shed_and_the_champion_is_unaffected() {
    // One row in the queue at most, one row per batch.
    let (_champion, collector, agent) =
        challenger("      queue: 1\n      max_batch: 1\n      max_wait: 0ms\n");
    let e = expected();
    let (features, rows) = rows_of(&e);
    let body = kserve_request(&features, &rows[..1]);
    let n = 200;
    let addr = agent.addr.clone();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (addr, body) = (addr.clone(), body.clone());
            std::thread::spawn(move || {
                (0..n / 8)
                    .map(|_| http(&addr, "POST", "/v2/models/credit/infer", &[], &body).status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(statuses.len(), n);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every champion answer arrived"
    );
    collector.wait_for_events(n);
    let shed = agent.metric("driftwatch_agent_shadow_shed_total", &[("model", "credit")]);
    let scored = collector
        .events()
        .iter()
        .filter(|e| e.get("shadow").is_some())
        .count();
    assert!(shed > 0.0, "some rows were shed");
    assert_eq!(
        shed as usize + scored,
        n,
        "each row scored or counted as shed"
    );
}

#[test]
fn events_wait_for_a_collector_that_is_down_and_arrive_when_it_returns() {
    let champion = Champion::start();
    let addr = free_addr();
    let agent = Agent::start(&config(&champion.addr, &format!("http://{addr}"), "", ""));
    let e = expected();
    let (features, rows) = rows_of(&e);
    let mut ids = BTreeSet::new();
    for i in 0..40 {
        let id = format!("down-{i}");
        let body = kserve_request(&features, &rows[i % 32..i % 32 + 1]);
        let r = agent.post("/v2/models/credit/infer", &[("x-request-id", &id)], &body);
        assert_eq!(r.status, 200, "the champion's traffic is unaffected");
        ids.insert(id);
    }
    wait_for(Duration::from_secs(10), "failed attempts", || {
        agent.metric(
            "driftwatch_agent_ship_failures_total",
            &[("reason", "unreachable")],
        ) >= 1.0
    });
    assert_eq!(agent.metric("driftwatch_agent_buffered_events", &[]), 40.0);
    // The collector comes back on the same address.
    let collector = Collector::start_on(&addr);
    wait_for(Duration::from_secs(40), "the buffered events", || {
        collector.request_ids() == ids
    });
    assert_eq!(
        agent.metric("driftwatch_agent_events_dropped_total", &[]),
        0.0
    );
}

#[test]
fn a_full_buffer_spills_to_the_spool_which_survives_a_restart() {
    let champion = Champion::start();
    let addr = free_addr();
    let dir = common::temp_dir();
    let spool = dir.join("spool");
    let collector_lines = format!(
        "  buffer_events: 10\n  batch_events: 5\n  spool: {{path: {}, max_bytes: 1000000}}\n",
        spool.display()
    );
    let cfg = format!(
        "shutdown_deadline: 2s\n{}",
        config(
            &champion.addr,
            &format!("http://{addr}"),
            "",
            &collector_lines
        )
    );
    let mut agent = Agent::start_in(&cfg, dir.clone());
    let e = expected();
    let (features, rows) = rows_of(&e);
    for i in 0..30 {
        let body = kserve_request(&features, &rows[i..i + 1]);
        let id = format!("sp-{i}");
        assert_eq!(
            agent
                .post("/v2/models/credit/infer", &[("x-request-id", &id)], &body)
                .status,
            200
        );
    }
    wait_for(Duration::from_secs(10), "spool files", || {
        std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0) >= 4
    });
    assert!(agent.metric("driftwatch_agent_spool_bytes", &[]) > 0.0);
    // SIGTERM with the collector still down: the rest goes to the spool too.
    assert!(agent.terminate(), "a clean exit");
    wait_for(Duration::from_secs(5), "the shutdown report", || {
        agent.stderr().contains("spooled")
    });
    let collector = Collector::start_on(&addr);
    let second = Agent::start_in(&cfg, common::temp_dir());
    // The new agent (same spool) ships what the first one left.
    let _keep = (second, agent);
    let want: BTreeSet<String> = (0..30).map(|i| format!("sp-{i}")).collect();
    wait_for(Duration::from_secs(30), "every spooled event", || {
        collector.request_ids() == want
    });
}

#[test]
fn sigterm_flushes_the_buffer_before_exit() {
    let champion = Champion::start();
    let collector = Collector::start();
    // Batches would wait a minute: only the shutdown flush sends them.
    let cfg = format!(
        "collector:\n  url: {}\n  batch_wait: 60s\nmodels:\n  - name: credit\n    upstream: http://{}\n",
        collector.url(),
        champion.addr
    );
    let mut agent = Agent::start(&cfg);
    let body = kserve_request(&["age".to_string()], &[vec![33.0], vec![44.0]]);
    assert_eq!(
        agent.post("/v2/models/credit/infer", &[], &body).status,
        200
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(collector.events().is_empty());
    assert!(agent.terminate());
    assert_eq!(collector.events().len(), 2);
}

#[test]
fn kserve_logger_cloudevents_and_mirrored_copies_are_joined() {
    let collector = Collector::start();
    let cfg = format!(
        "collector:\n  url: {}\n  batch_wait: 100ms\nmodels:\n  - name: credit\n    mode: mirror\n    join_wait: 500ms\n",
        collector.url()
    );
    let agent = Agent::start(&cfg);
    let request = kserve_request(&["age".to_string()], &[vec![51.0]]);
    let response =
        br#"{"outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [1]}]}"#;
    // KServe's logger: request and response CloudEvents with one ce-id.
    let ce = |ty: &str, body: &[u8]| {
        agent.post(
            "/_driftwatch/kserve",
            &[
                ("ce-id", "ce-1"),
                ("ce-type", ty),
                ("ce-source", "http://localhost:9081/"),
                ("ce-specversion", "1.0"),
                ("ce-inferenceservicename", "credit"),
            ],
            body,
        )
    };
    assert_eq!(
        ce("org.kubeflow.serving.inference.request", &request).status,
        202
    );
    assert_eq!(
        ce("org.kubeflow.serving.inference.response", response).status,
        202
    );
    // A mirrored copy, answered at once, then the champion's response.
    let mirrored = agent.post(
        "/v2/models/credit/infer",
        &[("x-request-id", "m-1")],
        &request,
    );
    assert_eq!(mirrored.status, 200);
    assert_eq!(
        agent
            .post(
                "/_driftwatch/responses/credit",
                &[("x-request-id", "m-1")],
                response
            )
            .status,
        202
    );
    // A mirrored copy whose response never comes, and a lone response.
    agent.post(
        "/v2/models/credit/infer",
        &[("x-request-id", "m-2")],
        &request,
    );
    ce_lone(&agent, response);
    collector.wait_for_events(3);
    let by_id = |id: &str| {
        collector
            .events()
            .into_iter()
            .find(|e| e["request_id"] == id)
            .unwrap_or_else(|| panic!("no event {id}"))
    };
    assert_eq!(by_id("ce-1")["champion"]["label"], "1");
    assert_eq!(by_id("ce-1")["features"]["age"], 51.0);
    assert_eq!(by_id("m-1")["champion"]["label"], "1");
    assert!(by_id("m-2")["champion"].get("label").is_none());
    wait_for(
        Duration::from_secs(5),
        "the unjoined response counted",
        || {
            agent.metric(
                "driftwatch_agent_events_dropped_total",
                &[("reason", "unjoined")],
            ) == 1.0
        },
    );
    let bad = agent.post("/_driftwatch/kserve", &[("ce-type", "x")], &request);
    assert_eq!(bad.status, 400);
}

fn ce_lone(agent: &Agent, body: &[u8]) {
    let r = agent.post(
        "/_driftwatch/kserve/credit",
        &[
            ("ce-id", "ce-lone"),
            ("ce-type", "org.kubeflow.serving.inference.response"),
        ],
        body,
    );
    assert_eq!(r.status, 202);
}

#[test]
fn sampling_ships_a_share_of_events_and_keeps_the_counters_exact() {
    let (_upstream, collector, agent) = tfserving("[1.0]", "", "  sample_rate: 0.25\n");
    for _ in 0..200 {
        agent.post(
            "/v1/models/credit:predict",
            &[],
            br#"{"instances": [{"age": 40}]}"#,
        );
    }
    assert_eq!(agent.requests("200"), 200.0);
    wait_for(Duration::from_secs(10), "the sample shipped", || {
        let out = agent.metric(
            "driftwatch_agent_events_sampled_out_total",
            &[("model", "credit")],
        );
        out > 0.0 && collector.events().len() as f64 + out == 200.0
    });
    let shipped = collector.events().len();
    assert!((20..=80).contains(&shipped), "about a quarter: {shipped}");
}

#[test]
fn multiclass_and_regression_shadows_read_like_python_onnxruntime() {
    let champion = Champion::start();
    let e = expected();
    let (features, rows) = rows_of(&e);
    let body = kserve_request(&features, &rows);
    for name in ["employment", "loan"] {
        let collector = Collector::start();
        let want = &e["models"][name];
        let inputs: Vec<&str> = want["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let agent = Agent::start(&config(
            &champion.addr,
            &collector.url(),
            &format!(
                "    classes: [retired, salaried, self-employed, student]\n    shadow:\n      path: {}\n      inputs: [{}]\n",
                repo(&format!("examples/credit/{name}.onnx")).display(),
                inputs.join(", ")
            ),
            "",
        ));
        let r = agent.post("/v2/models/credit/infer", &[("x-request-id", name)], &body);
        assert_eq!(r.status, 200);
        collector.wait_for_events(32);
        for ev in collector.events() {
            let id = ev["request_id"].as_str().expect("id");
            let i: usize = id
                .rsplit('-')
                .next()
                .and_then(|i| i.parse().ok())
                .expect("row");
            let shadow = &ev["shadow"];
            if name == "employment" {
                assert_eq!(shadow["label"], want["values"][0][i], "row {i}");
                let p = &want["values"][1][i];
                for (j, class) in ["retired", "salaried", "self-employed", "student"]
                    .iter()
                    .enumerate()
                {
                    assert_eq!(shadow["probabilities"][*class], p[j], "row {i} {class}");
                }
                assert!(shadow.get("score").is_none(), "no score for 4 classes");
            } else {
                assert_eq!(shadow["value"], want["values"][0][i][0], "row {i}");
                assert!(shadow.get("label").is_none());
            }
        }
    }
}

#[test]
fn one_connection_carries_kept_alive_pipelined_and_handed_over_requests() {
    use std::io::Write;
    let champion = Champion::start();
    let collector = Collector::start();
    let agent = Agent::start(&config(&champion.addr, &collector.url(), "", ""));
    let body = kserve_request(&["age".to_string()], &[vec![41.0]]);
    let plain = {
        let mut r = format!(
            "POST /v2/models/credit/infer HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(&body);
        r
    };
    // The same body chunked: not the fast path's, so hyper serves the
    // connection from there on.
    let chunked = {
        let (a, b) = body.split_at(body.len() / 2);
        let mut r = b"POST /v2/models/credit/infer HTTP/1.1\r\nHost: agent\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in [a, b] {
            r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            r.extend_from_slice(part);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    };
    let (mut writer, mut reader) = common::connect(&agent.addr);
    let mut replies = Vec::new();
    writer.write_all(&plain).expect("write");
    replies.push(common::read_reply(&mut reader));
    // Two requests in one write.
    writer
        .write_all(&[plain.clone(), plain.clone()].concat())
        .expect("write");
    replies.push(common::read_reply(&mut reader));
    replies.push(common::read_reply(&mut reader));
    writer.write_all(&chunked).expect("write");
    replies.push(common::read_reply(&mut reader));
    writer.write_all(&plain).expect("write");
    replies.push(common::read_reply(&mut reader));
    let mut ids = BTreeSet::new();
    for r in &replies {
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        assert!(r.json()["outputs"].is_array(), "{:?}", r.json());
        ids.insert(r.header("x-request-id").expect("an id").to_string());
    }
    assert_eq!(ids.len(), 5, "each request its own id");
    collector.wait_for_events(5);
    let shipped = collector.request_ids();
    assert_eq!(shipped, ids);
    assert!(collector
        .events()
        .iter()
        .all(|e| e["features"]["age"] == 41.0 && e["champion"]["label"].is_string()));
    assert_eq!(agent.requests("200"), 5.0);
}

/// A champion answering in the framing its path names: `chunked` (chunks,
/// an extension and a trailer), `close` (no length: the body ends when the
/// connection closes), `once` (a length, then the connection closes
/// without saying so), `interim` (two 1xx answers first, all in one
/// write), `empty` (204).
fn oddly_framed_champion() -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream);
                while let Some((line, _, _)) = common::read_message(&mut reader) {
                    let s = reader.get_mut();
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let sent = if path.ends_with("/chunked") {
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5;note=x\r\n{\"pre\r\n8\r\ndictions\r\n9\r\n\": [0.25]\r\n1\r\n}\r\n0\r\nx-checksum: 1\r\n\r\n")
                    } else if path.ends_with("/interim") {
                        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 24\r\n\r\n{\"predictions\": [0.125]}")
                    } else if path.ends_with("/close") {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"predictions\": [0.5]}");
                        return;
                    } else if path.ends_with("/once") {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 23\r\n\r\n{\"predictions\": [0.75]}");
                        return;
                    } else {
                        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn champion_answers_in_any_framing_reach_the_client_whole_and_are_read() {
    let upstream = oddly_framed_champion();
    let collector = Collector::start();
    let agent = Agent::start(&config(
        &upstream,
        &collector.url(),
        "    protocol: tfserving\n",
        "",
    ));
    let body = br#"{"instances": [{"age": 40}]}"#;
    let chunked = agent.post("/v1/models/credit/chunked", &[], body);
    assert_eq!(chunked.status, 200);
    assert_eq!(chunked.body, br#"{"predictions": [0.25]}"#);
    let interim = agent.post("/v1/models/credit/interim", &[], body);
    assert_eq!(interim.status, 200);
    assert_eq!(interim.body, br#"{"predictions": [0.125]}"#);
    let until_close = agent.post("/v1/models/credit/close", &[], body);
    assert_eq!(until_close.status, 200);
    assert_eq!(until_close.body, br#"{"predictions": [0.5]}"#);
    // The champion closes each `once` connection after answering: the
    // next request must not be sent on the closed one.
    for _ in 0..3 {
        let once = agent.post("/v1/models/credit/once", &[], body);
        assert_eq!(
            once.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&once.body)
        );
        assert_eq!(once.body, br#"{"predictions": [0.75]}"#);
        std::thread::sleep(Duration::from_millis(200));
    }
    let empty = agent.post("/v1/models/credit/empty", &[], body);
    assert_eq!(empty.status, 204);
    assert!(empty.header("x-request-id").is_some());
    collector.wait_for_events(7);
    let mut values: Vec<f64> = collector
        .events()
        .iter()
        .filter_map(|e| e["champion"]["value"].as_f64())
        .collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, vec![0.125, 0.25, 0.5, 0.75, 0.75, 0.75]);
    assert_eq!(agent.requests("502"), 0.0);
}

#[test]
fn sigterm_closes_idle_kept_alive_connections_without_waiting_out_the_deadline() {
    use std::io::Write;
    let champion = Champion::start();
    let collector = Collector::start();
    let mut agent = Agent::start(&format!(
        "shutdown_deadline: 20s\n{}",
        config(&champion.addr, &collector.url(), "", "")
    ));
    let body = kserve_request(&["age".to_string()], &[vec![52.0]]);
    let (mut writer, mut reader) = common::connect(&agent.addr);
    let mut request = format!(
        "POST /v2/models/credit/infer HTTP/1.1\r\nHost: agent\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    writer.write_all(&request).expect("write");
    assert_eq!(common::read_reply(&mut reader).status, 200);
    // The connection stays open and idle while the agent stops.
    let started = std::time::Instant::now();
    assert!(agent.terminate());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    assert_eq!(
        std::io::Read::read_to_end(&mut reader, &mut rest).expect("closed"),
        0
    );
    assert_eq!(collector.events().len(), 1);
}

/// The agent as a library: `run` on listeners the caller bound and a
/// shutdown future the caller resolves (what the binary does with
/// SIGTERM), proxying, shipping, then stopping within its deadline.
#[test]
fn run_serves_given_listeners_until_its_shutdown_future_resolves() {
    use driftwatch_agent::config::Config;
    use driftwatch_agent::run::{run, Listeners};
    let collector = Collector::start();
    let upstream = Mini::start(|_| {
        (
            200,
            br#"{"outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [1]}]}"#
                .to_vec(),
            Duration::ZERO,
        )
    });
    let yaml = config(&upstream.addr, &collector.url(), "", "");
    let mut cfg: Config = serde_yaml_ng::from_str(&yaml).expect("config");
    cfg.shutdown_deadline = Duration::from_secs(3);
    cfg.traffic_threads = Some(1);
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listeners = Listeners {
        traffic: bind(),
        admin: bind(),
    };
    let traffic = listeners.traffic.local_addr().expect("addr").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = std::thread::spawn(move || {
        let main = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let background = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let shutdown = async {
            let _ = stopped.await;
        };
        main.block_on(run(cfg, listeners, shutdown, background.handle().clone()))
    });
    let body = kserve_request(&["age".into()], &[vec![42.0]]);
    let reply = http(&traffic, "POST", "/v2/models/credit/infer", &[], &body);
    assert_eq!(reply.status, 200);
    collector.wait_for_events(1);
    stop.send(()).expect("running");
    let outcome = agent.join().expect("the agent's thread");
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(collector.events()[0]["features"]["age"], 42.0);
}

/// How a raw gRPC call (h2, no gRPC library) ends its request.
#[derive(Clone, Copy)]
enum Cut {
    /// The request's stream ends (END_STREAM) after the bytes sent.
    Ended,
    /// The client resets the stream (RST_STREAM CANCEL).
    Reset,
    /// The client's connection closes.
    Closed,
}

/// A `ModelInfer` call to `addr` sending `body` and ending as `cut`
/// says: the `grpc-status` and `grpc-message` it got (headers or
/// trailers), none when it got no answer.
async fn raw_grpc_call(addr: &str, body: &[u8], cut: Cut) -> Option<(String, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let request = hyper::Request::post(format!(
        "http://{addr}{}",
        driftwatch_agent::adapters::grpc::MODEL_INFER
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (answer, mut send) = client.send_request(request, false).expect("send");
    send.send_data(
        bytes::Bytes::copy_from_slice(body),
        matches!(cut, Cut::Ended),
    )
    .expect("data");
    if !matches!(cut, Cut::Ended) {
        // The agent has the head and the bytes before the cut.
        tokio::time::sleep(Duration::from_millis(200)).await;
        match cut {
            Cut::Reset => send.send_reset(h2::Reason::CANCEL),
            _ => conn.abort(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        return None;
    }
    let (parts, mut body) = answer.await.expect("an answer").into_parts();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the answer's data");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    let get = |n: &str| {
        trailers
            .get(n)
            .or_else(|| parts.headers.get(n))
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    Some((get("grpc-status")?, get("grpc-message").unwrap_or_default()))
}

#[test]
fn cut_grpc_streams_reach_the_champion_as_sent_or_not_at_all_and_are_counted() {
    use driftwatch_agent::adapters::grpc::{framed, Contents, ModelInferRequest, TensorMessage};
    let (champion, grpc) = Champion::start_with_grpc();
    let collector = Collector::start();
    let agent = Agent::start(&format!(
        "collector:\n  url: {}\n  batch_wait: 100ms\nmodels:\n  - name: credit\n    upstream: http://{}\n    grpc_upstream: http://{grpc}\n",
        collector.url(),
        champion.addr,
    ));
    let exp = expected();
    let features: Vec<String> = serde_json::from_value(exp["features"].clone()).expect("features");
    let row: Vec<f64> = serde_json::from_value(exp["rows"][0].clone()).expect("row");
    let request = ModelInferRequest {
        model_name: "credit".into(),
        inputs: features
            .iter()
            .zip(&row)
            .map(|(f, x)| TensorMessage {
                name: f.clone(),
                datatype: "FP64".into(),
                shape: vec![1],
                contents: Some(Contents {
                    fp64_contents: vec![*x],
                    ..Contents::default()
                }),
            })
            .collect(),
        ..ModelInferRequest::default()
    };
    let whole = framed(&request);
    let half = &whole[..whole.len() / 2];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // A stream that ends mid-message reaches the champion as sent:
        // the client gets the champion's own answer, and the agent counts
        // the message it could not read; no event is made of it.
        let direct = raw_grpc_call(&grpc, half, Cut::Ended).await;
        let through = raw_grpc_call(&agent.addr, half, Cut::Ended).await;
        assert!(
            direct.as_ref().is_some_and(|(code, _)| code != "0"),
            "{direct:?}"
        );
        assert_eq!(through, direct);
        // A reset stream and a lost connection: nothing reaches the
        // champion (the message never arrived whole), counted as 499.
        assert_eq!(raw_grpc_call(&agent.addr, half, Cut::Reset).await, None);
        assert_eq!(raw_grpc_call(&agent.addr, half, Cut::Closed).await, None);
        // The agent serves on: a whole call is answered and observed.
        let ok = raw_grpc_call(&agent.addr, &whole, Cut::Ended).await;
        assert_eq!(ok.map(|(code, _)| code), Some("0".to_string()));
    });
    let unreadable = [("model", "credit"), ("part", "request"), ("reason", "grpc")];
    wait_for(
        Duration::from_secs(10),
        "the cut calls to be counted",
        || {
            agent.metric("driftwatch_agent_unparsed_total", &unreadable) == 1.0
                && agent.metric(
                    "driftwatch_agent_requests_total",
                    &[("model", ""), ("code", "499")],
                ) == 2.0
        },
    );
    let events = collector.wait_for_events(1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(collector.events().len(), 1, "{events:?}");
    assert_eq!(events[0]["features"]["age"], row[0]);
}
