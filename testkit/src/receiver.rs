//! A real HTTP receiver on a free loopback port that records every request
//! and answers with queued statuses (200 once they run out), for webhook
//! tests.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// Whether it carries a valid driftwatch signature under `secret`:
    /// `x-driftwatch-signature: sha256=HEX` of HMAC-SHA256 over
    /// `x-driftwatch-timestamp`, `.` and the body.
    pub fn signed_with(&self, secret: &str) -> bool {
        use hmac::{Hmac, Mac};
        let (Some(ts), Some(sig)) = (
            self.header("x-driftwatch-timestamp"),
            self.header("x-driftwatch-signature"),
        ) else {
            return false;
        };
        let Some(expected) = sig
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok())
        else {
            return false;
        };
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        mac.verify_slice(&expected).is_ok()
    }
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    /// Starts a receiver answering `statuses` in turn, then 200.
    pub fn start(statuses: &[u16]) -> Receiver {
        Receiver::start_at("127.0.0.1:0", statuses)
    }

    /// The same on `addr` (a port that was free, for a receiver that comes
    /// up late).
    pub fn start_at(addr: &str, statuses: &[u16]) -> Receiver {
        let listener = TcpListener::bind(addr).expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let r = Receiver {
            url,
            requests: Arc::default(),
            statuses: Arc::new(Mutex::new(statuses.iter().copied().collect())),
        };
        let (requests, queue) = (r.requests.clone(), r.statuses.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let len = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let status = queue.lock().expect("lock").pop_front().unwrap_or(200);
                requests.lock().expect("lock").push(Request {
                    path,
                    headers,
                    body,
                });
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        r
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    /// Answers `status` to the next `n` requests.
    pub fn answer(&self, status: u16, n: usize) {
        let mut q = self.statuses.lock().expect("lock");
        q.clear();
        q.extend(std::iter::repeat_n(status, n));
    }
}
