//! A mirrored copy of a request (Istio/Envoy), over HTTP or gRPC:
//! answered at once, joined with the champion's response when one is
//! posted within `join_wait`.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::Tap;
use crate::adapters::{is_inference, Form};
use crate::http::{full, json_error, read_limited, Body};

/// Answers a mirrored request of model `mi` (the caller counts it).
pub async fn mirror(tap: &Tap, mi: usize, id: &str, req: Request<Incoming>) -> Response<Body> {
    let model = &tap.models[mi];
    if !is_inference(model.protocol, req.method().as_str(), req.uri().path()) {
        // A copy of a health or metadata call: nothing to observe.
        tap.passthrough(mi);
        return Response::new(full("{}"));
    }
    let form = Form::http(req.headers());
    match read_limited(req.into_body(), model.max_body_bytes).await {
        Ok((_, Some(body))) => {
            tap.join(mi, id, Some((body, form)), None);
            Response::new(full("{}"))
        }
        Ok((_, None)) => {
            tap.unparsed(mi, "request");
            Response::new(full("{}"))
        }
        Err(e) => json_error(
            StatusCode::BAD_REQUEST,
            &format!("cannot read the body: {e}"),
        ),
    }
}

/// Takes a mirrored gRPC call of model `mi` (the caller answers and
/// counts it): a `ModelInfer` request read whole waits for its answer as
/// an HTTP copy does (one over `max_body_bytes` was counted by the
/// caller); any other call is counted as passthrough.
pub fn mirror_grpc(tap: &Tap, mi: usize, id: &str, infer: bool, request: Option<(Bytes, Form)>) {
    if !infer {
        tap.passthrough(mi);
    } else if let Some(seen) = request {
        tap.join(mi, id, Some(seen), None);
    }
}
