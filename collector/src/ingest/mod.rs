//! Ingest: a batch of events (`POST /v1/events`) or labels
//! (`POST /v1/feedback`) is decoded (`body`), each item validated on its
//! own (`validate`), the good ones committed to the store before anything
//! is acknowledged, then added to the live windows and counted. At start
//! the windows are rebuilt from the store (`restore`). Every refusal is
//! counted by reason.

pub mod body;
pub mod cluster;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use driftwatch_protocol::{quoted, IngestReply, ItemError};
use driftwatch_telemetry::throttled;

pub use body::{decode, split_events, BodyError};
pub use validate::{parse_labels, validate, LabelRefusal, Rejection, ValidLabel};

use crate::clock::now_ms;
use crate::config::experiment::RawExperiment;
use crate::export::metrics::{Metrics, RejectReason};
use crate::models::Model;
use crate::store::{LabelOutcome, NewEvent, NewLabel, Store, StoreError};
use crate::window::{Accepted, Live, ModelWindows, Placement};

/// Why a whole batch was refused (the items of a batch fail one by one in
/// its reply instead).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body as a whole: too large, undecodable, not the envelope.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The store could not commit: nothing of the batch was acknowledged
    /// and the sender should retry it.
    #[error("storing {what} failed: {source}")]
    Storage {
        what: &'static str,
        source: StoreError,
    },
    /// Cluster mode: the log did not store the batch (some items may be
    /// stored; a retry stores each once).
    #[error("the cluster's log did not store the batch: {0}")]
    Unavailable(String),
    /// The worker thread failed (a bug): nothing was acknowledged.
    #[error("the ingest worker failed: {0}")]
    Worker(String),
}

/// What ingest needs: the live windows, the store, the counters and the
/// request limits.
pub struct Ingest {
    pub live: Arc<Live>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Largest body accepted, after decompression.
    pub max_body_bytes: usize,
    /// Events stamped further ahead than this are refused.
    pub max_future_skew: Duration,
    /// Cluster mode: accepted events and labels go to the cluster's log
    /// (their model's owner commits them); absent, they are committed here.
    pub cluster: Option<cluster::ClusterLog>,
}

impl Ingest {
    /// A batch of events: decoded and validated off the reactor, committed,
    /// then added to the windows. Duplicates and items refused are in the
    /// reply with their index.
    pub async fn events(
        self: Arc<Self>,
        encoding: Option<String>,
        body: Vec<u8>,
    ) -> Result<IngestReply, IngestError> {
        let worker = self.clone();
        let (mut reply, accepted) =
            tokio::task::spawn_blocking(move || worker.validate_batch(encoding.as_deref(), &body))
                .await
                .map_err(worker_failed)??;
        match &self.cluster {
            Some(log) => log.publish_events(&self, &mut reply, accepted).await?,
            None => self.commit_events(&mut reply, accepted, true).await?,
        }
        Ok(finish(reply))
    }

    /// Commits accepted events, then adds the new ones to their windows
    /// (`check_age`: unless their windows are gone by now) and counts them;
    /// duplicates and late ones go to the reply. Nothing is acknowledged
    /// before it is committed.
    pub async fn commit_events(
        &self,
        reply: &mut IngestReply,
        accepted: Vec<(usize, Accepted)>,
        check_age: bool,
    ) -> Result<(), IngestError> {
        let new_events = accepted
            .iter()
            .map(|(_, a)| NewEvent {
                model: self.live.models[a.model].name.clone(),
                request_id: a.event.request_id.clone(),
                ts_ms: a.ts_ms,
                json: match self.cluster {
                    // The stream keeps the events; joining labels needs
                    // only the outputs.
                    Some(_) => outputs_only(
                        &a.event,
                        crate::window::segments::features_of(&self.live.models[a.model], &a.values),
                    ),
                    None => a.json.clone(),
                },
            })
            .collect();
        let inserted = match self.store.insert(new_events).await {
            Ok(flags) => flags,
            Err(e) => return Err(self.storage_failed("events", accepted.len(), e)),
        };
        // One lock of a model's windows for its run of events, and the
        // outputs counted per batch.
        let mut held: Option<(
            usize,
            std::sync::MutexGuard<'_, crate::window::ModelWindows>,
        )> = None;
        let mut tally = crate::export::metrics::OutputTally::default();
        let now = now_ms();
        for ((index, a), new) in accepted.into_iter().zip(inserted) {
            if !new {
                self.metrics.reject(RejectReason::DuplicateRequestId, 1);
                reply.errors.push(ItemError {
                    index,
                    error: format!(
                        "duplicate request_id {} for model {}",
                        quoted(&a.event.request_id),
                        a.event.model
                    ),
                });
                continue;
            }
            if held.as_ref().is_none_or(|(m, _)| *m != a.model) {
                drop(held.take());
                held = Some((a.model, self.live.windows(a.model)));
            }
            let Some((_, windows)) = held.as_mut() else {
                continue;
            };
            // The windows may have moved on since validation.
            if check_age {
                if let Err((reason, error)) = placeable(windows, &a, now) {
                    self.metrics.reject(reason, 1);
                    reply.errors.push(ItemError { index, error });
                    continue;
                }
            }
            let model = &self.live.models[a.model];
            windows.add(model, &a);
            tally.add(&model.name, &a.event);
            reply.accepted += 1;
        }
        drop(held);
        self.metrics.count_outputs(tally);
        Ok(())
    }

