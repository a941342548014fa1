//! `driftwatch-example-champion`: a tiny KServe v2 (Open Inference
//! Protocol) model server for the demo and the tests, serving an ONNX
//! classifier through ort: `POST /v2/models/{name}/infer` reads the
//! request's features (per-feature tensors or one `[N, F]` tensor) and
//! answers `label` (INT64) and `probabilities` (FP32 `[N, C]`), in JSON
//! or as binary tensors (the binary tensor extension, both ways, as
//! tritonclient uses it); `GET /v2/health/{live,ready}`, `GET /v2`,
//! `GET /v2/models/{name}[/versions/1]` (metadata) and `.../ready`
//! answer as a KServe v2 server does.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use driftwatch_agent::adapters::grpc::{framed, framed_with, ModelInferResponse, TensorMessage};
use driftwatch_agent::adapters::{binary, grpc, parse_request, Data, Tensor};
use driftwatch_agent::config::{Device, Model};
use driftwatch_agent::proxy::grpc::grpc_message;
use driftwatch_agent::shadow::columns;
use driftwatch_agent::shadow::onnx::{environment, OnnxModel};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "driftwatch-example-champion",
    version,
    about = "A tiny KServe v2 server for an ONNX classifier"
)]
struct Cli {
    /// The ONNX model (one float32 [N, F] input).
    #[arg(long)]
    model_file: std::path::PathBuf,
    /// The model's name in the URL.
    #[arg(long, default_value = "credit")]
    name: String,
    /// The model's input columns, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "age,income,loan_amount,bureau_score,dependents,has_card"
    )]
    features: Vec<String>,
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// Also serve KServe v2 gRPC (cleartext HTTP/2) on this address.
    #[arg(long)]
    grpc_listen: Option<String>,
    /// The ONNX Runtime library (default: ORT_DYLIB_PATH).
    #[arg(long)]
    ort_library: Option<std::path::PathBuf>,
}

struct Server {
    name: String,
    features: Vec<String>,
    spec: Model,
    model: Mutex<OnnxModel>,
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The model's metadata (KServe v2): one FP32 input per feature (an
/// `[N, F]` tensor of them is read too), `label` and `probabilities` out.
fn metadata(s: &Server) -> serde_json::Value {
    let inputs: Vec<serde_json::Value> = s
        .features
        .iter()
        .map(|f| json!({"name": f, "datatype": "FP32", "shape": [-1]}))
        .collect();
    json!({
        "name": s.name,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, -1]},
        ],
    })
}

async fn handle(
    s: Arc<Server>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let model = format!("/v2/models/{}", s.name);
    let versioned = format!("{model}/versions/1");
    let get = req.method() == hyper::Method::GET;
    if get && (path == "/v2/health/ready" || path == "/v2/health/live") {
        return Ok(reply(StatusCode::OK, json!({"ready": true, "live": true})));
    }
    if get && path == "/v2" {
        return Ok(reply(
            StatusCode::OK,
            json!({"name": "driftwatch-example-champion", "version": env!("CARGO_PKG_VERSION"),
                   "extensions": ["binary_tensor_data"]}),
        ));
    }
    if get && (path == model || path == versioned) {
        return Ok(reply(StatusCode::OK, metadata(&s)));
    }
    if get && (path == format!("{model}/ready") || path == format!("{versioned}/ready")) {
        return Ok(reply(
            StatusCode::OK,
            json!({"name": s.name, "ready": true}),
        ));
    }
    if path != format!("{model}/infer") && path != format!("{versioned}/infer") {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no route {} {path}", req.method())}),
        ));
    }
    let json_len = binary::json_len(
        req.headers()
            .get(binary::HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": e.to_string()}),
            ))
        }
    };
    let rows = match parse_request(&s.spec, &body, json_len) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return Ok(reply(StatusCode::BAD_REQUEST, json!({"error": "no rows"}))),
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": e.to_string()}),
            ))
        }
    };
    // The request's JSON part is valid: parse_request read it.
    let request: serde_json::Value =
        serde_json::from_slice(&body[..json_len.unwrap_or(body.len())]).unwrap_or_default();
    let outputs = match run(&s, &rows) {
        Ok(o) => o,
        Err(e) => {
            return Ok(reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": e}),
            ))
        }
    };
    Ok(answer(&s, &request, &outputs))
}

