//! SQLite storage (WAL): every accepted event is committed before it is
//! acknowledged, by one writer thread that groups concurrent batches into one
//! transaction. On start the open windows are rebuilt from the stored events,
//! so a restart (also after `kill -9`) loses nothing acknowledged. Schema
//! changes are numbered migrations tracked in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use crate::clock::now_ms;

/// Schema migrations, applied in order; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: events, keyed by (model, request_id) so a repeated id is refused.
    "CREATE TABLE events (
        model TEXT NOT NULL,
        request_id TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (model, request_id)
    ) WITHOUT ROWID;
    CREATE INDEX events_by_time ON events (model, ts_ms);",
    // 2: ground-truth labels, one per prediction; ts_ms is the prediction's.
    "CREATE TABLE labels (
        model TEXT NOT NULL,
        request_id TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        label TEXT,
        value REAL,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (model, request_id)
    ) WITHOUT ROWID;
    CREATE INDEX labels_by_time ON labels (model, ts_ms);",
    // 3: each window's latest results (JSON), for the API and history.
    "CREATE TABLE window_results (
        model TEXT NOT NULL,
        window TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (model, window, start_ms)
    ) WITHOUT ROWID;",
    // 4: active alerts (pending and firing, timers included), by identity.
    "CREATE TABLE alerts (
        key TEXT PRIMARY KEY,
        alert TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 5: the notification outbox: written with the alert states that caused
    // it, delivered at least once, retried with backoff, then dead-lettered.
    "CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        receiver TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);",
    // 6: silences (JSON), kept after they expire for the record.
    "CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        silence TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 7: notification state beside the alerts (aggregation groups, action
    // cooldowns), saved in the same transaction.
    "CREATE TABLE notify_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;",
];

/// Delivered notifications are kept this long for the API, then pruned.
const DELIVERED_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// How often the writer deletes events past retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Batches the writer folds into one transaction at most.
const MAX_GROUP: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The writer thread could not commit (its message names the cause).
    #[error("{path}: {message}")]
    Writer { path: PathBuf, message: String },
    /// The writer thread could not start (the OS refused a thread).
    #[error("{path}: cannot start the storage writer: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the storage writer has stopped")]
    Stopped,
    /// A database written by a newer driftwatch: refused rather than misread.
    #[error("{path}: the database has schema version {found}, newer than this driftwatch knows ({known}); run the newer version, or give another --db")]
    Newer {
        path: PathBuf,
        found: i64,
        known: usize,
    },
}

/// One rule evaluation's outcome, saved atomically: every active alert
/// (key, JSON), the notification state (key, JSON) and the messages queued.
#[derive(Debug, Clone, Default)]
pub struct AlertSave {
    pub alerts: Vec<(String, String)>,
    pub state: Vec<(String, String)>,
    pub notifications: Vec<NewNotification>,
}

/// A notification to queue: the receiver's name and the message (JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub receiver: String,
    pub payload: String,
}

/// A queued notification.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: i64,
    pub receiver: String,
    pub payload: String,
    /// Attempts made so far.
    pub attempts: u32,
    pub state: String,
    pub created_ms: i64,
    pub last_error: Option<String>,
}

/// One delivery attempt: delivered (`error` None), to retry at
/// `retry_at_ms`, or given up (dead letter: `error` with no retry).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: i64,
    pub error: Option<String>,
    pub retry_at_ms: Option<i64>,
}

/// One event to store: its key, time and the validated JSON.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub model: String,
    pub request_id: String,
    pub ts_ms: i64,
    pub json: String,
}

/// A ground-truth label to store.
#[derive(Debug, Clone)]
pub struct NewLabel {
    pub model: String,
    pub request_id: String,
    pub label: Option<String>,
    pub value: Option<f64>,
}

/// A stored label with the event JSON of its prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLabel {
    pub event: String,
    pub ts_ms: i64,
    pub label: Option<String>,
    pub value: Option<f64>,
}

/// What became of a label.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelOutcome {
    /// Stored; the prediction it belongs to (its time and event JSON).
    Stored { ts_ms: i64, event: String },
    /// No stored prediction has this request id (never sent, or past its TTL).
    UnknownRequest,
    /// A label for this prediction was stored before.
    Duplicate,
}

/// One window's evaluated results.
#[derive(Debug, Clone)]
pub struct WindowResult {
    pub model: String,
    pub window: String,
    pub start_ms: i64,
    pub json: String,
}

