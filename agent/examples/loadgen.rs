//! The agent benchmark's tools (bench/agent_load.sh), kept cheap so that
//! they take as little as possible of the cores they share with what they
//! measure:
//!
//! - `rate`: open-loop load at a fixed request rate over keep-alive
//!   connections (one thread each, blocking I/O); prints latency quantiles
//!   measured from the moment a request is written, and how many requests
//!   left more than 1 ms after their scheduled time (when that count is
//!   not small, the figures are the load generator's, not the server's).
//! - `grpc-rate`: the same open-loop load as KServe v2 gRPC `ModelInfer`
//!   calls (the request's tensors sent raw, as tritonclient sends them),
//!   multiplexed over a few HTTP/2 connections on one thread.
//! - `max`: closed-loop saturation, every connection sending back to back;
//!   prints completed requests per second.
//! - `sink`: a collector stand-in that acknowledges every event batch.
//! - `relay`: the least a reverse proxy can do, for reference: a thread per
//!   connection copying each request to the upstream and its response
//!   back, bytes unchanged, over one upstream connection per client
//!   connection. What it adds is the cost of the extra hop itself on this
//!   machine (the system calls and thread wakeups), with no proxy's work.
//! - `onnx`: shadow scoring throughput, the scorer thread's work per batch
//!   (`OnnxModel::run` and reading its outputs), on the rows of
//!   examples/credit/expected.json tiled to the batch size, as
//!   bench/ort_python.py does with Python onnxruntime.
//!
//! Every mode prints one JSON line.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use driftwatch_agent::adapters::outputs_from_tensors;
use driftwatch_agent::adapters::OutputSpec;
use driftwatch_agent::config::{Device, OutputNames};
use driftwatch_agent::shadow::onnx::{environment, OnnxModel};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Load generator, event sink and ONNX throughput probe for bench/agent_load.sh")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Fixed-rate (open-loop) load; latency quantiles.
    Rate {
        #[arg(long)]
        url: String,
        /// The request body (JSON), sent with every request.
        #[arg(long)]
        body: PathBuf,
        #[command(flatten)]
        load: Load,
        #[arg(long, default_value_t = 16)]
        connections: usize,
    },
    /// Fixed-rate (open-loop) gRPC `ModelInfer` calls; latency quantiles.
    GrpcRate {
        /// host:port of a KServe v2 gRPC endpoint.
        #[arg(long)]
        addr: String,
        /// The request as KServe v2 JSON (as for `rate`), sent as a
        /// `ModelInferRequest` with raw contents.
        #[arg(long)]
        body: PathBuf,
        #[arg(long, default_value = "credit")]
        model: String,
        #[command(flatten)]
        load: Load,
        /// HTTP/2 connections the calls are spread over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Closed-loop saturation; requests per second.
    Max {
        #[arg(long)]
        url: String,
        #[arg(long)]
        body: PathBuf,
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        #[arg(long, default_value_t = 32)]
        connections: usize,
    },
    /// Acknowledges every POST (a collector stand-in for the agent).
    Sink {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Relays requests to `upstream` and responses back, doing nothing else.
    Relay {
        #[arg(long)]
        upstream: String,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Rows per second of the shadow scorer's per-batch work.
    Onnx {
        #[arg(long)]
        model: PathBuf,
        /// Rows per batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Intra-op threads of the session.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// examples/credit/expected.json (its `rows`).
        #[arg(long)]
        rows: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().mode {
        Mode::Rate {
            url,
            body,
            load,
            connections,
        } => rate(&url, &std::fs::read(body)?, &load, connections),
        Mode::GrpcRate {
            addr,
            body,
            model,
            load,
            connections,
        } => grpc_rate(
            &addr,
            &grpc_request(&std::fs::read(body)?, &model)?,
            &load,
            connections,
        ),
        Mode::Max {
            url,
            body,
            duration,
            warmup,
            connections,
        } => max(&url, &std::fs::read(body)?, duration, warmup, connections),
        Mode::Sink { listen } => sink(&listen),
        Mode::Relay { upstream, listen } => relay(&upstream, &listen),
        Mode::Onnx {
            model,
            batch,
            threads,
            rounds,
            rows,
        } => onnx(&model, batch, threads, rounds, &rows),
    }
}

/// One keep-alive HTTP/1.1 connection sending the same request.
struct Conn {
    addr: String,
    request: Arc<Vec<u8>>,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(url: &str, body: &[u8]) -> Result<Conn> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("only http:// URLs: {url}"))?;
        let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut request = format!(
            "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        Ok(Conn {
            addr: addr.to_string(),
            request: Arc::new(request),
            stream: None,
        })
    }

    fn clone_fresh(&self) -> Conn {
        Conn {
            addr: self.addr.clone(),
            request: self.request.clone(),
            stream: None,
        }
    }

    /// Sends the request and reads the whole response; the status code.
    /// A broken connection is dropped (the next call reconnects).
    fn send(&mut self) -> Result<u16> {
        let result = self.exchange();
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self) -> Result<u16> {
        if self.stream.is_none() {
            let s =
                TcpStream::connect(&self.addr).with_context(|| format!("connect {}", self.addr))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.stream = Some(BufReader::with_capacity(64 * 1024, s));
        }
        let reader = self
            .stream
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        reader.get_mut().write_all(&self.request)?;
        let (status, _) = read_message(reader)?;
        let status = status
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {status:?}"))?;
        Ok(status)
    }
}

