//! Shipping events to the collector: batched by count and time, gzipped,
//! posted with the bearer token, retried with backoff and jitter while the
//! collector is away. Events wait in a bounded memory buffer; beyond it the
//! oldest go to a bounded disk spool (gzipped batches, ready to post, kept
//! across restarts) or, without a spool, are dropped and counted. The
//! spool drops its oldest files (counted) when full. On shutdown what could
//! not be sent within the deadline goes to the spool or is counted.

pub mod nats;
mod spool;

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftwatch_protocol::{Event, EventBatch};
use driftwatch_telemetry::log::Repeats;
use driftwatch_telemetry::throttled;

use crate::config::Collector;
use crate::metrics::Metrics;
use spool::Spool;

/// First retry delay; doubled per failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Shipper {
    buffer: Mutex<VecDeque<Event>>,
    wake: tokio::sync::Notify,
    cfg: Collector,
    token: Option<String>,
    metrics: Arc<Metrics>,
    client: Mutex<Client>,
    spool: Option<Spool>,
    /// The cluster's log, when `collector.url` names NATS servers.
    nats: Option<nats::Target>,
    /// Failures logged at most once a minute per cause (counted each time).
    repeats: Repeats,
}

/// The HTTP client to the collector and the stamps of the TLS files it
/// was built from: built again when one changes, so a renewed CA or
/// client certificate is used without a restart.
struct Client {
    http: reqwest::Client,
    stamps: Vec<driftwatch_telemetry::tls::Stamp>,
}

/// How a post went.
enum Posted {
    Done,
    /// Try again later (the collector is away or overloaded).
    Retry(String),
    /// The collector refused the batch for good (counted as dropped).
    Refused(String),
}

/// Why the shipper could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("spool {}: {source}", path.display())]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("collector.tls: {0}")]
    Tls(String),
    #[error("{0}")]
    Nats(String),
}

/// The TLS files of the connection to the collector.
fn tls_paths(cfg: &Collector) -> Vec<&std::path::Path> {
    cfg.tls
        .iter()
        .flat_map(|t| {
            [&t.ca_file, &t.client_cert_file, &t.client_key_file]
                .into_iter()
                .flatten()
                .map(PathBuf::as_path)
        })
        .collect()
}

/// A client verifying the collector against `tls.ca_file` (only those
/// CAs) and presenting `tls.client_cert_file` when given.
fn build_client(cfg: &Collector) -> Result<reqwest::Client, ShipError> {
    let mut b = reqwest::Client::builder().timeout(cfg.timeout);
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ShipError::Tls(format!("{}: {e}", p.display())))
    };
    if let Some(tls) = &cfg.tls {
        if let Some(ca) = &tls.ca_file {
            let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?)
                .map_err(|e| ShipError::Tls(format!("{}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(ShipError::Tls(format!(
                    "{}: no PEM certificate",
                    ca.display()
                )));
            }
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| ShipError::Tls(format!("{}: {e}", cert.display())))?;
            b = b.identity(id);
        }
    }
    b.build().map_err(ShipError::Client)
}

/// A batch as it is posted (and spooled): gzipped `{"events": [...]}`.
fn batch_body(events: &[Event]) -> Vec<u8> {
    let json = serde_json::to_vec(&EventBatch {
        events: events.to_vec(),
    })
    .unwrap_or_default();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = enc.write_all(&json);
    enc.finish().unwrap_or_default()
}

