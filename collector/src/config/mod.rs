//! The collector's configuration: a YAML file (`driftwatch serve --config`)
//! or the flag-only quick start, validated into `Config` before anything
//! starts. Secrets (ingest tokens) come from environment variables or files,
//! never from the YAML itself.

pub mod cluster;
pub mod estimation;
pub mod experiment;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use driftwatch_telemetry::log::LogConfig;
use serde::{Deserialize, Deserializer};

use crate::report::Overrides;

/// Default exact samples kept per feature per window (then a uniform reservoir).
pub const DEFAULT_SAMPLE_LIMIT: usize = 10_000;

/// A duration written as `30s`, `5m`, `1h`, `1d` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub duration: Duration,
}

impl Span {
    pub fn parse(text: &str) -> Result<Span, String> {
        let duration = humantime::parse_duration(text.trim())
            .map_err(|e| format!("{text:?} is not a duration like 30s, 5m, 1h or 1d ({e})"))?;
        if duration.is_zero() {
            return Err(format!("{text:?}: the duration must be positive"));
        }
        Ok(Span { duration })
    }

    /// The label form of a window length: `5m`, `1h`, `1d`, `90s`.
    pub fn label(&self) -> String {
        let s = self.duration.as_secs();
        match s {
            s if s % 86_400 == 0 => format!("{}d", s / 86_400),
            s if s % 3_600 == 0 => format!("{}h", s / 3_600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s if s > 0 => format!("{s}s"),
            _ => format!("{}ms", self.duration.as_millis()),
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let text = String::deserialize(d)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A duration that may be zero (`eval_budget`).
fn budget<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration like 0s, 500ms or 10s ({e})"
            ))
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    BinaryClassification,
    MulticlassClassification,
    Regression,
}

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// SQLite database file (created if absent).
    #[serde(default = "default_db")]
    pub db: PathBuf,
    /// How often live windows are re-evaluated.
    #[serde(default = "default_eval_interval")]
    pub eval_interval: Span,
    /// How long one evaluation cycle may spend on windows before it leaves
    /// the rest (the oldest results go first next cycle); at least one
    /// window is evaluated per cycle, so `0s` means one window per cycle.
    /// Default: `eval_interval`.
    #[serde(default, deserialize_with = "budget")]
    pub eval_budget: Option<Duration>,
    /// Largest accepted request body (after decompression), in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Events stamped further in the future than this are rejected.
    #[serde(default = "default_max_future_skew")]
    pub max_future_skew: Span,
    /// Bearer tokens by scope; no tokens means no authentication.
    #[serde(default)]
    pub auth: RawAuth,
    /// Bounds on connections and slow clients.
    #[serde(default)]
    pub http: HttpLimits,
    /// Serve HTTPS with this certificate (reloaded when it changes).
    #[serde(default)]
    pub tls: Option<driftwatch_telemetry::tls::TlsFiles>,
    /// Alerting rule files (see `driftwatch rules check`).
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// The collector's address as users reach it (links in notifications).
    pub external_url: Option<String>,
    /// OpenTelemetry export (traces and metrics over OTLP/HTTP).
    #[serde(default)]
    pub otlp: Option<driftwatch_telemetry::OtlpConfig>,
    /// Log lines: `format` (text or json) and `level` (a filter in
    /// `RUST_LOG` syntax; `DRIFTWATCH_LOG` replaces it).
    #[serde(default)]
    pub log: LogConfig,
    /// Cluster mode: collectors sharing a NATS JetStream log (absent: one
    /// collector with its own database).
    #[serde(default)]
    pub cluster: Option<cluster::RawCluster>,
    pub models: Vec<RawModel>,
}

/// Bounds on connections and slow or greedy clients.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Connections open at once; more are closed at once (counted).
    pub max_connections: usize,
    /// How long a request head (and a TLS handshake) may take to arrive;
    /// also how long an idle kept-alive connection stays open.
    #[serde(deserialize_with = "span")]
    pub header_timeout: Duration,
    /// How long a request body may take to arrive (408 after).
    #[serde(deserialize_with = "span")]
    pub body_timeout: Duration,
    /// The largest request head (431 above); at least 8192.
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }
}

