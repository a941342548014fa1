//! `driftwatch-example-champion`: a tiny KServe v2 (Open Inference
//! Protocol) model server for the demo and the tests, serving an ONNX
//! classifier through ort: `POST /v2/models/{name}/infer` reads the
//! request's features (per-feature tensors or one `[N, F]` tensor) and
//! answers `label` (INT64) and `probabilities` (FP32 `[N, C]`);
//! `GET /v2/health/ready` answers when the model is loaded.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use driftwatch_agent::adapters::{parse_request, Data};
use driftwatch_agent::config::{Device, Model};
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

async fn handle(
    s: Arc<Server>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/v2/health/ready" || path == "/v2/health/live" {
        return Ok(reply(StatusCode::OK, json!({"ready": true})));
    }
    if path != format!("/v2/models/{}/infer", s.name) {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no route {path}")}),
        ));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": e.to_string()}),
            ))
        }
    };
    let rows = match parse_request(&s.spec, &body) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return Ok(reply(StatusCode::BAD_REQUEST, json!({"error": "no rows"}))),
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error": e.to_string()}),
            ))
        }
    };
    let input: Vec<Vec<f32>> = rows.iter().map(|r| columns(r, &s.features)).collect();
    let outputs = {
        let mut model = s.model.lock().unwrap_or_else(|p| p.into_inner());
        model.run(&input)
    };
    let outputs = match outputs {
        Ok(o) => o,
        Err(e) => {
            return Ok(reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": e}),
            ))
        }
    };
    let tensors: Vec<serde_json::Value> = outputs
        .iter()
        .map(|t| {
            let (datatype, data) = match &t.data {
                Data::Num(v) if t.name == "label" => (
                    "INT64",
                    json!(v.iter().map(|x| *x as i64).collect::<Vec<_>>()),
                ),
                Data::Num(v) => ("FP32", json!(v)),
                Data::Str(v) => ("BYTES", json!(v)),
                Data::Bool(v) => ("BOOL", json!(v)),
            };
            json!({"name": t.name, "shape": t.shape, "datatype": datatype, "data": data})
        })
        .collect();
    Ok(reply(
        StatusCode::OK,
        json!({"model_name": s.name, "model_version": "1", "outputs": tensors}),
    ))
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
    let model = match OnnxModel::load(&env, &cli.model_file, None, Device::Cpu, 1) {
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
        let listener = match tokio::net::TcpListener::bind(&cli.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", cli.listen);
                return ExitCode::from(1);
            }
        };
        if let Ok(addr) = listener.local_addr() {
            println!("listening on {addr}");
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
