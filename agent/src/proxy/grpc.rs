//! gRPC on the traffic listener: a connection that opens with HTTP/2's
//! preface (cleartext with prior knowledge, as gRPC clients open one) is
//! served by hyper's HTTP/2 server, and each call is proxied to its
//! model's `grpc_upstream` over HTTP/2: headers, messages, trailers and
//! status pass unchanged, `x-request-id` travels in the metadata both
//! ways. `ModelInfer` is read as it passes (its request whole, up to
//! `max_body_bytes`; its answer copied as it streams back) and becomes
//! events as the HTTP forms do; every other method (health, metadata,
//! streaming calls) passes untouched and is counted as passthrough. The
//! connection may come over the listener's TLS (its handshake offers
//! HTTP/2 to gRPC clients). A model in mirror mode takes copies instead:
//! read, answered at once, and joined with the answer by the tap.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{call_upstream, upstream_target, Proxied, State, UpstreamError};
use crate::adapters::grpc::{model_name, Encoding, MODEL_INFER};
use crate::adapters::Form;
use crate::config::Mode;
use crate::http::{full, read_limited, set_request_id, strip_hop_by_hop, Body, BoxError};
use crate::observe::{now_rfc3339, Answered, Observation};
use crate::tap;

/// The HTTP/2 client of the champions' gRPC endpoints.
pub type GrpcUpstream = Client<HttpConnector, Body>;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

thread_local! {
    /// Each traffic thread's own client: its HTTP/2 connections live on
    /// that thread's runtime, so a call never wakes another thread.
    static CLIENT: GrpcUpstream = client();
}

pub fn client() -> GrpcUpstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector)
}

/// Whether a connection's first bytes are HTTP/2's preface.
pub fn is_preface(first: &[u8]) -> bool {
    first.len() >= 14 && PREFACE.starts_with(&first[..first.len().min(PREFACE.len())])
}

/// Reads a connection's first bytes until they tell HTTP/2's preface from
/// anything else (or `timeout` passes, or the peer stops): them.
pub async fn first_bytes<I: AsyncRead + Unpin>(io: &mut I, timeout: Duration) -> Bytes {
    let mut buf = BytesMut::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + timeout;
    while buf.len() < 14 && PREFACE.starts_with(&buf) {
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    buf.freeze()
}

/// Serves an HTTP/2 connection whose first bytes, `read_already`, were read.
pub async fn serve<I>(
    state: Arc<State>,
    io: I,
    read_already: Bytes,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
    let (io, _) = driftwatch_telemetry::conn::Tracked::with_prefix(io, read_already);
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(io), svc);
    let _ = watcher.watch(conn).await;
}

/// gRPC status codes the agent answers itself.
const UNAVAILABLE: u32 = 14;
const DEADLINE_EXCEEDED: u32 = 4;
const UNIMPLEMENTED: u32 = 12;
const CANCELLED: u32 = 1;

/// A `ModelInfer` request being read. One that never arrives whole is
/// counted as nginx counts it (499, model unknown), however it ends: its
/// stream failed (the client's connection was lost), or hyper dropped
/// the call because the client reset its stream. Nothing of it goes to
/// the champion.
struct Arrival<'s> {
    state: &'s State,
    whole: bool,
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        if !self.whole {
            let closed = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
            self.state.count(None, closed);
        }
    }
}

/// A trailers-only gRPC answer of the agent's own.
fn status_only(code: u32, message: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    h.insert("grpc-message", grpc_message(message));
    r
}

/// A `grpc-message` value: the text percent-encoded, as the gRPC HTTP/2
/// spec asks (every byte outside printable ASCII, and `%`).
pub fn grpc_message(message: &str) -> HeaderValue {
    let encoded: String = message
        .bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    // Printable ASCII only: always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Where a gRPC call goes: a proxied model's `grpc_upstream`, or a
/// mirror model's copies.
enum Route<'s> {
    Proxy(usize, &'s Uri),
    Mirror(usize),
}

impl Route<'_> {
    fn model(&self) -> usize {
        match self {
            Route::Proxy(mi, _) | Route::Mirror(mi) => *mi,
        }
    }
}

/// The route of a call: the model its message names, else the first
/// model that takes gRPC (the message is read for its name only when
/// more than one does).
fn route<'s>(state: &'s State, request: Option<&[u8]>, encoding: Encoding) -> Option<Route<'s>> {
    let mi = match state.grpc_models.as_slice() {
        [] => return None,
        [only] => *only,
        many => {
            let name = request
                .map(|r| model_name(r, encoding, state.grpc_max_body))
                .unwrap_or_default();
            many.iter()
                .copied()
                .find(|&i| state.models[i].cfg.name == name)
                .unwrap_or(many[0])
        }
    };
    let m = &state.models[mi];
    Some(match (m.cfg.mode, &m.grpc_upstream) {
        (Mode::Proxy, Some(upstream)) => Route::Proxy(mi, upstream),
        _ => Route::Mirror(mi),
    })
}

