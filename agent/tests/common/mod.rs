//! Real processes and servers on loopback for the agent's tests: the
//! agent binary, the example champion (ONNX through ort), a small
//! threaded HTTP server with a handler (misbehaving upstreams), and a
//! collector stand-in that records the events it is sent.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use driftwatch_testkit::{ort_library, repo};

/// A fresh directory for an agent's files.
pub fn temp_dir() -> PathBuf {
    driftwatch_testkit::temp_dir("agent")
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A message's first line, headers and body.
type Message = (String, Vec<(String, String)>, Vec<u8>);

pub fn read_message(reader: &mut BufReader<TcpStream>) -> Option<Message> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if line.trim().is_empty() {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = size.split(';').next().unwrap_or("");
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                // Trailer fields, up to an empty line.
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..n]);
        }
        body
    } else if get("content-length").is_none()
        && line.starts_with("HTTP/")
        && !line.contains(" 204 ")
        && !line.contains(" 304 ")
    {
        // A response without a length: its body ends with the connection.
        let mut body = Vec::new();
        reader.read_to_end(&mut body).ok()?;
        body
    } else {
        let len = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok()?;
        body
    };
    Some((line.trim().to_string(), headers, body))
}

/// One HTTP/1.1 request (Connection: close).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    read_reply(&mut BufReader::new(stream))
}

/// A kept-alive connection to `addr` (reads time out after 30 s): a
/// writer and a reader.
pub fn connect(addr: &str) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let writer = stream.try_clone().expect("clone");
    (writer, BufReader::new(stream))
}

/// Reads one response: its status, headers and body.
pub fn read_reply(reader: &mut BufReader<TcpStream>) -> Reply {
    let (status_line, headers, body) = read_message(reader).expect("a response");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Reply {
        status,
        headers,
        body,
    }
}

/// A request a `Mini` server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

type Handler = dyn Fn(&Seen) -> (u16, Vec<u8>, Duration) + Send + Sync;

