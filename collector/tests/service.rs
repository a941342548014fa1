//! The collector assembled by its library constructor (what `driftwatch
//! serve` runs), started on a free port inside the test: it ingests,
//! evaluates, refuses to leak storage errors, and stops when told.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use driftwatch::config::{from_flags, Span};
use driftwatch::service::Collector;
use serde_json::{json, Value};

fn reference() -> PathBuf {
    common::examples::example("reference.csv")
}

/// A collector for the example model on 127.0.0.1:0 with its database in
/// `db`; its address and the sender that stops it.
async fn start(
    db: PathBuf,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    start_with(db, Vec::new()).await
}

/// `start` with experiments on the example model.
async fn start_with(
    db: PathBuf,
    experiments: Vec<driftwatch::config::experiment::RawExperiment>,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let mut raw = from_flags("credit".into(), reference(), Vec::new(), None);
    raw.models[0].experiments = experiments;
    raw.listen = "127.0.0.1:0".into();
    raw.db = db;
    raw.eval_interval = Span::parse("100ms").expect("span");
    let config = raw
        .validate(std::path::Path::new("flags"), &|_| None)
        .expect("valid config");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let collector = Collector::build(&config).expect("collector");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(collector.run(listener, async {
        let _ = stopped.await;
    }));
    (addr, stop, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_collector_ingests_and_stops_when_told() {
    let dir = common::server::temp_db_dir();
    let (addr, stop, running) = start(dir.join("driftwatch.db")).await;
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("{addr}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let now = chrono::Utc::now().to_rfc3339();
    let event = json!({"events": [{
        "model": "credit", "request_id": "r1", "timestamp": now,
        "features": {"age": 40.0, "country": "DE"},
        "champion": {"label": "1", "score": 0.8}
    }]});
    let reply: Value = client
        .post(format!("{addr}/v1/events"))
        .json(&event)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("JSON");
    assert_eq!(reply["accepted"], 1, "{reply}");
    // The evaluation loop runs: the live window's results appear.
    let mut events = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let w: Value = client
            .get(format!("{addr}/v1/models/credit/windows"))
            .send()
            .await
            .expect("windows")
            .json()
            .await
            .expect("JSON");
        events = w["windows"][0]["events"].clone();
        if events == 1 {
            break;
        }
    }
    assert_eq!(events, 1);
    stop.send(()).expect("running");
    let served = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops within 10 s")
        .expect("task");
    assert!(served.is_ok(), "{served:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An experiment's tallies (requests, failures, labelled metric per arm)
/// come back after a restart as they were: replayed from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiments_are_replayed_from_the_store_after_a_restart() {
    let dir = common::server::temp_db_dir();
    let experiment: driftwatch::config::experiment::RawExperiment = serde_yaml_ng::from_str(
        "{name: t, metric: accuracy, min_samples: 10, arms: [{name: a, weight: 1}, {name: b, weight: 1}]}",
    )
    .expect("experiment");
    let (addr, stop, running) =
        start_with(dir.join("driftwatch.db"), vec![experiment.clone()]).await;
    let client = reqwest::Client::new();
    let now = chrono::Utc::now().to_rfc3339();
    let events: Vec<Value> = (0..60)
        .map(|i| {
            let arm = if i % 2 == 0 { "a" } else { "b" };
            let champion = match i % 6 {
                4 | 5 => json!({"error": "503"}),
                _ => json!({"label": "1", "latency_ms": 2.0 + f64::from(i)}),
            };
            json!({"model": "credit", "request_id": format!("r{i}"), "timestamp": now,
                   "features": {"age": 40.0}, "champion": champion, "arm": arm})
        })
        .collect();
    let labels: Vec<Value> = (0..60)
        .map(|i| json!({"model": "credit", "request_id": format!("r{i}"), "label": if i % 3 == 0 { "0" } else { "1" }}))
        .collect();
    for (path, body) in [
        ("events", json!({"events": events})),
        ("feedback", json!({"labels": labels})),
    ] {
        let reply: Value = client
            .post(format!("{addr}/v1/{path}"))
            .json(&body)
            .send()
            .await
            .expect(path)
            .json()
            .await
            .expect("JSON");
        assert_eq!(reply["accepted"], 60, "{reply}");
    }
    let look = |addr: String| {
        let client = client.clone();
        async move {
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let v: Value = client
                    .get(format!("{addr}/v1/experiments/t?gate=false"))
                    .send()
                    .await
                    .expect("experiment")
                    .json()
                    .await
                    .expect("JSON");
                if v["arms"][0]["samples"].as_u64().unwrap_or(0) > 0 {
                    return v["arms"].clone();
                }
            }
            panic!("the experiment was not evaluated");
        }
    };
    let before = look(addr.clone()).await;
    // 30 requests per arm, 10 failed each; failed requests have no accuracy.
    for arm in [&before[0], &before[1]] {
        assert_eq!(arm["requests"], 30, "{before}");
        assert_eq!(arm["errors"], 10, "{before}");
        assert_eq!(arm["samples"], 20, "{before}");
    }
    stop.send(()).expect("running");
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    let (addr, stop, _running) = start_with(dir.join("driftwatch.db"), vec![experiment]).await;
    let after = look(addr).await;
    assert_eq!(before, after);
    let _ = stop.send(());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Storage errors name the database's path: they are logged, and the
/// client is told only that storage is unavailable (`GET
/// /v1/notifications` used to send the error text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_error_never_reaches_the_client() {
    let dir = common::server::temp_db_dir().join("a-secret-place");
    std::fs::create_dir_all(&dir).expect("dir");
    let (addr, stop, _running) = start(dir.join("driftwatch.db")).await;
    // Readers open the database anew: without its directory they fail.
    std::fs::remove_dir_all(&dir).expect("remove the database");
    let client = reqwest::Client::new();
    for path in ["/v1/notifications", "/v1/models/credit/windows"] {
        let resp = client
            .get(format!("{addr}{path}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 503, "{path}");
        let body = resp.text().await.expect("body");
        assert!(!body.contains("a-secret-place"), "{path}: {body}");
        assert!(body.contains("storage unavailable"), "{path}: {body}");
    }
    let _ = stop.send(());
}

/// Windows emptied and filled again with as many other events (a model
/// taken over in cluster mode, read back from the log) are evaluated
/// again once read up to now, not before: equal window versions no
/// longer mean equal windows.
#[test]
fn windows_emptied_and_refilled_are_evaluated_again() {
    use driftwatch::export::metrics::Metrics;
    use driftwatch::models::Model;
    use driftwatch::store::Store;
    use driftwatch::window::evaluate::Evaluator;
    use driftwatch::window::Live;
    use std::sync::Arc;

    let mut raw = from_flags(
        "credit".into(),
        reference(),
        vec![Span::parse("1d").expect("span")],
        None,
    );
    let dir = common::server::temp_db_dir();
    raw.db = dir.join("driftwatch.db");
    let config = raw
        .validate(std::path::Path::new("flags"), &|_| None)
        .expect("valid config");
    let model = Model::load(&config.models[0]).expect("model");
    let live = Arc::new(Live::new(vec![model]));
    let store = Store::open(&config.db, Vec::new()).expect("store");
    let metrics = Arc::new(Metrics::default());
    let evaluator = Evaluator::new(
        live.clone(),
        store,
        metrics.clone(),
        Arc::new(driftwatch_telemetry::Telemetry::off()),
    );
    let now = chrono::Utc::now().to_rfc3339();
    let events = common::examples::events_from_csv(&common::examples::example("current.csv"), &now);
    let fill = |rows: &[String]| {
        let mut windows = live.windows(0);
        for e in rows {
            let a = driftwatch::ingest::validate(e, &live.models, i64::MAX / 2, 0)
                .expect("a valid event");
            windows.add(&live.models[0], &a);
        }
    };
    let age_ks = || {
        metrics
            .feature_drift_score
            .get_metric_with_label_values(&["credit", "age", "ks", "1d"])
            .expect("series")
            .get()
    };
    fill(&events[..300]);
    evaluator.evaluate_all(Duration::from_secs(60));
    let first = age_ks();
    live.reset(0);
    fill(&events[300..600]);
    // Not while the windows are being read again (cluster mode: until
    // the reading caught up)...
    evaluator.evaluate_all(Duration::from_secs(60));
    assert_eq!(age_ks(), first, "a window half read again was evaluated");
    // ... then at once.
    live.set_ready(0);
    evaluator.evaluate_all(Duration::from_secs(60));
    assert_ne!(
        age_ks(),
        first,
        "the refilled window was not evaluated again"
    );
    let _ = std::fs::remove_dir_all(dir);
}