/// A successful unary answer of the agent's own (a mirrored call's): one
/// empty message, then `grpc-status` 0 in the trailers.
fn empty_answer() -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(0));
    let frames = [
        Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut r =
        Response::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}

/// One gRPC call on the traffic listener.
async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let infer = req.uri().path() == MODEL_INFER;
    let encoding = Encoding::of(req.headers());
    let form = Form::Grpc { encoding };
    let (mut parts, body) = req.into_parts();
    let (body, request) = if infer {
        let mut arrival = Arrival {
            state: &state,
            whole: false,
        };
        let read = read_limited(body, state.grpc_max_body).await;
        arrival.whole = read.is_ok();
        match read {
            Ok(read) => read,
            Err(e) => {
                return Ok(status_only(
                    CANCELLED,
                    &format!("the request was cut short: {e}"),
                ))
            }
        }
    } else {
        (body.map_err(|e| Box::new(e) as BoxError).boxed(), None)
    };
    let Some(route) = route(&state, request.as_deref(), encoding) else {
        state.count(None, StatusCode::NOT_IMPLEMENTED);
        return Ok(status_only(
            UNIMPLEMENTED,
            "no model of this agent takes gRPC (a grpc_upstream, or kserve-v2 copies in mirror mode)",
        ));
    };
    let mi = route.model();
    let m = &state.models[mi];
    if request.is_none() && infer {
        state
            .metrics
            .unparsed
            .with_label_values(&[&m.cfg.name, "request", "too_large"])
            .inc();
    }
    let id = state.request_id(
        |n| parts.headers.get(n).and_then(|v| v.to_str().ok()),
        &m.cfg,
    );
    let upstream = match route {
        Route::Proxy(_, upstream) => upstream.clone(),
        Route::Mirror(_) => {
            // A copy (Envoy drops the answer): read, answered at once.
            drop(body);
            tap::mirror_grpc(&state.tap, mi, &id, infer, request.map(|r| (r, form)));
            state.count(Some(mi), StatusCode::OK);
            let mut r = empty_answer();
            set_request_id(r.headers_mut(), &id);
            return Ok(r);
        }
    };
    let timestamp = now_rfc3339();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    match upstream_target(&upstream, &target).parse::<Uri>() {
        Ok(u) => parts.uri = u,
        Err(e) => return Ok(status_only(UNAVAILABLE, &format!("bad upstream URL: {e}"))),
    }
    parts.version = Version::HTTP_2;
    forwardable(&mut parts.headers, &id);
    let sent = Instant::now();
    let call = CLIENT
        .with(GrpcUpstream::clone)
        .request(Request::from_parts(parts, body));
    let outcome = call_upstream(&upstream, m.cfg.upstream_timeout, call).await;
    let upstream_time = sent.elapsed();
    // A ModelInfer call read whole is observed once its answer has passed
    // (or could not come).
    let observed = request.map(|request| Observed {
        state: state.clone(),
        mi,
        id: id.clone(),
        timestamp: timestamp.clone(),
        request,
        form,
        champion_ms: upstream_time.as_secs_f64() * 1000.0,
    });
    let (resp, status, answer) = match outcome {
        Ok(resp) => {
            let (mut rparts, rbody) = resp.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            set_request_id(&mut rparts.headers, &id);
            let status = rparts.status;
            let body = match observed {
                Some(observed) => Tee {
                    inner: rbody,
                    captured: Some(Vec::new()),
                    max: m.cfg.max_body_bytes,
                    status: grpc_status(&rparts.headers),
                    form: Form::grpc(&rparts.headers),
                    observed: Some(observed),
                }
                .boxed(),
                None => rbody.map_err(|e| Box::new(e) as BoxError).boxed(),
            };
            (Response::from_parts(rparts, body), status, None)
        }
        Err(e) => {
            let code = match e {
                UpstreamError::Timeout { .. } => DEADLINE_EXCEEDED,
                UpstreamError::Failed { .. } => UNAVAILABLE,
            };
            let why = e.to_string();
            if let Some(observed) = observed {
                observed.observe(Err(why.clone()));
            }
            (status_only(code, &why), e.status(), Some(Err(why)))
        }
    };
    state.proxied(Proxied {
        mi,
        arm: None,
        id: &id,
        timestamp,
        inference: infer,
        // Observed above (once the answer passed), not here.
        request: None,
        form,
        answer,
        upstream_time,
        started,
        status,
        trace: None,
        upstream: &upstream,
        target: &target,
    });
    state.count(Some(mi), status);
    Ok(resp)
}

