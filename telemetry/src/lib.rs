//! What the agent and the collector share beyond the wire format:
//! OpenTelemetry export (traces and metrics over OTLP/HTTP, protobuf, when
//! configured), the Prometheus text rendering, and TLS for listeners
//! (`tls`), and the ONNX Runtime environment (`onnx`).
//!
//! Spans are recorded after the fact, with the start and end times of the
//! work they describe (a proxied request, an ingest batch, a rule
//! evaluation, a notification delivery), so nothing is added to a hot path
//! while a request is in flight. A span continues the W3C `traceparent` it
//! is given. Metrics are the service's own Prometheus registry, read at
//! each export: counters as cumulative sums, gauges as gauges, histograms
//! as their `_count` and `_sum`. Every export is counted in the registry
//! (`{prefix}_otlp_exports_total{signal, outcome}`) and failures are
//! logged with their reason, at most one line a minute per signal
//! (`log::Repeats`). Logs themselves are in `log`.

pub mod conn;
pub mod log;
pub mod nats;
pub mod onnx;
pub mod tls;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::propagation::TextMapPropagator;
pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{Span as _, Status, Tracer as _, TracerProvider as _};
pub use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use prometheus::proto::MetricType;
use prometheus::{Encoder, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Deserializer};

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!("{text:?} is not a duration like 10s or 1m ({e})"))
    })
}

/// A recorded span's W3C trace and span ids in hex, as log lines carry
/// them (`trace_id`, `span_id`) to link to the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: String,
    pub span_id: String,
}

