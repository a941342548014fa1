//! OpenTelemetry export with the real binaries: the collector and the
//! agent send traces and metrics over OTLP/HTTP to a receiver on loopback,
//! which decodes them with the protocol's own definitions
//! (opentelemetry-proto). The agent's request span continues the caller's
//! `traceparent`; the collector's spans cover ingest, rule evaluation and
//! notification delivery; both export their Prometheus metrics. A log
//! line about a request carries its span's ids (JSON logs).

use driftwatch_testkit::process as support;
use driftwatch_testkit::receiver;

use std::process::Command;
use std::time::Duration;

use driftwatch_testkit::repo;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::{http_request, wait_until, write, Proc};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
/// The trace of a batch sent to the collector with a refused event.
const REFUSED_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            Some(any_value::Value::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

fn service(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .and_then(|r| text(&r.attributes, "service.name"))
        .unwrap_or_default()
}

/// Every span received, with its resource's `service.name`.
fn spans(hook: &receiver::Receiver) -> Vec<(String, Span)> {
    let mut out = Vec::new();
    for r in hook.requests().iter().filter(|r| r.path == "/v1/traces") {
        let req =
            ExportTraceServiceRequest::decode(r.body.as_slice()).expect("an OTLP trace export");
        for rs in req.resource_spans {
            let service = service(rs.resource.as_ref());
            for ss in rs.scope_spans {
                out.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
    }
    out
}

/// Every metric name received, with its resource's `service.name`.
fn metrics(hook: &receiver::Receiver) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in hook.requests().iter().filter(|r| r.path == "/v1/metrics") {
        let req =
            ExportMetricsServiceRequest::decode(r.body.as_slice()).expect("an OTLP metrics export");
        for rm in req.resource_metrics {
            let service = service(rm.resource.as_ref());
            for sm in rm.scope_metrics {
                out.extend(sm.metrics.into_iter().map(|m| (service.clone(), m.name)));
            }
        }
    }
    out
}

fn terminate(p: &mut Proc) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(p.pid().to_string())
        .status();
    p.wait_exit(Duration::from_secs(30));
}

#[test]
fn the_collector_and_the_agent_export_traces_and_metrics_over_otlp() {
    let dir = driftwatch_testkit::temp_dir("otlp");
    let hook = receiver::Receiver::start(&[]);
    write(
        &dir.join("rules.yaml"),
        "route: {receiver: log, group_wait: 0s, group_interval: 1s}\nreceivers:\n  - name: log\n    log: {}\ngroups:\n  - name: traffic\n    rules:\n      - alert: TrafficSeen\n        metric: driftwatch_window_samples\n        op: \">=\"\n        threshold: 1\n",
    );
    let config = dir.join("collector.yaml");
    write(
        &config,
        &format!(
            "db: {db}\neval_interval: 1s\nrules: [{rules}]\nlog: {{format: json, level: \"info,driftwatch::serve=debug\"}}\notlp:\n  endpoint: {hook}\n  metrics_interval: 1s\nmodels:\n  - name: credit\n    reference: {reference}\n    windows: [1m]\n",
            db = dir.join("driftwatch.db").display(),
            rules = dir.join("rules.yaml").display(),
            hook = hook.url,
            reference = repo("examples/credit/reference.csv").display(),
        ),
    );
    let (mut collector, collector_addr) = support::start_collector(&dir, &config, &[]);
    let (champion, champion_addr) = support::start_champion(&dir);
    // The flag form; the metrics go out at shutdown (the default interval is 30 s).
    let (mut agent, agent_addr, _) = support::start_agent(
        &dir,
        &champion_addr,
        &collector_addr,
        &["--otlp-endpoint", &hook.url],
    );

    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (status, _) = http_request(
        &agent_addr,
        "POST",
        "/v2/models/credit/infer",
        &[
            ("traceparent", traceparent.as_str()),
            ("content-type", "application/json"),
        ],
        support::CREDIT_REQUEST,
    )
    .expect("the agent answers");
    assert_eq!(status, 200);
    // A batch with one event that cannot be read, in a trace of its own.
    let refused_parent = format!("00-{REFUSED_TRACE_ID}-{PARENT_ID}-01");
    let (status, reply) = http_request(
        &collector_addr,
        "POST",
        "/v1/events",
        &[
            ("traceparent", refused_parent.as_str()),
            ("content-type", "application/json"),
        ],
        r#"{"events": [{"nonsense": 1}]}"#,
    )
    .expect("the collector answers");
    assert!(status == 200 && reply.contains("\"rejected\":1"), "{reply}");
    let all = [&collector, &agent, &champion];
    wait_until(
        "the rule to fire and its notification to be delivered",
        Duration::from_secs(60),
        &all,
        || {
            spans(&hook)
                .iter()
                .any(|(s, sp)| s == "driftwatch-collector" && sp.name == "deliver notification")
        },
    );
    terminate(&mut agent);
    terminate(&mut collector);

    let got = spans(&hook);
    let agent_span = got
        .iter()
        .find(|(s, sp)| s == "driftwatch-agent" && sp.name == "proxy credit")
        .unwrap_or_else(|| {
            panic!(
                "no agent request span in {:?}",
                got.iter().map(|(s, sp)| (s, &sp.name)).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        hex::encode(&agent_span.1.trace_id),
        TRACE_ID,
        "continues the caller's trace"
    );
    assert_eq!(
        hex::encode(&agent_span.1.parent_span_id),
        PARENT_ID,
        "a child of the caller's span"
    );
    assert_eq!(
        text(&agent_span.1.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        text(&agent_span.1.attributes, "driftwatch.model").as_deref(),
        Some("credit")
    );
    assert_eq!(
        text(&agent_span.1.attributes, "url.path").as_deref(),
        Some("/v2/models/credit/infer")
    );
    assert!(agent_span.1.end_time_unix_nano >= agent_span.1.start_time_unix_nano);
    for name in [
        "ingest events",
        "evaluate windows",
        "evaluate rules",
        "deliver notification",
    ] {
        assert!(
            got.iter()
                .any(|(s, sp)| s == "driftwatch-collector" && sp.name == name),
            "no collector span {name:?}"
        );
    }
    let ingest = got
        .iter()
        .find(|(_, sp)| sp.name == "ingest events" && hex::encode(&sp.trace_id) != REFUSED_TRACE_ID)
        .expect("ingest span");
    assert_eq!(
        text(&ingest.1.attributes, "driftwatch.accepted").as_deref(),
        Some("1")
    );
    let delivery = got
        .iter()
        .find(|(_, sp)| sp.name == "deliver notification")
        .expect("delivery span");
    assert_eq!(
        text(&delivery.1.attributes, "driftwatch.receiver").as_deref(),
        Some("log")
    );

    // The collector's JSON log: the refused event at debug (its target let
    // through by the filter) with the ids of its request's span; the log
    // receiver's message; nothing at debug from elsewhere.
    let refused_span = got
        .iter()
        .find(|(_, sp)| hex::encode(&sp.trace_id) == REFUSED_TRACE_ID)
        .expect("the refused batch's span");
    let log = support::json_log(&collector.output());
    let line = log
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("item 0 refused"))
        })
        .unwrap_or_else(|| panic!("no refusal logged: {log:?}"));
    assert_eq!(line["level"], "DEBUG");
    assert_eq!(line["trace_id"], REFUSED_TRACE_ID, "{line}");
    assert_eq!(
        line["span_id"],
        hex::encode(&refused_span.1.span_id),
        "{line}"
    );
    assert!(log.iter().any(|l| l["target"] == "driftwatch::notification"
        && l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("notification {"))));
    assert!(log.iter().all(|l| l["level"] != "DEBUG"
        || l["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("driftwatch::serve"))));

    let names = metrics(&hook);
    for (service, metric) in [
        ("driftwatch-collector", "driftwatch_predictions_total"),
        ("driftwatch-collector", "driftwatch_window_samples"),
        ("driftwatch-collector", "driftwatch_alerts_firing"),
        (
            "driftwatch-collector",
            "driftwatch_inference_latency_seconds_count",
        ),
        ("driftwatch-agent", "driftwatch_agent_requests_total"),
        ("driftwatch-agent", "driftwatch_agent_events_shipped_total"),
    ] {
        assert!(
            names.iter().any(|(s, m)| s == service && m == metric),
            "{metric} from {service} not exported: {names:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_otlp_endpoint_is_logged_once_and_counted() {
    let dir = driftwatch_testkit::temp_dir("otlp-down");
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let config = dir.join("collector.yaml");
    write(
        &config,
        &format!(
            "db: {db}\neval_interval: 1s\notlp:\n  endpoint: {closed}\n  metrics_interval: 1s\n  timeout: 2s\nmodels:\n  - name: credit\n    reference: {reference}\n    windows: [1m]\n",
            db = dir.join("driftwatch.db").display(),
            reference = repo("examples/credit/reference.csv").display(),
        ),
    );
    let (collector, addr) = support::start_collector(&dir, &config, &[]);
    let failures = |signal: &str| {
        support::http(&addr, "GET", "/metrics")
            .and_then(|(_, text)| {
                support::metric(
                    &text,
                    "driftwatch_otlp_exports_total",
                    &[("signal", signal), ("outcome", "failure")],
                )
            })
            .unwrap_or(0.0)
    };
    wait_until(
        "failed metric exports to be counted",
        Duration::from_secs(30),
        &[&collector],
        || failures("metrics") >= 2.0,
    );
    // Still serving: the export runs beside the work.
    assert_eq!(
        support::http(&addr, "GET", "/healthz").map(|r| r.0),
        Some(200)
    );
    let log = collector.output();
    let said = log.matches("OTLP metrics export to").count();
    assert_eq!(
        said, 1,
        "the first failure is logged, later ones only counted:\n{log}"
    );
    assert!(log.contains(&format!("{closed}/v1/metrics")), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
