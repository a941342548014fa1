//! The reverse proxy in front of the champion: what its two paths share.
//! Ordinary HTTP/1.1 requests take the lean fast path (`fast`, with its
//! message framing in `http1` and `chunked`), everything else goes
//! through hyper (`hyper`), which also hands `/_driftwatch/` and mirror
//! traffic to the tap. Both route a request to its model, find its
//! request id, call the champion within `upstream_timeout`, and record the
//! answer the same way (`State::proxied`): the champion's latency, the
//! latency the agent added, the observation, and the span. The champion's answer goes back
//! before anything is parsed.

pub mod chunked;
pub mod fast;
pub mod grpc;
pub mod http1;
pub mod hyper;
pub mod split;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::hyper::{StatusCode, Uri};
use bytes::Bytes;
use driftwatch_telemetry::log::Repeats;
use driftwatch_telemetry::{throttled, SpanIds, Telemetry};

use crate::adapters::Form;
use crate::config::{Config, Mode, Model};
use crate::metrics::Metrics;
use crate::observe::{Answered, Observation, Observer};
use crate::tap::Tap;

/// A configured model as the proxy routes it, with its upstream parsed.
pub struct Target {
    pub cfg: Model,
    pub(crate) upstream: Option<Uri>,
    pub(crate) grpc_upstream: Option<Uri>,
    /// Experiment arms, each with its own upstream (instead of `upstream`).
    pub(crate) split: Option<split::Split>,
    /// Its first slot in the fast path's connection pool (one per upstream).
    pub(crate) slot: usize,
}

impl Target {
    fn new(cfg: Model) -> Result<Target, ProxyError> {
        let parse = |url: &Option<String>| -> Result<Option<Uri>, ProxyError> {
            let Some(u) = url else { return Ok(None) };
            u.parse::<Uri>()
                .ok()
                .filter(|u| u.scheme_str() == Some("http") && u.authority().is_some())
                .map(Some)
                .ok_or_else(|| ProxyError::Upstream {
                    model: cfg.name.clone(),
                    url: u.clone(),
                })
        };
        let upstream = parse(&cfg.upstream)?;
        let grpc_upstream = parse(&cfg.grpc_upstream)?;
        let split =
            match cfg.arms.is_empty() {
                true => None,
                false => Some(split::Split::new(&cfg.arms, cfg.arm_key.clone()).map_err(
                    |url| ProxyError::Upstream {
                        model: cfg.name.clone(),
                        url,
                    },
                )?),
            };
        Ok(Target {
            cfg,
            upstream,
            grpc_upstream,
            split,
            slot: 0,
        })
    }

    /// Whether its HTTP traffic is proxied to an upstream (one, or arms).
    pub(crate) fn proxied(&self) -> bool {
        self.upstream.is_some() || self.split.is_some()
    }

    /// The upstream of a request sent to `arm` (`None`: the model's own).
    pub(crate) fn upstream_for(&self, arm: Option<usize>) -> Option<&Uri> {
        match (arm, &self.split) {
            (Some(i), Some(s)) => s.arms.get(i).map(|a| &a.upstream),
            _ => self.upstream.as_ref(),
        }
    }

    /// The arm's name, for the answer's header and the event.
    pub(crate) fn arm_name(&self, arm: Option<usize>) -> Option<&str> {
        let (i, s) = (arm?, self.split.as_ref()?);
        s.arms.get(i).map(|a| a.name.as_str())
    }

    /// Connection-pool slots it uses: one per upstream.
    fn slots(&self) -> usize {
        self.split.as_ref().map_or(1, |s| s.arms.len())
    }

    /// Whether gRPC calls may go to this model: proxied to its
    /// `grpc_upstream`, or KServe v2 copies in mirror mode.
    pub(crate) fn takes_grpc(&self) -> bool {
        match self.cfg.mode {
            Mode::Proxy => self.grpc_upstream.is_some(),
            Mode::Mirror => self.cfg.protocol == crate::config::Protocol::KserveV2,
        }
    }
}

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("model {model}: upstream {url:?} is not an http://host:port URL")]
    Upstream { model: String, url: String },
}

