//! The agent's HTTP side: the reverse proxy in front of the champion (tees
//! request and response), the mirror endpoint (Istio/Envoy mirrored copies,
//! answered at once, joined with champion responses posted to
//! `/_driftwatch/responses/{model}` when available), the KServe inference
//! logger sink (`/_driftwatch/kserve[/{model}]`, request and response
//! CloudEvents joined by `ce-id`), and the admin endpoints. The champion's
//! answer goes back before anything is parsed: observations travel to
//! `observe` through a bounded channel, dropped (counted) when it is full;
//! the observer collects them every few milliseconds, so that handing one
//! over never costs a request a wakeup of another thread.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use driftwatch_protocol::{Event, Output};
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::adapter::{parse_request, parse_response};
use crate::config::{Config, Mode, Model};
use crate::metrics::Metrics;
use crate::shadow::{columns, Scorer};
use crate::ship::Shipper;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Observations waiting to be parsed, at most.
const OBSERVER_QUEUE: usize = 16_384;
/// How often the observer collects observations.
const OBSERVER_TICK: Duration = Duration::from_millis(5);
/// Mirror and KServe logger halves waiting for their other half, at most.
const MAX_PENDING_JOINS: usize = 100_000;

pub struct ModelRt {
    pub cfg: Model,
    pub scorer: Option<Scorer>,
    pub(crate) upstream: Option<Uri>,
}

/// One seen inference, before parsing.
struct Observation {
    model: usize,
    request_id: String,
    timestamp: String,
    request: Bytes,
    /// The champion's answer: status and body, or why there is none.
    response: Option<Result<(u16, Bytes), String>>,
    champion_ms: Option<f64>,
}

struct ModelMetrics {
    upstream_latency: prometheus::Histogram,
    added_latency: prometheus::Histogram,
    ok: prometheus::IntCounter,
}

#[derive(Default)]
struct Half {
    request: Option<Bytes>,
    response: Option<Bytes>,
    timestamp: String,
    since: Option<Instant>,
}

