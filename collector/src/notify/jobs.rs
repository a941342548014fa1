//! Delivery in cluster mode: the notifications of models' alerts wait in
//! the cluster's work queue instead of one collector's outbox, so that a
//! collector that dies leaves nothing undelivered. Every collector reads
//! the queue; each job is handed to one of them, attempted with the
//! receivers and actions of the rules running there, and settled as the
//! outbox would record it: delivered, handed out again after the same
//! backoff, or given up after `MAX_ATTEMPTS` (counted, logged). A job whose
//! reader dies is handed to another after the queue's hold time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::sync::Semaphore;

use super::deliver::{attempt, Deliverer};
use super::http::ATTEMPT_TIMEOUT;
use super::DeliveryError;
use crate::bus::{BusHandle, Job, Settle};
use crate::clock::now_ms;
use crate::store::Queued;

/// Jobs attempted at once, at most.
const MAX_IN_FLIGHT: usize = 128;

/// A queued notification: its id, receiver (or action) and payload.
#[derive(serde::Deserialize)]
struct Notification {
    id: String,
    receiver: String,
    payload: String,
}

/// Delivers the queue's jobs until the task is aborted.
pub async fn run(d: Arc<Deliverer>, bus: BusHandle) {
    let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot build the HTTP client for notifications: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Some(b) = bus() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut jobs = match b.jobs().await {
            Ok(jobs) => jobs,
            Err(e) => {
                driftwatch_telemetry::throttled!(
                    d.repeats,
                    "queue",
                    tracing::Level::WARN,
                    {},
                    "cluster: cannot read the notification queue yet: {e}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(job) = jobs.next().await {
            let job = match job {
                Ok(job) => job,
                Err(e) => {
                    tracing::warn!("cluster: reading the notification queue stopped: {e}");
                    break;
                }
            };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (d, client) = (d.clone(), client.clone());
            tokio::spawn(async move {
                deliver(&d, &client, job).await;
                drop(permit);
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One attempt of one job, settled as its outcome says.
async fn deliver(d: &Deliverer, client: &reqwest::Client, job: Job) {
    let Ok(n) = serde_json::from_slice::<Notification>(&job.payload) else {
        tracing::error!("cluster: a notification in the queue could not be read; dropped");
        d.metrics
            .notifications
            .with_label_values(&["", "dead"])
            .inc();
        let _ = job.settle(Settle::Drop).await;
        return;
    };
    // The outbox's row number, for logs: stable across attempts.
    let id = i64::from_str_radix(n.id.get(..12).unwrap_or("0"), 16).unwrap_or(0);
    let q = Queued {
        id,
        receiver: n.receiver,
        payload: n.payload,
        attempts: job.attempt.saturating_sub(1) as u32,
        state: "pending".into(),
        created_ms: now_ms(),
        last_error: None,
    };
    let started = SystemTime::now();
    let routing = d.routing.borrow().clone();
    let (message, external, client) = (q.clone(), d.external_url.clone(), client.clone());
    let result =
        tokio::spawn(
            async move { attempt(&client, &routing, &message, external.as_deref()).await },
        )
        .await
        .unwrap_or_else(|_| Err(DeliveryError::retry("the delivery task failed")));
    let ids = d.span(&q, started, &result);
    let jitter = (id.unsigned_abs() ^ job.attempt) % 1000;
    let judged = d.judge(&q, result, jitter as f64 / 1000.0, ids);
    let how = match (judged.error, judged.retry_at_ms) {
        (None, _) => Settle::Done,
        (Some(_), Some(at)) => Settle::Retry(Duration::from_millis((at - now_ms()).max(0) as u64)),
        (Some(_), None) => Settle::Drop,
    };
    if let Err(e) = job.settle(how).await {
        // Not settled: the queue hands it out again after its hold time.
        tracing::warn!("cluster: a notification's outcome could not be told to the queue: {e}");
    }
}
