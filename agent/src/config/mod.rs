//! The agent's configuration: a YAML file (serde_yaml_ng, which names the
//! line and column of a mistake) or the flag-only quick start of DESIGN.md;
//! flags override the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use driftwatch_telemetry::tls::{Protocols, TlsFiles};
use serde::{Deserialize, Deserializer};

mod arms;
mod collector;
pub use arms::{Arm, ArmKey};
use collector::{
    default_batch_events, default_batch_wait, default_buffer_events, default_ship_timeout,
};
pub use collector::{ClientTls, Collector, NatsOptions, Spool};

/// How the threads that do the agent's own work are scheduled
/// (`background_scheduling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Background {
    /// Linux's `SCHED_IDLE`: the thread runs only on a core that no other
    /// thread wants, and any other thread that wakes takes the core from
    /// it at once; the kernel also counts a core running only such
    /// threads as free when it places a woken thread.
    #[default]
    Idle,
    /// `SCHED_OTHER` at nice 10 (before 0.7): a share of about a tenth of
    /// a core against each thread at nice 0 that wants the same core.
    Nice,
}

/// A duration written like `30s`, `5m`, `250ms`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration like 250ms, 30s or 5m ({e})"
        ))
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where proxied, mirrored and KServe logger traffic arrives.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `/metrics`, `/healthz` and `/readyz`, apart from the traffic.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// The node's name in events (default: the `NODE_NAME` environment variable).
    #[serde(default)]
    pub node: Option<String>,
    /// The ONNX Runtime shared library (default: `ORT_DYLIB_PATH`).
    #[serde(default)]
    pub ort_library: Option<PathBuf>,
    pub collector: Collector,
    pub models: Vec<Model>,
    /// How long SIGTERM waits for requests in flight and a last flush.
    #[serde(default = "default_shutdown", deserialize_with = "duration")]
    pub shutdown_deadline: Duration,
    /// Threads serving traffic, each with its own connections (default:
    /// one per core the agent may use).
    #[serde(default)]
    pub traffic_threads: Option<usize>,
    /// The nice value of the acceptor and traffic threads (default 0;
    /// below 0 needs `CAP_SYS_NICE`, and the agent refuses to start
    /// without it).
    #[serde(default)]
    pub traffic_nice: i32,
    /// How the agent's own work (parsing, events, shipping, the admin
    /// endpoints, shadow scoring) is scheduled: `idle` or `nice`.
    #[serde(default)]
    pub background_scheduling: Background,
    /// Serve plain HTTP/1.1 proxy requests (a `Content-Length` body, no
    /// upgrade or `Expect`) on the agent's own lean path; `false` serves
    /// every request through hyper, as all other requests are.
    #[serde(default = "default_true")]
    pub fast_path: bool,
    /// OpenTelemetry export (request spans and metrics over OTLP/HTTP);
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` when absent.
    #[serde(default)]
    pub otlp: Option<driftwatch_telemetry::OtlpConfig>,
    /// Bounds on clients of the traffic listener.
    #[serde(default)]
    pub http: HttpLimits,
    /// HTTPS on the traffic listener (served through hyper: the lean path
    /// is plain HTTP only).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// HTTPS on the admin listener.
    #[serde(default)]
    pub admin_tls: Option<TlsFiles>,
    /// The key of `hash` features (HMAC-SHA256), from an environment
    /// variable or a file; read once at start.
    #[serde(default)]
    pub hash_key_env: Option<String>,
    #[serde(default)]
    pub hash_key_file: Option<PathBuf>,
    /// Log lines: `format` (text or json) and `level` (a filter in
    /// `RUST_LOG` syntax; `DRIFTWATCH_LOG` replaces it).
    #[serde(default)]
    pub log: driftwatch_telemetry::log::LogConfig,
    /// The file it was read from (`SIGHUP` reads it again for new arm
    /// weights); none for the flag quick start.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// Bounds on the traffic listener's clients; refusals are counted in
/// `driftwatch_agent_connections_refused_total{reason}`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// Connections served at once; one more is closed at once (nginx:
    /// `worker_connections`, 512 per worker by default).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a connection may take to send a request's head, counted
    /// from the end of the previous response (so also how long an idle
    /// keep-alive connection stays open). nginx: `client_header_timeout`
    /// 60 s, `keepalive_timeout` 75 s.
    #[serde(default = "default_header_timeout", deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// How long the lean path waits between two reads of a request body
    /// (nginx: `client_body_timeout`, 60 s).
    #[serde(default = "default_header_timeout", deserialize_with = "duration")]
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: default_max_connections(),
            header_timeout: default_header_timeout(),
            body_timeout: default_header_timeout(),
        }
    }
}

fn default_max_connections() -> usize {
    4096
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(60)
}

/// The model server's protocol (also `--protocol` of the quick start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    KserveV2,
    Tfserving,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A reverse proxy in front of the champion.
    Proxy,
    /// Mirrored copies of requests (Istio/Envoy), answered at once.
    Mirror,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub name: String,
    /// Path prefix this model's traffic arrives on (longest prefix wins).
    #[serde(default = "default_route")]
    pub route: String,
    /// Or the `Host` header it arrives with (checked before routes).
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// The champion model server (proxy mode).
    #[serde(default)]
    pub upstream: Option<String>,
    /// An experiment instead of one upstream: each request goes to one
    /// arm, drawn by weight (sticky by `arm_key`); the answer says which
    /// (`x-driftwatch-arm`) and so does its event (`arm`).
    #[serde(default)]
    pub arms: Vec<Arm>,
    /// What keeps a caller on one arm: a request header or a JSON pointer
    /// into the body, hashed; absent (or missing from a request), each
    /// request is drawn on its own.
    #[serde(default)]
    pub arm_key: Option<ArmKey>,
    #[serde(default = "default_upstream_timeout", deserialize_with = "duration")]
    pub upstream_timeout: Duration,
    /// The champion's gRPC endpoint (KServe v2 `GRPCInferenceService`,
    /// `http://host:port`): gRPC calls on the traffic listener go there.
    #[serde(default)]
    pub grpc_upstream: Option<String>,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// Names of the columns of 2-D inputs (`[N, F]` tensors, list instances).
    #[serde(default)]
    pub features: Option<Vec<String>>,
    /// Output names to read (defaults cover sklearn, KServe and TF Serving).
    #[serde(default)]
    pub outputs: OutputNames,
    /// Class names of probability columns (default: "0", "1", ...).
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// The class whose probability is the `score` of binary models.
    #[serde(default = "default_positive")]
    pub positive_class: String,
    /// Generic JSON adapter: where rows and outputs are.
    #[serde(default)]
    pub generic: Option<Generic>,
    #[serde(default)]
    pub champion_version: Option<String>,
    /// A header carrying request ids, tried after `x-request-id` and `traceparent`.
    #[serde(default)]
    pub request_id_header: Option<String>,
    /// Bodies larger than this are forwarded without being read.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Mirror and KServe logger traffic: how long a request waits for its response.
    #[serde(default = "default_join_wait", deserialize_with = "duration")]
    pub join_wait: Duration,
    #[serde(default)]
    pub shadow: Option<Shadow>,
    /// The request's fields the agent may ship (an allow-list); none: all
    /// it reads. Applied with `sensitive` before an event is queued.
    #[serde(default)]
    pub request_fields: Option<Vec<String>>,
    /// Per feature: `keep` (the default), `drop` or `hash`.
    #[serde(default)]
    pub sensitive: BTreeMap<String, Sensitivity>,
}