pub struct State {
    pub config: Config,
    pub models: Vec<ModelRt>,
    pub metrics: Arc<Metrics>,
    /// Each model's latency histograms and count of 200s, looked up once.
    per_model: Vec<ModelMetrics>,
    pub shipper: Arc<Shipper>,
    observe: std::sync::mpsc::SyncSender<Observation>,
    joins: Mutex<HashMap<(usize, String), Half>>,
    node: Option<String>,
    ids: AtomicU64,
    /// Request spans (OTLP), when configured.
    pub telemetry: driftwatch_telemetry::Telemetry,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The JSON body of an error the agent answers itself.
pub(crate) fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(full(error_body(message)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a header belongs to one connection only, never forwarded.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A body read up to `max` bytes: all of it, or (when larger) a body that
/// replays what was read and streams the rest, unread.
async fn read_limited(body: Incoming, max: usize) -> Result<(Body, Option<Bytes>), hyper::Error> {
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut size = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len();
        chunks.push(data);
        if size > max {
            let prefix = futures_util::stream::iter(
                chunks
                    .into_iter()
                    .map(|c| Ok::<_, BoxError>(Frame::data(c))),
            );
            let rest = BodyStream::new(body).map(|f| f.map_err(|e| Box::new(e) as BoxError));
            return Ok((BodyExt::boxed(StreamBody::new(prefix.chain(rest))), None));
        }
    }
    let bytes = if chunks.len() == 1 {
        chunks.pop().unwrap_or_default()
    } else {
        let mut all = Vec::with_capacity(size);
        chunks.iter().for_each(|c| all.extend_from_slice(c));
        Bytes::from(all)
    };
    Ok((full(bytes.clone()), Some(bytes)))
}

impl State {
    pub fn new(
        config: Config,
        models: Vec<ModelRt>,
        metrics: Arc<Metrics>,
        shipper: Arc<Shipper>,
        telemetry: driftwatch_telemetry::Telemetry,
        background: &tokio::runtime::Handle,
    ) -> Arc<State> {
        let (tx, rx) = std::sync::mpsc::sync_channel(OBSERVER_QUEUE);
        let node = config.node_name();
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
        let state = Arc::new(State {
            config,
            models,
            per_model,
            metrics,
            shipper,
            observe: tx,
            joins: Mutex::new(HashMap::new()),
            node,
            ids: AtomicU64::new(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64),
            telemetry,
        });
        background.spawn(observer(state.clone(), rx));
        background.spawn(sweep_joins(state.clone()));
        state
    }

    /// A fresh request id: 32 hex digits from a counter scrambled by splitmix64.
    fn new_id(&self) -> String {
        let mut z = self.ids.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        let mut mix = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        format!("{:016x}{:016x}", mix(), mix())
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

    fn observe(&self, o: Observation) {
        if self.observe.try_send(o).is_err() {
            self.metrics
                .events_dropped
                .with_label_values(&["observer_busy"])
                .inc();
        }
    }

    /// Counts a request by its model (`None`: routed to none) and the
    /// status the client got.
    pub(crate) fn count(&self, model: Option<usize>, status: StatusCode) {
        match model {
            Some(mi) if status == StatusCode::OK => self.per_model[mi].ok.inc(),
            _ => {
                let name = model.map_or("", |mi| self.models[mi].cfg.name.as_str());
                self.metrics
                    .requests
                    .with_label_values(&[name, status.as_str()])
                    .inc();
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
        if let Some(request) = p.request {
            self.observe(Observation {
                model: p.mi,
                request_id: p.id.to_string(),
                timestamp: p.timestamp,
                request,
                response: p.answer,
                champion_ms: Some(p.upstream_time.as_secs_f64() * 1000.0),
            });
        }
        let added = p.started.elapsed().saturating_sub(p.upstream_time);
        metrics.added_latency.observe(added.as_secs_f64());
        if let Some(trace) = p.trace {
            let name = self.models[p.mi].cfg.name.as_str();
            request_span(self, name, p.id, trace, p.status, p.upstream, p.target);
        }
    }
}

/// One proxied request, answered (see `State::proxied`).
pub(crate) struct Proxied<'a> {
    pub mi: usize,
    pub id: &'a str,
    pub timestamp: String,
    /// The request body, when it was read whole.
    pub request: Option<Bytes>,
    /// The champion's status and body, or why there is none.
    pub answer: Option<Result<(u16, Bytes), String>>,
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
pub(crate) async fn call_upstream<T, E: std::fmt::Display>(
    upstream: &Uri,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, (StatusCode, String)> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err((
            StatusCode::BAD_GATEWAY,
            format!("upstream {upstream} failed: {e}"),
        )),
        Err(_) => Err((
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "upstream {upstream} did not answer within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

/// The URL a request for `path_and_query` goes to on `upstream`.
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

pub fn model_runtime(cfg: Model, scorer: Option<Scorer>) -> Result<ModelRt, String> {
    let upstream = match &cfg.upstream {
        Some(u) => Some(
            u.parse::<Uri>()
                .ok()
                .filter(|u| u.scheme_str() == Some("http") && u.authority().is_some())
                .ok_or_else(|| {
                    format!(
                        "model {}: upstream {u:?} is not an http://host:port URL",
                        cfg.name
                    )
                })?,
        ),
        None => None,
    };
    Ok(ModelRt {
        cfg,
        scorer,
        upstream,
    })
}

/// The client of the champions, one per traffic thread: its pooled
/// keep-alive connections live on that thread's runtime.
pub type Upstream = Client<HttpConnector, Body>;

pub fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// Every request on the traffic listener.
pub async fn handle(
    state: Arc<State>,
    client: Upstream,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/_driftwatch/") {
        return Ok(sinks(&state, rest.to_string(), req).await);
    }
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .or_else(|| req.uri().host().map(String::from));
    let Some(mi) = state.route(host.as_deref(), &path) else {
        state.count(None, StatusCode::NOT_FOUND);
        return Ok(json_error(
            StatusCode::NOT_FOUND,
            &format!("no model is routed at {path}"),
        ));
    };
    let m = &state.models[mi];
    let headers = req.headers();
    let id = state.request_id(|n| headers.get(n).and_then(|v| v.to_str().ok()), &m.cfg);
    let mut resp = match m.cfg.mode {
        Mode::Proxy => proxy(&state, &client, mi, &id, req).await,
        Mode::Mirror => mirror(&state, mi, &id, req).await,
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    state.count(Some(mi), resp.status());
    Ok(resp)
}

async fn proxy(
    state: &Arc<State>,
    client: &Upstream,
    mi: usize,
    id: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let m = &state.models[mi];
    let name = m.cfg.name.as_str();
    let Some(upstream) = &m.upstream else {
        return json_error(StatusCode::BAD_GATEWAY, "no upstream configured");
    };
    let timestamp = now_rfc3339();
    let (mut parts, body) = req.into_parts();
    let trace = Trace::start(
        state,
        started,
        parts
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
        parts.uri.path(),
        parts.method.as_str(),
    );
    let (body, request) = match read_limited(body, m.cfg.max_body_bytes).await {
        Ok(x) => x,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
            )
        }
    };
    if request.is_none() {
        state
            .metrics
            .unparsed
            .with_label_values(&[name, "request", "too_large"])
            .inc();
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let target = upstream_target(upstream, &path_and_query);
    match target.parse::<Uri>() {
        Ok(u) => parts.uri = u,
        Err(e) => {
            return json_error(
                StatusCode::BAD_GATEWAY,
                &format!("bad upstream URL {target}: {e}"),
            )
        }
    }
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(hyper::header::HOST);
    if let Ok(v) = HeaderValue::from_str(id) {
        parts
            .headers
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    let sent = Instant::now();
    let call = async {
        let resp = client.request(Request::from_parts(parts, body)).await?;
        let (parts, body) = resp.into_parts();
        let read = read_limited(body, m.cfg.max_body_bytes).await?;
        Ok::<_, BoxError>((parts, read))
    };
    let outcome = call_upstream(upstream, m.cfg.upstream_timeout, call).await;
    let upstream_time = sent.elapsed();
    let (resp, answer) = match outcome {
        Ok((mut parts, (body, bytes))) => {
            strip_hop_by_hop(&mut parts.headers);
            let status = parts.status.as_u16();
            let answer = match bytes {
                Some(b) => Some(Ok((status, b))),
                None => Some(Err(response_too_large(state, name))),
            };
            (Response::from_parts(parts, body), answer)
        }
        Err((status, why)) => (json_error(status, &why), Some(Err(why))),
    };
    state.proxied(Proxied {
        mi,
        id,
        timestamp,
        request,
        answer,
        upstream_time,
        started,
        status: resp.status(),
        trace,
        upstream,
        target: &path_and_query,
    });
    resp
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

/// The span of one proxied request, a child of the caller's `traceparent`.
fn request_span(
    state: &State,
    model: &str,
    id: &str,
    trace: Trace,
    status: StatusCode,
    upstream: &Uri,
    path_and_query: &str,
) {
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
    );
}

/// A mirrored copy: answered at once, joined with the champion's response
/// when one is posted within `join_wait`.
async fn mirror(state: &Arc<State>, mi: usize, id: &str, req: Request<Incoming>) -> Response<Body> {
    let m = &state.models[mi];
    match read_limited(req.into_body(), m.cfg.max_body_bytes).await {
        Ok((_, Some(body))) => {
            join(state, mi, id, Some(body), None);
            Response::new(full("{}"))
        }
        Ok((_, None)) => {
            state
                .metrics
                .unparsed
                .with_label_values(&[&m.cfg.name, "request", "too_large"])
                .inc();
            Response::new(full("{}"))
        }
        Err(e) => json_error(
            StatusCode::BAD_REQUEST,
            &format!("cannot read the body: {e}"),
        ),
    }
}

/// Adds one half of an inference; both halves make an observation at once.
fn join(state: &Arc<State>, mi: usize, id: &str, request: Option<Bytes>, response: Option<Bytes>) {
    let mut joins = state.joins.lock().unwrap_or_else(|p| p.into_inner());
    let key = (mi, id.to_string());
    if !joins.contains_key(&key) && joins.len() >= MAX_PENDING_JOINS {
        state
            .metrics
            .events_dropped
            .with_label_values(&["unjoined"])
            .inc();
        return;
    }
    let half = joins.entry(key.clone()).or_insert_with(|| Half {
        timestamp: now_rfc3339(),
        since: Some(Instant::now()),
        ..Half::default()
    });
    if request.is_some() {
        half.request = request;
    }
    if response.is_some() {
        half.response = response;
    }
    if half.request.is_some() && half.response.is_some() {
        if let Some(h) = joins.remove(&key) {
            drop(joins);
            state.observe(Observation {
                model: mi,
                request_id: key.1,
                timestamp: h.timestamp,
                request: h.request.unwrap_or_default(),
                response: h.response.map(|b| Ok((200, b))),
                champion_ms: None,
            });
        }
    }
}

/// Halves older than their model's `join_wait`: a request alone is
/// observed without the champion's answer; a response alone is dropped.
async fn sweep_joins(state: Arc<State>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let expired: Vec<((usize, String), Half)> = {
            let mut joins = state.joins.lock().unwrap_or_else(|p| p.into_inner());
            let old: Vec<(usize, String)> = joins
                .iter()
                .filter(|((mi, _), h)| {
                    h.since
                        .is_some_and(|t| t.elapsed() >= state.models[*mi].cfg.join_wait)
                })
                .map(|(k, _)| k.clone())
                .collect();
            old.into_iter()
                .filter_map(|k| joins.remove(&k).map(|h| (k, h)))
                .collect()
        };
        for ((mi, id), h) in expired {
            match h.request {
                Some(request) => state.observe(Observation {
                    model: mi,
                    request_id: id,
                    timestamp: h.timestamp,
                    request,
                    response: h.response.map(|b| Ok((200, b))),
                    champion_ms: None,
                }),
                None => state
                    .metrics
                    .events_dropped
                    .with_label_values(&["unjoined"])
                    .inc(),
            }
        }
    }
}

/// `/_driftwatch/kserve[/{model}]` (KServe's inference logger) and
/// `/_driftwatch/responses/{model}` (champion responses for mirrored requests).
async fn sinks(state: &Arc<State>, rest: String, req: Request<Incoming>) -> Response<Body> {
    let mut parts = rest.splitn(2, '/');
    let (kind, model) = (
        parts.next().unwrap_or(""),
        parts.next().filter(|m| !m.is_empty()),
    );
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let model = model
        .map(String::from)
        .or_else(|| header("ce-inferenceservicename"))
        .or_else(|| (state.models.len() == 1).then(|| state.models[0].cfg.name.clone()));
    let Some(mi) = model
        .as_ref()
        .and_then(|m| state.models.iter().position(|x| &x.cfg.name == m))
    else {
        let why = format!(
            "unknown model {model:?}: name it in the path or the ce-inferenceservicename header"
        );
        state.count(None, StatusCode::NOT_FOUND);
        return json_error(StatusCode::NOT_FOUND, &why);
    };
    let name = state.models[mi].cfg.name.clone();
    let (id, is_response) = match kind {
        "kserve" => {
            let Some(id) = header("ce-id") else {
                state.count(Some(mi), StatusCode::BAD_REQUEST);
                return json_error(StatusCode::BAD_REQUEST, "a CloudEvent needs a ce-id header");
            };
            let ty = header("ce-type").unwrap_or_default();
            (id, ty.contains("response"))
        }
        "responses" => match header("x-request-id") {
            Some(id) => (id, true),
            None => {
                state.count(Some(mi), StatusCode::BAD_REQUEST);
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "a champion response needs an x-request-id header",
                );
            }
        },
        _ => {
            state.count(Some(mi), StatusCode::NOT_FOUND);
            return json_error(StatusCode::NOT_FOUND, "unknown /_driftwatch endpoint");
        }
    };
    let max = state.models[mi].cfg.max_body_bytes;
    let body = match read_limited(req.into_body(), max).await {
        Ok((_, Some(b))) => b,
        Ok((_, None)) => {
            let part = if is_response { "response" } else { "request" };
            state
                .metrics
                .unparsed
                .with_label_values(&[&name, part, "too_large"])
                .inc();
            state.count(Some(mi), StatusCode::PAYLOAD_TOO_LARGE);
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body larger than max_body_bytes",
            );
        }
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            )
        }
    };
    if is_response {
        join(state, mi, &id, None, Some(body));
    } else {
        join(state, mi, &id, Some(body), None);
    }
    state.count(Some(mi), StatusCode::ACCEPTED);
    let mut r = Response::new(full("{}"));
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}

/// Parses observations into events (with the shadow's outputs where it
/// keeps up) and hands them to the shipper.
async fn observer(state: Arc<State>, rx: std::sync::mpsc::Receiver<Observation>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(1024));
    let mut rng: u64 = chrono::Utc::now().timestamp_subsec_nanos() as u64 | 1;
    let mut tick = tokio::time::interval(OBSERVER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let o = match rx.try_recv() {
            Ok(o) => o,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                tick.tick().await;
                continue;
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
        };
        let rate = state.config.collector.sample_rate;
        if rate < 1.0 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if (rng % 1_000_000) as f64 / 1_000_000.0 >= rate {
                let name = &state.models[o.model].cfg.name;
                state
                    .metrics
                    .events_sampled_out
                    .with_label_values(&[name])
                    .inc();
                continue;
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let events = events(&state, o).await;
            if !events.is_empty() {
                state.shipper.push(events);
            }
            drop(permit);
        });
    }
}

async fn events(state: &State, o: Observation) -> Vec<Event> {
    let m = &state.models[o.model];
    let name = m.cfg.name.as_str();
    let unparsed = |part: &str, reason: &str| {
        state
            .metrics
            .unparsed
            .with_label_values(&[name, part, reason])
            .inc();
    };
    let mut rows = match parse_request(&m.cfg, &o.request) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => {
            unparsed("request", "no_rows");
            return Vec::new();
        }
        Err(e) => {
            unparsed(
                "request",
                if e.starts_with("not JSON") {
                    "not_json"
                } else {
                    "shape"
                },
            );
            return Vec::new();
        }
    };
    if let Some(keep) = &m.cfg.features {
        for row in &mut rows {
            row.retain(|k, _| keep.contains(k));
        }
    }
    let n = rows.len();
    let failed = |why: String| {
        vec![
            Output {
                error: Some(why),
                ..Output::default()
            };
            n
        ]
    };
    let mut champion = match o.response {
        Some(Ok((status, body))) if (200..300).contains(&status) => {
            match parse_response(&m.cfg, &body, n) {
                Ok(out) => out,
                Err(e) => {
                    unparsed(
                        "response",
                        if e.starts_with("not JSON") {
                            "not_json"
                        } else {
                            "shape"
                        },
                    );
                    failed(format!("unreadable response: {e}"))
                }
            }
        }
        Some(Ok((status, _))) => failed(format!("HTTP {status}")),
        Some(Err(why)) => failed(why),
        None => vec![Output::default(); n],
    };
    for c in &mut champion {
        c.version = m.cfg.champion_version.clone();
        c.latency_ms = o.champion_ms;
    }
    let mut shadow: Vec<Option<Output>> = vec![None; n];
    if let Some(scorer) = &m.scorer {
        let input: Vec<Vec<f32>> = rows.iter().map(|r| columns(r, &scorer.inputs)).collect();
        let gauge = state.metrics.shadow_queue_depth.with_label_values(&[name]);
        let shed = || {
            state
                .metrics
                .shadow_shed
                .with_label_values(&[name])
                .inc_by(n as u64)
        };
        match scorer.submit(input, &gauge) {
            None => shed(),
            Some(rx) => match tokio::time::timeout(scorer.timeout, rx).await {
                Ok(Ok(Ok(outs))) => shadow = outs.into_iter().map(Some).collect(),
                Ok(Ok(Err(e))) => {
                    shadow = vec![
                        Some(Output {
                            error: Some(e),
                            ..Output::default()
                        });
                        n
                    ];
                }
                _ => shed(),
            },
        }
    }
    rows.into_iter()
        .zip(champion)
        .zip(shadow)
        .enumerate()
        .map(|(i, ((features, champion), shadow))| Event {
            model: m.cfg.name.clone(),
            request_id: if n == 1 {
                o.request_id.clone()
            } else {
                format!("{}-{i}", o.request_id)
            },
            timestamp: o.timestamp.clone(),
            features,
            champion,
            shadow,
            node: state.node.clone(),
        })
        .collect()
}

/// `/metrics`, `/healthz`, `/readyz` on the admin listener.
pub async fn admin(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(full(state.metrics.render()));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        "/healthz" | "/readyz" => Response::new(full("ok\n")),
        _ => json_error(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz",
        ),
    })
}

/// Serves a traffic connection through hyper: every request when the fast
/// path is off, and the rest of a connection the fast path hands over.
pub async fn serve_hyper<I>(
    state: Arc<State>,
    client: Upstream,
    io: I,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(state.clone(), client.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    let _ = watcher.watch(conn).await;
}
