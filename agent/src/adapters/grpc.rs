//! KServe v2 over gRPC (`inference.GRPCInferenceService/ModelInfer`, as
//! KServe, Triton and MLServer serve it): a body of length-prefixed
//! messages (a flag byte, a 4-byte big-endian length), one
//! `ModelInferRequest` or `ModelInferResponse` for a unary call. Tensor
//! data comes typed (`contents`) or raw (`raw_input_contents` /
//! `raw_output_contents`, one per tensor, in the binary extension's
//! layout); either gives the same tensors, rows and outputs as the HTTP
//! forms. The messages are declared here (prost derive; no protoc): only
//! the fields read, by their numbers in KServe's `grpc_predict_v2.proto`.

use std::borrow::Cow;
use std::io::Read;

use driftwatch_protocol::Output;

use super::kserve_v2::rows_from_tensors;
use super::{binary, outputs_from_tensors, AdapterError, Data, OutputSpec, Row, Tensor};
use crate::config::Model;

/// The gRPC path of the call read as an inference.
pub const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferRequest {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(message, repeated, tag = "5")]
    pub inputs: Vec<TensorMessage>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub raw_input_contents: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferResponse {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<TensorMessage>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub raw_output_contents: Vec<Vec<u8>>,
}

/// An input or output tensor (the two messages share these fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorMessage {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub datatype: String,
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    #[prost(message, optional, tag = "5")]
    pub contents: Option<Contents>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Contents {
    #[prost(bool, repeated, tag = "1")]
    pub bool_contents: Vec<bool>,
    #[prost(int32, repeated, tag = "2")]
    pub int_contents: Vec<i32>,
    #[prost(int64, repeated, tag = "3")]
    pub int64_contents: Vec<i64>,
    #[prost(uint32, repeated, tag = "4")]
    pub uint_contents: Vec<u32>,
    #[prost(uint64, repeated, tag = "5")]
    pub uint64_contents: Vec<u64>,
    #[prost(float, repeated, tag = "6")]
    pub fp32_contents: Vec<f32>,
    #[prost(double, repeated, tag = "7")]
    pub fp64_contents: Vec<f64>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub bytes_contents: Vec<Vec<u8>>,
}

/// Why a gRPC body was not read.
fn unread(why: impl Into<String>) -> AdapterError {
    AdapterError::Grpc(why.into())
}

/// How a call's messages are compressed (its `grpc-encoding`), which
/// the flag of a message says it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    Identity,
    Gzip,
    /// zlib's format, as gRPC's `deflate` is.
    Deflate,
    /// Another algorithm (snappy, zstd): not read.
    Other,
}

impl Encoding {
    /// The `grpc-encoding` of a call's headers.
    pub fn of(headers: &hyper::HeaderMap) -> Encoding {
        match headers.get("grpc-encoding").map(|v| v.as_bytes()) {
            None | Some(b"identity") => Encoding::Identity,
            Some(b"gzip") => Encoding::Gzip,
            Some(b"deflate") => Encoding::Deflate,
            Some(_) => Encoding::Other,
        }
    }

    /// Its `grpc-encoding` name, for the algorithms read and written here.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Encoding::Gzip => Some("gzip"),
            Encoding::Deflate => Some("deflate"),
            Encoding::Identity | Encoding::Other => None,
        }
    }
}

/// The one message of a unary call's body, decompressed where its flag
/// says so, and then no larger than `max` bytes.
pub fn message(body: &[u8], encoding: Encoding, max: usize) -> Result<Cow<'_, [u8]>, AdapterError> {
    let Some((head, rest)) = body.split_first_chunk::<5>() else {
        return Err(unread(format!(
            "a gRPC message needs 5 bytes of prefix, the body has {}",
            body.len()
        )));
    };
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len != rest.len() {
        return Err(unread(format!(
            "the gRPC message says {len} bytes, the body holds {} after its prefix (one message per unary call)",
            rest.len()
        )));
    }
    if head[0] == 0 {
        return Ok(Cow::Borrowed(rest));
    }
    let decoder: Box<dyn Read + '_> =
        match encoding {
            Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(rest)),
            Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(rest)),
            Encoding::Identity | Encoding::Other => return Err(unread(
                "a compressed gRPC message whose grpc-encoding is not gzip or deflate is not read",
            )),
        };
    let mut out = Vec::new();
    // One byte past `max` tells a message too large from one that fits.
    let read = decoder.take(max as u64 + 1).read_to_end(&mut out);
    read.map_err(|e| {
        unread(format!(
            "the compressed gRPC message does not decompress: {e}"
        ))
    })?;
    if out.len() > max {
        return Err(AdapterError::TooLarge(format!(
            "the gRPC message decompresses to more than max_body_bytes ({max})"
        )));
    }
    Ok(Cow::Owned(out))
}