enum Work {
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
}

enum Done {
    Events(Vec<bool>),
    Labels(Vec<LabelOutcome>),
    Results,
}

/// What the writer answers: what it did, or why it could not.
type Reply = Result<Done, String>;

struct Job {
    work: Work,
    reply: tokio::sync::oneshot::Sender<Reply>,
}

/// Handle to the writer thread (cloned by every stage that stores).
#[derive(Clone)]
pub struct Store {
    sender: mpsc::Sender<Job>,
    path: PathBuf,
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    // NORMAL in WAL mode survives a killed process (the case we promise);
    // an operating-system crash may lose the last transactions.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if version > MIGRATIONS.len() as i64 {
        return Err(StoreError::Newer {
            path: path.to_path_buf(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating and migrating) the database and starts the writer.
    /// `retention` gives each model how long its events are kept.
    pub fn open(path: &Path, retention: Vec<(String, Duration)>) -> Result<Store, StoreError> {
        let mut conn = open(path)?;
        migrate(&mut conn, path)?;
        let (sender, receiver) = mpsc::channel::<Job>();
        let writer_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("driftwatch-store".into())
            .spawn(move || writer(conn, &writer_path, receiver, retention))
            .map_err(|source| StoreError::Spawn {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Store {
            sender,
            path: path.to_path_buf(),
        })
    }

    /// Hands work to the writer thread; the receiver yields its reply.
    fn send(&self, work: Work) -> Result<tokio::sync::oneshot::Receiver<Reply>, StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.sender
            .send(Job { work, reply })
            .map_err(|_| StoreError::Stopped)?;
        Ok(rx)
    }

    /// The writer's reply as a result.
    fn outcome(
        &self,
        reply: Result<Reply, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<Done, StoreError> {
        match reply {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(message)) => Err(StoreError::Writer {
                path: self.path.clone(),
                message,
            }),
            Err(_) => Err(StoreError::Stopped),
        }
    }

    async fn submit(&self, work: Work) -> Result<Done, StoreError> {
        let rx = self.send(work)?;
        self.outcome(rx.await)
    }

    /// Stores window results from a blocking thread (the evaluation loop).
    pub fn save_results_blocking(&self, results: Vec<WindowResult>) -> Result<(), StoreError> {
        let rx = self.send(Work::Results(results))?;
        self.outcome(rx.blocking_recv()).map(|_| ())
    }

    /// Replaces the stored active alerts and queues the notifications
    /// their changes caused, atomically (from a blocking thread).
    pub fn save_alerts_blocking(&self, save: AlertSave) -> Result<(), StoreError> {
        let rx = self.send(Work::Alerts(save))?;
        self.outcome(rx.blocking_recv()).map(|_| ())
    }

    /// Stores a silence (new or changed).
    pub async fn save_silence(&self, id: String, json: String) -> Result<(), StoreError> {
        self.submit(Work::Silence(id, json)).await.map(|_| ())
    }

    /// Runs a read-only query on its own connection (WAL: readers never
    /// wait for the writer), one `T` per row.
    fn read<T>(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let conn = open(&self.path)?;
        let mut stmt = conn.prepare(sql).map_err(err)?;
        let rows = stmt.query_map(p, row).map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// Every stored silence as JSON.
    pub fn silences(&self) -> Result<Vec<String>, StoreError> {
        self.read("SELECT silence FROM silences", [], |r| r.get(0))
    }

    /// Records delivery attempts.
    pub async fn record_attempts(&self, attempts: Vec<Attempt>) -> Result<(), StoreError> {
        self.submit(Work::Attempts(attempts)).await.map(|_| ())
    }

    /// Pending notifications due at `now_ms`, oldest first.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Queued>, StoreError> {
        self.queued(
            "SELECT id, receiver, payload, attempts, state, created_ms, last_error FROM outbox WHERE state = 'pending' AND next_attempt_ms <= ?1 ORDER BY id LIMIT ?2",
            params![now_ms, limit as i64],
        )
    }

    /// The newest notifications in `state` (pending, delivered, dead).
    pub fn notifications(&self, state: &str, limit: usize) -> Result<Vec<Queued>, StoreError> {
        self.queued(
            "SELECT id, receiver, payload, attempts, state, created_ms, last_error FROM outbox WHERE state = ?1 ORDER BY id DESC LIMIT ?2",
            params![state, limit as i64],
        )
    }

    /// Notifications per state.
    pub fn outbox_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(
            "SELECT state, COUNT(*) FROM outbox GROUP BY state",
            [],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
        )
    }

    fn queued(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Queued>, StoreError> {
        self.read(sql, p, |r| {
            Ok(Queued {
                id: r.get(0)?,
                receiver: r.get(1)?,
                payload: r.get(2)?,
                attempts: r.get::<_, i64>(3)? as u32,
                state: r.get(4)?,
                created_ms: r.get(5)?,
                last_error: r.get(6)?,
            })
        })
    }

    /// The stored notification state (key, JSON).
    pub fn notify_state(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read("SELECT key, value FROM notify_state", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    /// The stored active alerts as JSON.
    pub fn alerts(&self) -> Result<Vec<String>, StoreError> {
        self.read("SELECT alert FROM alerts", [], |r| r.get(0))
    }

    /// The newest `limit` stored results of a model's window length, newest first.
    pub fn results(
        &self,
        model: &str,
        window: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.read(
            "SELECT result FROM window_results WHERE model = ?1 AND window = ?2 ORDER BY start_ms DESC LIMIT ?3",
            params![model, window, limit as i64],
            |r| r.get(0),
        )
    }

    /// Commits the events; for each, whether it was new (false: its
    /// request id was already stored for that model).
    pub async fn insert(&self, events: Vec<NewEvent>) -> Result<Vec<bool>, StoreError> {
        match self.submit(Work::Events(events)).await? {
            Done::Events(flags) => Ok(flags),
            Done::Labels(_) | Done::Results => Err(StoreError::Stopped),
        }
    }

    /// Commits labels against their stored predictions.
    pub async fn insert_labels(
        &self,
        labels: Vec<NewLabel>,
    ) -> Result<Vec<LabelOutcome>, StoreError> {
        match self.submit(Work::Labels(labels)).await? {
            Done::Labels(outcomes) => Ok(outcomes),
            Done::Events(_) | Done::Results => Err(StoreError::Stopped),
        }
    }

    /// Stored labels of a model's predictions since `since_ms`, with the
    /// prediction's event JSON (for rebuilding windows at start).
    pub fn labels_since(&self, model: &str, since_ms: i64) -> Result<Vec<StoredLabel>, StoreError> {
        self.read(
            "SELECT e.event, l.ts_ms, l.label, l.value FROM labels l JOIN events e
             ON e.model = l.model AND e.request_id = l.request_id
             WHERE l.model = ?1 AND l.ts_ms >= ?2 ORDER BY l.received_ms",
            params![model, since_ms],
            |r| {
                Ok(StoredLabel {
                    event: r.get(0)?,
                    ts_ms: r.get(1)?,
                    label: r.get(2)?,
                    value: r.get(3)?,
                })
            },
        )
    }

    /// The stored events of a model since `since_ms`, oldest first (for
    /// rebuilding windows at start).
    pub fn events_since(&self, model: &str, since_ms: i64) -> Result<Vec<String>, StoreError> {
        self.read(
            "SELECT event FROM events WHERE model = ?1 AND ts_ms >= ?2 ORDER BY ts_ms, received_ms",
            params![model, since_ms],
            |r| r.get(0),
        )
    }
}

/// The writer: groups waiting batches into one transaction, answers each
/// batch after the commit, prunes old events now and then.
fn writer(
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
            for (model, keep) in &retention {
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
                    eprintln!(
                        "warning: {}: pruning old events failed: {e}",
                        path.display()
                    );
                }
            }
        }
    }
}

fn write_group(conn: &mut Connection, jobs: &[Job]) -> Result<Vec<Done>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(jobs.len());
    {
        let received = now_ms();
        for job in jobs {
            out.push(match &job.work {
                Work::Events(events) => {
                    let mut stmt = tx.prepare_cached(
                        "INSERT OR IGNORE INTO events (model, request_id, ts_ms, received_ms, event) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?;
                    let mut inserted = Vec::with_capacity(events.len());
                    for e in events {
                        inserted.push(stmt.execute(params![e.model, e.request_id, e.ts_ms, received, e.json])? == 1);
                    }
                    Done::Events(inserted)
                }
                Work::Labels(labels) => {
                    let mut find = tx.prepare_cached("SELECT ts_ms, event FROM events WHERE model = ?1 AND request_id = ?2")?;
                    let mut insert = tx.prepare_cached(
                        "INSERT OR IGNORE INTO labels (model, request_id, ts_ms, label, value, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    let mut outcomes = Vec::with_capacity(labels.len());
                    for l in labels {
                        let found: Option<(i64, String)> = find
                            .query_row(params![l.model, l.request_id], |r| Ok((r.get(0)?, r.get(1)?)))
                            .map(Some)
                            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
                        outcomes.push(match found {
                            None => LabelOutcome::UnknownRequest,
                            Some((ts_ms, event)) => {
                                if insert.execute(params![l.model, l.request_id, ts_ms, l.label, l.value, received])? == 1 {
                                    LabelOutcome::Stored { ts_ms, event }
                                } else {
                                    LabelOutcome::Duplicate
                                }
                            }
                        });
                    }
                    Done::Labels(outcomes)
                }
                Work::Alerts(save) => {
                    tx.execute("DELETE FROM alerts", [])?;
                    let mut stmt =
                        tx.prepare_cached("INSERT INTO alerts (key, alert) VALUES (?1, ?2)")?;
                    for (key, json) in &save.alerts {
                        stmt.execute(params![key, json])?;
                    }
                    tx.execute("DELETE FROM notify_state", [])?;
                    let mut stmt = tx
                        .prepare_cached("INSERT INTO notify_state (key, value) VALUES (?1, ?2)")?;
                    for (key, json) in &save.state {
                        stmt.execute(params![key, json])?;
                    }
                    let notifications = &save.notifications;
                    let mut stmt = tx.prepare_cached(
                        "INSERT INTO outbox (receiver, payload, created_ms, next_attempt_ms, state) VALUES (?1, ?2, ?3, ?3, 'pending')",
                    )?;
                    for n in notifications {
                        stmt.execute(params![n.receiver, n.payload, received])?;
                    }
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
                    Done::Results
                }
                Work::Results(results) => {
                    let mut stmt = tx.prepare_cached(
                        "INSERT OR REPLACE INTO window_results (model, window, start_ms, updated_ms, result) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?;
                    for r in results {
                        stmt.execute(params![r.model, r.window, r.start_ms, received, r.json])?;
                    }
                    Done::Results
                }
            });
        }
    }
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, ts: i64) -> NewEvent {
        NewEvent {
            model: "m".into(),
            request_id: id.into(),
            ts_ms: ts,
            json: format!("{{\"id\": \"{id}\"}}"),
        }
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused() {
        let dir = std::env::temp_dir().join(format!("dw-store-newer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        drop(Store::open(&path, vec![]).expect("open"));
        let conn = Connection::open(&path).expect("sqlite");
        conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
            .expect("version");
        drop(conn);
        match Store::open(&path, vec![]) {
            Err(e @ StoreError::Newer { .. }) => {
                assert!(e.to_string().contains("newer than this driftwatch"), "{e}")
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn duplicates_are_refused_and_events_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("dw-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        let store = Store::open(&path, vec![]).expect("open");
        let first = store
            .insert(vec![event("a", 10), event("b", 20), event("a", 30)])
            .await
            .expect("insert");
        assert_eq!(first, vec![true, true, false]);
        let again = store
            .insert(vec![event("b", 20), event("c", 5)])
            .await
            .expect("insert");
        assert_eq!(again, vec![false, true]);
        drop(store);
        let reopened = Store::open(&path, vec![]).expect("reopen");
        let labels = reopened
            .insert_labels(vec![
                NewLabel {
                    model: "m".into(),
                    request_id: "a".into(),
                    label: Some("1".into()),
                    value: None,
                },
                NewLabel {
                    model: "m".into(),
                    request_id: "zz".into(),
                    label: Some("1".into()),
                    value: None,
                },
                NewLabel {
                    model: "m".into(),
                    request_id: "a".into(),
                    label: Some("0".into()),
                    value: None,
                },
            ])
            .await
            .expect("labels");
        assert_eq!(
            labels,
            vec![
                LabelOutcome::Stored {
                    ts_ms: 10,
                    event: "{\"id\": \"a\"}".into()
                },
                LabelOutcome::UnknownRequest,
                LabelOutcome::Duplicate
            ]
        );
        assert_eq!(reopened.labels_since("m", 0).expect("read").len(), 1);
        let events = reopened.events_since("m", 6).expect("read");
        assert_eq!(
            events,
            vec!["{\"id\": \"a\"}".to_string(), "{\"id\": \"b\"}".to_string()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