/// A message's head as read: its first line, the bytes of the whole head,
/// and its framing.
struct Head {
    first: String,
    raw: Vec<u8>,
    length: usize,
    chunked: bool,
}

/// Reads an HTTP/1.1 message head; `None` when the connection closed
/// before one began.
fn read_head(reader: &mut BufReader<TcpStream>) -> Result<Option<Head>> {
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut head = Head {
        raw: first.clone().into_bytes(),
        first,
        length: 0,
        chunked: false,
    };
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed in the headers");
        }
        head.raw.extend_from_slice(line.as_bytes());
        let h = line.trim_end();
        if h.is_empty() {
            return Ok(Some(head));
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                head.length = v.trim().parse()?;
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = v.to_ascii_lowercase().contains("chunked");
            }
        }
    }
}

/// Reads one HTTP/1.1 message: its first line and its body (Content-Length
/// or chunked; a response without either has none).
fn read_message(reader: &mut BufReader<TcpStream>) -> Result<(String, Vec<u8>)> {
    let head = read_head(reader)?.ok_or_else(|| anyhow!("connection closed"))?;
    let mut body = Vec::new();
    if head.chunked {
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16)?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(head.length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok((head.first, body))
}

/// Every load thread's latencies (ns), together and sorted.
fn sorted_latencies(threads: Vec<std::thread::JoinHandle<Vec<u64>>>) -> Result<Vec<u64>> {
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| anyhow!("a load thread panicked"))?);
    }
    all.sort_unstable();
    Ok(all)
}

/// The latency quantiles (ms) of a fixed-rate run, as its JSON line has them.
fn quantiles(sorted: &[u64]) -> serde_json::Value {
    json!({
        "p50_ms": quantile(sorted, 0.50),
        "p90_ms": quantile(sorted, 0.90),
        "p99_ms": quantile(sorted, 0.99),
        "p999_ms": quantile(sorted, 0.999),
        "max_ms": quantile(sorted, 1.0),
    })
}

/// One fixed-rate run's JSON line: `head` and the quantiles.
fn print_rate(mut head: serde_json::Value, sorted: &[u64]) {
    if let (Some(h), serde_json::Value::Object(q)) = (head.as_object_mut(), quantiles(sorted)) {
        h.extend(q);
    }
    println!("{head}");
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1e6
}

