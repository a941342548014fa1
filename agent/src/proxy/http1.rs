//! HTTP/1.1 messages as the fast path reads and writes them, over one
//! buffer each way: request and response heads parsed by httparse into
//! ranges of the buffer, how a response body ends (RFC 9112, section 6.3;
//! chunked bodies are followed by `chunked.rs`), the heads the champion and
//! the client get.

use std::ops::Range;

use bytes::Bytes;
use hyper::{StatusCode, Uri};

use crate::http::{error_body, is_hop_by_hop};

/// A request or response head larger than this is not for the fast path
/// (a request goes to hyper, which answers 431; a response is a 502).
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// Headers per message at most on the fast path.
pub(crate) const MAX_HEADERS: usize = 100;

/// A request head the fast path serves: where its parts are in the buffer.
pub(crate) struct Head {
    pub(crate) len: usize,
    pub(crate) method: Range<usize>,
    pub(crate) target: Range<usize>,
    pub(crate) headers: Vec<(Range<usize>, Range<usize>)>,
    pub(crate) content_length: usize,
    pub(crate) close: bool,
}

pub(crate) enum Parsed {
    Partial,
    Fast(Head),
    /// Not for the fast path: hyper serves the connection from here.
    Hyper,
    /// Framing two readers could read differently (`Content-Length` with
    /// `Transfer-Encoding`, RFC 9112 section 6.3): answered 400, closed.
    Refuse(&'static str),
}

/// Where `part` lies in `buf`; an empty range when it does not lie there
/// (httparse gives a reason phrase that is not UTF-8 as a `""` of its
/// own: taken as found, it pointed outside the head and the agent's
/// answer to the client panicked; found by the `request_head` fuzz target).
pub(crate) fn offset(buf: &[u8], part: &[u8]) -> Range<usize> {
    let at = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize);
    match at {
        Some(at) if at.saturating_add(part.len()) <= buf.len() => at..at + part.len(),
        _ => 0..0,
    }
}

pub(crate) fn parse_request(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        // A head over the bound goes to hyper, which answers 431.
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Hyper,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Hyper;
    };
    if !target.starts_with('/') {
        return Parsed::Hyper;
    }
    let mut head = Head {
        len,
        method: offset(buf, method.as_bytes()),
        target: offset(buf, target.as_bytes()),
        headers: Vec::with_capacity(req.headers.len()),
        content_length: 0,
        close: false,
    };
    let (mut length_seen, mut chunked, mut hand_over) = (false, false, false);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
            else {
                return Parsed::Hyper;
            };
            if length_seen {
                return Parsed::Hyper;
            }
            length_seen = true;
            head.content_length = n;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("expect") || name.eq_ignore_ascii_case("upgrade") {
            hand_over = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    hand_over = true;
                }
            }
        }
        head.headers
            .push((offset(buf, name.as_bytes()), offset(buf, h.value)));
    }
    if chunked && length_seen {
        return Parsed::Refuse("Content-Length with Transfer-Encoding");
    }
    if chunked || hand_over {
        return Parsed::Hyper;
    }
    Parsed::Fast(head)
}

impl Head {
    /// The request target (path and query).
    pub(crate) fn target<'a>(&self, msg: &'a [u8]) -> &'a str {
        std::str::from_utf8(&msg[self.target.clone()]).unwrap_or("/")
    }

    /// The target's path, without the query.
    pub(crate) fn path<'a>(&self, msg: &'a [u8]) -> &'a str {
        let target = self.target(msg);
        target.split('?').next().unwrap_or(target)
    }

    pub(crate) fn header<'a>(&self, msg: &'a [u8], name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| msg[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|(_, v)| std::str::from_utf8(&msg[v.clone()]).ok())
    }
}

/// How a response's body ends (RFC 9112, section 6.3).
#[derive(Clone, Copy)]
pub(crate) enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// The champion's response head.
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The head as received.
    pub(crate) raw: Bytes,
    pub(crate) reason: Range<usize>,
    pub(crate) headers: Vec<(Range<usize>, Range<usize>)>,
    pub(crate) framing: Framing,
    /// The champion keeps the connection open after this response.
    pub(crate) keep_alive: bool,
}

impl Answer {
    /// A header's value, by name (any case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| self.raw[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|(_, v)| std::str::from_utf8(&self.raw[v.clone()]).ok())
    }
}