struct ModelMetrics {
    upstream_latency: prometheus::Histogram,
    added_latency: prometheus::Histogram,
    ok: prometheus::IntCounter,
}

/// Everything the traffic threads share.
pub struct State {
    pub config: Config,
    pub models: Vec<Target>,
    pub metrics: Arc<Metrics>,
    /// Each model's latency histograms and count of 200s, looked up once.
    per_model: Vec<ModelMetrics>,
    /// Where seen inferences go to become events.
    pub observer: Observer,
    /// Mirror and KServe logger traffic.
    pub tap: Arc<Tap>,
    ids: AtomicU64,
    /// Request spans (OTLP), when configured.
    pub telemetry: Telemetry,
    /// Champion failures logged at most once a minute per model and cause.
    repeats: Repeats,
    /// The models that take gRPC (`Target::takes_grpc`), in order.
    pub(crate) grpc_models: Vec<usize>,
    /// Their largest `max_body_bytes`: how much of a `ModelInfer`
    /// message is read before its model is known.
    pub(crate) grpc_max_body: usize,
}

impl State {
    /// The proxy's state for the configured models; an upstream that is
    /// not an `http://host:port` URL is refused.
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        observer: Observer,
        tap: Arc<Tap>,
        telemetry: Telemetry,
    ) -> Result<Arc<State>, ProxyError> {
        let mut models = config
            .models
            .iter()
            .cloned()
            .map(Target::new)
            .collect::<Result<Vec<_>, _>>()?;
        let mut slot = 0;
        for m in &mut models {
            m.slot = slot;
            slot += m.slots();
        }
        let per_model = models
            .iter()
            .map(|m| {
                let name = m.cfg.name.as_str();
                ModelMetrics {
                    upstream_latency: metrics.upstream_latency.with_label_values(&[name]),
                    added_latency: metrics.added_latency.with_label_values(&[name]),
                    ok: metrics.requests.with_label_values(&[name, "200"]),
                }
            })
            .collect();
        let grpc_models: Vec<usize> = (0..models.len())
            .filter(|&i| models[i].takes_grpc())
            .collect();
        let grpc_max_body = grpc_models
            .iter()
            .map(|&i| models[i].cfg.max_body_bytes)
            .max()
            .unwrap_or(0);
        Ok(Arc::new(State {
            grpc_models,
            grpc_max_body,
            config,
            models,
            per_model,
            metrics,
            observer,
            tap,
            ids: AtomicU64::new(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64),
            telemetry,
            repeats: Repeats::default(),
        }))
    }

    /// A fresh request id: 32 hex digits, the first 12 the milliseconds
    /// since 1970 (as a UUIDv7 begins), the other 20 a counter scrambled by
    /// splitmix64. Ids made in time order are stored in key order by the
    /// collector's index (its pages written once each, not one per id).
    fn new_id(&self) -> String {
        let mut z = self.ids.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        let mut mix = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        let ms = chrono::Utc::now().timestamp_millis().max(0) as u64 & 0xffff_ffff_ffff;
        format!("{ms:012x}{:016x}{:04x}", mix(), mix() & 0xffff)
    }

    /// The request id: `x-request-id`, the trace and parent ids of a
    /// `traceparent`, the configured header, or a new one. `header` looks
    /// a request header up by name.
    pub(crate) fn request_id<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h str>,
        model: &Model,
    ) -> String {
        let get = |name: &str| {
            header(name)
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= 200)
        };
        if let Some(id) = get("x-request-id") {
            return id.to_string();
        }
        if let Some(tp) = get("traceparent") {
            let parts: Vec<&str> = tp.split('-').collect();
            if parts.len() == 4 && parts[1].len() == 32 && parts[2].len() == 16 {
                return format!("{}-{}", parts[1], parts[2]);
            }
        }
        if let Some(id) = model.request_id_header.as_deref().and_then(get) {
            return id.to_string();
        }
        self.new_id()
    }

    /// Connection-pool slots over every model's upstreams.
    pub fn pool_slots(&self) -> usize {
        self.models.iter().map(Target::slots).sum()
    }

    /// The model whose `host` or longest `route` prefix matches.
    pub(crate) fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(|h| h.split(':').next().unwrap_or(h));
        if let Some(i) = self
            .models
            .iter()
            .position(|m| m.cfg.host.is_some() && m.cfg.host.as_deref() == host)
        {
            return Some(i);
        }
        self.models
            .iter()
            .enumerate()
            .filter(|(_, m)| m.cfg.host.is_none() && path.starts_with(m.cfg.route.as_str()))
            .max_by_key(|(_, m)| m.cfg.route.len())
            .map(|(i, _)| i)
    }

    /// Counts a request by its model (`None`: routed to none) and the
    /// status the client got.
    pub(crate) fn count(&self, model: Option<usize>, status: StatusCode) {
        match model {
            Some(mi) if status == StatusCode::OK => self.per_model[mi].ok.inc(),
            _ => {
                let name = model.map_or("", |mi| self.models[mi].cfg.name.as_str());
                self.metrics.count_request(name, status.as_str());
            }
        }
    }

    /// What both proxy paths record of a request once it is answered: the
    /// champion's latency, the latency the agent added, the observation
    /// (when the request body was read) and, when tracing, the span.
    pub(crate) fn proxied(&self, p: Proxied<'_>) {
        let metrics = &self.per_model[p.mi];
        metrics
            .upstream_latency
            .observe(p.upstream_time.as_secs_f64());
        let name = self.models[p.mi].cfg.name.as_str();
        let ids = p.trace.and_then(|trace| {
            request_span(self, name, p.id, trace, p.status, p.upstream, p.target)
        });
        if p.status == StatusCode::BAD_GATEWAY || p.status == StatusCode::GATEWAY_TIMEOUT {
            if let Some(Err(why)) = &p.answer {
                throttled!(
                    self.repeats,
                    &format!("{name} {}", p.status.as_u16()),
                    tracing::Level::WARN,
                    {
                        model = name,
                        request_id = p.id,
                        status = p.status.as_u16(),
                        trace_id = ids.as_ref().map(|i| i.trace_id.as_str()),
                        span_id = ids.as_ref().map(|i| i.span_id.as_str()),
                    },
                    "model {name}: the champion gave no answer, the client got {}: {why}",
                    p.status.as_u16()
                );
            }
        }
        if !p.inference {
            // Health, readiness, metadata: proxied, never parsed.
            self.metrics.passthrough.with_label_values(&[name]).inc();
        } else if let Some(request) = p.request {
            self.observer.observe(Observation {
                model: p.mi,
                request_id: p.id.to_string(),
                timestamp: p.timestamp,
                request,
                form: p.form,
                response: p.answer,
                champion_ms: Some(p.upstream_time.as_secs_f64() * 1000.0),
                arm: p.arm,
            });
        }
        let added = p.started.elapsed().saturating_sub(p.upstream_time);
        metrics.added_latency.observe(added.as_secs_f64());
    }
}

