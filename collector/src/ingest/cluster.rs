//! Ingest in cluster mode. A collector that receives a batch validates it
//! as always, then appends each accepted event or label to the cluster's
//! log under its model's subject, with an id made of model and request id
//! (a retried batch is stored once), and acknowledges only what the log
//! stored. The model's owner reads its records back (`take`) and commits
//! them exactly as a single collector commits a batch: the same store,
//! the same windows, the same counts.

use std::sync::{Arc, LazyLock, OnceLock};

use bytes::Bytes;
use driftwatch_protocol::{quoted, subjects, IngestReply, ItemError};
use driftwatch_telemetry::log::Repeats;
use driftwatch_telemetry::throttled;

use super::{parse_labels, validate, Ingest, IngestError, ValidLabel};
use crate::bus::{Bus, BusError, Published, Record};
use crate::export::metrics::RejectReason;
use crate::window::Accepted;

pub use driftwatch_protocol::subjects::Kind;

/// Where a collector appends what it accepts: the log, once connected.
pub struct ClusterLog {
    pub bus: OnceLock<Arc<dyn Bus>>,
    /// Subjects are `<prefix>.<kind>.<model token>[.<group>]`.
    pub prefix: String,
}

/// Failures logged once a minute per cause.
static PUBLISH_FAILURES: LazyLock<Repeats> = LazyLock::new(Repeats::default);

impl ClusterLog {
    pub fn new(prefix: String) -> ClusterLog {
        ClusterLog {
            bus: OnceLock::new(),
            prefix,
        }
    }

    /// The subject of a model's records of one kind.
    pub fn subject(&self, kind: Kind, model: &str) -> String {
        subjects::subject(&self.prefix, kind, model)
    }

    /// The kind and model a subject names (`None`: not one of ours).
    pub fn parse_subject(&self, subject: &str) -> Option<(Kind, String)> {
        subjects::parse_subject(&self.prefix, subject)
    }

    /// Appends accepted events; the reply counts what the log stored and
    /// names the duplicates. A batch the log could not store is refused
    /// whole (503): its sender retries, and what was stored is stored once.
    pub async fn publish_events(
        &self,
        ingest: &Ingest,
        reply: &mut IngestReply,
        accepted: Vec<(usize, Accepted)>,
    ) -> Result<(), IngestError> {
        let request_ids: Vec<(usize, String)> = accepted
            .iter()
            .map(|(index, a)| (*index, quoted(&a.event.request_id)))
            .collect();
        let items = accepted
            .into_iter()
            .map(|(_, a)| {
                let model = &ingest.live.models[a.model].name;
                (
                    subjects::record_subject(
                        &self.prefix,
                        Kind::Events,
                        model,
                        &a.event.request_id,
                    ),
                    subjects::event_id(model, &a.event.request_id),
                    Bytes::from(a.json),
                )
            })
            .collect();
        for at in self.publish(ingest, reply, items).await? {
            let (index, id) = &request_ids[at];
            ingest.metrics.reject(RejectReason::DuplicateRequestId, 1);
            reply.errors.push(ItemError {
                index: *index,
                error: format!("duplicate request_id {id}"),
            });
        }
        Ok(())
    }

    /// Appends valid labels; their owner joins them with their predictions
    /// (a label whose prediction it does not hold is counted there as
    /// `unknown_request_id`).
    pub async fn publish_labels(
        &self,
        ingest: &Ingest,
        reply: &mut IngestReply,
        labels: Vec<ValidLabel>,
    ) -> Result<(), IngestError> {
        let indexes: Vec<usize> = labels.iter().map(|(index, _, _)| *index).collect();
        let items = labels
            .into_iter()
            .map(|(_, _, l)| {
                let wire = driftwatch_protocol::Label {
                    model: l.model,
                    request_id: l.request_id,
                    label: l.label,
                    value: l.value,
                    reward: l.reward,
                };
                let json = serde_json::to_vec(&wire).unwrap_or_default();
                (
                    subjects::record_subject(
                        &self.prefix,
                        Kind::Labels,
                        &wire.model,
                        &wire.request_id,
                    ),
                    subjects::label_id(&wire.model, &wire.request_id),
                    Bytes::from(json),
                )
            })
            .collect();
        for at in self.publish(ingest, reply, items).await? {
            ingest.metrics.reject(RejectReason::DuplicateLabel, 1);
            reply.errors.push(ItemError {
                index: indexes[at],
                error: "the request_id already has a label".into(),
            });
        }
        Ok(())
    }

