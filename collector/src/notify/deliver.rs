//! Delivery of the outbox: every due message (a notification, or an action
//! call) is attempted on its own task with the receivers and actions of the
//! rules running now, then recorded as delivered, retried later with
//! backoff and jitter, or dead-lettered, and counted.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use driftwatch_telemetry::log::Repeats;
use driftwatch_telemetry::{throttled, SpanIds, Telemetry};
use tokio::sync::watch;

use super::http::ATTEMPT_TIMEOUT;
use super::{action, retry_at, Context, DeliveryError, Message, Routing, MAX_ATTEMPTS};
use crate::clock::now_ms;
use crate::export::metrics::Metrics;
use crate::stats::rng::Rng;
use crate::store::{Attempt, Queued, Store};

/// How often the outbox is polled for due messages.
const POLL: Duration = Duration::from_millis(250);

/// Messages being attempted at once, at most.
const MAX_IN_FLIGHT: usize = 128;

/// What delivery needs: the outbox, the counters, the receivers and
/// actions of the rules running now (replaced at each reload), and the
/// collector's address for links.
pub struct Deliverer {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub telemetry: Arc<Telemetry>,
    pub external_url: Option<String>,
    pub routing: watch::Receiver<Arc<Routing>>,
    /// Failed attempts logged at most once a minute per receiver.
    pub repeats: Repeats,
}

/// Delivers due messages until the task is aborted. Each message is
/// attempted on its own task and recorded when its attempt ends, so a
/// receiver that hangs (up to `ATTEMPT_TIMEOUT`) delays no other message.
pub async fn run(d: Arc<Deliverer>) {
    let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot build the HTTP client for notifications: {e}");
            return;
        }
    };
    let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let seed = now_ms() as u64;
    loop {
        tokio::time::sleep(POLL).await;
        let busy = lock(&in_flight).len();
        if busy >= MAX_IN_FLIGHT {
            continue;
        }
        let store = d.store.clone();
        let now = now_ms();
        // Rows in flight are still pending: ask for enough to get past them.
        let limit = busy + MAX_IN_FLIGHT;
        let due = match tokio::task::spawn_blocking(move || store.due(now, limit)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                throttled!(
                    d.repeats,
                    "outbox read",
                    tracing::Level::ERROR,
                    {},
                    "reading the notification outbox failed: {e}"
                );
                continue;
            }
            Err(_) => continue,
        };
        if due.is_empty() {
            continue;
        }
        let routing = d.routing.borrow().clone();
        for q in due {
            {
                let mut set = lock(&in_flight);
                if set.len() >= MAX_IN_FLIGHT || !set.insert(q.id) {
                    continue;
                }
            }
            let (client, routing) = (client.clone(), routing.clone());
            let (d, in_flight) = (d.clone(), in_flight.clone());
            let jitter =
                Rng::new(seed ^ q.id as u64 ^ q.attempts as u64).below(1000) as f64 / 1000.0;
            tokio::spawn(async move {
                let started = SystemTime::now();
                let (message, external) = (q.clone(), d.external_url.clone());
                // A panic inside the attempt is retried like a failure.
                let result = tokio::spawn(async move {
                    attempt(&client, &routing, &message, external.as_deref()).await
                })
                .await
                .unwrap_or_else(|_| Err(DeliveryError::retry("the delivery task failed")));
                let ids = d.span(&q, started, &result);
                d.record(&q, result, jitter, ids).await;
                lock(&in_flight).remove(&q.id);
            });
        }
    }
}