/// A threaded HTTP server on loopback answering with `handler` (status,
/// body, delay before answering); stops when dropped.
pub struct Mini {
    pub addr: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Mini {
    pub fn start(
        handler: impl Fn(&Seen) -> (u16, Vec<u8>, Duration) + Send + Sync + 'static,
    ) -> Mini {
        Mini::start_on("127.0.0.1:0", handler)
    }

    pub fn start_on(
        addr: &str,
        handler: impl Fn(&Seen) -> (u16, Vec<u8>, Duration) + Send + Sync + 'static,
    ) -> Mini {
        let listener = TcpListener::bind(addr).expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (s, h, st) = (s.clone(), handler.clone(), st.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    // Keep-alive: answer requests until the peer closes.
                    while let Some((line, headers, body)) = read_message(&mut reader) {
                        if st.load(Ordering::SeqCst) {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let req = Seen {
                            path,
                            headers,
                            body,
                        };
                        let (status, body, delay) = h(&req);
                        s.lock().expect("lock").push(req);
                        std::thread::sleep(delay);
                        let stream = reader.get_mut();
                        let head = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        if stream
                            .write_all(head.as_bytes())
                            .and_then(|_| stream.write_all(&body))
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Mini { addr, seen, stop }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for Mini {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// A collector stand-in: records every event posted to /v1/events.
pub struct Collector {
    pub server: Mini,
    pub events: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    pub fn start() -> Collector {
        Collector::start_on("127.0.0.1:0")
    }

    pub fn start_on(addr: &str) -> Collector {
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let e = events.clone();
        let server = Mini::start_on(addr, move |req| {
            let gz = req
                .headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("content-encoding") && v == "gzip");
            let body = if gz {
                let mut out = Vec::new();
                let _ = flate2::read::GzDecoder::new(&req.body[..]).read_to_end(&mut out);
                out
            } else {
                req.body.clone()
            };
            let batch: Value = serde_json::from_slice(&body).unwrap_or_default();
            let list = batch["events"].as_array().cloned().unwrap_or_default();
            let n = list.len();
            e.lock().expect("lock").extend(list);
            let reply = serde_json::json!({"accepted": n, "rejected": 0, "errors": []});
            (200, reply.to_string().into_bytes(), Duration::ZERO)
        });
        Collector { server, events }
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().expect("lock").clone()
    }

    /// Waits up to 10 s until exactly `n` events arrived; them.
    pub fn wait_for_events(&self, n: usize) -> Vec<Value> {
        wait_for(Duration::from_secs(10), &format!("{n} events"), || {
            self.events().len() == n
        });
        self.events()
    }

    /// The request ids of the events received.
    pub fn request_ids(&self) -> std::collections::BTreeSet<String> {
        self.events()
            .iter()
            .map(|e| e["request_id"].as_str().expect("id").to_string())
            .collect()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }
}

/// A free loopback port, not listened on (a collector that is down).
pub fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn read_addresses(child: &mut Child, what: &str, want: usize) -> Vec<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut out = Vec::new();
    while out.len() < want {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some((_, a)) = line.rsplit_once(" on ") {
                    out.push(a.trim().to_string());
                }
            }
            _ => {
                let _ = child.kill();
                panic!("{what} exited before listening");
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    out
}

/// The example champion (KServe v2, examples/credit/champion.onnx).
pub struct Champion {
    child: Child,
    pub addr: String,
}

impl Champion {
    pub fn start() -> Champion {
        Champion::start_serving(false).0
    }

    /// The champion serving gRPC too: it and its gRPC address.
    pub fn start_with_grpc() -> (Champion, String) {
        let (champion, grpc) = Champion::start_serving(true);
        (champion, grpc.expect("a gRPC address"))
    }

    fn start_serving(grpc: bool) -> (Champion, Option<String>) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_driftwatch-example-champion"));
        command
            .arg("--model-file")
            .arg(repo("examples/credit/champion.onnx"))
            .args(["--listen", "127.0.0.1:0"]);
        if grpc {
            command.args(["--grpc-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .env("ORT_DYLIB_PATH", ort_library())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the example champion");
        let mut addrs = read_addresses(&mut child, "the example champion", 1 + usize::from(grpc));
        let grpc = grpc.then(|| addrs.remove(1));
        (
            Champion {
                child,
                addr: addrs.remove(0),
            },
            grpc,
        )
    }
}

impl Drop for Champion {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent binary with a config file (listeners on free ports).
pub struct Agent {
    child: Child,
    pub addr: String,
    pub admin: String,
    pub dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    pub fn start(config: &str) -> Agent {
        let dir = temp_dir();
        Agent::start_in(config, dir)
    }

    pub fn start_in(config: &str, dir: PathBuf) -> Agent {
        let file = dir.join("agent.yaml");
        std::fs::write(
            &file,
            format!("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{config}"),
        )
        .expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_driftwatch-agent"))
            .arg("--config")
            .arg(&file)
            .env("ORT_DYLIB_PATH", ort_library())
            .env("NODE_NAME", "node-test")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, log) = (child.stderr.take().expect("stderr"), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                log.lock().expect("lock").push_str(&(line + "\n"));
            }
        });
        let mut a = read_addresses(&mut child, "the agent", 2);
        let admin = a.pop().expect("admin");
        let addr = a.pop().expect("addr");
        Agent {
            child,
            addr,
            admin,
            dir,
            stderr,
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        http(&self.addr, "POST", path, headers, body)
    }

    /// A metric's value from /metrics (a counter or gauge; 0 when absent).
    /// `driftwatch_agent_requests_total` of model `credit` with this status code.
    pub fn requests(&self, code: &str) -> f64 {
        self.metric(
            "driftwatch_agent_requests_total",
            &[("model", "credit"), ("code", code)],
        )
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text =
            String::from_utf8(http(&self.admin, "GET", "/metrics", &[], b"").body).expect("UTF-8");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            if n != name {
                continue;
            }
            if labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            {
                return value.parse().unwrap_or(f64::NAN);
            }
        }
        0.0
    }

    /// Sends SIGTERM and waits for the exit (true: exited 0).
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the agent did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `f` until true, or panics naming `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The example rows (examples/credit/expected.json) and Python
/// onnxruntime's outputs on them.
pub fn expected() -> Value {
    serde_json::from_slice(
        &std::fs::read(repo("examples/credit/expected.json")).expect("expected.json"),
    )
    .expect("JSON")
}

/// A KServe v2 request with one tensor per feature for `rows` (f64 columns).
pub fn kserve_request(features: &[String], rows: &[Vec<f64>]) -> Vec<u8> {
    let inputs: Vec<Value> = features
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let data: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let x = r[j];
                    if x.is_nan() {
                        Value::Null
                    } else {
                        serde_json::json!(x)
                    }
                })
                .collect();
            serde_json::json!({"name": name, "shape": [rows.len()], "datatype": "FP64", "data": data})
        })
        .collect();
    serde_json::json!({ "inputs": inputs })
        .to_string()
        .into_bytes()
}

/// Runs a client script of these tests (`agent/tests/NAME`) with the test
/// venv's Python (./scripts/test installs its packages there): the JSON
/// line it prints. Its failure shows its output and the agent's log.
pub fn run_client(script: &str, args: &[&str], agent: &Agent) -> Value {
    let out = Command::new(repo(".cache/testenv/bin/python"))
        .arg(repo(&format!("agent/tests/{script}")))
        .args(args)
        .arg(repo("examples/credit/expected.json"))
        .output()
        .expect("run the test venv's Python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}{}\nagent:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        agent.stderr()
    );
    serde_json::from_slice(&out.stdout).expect("the script's JSON line")
}

/// An event without what differs between two calls of the same rows
/// (request id, time, latencies).
pub fn comparable(e: &Value) -> Value {
    let mut e = e.clone();
    if let Some(o) = e.as_object_mut() {
        o.remove("request_id");
        o.remove("timestamp");
    }
    for side in ["champion", "shadow"] {
        if let Some(o) = e[side].as_object_mut() {
            o.remove("latency_ms");
        }
    }
    e
}

/// Each row's event of every variant (`{variant}-{row}` request ids, as
/// the client scripts send them) equals the first variant's; that one
/// carries the row as sent and both models' outputs.
pub fn assert_same_events(events: &[Value], variants: &[&str], rows: &[Value]) {
    let by_id: std::collections::BTreeMap<&str, &Value> = events
        .iter()
        .map(|e| (e["request_id"].as_str().expect("id"), e))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let first = comparable(by_id[format!("{}-{i}", variants[0]).as_str()]);
        assert_eq!(first["features"]["age"], row[0], "row {i}");
        assert!(first["champion"]["score"].is_number(), "{first}");
        assert!(first["shadow"]["score"].is_number(), "{first}");
        for v in &variants[1..] {
            let e = comparable(by_id[format!("{v}-{i}").as_str()]);
            assert_eq!(
                e, first,
                "{v}, row {i}: its event differs from {}'s",
                variants[0]
            );
        }
    }
}

/// The agent counted no body of model `credit` as unreadable, and
/// `passthrough` calls that only passed through.
pub fn assert_all_read(agent: &Agent, passthrough: f64) {
    assert_eq!(
        agent.metric("driftwatch_agent_passthrough_total", &[("model", "credit")]),
        passthrough
    );
    for part in ["request", "response"] {
        for reason in [
            "not_json",
            "shape",
            "binary",
            "grpc",
            "no_rows",
            "too_large",
        ] {
            let labels = [("model", "credit"), ("part", part), ("reason", reason)];
            assert_eq!(
                agent.metric("driftwatch_agent_unparsed_total", &labels),
                0.0,
                "{part} {reason}"
            );
        }
    }
}

/// A client script's variants (checked against `want`) and the rows it
/// sent (at least 20: the example rows without a missing value).
pub fn variants_and_rows<'r>(report: &'r Value, want: &[&str]) -> (Vec<&'r str>, &'r [Value]) {
    let variants: Vec<&str> = report["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| v.as_str().expect("name"))
        .collect();
    assert_eq!(variants, want);
    let rows = report["rows"].as_array().expect("rows");
    assert!(rows.len() >= 20, "{} rows sent", rows.len());
    (variants, rows)
}
