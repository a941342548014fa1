//! A mirrored copy of a request (Istio/Envoy): answered at once, joined
//! with the champion's response when one is posted within `join_wait`.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::Tap;
use crate::http::{full, json_error, read_limited, Body};

/// Answers a mirrored request of model `mi` (the caller counts it).
pub async fn mirror(tap: &Tap, mi: usize, id: &str, req: Request<Incoming>) -> Response<Body> {
    match read_limited(req.into_body(), tap.models[mi].max_body_bytes).await {
        Ok((_, Some(body))) => {
            tap.join(mi, id, Some(body), None::<Bytes>);
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