/// One proxied request, answered (see `State::proxied`).
pub(crate) struct Proxied<'a> {
    pub mi: usize,
    /// The experiment arm that served it.
    pub arm: Option<usize>,
    pub id: &'a str,
    pub timestamp: String,
    /// An inference (observed) or a call that only passes through
    /// (`adapters::is_inference`).
    pub inference: bool,
    /// The request body, when it was read whole.
    pub request: Option<Bytes>,
    /// How the request is framed.
    pub form: Form,
    /// The champion's answer, or why there is none.
    pub answer: Option<Result<Answered, String>>,
    pub upstream_time: Duration,
    /// When the agent had the request's head.
    pub started: Instant,
    pub status: StatusCode,
    pub trace: Option<Trace>,
    /// The upstream and the path and query the request had (for the span).
    pub upstream: &'a Uri,
    pub target: &'a str,
}

/// A request's trace context, taken only when spans are exported.
pub(crate) struct Trace {
    parent: Option<String>,
    path: String,
    method: String,
    start: std::time::SystemTime,
}

impl Trace {
    /// The caller's `traceparent`, the request's path and method, and the
    /// wall-clock time of `started`; `None` unless tracing.
    pub(crate) fn start(
        state: &State,
        started: Instant,
        parent: Option<&str>,
        path: &str,
        method: &str,
    ) -> Option<Trace> {
        state.telemetry.tracing().then(|| Trace {
            parent: parent.map(str::to_string),
            path: path.to_string(),
            method: method.to_string(),
            start: std::time::SystemTime::now() - started.elapsed(),
        })
    }
}