/// The model's outputs for `rows`.
fn run(s: &Server, rows: &[driftwatch_agent::adapters::Row]) -> Result<Vec<Tensor>, String> {
    let input: Vec<Vec<f32>> = rows.iter().map(|r| columns(r, &s.features)).collect();
    let mut model = s.model.lock().unwrap_or_else(|p| p.into_inner());
    model.run(&input)
}

/// An output tensor's KServe v2 datatype, JSON data and raw bytes
/// (`label` INT64, other numbers FP32).
fn encoded(t: &Tensor) -> (&'static str, serde_json::Value, Vec<u8>) {
    match &t.data {
        Data::Num(v) if t.name == "label" => (
            "INT64",
            json!(v.iter().map(|x| *x as i64).collect::<Vec<_>>()),
            v.iter().flat_map(|x| (*x as i64).to_le_bytes()).collect(),
        ),
        Data::Num(v) => (
            "FP32",
            json!(v),
            v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect(),
        ),
        Data::Str(v) => (
            "BYTES",
            json!(v),
            v.iter()
                .flat_map(|x| {
                    let mut b = (x.len() as u32).to_le_bytes().to_vec();
                    b.extend_from_slice(x.as_bytes());
                    b
                })
                .collect(),
        ),
        Data::Bool(v) => ("BOOL", json!(v), v.iter().map(|b| u8::from(*b)).collect()),
    }
}

/// The inference answer: the outputs the request asks for (all when it
/// names none), each in JSON or, where asked (`binary_data` on the
/// output, `binary_data_output` on the request), as binary data after
/// the JSON, with `Inference-Header-Content-Length`.
fn answer(s: &Server, request: &serde_json::Value, outputs: &[Tensor]) -> Response<Full<Bytes>> {
    let wanted = request["outputs"].as_array();
    let all_binary = request["parameters"]["binary_data_output"].as_bool() == Some(true);
    let mut tensors = Vec::new();
    let mut raw = Vec::new();
    for t in outputs {
        let asked = match wanted {
            Some(list) => list.iter().find(|o| o["name"].as_str() == Some(&t.name)),
            None => Some(&serde_json::Value::Null),
        };
        let Some(asked) = asked else { continue };
        let as_binary = asked["parameters"]["binary_data"]
            .as_bool()
            .unwrap_or(all_binary);
        let (datatype, data, bytes) = encoded(t);
        if as_binary {
            tensors.push(
                json!({"name": t.name, "shape": t.shape, "datatype": datatype,
                                "parameters": {"binary_data_size": bytes.len()}}),
            );
            raw.extend_from_slice(&bytes);
        } else {
            tensors.push(
                json!({"name": t.name, "shape": t.shape, "datatype": datatype, "data": data}),
            );
        }
    }
    let mut head = json!({"model_name": s.name, "model_version": "1", "outputs": tensors});
    if let Some(id) = request.get("id") {
        head["id"] = id.clone();
    }
    if raw.is_empty() {
        return reply(StatusCode::OK, head);
    }
    let mut body = head.to_string().into_bytes();
    let json_len = body.len();
    body.extend_from_slice(&raw);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    r.headers_mut().insert(
        hyper::header::HeaderName::from_static(binary::HEADER),
        hyper::header::HeaderValue::from(json_len),
    );
    r
}

type GrpcBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A gRPC call (`--grpc-listen`, KServe v2 `GRPCInferenceService`):
/// `ModelInfer` (typed or raw inputs; raw outputs; a gzip-compressed
/// request gets a gzip-compressed answer, a deflate one deflate's),
/// `ServerLive`, `ServerReady` and `ModelReady`; other methods are
/// `UNIMPLEMENTED`.
async fn grpc_call(
    s: Arc<Server>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<GrpcBody>, Infallible> {
    let method = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    let encoding = grpc::Encoding::of(req.headers());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let outcome: Result<Vec<u8>, (u32, String)> = match method.as_str() {
        "ServerLive" | "ServerReady" | "ModelReady" => Ok(framed(&Flag { value: true })),
        "ModelInfer" => grpc_infer(&s, &body, encoding).map_err(|e| (3, e)),
        other => Err((12, format!("{other} is not served here"))),
    };
    let mut trailers = hyper::HeaderMap::new();
    let mut frames = Vec::new();
    match outcome {
        Ok(message) => {
            frames.push(hyper::body::Frame::data(Bytes::from(message)));
            trailers.insert("grpc-status", hyper::header::HeaderValue::from(0));
        }
        Err((code, why)) => {
            trailers.insert("grpc-status", hyper::header::HeaderValue::from(code));
            trailers.insert("grpc-message", grpc_message(&why));
        }
    }
    frames.push(hyper::body::Frame::trailers(trailers));
    let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, Infallible>));
    let mut r = Response::new(http_body_util::StreamBody::new(stream).boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    if let Some(name) = encoding.name() {
        r.headers_mut().insert(
            "grpc-encoding",
            hyper::header::HeaderValue::from_static(name),
        );
    }
    Ok(r)
}

/// `ServerLiveResponse.live`, `ServerReadyResponse.ready`,
/// `ModelReadyResponse.ready`: field 1 of each.
#[derive(Clone, PartialEq, prost::Message)]
struct Flag {
    #[prost(bool, tag = "1")]
    value: bool,
}

/// A `ModelInfer` answer, framed: every output, raw.
fn grpc_infer(s: &Server, body: &[u8], encoding: grpc::Encoding) -> Result<Vec<u8>, String> {
    let rows = grpc::parse_request(&s.spec, body, encoding).map_err(|e| e.to_string())?;
    let outputs = run(s, &rows)?;
    let mut response = ModelInferResponse {
        model_name: s.name.clone(),
        ..ModelInferResponse::default()
    };
    for t in &outputs {
        let (datatype, _, bytes) = encoded(t);
        response.outputs.push(TensorMessage {
            name: t.name.clone(),
            datatype: datatype.to_string(),
            shape: t.shape.iter().map(|d| *d as i64).collect(),
            contents: None,
        });
        response.raw_output_contents.push(bytes);
    }
    Ok(framed_with(&response, encoding))
}

/// A listener on `addr`, announced on stdout as `{what} on ADDR`; none
/// (said on stderr) when it cannot listen.
async fn bind(addr: &str, what: &str) -> Option<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            if let Ok(a) = l.local_addr() {
                println!("{what} on {a}");
            }
            Some(l)
        }
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            None
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = match environment(cli.ort_library.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let model = match OnnxModel::load(&env, &cli.model_file, None, Device::Cpu, 1, None) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let spec: Model =
        serde_yaml_ng::from_str(&format!("name: {:?}\nupstream: http://unused\n", cli.name))
            .expect("a valid model");
    let server = Arc::new(Server {
        name: cli.name,
        features: cli.features,
        spec,
        model: Mutex::new(model),
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let Some(listener) = bind(&cli.listen, "listening").await else {
            return ExitCode::from(1);
        };
        if let Some(grpc_listen) = &cli.grpc_listen {
            let Some(grpc) = bind(grpc_listen, "grpc").await else {
                return ExitCode::from(1);
            };
            let server = server.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = grpc.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let s = server.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| grpc_call(s.clone(), req));
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    });
                }
            });
        }
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let s = server.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(s.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