/// `otlp:` in the agent's and the collector's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The OTLP/HTTP base URL (an OpenTelemetry Collector's port 4318):
    /// traces go to `{endpoint}/v1/traces`, metrics to `{endpoint}/v1/metrics`.
    pub endpoint: String,
    /// Extra request headers (tenant ids and the like).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Environment variable holding more headers as `k=v,k2=v2`
    /// (`OTEL_EXPORTER_OTLP_HEADERS` syntax), for secrets.
    #[serde(default)]
    pub headers_env: Option<String>,
    #[serde(default = "yes")]
    pub traces: bool,
    #[serde(default = "yes")]
    pub metrics: bool,
    /// How often the metrics are exported.
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub metrics_interval: Duration,
    /// Share of new traces kept; a caller's sampled `traceparent` is always followed.
    #[serde(default = "one")]
    pub sample_ratio: f64,
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}
fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl OtlpConfig {
    /// Every default, for `--otlp-endpoint URL` and `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(url: &str) -> OtlpConfig {
        OtlpConfig {
            endpoint: url.to_string(),
            headers: BTreeMap::new(),
            headers_env: None,
            traces: true,
            metrics: true,
            metrics_interval: default_interval(),
            sample_ratio: 1.0,
            timeout: default_timeout(),
        }
    }

    /// `--otlp-endpoint URL`: the configured block with this endpoint, or
    /// every default with it.
    pub fn with_endpoint(configured: Option<OtlpConfig>, url: &str) -> OtlpConfig {
        let mut otlp = configured.unwrap_or_else(|| OtlpConfig::endpoint(url));
        otlp.endpoint = url.to_string();
        otlp
    }

    /// The config's own `otlp:`, else the standard environment variable.
    pub fn resolve(configured: Option<OtlpConfig>) -> Option<OtlpConfig> {
        configured.or_else(|| {
            std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| OtlpConfig::endpoint(v.trim()))
        })
    }

    /// Problems a user must fix, all at once.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            problems.push(format!(
                "otlp.endpoint: {:?} is not an http:// or https:// URL",
                self.endpoint
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            problems.push(format!(
                "otlp.sample_ratio: {} is not between 0 and 1",
                self.sample_ratio
            ));
        }
        if self.metrics_interval < Duration::from_secs(1) {
            problems.push("otlp.metrics_interval: at least 1s".into());
        }
        if let Some(var) = &self.headers_env {
            if std::env::var(var).is_err() {
                problems.push(format!(
                    "otlp.headers_env: environment variable {var} is not set"
                ));
            }
        }
        problems
    }

    fn all_headers(&self) -> HashMap<String, String> {
        let mut h: HashMap<String, String> = self.headers.clone().into_iter().collect();
        if let Some(text) = self
            .headers_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
        {
            for pair in text.split(',') {
                if let Some((k, v)) = pair.split_once('=') {
                    h.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
        }
        h
    }

    fn url(&self, signal: &str) -> String {
        format!("{}/v1/{signal}", self.endpoint.trim_end_matches('/'))
    }
}

/// Counts exports by signal and outcome; logs the first failure of each
/// signal, then at most one line a minute with the failures held back.
#[derive(Clone, Debug)]
struct ExportCount {
    counter: IntCounterVec,
    repeats: Arc<log::Repeats>,
    service: &'static str,
}

impl ExportCount {
    fn record(&self, signal: &str, result: &OTelSdkResult, url: &str) {
        let outcome = if result.is_ok() { "success" } else { "failure" };
        self.counter.with_label_values(&[signal, outcome]).inc();
        if let Err(e) = result {
            crate::throttled!(
                self.repeats,
                signal,
                tracing::Level::WARN,
                { service = self.service, signal, },
                "OTLP {signal} export to {url} failed: {e} (counted in otlp_exports_total)"
            );
        }
    }
}

#[derive(Debug)]
struct CountedSpans<E> {
    inner: E,
    count: ExportCount,
    url: String,
}

impl<E: SpanExporter> SpanExporter for CountedSpans<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let r = self.inner.export(batch).await;
        self.count.record("traces", &r, &self.url);
        r
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

struct CountedMetrics<E> {
    inner: E,
    count: ExportCount,
    url: String,
}

impl<E: PushMetricExporter> PushMetricExporter for CountedMetrics<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let r = self.inner.export(metrics).await;
        self.count.record("metrics", &r, &self.url);
        r
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// The running export; `Telemetry::off()` when not configured (every call a no-op).
pub struct Telemetry {
    tracer: Option<SdkTracer>,
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    bridge_stop: Arc<AtomicBool>,
}

impl Telemetry {
    pub fn off() -> Telemetry {
        Telemetry {
            tracer: None,
            tracer_provider: None,
            meter_provider: None,
            bridge_stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the exporters. `service` is `service.name` (also the log
    /// prefix); `attributes` go on the resource; `registry` is exported as
    /// metrics and gets `{prefix}_otlp_exports_total`.
    pub fn start(
        config: &OtlpConfig,
        service: &'static str,
        attributes: Vec<KeyValue>,
        registry: &Registry,
        prefix: &str,
    ) -> Result<Telemetry, String> {
        let problems = config.check();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let counter = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_otlp_exports_total"),
                "OTLP exports by signal (traces, metrics) and outcome (success, failure)",
            ),
            &["signal", "outcome"],
        )
        .map_err(|e| e.to_string())?;
        registry
            .register(Box::new(counter.clone()))
            .map_err(|e| e.to_string())?;
        let count = ExportCount {
            counter,
            repeats: Arc::new(log::Repeats::default()),
            service,
        };
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .with_attributes(attributes)
            .build();
        let headers = config.all_headers();
        let mut t = Telemetry::off();
        if config.traces {
            let url = config.url("traces");
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(&url)
                .with_headers(headers.clone())
                .with_timeout(config.timeout)
                .build()
                .map_err(|e| format!("OTLP traces exporter: {e}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(CountedSpans {
                    inner: exporter,
                    count: count.clone(),
                    url,
                })
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    config.sample_ratio,
                ))))
                .with_resource(resource.clone())
                .build();
            t.tracer = Some(provider.tracer("driftwatch"));
            t.tracer_provider = Some(provider);
        }
        if config.metrics {
            let url = config.url("metrics");
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_endpoint(&url)
                .with_headers(headers)
                .with_timeout(config.timeout)
                .build()
                .map_err(|e| format!("OTLP metrics exporter: {e}"))?;
            let reader = PeriodicReader::builder(CountedMetrics {
                inner: exporter,
                count,
                url,
            })
            .with_interval(config.metrics_interval)
            .build();
            let provider = SdkMeterProvider::builder()
                .with_reader(reader)
                .with_resource(resource)
                .build();
            bridge(
                provider.meter("driftwatch"),
                registry.clone(),
                t.bridge_stop.clone(),
            );
            t.meter_provider = Some(provider);
        }
        Ok(t)
    }

    pub fn tracing(&self) -> bool {
        self.tracer.is_some()
    }

    /// Records a finished span. `traceparent` (W3C) makes it a child of the
    /// caller's span; `error` marks it failed. Its ids, for log lines about
    /// the same work; `None` when not tracing.
    #[allow(clippy::too_many_arguments)]
    pub fn span(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        kind: SpanKind,
        traceparent: Option<&str>,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
        error: Option<String>,
    ) -> Option<SpanIds> {
        let tracer = self.tracer.as_ref()?;
        let parent = match traceparent {
            Some(tp) => {
                let carrier: HashMap<String, String> =
                    HashMap::from([("traceparent".to_string(), tp.to_string())]);
                TraceContextPropagator::new().extract(&carrier)
            }
            None => opentelemetry::Context::new(),
        };
        let mut span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        if let Some(e) = error {
            span.set_status(Status::error(e));
        }
        let context = span.span_context();
        let ids = SpanIds {
            trace_id: context.trace_id().to_string(),
            span_id: context.span_id().to_string(),
        };
        span.end_with_timestamp(end);
        Some(ids)
    }

    /// Exports what is pending (spans, a last metrics reading) and stops.
    pub fn shutdown(&self) {
        self.bridge_stop.store(true, Ordering::Relaxed);
        if let Some(p) = &self.tracer_provider {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
        if let Some(p) = &self.meter_provider {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

/// The registry read at most once a second, shared by the instruments' callbacks.
struct Snapshot {
    registry: Registry,
    at: Mutex<(Option<Instant>, Arc<Vec<prometheus::proto::MetricFamily>>)>,
}

impl Snapshot {
    fn families(&self) -> Arc<Vec<prometheus::proto::MetricFamily>> {
        let mut g = self.at.lock().unwrap_or_else(|p| p.into_inner());
        if g.0.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            *g = (Some(Instant::now()), Arc::new(self.registry.gather()));
        }
        g.1.clone()
    }
}

fn attributes(m: &prometheus::proto::Metric) -> Vec<KeyValue> {
    m.get_label()
        .iter()
        .map(|l| KeyValue::new(l.name().to_string(), l.value().to_string()))
        .collect()
}

/// Registers an observable instrument for each metric family of the
/// registry, checking for new families (series appear on first use) every
/// few seconds.
fn bridge(meter: Meter, registry: Registry, stop: Arc<AtomicBool>) {
    let snapshot = Arc::new(Snapshot {
        registry,
        at: Mutex::new((None, Arc::new(Vec::new()))),
    });
    let spawned = std::thread::Builder::new()
        .name("otlp-metrics".into())
        .spawn(move || {
            let mut known: HashSet<String> = HashSet::new();
            while !stop.load(Ordering::Relaxed) {
                for family in snapshot.families().iter() {
                    let name = family.name().to_string();
                    if known.insert(name.clone()) {
                        register(&meter, &snapshot, family, &name);
                    }
                }
                for _ in 0..20 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("OTLP metrics: cannot start the registry reader: {e}");
    }
}

fn register(
    meter: &Meter,
    snapshot: &Arc<Snapshot>,
    family: &prometheus::proto::MetricFamily,
    name: &str,
) {
    let help = family.help().to_string();
    let of = |s: &Arc<Snapshot>, name: &str| {
        let s = s.clone();
        let name = name.to_string();
        move || -> Vec<prometheus::proto::Metric> {
            s.families()
                .iter()
                .find(|f| f.name() == name)
                .map(|f| f.get_metric().to_vec())
                .unwrap_or_default()
        }
    };
    match family.get_field_type() {
        MetricType::COUNTER => {
            let read = of(snapshot, name);
            meter
                .f64_observable_counter(name.to_string())
                .with_description(help)
                .with_callback(move |o| {
                    for m in read() {
                        o.observe(m.get_counter().get_value(), &attributes(&m));
                    }
                })
                .build();
        }
        MetricType::GAUGE => {
            let read = of(snapshot, name);
            meter
                .f64_observable_gauge(name.to_string())
                .with_description(help)
                .with_callback(move |o| {
                    for m in read() {
                        o.observe(m.get_gauge().get_value(), &attributes(&m));
                    }
                })
                .build();
        }
        MetricType::HISTOGRAM => {
            type Part = fn(&prometheus::proto::Histogram) -> f64;
            let parts: [(&str, Part); 2] = [
                ("count", |h| h.get_sample_count() as f64),
                ("sum", |h| h.get_sample_sum()),
            ];
            for (part, value) in parts {
                let read = of(snapshot, name);
                meter
                    .f64_observable_counter(format!("{name}_{part}"))
                    .with_description(format!("{help} ({part})"))
                    .with_callback(move |o| {
                        for m in read() {
                            o.observe(value(m.get_histogram()), &attributes(&m));
                        }
                    })
                    .build();
            }
        }
        _ => {}
    }
}

/// Registers a metric built from a fixed definition in `registry` (both
/// binaries register theirs this way); a bad definition or a second
/// registration is a programming error, caught by every test run.
pub fn register_metric<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let m = metric.expect("valid metric definition");
    registry
        .register(Box::new(m.clone()))
        .expect("metric registered once");
    m
}

/// The Prometheus text exposition of every metric in `registry`.
pub fn render_metrics(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