/// Runs a call to the champion within `timeout`: its result, or the status
/// the client gets instead (502 when the call failed, 504 when it did not
/// answer in time) and why.
/// Why the champion gave no answer; the client gets its status.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} failed: {cause}")]
    Failed { upstream: String, cause: String },
    #[error("upstream {upstream} did not answer within {ms} ms")]
    Timeout { upstream: String, ms: u128 },
}

impl UpstreamError {
    /// 502 when the call failed, 504 when it did not answer in time.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Failed { .. } => StatusCode::BAD_GATEWAY,
            UpstreamError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// Runs a call to the champion within `timeout`: its result, or why not.
pub(crate) async fn call_upstream<T, E: std::fmt::Display>(
    upstream: &Uri,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, UpstreamError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(UpstreamError::Failed {
            upstream: upstream.to_string(),
            cause: e.to_string(),
        }),
        Err(_) => Err(UpstreamError::Timeout {
            upstream: upstream.to_string(),
            ms: timeout.as_millis(),
        }),
    }
}

pub(crate) fn upstream_target(upstream: &Uri, path_and_query: &str) -> String {
    format!(
        "{}://{}{}{path_and_query}",
        upstream.scheme_str().unwrap_or("http"),
        upstream.authority().map_or("", |a| a.as_str()),
        upstream_base(upstream)
    )
}

/// The upstream URL's path, prefixed to every request's path.
pub(crate) fn upstream_base(upstream: &Uri) -> &str {
    upstream.path().trim_end_matches('/')
}

/// Counts a champion response too large to read; why it has no event output.
pub(crate) fn response_too_large(state: &State, model: &str) -> String {
    state
        .metrics
        .unparsed
        .with_label_values(&[model, "response", "too_large"])
        .inc();
    "the response was larger than max_body_bytes".to_string()
}

/// The span of one proxied request, a child of the caller's `traceparent`;
/// its ids.
fn request_span(
    state: &State,
    model: &str,
    id: &str,
    trace: Trace,
    status: StatusCode,
    upstream: &Uri,
    path_and_query: &str,
) -> Option<SpanIds> {
    let target = upstream_target(upstream, path_and_query);
    use driftwatch_telemetry::{KeyValue, SpanKind};
    let Trace {
        parent,
        path,
        method,
        start,
    } = trace;
    let error = (status.is_server_error()).then(|| format!("HTTP {}", status.as_u16()));
    state.telemetry.span(
        format!("proxy {model}"),
        SpanKind::Server,
        parent.as_deref(),
        start,
        std::time::SystemTime::now(),
        vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
            KeyValue::new("url.path", path),
            KeyValue::new("driftwatch.upstream", target),
            KeyValue::new("driftwatch.model", model.to_string()),
            KeyValue::new("driftwatch.request_id", id.to_string()),
        ],
        error,
    )
}
