//! The proxy's fast path: plain HTTP/1.1 requests to a proxied model (a
//! `Content-Length` body no larger than `max_body_bytes`, no upgrade, no
//! `Expect`) are read, forwarded and answered here with one buffer each
//! way and the champion's connections kept per traffic thread, without
//! hyper's machinery. On this path the agent adds about a third less
//! latency than through hyper (bench/agent_load.sh).
//!
//! Anything else (other methods of framing, `/_driftwatch/` sinks, mirror
//! routes, unknown routes, HTTP/1.0, requests hyper would reject) hands
//! the connection, with the bytes already read, to hyper for the rest of
//! its life, so every behaviour of the hyper path stays as it is. The
//! bookkeeping after an answer (metrics, the observation, the span) is the
//! hyper path's own (`State::proxied`).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hyper::StatusCode;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::chunked::Chunked;
use super::http1::{
    client_head, error_response, parse_request, parse_response, upstream_request, Answer, Framing,
    Head, Parsed,
};
use super::hyper::{serve_hyper, Upstream};
use super::{call_upstream, response_too_large, split, Proxied, State, Trace};
use crate::adapters::{binary, is_inference, Form};
use crate::config::Mode;
use crate::observe::{now_rfc3339, Answered};

/// Bytes asked for per read.
const READ_CHUNK: usize = 16 * 1024;

/// An idle champion connection is closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Idle champion connections kept per model and traffic thread, at most.
const POOL_MAX: usize = 1024;

/// Idle keep-alive connections to the champions, a list per model, owned
/// by one traffic thread (the lock is never contended).
pub struct Pool {
    idle: Mutex<Vec<Vec<(TcpStream, Instant)>>>,
}

impl Pool {
    pub fn new(models: usize) -> Pool {
        Pool {
            idle: Mutex::new((0..models).map(|_| Vec::new()).collect()),
        }
    }

    /// The most recently used connection that is still open.
    fn take(&self, mi: usize) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((stream, since)) = idle[mi].pop() {
            if since.elapsed() < POOL_IDLE && !closed(&stream) {
                return Some(stream);
            }
        }
        None
    }

    fn put(&self, mi: usize, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle[mi].len() < POOL_MAX {
            idle[mi].push((stream, Instant::now()));
        }
    }

    /// Closes connections idle too long or closed by the champion.
    pub fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        for list in idle.iter_mut() {
            list.retain(|(stream, since)| since.elapsed() < POOL_IDLE && !closed(stream));
        }
    }
}

/// Whether an idle connection was closed by its peer (or sent something it
/// should not have): its reactor has seen it readable and a read agrees.
/// An open idle connection costs no system call here.
fn closed(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => false,
        Poll::Ready(Err(_)) => true,
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            !matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

/// Serves one traffic connection: requests for the fast path here, the
/// rest of the connection through hyper from the first one that is not.
/// `stop` turns true at shutdown: an idle connection closes, a request in
/// flight is answered with `connection: close`.
pub async fn serve(
    state: Arc<State>,
    pool: Arc<Pool>,
    client: Upstream,
    mut stream: TcpStream,
    watcher: Watcher,
    mut stop: watch::Receiver<bool>,
) {
    let limits = state.config.http;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // One timer for the connection, set again for each request.
    let deadline = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(deadline);
    loop {
        // The head within `header_timeout` of the previous response (or
        // of the connection's start); an idle connection closes quietly,
        // a slow head is counted.
        deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + limits.header_timeout);
        let head = loop {
            if !buf.is_empty() {
                match parse_request(&buf) {
                    Parsed::Partial => {}
                    Parsed::Fast(head) => break Some(head),
                    Parsed::Hyper => break None,
                    Parsed::Refuse(why) => return refuse(&state, &mut stream, why).await,
                }
            } else if *stop.borrow() {
                return;
            }
            buf.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = stop.changed(), if buf.is_empty() => return,
                () = &mut deadline => {
                    if !buf.is_empty() {
                        state.metrics.refuse("header_timeout");
                    }
                    return;
                }
            }
        };
        let Some((head, mi)) = head.and_then(|h| fast_model(&state, &buf, &h).map(|mi| (h, mi)))
        else {
            return serve_hyper(state, client, stream, buf.freeze(), watcher).await;
        };
        let whole = head.len + head.content_length;
        while buf.len() < whole {
            buf.reserve(whole - buf.len());
            match tokio::time::timeout(limits.body_timeout, stream.read_buf(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {
                    state.metrics.refuse("body_timeout");
                    return;
                }
            }
        }
        let msg = buf.split_to(whole).freeze();
        let close = head.close || *stop.borrow();
        if !proxy(&state, &pool, &mut stream, &msg, &head, mi, close).await || close {
            return;
        }
    }
}

