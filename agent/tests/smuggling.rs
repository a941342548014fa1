//! Request smuggling: ambiguous requests sent to the real agent, in front
//! of a raw-TCP champion that records exactly the bytes that arrive. For
//! every case the agent either refuses (400, nothing of the request
//! forwarded) or forwards one request framed one way only (exactly one
//! `Content-Length`, no `Transfer-Encoding`, the body and nothing after
//! it), as RFC 9112 section 6.3 asks; nothing that follows a request's
//! body becomes a request of its own unless the agent read it as one.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{read_message, Agent};

/// A champion that records each connection's bytes until 200 ms of
/// silence, then answers `200 ok` and closes.
struct Recorder {
    addr: String,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || record(stream, &s));
            }
        });
        Recorder { addr, seen }
    }

    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

fn record(mut stream: TcpStream, seen: &Mutex<Vec<Vec<u8>>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    if !got.is_empty() {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        seen.lock().expect("lock").push(got);
    }
}

/// What the champion got on one connection, checked to be one request
/// framed by exactly one `Content-Length` and nothing after its body:
/// the request target and the body.
fn one_request(raw: &[u8]) -> (String, Vec<u8>) {
    let text = String::from_utf8_lossy(raw);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("not one complete request head ({other:?}): {text}"),
    };
    assert!(
        !raw[..len]
            .windows(2)
            .any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "bare LF forwarded: {text}"
    );
    let named = |n: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(n))
            .map(|h| String::from_utf8_lossy(h.value).to_string())
            .collect::<Vec<_>>()
    };
    assert!(named("transfer-encoding").is_empty(), "{text}");
    let lengths = named("content-length");
    let n: usize = match lengths.as_slice() {
        [] => 0,
        [one] => one
            .parse()
            .unwrap_or_else(|_| panic!("Content-Length {one:?}: {text}")),
        _ => panic!("{} Content-Length headers: {text}", lengths.len()),
    };
    assert_eq!(
        raw.len() - len,
        n,
        "bytes after the head other than the body: {text}"
    );
    (req.path.unwrap_or("").to_string(), raw[len..].to_vec())
}

/// Sends `raw` on a new connection: the status of the first answer
/// (0: none) and whether the agent closed the connection after it.
fn send(addr: &str, raw: &[u8]) -> (u16, bool) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(raw);
    let mut reader = BufReader::new(s);
    let Some((line, _, _)) = read_message(&mut reader) else {
        return (0, true);
    };
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut rest = Vec::new();
    let closed = reader.read_to_end(&mut rest).is_ok();
    (status, closed)
}

#[test]
fn ambiguous_framing_is_refused_or_normalised_never_passed_on() {
    let champion = Recorder::start();
    for fast_path in [true, false] {
        let agent = Agent::start(&format!(
            "fast_path: {fast_path}\ncollector:\n  url: http://127.0.0.1:9\nmodels:\n  - name: credit\n    upstream: http://{}\n    upstream_timeout: 5s\n",
            champion.addr
        ));
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        // (name, request, Some(body) when it is forwarded, None when refused)
        let cases: Vec<(&str, String, Option<&str>)> = vec![
            // Refused on the lean path. hyper reads the chunks alone and
            // the rest as a request of its own: sent on as two requests,
            // each framed one way (checked below).
            (
                "Content-Length with Transfer-Encoding",
                format!("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
                (!fast_path).then_some(""),
            ),
            (
                "two different Content-Lengths",
                "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nbodyX".into(),
                None,
            ),
            (
                "two equal Content-Lengths",
                "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody".into(),
                Some("body"),
            ),
            (
                "comma-joined Content-Length",
                "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nbodyX".into(),
                None,
            ),
            (
                "signed Content-Length",
                "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nbody".into(),
                None,
            ),
            (
                "chunked, identity",
                "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n4\r\nbody\r\n0\r\n\r\n".into(),
                None,
            ),
            (
                "obs-folded header",
                "POST /p HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\nContent-Length: 4\r\n\r\nbody".into(),
                None,
            ),
            (
                "invalid chunk size",
                "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbody\r\n0\r\n\r\n".into(),
                None,
            ),
            (
                "overflowing chunk size",
                "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nbody\r\n0\r\n\r\n".into(),
                None,
            ),
            (
                "chunk extensions",
                "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4;ext=\"1\"\r\nbody\r\n0\r\n\r\n".into(),
                Some("body"),
            ),
            (
                "a body after Connection: close",
                format!("POST /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbody{smuggled}"),
                Some("body"),
            ),
        ];
        for (name, raw, forwarded) in &cases {
            let what = format!("{name} (fast_path {fast_path})");
            let (status, closed) = send(&agent.addr, raw.as_bytes());
            std::thread::sleep(Duration::from_millis(400));
            let got = champion.take();
            match forwarded {
                None => {
                    assert_eq!(status, 400, "{what}");
                    assert!(closed, "{what}: the connection is closed after a refusal");
                    assert!(
                        got.is_empty(),
                        "{what}: forwarded {:?}",
                        got.iter()
                            .map(|g| String::from_utf8_lossy(g).to_string())
                            .collect::<Vec<_>>()
                    );
                }
                Some(body) => {
                    assert_eq!(status, 200, "{what}");
                    assert!(closed, "{what}: closed as the request asked");
                    let read: Vec<(String, Vec<u8>)> = got.iter().map(|g| one_request(g)).collect();
                    assert_eq!(read.first().map(|r| r.0.as_str()), Some("/p"), "{what}");
                    assert_eq!(read[0].1, body.as_bytes(), "{what}");
                    // Anything more is what the agent itself read as a
                    // request (hyper, after chunks), never stray body bytes.
                    for (target, sent) in &read[1..] {
                        assert_eq!((target.as_str(), sent.len()), ("/smuggled", 0), "{what}");
                    }
                    if fast_path || !name.contains("Transfer-Encoding") {
                        assert_eq!(read.len(), 1, "{what}: one request forwarded");
                    }
                }
            }
        }
        // Bare LF line ends: read as line ends (RFC 9112 allows it) and
        // sent on with CRLF, or refused; never passed on as they came.
        let (status, _) = send(
            &agent.addr,
            b"POST /p HTTP/1.1\nHost: x\nContent-Length: 4\nConnection: close\n\nbody",
        );
        std::thread::sleep(Duration::from_millis(400));
        let got = champion.take();
        match status {
            200 => {
                assert_eq!(got.len(), 1);
                assert_eq!(one_request(&got[0]).1, b"body");
            }
            400 => assert!(got.is_empty()),
            other => panic!("bare LF: {other}"),
        }
        let malformed = agent.metric(
            "driftwatch_agent_connections_refused_total",
            &[("reason", "malformed")],
        );
        assert!(malformed >= 6.0, "refusals are counted: {malformed}");
    }
}
