//! Protocol adapters: a request body becomes rows of features, a response
//! body becomes output tensors, one adapter per protocol behind `Adapter`
//! (`kserve_v2`, `tfserving`, `generic`). Output tensors, from a response
//! or from the shadow model, are read by one function
//! (`tensor::outputs_from_tensors`).

pub mod binary;
pub mod generic;
pub mod grpc;
pub mod kserve_v2;
pub mod tensor;
pub mod tfserving;

use std::collections::BTreeMap;

use driftwatch_protocol::{FeatureValue, Output};
use serde_json::Value;

pub use binary::Section;
pub use tensor::{outputs_from_tensors, Data, OutputSpec, Tensor};

use crate::config::{Model, Protocol};

pub type Row = BTreeMap<String, FeatureValue>;

/// Why a body could not be read (the body is forwarded unchanged either
/// way; the reason is counted).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdapterError {
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not in the protocol's shape.
    #[error("{0}")]
    Shape(String),
    /// A binary tensor body (KServe v2) whose lengths do not add up.
    #[error("{0}")]
    Binary(String),
    /// A gRPC body that is not one readable message.
    #[error("{0}")]
    Grpc(String),
    /// A compressed message larger than `max_body_bytes` once decompressed.
    #[error("{0}")]
    TooLarge(String),
}

impl AdapterError {
    /// The reason label of `driftwatch_agent_unparsed_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AdapterError::NotJson(_) => "not_json",
            AdapterError::Shape(_) => "shape",
            AdapterError::Binary(_) => "binary",
            AdapterError::Grpc(_) => "grpc",
            AdapterError::TooLarge(_) => "too_large",
        }
    }
}

impl From<String> for AdapterError {
    fn from(shape: String) -> AdapterError {
        AdapterError::Shape(shape)
    }
}

impl From<&str> for AdapterError {
    fn from(shape: &str) -> AdapterError {
        AdapterError::Shape(shape.to_string())
    }
}

/// How one protocol's bodies are read: the JSON, and the binary section
/// that follows it where the protocol has one (KServe v2's binary tensor
/// extension; empty otherwise).
pub trait Adapter: Sync {
    /// The rows of a request body.
    fn rows(
        &self,
        model: &Model,
        body: &Value,
        binary: &mut Section<'_>,
    ) -> Result<Vec<Row>, AdapterError>;
    /// The output tensors of a response body to a request of `n` rows.
    fn outputs(
        &self,
        model: &Model,
        body: &Value,
        binary: &mut Section<'_>,
        n: usize,
    ) -> Result<Vec<Tensor>, AdapterError>;
}

/// The adapter of a protocol.
pub fn adapter(protocol: Protocol) -> &'static dyn Adapter {
    match protocol {
        Protocol::KserveV2 => &kserve_v2::KserveV2,
        Protocol::Tfserving => &tfserving::TfServing,
        Protocol::Generic => &generic::Generic,
    }
}

fn json(body: &[u8]) -> Result<Value, AdapterError> {
    serde_json::from_slice(body).map_err(|e| AdapterError::NotJson(e.to_string()))
}

/// Whether a call is an inference, whose body the protocol's adapter
/// reads: any call with a body (health, readiness and metadata are
/// `GET`s), except KServe v2's (Triton's) management calls, which are
/// `POST`s too (model repository, logging, trace settings, shared
/// memory). The rest is proxied and counted, never parsed.
pub fn is_inference(protocol: Protocol, method: &str, path: &str) -> bool {
    const KSERVE_V2_MANAGEMENT: &[&str] = &[
        "/v2/repository/",
        "/v2/logging",
        "/v2/trace/",
        "/trace/setting",
        "sharedmemory/",
    ];
    if matches!(method, "GET" | "HEAD" | "OPTIONS") {
        return false;
    }
    match protocol {
        Protocol::KserveV2 => !KSERVE_V2_MANAGEMENT.iter().any(|m| path.contains(m)),
        Protocol::Tfserving | Protocol::Generic => true,
    }
}

/// How a body seen on the wire is framed, which says how it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// An HTTP body: JSON, or a JSON header of `json_len` bytes (its
    /// `Inference-Header-Content-Length`) followed by binary tensors.
    Http { json_len: Option<usize> },
    /// A unary gRPC call's message (`ModelInfer`), compressed with
    /// `encoding` where its flag says so.
    Grpc { encoding: grpc::Encoding },
}

