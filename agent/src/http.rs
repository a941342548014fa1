//! HTTP pieces both proxy paths and the sinks share: the body type, the
//! JSON error the agent answers itself, hop-by-hop headers, and reading a
//! body up to a limit without losing what is beyond it.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The JSON body of an error the agent answers itself.
pub fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

pub fn json_error(status: StatusCode, message: &str) -> Response<Body> {
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
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// Sets `x-request-id` (to the champion, and back to the client); an id
/// that is not a valid header value is left out.
pub fn set_request_id(headers: &mut HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert(hyper::header::HeaderName::from_static("x-request-id"), v);
    }
}

/// A body read up to `max` bytes: all of it, or (when larger) a body that
/// replays what was read and streams the rest, unread.
pub async fn read_limited(
    body: Incoming,
    max: usize,
) -> Result<(Body, Option<Bytes>), hyper::Error> {
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