/// The request's headers as the champion gets them: hop-by-hop headers
/// gone but `te: trailers` (gRPC needs it), and the request id.
fn forwardable(headers: &mut HeaderMap, id: &str) {
    let te = headers.remove(hyper::header::TE);
    strip_hop_by_hop(headers);
    if let Some(te) = te.filter(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers")) {
        headers.insert(hyper::header::TE, te);
    }
    set_request_id(headers, id);
}

/// A `grpc-status` and `grpc-message` (headers or trailers).
fn grpc_status(headers: &HeaderMap) -> Option<(String, String)> {
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    get("grpc-status").map(|code| (code, get("grpc-message").unwrap_or_default()))
}

/// What passed of a `ModelInfer` answer.
struct Teed {
    body: Option<Bytes>,
    form: Form,
    status: Option<(String, String)>,
    complete: bool,
}

/// A `ModelInfer` call waiting for its answer to pass, to be observed.
struct Observed {
    state: Arc<State>,
    mi: usize,
    id: String,
    timestamp: String,
    request: Bytes,
    form: Form,
    champion_ms: f64,
}

impl Observed {
    fn done(self, teed: Teed) {
        let response = match (teed.status, teed.body) {
            (Some((code, _)), Some(body)) if code == "0" && teed.complete => Ok(Answered {
                status: 200,
                body,
                form: teed.form,
            }),
            (Some((code, message)), _) if code != "0" => {
                Err(format!("gRPC status {code}: {message}"))
            }
            (_, None) => Err(super::response_too_large(
                &self.state,
                &self.state.models[self.mi].cfg.name,
            )),
            (None, Some(_)) if teed.complete => {
                Err("the answer ended without a grpc-status".to_string())
            }
            _ => Err("the answer was cut short".to_string()),
        };
        self.observe(response);
    }

    /// Hands the call over to the observer with the champion's answer.
    fn observe(self, response: Result<Answered, String>) {
        self.state.observer.observe(Observation {
            model: self.mi,
            request_id: self.id,
            timestamp: self.timestamp,
            request: self.request,
            form: self.form,
            response: Some(response),
            champion_ms: Some(self.champion_ms),
            arm: None,
        });
    }
}

/// The champion's answer as it streams to the client, copied (up to
/// `max` bytes) for the observation, which its end (or its loss) hands
/// over once (never waiting: `Observer::observe`).
struct Tee {
    inner: Incoming,
    captured: Option<Vec<u8>>,
    max: usize,
    status: Option<(String, String)>,
    /// How the answer is framed (its `grpc-encoding`).
    form: Form,
    observed: Option<Observed>,
}

impl Tee {
    fn finish(&mut self, complete: bool) {
        if let Some(observed) = self.observed.take() {
            observed.done(Teed {
                body: self.captured.take().map(Bytes::from),
                form: self.form,
                status: self.status.take(),
                complete,
            });
        }
    }
}

impl hyper::body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let fits = this
                        .captured
                        .as_ref()
                        .is_some_and(|c| c.len() + data.len() <= this.max);
                    match this.captured.as_mut() {
                        Some(c) if fits => c.extend_from_slice(data),
                        _ => this.captured = None,
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.status = grpc_status(trailers).or(this.status.take());
                }
                // hyper stops polling a body at its end (its trailers, or
                // data that ends it): the answer has passed whole.
                if frame.is_trailers() || hyper::body::Body::is_end_stream(&this.inner) {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.finish(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_prefaces_are_told_from_http1_requests() {
        assert!(is_preface(PREFACE));
        assert!(is_preface(b"PRI * HTTP/2.0\r\n"));
        for first in [
            &b"POST /v2/models/m/infer HTTP/1.1\r\n"[..],
            b"PRI * HTTP/1.1\r\n",
            b"PRI",
            b"",
        ] {
            assert!(!is_preface(first), "{}", String::from_utf8_lossy(first));
        }
    }

    #[test]
    fn the_agents_own_errors_are_trailers_only_grpc_answers() {
        let r = status_only(UNAVAILABLE, "upstream 10.0.0.1:8081 failed: 100% refused\n");
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(
            h["grpc-message"],
            "upstream 10.0.0.1:8081 failed: 100%25 refused%0A"
        );
    }
}
