//! The agent in front of a real KServe v2 server (KServe's Python
//! ModelServer, kserve 0.21: `kserve_server.py`), REST and gRPC on one
//! traffic listener, called with the official clients (tritonclient
//! 2.73.0: `kserve_calls.py`): JSON and binary tensors over REST, raw and
//! typed contents over gRPC, gzip and deflate messages, gRPC over TLS,
//! gRPC copies to an agent in mirror mode, gRPC health, metadata, errors
//! and a method the server does not serve, and a message over
//! `max_body_bytes`. Every answer through the agent equals the direct one
//! (checked by the script); every inference gives the same events
//! whatever its form.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    assert_all_read, assert_same_events, free_addr, repo, run_client, temp_dir, variants_and_rows,
    wait_for, Agent, Collector,
};
use driftwatch_testkit::tls::{self, Ca};

const INPUTS: &str = "[age, income, loan_amount, bureau_score, dependents, has_card]";

/// KServe's model server on two free loopback ports, in its own process
/// group (killed whole on drop).
struct KServe {
    child: Child,
    rest: String,
    grpc: String,
}

impl KServe {
    fn start() -> KServe {
        let (rest, grpc) = (free_addr(), free_addr());
        let port = |a: &str| a.rsplit(':').next().expect("port").to_string();
        let child = Command::new(repo(".cache/testenv/bin/python"))
            .arg(repo("agent/tests/kserve_server.py"))
            .args([port(&rest), port(&grpc)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start kserve_server.py (./scripts/test installs kserve in .cache/testenv)");
        let server = KServe { child, rest, grpc };
        wait_for(Duration::from_secs(60), "KServe to be ready", || {
            ready(&server.rest)
        });
        server
    }
}

/// Whether `GET /v2/health/ready` answers 200 within a second (the
/// server accepts connections before it answers them).
fn ready(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let asked = s.write_all(
        format!("GET /v2/health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let mut head = [0u8; 12];
    asked.is_ok() && s.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

impl Drop for KServe {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn rest_and_grpc_calls_to_kserve_pass_unchanged_and_give_the_same_events() {
    let kserve = KServe::start();
    let collector = Collector::start();
    // The same model behind three agents: proxying, proxying with HTTPS
    // on its traffic listener, and taking mirrored copies.
    let proxy = format!(
        "    upstream: http://{}\n    grpc_upstream: http://{}\n",
        kserve.rest, kserve.grpc
    );
    let model = |top: &str, how: &str| {
        format!(
            "collector:\n  url: {}\n  batch_wait: 100ms\n{top}models:\n  - name: credit\n{how}    champion_version: v3\n    shadow:\n      path: {}\n      version: v4\n      inputs: {INPUTS}\n",
            collector.url(),
            repo("examples/credit/challenger.onnx").display(),
        )
    };
    let agent = Agent::start(&model("", &proxy));
    let dir = temp_dir();
    let ca = Ca::new("kserve-test-ca");
    let ca_file = ca.write(&dir, "ca.crt");
    let pair = ca.issue(&dir, "agent", &["127.0.0.1"]);
    let tls_agent = Agent::start(&model(
        &format!(
            "tls: {{cert_file: {}, key_file: {}}}\n",
            pair.cert.display(),
            pair.key.display()
        ),
        &proxy,
    ));
    let mirror = Agent::start(&model("", "    mode: mirror\n    join_wait: 10s\n"));
    let ca_arg = ca_file.display().to_string();
    let report = run_client(
        "kserve_calls.py",
        &[
            &kserve.rest,
            &kserve.grpc,
            &agent.addr,
            "--tls",
            &tls_agent.addr,
            &ca_arg,
            "--mirror",
            &mirror.addr,
        ],
        &agent,
    );
    let (variants, rows) = variants_and_rows(
        &report,
        &[
            "grpc-raw",
            "rest-json-json",
            "rest-json-binary",
            "rest-binary-json",
            "rest-binary-binary",
            "grpc-typed",
            "grpc-gzip",
            "grpc-deflate",
            "grpc-tls",
            "grpc-mirror",
        ],
    );
    // Every variant's rows, and the one row of the call the server refused.
    let events = collector.wait_for_events(variants.len() * rows.len() + 1);
    assert_same_events(&events, &variants, rows);
    // The refused call: its row, and the server's gRPC status as the
    // champion's error.
    let refused = events
        .iter()
        .find(|e| e["request_id"] == "grpc-error")
        .expect("the refused call's event");
    let error = refused["champion"]["error"].as_str().unwrap_or("");
    assert!(error.starts_with("gRPC status "), "{refused}");
    assert_eq!(refused["features"]["age"], 30.0);
    // gRPC health, readiness, metadata and statistics passed through,
    // counted as such; nothing was unreadable to the agents.
    assert_all_read(&agent, 7.0);
    assert_all_read(&tls_agent, 1.0);
    assert_all_read(&mirror, 1.0);
    // The TLS listener offers HTTP/2 to gRPC clients only: a client that
    // offers both keeps HTTP/1.1.
    for (offered, chosen) in [
        (&["h2"][..], "h2"),
        (&["h2", "http/1.1"], "http/1.1"),
        (&["http/1.1"], "http/1.1"),
    ] {
        let got = tls::negotiate(&tls_agent.addr, &ca_file, offered).expect("handshake");
        assert_eq!(got.as_deref(), Some(chosen), "offered {offered:?}");
    }

    // A ModelInfer message over max_body_bytes passes whole and unread,
    // counted; no event is made of it.
    let small = Collector::start();
    let bounded = Agent::start(&format!(
        "collector:\n  url: {}\n  batch_wait: 100ms\nmodels:\n  - name: credit\n    upstream: http://{}\n    grpc_upstream: http://{}\n    max_body_bytes: 256\n",
        small.url(),
        kserve.rest,
        kserve.grpc,
    ));
    run_client(
        "kserve_calls.py",
        &[&kserve.rest, &kserve.grpc, &bounded.addr, "--only-raw"],
        &bounded,
    );
    let too_large = [
        ("model", "credit"),
        ("part", "request"),
        ("reason", "too_large"),
    ];
    wait_for(
        Duration::from_secs(10),
        "the large call to be counted",
        || bounded.metric("driftwatch_agent_unparsed_total", &too_large) == 1.0,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(small.events().is_empty(), "{:?}", small.events());
}