fn span<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Span::deserialize(d).map(|s| s.duration)
}

/// Bearer tokens by scope. The tokens at the top level (as before scopes
/// existed) hold `ingest` and `admin`; `read` is open until read tokens
/// are configured; with no tokens at all nothing is authenticated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Name of an environment variable holding comma-separated tokens.
    pub tokens_env: Option<String>,
    /// A file holding one token per line.
    pub tokens_file: Option<PathBuf>,
    /// Tokens that may post events and labels.
    pub ingest: Option<RawTokens>,
    /// Tokens that may read the JSON API (and `/metrics` with `metrics: true`).
    pub read: Option<RawTokens>,
    /// Tokens that may change state: reload, silences; they may also read.
    pub admin: Option<RawTokens>,
    /// Whether `/metrics` needs a read token too (off: Prometheus scrapes
    /// without one).
    #[serde(default)]
    pub metrics: bool,
}

/// Where one scope's tokens come from (never inline in the file).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    pub tokens_env: Option<String>,
    pub tokens_file: Option<PathBuf>,
}

/// The tokens of each scope, as validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokens {
    pub ingest: Vec<String>,
    pub read: Vec<String>,
    pub admin: Vec<String>,
    /// `/metrics` needs a read token.
    pub metrics: bool,
}

impl RawTokens {
    /// The tokens from the environment variable and the file; `at` names
    /// the block in errors.
    fn load(
        &self,
        at: &str,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<String>,
    ) -> Vec<String> {
        let before = errors.len();
        let mut tokens = Vec::new();
        let mut add = |parts: &mut dyn Iterator<Item = &str>| {
            tokens.extend(
                parts
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from),
            )
        };
        if let Some(var) = &self.tokens_env {
            match env(var) {
                Some(v) => add(&mut v.split(',')),
                None => errors.push(format!(
                    "{at}tokens_env: environment variable {var} is not set"
                )),
            }
        }
        if let Some(file) = &self.tokens_file {
            match std::fs::read_to_string(file) {
                Ok(text) => add(&mut text.lines()),
                Err(e) => errors.push(format!("{at}tokens_file: {}: {e}", file.display())),
            }
        }
        if (self.tokens_env.is_some() || self.tokens_file.is_some())
            && tokens.is_empty()
            && errors.len() == before
        {
            errors.push(format!(
                "{}: a token source is configured but holds no token",
                at.trim_end_matches('.')
            ));
        }
        tokens
    }
}