pub(crate) fn parse_response(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<(usize, Answer)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err("a response head over 64 KiB".into()),
        Err(e) => return Err(format!("an invalid response: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    if !(100..1000).contains(&status) {
        return Err(format!("an invalid status code {status}"));
    }
    let mut keep_alive = resp.version == Some(1);
    let mut length = None;
    let mut chunked = None;
    let mut list = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("an invalid content-length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting content-length headers".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && resp.version == Some(0) {
                    keep_alive = true;
                }
            }
        }
        list.push((offset(buf, h.name.as_bytes()), offset(buf, h.value)));
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    if matches!(framing, Framing::UntilClose) {
        keep_alive = false;
    }
    let reason = offset(buf, resp.reason.unwrap_or("").as_bytes());
    Ok(Some((
        len,
        Answer {
            status,
            raw: Bytes::new(),
            reason,
            headers: list,
            framing,
            keep_alive,
        },
    )))
}

/// The request as the champion gets it: the upstream URL's path before the
/// target, `host` the upstream's, hop-by-hop headers dropped, the request id
/// set.
pub(crate) fn upstream_request(msg: &[u8], head: &Head, upstream: &Uri, id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 128);
    out.extend_from_slice(&msg[head.method.clone()]);
    out.push(b' ');
    out.extend_from_slice(super::upstream_base(upstream).as_bytes());
    out.extend_from_slice(&msg[head.target.clone()]);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(upstream.authority().map_or("", |a| a.as_str()).as_bytes());
    out.extend_from_slice(b"\r\n");
    let drop = |n: &str| is_hop_by_hop(n) || n.eq_ignore_ascii_case("host");
    put_headers(&mut out, msg, &head.headers, drop, id);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&msg[head.len..]);
    out
}