/// What leaves the node of a sensitive feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    Keep,
    /// Never shipped (the shadow may still read it).
    Drop,
    /// Shipped as HMAC-SHA256 under `hash_key`, a categorical feature.
    Hash,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputNames {
    pub label: Option<String>,
    pub probabilities: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generic {
    /// JSON pointer to the rows in the request: an array of objects, or one object.
    pub rows: String,
    /// JSON pointer to the outputs in the response: an array parallel to
    /// the rows (objects, numbers or strings), or one value.
    pub outputs: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    /// The ONNX model file.
    pub path: PathBuf,
    #[serde(default)]
    pub version: Option<String>,
    /// Features in the order of the model's float input's columns (default:
    /// `features`, else the request's order).
    #[serde(default)]
    pub inputs: Option<Vec<String>>,
    /// The ONNX input name (default: the model's first input).
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub outputs: OutputNames,
    #[serde(default = "default_device")]
    pub device: Device,
    /// Inference threads of the session.
    #[serde(default = "one_usize")]
    pub threads: usize,
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    #[serde(default = "default_max_wait", deserialize_with = "duration")]
    pub max_wait: Duration,
    /// Rows waiting at most; beyond, rows are shed (counted).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// A row not scored within this time is shipped without the shadow.
    #[serde(default = "default_shadow_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
}

fn default_listen() -> String {
    "0.0.0.0:8081".into()
}
fn default_admin_listen() -> String {
    "0.0.0.0:8082".into()
}
fn default_true() -> bool {
    true
}

fn default_shutdown() -> Duration {
    Duration::from_secs(10)
}
fn one() -> f64 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn default_route() -> String {
    "/".into()
}
fn default_mode() -> Mode {
    Mode::Proxy
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_protocol() -> Protocol {
    Protocol::KserveV2
}
fn default_positive() -> String {
    "1".into()
}
fn default_max_body() -> usize {
    10 * 1024 * 1024
}
fn default_join_wait() -> Duration {
    Duration::from_secs(2)
}
fn default_device() -> Device {
    Device::Cpu
}
fn default_max_batch() -> usize {
    64
}
fn default_max_wait() -> Duration {
    Duration::from_millis(2)
}
fn default_queue() -> usize {
    4096
}
fn default_shadow_timeout() -> Duration {
    Duration::from_millis(500)
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The YAML does not parse into the schema (serde_yaml_ng names the line).
    #[error("{}: {source}", path.display())]
    Yaml {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    /// Cross-field problems, every one of them.
    #[error("{}{}", origin.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default(), problems.join("\n"))]
    Invalid {
        origin: Option<PathBuf>,
        problems: Vec<String>,
    },
    #[error("collector.token_file {}: {source}", path.display())]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    HashKey(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let config: Config =
            serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Yaml {
                path: path.into(),
                source,
            })?;
        config.check().map_err(|e| match e {
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                origin: Some(path.into()),
                problems,
            },
            other => other,
        })?;
        Ok(Config {
            source: Some(path.into()),
            ..config
        })
    }

    /// The config for one model from flags alone.
    pub fn from_flags(model: Model, collector: &str, listen: &str) -> Config {
        Config {
            listen: listen.to_string(),
            admin_listen: default_admin_listen(),
            node: None,
            ort_library: None,
            collector: Collector {
                url: collector.to_string(),
                token_env: Some("DRIFTWATCH_TOKEN".into()),
                token_file: None,
                batch_events: default_batch_events(),
                batch_wait: default_batch_wait(),
                buffer_events: default_buffer_events(),
                spool: None,
                timeout: default_ship_timeout(),
                sample_rate: 1.0,
                tls: None,
                nats: None,
            },
            models: vec![model],
            shutdown_deadline: default_shutdown(),
            traffic_threads: None,
            traffic_nice: 0,
            background_scheduling: Default::default(),
            fast_path: true,
            otlp: None,
            http: HttpLimits::default(),
            tls: None,
            admin_tls: None,
            hash_key_env: None,
            hash_key_file: None,
            log: Default::default(),
            source: None,
        }
    }

    /// The node's name: `node`, else the `NODE_NAME` environment variable.
    pub fn node_name(&self) -> Option<String> {
        self.node
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
    }

    /// Cross-field checks, every problem at once.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.models.is_empty() {
            problems.push("models: give at least one model".to_string());
        }
        if let Some(o) = &self.otlp {
            problems.extend(o.check());
        }
        problems.extend(self.log.check());
        if self.traffic_threads == Some(0) {
            problems.push("traffic_threads: give at least 1".to_string());
        }
        if !(-20..=19).contains(&self.traffic_nice) {
            problems.push(format!(
                "traffic_nice: {} is not a nice value (-20 to 19)",
                self.traffic_nice
            ));
        }
        problems.extend(self.collector.check());
        if self.http.max_connections == 0
            || self.http.header_timeout.is_zero()
            || self.http.body_timeout.is_zero()
        {
            problems.push("http: max_connections and the timeouts must be above 0".into());
        }
        if self.hash_key_env.is_some() && self.hash_key_file.is_some() {
            problems.push("give hash_key_env or hash_key_file, not both".into());
        }
        for (what, tls) in [("tls", &self.tls), ("admin_tls", &self.admin_tls)] {
            if let Some(Err(e)) = tls.as_ref().map(|t| t.server_config(Protocols::Http1)) {
                problems.push(format!("{what}: {e}"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            if !names.insert(&m.name) {
                problems.push(format!("models[{i}]: model {} is given twice", m.name));
            }
            if m.mode == Mode::Proxy && m.upstream.is_none() && m.arms.is_empty() {
                problems.push(format!(
                    "models[{i}] ({}): proxy mode needs `upstream` (or `arms`)",
                    m.name
                ));
            }
            problems.extend(
                arms::check(m)
                    .into_iter()
                    .map(|p| format!("models[{i}] ({}): {p}", m.name)),
            );
            if m.grpc_upstream.is_some() && m.protocol != Protocol::KserveV2 {
                problems.push(format!(
                    "models[{i}] ({}): `grpc_upstream` is for the kserve-v2 protocol (its GRPCInferenceService)",
                    m.name
                ));
            }
            if m.protocol == Protocol::Generic && m.generic.is_none() {
                problems.push(format!(
                    "models[{i}] ({}): the generic protocol needs `generic: {{rows, outputs}}` (JSON pointers)",
                    m.name
                ));
            }
            if !m.route.starts_with('/') {
                problems.push(format!(
                    "models[{i}] ({}): route {:?} must start with /",
                    m.name, m.route
                ));
            }
            let hashed = m.sensitive.values().any(|s| *s == Sensitivity::Hash);
            if hashed && self.hash_key_env.is_none() && self.hash_key_file.is_none() {
                problems.push(format!(
                    "models[{i}] ({}): a `hash` feature needs hash_key_env or hash_key_file",
                    m.name
                ));
            }
            if let Some(s) = &m.shadow {
                if s.max_batch == 0 || s.queue == 0 || s.threads == 0 {
                    problems.push(format!(
                        "models[{i}] ({}): shadow max_batch, queue and threads must be above 0",
                        m.name
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                origin: None,
                problems,
            })
        }
    }

    /// The collector token, read from its environment variable or file.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        self.collector.token()
    }
}

impl Model {
    /// A model from the quick-start flags.
    pub fn quick(name: &str, upstream: &str, protocol: Protocol, shadow: Option<PathBuf>) -> Model {
        let yaml = format!("name: {name:?}\nupstream: {upstream:?}\n");
        let mut m: Model = serde_yaml_ng::from_str(&yaml).expect("a valid model");
        m.protocol = protocol;
        m.shadow = shadow.map(|path| {
            let mut s: Shadow =
                serde_yaml_ng::from_str(&format!("path: {:?}\n", path.display().to_string()))
                    .expect("a valid shadow");
            s.path = path;
            s
        });
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistakes_name_their_place_and_cross_checks_come_together() {
        let dir = driftwatch_testkit::temp_dir("agent-config");
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("agent.yaml");
        std::fs::write(
            &file,
            "collector: {url: http://c:8080}\nmodels:\n  - name: m\n    upstream_timeout: soon\n",
        )
        .expect("write");
        let err = Config::load(&file).expect_err("bad duration").to_string();
        assert!(
            err.contains("models[0]")
                && err.contains("line 3")
                && err.contains("\"soon\" is not a duration"),
            "{err}"
        );
        std::fs::write(
            &file,
            "collector: {url: http://c:8080, sample_rate: 2}\nmodels:\n  - name: m\n    protocol: generic\n  - name: m\n    upstream: http://u\n    colour: red\n",
        )
        .expect("write");
        let err = Config::load(&file).expect_err("unknown field").to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
        std::fs::write(
            &file,
            "traffic_nice: -21\ncollector: {url: http://c:8080, sample_rate: 2}\nmodels:\n  - name: m\n    protocol: generic\n  - name: m\n    upstream: http://u\n",
        )
        .expect("write");
        let err = Config::load(&file).expect_err("cross checks").to_string();
        for want in [
            "traffic_nice: -21 is not a nice value (-20 to 19)",
            "sample_rate: 2 is not between 0 and 1",
            "model m is given twice",
            "proxy mode needs `upstream`",
            "generic protocol needs",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
        // A traffic split: arms instead of one upstream, weights that add up.
        std::fs::write(
            &file,
            "collector: {url: http://c:8080}\nmodels:\n  - name: m\n    upstream: http://u\n    arms: [{name: a, upstream: 'http://a', weight: 0}, {name: a, upstream: 'http://b', weight: -1}]\n    arm_key: {header: x-user-id, json_pointer: /user}\n",
        )
        .expect("write");
        let err = Config::load(&file).expect_err("bad arms").to_string();
        for want in [
            "give `upstream` or `arms`, not both",
            "arms[1] (a): the name is used twice",
            "arms[1] (a).weight: must be a non-negative number",
            "the weights must sum to a positive number",
            "arm_key: give exactly one of",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
        // The agent's own work: idle (the default) or nice, nothing else.
        let base = "collector: {url: http://c:8080}\nmodels:\n  - {name: m, upstream: http://u}\n";
        std::fs::write(&file, base).expect("write");
        let config = Config::load(&file).expect("defaults");
        assert_eq!(config.background_scheduling, Background::Idle);
        assert_eq!(config.traffic_nice, 0);
        std::fs::write(&file, format!("background_scheduling: nice\n{base}")).expect("write");
        let config = Config::load(&file).expect("nice");
        assert_eq!(config.background_scheduling, Background::Nice);
        std::fs::write(&file, format!("background_scheduling: low\n{base}")).expect("write");
        let err = Config::load(&file).expect_err("unknown").to_string();
        assert!(
            err.contains("unknown variant `low`") && err.contains("line 1"),
            "{err}"
        );
        // HTTP(S) or NATS servers, nothing else.
        for (url, want) in [
            (
                "nats://n,http://c",
                "neither an http:// or https:// URL nor nats://",
            ),
            ("c:80", "\"c:80\" is neither"),
        ] {
            let yaml = format!(
                "collector: {{url: '{url}'}}\nmodels:\n  - {{name: m, upstream: http://u}}\n"
            );
            std::fs::write(&file, yaml).expect("write");
            let err = Config::load(&file).expect_err("bad URL").to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        // Nesting of any depth is refused with its place, never a stack
        // overflow: serde_yaml_ng reads the events without recursing and
        // stops deserialising at 128 levels, or where the schema wants
        // no sequence.
        for (deep, want) in [
            (
                format!("models:\n  {}x\n", "- ".repeat(20_000)),
                "invalid type: sequence, expected struct Model",
            ),
            (
                format!("models: {}{}\n", "[".repeat(20_000), "]".repeat(20_000)),
                "invalid type: sequence, expected struct Model",
            ),
            (
                format!("otlp: {}{}\n", "{a: ".repeat(20_000), "}".repeat(20_000)),
                "",
            ),
        ] {
            std::fs::write(&file, deep).expect("write");
            let err = Config::load(&file).expect_err("too deep").to_string();
            assert!(err.contains(want) && err.contains("line "), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