    /// Appends every item (subject, id, payload) at once and waits for all;
    /// counts what was stored as accepted and returns the positions of the
    /// duplicates among `items`.
    async fn publish(
        &self,
        ingest: &Ingest,
        reply: &mut IngestReply,
        items: Vec<(String, String, Bytes)>,
    ) -> Result<Vec<usize>, IngestError> {
        let n = items.len();
        let Some(bus) = self.bus.get() else {
            return Err(unavailable(
                ingest,
                n,
                BusError::Unavailable("not connected to the cluster's NATS servers yet".into()),
            ));
        };
        let outcomes = futures_util::future::join_all(
            items
                .into_iter()
                .map(|(subject, id, payload)| bus.publish(subject, id, payload)),
        )
        .await;
        let mut duplicates = Vec::new();
        for (at, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(Published::Stored) => reply.accepted += 1,
                Ok(Published::Duplicate) => duplicates.push(at),
                Err(e) => return Err(unavailable(ingest, n, e)),
            }
        }
        Ok(duplicates)
    }

    /// Commits a model's records read from the log, in their order: events
    /// and labels as a single collector commits them, anything else to the
    /// dead-letter subject. Returns the records it could not read. The
    /// records are decoded and validated first, on every core.
    pub async fn take(
        &self,
        ingest: &Ingest,
        mi: usize,
        records: Vec<Record>,
    ) -> Result<Vec<Record>, IngestError> {
        let (models, prefix) = (ingest.live.models.clone(), self.prefix.clone());
        let decoded = tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            records
                .into_par_iter()
                .map(|r| {
                    let taken = match subjects::parse_subject(&prefix, &r.subject) {
                        Some((Kind::Events, _)) => {
                            read_event(&models, mi, &r).map(|a| Taken::Event(Box::new(a)))
                        }
                        Some((Kind::Labels, _)) => read_label(&models, mi, &r).map(Taken::Label),
                        _ => None,
                    };
                    taken.ok_or(r)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(super::worker_failed)?;
        let mut dead = Vec::new();
        let mut events = Vec::new();
        let mut labels = Vec::new();
        let mut discard = IngestReply::default();
        for d in decoded {
            match d {
                Ok(Taken::Event(a)) => {
                    if !labels.is_empty() {
                        ingest
                            .commit_labels(&mut discard, std::mem::take(&mut labels))
                            .await?;
                    }
                    events.push((0, *a));
                }
                Ok(Taken::Label(l)) => {
                    if !events.is_empty() {
                        ingest
                            .commit_events(&mut discard, std::mem::take(&mut events), false)
                            .await?;
                    }
                    labels.push(l);
                }
                Err(r) => dead.push(r),
            }
        }
        if !events.is_empty() {
            ingest.commit_events(&mut discard, events, false).await?;
        }
        if !labels.is_empty() {
            ingest.commit_labels(&mut discard, labels).await?;
        }
        Ok(dead)
    }
}

/// A record of the log, read.
enum Taken {
    Event(Box<Accepted>),
    Label(ValidLabel),
}

/// An event record of model `mi`, validated as at start (its age was
/// checked when it was accepted).
fn read_event(models: &[crate::models::Model], mi: usize, r: &Record) -> Option<Accepted> {
    let text = std::str::from_utf8(&r.payload).ok()?;
    validate(text, models, i64::MAX / 2, 0)
        .ok()
        .filter(|a| a.model == mi)
}

/// A label record of model `mi`, validated as `POST /v1/feedback` does.
fn read_label(models: &[crate::models::Model], mi: usize, r: &Record) -> Option<ValidLabel> {
    let mut body = b"{\"labels\": [".to_vec();
    body.extend_from_slice(&r.payload);
    body.extend_from_slice(b"]}");
    let (_, mut valid) = parse_labels(&body, models).ok()?;
    valid.pop().filter(|(_, m, _)| *m == mi)
}

/// A batch the log did not store: counted, logged once a minute.
fn unavailable(ingest: &Ingest, n: usize, e: BusError) -> IngestError {
    ingest
        .metrics
        .reject(RejectReason::ClusterUnavailable, n as u64);
    throttled!(
        PUBLISH_FAILURES,
        "publish",
        tracing::Level::WARN,
        {},
        "cluster: a batch was refused (503): {e}"
    );
    IngestError::Unavailable(e.to_string())
}