impl Shipper {
    pub fn new(
        cfg: Collector,
        token: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Result<Shipper, ShipError> {
        let spool = match &cfg.spool {
            Some(s) => Some(Spool::open(s, metrics.clone())?),
            None => None,
        };
        let client = Client {
            http: build_client(&cfg)?,
            stamps: driftwatch_telemetry::tls::stamps(&tls_paths(&cfg)),
        };
        let nats = nats::Target::new(&cfg).map_err(ShipError::Nats)?;
        Ok(Shipper {
            nats,
            buffer: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            cfg,
            token,
            metrics,
            client: Mutex::new(client),
            spool,
            repeats: Repeats::default(),
        })
    }

    /// The client for the next post: built again when a TLS file changed
    /// (a file that does not load keeps the previous client, said once
    /// per change and counted as a `tls_config` ship failure).
    fn client(&self) -> reqwest::Client {
        let mut c = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let paths = tls_paths(&self.cfg);
        if !paths.is_empty() {
            let now = driftwatch_telemetry::tls::stamps(&paths);
            if now != c.stamps {
                c.stamps = now;
                match build_client(&self.cfg) {
                    Ok(http) => {
                        tracing::info!("collector.tls: certificates reloaded");
                        c.http = http;
                    }
                    Err(e) => {
                        tracing::error!("{e}; the previous certificates stay in use");
                        self.metrics
                            .ship_failures
                            .with_label_values(&["tls_config"])
                            .inc();
                    }
                }
            }
        }
        c.http.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds events; beyond the buffer's bound the oldest are spooled or dropped.
    pub fn push(&self, events: Vec<Event>) {
        let overflow: Vec<Event> = {
            let mut b = self.lock();
            b.extend(events);
            let over = b.len().saturating_sub(self.cfg.buffer_events);
            let out = b.drain(..over).collect();
            self.metrics.buffered.set(b.len() as i64);
            out
        };
        if !overflow.is_empty() {
            self.spill(overflow, "buffer_full");
        }
        self.wake.notify_one();
    }

    /// Events that no longer fit in memory: to the spool, else dropped.
    fn spill(&self, events: Vec<Event>, reason: &str) {
        match &self.spool {
            Some(spool) => spool.write(&events, self.cfg.batch_events, reason),
            None => self
                .metrics
                .events_dropped
                .with_label_values(&[reason])
                .inc_by(events.len() as u64),
        }
    }

    /// Sends one gzipped batch of `n` events: to the collector, or to the
    /// cluster's log.
    async fn post(&self, body: Vec<u8>, n: usize) -> Posted {
        match &self.nats {
            Some(target) => self.publish(target, &body).await,
            None => self.post_http(body, n).await,
        }
    }

    /// Publishes a batch's events to the cluster's log.
    async fn publish(&self, target: &nats::Target, body: &[u8]) -> Posted {
        let mut json = Vec::new();
        let batch = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut json)
            .ok()
            .and_then(|_| serde_json::from_slice::<EventBatch>(&json).ok());
        let Some(batch) = batch else {
            return Posted::Refused("a spooled batch that does not read back".into());
        };
        match target.send(batch.events).await {
            Ok(sent) => {
                // An event found stored was stored by an earlier attempt
                // whose acknowledgement did not come back: shipped too.
                self.metrics
                    .events_shipped
                    .inc_by(sent.stored + sent.duplicates);
                Posted::Done
            }
            Err(failed) => self.retry(
                failed.timeout,
                format!("{}: {}", target.describe(), failed.why),
            ),
        }
    }

    /// A send that failed for now, counted by cause (`timeout` or
    /// `unreachable`).
    fn retry(&self, timeout: bool, why: String) -> Posted {
        let reason = if timeout { "timeout" } else { "unreachable" };
        self.metrics
            .ship_failures
            .with_label_values(&[reason])
            .inc();
        Posted::Retry(why)
    }

    /// Posts one gzipped batch of `n` events to the collector.
    async fn post_http(&self, body: Vec<u8>, n: usize) -> Posted {
        let url = format!("{}/v1/events", self.cfg.url.trim_end_matches('/'));
        let mut req = self
            .client()
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let timeout = e.is_timeout();
                let why = driftwatch_telemetry::log::with_causes(&e.without_url());
                return self.retry(timeout, format!("{url}: {why}"));
            }
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match status.as_u16() {
            200..=299 => {
                let reply: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let accepted = reply["accepted"].as_u64().unwrap_or(n as u64);
                self.metrics.events_shipped.inc_by(accepted);
                let errors = reply["errors"].as_array().cloned().unwrap_or_default();
                // A resent event the collector already has is not lost.
                let lost: Vec<&serde_json::Value> = errors
                    .iter()
                    .filter(|e| !e["error"].as_str().unwrap_or("").contains("duplicate"))
                    .collect();
                if let Some(first) = lost.first() {
                    throttled!(
                        self.repeats,
                        "rejected",
                        tracing::Level::WARN,
                        { rejected = lost.len(), },
                        "the collector rejected {} event(s), e.g. {}",
                        lost.len(),
                        first["error"]
                    );
                    self.metrics
                        .events_dropped
                        .with_label_values(&["rejected_by_collector"])
                        .inc_by(lost.len() as u64);
                }
                Posted::Done
            }
            408 | 429 | 500..=599 => {
                self.metrics
                    .ship_failures
                    .with_label_values(&["server_error"])
                    .inc();
                Posted::Retry(format!("{url}: HTTP {status}"))
            }
            _ => Posted::Refused(format!(
                "{url}: HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )),
        }
    }

    /// The next batch: a spool file first (oldest), else up to
    /// `batch_events` from memory. Returns the body, its event count, and
    /// the spool file or the events taken (to put back on failure).
    fn next_batch(&self) -> Option<(Vec<u8>, usize, Taken)> {
        if let Some((body, n, path)) = self.spool.as_ref().and_then(Spool::oldest) {
            return Some((body, n, Taken::File(path)));
        }
        let events: Vec<Event> = {
            let mut b = self.lock();
            let n = b.len().min(self.cfg.batch_events);
            let out = b.drain(..n).collect();
            self.metrics.buffered.set(b.len() as i64);
            out
        };
        if events.is_empty() {
            return None;
        }
        let body = batch_body(&events);
        Some((body, events.len(), Taken::Events(events)))
    }

    /// Sends until `stop` is set and everything is sent, or the deadline
    /// after `stop` passes; what is left is spooled or counted.
    pub async fn run(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        deadline: Duration,
    ) {
        let mut backoff = FIRST_BACKOFF;
        // Attempts failed since the last batch went through, and their causes.
        let (mut failed, mut failing) = (0u64, HashSet::<String>::new());
        let mut rng = chrono::Utc::now().timestamp_subsec_nanos() as u64 | 1;
        let mut stopping_since: Option<Instant> = None;
        loop {
            if stopping_since.is_none() && *stop.borrow() {
                stopping_since = Some(Instant::now());
            }
            if let Some(t) = stopping_since {
                if t.elapsed() >= deadline {
                    break;
                }
            } else {
                // Wait for a full batch, or batch_wait for a partial one.
                let full = self.lock().len() >= self.cfg.batch_events || self.spooled();
                if !full {
                    tokio::select! {
                        _ = tokio::time::sleep(self.cfg.batch_wait) => {}
                        _ = stop.changed() => {}
                        _ = async { loop {
                            self.wake.notified().await;
                            if self.lock().len() >= self.cfg.batch_events { break; }
                        } } => {}
                    }
                }
            }
            let Some((body, n, taken)) = self.next_batch() else {
                if stopping_since.is_some() {
                    return;
                }
                continue;
            };
            // While stopping, nothing may outlast the deadline.
            let left = stopping_since.map(|t| deadline.saturating_sub(t.elapsed()));
            let posted = match left {
                Some(left) => tokio::time::timeout(left, self.post(body, n))
                    .await
                    .unwrap_or_else(|_| Posted::Retry("the shutdown deadline passed".into())),
                None => self.post(body, n).await,
            };
            match posted {
                Posted::Done => {
                    backoff = FIRST_BACKOFF;
                    self.done(taken);
                    if failed > 0 {
                        for cause in failing.drain() {
                            self.repeats.clear(&cause);
                        }
                        tracing::info!(failed, "shipping resumed after {failed} failed attempt(s)");
                        failed = 0;
                    }
                }
                Posted::Refused(why) => {
                    throttled!(
                        self.repeats,
                        "refused",
                        tracing::Level::ERROR,
                        { dropped = n, },
                        "the collector refused a batch of {n} events for good: {why}"
                    );
                    self.metrics
                        .events_dropped
                        .with_label_values(&["refused_by_collector"])
                        .inc_by(n as u64);
                    self.done(taken);
                }
                Posted::Retry(why) => {
                    if let Taken::Events(events) = taken {
                        let mut b = self.lock();
                        for e in events.into_iter().rev() {
                            b.push_front(e);
                        }
                        self.metrics.buffered.set(b.len() as i64);
                    }
                    // xorshift jitter: 0.5 to 1.5 times the delay.
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let factor = 0.5 + (rng % 1000) as f64 / 1000.0;
                    let wait = backoff.mul_f64(factor).min(left.unwrap_or(MAX_BACKOFF));
                    failed += 1;
                    throttled!(
                        self.repeats,
                        &why,
                        tracing::Level::WARN,
                        { events = n, },
                        "shipping {n} events failed ({why}); retrying in {} ms",
                        wait.as_millis()
                    );
                    failing.insert(why);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed(), if stopping_since.is_none() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let left: Vec<Event> = self.lock().drain(..).collect();
        self.metrics.buffered.set(0);
        if !left.is_empty() {
            tracing::warn!(
                "{} events not shipped by the shutdown deadline; {}",
                left.len(),
                if self.cfg.spool.is_some() {
                    "spooled"
                } else {
                    "dropped"
                }
            );
            self.spill(left, "shutdown");
        }
    }

    fn spooled(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// A batch that left for good: its spool file goes.
    fn done(&self, taken: Taken) {
        if let (Taken::File(p), Some(spool)) = (taken, &self.spool) {
            spool.remove(&p);
        }
    }
}

enum Taken {
    File(PathBuf),
    Events(Vec<Event>),
}