/// One attempt of a queued row: an action call, or a message to a receiver.
pub(crate) async fn attempt(
    client: &reqwest::Client,
    routing: &Routing,
    q: &Queued,
    external_url: Option<&str>,
) -> Result<(), DeliveryError> {
    if let Some(a) = routing.actions.iter().find(|a| a.name == q.receiver) {
        return action::call(client, a, &q.payload).await;
    }
    let message: Message = serde_json::from_str(&q.payload)
        .map_err(|e| DeliveryError::permanent(format!("unreadable queued message: {e}")))?;
    let Some(receiver) = routing.receivers.iter().find(|r| r.name == q.receiver) else {
        return Err(DeliveryError::permanent(format!(
            "receiver {} is no longer configured",
            q.receiver
        )));
    };
    receiver
        .send(
            &message,
            Context {
                client,
                external_url,
            },
        )
        .await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Deliverer {
    /// A span for one delivery attempt (a notification or an action call).
    pub(crate) fn span(
        &self,
        q: &Queued,
        started: SystemTime,
        result: &Result<(), DeliveryError>,
    ) -> Option<SpanIds> {
        use driftwatch_telemetry::{KeyValue, SpanKind};
        self.telemetry.span(
            "deliver notification",
            SpanKind::Client,
            None,
            started,
            SystemTime::now(),
            vec![
                KeyValue::new("driftwatch.receiver", q.receiver.clone()),
                KeyValue::new("driftwatch.attempt", i64::from(q.attempts) + 1),
                KeyValue::new(
                    "driftwatch.outcome",
                    if result.is_ok() {
                        "delivered"
                    } else {
                        "failed"
                    },
                ),
            ],
            result.as_ref().err().map(|e| e.message.clone()),
        )
    }

    /// Counts and logs one attempt's outcome: delivered (no error), to
    /// retry later with backoff, or given up (an error and no retry time).
    pub(crate) fn judge(
        &self,
        q: &Queued,
        result: Result<(), DeliveryError>,
        jitter: f64,
        ids: Option<SpanIds>,
    ) -> Attempt {
        let outcome = match &result {
            Ok(()) => "delivered",
            Err(e) if !e.retry => "dead",
            Err(_) if q.attempts + 1 >= MAX_ATTEMPTS => "dead",
            Err(_) => "failed",
        };
        self.metrics
            .notifications
            .with_label_values(&[q.receiver.as_str(), outcome])
            .inc();
        match result {
            Ok(()) => Attempt {
                id: q.id,
                error: None,
                retry_at_ms: None,
            },
            Err(e) => {
                let retry_at_ms = e
                    .retry
                    .then(|| retry_at(now_ms(), q.attempts + 1, jitter))
                    .flatten();
                let (trace_id, span_id) = (
                    ids.as_ref().map(|i| i.trace_id.as_str()),
                    ids.as_ref().map(|i| i.span_id.as_str()),
                );
                let attempt = q.attempts + 1;
                // A failure to retry is a warning, a dead letter an error;
                // each logged once a minute per receiver with a count.
                let dead = format!("{} (dead letters)", q.receiver);
                let (cause, outcome) = match retry_at_ms {
                    Some(_) => (q.receiver.as_str(), "will retry"),
                    None => (dead.as_str(), "dead-lettered"),
                };
                let repeats = &self.repeats;
                macro_rules! failed {
                    ($level:expr) => {
                        throttled!(
                            repeats,
                            cause,
                            $level,
                            {
                                receiver = q.receiver.as_str(),
                                notification = q.id,
                                attempt,
                                trace_id,
                                span_id,
                            },
                            "notification {} to {} failed (attempt {attempt}), {outcome}: {}",
                            q.id,
                            q.receiver,
                            e.message
                        )
                    };
                }
                match retry_at_ms {
                    Some(_) => failed!(tracing::Level::WARN),
                    None => failed!(tracing::Level::ERROR),
                }
                Attempt {
                    id: q.id,
                    error: Some(e.message),
                    retry_at_ms,
                }
            }
        }
    }

    /// Counts and stores one attempt's outcome: delivered, retried later
    /// with backoff, or dead-lettered.
    async fn record(
        &self,
        q: &Queued,
        result: Result<(), DeliveryError>,
        jitter: f64,
        ids: Option<SpanIds>,
    ) {
        let record = self.judge(q, result, jitter, ids);
        if let Err(e) = self.store.record_attempts(vec![record]).await {
            // The row stays pending and is tried again: at least once.
            throttled!(
                self.repeats,
                "outbox write",
                tracing::Level::ERROR,
                {},
                "recording notification attempts failed: {e}"
            );
        }
        // The outbox counts are a database read: off the reactor, like `due`.
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        let _ = tokio::task::spawn_blocking(move || publish_outbox(&store, &metrics)).await;
    }
}

/// `driftwatch_notifications_queued{state}` from the outbox.
pub fn publish_outbox(store: &Store, metrics: &Metrics) {
    match store.outbox_counts() {
        Ok(counts) => {
            for s in ["pending", "dead"] {
                let n = counts.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
                metrics.outbox.with_label_values(&[s]).set(n as f64);
            }
        }
        Err(e) => tracing::error!("reading the outbox counts failed: {e}"),
    }
}