impl RawAuth {
    fn load(&self, env: &dyn Fn(&str) -> Option<String>, errors: &mut Vec<String>) -> Tokens {
        let before = errors.len();
        let top = RawTokens {
            tokens_env: self.tokens_env.clone(),
            tokens_file: self.tokens_file.clone(),
        }
        .load("auth.", env, errors);
        let scope = |raw: &Option<RawTokens>, at: &str, errors: &mut Vec<String>| {
            raw.as_ref()
                .map_or_else(Vec::new, |r| r.load(at, env, errors))
        };
        let mut tokens = Tokens {
            ingest: scope(&self.ingest, "auth.ingest.", errors),
            read: scope(&self.read, "auth.read.", errors),
            admin: scope(&self.admin, "auth.admin.", errors),
            metrics: self.metrics,
        };
        tokens.ingest.extend(top.iter().cloned());
        tokens.admin.extend(top);
        if self.metrics && tokens.read.is_empty() && errors.len() == before {
            errors.push(
                "auth.metrics: `/metrics` would need a read token, but auth.read has none"
                    .to_string(),
            );
        }
        tokens
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    #[serde(default = "default_task")]
    pub task: Task,
    /// Positive class label for binary classification.
    pub positive_class: Option<String>,
    /// Reference data: CSV, Parquet or a `driftwatch profile` JSON, loaded once at start.
    pub reference: PathBuf,
    /// Features to watch; all reference columns when absent (less the
    /// prediction column).
    pub features: Option<Vec<String>>,
    /// Where the reference holds the model's own outputs, for prediction drift.
    pub prediction: Option<RawPrediction>,
    /// Tumbling window lengths.
    #[serde(default = "default_windows")]
    pub windows: Vec<Span>,
    /// Exact samples kept per feature per window before reservoir sampling.
    #[serde(default = "default_sample_limit")]
    pub window_sample_limit: usize,
    /// How long a prediction waits for its label (predictions are kept this long).
    #[serde(default = "default_label_ttl")]
    pub label_ttl: Span,
    /// Serving cost per role, for `driftwatch_cost_per_1k_predictions_usd`.
    #[serde(default)]
    pub cost: RawCost,
    /// Verdict tests and thresholds of the live windows, written as
    /// `driftwatch report`'s `--test` and `--threshold` (live = offline).
    #[serde(default)]
    pub drift: RawDrift,
    /// Cluster mode: how many collectors may share the model's traffic
    /// (each partition has its own owner); a divisor of 12.
    #[serde(default = "default_partitions")]
    pub partitions: usize,
    /// A/B tests and canaries over the arms the agent splits traffic into.
    #[serde(default)]
    pub experiments: Vec<experiment::RawExperiment>,
    /// Performance estimated before the labels arrive (CBPE).
    pub estimation: Option<estimation::RawEstimation>,
    /// Multivariate drift by data reconstruction.
    pub multivariate: Option<estimation::RawMultivariate>,
    /// Drift per segment of some categorical features.
    pub segments: Option<estimation::RawSegments>,
}

/// A model's drift test and threshold overrides, in `driftwatch report`'s
/// syntax: tests `NAME` (every feature) or `FEATURE=NAME`; thresholds
/// `NAME=VALUE` or `FEATURE:NAME=VALUE`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrift {
    #[serde(default)]
    pub tests: Vec<String>,
    #[serde(default)]
    pub thresholds: Vec<String>,
}

impl RawDrift {
    pub fn overrides(&self) -> Result<Overrides, String> {
        Overrides::parse(&self.tests, &self.thresholds)
    }
}

/// The reference column holding the model's outputs on the reference rows;
/// each role's live outputs are compared with it (prediction drift).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrediction {
    pub column: String,
    /// Which field of an output the column holds. Default: `value` for
    /// regression, `label` for multiclass, and for binary tasks `score` when
    /// the column is numeric, `label` otherwise.
    pub output: Option<OutputField>,
}

/// A field of an event's `champion` / `shadow` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputField {
    Label,
    Score,
    Value,
}

impl OutputField {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputField::Label => "label",
            OutputField::Score => "score",
            OutputField::Value => "value",
        }
    }
}

/// What serving costs, per role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    pub champion: Option<RoleCost>,
    pub shadow: Option<RoleCost>,
}

/// Either the cost of the serving capacity per hour (divided over the
/// predictions observed), or the cost per second of compute (CPU or GPU),
/// multiplied by each prediction's reported latency.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleCost {
    pub per_hour_usd: Option<f64>,
    pub per_second_usd: Option<f64>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}
