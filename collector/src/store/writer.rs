//! The store's one writer thread: it groups the batches waiting into one
//! transaction, answers each after the commit, and prunes what is past
//! retention now and then.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, Transaction};

use super::{AlertSave, Attempt, LabelOutcome, NewEvent, NewLabel, WindowResult};
use crate::clock::now_ms;

/// Delivered notifications are kept this long for the API, then pruned.
const DELIVERED_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// How often the writer deletes events past retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Batches the writer folds into one transaction at most.
const MAX_GROUP: usize = 64;

pub(super) enum Work {
    Events(Vec<NewEvent>),
    Labels(Vec<NewLabel>),
    Results(Vec<WindowResult>),
    /// The whole set of active alerts (key, JSON), replacing the stored set,
    /// and the notifications their changes caused, in one transaction.
    Alerts(AlertSave),
    /// Delivery attempts' outcomes.
    Attempts(Vec<Attempt>),
    /// A silence created or changed (id, JSON).
    Silence(String, String),
    /// A model's events and labels dropped (cluster mode: they are read
    /// again from the cluster's log when the model is taken over).
    Forget(String),
}

pub(super) enum Done {
    Events(Vec<bool>),
    Labels(Vec<LabelOutcome>),
    Results,
}

/// What the writer answers: what it did, or why it could not.
pub(super) type Reply = Result<Done, String>;

/// A batch of work and where its answer goes.
pub(super) struct Job {
    pub work: Work,
    pub reply: tokio::sync::oneshot::Sender<Reply>,
}

/// The writer: groups waiting batches into one transaction, answers each
/// batch after the commit, prunes old events now and then.
pub(super) fn writer(
    mut conn: Connection,
    path: &Path,
    receiver: mpsc::Receiver<Job>,
    retention: Vec<(String, Duration)>,
) {
    let mut last_prune = Instant::now() - PRUNE_EVERY;
    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let result = write_group(&mut conn, &jobs);
        match result {
            Ok(per_job) => {
                for (job, done) in jobs.into_iter().zip(per_job) {
                    let _ = job.reply.send(Ok(done));
                }
            }
            Err(e) => {
                let message = format!("{}: {e}", path.display());
                for job in jobs {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            prune(&conn, path, &retention);
        }
    }
}

/// Deletes events and labels past each model's retention, window results
/// past 30 times that, and delivered notifications past a week.
fn prune(conn: &Connection, path: &Path, retention: &[(String, Duration)]) {
    for (model, keep) in retention {
        let cutoff = now_ms() - keep.as_millis() as i64;
        let pruned = conn
            .execute(
                "DELETE FROM events WHERE model = ?1 AND ts_ms < ?2",
                params![model, cutoff],
            )
            .and_then(|_| {
                conn.execute(
                    "DELETE FROM labels WHERE model = ?1 AND ts_ms < ?2",
                    params![model, cutoff],
                )
            })
            .and_then(|_| {
                // Window results are history: kept 30 times as long as events.
                let history_cutoff = now_ms() - 30 * keep.as_millis() as i64;
                conn.execute(
                    "DELETE FROM window_results WHERE model = ?1 AND start_ms < ?2",
                    params![model, history_cutoff],
                )
            })
            .and_then(|_| {
                conn.execute(
                    "DELETE FROM outbox WHERE state = 'delivered' AND created_ms < ?1",
                    params![now_ms() - DELIVERED_KEPT_MS],
                )
            });
        if let Err(e) = pruned {
            tracing::warn!("{}: pruning old events failed: {e}", path.display());
        }
    }
}

/// One transaction for a group of jobs: each job's work, in order.
fn write_group(conn: &mut Connection, jobs: &[Job]) -> Result<Vec<Done>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let received = now_ms();
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        out.push(match &job.work {
            Work::Events(events) => Done::Events(insert_events(&tx, events, received)?),
            Work::Labels(labels) => Done::Labels(insert_labels(&tx, labels, received)?),
            Work::Alerts(save) => {
                save_alerts(&tx, save, received)?;
                Done::Results
            }
            Work::Silence(id, json) => {
                tx.execute(
                    "INSERT OR REPLACE INTO silences (id, silence) VALUES (?1, ?2)",
                    params![id, json],
                )?;
                Done::Results
            }
            Work::Attempts(attempts) => {
                record_attempts(&tx, attempts, received)?;
                Done::Results
            }
            Work::Results(results) => {
                save_results(&tx, results, received)?;
                Done::Results
            }
            Work::Forget(model) => {
                tx.execute("DELETE FROM labels WHERE model = ?1", params![model])?;
                tx.execute("DELETE FROM events WHERE model = ?1", params![model])?;
                Done::Results
            }
        });
    }
    tx.commit()?;
    Ok(out)
}

