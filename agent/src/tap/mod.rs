//! Traffic that arrives as copies instead of through the proxy: mirrored
//! requests (Istio/Envoy), answered at once and joined with the champion's
//! response when it is posted to `/_driftwatch/responses/{model}`
//! (`mirror`), and KServe's inference logger, whose request and response
//! CloudEvents are joined by `ce-id` (`sinks`). A half waits `join_wait`
//! for the other; a request alone is then observed without the answer, a
//! response alone is dropped (counted).

mod mirror;
mod sinks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;

pub use mirror::{mirror, mirror_grpc};
pub use sinks::sinks;

use crate::adapters::Form;
use crate::config::Model;
use crate::metrics::Metrics;
use crate::observe::{now_rfc3339, Answered, Observation, Observer};

/// Mirror and KServe logger halves waiting for their other half, at most.
const MAX_PENDING_JOINS: usize = 100_000;

/// A body seen as a copy, and how it is framed.
pub(crate) type Seen = (Bytes, Form);

/// One half or both of an inference seen as copies.
#[derive(Default)]
struct Half {
    request: Option<Seen>,
    response: Option<Seen>,
    timestamp: String,
    since: Option<Instant>,
}

/// The copies waiting for their other half, and where joined ones go.
pub struct Tap {
    /// The configured models, in the configuration's order.
    models: Vec<Model>,
    joins: Mutex<HashMap<(usize, String), Half>>,
    observer: Observer,
    metrics: Arc<Metrics>,
}

impl Tap {
    /// A tap whose expired halves are swept on `background`.
    pub fn start(
        models: Vec<Model>,
        observer: Observer,
        metrics: Arc<Metrics>,
        background: &tokio::runtime::Handle,
    ) -> Arc<Tap> {
        let tap = Arc::new(Tap {
            models,
            joins: Mutex::new(HashMap::new()),
            observer,
            metrics,
        });
        background.spawn(sweep(tap.clone()));
        tap
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(usize, String), Half>> {
        self.joins.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dropped(&self, reason: &str) {
        self.metrics
            .events_dropped
            .with_label_values(&[reason])
            .inc();
    }

    /// Counts a request by its model (`None`: no model) and status.
    fn count(&self, model: Option<usize>, status: StatusCode) {
        let name = model.map_or("", |mi| self.models[mi].name.as_str());
        self.metrics.count_request(name, status.as_str());
    }

    /// Counts a copy of a call that is not an inference.
    fn passthrough(&self, mi: usize) {
        self.metrics
            .passthrough
            .with_label_values(&[&self.models[mi].name])
            .inc();
    }

    fn unparsed(&self, mi: usize, part: &str) {
        self.metrics
            .unparsed
            .with_label_values(&[&self.models[mi].name, part, "too_large"])
            .inc();
    }

    /// Adds one half of an inference; both halves make an observation at once.
    fn join(&self, mi: usize, id: &str, request: Option<Seen>, response: Option<Seen>) {
        let mut joins = self.lock();
        let key = (mi, id.to_string());
        if !joins.contains_key(&key) && joins.len() >= MAX_PENDING_JOINS {
            drop(joins);
            self.dropped("unjoined");
            return;
        }
        let half = joins.entry(key.clone()).or_insert_with(|| Half {
            timestamp: now_rfc3339(),
            since: Some(Instant::now()),
            ..Half::default()
        });
        if request.is_some() {
            half.request = request;
        }
        if response.is_some() {
            half.response = response;
        }
        if half.request.is_some() && half.response.is_some() {
            if let Some(h) = joins.remove(&key) {
                drop(joins);
                self.observe(mi, key.1, h);
            }
        }
    }

    /// Observes an inference seen as copies, with the champion's answer
    /// where it came (a 200: copies are of answers); a response alone is
    /// dropped (counted).
    fn observe(&self, mi: usize, id: String, h: Half) {
        let Some((request, form)) = h.request else {
            self.dropped("unjoined");
            return;
        };
        self.observer.observe(Observation {
            model: mi,
            request_id: id,
            timestamp: h.timestamp,
            request,
            form,
            response: h.response.map(|(body, form)| {
                Ok(Answered {
                    status: 200,
                    body,
                    form,
                })
            }),
            champion_ms: None,
            arm: None,
        });
    }
}

/// Halves older than their model's `join_wait`: a request alone is
/// observed without the champion's answer; a response alone is dropped.
async fn sweep(tap: Arc<Tap>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let expired: Vec<((usize, String), Half)> = {
            let mut joins = tap.lock();
            let old: Vec<(usize, String)> = joins
                .iter()
                .filter(|((mi, _), h)| {
                    h.since
                        .is_some_and(|t| t.elapsed() >= tap.models[*mi].join_wait)
                })
                .map(|(k, _)| k.clone())
                .collect();
            old.into_iter()
                .filter_map(|k| joins.remove(&k).map(|h| (k, h)))
                .collect()
        };
        for ((mi, id), h) in expired {
            tap.observe(mi, id, h);
        }
    }
}