fn rate(url: &str, body: &[u8], load: &Load, connections: usize) -> Result<()> {
    load.check()?;
    let &Load {
        rps,
        duration,
        warmup,
    } = load;
    let conn = Conn::new(url, body)?;
    let start = Instant::now() + Duration::from_millis(200);
    let total = (rps * duration.as_secs_f64()) as u64;
    let first_measured = (rps * warmup.as_secs_f64()) as u64;
    let interval = 1.0 / rps;
    let late = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for k in 0..connections {
        let mut c = conn.clone_fresh();
        let (late, errors) = (late.clone(), errors.clone());
        threads.push(std::thread::spawn(move || {
            let mut latencies = Vec::new();
            let mut i = k as u64;
            while i < total {
                let scheduled = start + Duration::from_secs_f64(i as f64 * interval);
                let now = Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                let sent = Instant::now();
                let ok = matches!(c.send(), Ok(200));
                let took = sent.elapsed().as_nanos() as u64;
                if i >= first_measured {
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if sent.duration_since(scheduled) > Duration::from_millis(1) {
                        late.fetch_add(1, Ordering::Relaxed);
                    }
                    latencies.push(took);
                }
                i += connections as u64;
            }
            latencies
        }));
    }
    let all = sorted_latencies(threads)?;
    print_rate(
        json!({
            "mode": "rate",
            "url": url,
            "rps": rps,
            "measured": all.len(),
            "errors": errors.load(Ordering::Relaxed),
            "late_sends": late.load(Ordering::Relaxed),
        }),
        &all,
    );
    Ok(())
}

/// An open-loop load's rate and length.
#[derive(clap::Args)]
struct Load {
    #[arg(long, default_value_t = 1000.0)]
    rps: f64,
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Requests in the first part of the run are sent but not measured.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
}

impl Load {
    fn check(&self) -> Result<()> {
        if self.warmup >= self.duration {
            bail!(
                "--duration ({:?}) must be longer than --warmup ({:?}): nothing would be measured",
                self.duration,
                self.warmup
            );
        }
        Ok(())
    }
}

/// A KServe v2 JSON request as a framed `ModelInferRequest` with raw
/// contents (FP32, FP64, INT32, INT64 and BOOL tensors).
fn grpc_request(json: &[u8], model: &str) -> Result<bytes::Bytes> {
    use driftwatch_agent::adapters::grpc::{framed, ModelInferRequest, TensorMessage};
    let v: serde_json::Value = serde_json::from_slice(json)?;
    let mut request = ModelInferRequest {
        model_name: model.to_string(),
        ..ModelInferRequest::default()
    };
    for t in v["inputs"].as_array().ok_or_else(|| anyhow!("no inputs"))? {
        let datatype = t["datatype"].as_str().unwrap_or("").to_string();
        let mut values = Vec::new();
        flatten(&t["data"], &mut values);
        let raw: Vec<u8> = values
            .iter()
            .map(|x| match datatype.as_str() {
                "FP32" => Ok((*x as f32).to_le_bytes().to_vec()),
                "FP64" => Ok(x.to_le_bytes().to_vec()),
                "INT32" => Ok((*x as i32).to_le_bytes().to_vec()),
                "INT64" => Ok((*x as i64).to_le_bytes().to_vec()),
                "BOOL" => Ok(vec![u8::from(*x != 0.0)]),
                other => Err(anyhow!("datatype {other} is not sent raw here")),
            })
            .collect::<Result<Vec<_>>>()?
            .concat();
        request.inputs.push(TensorMessage {
            name: t["name"].as_str().unwrap_or("").to_string(),
            datatype,
            shape: t["shape"]
                .as_array()
                .map(|s| s.iter().filter_map(|d| d.as_i64()).collect())
                .unwrap_or_default(),
            contents: None,
        });
        request.raw_input_contents.push(raw);
    }
    Ok(framed(&request).into())
}

