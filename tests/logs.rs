//! Logs with the real agent: JSON lines with the documented fields, the
//! level filter of `DRIFTWATCH_LOG`, and a collector outage of 30 s that
//! is logged once when it starts and once when it ends, however many
//! attempts failed in between (each counted).

use std::time::{Duration, Instant};

use driftwatch_testkit::process::{
    free_port, http, http_request, json_log, metric, start_agent_with, start_champion, wait_until,
    CREDIT_REQUEST,
};
use driftwatch_testkit::receiver::Receiver;
use driftwatch_testkit::temp_dir;
use serde_json::Value;

fn message(line: &Value) -> &str {
    line["message"].as_str().unwrap_or("")
}

#[test]
fn a_collector_outage_is_logged_as_json_once_when_it_starts_and_once_when_it_ends() {
    let dir = temp_dir("logs-outage");
    std::fs::create_dir_all(&dir).expect("dir");
    // Nothing listens on the collector's port for the first 30 s.
    let collector = format!("127.0.0.1:{}", free_port());
    let (_champion, champion_addr) = start_champion(&dir);
    let (agent, addr, admin) = start_agent_with(
        &dir,
        &champion_addr,
        &collector,
        &["--log-format", "json"],
        &[("DRIFTWATCH_LOG", "warn,driftwatch_agent::ship=info")],
    );
    let outage = Instant::now();
    let mut sent = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        let got = http_request(
            &addr,
            "POST",
            "/v2/models/credit/infer",
            &[("content-type", "application/json")],
            CREDIT_REQUEST,
        );
        assert_eq!(got.map(|r| r.0), Some(200), "request {sent}");
        sent += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let receiver = Receiver::start_at(&collector, &[]);
    wait_until(
        "the agent to ship again and say so",
        Duration::from_secs(60),
        &[&agent],
        || {
            json_log(&agent.output())
                .iter()
                .any(|l| message(l).starts_with("shipping resumed"))
        },
    );
    assert!(receiver.requests().iter().any(|r| r.path == "/v1/events"));
    let metrics = http(&admin, "GET", "/metrics").expect("agent metrics").1;
    let failures = metric(
        &metrics,
        "driftwatch_agent_ship_failures_total",
        &[("reason", "unreachable")],
    )
    .expect("failures counted");

    let log = json_log(&agent.output());
    // Every line has the documented fields; a timestamp in RFC 3339 (UTC).
    for line in &log {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line[field].is_string(), "{field} missing: {line}");
        }
        let ts = line["timestamp"].as_str().expect("timestamp");
        assert!(
            ts.len() >= 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
            "{ts}"
        );
    }
    // The filter: warnings, and info from the shipping stage only (the
    // agent's own "listening" line is info from another target).
    assert!(
        log.iter().all(|l| l["level"] == "WARN"
            || l["level"] == "ERROR"
            || l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("driftwatch_agent::ship"))),
        "{log:?}"
    );
    assert!(!log
        .iter()
        .any(|l| message(l).starts_with("driftwatch-agent listening")));
    // The outage: many failed attempts, all counted; one line when it
    // started, one when it ended with how many there were.
    let failed: Vec<&Value> = log
        .iter()
        .filter(|l| message(l).starts_with("shipping") && message(l).contains("failed ("))
        .collect();
    assert!(failures >= 5.0, "{failures} attempts failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["level"], "WARN");
    assert!(
        failed[0]["events"].as_u64().is_some_and(|n| n >= 1),
        "{}",
        failed[0]
    );
    let resumed: Vec<&Value> = log
        .iter()
        .filter(|l| message(l).starts_with("shipping resumed"))
        .collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(
        resumed[0]["failed"].as_f64(),
        Some(failures),
        "{}",
        resumed[0]
    );
    assert_eq!(resumed[0]["level"], "INFO");
    assert!(
        log.len() <= 4,
        "a handful of lines for a 30 s outage: {log:?}"
    );
    println!("{failures} failed attempts, {} log lines", log.len());
    // Nothing was lost: every request became an event that got through.
    wait_until(
        "every event shipped",
        Duration::from_secs(30),
        &[&agent],
        || {
            http(&admin, "GET", "/metrics").is_some_and(|(_, m)| {
                metric(&m, "driftwatch_agent_events_shipped_total", &[])
                    .or_else(|| {
                        m.lines()
                            .find(|l| l.starts_with("driftwatch_agent_events_shipped_total "))
                            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                    })
                    .is_some_and(|n| n >= f64::from(sent))
            })
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}