/// A `ModelInferRequest`'s model name alone: its other fields (the
/// tensors) are skipped, not copied (routing reads it on the traffic path).
#[derive(Clone, PartialEq, prost::Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    model_name: String,
}

/// The model a `ModelInfer` request names ("" when unreadable).
pub fn model_name(body: &[u8], encoding: Encoding, max: usize) -> String {
    message(body, encoding, max)
        .ok()
        .and_then(|m| <NameOnly as prost::Message>::decode(&*m).ok())
        .map(|r| r.model_name)
        .unwrap_or_default()
}

/// The rows of a `ModelInfer` request body.
pub fn parse_request(
    model: &Model,
    body: &[u8],
    encoding: Encoding,
) -> Result<Vec<Row>, AdapterError> {
    let r: ModelInferRequest =
        prost::Message::decode(&*message(body, encoding, model.max_body_bytes)?)
            .map_err(|e| unread(e.to_string()))?;
    let tensors = tensors(&r.inputs, &r.raw_input_contents)?;
    Ok(rows_from_tensors(&tensors, model.features.as_deref())?)
}

/// The outputs of a `ModelInfer` response body, one per row (`n` rows).
pub fn parse_response(
    model: &Model,
    body: &[u8],
    encoding: Encoding,
    n: usize,
) -> Result<Vec<Output>, AdapterError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let r: ModelInferResponse =
        prost::Message::decode(&*message(body, encoding, model.max_body_bytes)?)
            .map_err(|e| unread(e.to_string()))?;
    let tensors = tensors(&r.outputs, &r.raw_output_contents)?;
    outputs_from_tensors(&tensors, n, &OutputSpec::of(model, &model.outputs))
}