/// Appends the headers (ranges into `src`) but those `drop` names and any
/// `x-request-id`, then `x-request-id: {id}` (without its line end).
pub(crate) fn put_headers(
    out: &mut Vec<u8>,
    src: &[u8],
    headers: &[(Range<usize>, Range<usize>)],
    drop: impl Fn(&str) -> bool,
    id: &str,
) {
    for (name, value) in headers {
        let n = std::str::from_utf8(&src[name.clone()]).unwrap_or("");
        if drop(n) || n.eq_ignore_ascii_case("x-request-id") {
            continue;
        }
        out.extend_from_slice(&src[name.clone()]);
        out.extend_from_slice(b": ");
        out.extend_from_slice(&src[value.clone()]);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(id.as_bytes());
}

/// The response head as the client gets it: the champion's, hop-by-hop
/// headers dropped (but `transfer-encoding` kept when its chunks are passed
/// through), the request id set, and `connection: close` when the
/// connection ends after it.
pub(crate) fn client_head(answer: &Answer, id: &str, close: bool) -> Vec<u8> {
    let raw = &answer.raw;
    let mut out = Vec::with_capacity(raw.len() + 64);
    out.extend_from_slice(b"HTTP/1.1 ");
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(&raw[answer.reason.clone()]);
    out.extend_from_slice(b"\r\n");
    let chunked = matches!(answer.framing, Framing::Chunked);
    let drop =
        |n: &str| is_hop_by_hop(n) && !(chunked && n.eq_ignore_ascii_case("transfer-encoding"));
    put_headers(&mut out, raw, &answer.headers, drop, id);
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// An answer the agent makes itself (502, 504), as JSON.
pub(crate) fn error_response(status: StatusCode, message: &str, id: &str, close: bool) -> Vec<u8> {
    let body = error_body(message);
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {id}{}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        if close { "\r\nconnection: close" } else { "" },
    )
    .into_bytes()
}

/// Entry points of the fuzz targets (`fuzz/`), each checking what must
/// hold whatever the input; not an API.
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// The lean path's request head against httparse itself, and the head
    /// it would send the champion read back: one framing, the same one.
    pub fn request_head(data: &[u8]) {
        let Parsed::Fast(head) = parse_request(data) else {
            return;
        };
        assert!(head.len <= MAX_HEAD && head.len <= data.len());
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        assert_eq!(req.parse(data), Ok(httparse::Status::Complete(head.len)));
        let lengths: Vec<&[u8]> = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| h.value)
            .collect();
        assert!(lengths.len() <= 1);
        assert!(!req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")));
        let end = head.len + head.content_length.min(data.len() - head.len);
        let msg = &data[..end];
        let upstream: Uri = "http://champion:9000/base".parse().expect("a URL");
        let sent = upstream_request(msg, &head, &upstream, "id-1");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 2];
        let mut out = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = out.parse(&sent) else {
            panic!("the champion could not read the head sent: {sent:?}");
        };
        let sent_lengths: Vec<usize> = out
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| {
                std::str::from_utf8(h.value)
                    .expect("digits")
                    .parse()
                    .expect("a length")
            })
            .collect();
        assert_eq!(sent_lengths.len(), lengths.len());
        assert!(sent_lengths.iter().all(|&l| l == head.content_length));
        assert_eq!(&sent[n..], &msg[head.len..]);
        assert_eq!(out.method, req.method);
        assert!(!out
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")));
    }

    /// A champion's response head: never a panic, ranges inside the input.
    pub fn response_head(data: &[u8]) {
        for head_request in [false, true] {
            if let Ok(Some((len, a))) = parse_response(data, head_request) {
                assert!(len <= data.len() && a.reason.end <= len);
                assert!(a.headers.iter().all(|(n, v)| n.end <= len && v.end <= len));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(request: &[u8]) -> &'static str {
        match parse_request(request) {
            Parsed::Partial => "partial",
            Parsed::Fast(_) => "fast",
            Parsed::Hyper => "hyper",
            Parsed::Refuse(_) => "refuse",
        }
    }

    #[test]
    fn only_plainly_framed_http_1_1_requests_take_the_fast_path() {
        let fast = b"POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: keep-alive, close\r\nX-Request-Id: r1\r\n\r\n{}";
        let Parsed::Fast(head) = parse_request(fast) else {
            panic!("not fast")
        };
        assert_eq!(head.content_length, 2);
        assert!(head.close);
        assert_eq!(&fast[head.target.clone()], b"/v2/models/m/infer?x=1");
        assert_eq!(head.header(fast, "x-request-id"), Some("r1"));
        assert_eq!(head.len, fast.len() - 2);
        assert_eq!(kind(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"), "fast");
        assert_eq!(
            kind(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: a\r\nContent-Le"),
            "partial"
        );
        for hyper in [
            &b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"GET /x HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST /x HTTP/1.0\r\nContent-Length: 1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST http://a/x HTTP/1.1\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            assert_eq!(kind(hyper), "hyper", "{}", String::from_utf8_lossy(hyper));
        }
        let mut huge = b"GET /x HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert_eq!(kind(&huge), "hyper");
        // Also when it arrives whole in one read.
        huge.extend_from_slice(b"\r\n\r\n");
        assert_eq!(kind(&huge), "hyper");
        for refused in [
            &b"POST /x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
        ] {
            assert_eq!(kind(refused), "refuse");
        }
    }

    #[test]
    fn a_reason_phrase_that_is_not_utf8_is_answered_without_it() {
        let raw = b"HTTP/1.1 200 \xff\xffhunked\r\nContent-Length: 2\r\n\r\n";
        let (len, mut answer) = parse_response(raw, false)
            .expect("valid")
            .expect("complete");
        assert_eq!(len, raw.len());
        assert_eq!(answer.reason, 0..0);
        answer.raw = Bytes::copy_from_slice(raw);
        let head = client_head(&answer, "id-1", false);
        assert!(
            head.starts_with(b"HTTP/1.1 200 \r\nContent-Length: 2\r\n"),
            "{:?}",
            String::from_utf8_lossy(&head)
        );
    }

    fn framing(response: &[u8], head_request: bool) -> (&'static str, bool) {
        let (_, a) = parse_response(response, head_request)
            .expect("valid")
            .expect("complete");
        let f = match a.framing {
            Framing::Empty => "empty",
            Framing::Length(_) => "length",
            Framing::Chunked => "chunked",
            Framing::UntilClose => "close",
        };
        (f, a.keep_alive)
    }

    #[test]
    fn a_response_body_ends_where_rfc_9112_says() {
        let length = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(framing(length, false), ("length", true));
        assert_eq!(framing(length, true), ("empty", true));
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            ("chunked", true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            ("close", false)
        );
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\n\r\n", false), ("close", false));
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            ("empty", true)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            ),
            ("length", false)
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            ("length", false)
        );
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", false)
            .expect("partial")
            .is_none());
    }
}