/// Answers a request whose framing is ambiguous with 400 and closes the
/// connection (nothing of it reaches the champion); counted as `malformed`.
async fn refuse(state: &State, stream: &mut TcpStream, why: &str) {
    state.metrics.refuse("malformed");
    let body = format!("{{\"error\": \"ambiguous request framing: {why}\"}}");
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The model a parsed request is for, when that model is proxied and the
/// request is small enough to be read whole.
fn fast_model(state: &State, buf: &[u8], head: &Head) -> Option<usize> {
    let path = head.path(buf);
    if path.starts_with("/_driftwatch/") {
        return None;
    }
    let mi = state.route(head.header(buf, "host"), path)?;
    let m = &state.models[mi];
    (m.cfg.mode == Mode::Proxy && head.content_length <= m.cfg.max_body_bytes && m.proxied())
        .then_some(mi)
}

/// What the exchange with the champion gave: its head and connection, and
/// the body when it was read whole (`Length` up to `max_body_bytes`, or
/// empty); otherwise the bytes already read after the head.
struct Exchange {
    answer: Answer,
    upstream: TcpStream,
    body: Bytes,
    whole: bool,
}

/// Sends the request on a pooled (or new) connection and reads the answer.
async fn exchange(
    pool: &Pool,
    slot: usize,
    authority: &str,
    request: &[u8],
    head_request: bool,
    max: usize,
) -> Result<Exchange, String> {
    let mut upstream = match pool.take(slot) {
        Some(s) => s,
        None => connect(authority).await.map_err(|e| e.to_string())?,
    };
    upstream
        .write_all(request)
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let (len, mut answer) = loop {
        match parse_response(&buf, head_request)? {
            Some((len, interim)) if (100..200).contains(&interim.status) => {
                if interim.status == 101 {
                    return Err("an upgrade the request did not ask for".into());
                }
                // An interim response (100 Continue, 103 Early Hints): skipped.
                buf.advance(len);
            }
            Some(head) => break head,
            None => read_more(&mut upstream, &mut buf, READ_CHUNK, "before a response").await?,
        }
    };
    answer.raw = buf.split_to(len).freeze();
    if let Framing::Length(n) = answer.framing {
        if n <= max {
            while buf.len() < n {
                let want = n - buf.len();
                read_more(&mut upstream, &mut buf, want, "inside the response body").await?;
            }
            if buf.len() > n {
                answer.keep_alive = false;
            }
            let body = buf.split_to(n).freeze();
            return Ok(Exchange {
                answer,
                upstream,
                body,
                whole: true,
            });
        }
    }
    let whole = matches!(answer.framing, Framing::Empty);
    if whole && !buf.is_empty() {
        answer.keep_alive = false;
    }
    Ok(Exchange {
        answer,
        upstream,
        body: buf.freeze(),
        whole,
    })
}

/// Reads at least a byte more of the champion's response (room for
/// `want` made first); a closed connection is an error naming `place`.
async fn read_more(
    upstream: &mut TcpStream,
    buf: &mut BytesMut,
    want: usize,
    place: &str,
) -> Result<(), String> {
    buf.reserve(want);
    match upstream.read_buf(buf).await {
        Ok(0) => Err(format!("the connection closed {place}")),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot read the response: {e}")),
    }
}

async fn connect(authority: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    Ok(stream)
}

/// Proxies one request and answers the client; whether the client
/// connection can carry another request.
async fn proxy(
    state: &Arc<State>,
    pool: &Pool,
    client: &mut TcpStream,
    msg: &Bytes,
    head: &Head,
    mi: usize,
    close: bool,
) -> bool {
    let started = Instant::now();
    let (target, path) = (head.target(msg), head.path(msg));
    let m = &state.models[mi];
    let id = state.request_id(|n| head.header(msg, n), &m.cfg);
    let arm = m
        .split
        .as_ref()
        .map(|s| s.pick(|n| head.header(msg, n), Some(&msg[head.len..]), &id));
    let Some(upstream) = m.upstream_for(arm) else {
        return false;
    };
    let slot = m.slot + arm.unwrap_or(0);
    let arm_header = |out: Vec<u8>| match m.arm_name(arm) {
        Some(name) => split::with_arm_header(out, name),
        None => out,
    };
    let timestamp = now_rfc3339();
    let method = std::str::from_utf8(&msg[head.method.clone()]).unwrap_or("");
    let trace = Trace::start(
        state,
        started,
        head.header(msg, "traceparent"),
        path,
        method,
    );
    let request = upstream_request(msg, head, upstream, &id);
    let authority = upstream.authority().map_or("", |a| a.as_str());
    let sent = Instant::now();
    let outcome = call_upstream(
        upstream,
        m.cfg.upstream_timeout,
        exchange(
            pool,
            slot,
            authority,
            &request,
            method == "HEAD",
            m.cfg.max_body_bytes,
        ),
    )
    .await;
    let upstream_time = sent.elapsed();
    let name = m.cfg.name.as_str();
    let (status, answer, keep) = match outcome {
        Ok(ex) => {
            let status = StatusCode::from_u16(ex.answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let close = close || matches!(ex.answer.framing, Framing::UntilClose);
            let form = Form::Http {
                json_len: binary::json_len(ex.answer.header(binary::HEADER)),
            };
            let mut out = arm_header(client_head(&ex.answer, &id, close));
            if ex.whole {
                out.extend_from_slice(&ex.body);
                let written = client.write_all(&out).await.is_ok();
                if ex.answer.keep_alive {
                    pool.put(slot, ex.upstream);
                }
                let answer = Answered {
                    status: ex.answer.status,
                    form,
                    body: ex.body,
                };
                (status, Ok(answer), written && !close)
            } else {
                let max = m.cfg.max_body_bytes;
                let timeout = m.cfg.upstream_timeout;
                let (written, body) = stream_body(pool, slot, client, out, ex, max, timeout).await;
                let answer = match body {
                    Some(body) => Ok(Answered {
                        status: status.as_u16(),
                        body,
                        form,
                    }),
                    None => Err(response_too_large(state, name)),
                };
                (status, answer, written && !close)
            }
        }
        Err(e) => {
            let (status, why) = (e.status(), e.to_string());
            let out = arm_header(error_response(status, &why, &id, close));
            let written = client.write_all(&out).await.is_ok();
            (status, Err(why), written && !close)
        }
    };
    state.proxied(Proxied {
        mi,
        arm,
        id: &id,
        timestamp,
        inference: is_inference(m.cfg.protocol, method, path),
        request: Some(msg.slice(head.len..)),
        form: Form::Http {
            json_len: binary::json_len(head.header(msg, binary::HEADER)),
        },
        answer: Some(answer),
        upstream_time,
        started,
        status,
        trace,
        upstream,
        target,
    });
    state.count(Some(mi), status);
    keep
}

/// A streamed body as it passes: which part of what arrives belongs to
/// it (by its framing), and its data while it fits in `max`.
struct Relay {
    framing: Framing,
    chunks: Chunked,
    /// Bytes of a `Length` body still to come.
    left: usize,
    captured: Option<Vec<u8>>,
    max: usize,
}

impl Relay {
    fn new(framing: Framing, max: usize) -> Relay {
        Relay {
            framing,
            chunks: Chunked::default(),
            left: match framing {
                Framing::Length(n) => n,
                _ => usize::MAX,
            },
            captured: Some(Vec::new()),
            max,
        }
    }

    /// How much of `input` is the body's, and whether the body ends there;
    /// `Err` when chunked framing breaks.
    fn take(&mut self, input: &[u8]) -> Result<(usize, bool), ()> {
        let Relay {
            chunks,
            captured,
            max,
            ..
        } = self;
        let mut capture = |data: &[u8]| {
            if let Some(c) = captured.as_mut() {
                if c.len() + data.len() > *max {
                    *captured = None;
                } else {
                    c.extend_from_slice(data);
                }
            }
        };
        match self.framing {
            Framing::Chunked => match chunks.feed(input, &mut capture) {
                Ok(Some(end)) => Ok((end, true)),
                Ok(None) => Ok((input.len(), false)),
                Err(_) => Err(()),
            },
            Framing::Length(_) => {
                let n = input.len().min(self.left);
                capture(&input[..n]);
                self.left -= n;
                Ok((n, self.left == 0))
            }
            Framing::UntilClose | Framing::Empty => {
                capture(input);
                Ok((input.len(), false))
            }
        }
    }
}

/// What a read of the champion's connection gave.
enum Read {
    Data(Bytes),
    Closed,
    Failed,
}

async fn read_within(upstream: &mut TcpStream, timeout: Duration) -> Read {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    match tokio::time::timeout(timeout, upstream.read_buf(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Read::Data(buf.freeze()),
        Ok(Ok(_)) => Read::Closed,
        _ => Read::Failed,
    }
}

/// Passes a body that was not read whole to the client as it arrives
/// (each read within `timeout`), chunks as they are; whether the client got
/// all of it, and the body (decoded) when it fits in `max`.
async fn stream_body(
    pool: &Pool,
    slot: usize,
    client: &mut TcpStream,
    head: Vec<u8>,
    ex: Exchange,
    max: usize,
    timeout: Duration,
) -> (bool, Option<Bytes>) {
    let Exchange {
        answer,
        mut upstream,
        body: mut pending,
        ..
    } = ex;
    let mut relay = Relay::new(answer.framing, max);
    let mut out = head;
    let (mut client_ok, mut clean) = (true, answer.keep_alive);
    let ended = loop {
        let (take, ended) = relay.take(&pending).unwrap_or_else(|()| {
            client_ok = false;
            (0, true)
        });
        // Bytes after the body's end, or a broken body: not reusable.
        if take < pending.len() || !client_ok {
            clean = false;
        }
        out.extend_from_slice(&pending[..take]);
        if client_ok && !out.is_empty() {
            client_ok = client.write_all(&out).await.is_ok();
        }
        out.clear();
        if ended || !client_ok {
            break ended;
        }
        match read_within(&mut upstream, timeout).await {
            Read::Data(bytes) => pending = bytes,
            Read::Closed => {
                // The end of a body read until close, a truncated one otherwise.
                clean = false;
                client_ok = matches!(answer.framing, Framing::UntilClose);
                break false;
            }
            Read::Failed => {
                clean = false;
                client_ok = false;
                break false;
            }
        }
    };
    if ended && clean {
        pool.put(slot, upstream);
    }
    (client_ok, relay.captured.map(Bytes::from))
}