/// The tensors of a message: each from its raw contents when the message
/// has them (one per tensor), else from its typed contents.
fn tensors(list: &[TensorMessage], raw: &[Vec<u8>]) -> Result<Vec<Tensor>, AdapterError> {
    if !raw.is_empty() && raw.len() != list.len() {
        return Err(AdapterError::Shape(format!(
            "{} tensors, {} raw contents: raw contents are one per tensor",
            list.len(),
            raw.len()
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let name = &t.name;
            let shape: Vec<usize> = t
                .shape
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<_, _>>()
                .map_err(|_| format!("tensor `{name}`: a negative size in {:?}", t.shape))?;
            let count = shape
                .iter()
                .try_fold(1usize, |a, &b| a.checked_mul(b))
                .ok_or_else(|| format!("tensor `{name}`: shape {shape:?} is too large"))?;
            let data = match raw.get(i) {
                Some(bytes) => {
                    binary::decode(name, &t.datatype, bytes, count).map_err(AdapterError::Binary)?
                }
                None => typed(name, &t.datatype, t.contents.as_ref(), count)?,
            };
            Ok(Tensor {
                name: name.clone(),
                shape,
                data,
            })
        })
        .collect()
}

/// A tensor's typed contents, which must fill its shape.
fn typed(
    name: &str,
    datatype: &str,
    contents: Option<&Contents>,
    count: usize,
) -> Result<Data, AdapterError> {
    let empty = Contents::default();
    let c = contents.unwrap_or(&empty);
    let data = match datatype {
        "BOOL" => Data::Bool(c.bool_contents.clone()),
        "INT8" | "INT16" | "INT32" => {
            Data::Num(c.int_contents.iter().map(|x| f64::from(*x)).collect())
        }
        "INT64" => Data::Num(c.int64_contents.iter().map(|x| *x as f64).collect()),
        "UINT8" | "UINT16" | "UINT32" => {
            Data::Num(c.uint_contents.iter().map(|x| f64::from(*x)).collect())
        }
        "UINT64" => Data::Num(c.uint64_contents.iter().map(|x| *x as f64).collect()),
        "FP32" => Data::Num(c.fp32_contents.iter().map(|x| f64::from(*x)).collect()),
        "FP64" => Data::Num(c.fp64_contents.clone()),
        "BYTES" => Data::Str(
            c.bytes_contents
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
        ),
        other => {
            return Err(AdapterError::Shape(format!(
                "tensor `{name}`: datatype {other:?} has no typed contents (send it raw)"
            )))
        }
    };
    if data.len() != count {
        return Err(AdapterError::Shape(format!(
            "tensor `{name}`: its shape needs {count} values, its {datatype} contents hold {}",
            data.len()
        )));
    }
    Ok(data)
}

/// A unary call's body: the message with its 5-byte prefix.
pub fn framed(message: &impl prost::Message) -> Vec<u8> {
    framed_with(message, Encoding::Identity)
}

/// A unary call's body compressed with `encoding` (gzip or deflate,
/// flagged as compressed; any other: as it is).
pub fn framed_with(message: &impl prost::Message, encoding: Encoding) -> Vec<u8> {
    let m = message.encode_to_vec();
    let level = flate2::Compression::default();
    let encoder: Option<Box<dyn Read + '_>> = match encoding {
        Encoding::Gzip => Some(Box::new(flate2::read::GzEncoder::new(&m[..], level))),
        Encoding::Deflate => Some(Box::new(flate2::read::ZlibEncoder::new(&m[..], level))),
        Encoding::Identity | Encoding::Other => None,
    };
    let compressed = encoder.and_then(|mut e| {
        let mut c = Vec::new();
        e.read_to_end(&mut c).ok().map(|_| c)
    });
    let (flag, data) = match compressed {
        Some(c) => (1, c),
        None => (0, m),
    };
    let mut out = Vec::with_capacity(5 + data.len());
    out.push(flag);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::testing::model;

    fn tensor(
        name: &str,
        datatype: &str,
        shape: &[i64],
        contents: Option<Contents>,
    ) -> TensorMessage {
        TensorMessage {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            contents,
        }
    }

    #[test]
    fn typed_and_raw_contents_give_the_rows_and_outputs_of_the_json_form() {
        let m = model("features: [age, income]\n");
        let json = br#"{"inputs": [
            {"name": "features", "shape": [2, 2], "datatype": "FP32", "data": [[30, 1000.5], [40, 2000]]},
            {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["DE", "FR"]},
            {"name": "has_card", "shape": [2], "datatype": "BOOL", "data": [true, false]}]}"#;
        let want = crate::adapters::parse_request(&m, json, None).expect("json rows");
        let typed = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![
                tensor(
                    "features",
                    "FP32",
                    &[2, 2],
                    Some(Contents {
                        fp32_contents: vec![30.0, 1000.5, 40.0, 2000.0],
                        ..Contents::default()
                    }),
                ),
                tensor(
                    "country",
                    "BYTES",
                    &[2],
                    Some(Contents {
                        bytes_contents: vec![b"DE".to_vec(), b"FR".to_vec()],
                        ..Contents::default()
                    }),
                ),
                tensor(
                    "has_card",
                    "BOOL",
                    &[2],
                    Some(Contents {
                        bool_contents: vec![true, false],
                        ..Contents::default()
                    }),
                ),
            ],
            ..ModelInferRequest::default()
        };
        assert_eq!(
            parse_request(&m, &framed(&typed), Encoding::Identity).expect("typed"),
            want
        );
        assert_eq!(
            model_name(&framed(&typed), Encoding::Identity, 1 << 20),
            "m"
        );
        let mut raw = typed.clone();
        raw.inputs.iter_mut().for_each(|t| t.contents = None);
        raw.raw_input_contents = vec![
            [30f32, 1000.5, 40.0, 2000.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            [
                2u32.to_le_bytes().as_slice(),
                b"DE",
                2u32.to_le_bytes().as_slice(),
                b"FR",
            ]
            .concat(),
            vec![1, 0],
        ];
        assert_eq!(
            parse_request(&m, &framed(&raw), Encoding::Identity).expect("raw"),
            want
        );

        let json = br#"{"outputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]},
            {"name": "probabilities", "shape": [2, 2], "datatype": "FP32", "data": [0.25, 0.75, 0.5, 0.5]}]}"#;
        let want = crate::adapters::parse_response(&m, json, None, 2).expect("json outputs");
        let response = ModelInferResponse {
            outputs: vec![
                tensor("label", "INT64", &[2], None),
                tensor("probabilities", "FP32", &[2, 2], None),
            ],
            raw_output_contents: vec![
                [1i64, 0].iter().flat_map(|x| x.to_le_bytes()).collect(),
                [0.25f32, 0.75, 0.5, 0.5]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ],
            ..ModelInferResponse::default()
        };
        assert_eq!(
            parse_response(&m, &framed(&response), Encoding::Identity, 2).expect("raw outputs"),
            want
        );
    }

    #[test]
    fn gzip_and_deflate_messages_read_as_the_uncompressed_one() {
        let m = model("");
        let request = ModelInferRequest {
            model_name: "credit".into(),
            inputs: vec![tensor(
                "x",
                "FP64",
                &[3],
                Some(Contents {
                    fp64_contents: vec![1.5, 2.5, 3.5],
                    ..Contents::default()
                }),
            )],
            ..ModelInferRequest::default()
        };
        let want = parse_request(&m, &framed(&request), Encoding::Identity).expect("plain");
        let response = ModelInferResponse {
            outputs: vec![tensor(
                "label",
                "INT64",
                &[3],
                Some(Contents {
                    int64_contents: vec![1, 0, 1],
                    ..Contents::default()
                }),
            )],
            ..ModelInferResponse::default()
        };
        let outputs = parse_response(&m, &framed(&response), Encoding::Identity, 3).expect("plain");
        for encoding in [Encoding::Gzip, Encoding::Deflate] {
            let body = framed_with(&request, encoding);
            assert_eq!(body[0], 1, "{encoding:?}: flagged compressed");
            assert_eq!(parse_request(&m, &body, encoding).expect("rows"), want);
            assert_eq!(model_name(&body, encoding, 1 << 20), "credit");
            let body = framed_with(&response, encoding);
            assert_eq!(
                parse_response(&m, &body, encoding, 3).expect("outputs"),
                outputs
            );
            // The flag without the algorithm in the headers, or another
            // algorithm's, is not read.
            for other in [Encoding::Identity, Encoding::Other] {
                let e = parse_request(&m, &body, other).expect_err("refused");
                assert!(e.to_string().contains("not gzip or deflate"), "{e}");
            }
        }
        // Deflate's bytes said to be gzip: refused with the reason.
        let e = parse_request(
            &m,
            &framed_with(&request, Encoding::Deflate),
            Encoding::Gzip,
        )
        .expect_err("wrong algorithm");
        assert_eq!(e.reason(), "grpc");
        assert!(e.to_string().contains("does not decompress"), "{e}");
        // A small message that decompresses past max_body_bytes (a zip
        // bomb) is refused as too large without being inflated whole.
        let mut bomb = model("");
        bomb.max_body_bytes = 4096;
        let big = ModelInferRequest {
            model_name: "x".repeat(1 << 20),
            ..ModelInferRequest::default()
        };
        let body = framed_with(&big, Encoding::Gzip);
        assert!(body.len() < 4096, "{} bytes compressed", body.len());
        let e = parse_request(&bomb, &body, Encoding::Gzip).expect_err("too large");
        assert_eq!(e.reason(), "too_large", "{e}");
    }

    #[test]
    fn bodies_that_are_not_one_readable_message_are_refused_with_the_reason() {
        let m = model("");
        let ok = framed(&ModelInferRequest {
            inputs: vec![tensor(
                "x",
                "FP32",
                &[2],
                Some(Contents {
                    fp32_contents: vec![1.0],
                    ..Contents::default()
                }),
            )],
            ..ModelInferRequest::default()
        });
        let reason = |body: &[u8]| {
            parse_request(&m, body, Encoding::Identity)
                .expect_err("refused")
                .to_string()
        };
        assert!(reason(&ok).contains("needs 2 values"), "{}", reason(&ok));
        assert!(reason(&ok[..3]).contains("5 bytes of prefix"));
        assert!(reason(&ok[..ok.len() - 1]).contains("says"));
        let mut compressed = ok.clone();
        compressed[0] = 1;
        assert!(reason(&compressed).contains("compressed"));
        let mut garbage = vec![0, 0, 0, 0, 3];
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(
            parse_request(&m, &garbage, Encoding::Identity)
                .expect_err("garbage")
                .reason(),
            "grpc"
        );
        let negative = framed(&ModelInferRequest {
            inputs: vec![tensor("x", "FP32", &[-1], None)],
            raw_input_contents: vec![vec![]],
            ..ModelInferRequest::default()
        });
        assert!(reason(&negative).contains("negative"));
    }
}
