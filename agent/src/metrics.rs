//! The agent's Prometheus metrics (`driftwatch_agent_*`; the names in
//! DESIGN.md are a contract, the others are added by this crate).

use driftwatch_telemetry::register_metric as register;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub struct Metrics {
    registry: Registry,
    /// Proxied requests by model and the status code the client got.
    pub requests: IntCounterVec,
    /// Time the agent adds to a proxied request (its handling outside the
    /// upstream call).
    pub added_latency: HistogramVec,
    pub upstream_latency: HistogramVec,
    pub shadow_queue_depth: IntGaugeVec,
    pub shadow_shed: IntCounterVec,
    pub shadow_up: IntGaugeVec,
    pub shadow_errors: IntCounterVec,
    pub shadow_batch_rows: Histogram,
    pub events_dropped: IntCounterVec,
    pub events_shipped: prometheus::IntCounter,
    pub events_sampled_out: IntCounterVec,
    pub unparsed: IntCounterVec,
    pub passthrough: IntCounterVec,
    pub buffered: IntGauge,
    pub spool_bytes: IntGauge,
    pub ship_failures: IntCounterVec,
    pub features_redacted: IntCounterVec,
    pub connections_refused: IntCounterVec,
    pub tls_reloads: IntCounterVec,
    pub config_reloads: IntCounterVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    register(
        r,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        ),
    )
}

/// 20 µs to 50 ms: what a proxy adds.
const ADDED: &[f64] = &[
    0.00002, 0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05,
];
/// 1 ms to 10 s: what a model takes.
const UPSTREAM: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Default for Metrics {
    /// Every metric, registered.
    fn default() -> Metrics {
        let r = Registry::new();
        let batch = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "driftwatch_agent_shadow_batch_rows",
                    "Rows per shadow inference batch",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            ),
        );
        let buffered = register(
            &r,
            IntGauge::new(
                "driftwatch_agent_buffered_events",
                "Events waiting in memory to be shipped",
            ),
        );
        let spool_bytes = register(
            &r,
            IntGauge::new(
                "driftwatch_agent_spool_bytes",
                "Bytes of events waiting in the disk spool",
            ),
        );
        let shipped = register(
            &r,
            prometheus::IntCounter::new(
                "driftwatch_agent_events_shipped_total",
                "Events the collector accepted",
            ),
        );
        Metrics {
            requests: counter(
                &r,
                "driftwatch_agent_requests_total",
                "Requests handled, by model and the status code returned to the client",
                &["model", "code"],
            ),
            added_latency: histogram(
                &r,
                "driftwatch_agent_added_latency_seconds",
                "Time the agent adds to a proxied request (all but the upstream call)",
                &["model"],
                ADDED,
            ),
            upstream_latency: histogram(
                &r,
                "driftwatch_agent_upstream_latency_seconds",
                "Time the champion took (request sent to response read)",
                &["model"],
                UPSTREAM,
            ),
            shadow_queue_depth: gauge(
                &r,
                "driftwatch_agent_shadow_queue_depth",
                "Rows waiting for the shadow model",
                &["model"],
            ),
            shadow_shed: counter(
                &r,
                "driftwatch_agent_shadow_shed_total",
                "Rows not scored by the shadow because its queue was full or it answered too late",
                &["model"],
            ),
            shadow_up: gauge(
                &r,
                "driftwatch_agent_shadow_up",
                "1 when the shadow model is loaded and scoring, 0 when unavailable",
                &["model"],
            ),
            shadow_errors: counter(
                &r,
                "driftwatch_agent_shadow_errors_total",
                "Shadow inference batches that failed",
                &["model"],
            ),
            shadow_batch_rows: batch,
            events_dropped: counter(
                &r,
                "driftwatch_agent_events_dropped_total",
                "Events lost, by reason (buffer_full, spool_full, observer_busy, refused_by_collector, rejected_by_collector, unjoined, shutdown)",
                &["reason"],
            ),
            events_shipped: shipped,
            events_sampled_out: counter(
                &r,
                "driftwatch_agent_events_sampled_out_total",
                "Events not shipped because of the sampling rate (the request counters stay exact)",
                &["model"],
            ),
            unparsed: counter(
                &r,
                "driftwatch_agent_unparsed_total",
                "Bodies the protocol adapter could not read (forwarded unchanged), by model, part and reason",
                &["model", "part", "reason"],
            ),
            passthrough: counter(
                &r,
                "driftwatch_agent_passthrough_total",
                "Calls proxied that are not inferences (health, readiness, metadata), by model: never parsed",
                &["model"],
            ),
            buffered,
            spool_bytes,
            ship_failures: counter(
                &r,
                "driftwatch_agent_ship_failures_total",
                "Failed attempts to post a batch to the collector, by reason",
                &["reason"],
            ),
            features_redacted: counter(
                &r,
                "driftwatch_agent_features_redacted_total",
                "Feature values kept from the collector, by model and action (drop, hash, not_requested)",
                &["model", "action"],
            ),
            connections_refused: counter(
                &r,
                "driftwatch_agent_connections_refused_total",
                "Client connections refused or cut, by reason (limit, header_timeout, body_timeout, header_too_large, tls_handshake)",
                &["reason"],
            ),
            tls_reloads: counter(
                &r,
                "driftwatch_agent_tls_reloads_total",
                "Listener certificates read again after their files changed, by outcome (success, failure)",
                &["outcome"],
            ),
            config_reloads: counter(
                &r,
                "driftwatch_agent_config_reloads_total",
                "Config file read again on SIGHUP for new arm weights, by outcome (success; failure: unreadable or invalid, or arms changed beyond their weights, which needs a restart)",
                &["outcome"],
            ),
            registry: r,
        }
    }
}

impl Metrics {
    /// Counts a traffic request by model (empty: routed to none) and status.
    pub fn count_request(&self, model: &str, status: &str) {
        self.requests.with_label_values(&[model, status]).inc();
    }

    /// Counts a connection refused or cut (`connections_refused`).
    pub fn refuse(&self, reason: &str) {
        self.connections_refused.with_label_values(&[reason]).inc();
    }

    /// The registry, for the OTLP export of the same metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
