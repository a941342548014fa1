//! SQLite storage (WAL): every accepted event is committed before it is
//! acknowledged, by one writer thread that groups concurrent batches into one
//! transaction. On start the open windows are rebuilt from the stored events,
//! so a restart (also after `kill -9`) loses nothing acknowledged. Schema
//! changes are numbered migrations tracked in `PRAGMA user_version`.

mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, LazyLock};
use std::time::Duration;

use driftwatch_telemetry::log::Repeats;

use rusqlite::params;

use schema::{migrate, open, sqlite_error, writer_settings};
use writer::{writer, Done, Job, Reply, Work};

/// Storage failures are logged through this, at most once a minute per
/// kind of work (a broken disk fails every request); each is counted
/// where it happens.
pub static FAILURES_LOGGED: LazyLock<Repeats> = LazyLock::new(Repeats::default);

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
    /// The model of its alerts, when they share one (cluster mode queues
    /// it with the model's alert state).
    pub model: Option<String>,
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
    /// What the request earned (experiments whose metric is `reward`).
    pub reward: Option<f64>,
}

/// A stored label with the event JSON of its prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLabel {
    pub event: String,
    pub ts_ms: i64,
    pub label: Option<String>,
    pub value: Option<f64>,
    pub reward: Option<f64>,
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
#[derive(Clone)]
pub struct Store {
    sender: mpsc::Sender<Job>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating and migrating) the database and starts the writer.
    /// `retention` gives each model how long its events are kept.
    pub fn open(path: &Path, retention: Vec<(String, Duration)>) -> Result<Store, StoreError> {
        let mut conn = open(path)?;
        migrate(&mut conn, path)?;
        writer_settings(&conn, path)?;
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

    /// Drops a model's stored events and labels (its window results stay).
    pub async fn forget(&self, model: String) -> Result<(), StoreError> {
        self.submit(Work::Forget(model)).await.map(|_| ())
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
        let err = sqlite_error(&self.path);
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
            "SELECT e.event, l.ts_ms, l.label, l.value, l.reward FROM labels l JOIN events e
             ON e.model = l.model AND e.request_id = l.request_id
             WHERE l.model = ?1 AND l.ts_ms >= ?2 ORDER BY l.received_ms",
            params![model, since_ms],
            |r| {
                Ok(StoredLabel {
                    event: r.get(0)?,
                    ts_ms: r.get(1)?,
                    label: r.get(2)?,
                    value: r.get(3)?,
                    reward: r.get(4)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;
    use schema::MIGRATIONS;

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
        let dir = driftwatch_testkit::temp_dir("store-newer");
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
    async fn events_stored_before_the_arrival_order_migration_are_kept() {
        let dir = driftwatch_testkit::temp_dir("store-migrate");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        // A database as 0.6.0 left it: migrations 1 to 7, two events.
        let conn = Connection::open(&path).expect("sqlite");
        for (i, sql) in MIGRATIONS.iter().enumerate().take(7) {
            conn.execute_batch(sql).expect("migration");
            conn.pragma_update(None, "user_version", i as i64 + 1)
                .expect("version");
        }
        conn.execute_batch(
            "INSERT INTO events VALUES ('m', 'b', 20, 2, '{\"id\": \"b\"}');
             INSERT INTO events VALUES ('m', 'a', 10, 1, '{\"id\": \"a\"}');",
        )
        .expect("old events");
        drop(conn);
        let store = Store::open(&path, vec![]).expect("open");
        assert_eq!(
            store.events_since("m", 0).expect("read"),
            vec!["{\"id\": \"a\"}".to_string(), "{\"id\": \"b\"}".to_string()]
        );
        // Their ids are still taken; a new one is stored.
        let flags = store
            .insert(vec![event("a", 10), event("c", 30)])
            .await
            .expect("insert");
        assert_eq!(flags, vec![false, true]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn duplicates_are_refused_and_events_survive_reopening() {
        let dir = driftwatch_testkit::temp_dir("store");
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
                    reward: None,
                },
                NewLabel {
                    model: "m".into(),
                    request_id: "zz".into(),
                    label: Some("1".into()),
                    value: None,
                    reward: None,
                },
                NewLabel {
                    model: "m".into(),
                    request_id: "a".into(),
                    label: Some("0".into()),
                    value: None,
                    reward: None,
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
