//! A mirrored copy of a request (Istio/Envoy): answered at once, joined
//! with the champion's response when one is posted within `join_wait`.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::Tap;
use crate::adapters::{binary, is_inference};
use crate::http::{full, json_error, read_limited, Body};

/// Answers a mirrored request of model `mi` (the caller counts it).
pub async fn mirror(tap: &Tap, mi: usize, id: &str, req: Request<Incoming>) -> Response<Body> {
    let model = &tap.models[mi];
    if !is_inference(model.protocol, req.method().as_str(), req.uri().path()) {
        // A copy of a health or metadata call: nothing to observe.
        tap.metrics
            .passthrough
            .with_label_values(&[&model.name])
            .inc();
        return Response::new(full("{}"));
    }
    let json_len = binary::json_len_in(req.headers());
    match read_limited(req.into_body(), model.max_body_bytes).await {
        Ok((_, Some(body))) => {
            tap.join(mi, id, Some((body, json_len)), None);
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
