//! The workspace's real binaries as child processes with their output in
//! a log file (the collector, the example champion, the agent started as a
//! user would), plain HTTP to them, and waiting for what they print.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A binary of the workspace, next to this test's own directory
/// (`target/debug/deps/e2e-HASH` → `target/debug/NAME`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test --workspace` builds it before the tests run",
        path.display()
    );
    path
}

use crate::{ort_library, repo};

/// A child process writing stdout and stderr to `DIR/NAME.log`, killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn start(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        cmd.stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .stdin(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself (after a signal).
    pub fn wait_exit(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not exit within {limit:?}:\n{}",
            self.name,
            self.output()
        );
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The rest of the first line of output that starts with `prefix`.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        self.wait_for(prefix, |l| {
            l.strip_prefix(prefix).map(|r| r.trim().to_string())
        })
    }

    /// The first line of output `pick` accepts (`what` names it in a failure).
    pub fn wait_for(&mut self, what: &str, pick: impl Fn(&str) -> Option<String>) -> String {
        let prefix = what;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = self.output().lines().find_map(&pick) {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before printing {prefix:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print {prefix:?} within 60 s:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One HTTP/1.0 request (no chunked replies); the status and the body.
pub fn http(addr: &str, method: &str, path: &str) -> Option<(u16, String)> {
    http_request(addr, method, path, &[], "")
}

/// One HTTP/1.0 request with headers and a body; the status and the body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    http_exchange(addr, method, path, headers, body).map(|a| (a.status, a.body))
}

/// An answer with its headers (names in lower case).
pub struct Answer {
    pub status: u16,
    pub headers: std::collections::HashMap<String, String>,
    pub body: String,
}

/// One HTTP/1.0 request with headers and a body; the whole answer.
pub fn http_exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Answer> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    Answer::parse(&raw)
}

impl Answer {
    /// An HTTP answer read whole: status line, headers, body.
    pub fn parse(raw: &[u8]) -> Option<Answer> {
        let text = String::from_utf8_lossy(raw);
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(Answer {
            status,
            headers,
            body: body.to_string(),
        })
    }
}

pub fn get_json(addr: &str, path: &str) -> Value {
    match http(addr, "GET", path) {
        Some((200, body)) => serde_json::from_str(&body).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A metric's value in a Prometheus text exposition, by labels (a series
/// without labels when `labels` is empty and it has none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of a metric's series in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn wait_until(what: &str, limit: Duration, procs: &[&Proc], mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        if Instant::now() > deadline {
            let logs: String = procs
                .iter()
                .map(|p| {
                    let out = p.output();
                    let tail: Vec<&str> = out.lines().rev().take(40).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    format!("--- {} ---\n{}\n", p.name, tail.join("\n"))
                })
                .collect();
            panic!("timed out after {limit:?} waiting for {what}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// `driftwatch serve --config CONFIG` on a free port, with `env`; the process and its address.
pub fn start_collector(dir: &Path, config: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    let mut cmd = Command::new(bin("driftwatch"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = Proc::start("collector", cmd, dir);
    let addr = p.wait_line("driftwatch listening on ");
    (p, addr)
}

/// The example champion (examples/credit/champion.onnx) on a free port.
pub fn start_champion(dir: &Path) -> (Proc, String) {
    let mut cmd = Command::new(bin("driftwatch-example-champion"));
    cmd.arg("--model-file")
        .arg(repo("examples/credit/champion.onnx"))
        .args(["--listen", "127.0.0.1:0"])
        .env("ORT_DYLIB_PATH", ort_library());
    let mut p = Proc::start("champion", cmd, dir);
    let addr = p.wait_line("listening on ");
    (p, addr)
}

/// The agent's flag quick start for model `credit` in front of `champion`,
/// shipping to `collector` (an address, or a URL such as `nats://...`),
/// with `extra` flags; the process, its traffic and admin addresses.
pub fn start_agent(
    dir: &Path,
    champion: &str,
    collector: &str,
    extra: &[&str],
) -> (Proc, String, String) {
    start_agent_with(dir, champion, collector, extra, &[])
}

/// `start_agent` with `env` set for the agent.
pub fn start_agent_with(
    dir: &Path,
    champion: &str,
    collector: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Proc, String, String) {
    let mut cmd = Command::new(bin("driftwatch-agent"));
    cmd.args(["--model", "credit", "--upstream"])
        .arg(format!("http://{champion}"))
        .arg("--collector")
        .arg(match collector.contains("://") {
            true => collector.to_string(),
            false => format!("http://{collector}"),
        })
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(extra)
        .env("ORT_DYLIB_PATH", ort_library())
        .env("NODE_NAME", "e2e-node");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = Proc::start("agent", cmd, dir);
    let addr = p.wait_line("listening on ");
    let admin = p.wait_line("admin on ");
    (p, addr, admin)
}

/// The lines a binary prints on stdout for scripts to read (its address);
/// everything else it writes is its log.
pub const STDOUT_LINES: [&str; 3] = ["listening on ", "admin on ", "driftwatch listening on "];

/// A process's log written with `--log-format json`: every line that is not
/// one of `STDOUT_LINES` parsed as a JSON object (a line that does not
/// parse fails the test).
pub fn json_log(output: &str) -> Vec<Value> {
    output
        .lines()
        .filter(|l| !STDOUT_LINES.iter().any(|p| l.starts_with(p)))
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| panic!("not a JSON log line: {l:?}"))
        })
        .collect()
}

/// Sends `n` loan applications (`CREDIT_REQUEST`) through the agent at
/// `addr`; each is answered 200.
pub fn send_credit_requests(addr: &str, n: usize) {
    for i in 0..n {
        let got = http_request(
            addr,
            "POST",
            "/v2/models/credit/infer",
            &[("content-type", "application/json")],
            CREDIT_REQUEST,
        );
        assert_eq!(got.map(|r| r.0), Some(200), "request {i}");
    }
}

/// One loan application (a row of the example reference) as a KServe v2
/// request for the example champion.
pub const CREDIT_REQUEST: &str = r#"{"inputs": [
    {"name": "age", "shape": [1], "datatype": "FP64", "data": [38]},
    {"name": "income", "shape": [1], "datatype": "FP64", "data": [45506]},
    {"name": "loan_amount", "shape": [1], "datatype": "FP64", "data": [8692]},
    {"name": "bureau_score", "shape": [1], "datatype": "FP64", "data": [655.8]},
    {"name": "dependents", "shape": [1], "datatype": "FP64", "data": [0]},
    {"name": "has_card", "shape": [1], "datatype": "BOOL", "data": [true]}]}"#;