impl Form {
    /// An HTTP body with these headers.
    pub fn http(headers: &hyper::HeaderMap) -> Form {
        Form::Http {
            json_len: binary::json_len_in(headers),
        }
    }

    /// A gRPC message with these headers.
    pub fn grpc(headers: &hyper::HeaderMap) -> Form {
        Form::Grpc {
            encoding: grpc::Encoding::of(headers),
        }
    }

    /// A body posted as a copy: a gRPC message (its 5-byte prefix
    /// included) when its `content-type` is gRPC's, else an HTTP body.
    pub fn posted(headers: &hyper::HeaderMap) -> Form {
        let content_type = headers.get(hyper::header::CONTENT_TYPE);
        if content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")) {
            Form::grpc(headers)
        } else {
            Form::http(headers)
        }
    }
}

/// The rows of a request body of either form.
pub fn read_request(model: &Model, body: &[u8], form: Form) -> Result<Vec<Row>, AdapterError> {
    match form {
        Form::Http { json_len } => parse_request(model, body, json_len),
        Form::Grpc { encoding } => grpc::parse_request(model, body, encoding),
    }
}

/// The outputs of a response body of either form, one per row (`n` rows).
pub fn read_response(
    model: &Model,
    body: &[u8],
    form: Form,
    n: usize,
) -> Result<Vec<Output>, AdapterError> {
    match form {
        Form::Http { json_len } => parse_response(model, body, json_len, n),
        Form::Grpc { encoding } => grpc::parse_response(model, body, encoding, n),
    }
}

/// A body's JSON and binary section: split at `json_len` (its
/// `Inference-Header-Content-Length`) for KServe v2, whole otherwise.
fn parts<'a>(
    model: &Model,
    body: &'a [u8],
    json_len: Option<usize>,
) -> Result<(&'a [u8], Section<'a>), AdapterError> {
    match json_len {
        Some(n) if model.protocol == Protocol::KserveV2 => binary::split(body, n),
        _ => Ok((body, Section::none())),
    }
}

/// The rows of a request body (`json_len`: its
/// `Inference-Header-Content-Length`, for binary tensors).
pub fn parse_request(
    model: &Model,
    body: &[u8],
    json_len: Option<usize>,
) -> Result<Vec<Row>, AdapterError> {
    let (text, mut binary) = parts(model, body, json_len)?;
    let rows = adapter(model.protocol).rows(model, &json(text)?, &mut binary)?;
    binary.finish()?;
    Ok(rows)
}

/// The outputs of a response body, one per row (`n` rows).
pub fn parse_response(
    model: &Model,
    body: &[u8],
    json_len: Option<usize>,
    n: usize,
) -> Result<Vec<Output>, AdapterError> {
    // No rows, no outputs (an output tensor of no rows and an absurd width
    // would otherwise name every one of its columns).
    if n == 0 {
        return Ok(Vec::new());
    }
    let (text, mut binary) = parts(model, body, json_len)?;
    let tensors = adapter(model.protocol).outputs(model, &json(text)?, &mut binary, n)?;
    binary.finish()?;
    outputs_from_tensors(&tensors, n, &OutputSpec::of(model, &model.outputs))
}

/// Nested arrays flattened row-major.
pub(crate) fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        other => out.push(other.clone()),
    }
}

/// A JSON scalar as a feature value (anything else is missing).
pub(crate) fn feature(v: &Value) -> FeatureValue {
    match v {
        Value::Number(n) => n.as_f64().map_or(FeatureValue::Null, FeatureValue::Number),
        Value::String(s) => FeatureValue::String(s.clone()),
        Value::Bool(b) => FeatureValue::Bool(*b),
        _ => FeatureValue::Null,
    }
}

/// Flattened JSON values as one tensor's data: all numbers (null is
/// missing), all strings, or all booleans.
pub(crate) fn tensor_data(values: &[Value], what: &str) -> Result<Data, String> {
    // JSON has no NaN: a null among numbers is a missing value.
    if values.iter().all(|v| v.is_number() || v.is_null()) && values.iter().any(Value::is_number) {
        return Ok(Data::Num(
            values
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect(),
        ));
    }
    if values.iter().all(|v| v.is_string()) {
        return Ok(Data::Str(
            values
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
        ));
    }
    if values.iter().all(|v| v.is_boolean()) {
        return Ok(Data::Bool(
            values.iter().filter_map(Value::as_bool).collect(),
        ));
    }
    Err(format!("{what}: mixed or unsupported values"))
}

