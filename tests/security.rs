//! Security with the real binaries: sensitive features never leave the
//! node (a marker value is looked for in every place an event goes), the
//! agent ships to a collector that requires client certificates, serves
//! its admin listener over HTTPS, and cuts slow and greedy clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use driftwatch_testkit::process::{
    bin, http, http_request, metric, start_collector, wait_until, write, Proc,
};
use driftwatch_testkit::receiver::Receiver;
use driftwatch_testkit::tls::{self, Ca};
use driftwatch_testkit::{file, temp_dir};
use hmac::{Hmac, Mac};

/// In a dropped feature and in a field nobody asked for; part of the
/// hashed feature's value too.
const MARKER: &str = "QX7-MARKER-93b1";
const HASH_KEY: &str = "e2e-hash-key";

/// `driftwatch-agent --config FILE`, as process `name`; its traffic and
/// admin addresses.
fn start_agent(
    dir: &Path,
    name: &str,
    config: &Path,
    env: &[(&str, &str)],
) -> (Proc, String, String) {
    let mut cmd = Command::new(bin("driftwatch-agent"));
    cmd.arg("--config").arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = Proc::start(name, cmd, dir);
    let addr = p.wait_line("listening on ");
    let admin = p.wait_line("admin on ");
    (p, addr, admin)
}

fn agent_config(dir: &Path, name: &str, collector: &str, champion: &str, extra: &str) -> PathBuf {
    file(
        dir,
        &format!("{name}.yaml"),
        format!(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nhash_key_env: DW_HASH_KEY\nshutdown_deadline: 2s\n{extra}\
             collector:\n  url: {collector}\n  batch_wait: 100ms\n  timeout: 2s\n  spool: {{path: {}}}\n\
             models:\n  - name: m\n    upstream: {champion}\n    protocol: generic\n    generic: {{rows: /rows, outputs: /outputs}}\n\
             \x20   request_fields: [age, email, ssn]\n    sensitive: {{ssn: drop, email: hash, age: keep}}\n",
            dir.join("spool").display()
        ),
    )
}