    /// A batch of labels: joined with their stored predictions and scored
    /// in the windows those predictions belong to.
    pub async fn labels(
        self: Arc<Self>,
        encoding: Option<String>,
        body: Vec<u8>,
    ) -> Result<IngestReply, IngestError> {
        let worker = self.clone();
        let (refusals, labels) = tokio::task::spawn_blocking(move || {
            let decoded = worker.decode(encoding.as_deref(), &body)?;
            parse_labels(&decoded, &worker.live.models).map_err(|e| worker.refuse(e))
        })
        .await
        .map_err(worker_failed)??;
        let mut reply = IngestReply::default();
        for (reason, error) in refusals {
            self.metrics.reject(reason, 1);
            reply.errors.push(error);
        }
        match &self.cluster {
            Some(log) => log.publish_labels(&self, &mut reply, labels).await?,
            None => self.commit_labels(&mut reply, labels).await?,
        }
        Ok(finish(reply))
    }

    /// Commits labels against their stored predictions and scores the
    /// stored ones in their windows; the others go to the reply, counted.
    pub async fn commit_labels(
        &self,
        reply: &mut IngestReply,
        labels: Vec<ValidLabel>,
    ) -> Result<(), IngestError> {
        let stored = match self
            .store
            .insert_labels(labels.iter().map(|(_, _, l)| l.clone()).collect())
            .await
        {
            Ok(outcomes) => outcomes,
            Err(e) => return Err(self.storage_failed("labels", labels.len(), e)),
        };
        for ((index, model, label), outcome) in labels.into_iter().zip(stored) {
            match outcome {
                LabelOutcome::Stored { ts_ms, event } => {
                    let mut windows = self.live.windows(model);
                    apply_label(
                        &mut windows,
                        &self.live.models[model],
                        ts_ms,
                        &event,
                        &label,
                    );
                    reply.accepted += 1;
                }
                LabelOutcome::UnknownRequest => {
                    self.metrics.reject(RejectReason::UnknownRequestId, 1);
                    let error = format!("no prediction with request_id {} for model {} (never sent, or older than its label TTL)", quoted(&label.request_id), label.model);
                    reply.errors.push(ItemError { index, error });
                }
                LabelOutcome::Duplicate => {
                    self.metrics.reject(RejectReason::DuplicateLabel, 1);
                    reply.errors.push(ItemError {
                        index,
                        error: format!(
                            "request_id {} already has a label",
                            quoted(&label.request_id)
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Counts a refused body by its reason.
    fn refuse(&self, e: BodyError) -> IngestError {
        self.metrics.reject(e.reason(), 1);
        IngestError::Body(e)
    }

    /// A batch the database could not commit: counted and logged.
    fn storage_failed(&self, what: &'static str, n: usize, source: StoreError) -> IngestError {
        self.metrics.reject(RejectReason::StorageError, n as u64);
        let e = IngestError::Storage { what, source };
        throttled!(
            crate::store::FAILURES_LOGGED,
            what,
            tracing::Level::ERROR,
            {},
            "{e}"
        );
        e
    }

    /// The body after `Content-Encoding`, bounded.
    fn decode(&self, encoding: Option<&str>, body: &[u8]) -> Result<Vec<u8>, IngestError> {
        decode(encoding, body, self.max_body_bytes).map_err(|e| self.refuse(e))
    }

    /// Decodes and validates a batch: the refusals so far, and the accepted
    /// events with their index in the batch.
    fn validate_batch(
        &self,
        encoding: Option<&str>,
        body: &[u8],
    ) -> Result<(IngestReply, Vec<(usize, Accepted)>), IngestError> {
        let decoded = self.decode(encoding, body)?;
        let raw_events = split_events(&decoded).map_err(|e| self.refuse(e))?;
        let now = now_ms();
        let skew = self.max_future_skew.as_millis() as i64;
        let mut reply = IngestReply::default();
        let mut accepted = Vec::with_capacity(raw_events.len());
        for (index, raw) in raw_events.iter().enumerate() {
            let checked = validate(raw.get(), &self.live.models, now, skew)
                .and_then(|a| placeable(&self.live.windows(a.model), &a, now).map(|()| a));
            match checked {
                Ok(mut a) => {
                    a.json = raw.get().to_string();
                    accepted.push((index, a));
                }
                Err((reason, error)) => {
                    self.metrics.reject(reason, 1);
                    reply.errors.push(ItemError { index, error });
                }
            }
        }
        Ok((reply, accepted))
    }

    /// Rebuilds the windows from the stored events (at start, before
    /// serving); returns how many events were replayed. Counters are not
    /// replayed: they restart from zero as Prometheus expects.
    pub fn restore(&self) -> Result<usize, StoreError> {
        let mut replayed = 0;
        for (mi, model) in self.live.models.iter().enumerate() {
            let longest = model
                .windows
                .iter()
                .map(|w| w.duration.as_millis() as i64)
                .max()
                .unwrap_or(0);
            // The live window and the one before it, for the longest length.
            let since = now_ms() - 2 * longest;
            // Experiments count from their start, as far as the store keeps.
            let first = windows_or_experiments_since(model, since);
            let mut windows = self.live.windows(mi);
            let mut skipped = 0usize;
            for json in self.store.events_since(&model.name, first)? {
                match validate(&json, &self.live.models, i64::MAX / 2, 0) {
                    Ok(a) if a.model == mi && a.ts_ms >= since => {
                        windows.add(model, &a);
                        replayed += 1;
                    }
                    Ok(a) if a.model == mi => {
                        windows.add_to_experiments(model, a.ts_ms, &a.event);
                        replayed += 1;
                    }
                    _ => skipped += 1,
                }
            }
            if skipped > 0 {
                tracing::warn!(model = %model.name, skipped, "model {}: {skipped} stored events no longer match its configuration and were not replayed", model.name);
            }
            for stored in self.store.labels_since(&model.name, first)? {
                let label = NewLabel {
                    model: model.name.clone(),
                    request_id: String::new(),
                    label: stored.label,
                    value: stored.value,
                    reward: stored.reward,
                };
                if stored.ts_ms >= since {
                    apply_label(&mut windows, model, stored.ts_ms, &stored.event, &label);
                } else if let Some((event, wire)) = wire_label(&stored.event, &label) {
                    windows.label_experiments(model, stored.ts_ms, &event, &wire);
                }
            }
        }
        Ok(replayed)
    }
}

/// Whether the event's windows still exist; else why not (too old).
fn placeable(windows: &ModelWindows, a: &Accepted, now_ms: i64) -> Result<(), Rejection> {
    match windows.check(a.ts_ms, now_ms) {
        Ok(()) => Ok(()),
        Err(Placement::TooOld) => Err((
            RejectReason::TooOld,
            format!(
                "timestamp {} is older than the windows kept",
                quoted(&a.event.timestamp)
            ),
        )),
    }
}

/// A worker that panicked (a bug): logged; nothing was acknowledged.
fn worker_failed(e: tokio::task::JoinError) -> IngestError {
    let e = IngestError::Worker(e.to_string());
    tracing::error!("{e}");
    e
}

/// The reply with its errors in batch order and counted.
fn finish(mut reply: IngestReply) -> IngestReply {
    reply.errors.sort_by_key(|e| e.index);
    for e in &mut reply.errors {
        e.error = driftwatch_protocol::clip(std::mem::take(&mut e.error));
    }
    reply.rejected = reply.errors.len();
    reply
}

/// Scores a stored label in the live windows of its prediction.
/// An event as cluster mode stores it: without its features but the
/// segment columns' (a label is scored on the outputs, per segment; the
/// stream holds the whole event), read back as an event.
fn outputs_only(
    e: &driftwatch_protocol::Event,
    features: std::collections::BTreeMap<String, driftwatch_protocol::FeatureValue>,
) -> String {
    #[derive(serde::Serialize)]
    struct Outputs<'a> {
        model: &'a str,
        request_id: &'a str,
        timestamp: &'a str,
        /// The segment columns' values (labels are scored per segment).
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        features: std::collections::BTreeMap<String, driftwatch_protocol::FeatureValue>,
        champion: &'a driftwatch_protocol::Output,
        #[serde(skip_serializing_if = "Option::is_none")]
        shadow: Option<&'a driftwatch_protocol::Output>,
        #[serde(skip_serializing_if = "Option::is_none")]
        arm: Option<&'a str>,
    }
    serde_json::to_string(&Outputs {
        model: &e.model,
        request_id: &e.request_id,
        timestamp: &e.timestamp,
        features,
        champion: &e.champion,
        shadow: e.shadow.as_ref(),
        arm: e.arm.as_deref(),
    })
    .unwrap_or_default()
}

fn apply_label(
    windows: &mut ModelWindows,
    model: &Model,
    ts_ms: i64,
    event_json: &str,
    label: &NewLabel,
) {
    if let Some((event, wire)) = wire_label(event_json, label) {
        windows.add_label(model, ts_ms, &event, &wire);
    }
}

/// A stored prediction and its label as the wire has them (the event
/// was validated before it was stored).
fn wire_label(
    event_json: &str,
    label: &NewLabel,
) -> Option<(driftwatch_protocol::Event, driftwatch_protocol::Label)> {
    let event = serde_json::from_str::<driftwatch_protocol::Event>(event_json).ok()?;
    let wire = driftwatch_protocol::Label {
        model: label.model.clone(),
        request_id: label.request_id.clone(),
        label: label.label.clone(),
        value: label.value,
        reward: label.reward,
    };
    Some((event, wire))
}

/// Where a model's replay starts: its windows' horizon `since`, or the
/// earliest start of its experiments (no start: what the store keeps).
fn windows_or_experiments_since(model: &Model, since: i64) -> i64 {
    model
        .experiments
        .iter()
        .map(RawExperiment::start_ms)
        .fold(since, i64::min)
}