fn default_db() -> PathBuf {
    PathBuf::from("driftwatch.db")
}
fn default_eval_interval() -> Span {
    Span {
        duration: Duration::from_secs(15),
    }
}
fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_max_future_skew() -> Span {
    Span {
        duration: Duration::from_secs(300),
    }
}
fn default_task() -> Task {
    Task::BinaryClassification
}
fn default_windows() -> Vec<Span> {
    vec![Span {
        duration: Duration::from_secs(3600),
    }]
}
fn default_label_ttl() -> Span {
    Span {
        duration: Duration::from_secs(7 * 86_400),
    }
}
fn default_partitions() -> usize {
    1
}
fn default_sample_limit() -> usize {
    DEFAULT_SAMPLE_LIMIT
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub db: PathBuf,
    pub eval_interval: Duration,
    pub eval_budget: Duration,
    pub max_body_bytes: usize,
    pub max_future_skew: Duration,
    pub tokens: Tokens,
    pub http: HttpLimits,
    pub tls: Option<driftwatch_telemetry::tls::TlsFiles>,
    pub rules: Vec<PathBuf>,
    pub external_url: Option<String>,
    /// From `otlp:`, else `OTEL_EXPORTER_OTLP_ENDPOINT`; none: no export.
    pub otlp: Option<driftwatch_telemetry::OtlpConfig>,
    pub log: LogConfig,
    pub cluster: Option<cluster::Cluster>,
    pub models: Vec<RawModel>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Yaml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {}", path.display(), errors.join("; "))]
    Invalid { path: PathBuf, errors: Vec<String> },
}

impl RawConfig {
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        crate::yaml::check_depth(&text).map_err(|(line, column, message)| ConfigError::Yaml {
            path: path.into(),
            line,
            column,
            message,
        })?;
        serde_yaml_ng::from_str(&text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            ConfigError::Yaml {
                path: path.into(),
                line,
                column,
                message: e.to_string(),
            }
        })
    }

    /// Checks everything that can be checked without loading references, and
    /// reports every problem at once. `origin` names the file (or `flags`).
    pub fn validate(
        self,
        origin: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let listen = match self.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(format!(
                    "listen: {:?} is not an address like 127.0.0.1:8080",
                    self.listen
                ));
                None
            }
        };
        if let Some(u) = &self.external_url {
            if !matches!(url::Url::parse(u), Ok(p) if matches!(p.scheme(), "http" | "https")) {
                errors.push(format!("external_url: {u:?} is not an http(s) URL"));
            }
        }
        let otlp = driftwatch_telemetry::OtlpConfig::resolve(self.otlp.clone());
        errors.extend(otlp.iter().flat_map(|o| o.check()));
        errors.extend(self.log.check());
        if self.max_body_bytes == 0 {
            errors.push("max_body_bytes: must be at least 1".to_string());
        }
        if self.models.is_empty() {
            errors.push("models: at least one model is needed".to_string());
        }
        let mut names = std::collections::HashSet::new();
        let mut experiment_names = std::collections::HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let at = format!("models[{i}] ({})", m.name);
            if m.name.trim().is_empty() {
                errors.push(format!("models[{i}].name: must not be empty"));
            }
            if !names.insert(m.name.clone()) {
                errors.push(format!("{at}: the name is used twice"));
            }
            if m.windows.is_empty() {
                errors.push(format!("{at}.windows: at least one window is needed"));
            }
            if m.window_sample_limit == 0 {
                errors.push(format!("{at}.window_sample_limit: must be at least 1"));
            }
            let groups = driftwatch_protocol::subjects::GROUPS;
            if m.partitions == 0 || !groups.is_multiple_of(m.partitions) {
                errors.push(format!(
                    "{at}.partitions: {} does not divide {groups} (the groups the log hashes request ids into): use 1, 2, 3, 4, 6 or 12",
                    m.partitions
                ));
            }
            for (role, c) in [("champion", &m.cost.champion), ("shadow", &m.cost.shadow)] {
                let Some(c) = c else { continue };
                match (c.per_hour_usd, c.per_second_usd) {
                    (Some(v), None) | (None, Some(v)) if v.is_finite() && v >= 0.0 => {}
                    (Some(_), Some(_)) | (None, None) => errors.push(format!(
                        "{at}.cost.{role}: give exactly one of per_hour_usd and per_second_usd"
                    )),
                    _ => errors.push(format!(
                        "{at}.cost.{role}: the cost must be a non-negative number"
                    )),
                }
            }
            match (m.task, m.prediction.as_ref().and_then(|p| p.output)) {
                (Task::Regression, Some(OutputField::Label | OutputField::Score)) => errors.push(
                    format!("{at}.prediction.output: a regression model's outputs are `value`"),
                ),
                (Task::BinaryClassification | Task::MulticlassClassification, Some(OutputField::Value)) => errors.push(format!(
                    "{at}.prediction.output: a classifier's outputs are `label` or `score`"
                )),
                (Task::MulticlassClassification, Some(OutputField::Score)) => errors.push(format!(
                    "{at}.prediction.output: `score` is the positive-class probability of a binary task; use `label`"
                )),
                _ => {}
            }
            if let Err(e) = m.drift.overrides() {
                errors.push(format!("{at}.drift: {e}"));
            }
            experiment::check(
                &at,
                m.task,
                &m.experiments,
                &mut experiment_names,
                &mut errors,
            );
            estimation::check(
                &at,
                m.task,
                m.positive_class.as_deref().unwrap_or("1"),
                m.estimation.as_ref(),
                &mut errors,
            );
            if let Some(Err(e)) = m.multivariate.as_ref().map(|v| v.chunking()) {
                errors.push(format!("{at}.multivariate: {e}"));
            }
            if !m.reference.exists() {
                errors.push(format!(
                    "{at}.reference: {} does not exist",
                    m.reference.display()
                ));
            }
        }
        let tokens = self.auth.load(env, &mut errors);
        let cluster = self.cluster.and_then(|c| c.validate(env, &mut errors));
        if self.http.max_connections == 0 {
            errors.push("http.max_connections must be at least 1".to_string());
        }
        if self.http.max_header_bytes < 8192 {
            errors.push("http.max_header_bytes must be at least 8192".to_string());
        }
        if let Some(tls) = &self.tls {
            if let Err(e) = tls.server_config(driftwatch_telemetry::tls::Protocols::Http1) {
                errors.push(format!("tls: {e}"));
            }
        }
        match (errors.is_empty(), listen) {
            (true, Some(listen)) => Ok(Config {
                listen,
                db: self.db,
                eval_interval: self.eval_interval.duration,
                eval_budget: self.eval_budget.unwrap_or(self.eval_interval.duration),
                max_body_bytes: self.max_body_bytes,
                max_future_skew: self.max_future_skew.duration,
                tokens,
                http: self.http,
                tls: self.tls,
                rules: self.rules,
                external_url: self
                    .external_url
                    .map(|u| u.trim_end_matches('/').to_string()),
                otlp,
                log: self.log,
                cluster,
                models: self.models,
            }),
            _ => Err(ConfigError::Invalid {
                path: origin.into(),
                errors,
            }),
        }
    }
}

