//! The real `driftwatch serve`'s listener against clients that do not play
//! along: HTTPS with client certificates and a certificate renewed while
//! it runs, and slow or greedy clients (a head that never ends, a body
//! that never comes, a huge head, more connections than allowed), each
//! refused and counted.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::examples::example;
use common::server::Server;
use driftwatch_testkit::process::metric;
use driftwatch_testkit::tls::{self, Ca};

fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    driftwatch_testkit::file(
        dir,
        "collector.yaml",
        format!(
            "{extra}models:\n  - name: credit\n    reference: {}\n    windows: [1h]\n",
            example("reference.csv").display()
        ),
    )
}

fn start(config: &Path) -> Server {
    Server::start(&["--config", config.to_str().expect("UTF-8")], &[])
}

#[test]
fn https_asks_for_client_certificates_and_serves_a_renewed_certificate_without_a_restart() {
    let dir = driftwatch_testkit::temp_dir("tls");
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = Ca::new("driftwatch test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let server_pair = ca.issue(&dir, "server", &["127.0.0.1"]);
    let agent = ca.issue(&dir, "agent", &["agent-1"]);
    let stranger = Ca::new("another CA").issue(&dir, "stranger", &["agent-1"]);
    let cfg = config(
        &dir,
        &format!(
            "tls:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n",
            server_pair.cert.display(),
            server_pair.key.display(),
            ca_file.display()
        ),
    );
    let server = start(&cfg);
    let get = |path: &str, client| tls::get(&server.addr, path, &ca_file, client);

    let ok = get("/healthz", Some(&agent)).expect("HTTPS with a client certificate");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.server_cert, tls::der(&server_pair.cert));
    // No client certificate, one from another CA, plain HTTP: refused.
    assert!(get("/healthz", None).is_err());
    assert!(get("/healthz", Some(&stranger)).is_err());
    let (status, _) = server.request("GET", "/healthz", &[], b"");
    assert_eq!(status, 0, "plain HTTP gets no HTTP answer");
    let refused = |body: &str, reason: &str| {
        metric(
            body,
            "driftwatch_connections_refused_total",
            &[("reason", reason)],
        )
    };
    // Each is counted once its connection's task has ended, which may be
    // just after the client saw the close: wait for the third.
    let mut metrics = String::new();
    server.wait_for(Duration::from_secs(10), "3 refused handshakes", |_| {
        metrics = get("/metrics", Some(&agent)).expect("metrics").body;
        refused(&metrics, "tls_handshake") >= Some(3.0)
    });
    assert_eq!(refused(&metrics, "tls_handshake"), Some(3.0), "{metrics}");

    // A renewed certificate is served without a restart...
    let renewed = ca.issue(&dir, "server", &["127.0.0.1"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while get("/healthz", Some(&agent)).map(|a| a.server_cert) != Ok(tls::der(&renewed.cert)) {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // ...and a broken one is refused while the last good one keeps serving.
    let renewed_der = tls::der(&renewed.cert);
    std::fs::write(&renewed.cert, "not a certificate\n").expect("write");
    let reloads = |outcome: &str| {
        let body = get("/metrics", Some(&agent)).expect("metrics").body;
        metric(
            &body,
            "driftwatch_tls_reloads_total",
            &[("outcome", outcome)],
        )
    };
    server.wait_for(Duration::from_secs(15), "a failed reload", |_| {
        reloads("failure") == Some(1.0)
    });
    assert_eq!(reloads("success"), Some(1.0));
    let still = get("/healthz", Some(&agent)).expect("still served");
    assert_eq!(still.server_cert, renewed_der);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads until the server closes; what arrived, or None when the server
/// left the connection open for `limit`.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<String> {
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => Some(String::from_utf8_lossy(&raw).to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Some(String::from_utf8_lossy(&raw).to_string())
        }
        Err(_) => None,
    }
}

#[test]
fn slow_and_greedy_clients_are_cut_off_and_counted() {
    let dir = driftwatch_testkit::temp_dir("slow");
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = config(
        &dir,
        "http: {header_timeout: 1s, body_timeout: 1s, max_header_bytes: 8192}\n",
    );
    let server = start(&cfg);
    let connect = || TcpStream::connect(&server.addr).expect("connect");

    // Slowloris: a head that never ends is cut after header_timeout.
    let mut slow = connect();
    slow.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .expect("part of a head");
    let started = Instant::now();
    assert!(read_until_closed(&mut slow, Duration::from_secs(10)).is_some());
    assert!(started.elapsed() < Duration::from_secs(8));

    // A body that never comes: 408 after body_timeout.
    let mut body = connect();
    body.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"ev")
        .expect("part of a body");
    let answer = read_until_closed(&mut body, Duration::from_secs(10)).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A head larger than max_header_bytes: 431.
    let mut big = connect();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    let _ = big.write_all(head.as_bytes());
    let answer = read_until_closed(&mut big, Duration::from_secs(10)).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // Each cut is counted once its connection's task ends: wait for it.
    for reason in ["header_timeout", "body_timeout", "header_too_large"] {
        server.wait_for(Duration::from_secs(10), reason, |s| {
            s.metric(
                "driftwatch_connections_refused_total",
                &[("reason", reason)],
            ) >= Some(1.0)
        });
    }
    drop(server);

    // More connections than allowed: the one past the bound is closed
    // unanswered; once the others go, a request is served again. (A
    // server of its own whose heads may take a minute, so that the held
    // connections stay held however slow this machine is: with a 1 s
    // header timeout a stall of the server could cut them first.)
    let greedy = dir.join("greedy");
    std::fs::create_dir_all(&greedy).expect("dir");
    let server = start(&config(
        &greedy,
        "http: {max_connections: 4, header_timeout: 60s, body_timeout: 60s}\n",
    ));
    let connect = || TcpStream::connect(&server.addr).expect("connect");
    let open: Vec<TcpStream> = (0..4).map(|_| connect()).collect();
    let mut extra = connect();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let answer = read_until_closed(&mut extra, Duration::from_secs(10));
    assert_eq!(
        answer.as_deref(),
        Some(""),
        "the fifth connection is closed unanswered"
    );
    drop(open);
    server.wait_for(Duration::from_secs(10), "a request served again", |s| {
        s.request("GET", "/healthz", &[], b"").0 == 200
    });
    assert!(
        server.metric(
            "driftwatch_connections_refused_total",
            &[("reason", "limit")]
        ) >= Some(1.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