/// Numbers of nested JSON arrays, row-major (`null` and booleans as 0/1).
fn flatten(v: &serde_json::Value, out: &mut Vec<f64>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        serde_json::Value::Bool(b) => out.push(f64::from(u8::from(*b))),
        other => out.push(other.as_f64().unwrap_or(f64::NAN)),
    }
}

/// `grpc-rate`: calls scheduled at `load.rps`, each on its own task,
/// spread over the connections; latency from the call's start to its
/// trailers. A call counts as an error unless `grpc-status` is 0.
fn grpc_rate(addr: &str, message: &bytes::Bytes, load: &Load, connections: usize) -> Result<()> {
    use http_body_util::{BodyExt, Full};
    load.check()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(async {
        let mut senders = Vec::new();
        for _ in 0..connections.max(1) {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connect {addr}"))?;
            stream.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await?;
            tokio::spawn(conn);
            senders.push(sender);
        }
        let total = (load.rps * load.duration.as_secs_f64()) as u64;
        let first_measured = (load.rps * load.warmup.as_secs_f64()) as u64;
        let start = tokio::time::Instant::now() + Duration::from_millis(200);
        let uri = format!("http://{addr}/inference.GRPCInferenceService/ModelInfer");
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..total {
            let scheduled = start + Duration::from_secs_f64(i as f64 / load.rps);
            tokio::time::sleep_until(scheduled).await;
            let mut sender = senders[i as usize % senders.len()].clone();
            let request = hyper::Request::post(&uri)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(message.clone()))?;
            calls.spawn(async move {
                let sent = tokio::time::Instant::now();
                let ok = match sender.send_request(request).await {
                    Ok(resp) => resp.into_body().collect().await.ok().is_some_and(|c| {
                        c.trailers()
                            .and_then(|t| t.get("grpc-status"))
                            .is_some_and(|s| s == "0")
                    }),
                    Err(_) => false,
                };
                let late = sent.duration_since(scheduled) > Duration::from_millis(1);
                (
                    i >= first_measured,
                    sent.elapsed().as_nanos() as u64,
                    ok,
                    late,
                )
            });
        }
        let mut results = Vec::new();
        while let Some(r) = calls.join_next().await {
            results.push(r?);
        }
        Ok::<_, anyhow::Error>(results)
    })?;
    let measured: Vec<_> = results.into_iter().filter(|r| r.0).collect();
    let mut all: Vec<u64> = measured.iter().map(|r| r.1).collect();
    all.sort_unstable();
    print_rate(
        json!({
            "mode": "grpc-rate",
            "addr": addr,
            "rps": load.rps,
            "measured": all.len(),
            "errors": measured.iter().filter(|r| !r.2).count(),
            "late_sends": measured.iter().filter(|r| r.3).count(),
        }),
        &all,
    );
    Ok(())
}

