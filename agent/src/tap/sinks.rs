//! The agent's own endpoints for copies of traffic: KServe's inference
//! logger (`/_driftwatch/kserve[/{model}]`, request and response
//! CloudEvents joined by `ce-id`) and champion responses to mirrored
//! requests (`/_driftwatch/responses/{model}`, joined by `x-request-id`;
//! a gRPC answer is posted as its framed message with gRPC's
//! `content-type`).

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::Tap;
use crate::adapters::Form;
use crate::http::{full, json_error, read_limited, Body};

/// `/_driftwatch/{rest}`: answered and counted here.
pub async fn sinks(tap: &Tap, rest: String, req: Request<Incoming>) -> Response<Body> {
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
        .or_else(|| (tap.models.len() == 1).then(|| tap.models[0].name.clone()));
    let Some(mi) = model
        .as_ref()
        .and_then(|m| tap.models.iter().position(|x| &x.name == m))
    else {
        let why = format!(
            "unknown model {model:?}: name it in the path or the ce-inferenceservicename header"
        );
        tap.count(None, StatusCode::NOT_FOUND);
        return json_error(StatusCode::NOT_FOUND, &why);
    };
    let (id, is_response) = match kind {
        "kserve" => {
            let Some(id) = header("ce-id") else {
                tap.count(Some(mi), StatusCode::BAD_REQUEST);
                return json_error(StatusCode::BAD_REQUEST, "a CloudEvent needs a ce-id header");
            };
            let ty = header("ce-type").unwrap_or_default();
            (id, ty.contains("response"))
        }
        "responses" => match header("x-request-id") {
            Some(id) => (id, true),
            None => {
                tap.count(Some(mi), StatusCode::BAD_REQUEST);
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "a champion response needs an x-request-id header",
                );
            }
        },
        _ => {
            tap.count(Some(mi), StatusCode::NOT_FOUND);
            return json_error(StatusCode::NOT_FOUND, "unknown /_driftwatch endpoint");
        }
    };
    let form = Form::posted(req.headers());
    let max = tap.models[mi].max_body_bytes;
    let body = match read_limited(req.into_body(), max).await {
        Ok((_, Some(b))) => b,
        Ok((_, None)) => {
            tap.unparsed(mi, if is_response { "response" } else { "request" });
            tap.count(Some(mi), StatusCode::PAYLOAD_TOO_LARGE);
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
        tap.join(mi, &id, None, Some((body, form)));
    } else {
        tap.join(mi, &id, Some((body, form)), None);
    }
    tap.count(Some(mi), StatusCode::ACCEPTED);
    let mut r = Response::new(full("{}"));
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}
