//! Starts the real `driftwatch serve` on a free loopback port and talks
//! plain HTTP/1.1 to it; the process is killed when the handle drops.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Child,
    pub addr: String,
    /// A database directory this handle made and removes.
    owned_dir: Option<PathBuf>,
}

/// A fresh directory for a test database.
pub fn temp_db_dir() -> PathBuf {
    driftwatch_testkit::temp_dir("db")
}

impl Server {
    /// Runs `driftwatch serve ARGS` on a free port with a database of its own.
    pub fn start<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Server {
        let dir = temp_db_dir();
        let mut server = Server::start_on(args, env, &dir.join("driftwatch.db"));
        server.owned_dir = Some(dir);
        server
    }

    /// Runs `driftwatch serve ARGS --db DB --listen 127.0.0.1:0` and waits for its address.
    pub fn start_on<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)], db: &Path) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftwatch"));
        cmd.arg("serve")
            .args(args)
            .arg("--db")
            .arg(db)
            .args(["--listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start driftwatch serve");
        // The log (stderr) is drained and kept, so the server never blocks
        // on a full pipe and a failed start can say why.
        let stderr = child.stderr.take().expect("stderr piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut k = kept.lock().unwrap_or_else(|p| p.into_inner());
                if k.len() < 64 * 1024 {
                    k.push_str(&line);
                    k.push('\n');
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("driftwatch listening on ") {
                        break a.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    std::thread::sleep(Duration::from_millis(200));
                    let log = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    panic!("driftwatch serve exited before listening:\n{log}");
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            owned_dir: None,
        }
    }

    /// One request; returns the status code and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).expect("write head");
        // A server refusing a body early (413) may close before it is all
        // sent; read whatever reply made it back (status 0 when none did).
        let _ = s.write_all(body);
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    pub fn post_json(&self, path: &str, body: &str) -> (u16, String) {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    /// Posts `{"KEY": [ITEMS...]}` (`events` or `labels`), expects 200 and
    /// returns the parsed reply.
    pub fn post_items(&self, path: &str, key: &str, items: &[String]) -> Value {
        let (status, reply) =
            self.post_json(path, &format!(r#"{{"{key}": [{}]}}"#, items.join(",")));
        assert_eq!(status, 200, "{reply}");
        serde_json::from_str(&reply).expect("reply JSON")
    }

    /// The value of one series in `/metrics`, e.g. `driftwatch_window_samples{model="m",window="1h"}`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (_, text) = self.request("GET", "/metrics", &[], b"");
        text.lines().find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            if n != name
                || !labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            {
                return None;
            }
            match value {
                "+Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                v => v.parse().ok(),
            }
        })
    }

    /// Polls until `f` holds (or panics after `limit`).
    pub fn wait_for(&self, limit: Duration, what: &str, mut f: impl FnMut(&Server) -> bool) {
        let start = Instant::now();
        while !f(self) {
            assert!(start.elapsed() < limit, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Server {
    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the live `window` of `model` holds `events`, then lets
    /// the evaluation loop (every 100 ms in these tests) run again so every
    /// gauge reflects them.
    pub fn wait_for_samples(&self, model: &str, window: &str, events: u64) {
        let labels = [("model", model), ("window", window)];
        self.wait_for(
            Duration::from_secs(20),
            &format!("{events} events in {model}'s live {window} window"),
            |s| s.metric("driftwatch_window_samples", &labels) == Some(events as f64),
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Checks a `report` column against the live gauges of its kind
    /// (`feature` or `prediction`): the verdict, then every test's statistic
    /// and p-value, bit for bit. `series` picks the column's series (e.g.
    /// feature and window). Returns how many tests were compared.
    pub fn assert_column_matches(&self, kind: &str, col: &Value, series: &[(&str, &str)]) -> usize {
        let detected = self.metric(&format!("driftwatch_{kind}_drift_detected"), series);
        let want = if col["drift"] == true { 1.0 } else { 0.0 };
        assert_eq!(detected, Some(want), "{series:?}: verdict of {col}");
        let mut compared = 0;
        for t in col["tests"].as_array().expect("tests") {
            let test = t["test"].as_str().expect("test");
            let mut labels = series.to_vec();
            labels.push(("test", test));
            let live = self.metric(&format!("driftwatch_{kind}_drift_score"), &labels);
            // A statistic JSON cannot hold is a chi-square's +Inf; a test
            // that could not run has no series.
            let infinite = t["note"].as_str().is_some_and(|n| n.contains("infinite"));
            let want = t["statistic"]
                .as_f64()
                .or(infinite.then_some(f64::INFINITY));
            assert_eq!(live, want, "{labels:?} statistic: {t}");
            let p = self.metric(&format!("driftwatch_{kind}_drift_p_value"), &labels);
            assert_eq!(p, t["p_value"].as_f64(), "{labels:?} p-value");
            compared += 1;
        }
        compared
    }

    /// Checks every feature column of `report` against the live gauges
    /// of `model`'s `window` (`assert_column_matches`), at least 40 tests
    /// in all.
    pub fn assert_features_match(&self, report: &Value, model: &str, window: &str) {
        let mut compared = 0;
        let columns = report["columns"].as_array().expect("columns");
        for col in columns {
            let feature = col["name"].as_str().expect("name");
            let series = [("model", model), ("feature", feature), ("window", window)];
            compared += self.assert_column_matches("feature", col, &series);
        }
        // Five or more statistics per column (the example's 8 give 40+).
        assert!(
            !columns.is_empty() && compared >= 5 * columns.len(),
            "{compared} for {} columns",
            columns.len()
        );
    }

    /// SIGKILL, as a crash would: no chance to flush anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.owned_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