/// A row from a JSON value: an object's scalar fields, or a list's items
/// named by `columns` (or `f0`, `f1`, ...).
pub(crate) fn row_from_value(v: &Value, columns: Option<&[String]>) -> Result<Row, String> {
    match v {
        Value::Object(o) => Ok(o
            .iter()
            .filter(|(_, x)| !x.is_object() && !x.is_array())
            .map(|(k, x)| (k.clone(), feature(x)))
            .collect()),
        Value::Array(items) => Ok(items
            .iter()
            .enumerate()
            .map(|(j, x)| {
                let name = columns
                    .and_then(|c| c.get(j).cloned())
                    .unwrap_or_else(|| format!("f{j}"));
                (name, feature(x))
            })
            .collect()),
        scalar => {
            let name = columns
                .and_then(|c| c.first().cloned())
                .unwrap_or_else(|| "input".into());
            Ok([(name, feature(scalar))].into())
        }
    }
}

/// Tensors from predictions given per row (TF Serving, generic): objects
/// give one tensor per key; numbers, strings and lists one tensor `predictions`.
pub(crate) fn tensors_from_rows(items: &[Value]) -> Result<Vec<Tensor>, String> {
    let n = items.len();
    let column = |name: &str, values: Vec<&Value>| -> Result<Tensor, String> {
        let width = values
            .first()
            .and_then(|v| v.as_array())
            .map_or(1, Vec::len);
        let mut flat = Vec::new();
        for v in &values {
            if v.as_array().map_or(1, Vec::len) != width {
                return Err(format!("output `{name}`: rows of different lengths"));
            }
            flatten(v, &mut flat);
        }
        let shape = if width == 1 && !values.first().is_some_and(|v| v.is_array()) {
            vec![n]
        } else {
            vec![n, width]
        };
        Ok(Tensor {
            name: name.to_string(),
            shape,
            data: tensor_data(&flat, &format!("output `{name}`"))?,
        })
    };
    if items.first().is_some_and(Value::is_object) {
        let keys: Vec<String> = items[0]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.iter()
            .map(|k| column(k, items.iter().map(|v| &v[k.as_str()]).collect()))
            .collect()
    } else {
        Ok(vec![column("predictions", items.iter().collect())?])
    }
}

/// What the adapters' tests share.
#[cfg(test)]
pub(crate) mod testing {
    use driftwatch_protocol::FeatureValue;

    use crate::config::Model;

    /// Model `m` in front of `http://u`, with `yaml` lines added.
    pub fn model(yaml: &str) -> Model {
        serde_yaml_ng::from_str(&format!("name: m\nupstream: http://u\n{yaml}")).expect("model")
    }

    pub fn num(x: f64) -> FeatureValue {
        FeatureValue::Number(x)
    }
}

#[cfg(test)]
mod tests {
    use super::is_inference;
    use crate::config::Protocol;

    #[test]
    fn health_metadata_and_management_calls_are_not_inferences() {
        for (protocol, method, path) in [
            (Protocol::KserveV2, "GET", "/v2/health/ready"),
            (Protocol::KserveV2, "GET", "/v2/models/credit"),
            (Protocol::KserveV2, "GET", "/v2/models/credit/ready"),
            (Protocol::KserveV2, "HEAD", "/v2"),
            (Protocol::KserveV2, "POST", "/v2/repository/index"),
            (
                Protocol::KserveV2,
                "POST",
                "/v2/repository/models/credit/load",
            ),
            (
                Protocol::KserveV2,
                "POST",
                "/v2/models/credit/trace/setting",
            ),
            (
                Protocol::KserveV2,
                "POST",
                "/v2/systemsharedmemory/region/r/register",
            ),
            (Protocol::Tfserving, "GET", "/v1/models/credit/metadata"),
            (Protocol::Generic, "OPTIONS", "/predict"),
        ] {
            assert!(!is_inference(protocol, method, path), "{method} {path}");
        }
        for (protocol, method, path) in [
            (Protocol::KserveV2, "POST", "/v2/models/credit/infer"),
            (
                Protocol::KserveV2,
                "POST",
                "/v2/models/credit/versions/1/infer",
            ),
            (Protocol::Tfserving, "POST", "/v1/models/credit:predict"),
            (Protocol::Generic, "PUT", "/score"),
        ] {
            assert!(is_inference(protocol, method, path), "{method} {path}");
        }
    }
}