fn max(
    url: &str,
    body: &[u8],
    duration: Duration,
    warmup: Duration,
    connections: usize,
) -> Result<()> {
    let conn = Conn::new(url, body)?;
    let started = Instant::now();
    let (measure_from, end) = (started + warmup, started + warmup + duration);
    let errors = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..connections {
        let mut c = conn.clone_fresh();
        let errors = errors.clone();
        threads.push(std::thread::spawn(move || {
            let mut latencies = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let ok = matches!(c.send(), Ok(200));
                if sent >= measure_from {
                    if ok {
                        latencies.push(sent.elapsed().as_nanos() as u64);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let all = sorted_latencies(threads)?;
    println!(
        "{}",
        json!({
            "mode": "max",
            "url": url,
            "connections": connections,
            "completed": all.len(),
            "errors": errors.load(Ordering::Relaxed),
            "rps": all.len() as f64 / duration.as_secs_f64(),
            "p50_ms": quantile(&all, 0.50),
            "p99_ms": quantile(&all, 0.99),
        })
    );
    Ok(())
}

fn sink(listen: &str) -> Result<()> {
    let listener = TcpListener::bind(listen)?;
    println!("listening on {}", listener.local_addr()?);
    let stop = Arc::new(AtomicBool::new(false));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut reader = BufReader::new(stream);
            while !stop.load(Ordering::Relaxed) {
                if read_message(&mut reader).is_err() {
                    return;
                }
                let reply = b"{\"errors\":[]}";
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    reply.len()
                );
                let w = reader.get_mut();
                if w.write_all(head.as_bytes())
                    .and_then(|_| w.write_all(reply))
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    Ok(())
}

fn relay(upstream: &str, listen: &str) -> Result<()> {
    let listener = TcpListener::bind(listen)?;
    println!("relaying on {}", listener.local_addr()?);
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            if let Err(e) = relay_connection(client, &upstream) {
                eprintln!("relay: {e:#}");
            }
        });
    }
    Ok(())
}

/// Relays the messages of one client connection until it closes.
fn relay_connection(client: TcpStream, upstream: &str) -> Result<()> {
    let up = TcpStream::connect(upstream).with_context(|| format!("connect {upstream}"))?;
    client.set_nodelay(true)?;
    up.set_nodelay(true)?;
    let (mut client_w, mut up_w) = (client.try_clone()?, up.try_clone()?);
    let (mut client_r, mut up_r) = (BufReader::new(client), BufReader::new(up));
    // One whole message (Content-Length framed) in one buffer.
    let message = |reader: &mut BufReader<TcpStream>| -> Result<Option<Vec<u8>>> {
        let Some(head) = read_head(reader)? else {
            return Ok(None);
        };
        if head.chunked {
            bail!("chunked messages are not relayed");
        }
        let mut all = head.raw;
        let n = all.len();
        all.resize(n + head.length, 0);
        reader.read_exact(&mut all[n..])?;
        Ok(Some(all))
    };
    while let Some(request) = message(&mut client_r)? {
        up_w.write_all(&request)?;
        let response = message(&mut up_r)?.ok_or_else(|| anyhow!("upstream closed"))?;
        client_w.write_all(&response)?;
    }
    Ok(())
}

fn onnx(
    model: &std::path::Path,
    batch: usize,
    threads: usize,
    rounds: usize,
    rows: &std::path::Path,
) -> Result<()> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(rows)?)?;
    let base: Vec<Vec<f32>> = doc["rows"]
        .as_array()
        .ok_or_else(|| anyhow!("{}: no `rows`", rows.display()))?
        .iter()
        .map(|r| {
            r.as_array()
                .map(|r| {
                    r.iter()
                        .map(|x| x.as_f64().map_or(f32::NAN, |x| x as f32))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let data: Vec<Vec<f32>> = (0..batch).map(|i| base[i % base.len()].clone()).collect();
    let env = environment(None).map_err(|e| anyhow!(e))?;
    let mut m =
        OnnxModel::load(&env, model, None, Device::Cpu, threads, None).map_err(|e| anyhow!(e))?;
    let names = OutputNames::default();
    let spec = OutputSpec {
        names: &names,
        classes: None,
        positive_class: "1",
    };
    let score = |m: &mut OnnxModel| -> Result<()> {
        let t = m.run(&data).map_err(|e| anyhow!(e))?;
        let out = outputs_from_tensors(&t, data.len(), &spec).map_err(|e| anyhow!(e))?;
        std::hint::black_box(out);
        Ok(())
    };
    // The same warm-up and iteration count as bench/ort_python.py: one
    // round of about 200 000 rows, not measured, then the rounds.
    let iterations = (200_000 / batch).max(20);
    for _ in 0..iterations {
        score(&mut m)?;
    }
    let mut per_round = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..iterations {
            score(&mut m)?;
        }
        per_round.push((iterations * batch) as f64 / t.elapsed().as_secs_f64());
    }
    let mut sorted = per_round.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "mode": "onnx",
            "model": model.display().to_string(),
            "batch": batch,
            "threads": threads,
            "rows_per_s_median": sorted[sorted.len() / 2],
            "rounds": per_round,
        })
    );
    Ok(())
}