/// The flag-only quick start: one model, everything else defaulted.
pub fn from_flags(
    model: String,
    reference: PathBuf,
    windows: Vec<Span>,
    prediction_column: Option<String>,
) -> RawConfig {
    RawConfig {
        listen: default_listen(),
        db: default_db(),
        eval_interval: default_eval_interval(),
        eval_budget: None,
        max_body_bytes: default_max_body_bytes(),
        max_future_skew: default_max_future_skew(),
        auth: RawAuth::default(),
        http: HttpLimits::default(),
        tls: None,
        rules: Vec::new(),
        external_url: None,
        otlp: None,
        log: LogConfig::default(),
        cluster: None,
        models: vec![RawModel {
            name: model,
            task: default_task(),
            positive_class: None,
            reference,
            features: None,
            prediction: prediction_column.map(|column| RawPrediction {
                column,
                output: None,
            }),
            windows: if windows.is_empty() {
                default_windows()
            } else {
                windows
            },
            window_sample_limit: DEFAULT_SAMPLE_LIMIT,
            label_ttl: default_label_ttl(),
            cost: RawCost::default(),
            drift: RawDrift::default(),
            partitions: default_partitions(),
            experiments: Vec::new(),
            estimation: None,
            multivariate: None,
            segments: None,
        }],
    }
}

#[cfg(test)]
mod tests;
