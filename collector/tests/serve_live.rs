//! The real `driftwatch serve` over HTTP: events sent live produce drift
//! metrics equal to `driftwatch report` on the same rows, bad events are
//! refused one by one and counted, and the request limits hold.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::examples::{
    events_from_csv, events_with_ids, example, offline_report, offline_report_with, serve_args,
};
use common::server::Server;
use serde_json::Value;

/// The example model with one 1-day window, evaluated every 100 ms.
fn live_args(reference: &Path) -> [&str; 8] {
    let reference = reference.to_str().expect("UTF-8 path");
    [
        "--model",
        "credit",
        "--reference",
        reference,
        "--window",
        "1d",
        "--eval-interval",
        "100ms",
    ]
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A reply's (accepted, rejected).
fn counts(reply: &Value) -> (u64, u64) {
    let n = |k: &str| reply[k].as_u64().unwrap_or(u64::MAX);
    (n("accepted"), n("rejected"))
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body).expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn live_drift_metrics_equal_the_offline_report_on_the_same_rows() {
    let reference = example("reference.csv");
    let server = Server::start(&live_args(&reference), &[]);
    let events = events_from_csv(&example("current.csv"), &now_rfc3339());
    assert_eq!(events.len(), 1500);
    // Three batches, one per encoding.
    for (i, chunk) in events.chunks(500).enumerate() {
        let body = format!(r#"{{"events": [{}]}}"#, chunk.join(","));
        let (status, reply) = match i {
            0 => server.post_json("/v1/events", &body),
            1 => server.request(
                "POST",
                "/v1/events",
                &[("Content-Encoding", "gzip")],
                &gzip(body.as_bytes()),
            ),
            _ => server.request(
                "POST",
                "/v1/events",
                &[("Content-Encoding", "zstd")],
                &zstd::encode_all(body.as_bytes(), 3).expect("zstd"),
            ),
        };
        assert_eq!(status, 200, "{reply}");
        let reply: Value = serde_json::from_str(&reply).expect("reply JSON");
        assert_eq!(reply["accepted"], 500, "{reply}");
        assert_eq!(reply["rejected"], 0);
    }
    server.wait_for_samples("credit", "1d", 1500);
    assert_eq!(
        server.metric(
            "driftwatch_feature_missing_ratio",
            &[("feature", "bureau_score")]
        ),
        Some(194.0 / 1500.0)
    );
    let window = [("model", "credit"), ("window", "1d")];

    let report = offline_report();
    server.assert_features_match(&report, "credit", "1d");
    let share = server.metric("driftwatch_drifted_features_share", &window);
    assert_eq!(share, report["dataset_drift"]["share"].as_f64());
    // Every example event has champion "1"/0.7 and shadow "0"/0.4.
    assert_eq!(
        server.metric("driftwatch_shadow_agreement_ratio", &window),
        Some(0.0)
    );
    let diff = server
        .metric("driftwatch_shadow_score_mean_abs_diff", &window)
        .expect("score difference");
    assert!((diff - 0.3).abs() < 1e-12, "{diff}");
    assert_eq!(
        server.metric(
            "driftwatch_predictions_total",
            &[("role", "shadow"), ("version", "v4")]
        ),
        Some(1500.0)
    );
    assert_eq!(
        server.metric(
            "driftwatch_inference_latency_seconds_count",
            &[("role", "champion")]
        ),
        Some(1500.0)
    );
}

/// Overrides that change verdicts on the example data: wasserstein for
/// every feature at 0.04 (age and loan_amount drift), income's at 1.0 (it
/// stops drifting), country by PSI at 2 (it stops drifting).
const OVERRIDES: [&str; 10] = [
    "--test",
    "wasserstein",
    "--threshold",
    "wasserstein=0.04",
    "--threshold",
    "income:wasserstein=1.0",
    "--test",
    "country=psi",
    "--threshold",
    "country:psi=2",
];

#[test]
fn live_verdicts_follow_the_models_tests_and_thresholds_as_report_does() {
    let reference = example("reference.csv");
    let mut args = live_args(&reference).to_vec();
    args.extend(OVERRIDES);
    let server = Server::start(&args, &[]);
    let events = events_from_csv(&example("current.csv"), &now_rfc3339());
    let reply = server.post_items("/v1/events", "events", &events);
    assert_eq!(reply["accepted"], 1500, "{reply}");
    server.wait_for_samples("credit", "1d", 1500);
    let report = offline_report_with(&OVERRIDES);
    let default = offline_report();
    // The gauges and the stored results come from the same evaluation.
    let mut windows = Value::Null;
    server.wait_for(Duration::from_secs(10), "stored window results", |s| {
        let (_, body) = s.request("GET", "/v1/models/credit/windows?window=1d", &[], b"");
        windows = serde_json::from_str(&body).unwrap_or(Value::Null);
        windows["windows"][0]["events"] == 1500
    });
    let live = &windows["windows"][0]["features"];
    let mut flipped = Vec::new();
    for (i, col) in report["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .enumerate()
    {
        let feature = col["name"].as_str().expect("name");
        let series = [("model", "credit"), ("feature", feature), ("window", "1d")];
        server.assert_column_matches("feature", col, &series);
        let l = live
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == feature))
            .expect("the feature in the window's results");
        assert_eq!(l["verdict_test"], col["verdict_test"], "{feature}");
        assert_eq!(l["drift"], col["drift"], "{feature}");
        let thresholds = |c: &Value| -> Vec<Value> {
            c["tests"]
                .as_array()
                .expect("tests")
                .iter()
                .map(|t| t["threshold"].clone())
                .collect()
        };
        assert_eq!(thresholds(l), thresholds(col), "{feature}");
        if col["drift"] != default["columns"][i]["drift"] {
            flipped.push(feature);
        }
    }
    flipped.sort();
    assert_eq!(flipped, ["age", "country", "income", "loan_amount"]);
}

#[test]
fn a_kill_9_loses_nothing_acknowledged_and_counts_nothing_twice() {
    let reference = example("reference.csv");
    let dir = common::server::temp_db_dir();
    let db = dir.join("driftwatch.db");
    let args = live_args(&reference);
    let events = events_from_csv(&example("current.csv"), &now_rfc3339());
    let first = Server::start_on(&args, &[], &db);
    let (status, reply) = first.post_json(
        "/v1/events",
        &format!(r#"{{"events": [{}]}}"#, events[..900].join(",")),
    );
    assert_eq!(status, 200, "{reply}");
    first.kill();
    let second = Server::start_on(&args, &[], &db);
    second.wait_for_samples("credit", "1d", 900);
    // Resending everything: the 900 stored events are duplicates, the rest is new.
    let reply = second.post_items("/v1/events", "events", &events);
    assert_eq!(counts(&reply), (600, 900), "{reply}");
    assert_eq!(
        second.metric(
            "driftwatch_events_rejected_total",
            &[("reason", "duplicate_request_id")]
        ),
        Some(900.0)
    );
    second.wait_for_samples("credit", "1d", 1500);
    // The same numbers as one uninterrupted run: compare one test per kind of column.
    let report = offline_report();
    for (feature, test) in [
        ("income", "ks"),
        ("country", "jensenshannon"),
        ("bureau_score", "wasserstein"),
    ] {
        let col = report["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .find(|c| c["name"] == feature)
            .expect("column");
        let want = col["tests"]
            .as_array()
            .expect("tests")
            .iter()
            .find(|t| t["test"] == test)
            .expect("test")["statistic"]
            .as_f64();
        let live = second.metric(
            "driftwatch_feature_drift_score",
            &[("feature", feature), ("test", test), ("window", "1d")],
        );
        assert_eq!(live, want, "{feature}/{test}");
    }
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_events_are_refused_one_by_one_and_counted() {
    let server = Server::start(&serve_args("credit", &example("reference.csv"), &[]), &[]);
    let ts = now_rfc3339();
    let good = format!(
        r#"{{"model": "credit", "request_id": "g", "timestamp": "{ts}", "features": {{"age": 40, "country": "DE"}}, "champion": {{"label": "1"}}}}"#
    );
    let batch = [
        good.clone(),
        r#"{"model": "other", "request_id": "x", "timestamp": "2026-01-01T00:00:00Z", "champion": {}}"#.to_string(),
        good.replace("\"age\": 40", "\"agee\": 40"),
        good.replace("\"age\": 40", "\"age\": \"forty\""),
        good.replace("\"country\": \"DE\"", "\"country\": 7"),
        good.replace(&ts, "yesterday"),
        good.replace(&ts, "2999-01-01T00:00:00Z"),
        good.replace(&ts, "2001-01-01T00:00:00Z").replace("\"g\"", "\"old\""),
        "42".to_string(),
        good.replace("\"age\": 40", "\"we\\\"ird\\nname\": 1"),
    ];
    // Two windows per length are kept, the live one and the one before,
    // whether they hold events or not: with events only in the live window,
    // anything older than the previous window (1h and 1d windows here) is
    // too old, however far back.
    let months_ago = (chrono::Utc::now() - chrono::Duration::days(330))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let too_old: Vec<String> = [
        "0000-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "2020-06-01T00:00:00Z",
        &months_ago,
    ]
    .iter()
    .map(|t| good.replace(&ts, t))
    .collect();
    let earlier = format!(r#"{{"events": [{}]}}"#, good.replace("\"g\"", "\"e1\""));
    let (status, _) = server.post_json("/v1/events", &earlier);
    assert_eq!(status, 200);
    let (status, reply) = server.post_json(
        "/v1/events",
        &format!(r#"{{"events": [{}]}}"#, batch.join(",")),
    );
    assert_eq!(status, 200, "{reply}");
    let (status, old_reply) = server.post_json(
        "/v1/events",
        &format!(r#"{{"events": [{}]}}"#, too_old.join(",")),
    );
    assert_eq!(status, 200, "{old_reply}");
    let old_reply: Value = serde_json::from_str(&old_reply).expect("JSON");
    assert_eq!(old_reply["accepted"], 0, "{old_reply}");
    for e in old_reply["errors"].as_array().expect("errors") {
        let e = e["error"].as_str().expect("error");
        assert!(e.contains("older than the windows kept"), "{e}");
    }
    let (_, windows) = server.request("GET", "/v1/models/credit/windows?limit=100", &[], b"");
    assert!(!windows.contains("2020-06-01"), "{windows}");
    // What the client sent is quoted in errors, but never whole: a 1 MB
    // feature name comes back clipped.
    let huge = "n".repeat(1 << 20);
    let (status, clipped) = server.post_json(
        "/v1/events",
        &format!(
            r#"{{"events": [{}]}}"#,
            good.replace("\"age\"", &format!("\"{huge}\""))
        ),
    );
    assert_eq!(status, 200);
    assert!(clipped.len() < 1024, "{} bytes", clipped.len());
    assert!(
        clipped.contains(r#"no feature \"nnnn"#) && clipped.contains("1048576 bytes"),
        "{clipped}"
    );
    let reply: Value = serde_json::from_str(&reply).expect("JSON");
    let errors: Vec<(u64, String)> = reply["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().expect("index"),
                e["error"].as_str().expect("error").to_string(),
            )
        })
        .collect();
    let indices: Vec<u64> = errors.iter().map(|e| e.0).collect();
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(indices, vec![1, 2, 3, 4, 5, 6, 7, 8, 9], "{reply}");
    assert!(errors[0].1.contains("unknown model \"other\""));
    assert!(errors[1].1.contains("no feature \"agee\""));
    assert!(errors[2].1.contains("must be a number"));
    assert!(errors[3].1.contains("must be a string"));
    assert!(errors[4].1.contains("not RFC 3339"));
    assert!(errors[5].1.contains("in the future"));
    assert!(errors[6].1.contains("older than the windows kept"));
    assert!(errors[7].1.contains("invalid event"));
    assert!(
        errors[8].1.contains(r#"no feature "we\"ird\nname""#),
        "{}",
        errors[8].1
    );
    for (reason, n) in [
        ("unknown_model", 1.0),
        ("unknown_feature", 3.0),
        ("wrong_type", 2.0),
        ("bad_timestamp", 1.0),
        ("future_timestamp", 1.0),
        ("too_old", 6.0),
        ("malformed_event", 1.0),
    ] {
        assert_eq!(
            server.metric("driftwatch_events_rejected_total", &[("reason", reason)]),
            Some(n),
            "{reason}"
        );
    }
    // Request-level refusals.
    let (status, body) = server.post_json("/v1/events", "{not json");
    assert_eq!(status, 400);
    assert!(body.contains("malformed body"), "{body}");
    let (status, _) = server.request("POST", "/v1/events", &[("Content-Encoding", "br")], b"{}");
    assert_eq!(status, 415);
    let (status, reply) = server.post_json("/v1/events", r#"{"events": []}"#);
    assert_eq!((status, reply.contains("\"accepted\":0")), (200, true));
    // JSON nested 100 000 deep, inside an event and as the whole body:
    // refused with its place (where a scalar was wanted, or serde_json's
    // limit of 128 levels), never a crash.
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, reply) = server.post_json(
        "/v1/events",
        &format!(r#"{{"events": [{}]}}"#, good.replace("40", &deep)),
    );
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply.contains("\"rejected\":1") && reply.contains("at line 1 column"),
        "{reply}"
    );
    // (A bare array is a list of events: its one event is refused.)
    let (status, reply) = server.post_json("/v1/events", &deep);
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply.contains("\"rejected\":1") && reply.contains("at line 1 column"),
        "{reply}"
    );
    assert!(server.request("GET", "/healthz", &[], b"").0 == 200);
    // 10 000 features in one event: refused alone, its batch neighbour kept.
    let many: Vec<String> = (0..10_000).map(|i| format!(r#""f{i}": {i}"#)).collect();
    let wide = good
        .replace("\"age\": 40", &many.join(", "))
        .replace("\"g\"", "\"wide\"");
    let neighbour = good.replace("\"g\"", "\"n1\"");
    let (status, reply) = server.post_json(
        "/v1/events",
        &format!(r#"{{"events": [{wide}, {neighbour}]}}"#),
    );
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_str(&reply).expect("JSON");
    assert_eq!(
        (
            reply["accepted"].as_u64(),
            reply["errors"][0]["index"].as_u64()
        ),
        (Some(1), Some(0)),
        "{reply}"
    );
    // A 50 MB batch is refused whole with 413 (the default limit is 10 MB).
    let huge = format!(
        r#"{{"events": [{}]}}"#,
        vec![neighbour.as_str(); 50 * 1024 * 1024 / neighbour.len()].join(",")
    );
    assert!(huge.len() > 49 * 1024 * 1024);
    // The server answers 413 and closes without reading the rest; this raw
    // client may see the reset before the answer, so the counter decides.
    let (status, body) = server.post_json("/v1/events", &huge);
    assert!(status == 413 || status == 0, "{status} {body}");
    assert_eq!(
        server.metric(
            "driftwatch_events_rejected_total",
            &[("reason", "too_large")]
        ),
        Some(1.0)
    );
}

#[test]
fn limits_and_tokens_hold() {
    let dir = driftwatch_testkit::temp_dir("serve");
    std::fs::create_dir_all(&dir).expect("dir");
    let config = driftwatch_testkit::file(&dir, "collector.yaml", format!(
            "max_body_bytes: 2000\nauth:\n  tokens_env: DW_TEST_TOKENS\n  ingest: {{tokens_env: DW_INGEST}}\n  read: {{tokens_file: {}}}\n  admin: {{tokens_env: DW_ADMIN}}\nmodels:\n  - name: credit\n    reference: {}\n    windows: [5m, 1h]\n    cost:\n      champion: {{per_second_usd: 0.002}}\n      shadow: {{per_hour_usd: 1.5}}\n",
            driftwatch_testkit::file(&dir, "read-tokens", "grafana\n").display(),
            example("reference.csv").display()
        ));
    let server = Server::start(
        &[
            "--config",
            config.to_str().expect("path"),
            "--eval-interval",
            "100ms",
        ],
        &[
            ("DW_TEST_TOKENS", "alpha, beta"),
            ("DW_INGEST", "agent"),
            ("DW_ADMIN", "ops"),
        ],
    );
    // Each route takes the tokens of its scope: 401 without a known token,
    // 403 with one that lacks the scope. The top-level tokens hold ingest
    // and admin; admin tokens may read; /metrics stays open.
    for (method, path, token, want) in [
        ("POST", "/-/reload", None, 401),
        ("POST", "/-/reload", Some("agent"), 403),
        ("POST", "/-/reload", Some("grafana"), 403),
        // Past the token check: no rule files here.
        ("POST", "/-/reload", Some("ops"), 404),
        ("POST", "/-/reload", Some("alpha"), 404),
        ("DELETE", "/v1/silences/x", Some("agent"), 403),
        ("GET", "/v1/models", None, 401),
        ("GET", "/v1/models", Some("agent"), 403),
        ("GET", "/v1/models", Some("grafana"), 200),
        ("GET", "/v1/models", Some("ops"), 200),
        ("GET", "/v1/alerts", Some("wrong"), 401),
        ("POST", "/v1/events", Some("grafana"), 403),
        ("POST", "/v1/events", Some("agent"), 200),
        ("GET", "/metrics", None, 200),
        ("GET", "/healthz", None, 200),
    ] {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let body: &[u8] = if method == "POST" {
            br#"{"events": []}"#
        } else {
            b""
        };
        let (status, reply) = server.request(method, path, &headers, body);
        assert_eq!(status, want, "{method} {path} with {token:?}: {reply}");
        if status == 401 || status == 403 {
            // Nothing about which tokens exist.
            assert!(
                !reply.contains("agent") && !reply.contains("ops"),
                "{reply}"
            );
        }
    }
    for (scope, status, n) in [
        ("admin", "401", 1.0),
        ("admin", "403", 3.0),
        ("read", "401", 2.0),
        ("read", "403", 1.0),
        ("ingest", "403", 1.0),
    ] {
        assert_eq!(
            server.metric(
                "driftwatch_auth_refusals_total",
                &[("scope", scope), ("status", status)]
            ),
            Some(n),
            "{scope} {status}"
        );
    }
    // A body announced larger than the limit is refused before it is read:
    // 413 at once, and 413 instead of `100 Continue`.
    for (expect, sent) in [(false, 1024), (true, 0)] {
        let mut s = std::net::TcpStream::connect(&server.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let length = if expect {
            1_073_741_824u64
        } else {
            10_737_418_240
        };
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer agent\r\nContent-Length: {length}\r\n{}\r\n",
            if expect { "Expect: 100-continue\r\n" } else { "" }
        );
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(&vec![b'{'; sent]).expect("some body");
        let mut first = [0u8; 12];
        s.read_exact(&mut first)
            .expect("an answer before the body is sent");
        assert_eq!(&first, b"HTTP/1.1 413", "Expect: {expect}");
    }
    let empty = r#"{"events": []}"#.as_bytes().to_vec();
    let big = format!(r#"{{"events": ["{}"]}}"#, "x".repeat(5000)).into_bytes();
    // A small gzip body that expands past the limit is refused too.
    for (token, body, gzipped, want) in [
        (None, &empty, false, 401),
        (Some("gamma"), &empty, false, 401),
        (Some("beta"), &empty, false, 200),
        (Some("alpha"), &big, false, 413),
        (Some("alpha"), &big, true, 413),
    ] {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let body = if gzipped {
            headers.push(("Content-Encoding", "gzip"));
            gzip(body)
        } else {
            body.clone()
        };
        let (status, _) = server.request("POST", "/v1/events", &headers, &body);
        assert_eq!(status, want, "{token:?}, gzip {gzipped}");
    }
    assert_eq!(
        server.metric(
            "driftwatch_events_rejected_total",
            &[("reason", "unauthorized")]
        ),
        Some(2.0)
    );
    assert_eq!(
        server.metric(
            "driftwatch_events_rejected_total",
            &[("reason", "too_large")]
        ),
        Some(4.0)
    );
    // The cost model: 10 ms at 0.002 USD per second is 0.02 USD per 1000.
    let ts = now_rfc3339();
    let event = format!(
        r#"{{"events": [{{"model": "credit", "request_id": "c1", "timestamp": "{ts}", "champion": {{"latency_ms": 10}}}}]}}"#
    );
    let (status, reply) = server.request(
        "POST",
        "/v1/events",
        &[("Authorization", "Bearer alpha")],
        event.as_bytes(),
    );
    assert_eq!(status, 200, "{reply}");
    server.wait_for(Duration::from_secs(30), "the cost gauge", |s| {
        s.metric(
            "driftwatch_cost_per_1k_predictions_usd",
            &[("role", "champion")],
        )
        .is_some_and(|v| (v - 0.02).abs() < 1e-12)
    });
    let (status, _) = server.request("GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
    let (status, _) = server.request("GET", "/readyz", &[], b"");
    assert_eq!(status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broken_config_is_refused_with_its_location() {
    let dir = driftwatch_testkit::temp_dir("badconf");
    let config = dir.join("bad.yaml");
    let model = |rest: &str| format!("models:\n  - name: credit\n{rest}");
    let reference = format!("    reference: {}\n", example("reference.csv").display());
    for (text, want) in [
        (
            model("    reference: nowhere.csv\n    windows: [5m, sometimes]\n"),
            vec!["bad.yaml:4:", "sometimes"],
        ),
        (
            model("    reference: nowhere.csv\n"),
            vec!["nowhere.csv does not exist"],
        ),
        // Drift overrides: a test that does not exist, a feature not watched.
        (
            model(&format!("{reference}    drift: {{tests: [age=nope]}}\n")),
            vec!["models[0] (credit).drift: unknown test \"nope\""],
        ),
        (
            model(&format!(
                "{reference}    drift: {{thresholds: [\"agee:psi=0.2\"]}}\n"
            )),
            vec!["model credit: drift: \"agee\" is not a watched column"],
        ),
        // Nesting past the bound is refused where it goes too deep, never a
        // stack overflow.
        (
            format!("models:\n  {}x\n", "- ".repeat(100_000)),
            vec!["bad.yaml:2:", "nested more than 64 levels deep"],
        ),
        (
            model(&format!("{reference}auth: {{metrics: true}}\n")),
            vec!["auth.metrics: `/metrics` would need a read token"],
        ),
    ] {
        std::fs::write(&config, &text).expect("config");
        let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(dir.join("t.db"))
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        for w in want {
            assert!(err.contains(w), "{w}: {err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Champion, shadow and truth for prediction `i` of the label test.
fn labelled_case(i: usize) -> (&'static str, f64, &'static str, f64, &'static str) {
    let champion = if i.is_multiple_of(3) { "0" } else { "1" };
    let shadow = if i.is_multiple_of(2) { "1" } else { "0" };
    let truth = if i.is_multiple_of(4) { "0" } else { "1" };
    (
        champion,
        (i % 10) as f64 / 10.0 + 0.05,
        shadow,
        ((i * 7) % 10) as f64 / 10.0 + 0.05,
        truth,
    )
}

#[test]
fn labels_arriving_later_give_accuracy_per_role_and_survive_a_restart() {
    let reference = example("reference.csv");
    let dir = common::server::temp_db_dir();
    let db = dir.join("driftwatch.db");
    let args = live_args(&reference);
    let server = Server::start_on(&args, &[], &db);
    let ts = now_rfc3339();
    let events: Vec<String> = (0..200)
        .map(|i| {
            let (c, cs, s, ss, _) = labelled_case(i);
            format!(
                r#"{{"model": "credit", "request_id": "p{i}", "timestamp": "{ts}", "features": {{"age": {}}}, "champion": {{"label": "{c}", "score": {cs}}}, "shadow": {{"label": "{s}", "score": {ss}}}}}"#,
                30 + i % 40
            )
        })
        .collect();
    let (status, reply) = server.post_json(
        "/v1/events",
        &format!(r#"{{"events": [{}]}}"#, events.join(",")),
    );
    assert_eq!(status, 200, "{reply}");
    let mut labels: Vec<String> = (0..150)
        .map(|i| {
            format!(
                r#"{{"model": "credit", "request_id": "p{i}", "label": "{}"}}"#,
                labelled_case(i).4
            )
        })
        .collect();
    labels.push(r#"{"model": "credit", "request_id": "never-sent", "label": "1"}"#.into());
    labels.push(r#"{"model": "credit", "request_id": "p0", "label": "1"}"#.into());
    labels.push(r#"{"model": "credit", "request_id": "p151"}"#.into());
    labels.push(r#"{"model": "nope", "request_id": "p152", "label": "1"}"#.into());
    let reply = server.post_items("/v1/feedback", "labels", &labels);
    assert_eq!(counts(&reply), (150, 4), "{reply}");
    for (reason, n) in [
        ("unknown_request_id", 1.0),
        ("duplicate_label", 1.0),
        ("malformed_label", 1.0),
        ("unknown_model", 1.0),
    ] {
        assert_eq!(
            server.metric("driftwatch_events_rejected_total", &[("reason", reason)]),
            Some(n),
            "{reason}"
        );
    }
    let accuracy = |role_label: fn(usize) -> &'static str| {
        (0..150)
            .filter(|&i| role_label(i) == labelled_case(i).4)
            .count() as f64
            / 150.0
    };
    let want_champion = accuracy(|i| labelled_case(i).0);
    let want_shadow = accuracy(|i| labelled_case(i).2);
    let check = |s: &Server| {
        let got = |role: &str| {
            s.metric(
                "driftwatch_model_performance",
                &[("role", role), ("metric", "accuracy"), ("window", "1d")],
            )
        };
        got("champion") == Some(want_champion)
            && got("shadow") == Some(want_shadow)
            && s.metric("driftwatch_label_coverage_ratio", &[("window", "1d")]) == Some(0.75)
    };
    server.wait_for(Duration::from_secs(20), "accuracy from the labels", check);
    for metric in ["precision", "recall", "f1", "roc_auc", "log_loss", "brier"] {
        let v = server.metric(
            "driftwatch_model_performance",
            &[("role", "champion"), ("metric", metric)],
        );
        assert!(v.is_some_and(f64::is_finite), "{metric}: {v:?}");
    }
    // The JSON API shows the same window.
    let (status, body) = server.request("GET", "/v1/models", &[], b"");
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(models["models"][0]["name"], "credit");
    assert_eq!(models["models"][0]["windows"][0], "1d");
    assert_eq!(
        models["models"][0]["features"].as_array().map(Vec::len),
        Some(8)
    );
    server.wait_for(Duration::from_secs(20), "stored window results", |s| {
        let (_, body) = s.request(
            "GET",
            "/v1/models/credit/windows?window=1d&limit=5",
            &[],
            b"",
        );
        serde_json::from_str::<Value>(&body)
            .ok()
            .is_some_and(|v| v["windows"][0]["labels"] == 150)
    });
    let (_, body) = server.request(
        "GET",
        "/v1/models/credit/windows?window=1d&limit=5",
        &[],
        b"",
    );
    let windows: Value = serde_json::from_str(&body).expect("JSON");
    let live = &windows["windows"][0];
    assert_eq!(live["live"], true);
    assert_eq!(live["events"], 200);
    assert_eq!(
        live["performance"]["champion"]["accuracy"].as_f64(),
        Some(want_champion)
    );
    assert_eq!(live["label_coverage"].as_f64(), Some(0.75));
    let age = live["features"]
        .as_array()
        .expect("features")
        .iter()
        .find(|f| f["name"] == "age")
        .expect("age");
    assert_eq!(age["default_test"], "wasserstein");
    assert_eq!(
        server.request("GET", "/v1/models/nope/windows", &[], b"").0,
        404
    );
    let (status, body) = server.request("GET", "/v1/models/credit/windows?window=7m", &[], b"");
    assert_eq!(status, 400);
    assert!(body.contains("it has 1d"), "{body}");
    // McNemar on the discordant pairs, computed here independently.
    let (mut b, mut c) = (0u64, 0u64);
    for i in 0..150 {
        let (champion, _, shadow, _, truth) = labelled_case(i);
        match (champion == truth, shadow == truth) {
            (true, false) => b += 1,
            (false, true) => c += 1,
            _ => {}
        }
    }
    let n = b + c;
    let mut tail = 0.0;
    let mut coef = 1.0f64;
    for i in 0..=b.min(c) {
        if i > 0 {
            coef = coef * (n - i + 1) as f64 / i as f64;
        }
        tail += coef;
    }
    let want_p = (2.0 * tail / 2f64.powi(n as i32)).min(1.0);
    let got_p = server
        .metric("driftwatch_shadow_comparison_p_value", &[("window", "1d")])
        .expect("p-value");
    assert!(
        (got_p - want_p).abs() <= 1e-12 * want_p.max(1e-300),
        "{got_p} vs {want_p} (b={b}, c={c})"
    );
    let verdict = server.metric("driftwatch_shadow_comparison_verdict", &[("window", "1d")]);
    let want_verdict = if want_p >= 0.05 {
        0.0
    } else if c > b {
        1.0
    } else {
        -1.0
    };
    assert_eq!(verdict, Some(want_verdict));
    server.kill();
    let restarted = Server::start_on(&args, &[], &db);
    restarted.wait_for(
        Duration::from_secs(20),
        "accuracy restored after kill -9",
        check,
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A window's results from `GET /v1/models/credit/windows?window=W`, by start.
fn window_result(server: &Server, window: &str, start: &str) -> Option<Value> {
    let (_, body) = server.request(
        "GET",
        &format!("/v1/models/credit/windows?window={window}"),
        &[],
        b"",
    );
    let reply: Value = serde_json::from_str(&body).ok()?;
    reply["windows"]
        .as_array()?
        .iter()
        .find(|w| w["start"] == start)
        .cloned()
}

#[test]
fn evaluation_skips_what_did_not_change_goes_oldest_first_and_says_when_it_ran() {
    let dir = driftwatch_testkit::temp_dir("budget");
    std::fs::create_dir_all(&dir).expect("dir");
    // A budget of nothing: one window per cycle.
    let cfg = driftwatch_testkit::file(
        &dir,
        "collector.yaml",
        format!(
            "eval_interval: 100ms\neval_budget: 0s\nmodels:\n  - name: credit\n    reference: {}\n    windows: [1h, 1d]\n",
            example("reference.csv").display()
        ),
    );
    let server = Server::start(&["--config", cfg.to_str().expect("UTF-8")], &[]);
    let now = chrono::Utc::now();
    let hour = |t: chrono::DateTime<chrono::Utc>| {
        use chrono::{DurationRound, TimeDelta};
        t.duration_trunc(TimeDelta::hours(1)).expect("hour")
    };
    let stamp =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let events = events_from_csv(&example("current.csv"), &stamp(now));
    let body = format!(r#"{{"events": [{}]}}"#, events[..100].join(","));
    assert_eq!(server.post_json("/v1/events", &body).0, 200);
    // Both live windows changed; one is evaluated per cycle, the other
    // waits for the next, counted.
    let live_start = stamp(hour(now));
    server.wait_for(Duration::from_secs(20), "both windows evaluated", |s| {
        window_result(s, "1h", &live_start).is_some_and(|w| w["events"] == 100)
            && s.request("GET", "/v1/models/credit/windows?window=1d", &[], b"")
                .1
                .contains("\"events\":100")
    });
    let skipped = |reason: &str| {
        server
            .metric("driftwatch_evaluation_skipped_total", &[("reason", reason)])
            .unwrap_or(0.0)
    };
    assert!(skipped("over_budget") >= 1.0);

    // Nothing arrives: nothing is evaluated again, and each result says
    // when it was computed (the live one's gauge too).
    let at =
        window_result(&server, "1h", &live_start).expect("live window")["evaluated_at"].clone();
    let unchanged = skipped("unchanged");
    std::thread::sleep(Duration::from_millis(600));
    let again = window_result(&server, "1h", &live_start).expect("live window");
    assert_eq!(again["evaluated_at"], at, "{again}");
    assert!(skipped("unchanged") >= unchanged + 3.0);
    let at_s = chrono::DateTime::parse_from_rfc3339(at.as_str().expect("a time"))
        .expect("RFC 3339")
        .timestamp_millis() as f64
        / 1000.0;
    let gauge = server.metric(
        "driftwatch_window_evaluated_timestamp_seconds",
        &[("model", "credit"), ("window", "1h")],
    );
    assert_eq!(gauge, Some(at_s));

    // A late event in the hour before: that window is evaluated, and again
    // when another arrives.
    let before = hour(now) - chrono::TimeDelta::hours(1);
    let late = |id: &str| {
        let e = events_with_ids(
            &example("current.csv"),
            &stamp(before + chrono::TimeDelta::minutes(5)),
            id,
        );
        format!(r#"{{"events": [{}]}}"#, e[0])
    };
    assert_eq!(server.post_json("/v1/events", &late("late-a")).0, 200);
    let previous = stamp(before);
    let mut first = Value::Null;
    server.wait_for(Duration::from_secs(20), "the late window evaluated", |s| {
        first = window_result(s, "1h", &previous).unwrap_or(Value::Null);
        first["events"] == 1
    });
    assert_eq!(first["live"], false);
    assert_eq!(server.post_json("/v1/events", &late("late-b")).0, 200);
    let mut second = Value::Null;
    server.wait_for(
        Duration::from_secs(20),
        "the late window evaluated again",
        |s| {
            second = window_result(s, "1h", &previous).unwrap_or(Value::Null);
            second["events"] == 2
        },
    );
    assert!(
        second["evaluated_at"].as_str() > first["evaluated_at"].as_str(),
        "{first} {second}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
