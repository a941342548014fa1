//! The proxy through hyper: every request when the fast path is off, and
//! the rest of a connection the fast path hands over (chunked or `Expect`
//! requests, upgrades, HTTP/1.0, the tap's endpoints, mirror routes).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{call_upstream, response_too_large, upstream_target, Proxied, State, Trace};
use crate::adapters::{is_inference, Form};
use crate::config::Mode;
use crate::http::{json_error, read_limited, set_request_id, strip_hop_by_hop, Body, BoxError};
use crate::observe::{now_rfc3339, Answered};
use crate::tap;

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
        return Ok(tap::sinks(&state.tap, rest.to_string(), req).await);
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
        Mode::Mirror => tap::mirror(&state.tap, mi, &id, req).await,
    };
    set_request_id(resp.headers_mut(), &id);
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
    if !m.proxied() {
        return json_error(StatusCode::BAD_GATEWAY, "no upstream configured");
    }
    let timestamp = now_rfc3339();
    let (mut parts, body) = req.into_parts();
    let inference = is_inference(m.cfg.protocol, parts.method.as_str(), parts.uri.path());
    let form = Form::http(&parts.headers);
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
            // Bad chunks, or a body cut short: nothing is forwarded.
            state.metrics.refuse("malformed");
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
            );
        }
    };
    if request.is_none() {
        state
            .metrics
            .unparsed
            .with_label_values(&[name, "request", "too_large"])
            .inc();
    }
    let arm = m.split.as_ref().map(|s| {
        let headers = &parts.headers;
        s.pick(
            |n| headers.get(n).and_then(|v| v.to_str().ok()),
            request.as_deref(),
            id,
        )
    });
    let Some(upstream) = m.upstream_for(arm) else {
        return json_error(StatusCode::BAD_GATEWAY, "no upstream configured");
    };
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
    set_request_id(&mut parts.headers, id);
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
                Some(body) => Some(Ok(Answered {
                    status,
                    body,
                    form: Form::http(&parts.headers),
                })),
                None => Some(Err(response_too_large(state, name))),
            };
            (Response::from_parts(parts, body), answer)
        }
        Err(e) => {
            let why = e.to_string();
            (json_error(e.status(), &why), Some(Err(why)))
        }
    };
    let mut resp = resp;
    if let Some(name) = m.arm_name(arm) {
        if let Ok(v) = hyper::header::HeaderValue::from_str(name) {
            resp.headers_mut().insert("x-driftwatch-arm", v);
        }
    }
    state.proxied(Proxied {
        mi,
        arm,
        id,
        timestamp,
        inference,
        request,
        form,
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

/// Serves one client connection through hyper: every connection when the
/// fast path is off, and the rest of a connection the fast path hands over
/// (`read_already`: the bytes it read, which hyper reads first).
pub async fn serve_hyper<I>(
    state: Arc<State>,
    client: Upstream,
    io: I,
    read_already: Bytes,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = state.config.http;
    // gRPC clients open cleartext HTTP/2 with its preface.
    let mut io = io;
    let read_already = if read_already.is_empty() {
        super::grpc::first_bytes(&mut io, limits.header_timeout).await
    } else {
        read_already
    };
    if super::grpc::is_preface(&read_already) {
        return super::grpc::serve(state, io, read_already, watcher).await;
    }
    let metrics = state.metrics.clone();
    let svc = hyper::service::service_fn(move |req| handle(state.clone(), client.clone(), req));
    let (io, mid_request) = driftwatch_telemetry::conn::Tracked::with_prefix(io, read_already);
    let conn = server_http1(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        count_cut(
            &metrics,
            &e,
            mid_request.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
}

/// hyper's HTTP/1.1 server with the agent's bounds: the head within
/// `header_timeout` (from the end of the previous response) and no
/// larger than the lean path's (`MAX_HEAD`, else 431).
pub fn server_http1(header_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(super::http1::MAX_HEAD);
    b
}

/// Counts a connection hyper cut for its head: too slow (not an idle
/// keep-alive connection closed: `mid_request` tells) or too large.
pub fn count_cut(metrics: &crate::metrics::Metrics, e: &hyper::Error, mid_request: bool) {
    if e.is_timeout() && mid_request {
        metrics.refuse("header_timeout");
    } else if e.is_parse_too_large() {
        metrics.refuse("header_too_large");
    } else if e.is_parse() {
        // Malformed framing (hyper answered 400 and closed).
        metrics.refuse("malformed");
    }
}
