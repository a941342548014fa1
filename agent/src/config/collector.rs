//! The `collector:` block: where events go (a collector over HTTP, or a
//! cluster's NATS stream), with what credentials, batching, buffering and
//! spooling.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{duration, one, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collector {
    /// `http(s)://` of a collector, or `nats://` URLs (comma-separated) of
    /// a cluster's servers.
    pub url: String,
    /// The bearer token (the NATS token for `nats://` URLs), from an
    /// environment variable or a file.
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Events per POST at most.
    #[serde(default = "default_batch_events")]
    pub batch_events: usize,
    /// How long an event may wait for its batch to fill.
    #[serde(default = "default_batch_wait", deserialize_with = "duration")]
    pub batch_wait: Duration,
    /// Events kept in memory while the collector is away; the oldest go
    /// to the spool (or are dropped, counted) beyond it.
    #[serde(default = "default_buffer_events")]
    pub buffer_events: usize,
    #[serde(default)]
    pub spool: Option<Spool>,
    #[serde(default = "default_ship_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Share of requests whose events are shipped (1.0: all). The agent's
    /// own request, error and latency metrics stay exact.
    #[serde(default = "one")]
    pub sample_rate: f64,
    /// How the collector's certificate is verified, and the agent's own
    /// certificate for mTLS (an `https://` or `tls://` URL).
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// For `nats://` URLs: subject prefix and credentials beyond a token.
    #[serde(default)]
    pub nats: Option<NatsOptions>,
}

/// The agent's side of TLS to the collector. Files are read again when
/// they change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM: the CAs the collector's certificate must chain to (instead of
    /// the public web roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM: the agent's certificate chain and key, for a collector that
    /// requires client certificates.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spool {
    pub path: PathBuf,
    /// Bytes on disk at most; the oldest spool files are dropped (counted) beyond.
    #[serde(default = "default_spool_bytes")]
    pub max_bytes: u64,
}

/// The `collector.nats:` block: what `nats://` URLs need beyond the token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsOptions {
    /// The collectors' `cluster.subject_prefix` (default `driftwatch`).
    pub subject_prefix: Option<String>,
    /// A NATS user, with its password from `password_env` or `password_file`.
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A NATS `.creds` file (JWT and NKey seed).
    pub creds_file: Option<PathBuf>,
}

pub(super) fn default_batch_events() -> usize {
    500
}
pub(super) fn default_batch_wait() -> Duration {
    Duration::from_secs(1)
}
pub(super) fn default_buffer_events() -> usize {
    100_000
}
pub(super) fn default_ship_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_spool_bytes() -> u64 {
    256 * 1024 * 1024
}

impl Collector {
    /// The URLs of `url` when it names NATS servers.
    pub fn nats_urls(&self) -> Option<Vec<String>> {
        let urls: Vec<String> = self.url.split(',').map(|u| u.trim().to_string()).collect();
        urls.iter()
            .all(|u| driftwatch_telemetry::nats::is_url(u))
            .then_some(urls)
    }

    /// The subject prefix events are published under.
    pub fn subject_prefix(&self) -> &str {
        self.nats
            .as_ref()
            .and_then(|n| n.subject_prefix.as_deref())
            .unwrap_or("driftwatch")
    }

    /// Every problem of the block.
    pub(super) fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let url = self.url.trim();
        let http = url.starts_with("http://") || url.starts_with("https://");
        if !http && self.nats_urls().is_none() {
            problems.push(format!(
                "collector.url: {url:?} is neither an http:// or https:// URL nor nats:// URLs (nats://host:4222, comma-separated)"
            ));
        }
        if http && self.nats.is_some() {
            problems.push("collector.nats: only for nats:// URLs".into());
        }
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !self.subject_prefix().split('.').all(token_ok) {
            problems.push(format!(
                "collector.nats.subject_prefix: {:?} must be dot-separated tokens of letters, digits, _ and -",
                self.subject_prefix()
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_rate) {
            problems.push(format!(
                "collector.sample_rate: {} is not between 0 and 1",
                self.sample_rate
            ));
        }
        if self.batch_events == 0 || self.buffer_events == 0 {
            problems.push("collector: batch_events and buffer_events must be above 0".into());
        }
        if self.token_env.is_some() && self.token_file.is_some() {
            problems.push("collector: give token_env or token_file, not both".into());
        }
        if let Some(t) = &self.tls {
            if t.client_cert_file.is_some() != t.client_key_file.is_some() {
                problems.push(
                    "collector.tls: give client_cert_file and client_key_file together".into(),
                );
            }
        }
        problems
    }

    /// The token, read from its environment variable or file.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(var) = &self.token_env {
            return Ok(std::env::var(var).ok().filter(|t| !t.is_empty()));
        }
        if let Some(path) = &self.token_file {
            return std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|source| ConfigError::Token {
                    path: path.clone(),
                    source,
                });
        }
        Ok(None)
    }
}