/// Whether each event was new (a repeated request id is ignored).
fn insert_events(
    tx: &Transaction<'_>,
    events: &[NewEvent],
    received: i64,
) -> rusqlite::Result<Vec<bool>> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO events (model, request_id, ts_ms, received_ms, event) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    events
        .iter()
        .map(|e| Ok(stmt.execute(params![e.model, e.request_id, e.ts_ms, received, e.json])? == 1))
        .collect()
}

/// Each label joined with its stored prediction, and stored once.
fn insert_labels(
    tx: &Transaction<'_>,
    labels: &[NewLabel],
    received: i64,
) -> rusqlite::Result<Vec<LabelOutcome>> {
    let mut find =
        tx.prepare_cached("SELECT ts_ms, event FROM events WHERE model = ?1 AND request_id = ?2")?;
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO labels (model, request_id, ts_ms, label, value, received_ms, reward) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut outcomes = Vec::with_capacity(labels.len());
    for l in labels {
        let found: Option<(i64, String)> = find
            .query_row(params![l.model, l.request_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map(Some)
            .or_else(|e| {
                if e == rusqlite::Error::QueryReturnedNoRows {
                    Ok(None)
                } else {
                    Err(e)
                }
            })?;
        outcomes.push(match found {
            None => LabelOutcome::UnknownRequest,
            Some((ts_ms, event)) => {
                let stored = insert.execute(params![
                    l.model,
                    l.request_id,
                    ts_ms,
                    l.label,
                    l.value,
                    received,
                    l.reward
                ])?;
                if stored == 1 {
                    LabelOutcome::Stored { ts_ms, event }
                } else {
                    LabelOutcome::Duplicate
                }
            }
        });
    }
    Ok(outcomes)
}

/// Replaces the active alerts and the notification state, and queues the
/// notifications their changes caused.
fn save_alerts(tx: &Transaction<'_>, save: &AlertSave, received: i64) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM alerts", [])?;
    let mut stmt = tx.prepare_cached("INSERT INTO alerts (key, alert) VALUES (?1, ?2)")?;
    for (key, json) in &save.alerts {
        stmt.execute(params![key, json])?;
    }
    tx.execute("DELETE FROM notify_state", [])?;
    let mut stmt = tx.prepare_cached("INSERT INTO notify_state (key, value) VALUES (?1, ?2)")?;
    for (key, json) in &save.state {
        stmt.execute(params![key, json])?;
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO outbox (receiver, payload, created_ms, next_attempt_ms, state) VALUES (?1, ?2, ?3, ?3, 'pending')",
    )?;
    for n in &save.notifications {
        stmt.execute(params![n.receiver, n.payload, received])?;
    }
    Ok(())
}

/// Each attempt's outcome: delivered, pending again at its retry time, or dead.
fn record_attempts(
    tx: &Transaction<'_>,
    attempts: &[Attempt],
    received: i64,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE outbox SET attempts = attempts + 1, state = ?2, next_attempt_ms = ?3, last_error = ?4 WHERE id = ?1",
    )?;
    for a in attempts {
        let (state, next) = match a.retry_at_ms {
            _ if a.error.is_none() => ("delivered", received),
            Some(t) => ("pending", t),
            None => ("dead", received),
        };
        stmt.execute(params![a.id, state, next, a.error])?;
    }
    Ok(())
}

/// Each window's latest results, replacing the previous ones.
fn save_results(
    tx: &Transaction<'_>,
    results: &[WindowResult],
    received: i64,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO window_results (model, window, start_ms, updated_ms, result) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for r in results {
        stmt.execute(params![r.model, r.window, r.start_ms, received, r.json])?;
    }
    Ok(())
}