/// A request whose `ssn` (dropped) and `note` (not requested) hold the
/// marker, and whose `email` (hashed) contains it.
fn send(agent: &str, i: usize) {
    let body = format!(
        r#"{{"rows": [{{"age": {}, "email": "user{i}.{MARKER}@example.com", "ssn": "{MARKER}", "note": "{MARKER}"}}]}}"#,
        30 + i % 5
    );
    let got = http_request(
        agent,
        "POST",
        "/predict",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert!(got.is_some_and(|(s, _)| s == 200), "request {i}");
}

fn hashed(value: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(HASH_KEY.as_bytes()).expect("key");
    mac.update(value.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .expect("gzip");
    out
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn stop(p: &mut Proc) {
    let _ = Command::new("kill").arg(p.pid().to_string()).status();
    p.wait_exit(Duration::from_secs(20));
}

#[test]
fn a_dropped_or_unrequested_feature_reaches_no_spool_wire_database_or_log() {
    let dir = temp_dir("e2e-sensitive");
    std::fs::create_dir_all(&dir).expect("dir");
    let champion = Receiver::start(&[]);
    // First the collector refuses every batch: what the agent sends is
    // recorded, and at shutdown the events go to the spool.
    let refusing = Receiver::start(&[503; 10_000]);
    let env = [("DW_HASH_KEY", HASH_KEY)];
    let cfg = agent_config(&dir, "agent1", &refusing.url, &champion.url, "");
    let (mut agent, addr, admin) = start_agent(&dir, "agent1", &cfg, &env);
    for i in 0..5 {
        send(&addr, i);
    }
    wait_until(
        "the agent to try the collector",
        Duration::from_secs(20),
        &[&agent],
        || !refusing.requests().is_empty(),
    );
    let metrics = http(&admin, "GET", "/metrics").expect("agent metrics").1;
    let redacted = |action| {
        metric(
            &metrics,
            "driftwatch_agent_features_redacted_total",
            &[("model", "m"), ("action", action)],
        )
    };
    assert_eq!(redacted("drop"), Some(5.0), "{metrics}");
    assert_eq!(redacted("hash"), Some(5.0));
    assert_eq!(redacted("not_requested"), Some(5.0));
    stop(&mut agent);
    // The bytes sent: events with the age and the email's hash, no marker.
    let sent: Vec<String> = refusing
        .requests()
        .iter()
        .map(|r| gunzip(&r.body))
        .collect();
    let first = &sent[0];
    assert!(
        first.contains(&hashed(&format!("user0.{MARKER}@example.com"))),
        "{first}"
    );
    assert!(first.contains("\"age\""), "{first}");
    for s in &sent {
        assert!(
            !s.contains(MARKER) && !s.contains("ssn") && !s.contains("note"),
            "{s}"
        );
    }
    // The spool: gzipped batches of the same events, no marker.
    let spooled = files(&dir.join("spool"));
    assert!(!spooled.is_empty(), "the unsent events were spooled");
    let mut spooled_events = 0;
    for (path, bytes) in &spooled {
        let text = gunzip(bytes);
        assert!(!text.contains(MARKER), "{}: {text}", path.display());
        spooled_events += text.matches("\"request_id\"").count();
    }
    assert_eq!(spooled_events, 5);

    // Then a real collector: the spool is delivered, live events follow.
    write(
        &dir.join("reference.csv"),
        &(0..40)
            .map(|i| {
                format!(
                    "{},{}\n",
                    30 + i % 5,
                    hashed(&format!("user{i}.{MARKER}@example.com"))
                )
            })
            .fold("age,email\n".to_string(), |a, l| a + &l),
    );
    let ccfg = file(
        &dir,
        "collector.yaml",
        format!(
            "db: {}\nmodels:\n  - name: m\n    reference: {}\n    windows: [1h]\n",
            dir.join("dw.db").display(),
            dir.join("reference.csv").display()
        ),
    );
    let (mut collector, caddr) = start_collector(&dir, &ccfg, &[]);
    let cfg = agent_config(
        &dir,
        "agent2",
        &format!("http://{caddr}"),
        &champion.url,
        "",
    );
    let (mut agent, addr, _) = start_agent(&dir, "agent2", &cfg, &env);
    for i in 5..10 {
        send(&addr, i);
    }
    let predictions = || {
        let m = http(&caddr, "GET", "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        metric(
            &m,
            "driftwatch_predictions_total",
            &[("model", "m"), ("role", "champion")],
        )
    };
    wait_until(
        "10 events in the collector",
        Duration::from_secs(30),
        &[&agent, &collector],
        || predictions() == Some(10.0),
    );
    stop(&mut agent);
    stop(&mut collector);
    let db = files(&dir)
        .into_iter()
        .filter(|(p, _)| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("dw.db"))
        })
        .collect::<Vec<_>>();
    assert!(!db.is_empty());
    assert!(
        db.iter()
            .any(|(_, b)| contains(b, &hashed(&format!("user7.{MARKER}@example.com")))),
        "the hashed emails are stored"
    );
    for (path, bytes) in &db {
        assert!(!contains(bytes, MARKER), "{}", path.display());
    }
    // No process wrote it either (the champion got it, as it should).
    for p in ["agent1", "agent2", "collector"] {
        let log = std::fs::read(dir.join(format!("{p}.log"))).expect("log");
        assert!(!contains(&log, MARKER), "{p}.log");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_agent_ships_over_mtls_serves_https_admin_and_cuts_slow_and_greedy_clients() {
    let dir = temp_dir("e2e-agent-tls");
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = Ca::new("driftwatch e2e CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let server = ca.issue(&dir, "collector", &["127.0.0.1"]);
    let admin_pair = ca.issue(&dir, "admin", &["127.0.0.1"]);
    let agent_pair = ca.issue(&dir, "agent", &["agent-1"]);
    let ccfg = file(
        &dir,
        "collector.yaml",
        format!(
            "db: {}\ntls: {{cert_file: {}, key_file: {}, client_ca_file: {}}}\nmodels:\n  - name: credit\n    reference: {}\n    windows: [1h]\n",
            dir.join("dw.db").display(),
            server.cert.display(),
            server.key.display(),
            ca_file.display(),
            driftwatch_testkit::repo("examples/credit/reference.csv").display()
        ),
    );
    let (collector, caddr) = start_collector(&dir, &ccfg, &[]);
    let champion = Receiver::start(&[]);
    let tls_block = |with_cert: bool| {
        let client = if with_cert {
            format!(
                ", client_cert_file: {}, client_key_file: {}",
                agent_pair.cert.display(),
                agent_pair.key.display()
            )
        } else {
            String::new()
        };
        format!("  tls: {{ca_file: {}{client}}}\n", ca_file.display())
    };
    let config = |name: &str, with_cert: bool, http: &str| {
        file(
            &dir,
            &format!("{name}.yaml"),
            format!(
                "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nshutdown_deadline: 1s\n\
                 http: {{{http}}}\n\
                 admin_tls: {{cert_file: {}, key_file: {}}}\n\
                 collector:\n  url: https://{caddr}\n  batch_wait: 100ms\n  timeout: 2s\n{}\
                 models:\n  - name: credit\n    upstream: {}\n    protocol: generic\n    generic: {{rows: /rows, outputs: /outputs}}\n",
                admin_pair.cert.display(),
                admin_pair.key.display(),
                tls_block(with_cert),
                champion.url
            ),
        )
    };
    let row = r#"{"rows": [{"age": 41, "income": 52000}]}"#;
    // With its client certificate the agent's events arrive.
    let (agent, addr, admin) = start_agent(
        &dir,
        "agent",
        &config("agent", true, "header_timeout: 3s, body_timeout: 1s"),
        &[],
    );
    for _ in 0..3 {
        let got = http_request(&addr, "POST", "/predict", &[], row);
        assert_eq!(got.map(|r| r.0), Some(200));
    }
    let collector_metrics = || {
        tls::get(&caddr, "/metrics", &ca_file, Some(&agent_pair))
            .map(|a| a.body)
            .unwrap_or_default()
    };
    wait_until(
        "3 events over mTLS",
        Duration::from_secs(30),
        &[&agent, &collector],
        || {
            metric(
                &collector_metrics(),
                "driftwatch_predictions_total",
                &[("model", "credit"), ("role", "champion")],
            ) == Some(3.0)
        },
    );
    // The admin listener speaks HTTPS only.
    let m = tls::get(&admin, "/metrics", &ca_file, None).expect("HTTPS admin");
    assert_eq!(m.status, 200);
    assert_eq!(m.server_cert, tls::der(&admin_pair.cert));
    assert!(http(&admin, "GET", "/metrics").is_none_or(|r| r.0 == 0));

    // Slow and greedy clients on the traffic listener (heads within 3 s,
    // bodies 1 s).
    let t0 = Instant::now();
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a head that never ends is cut");
    assert!(t0.elapsed() < Duration::from_secs(8));
    let mut slow_body = TcpStream::connect(&addr).expect("connect");
    slow_body
        .write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .expect("write");
    slow_body
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(
        slow_body.read(&mut buf).unwrap_or(0),
        0,
        "a body that stops is cut"
    );
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let mut big = TcpStream::connect(&addr).expect("connect");
    let _ = big.write_all(huge.as_bytes());
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    // (The rest of the head may reset the connection before the answer
    // is read; the count below is what matters.)
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    // Each cut is counted once its connection's task ends: wait for it.
    let refused = |admin: &str, reason| {
        let m = tls::get(admin, "/metrics", &ca_file, None)
            .map(|a| a.body)
            .unwrap_or_default();
        metric(
            &m,
            "driftwatch_agent_connections_refused_total",
            &[("reason", reason)],
        )
    };
    for reason in ["header_timeout", "body_timeout", "header_too_large"] {
        wait_until(reason, Duration::from_secs(10), &[&agent], || {
            refused(&admin, reason) >= Some(1.0)
        });
    }
    drop(agent);

    // More connections than allowed (3): one more is closed unanswered;
    // once they go, requests are served again. (An agent whose heads may
    // take a minute, so that the held connections stay held however slow
    // this machine is; without a client certificate, so that its events
    // stay out of the collector's count checked below.)
    let (agent, addr, admin) = start_agent(
        &dir,
        "agent-limit",
        &config(
            "agent-limit",
            false,
            "max_connections: 3, header_timeout: 60s, body_timeout: 60s",
        ),
        &[],
    );
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    let mut extra = TcpStream::connect(&addr).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = write!(
        extra,
        "POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{row}",
        row.len()
    );
    let mut answer = Vec::new();
    let got = extra.read_to_end(&mut answer);
    assert!(
        answer.is_empty()
            && match &got {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            },
        "a 4th connection is closed unanswered: {got:?} {:?}",
        String::from_utf8_lossy(&answer)
    );
    drop(held);
    wait_until(
        "connections freed",
        Duration::from_secs(10),
        &[&agent],
        || http_request(&addr, "POST", "/predict", &[], row).map(|r| r.0) == Some(200),
    );
    wait_until("limit", Duration::from_secs(10), &[&agent], || {
        refused(&admin, "limit") >= Some(1.0)
    });
    drop(agent);

    // HTTPS on the traffic listener too (through hyper): the champion is
    // reached, plain HTTP is not served.
    let https = file(
        &dir,
        "agent-https.yaml",
        std::fs::read_to_string(dir.join("agent.yaml"))
            .expect("config")
            .replacen(
                "admin_tls:",
                &format!(
                    "tls: {{cert_file: {}, key_file: {}}}\nadmin_tls:",
                    admin_pair.cert.display(),
                    admin_pair.key.display()
                ),
                1,
            ),
    );
    let (agent, addr, _) = start_agent(&dir, "agent-https", &https, &[]);
    let before = champion.requests().len();
    let got = tls::get(&addr, "/predict", &ca_file, None).expect("HTTPS traffic");
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(champion.requests().len(), before + 1);
    assert!(http(&addr, "GET", "/predict").is_none_or(|r| r.0 == 0));
    drop(agent);

    // Without a client certificate the collector refuses the agent's
    // connections: counted on both sides, the events wait.
    let (agent, addr, admin) = start_agent(
        &dir,
        "agent-nocert",
        &config("agent-nocert", false, ""),
        &[],
    );
    let got = http_request(&addr, "POST", "/predict", &[], row);
    assert_eq!(
        got.map(|r| r.0),
        Some(200),
        "the champion's traffic is unaffected"
    );
    wait_until(
        "refused shipping",
        Duration::from_secs(20),
        &[&agent, &collector],
        || {
            let m = tls::get(&admin, "/metrics", &ca_file, None)
                .map(|a| a.body)
                .unwrap_or_default();
            m.lines()
                .any(|l| l.starts_with("driftwatch_agent_ship_failures_total"))
                && metric(
                    &collector_metrics(),
                    "driftwatch_connections_refused_total",
                    &[("reason", "tls_handshake")],
                ) >= Some(1.0)
        },
    );
    assert_eq!(
        metric(
            &collector_metrics(),
            "driftwatch_predictions_total",
            &[("model", "credit"), ("role", "champion")]
        ),
        Some(3.0)
    );
    drop(agent);
    drop(collector);
    let _ = std::fs::remove_dir_all(&dir);
}
