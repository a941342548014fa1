//! The disk spool: batches that do not fit in memory while the collector
//! is away, written as gzipped request bodies ready to post (one file per
//! batch, named with its event count), kept across restarts, bounded in
//! bytes: the oldest files go first when it is full, their events counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use driftwatch_protocol::Event;
use driftwatch_telemetry::log::Repeats;
use driftwatch_telemetry::throttled;

use super::{batch_body, ShipError};
use crate::config;
use crate::metrics::Metrics;

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    seq: AtomicU64,
    metrics: Arc<Metrics>,
    repeats: Repeats,
}

/// Spool files, oldest first, with the number of events each holds and
/// its size.
fn files(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
    let mut files: Vec<(PathBuf, u64, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path.file_name()?.to_str()?.to_string();
            // spool-{millis}-{seq}-{events}.json.gz
            let events = name
                .strip_suffix(".json.gz")?
                .rsplit('-')
                .next()?
                .parse()
                .ok()?;
            let bytes = e.metadata().ok()?.len();
            Some((path, events, bytes))
        })
        .collect();
    files.sort();
    files
}

impl Spool {
    /// The spool in its directory (created), its size published.
    pub fn open(cfg: &config::Spool, metrics: Arc<Metrics>) -> Result<Spool, ShipError> {
        std::fs::create_dir_all(&cfg.path).map_err(|source| ShipError::Spool {
            path: cfg.path.clone(),
            source,
        })?;
        let spool = Spool {
            dir: cfg.path.clone(),
            max_bytes: cfg.max_bytes,
            seq: AtomicU64::new(0),
            metrics,
            repeats: Repeats::default(),
        };
        spool.publish();
        Ok(spool)
    }

    fn drop_events(&self, reason: &str, n: u64) {
        self.metrics
            .events_dropped
            .with_label_values(&[reason])
            .inc_by(n);
    }

    /// Writes `events` in batches of `batch` (making room first); a batch
    /// that cannot be written is counted as dropped for `reason`.
    pub fn write(&self, events: &[Event], batch: usize, reason: &str) {
        for chunk in events.chunks(batch) {
            let body = batch_body(chunk);
            // Room first: the oldest files go (their events counted).
            let mut files = files(&self.dir);
            let mut used: u64 = files.iter().map(|f| f.2).sum();
            while used + body.len() as u64 > self.max_bytes && !files.is_empty() {
                let (path, n, bytes) = files.remove(0);
                if std::fs::remove_file(&path).is_ok() {
                    used -= bytes;
                    self.drop_events("spool_full", n);
                }
            }
            if used + body.len() as u64 > self.max_bytes {
                self.drop_events("spool_full", chunk.len() as u64);
                continue;
            }
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let name = format!(
                "spool-{:015}-{seq:06}-{}.json.gz",
                chrono::Utc::now().timestamp_millis(),
                chunk.len()
            );
            let tmp = self.dir.join(format!(".{name}.tmp"));
            let written = std::fs::write(&tmp, &body)
                .and_then(|_| std::fs::rename(&tmp, self.dir.join(&name)));
            if let Err(e) = written {
                throttled!(
                    self.repeats,
                    "spool write",
                    tracing::Level::ERROR,
                    { dropped = chunk.len(), },
                    "cannot write the spool file {name}: {e}; {} events dropped",
                    chunk.len()
                );
                self.drop_events(reason, chunk.len() as u64);
            }
        }
        self.publish();
    }

    /// The oldest file's body and event count; an unreadable file is
    /// dropped (counted) and the next one tried.
    pub fn oldest(&self) -> Option<(Vec<u8>, usize, PathBuf)> {
        for (path, n, _) in files(&self.dir) {
            match std::fs::read(&path) {
                Ok(body) => return Some((body, n as usize, path)),
                Err(e) => {
                    throttled!(
                        self.repeats,
                        "spool read",
                        tracing::Level::ERROR,
                        { dropped = n, },
                        "cannot read the spool file {}: {e}; it is dropped",
                        path.display()
                    );
                    let _ = std::fs::remove_file(&path);
                    self.drop_events("spool_full", n);
                }
            }
        }
        None
    }

    /// Removes a file that was sent (or refused for good).
    pub fn remove(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
        self.publish();
    }

    pub fn is_empty(&self) -> bool {
        files(&self.dir).is_empty()
    }

    /// `driftwatch_agent_spool_bytes`.
    fn publish(&self) {
        let bytes: u64 = files(&self.dir).iter().map(|f| f.2).sum();
        self.metrics.spool_bytes.set(bytes as i64);
    }
}
