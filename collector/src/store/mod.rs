//! SQLite storage (WAL): every accepted event is committed before it is
//! acknowledged, by one writer thread that groups concurrent batches into one
//! transaction. On start the open windows are rebuilt from the stored events,
//! so a restart (also after `kill -9`) loses nothing acknowledged. Schema
//! changes are numbered migrations tracked in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

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
];

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
    #[error("the storage writer has stopped")]
    Stopped,
}

/// One event to store: its key, time and the validated JSON.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub model: String,
    pub request_id: String,
    pub ts_ms: i64,
    pub json: String,
}

struct Job {
    events: Vec<NewEvent>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<bool>, String>>,
}

/// Handle to the writer thread.
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
            .map_err(|e| StoreError::Sqlite {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Store {
            sender,
            path: path.to_path_buf(),
        })
    }

    /// Commits the events; for each, whether it was new (false: its
    /// request id was already stored for that model).
    pub async fn insert(&self, events: Vec<NewEvent>) -> Result<Vec<bool>, StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.sender
            .send(Job { events, reply })
            .map_err(|_| StoreError::Stopped)?;
        match rx.await {
            Ok(Ok(inserted)) => Ok(inserted),
            Ok(Err(message)) => Err(StoreError::Sqlite {
                path: self.path.clone(),
                source: rusqlite::Error::InvalidParameterName(message),
            }),
            Err(_) => Err(StoreError::Stopped),
        }
    }

    /// The stored events of a model since `since_ms`, oldest first (for
    /// rebuilding windows at start).
    pub fn events_since(&self, model: &str, since_ms: i64) -> Result<Vec<String>, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let conn = open(&self.path)?;
        let mut stmt = conn
            .prepare("SELECT event FROM events WHERE model = ?1 AND ts_ms >= ?2 ORDER BY ts_ms, received_ms")
            .map_err(err)?;
        let rows = stmt
            .query_map(params![model, since_ms], |r| r.get::<_, String>(0))
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
                for (job, inserted) in jobs.into_iter().zip(per_job) {
                    let _ = job.reply.send(Ok(inserted));
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
                if let Err(e) = conn.execute(
                    "DELETE FROM events WHERE model = ?1 AND ts_ms < ?2",
                    params![model, cutoff],
                ) {
                    eprintln!(
                        "warning: {}: pruning old events failed: {e}",
                        path.display()
                    );
                }
            }
        }
    }
}

fn write_group(conn: &mut Connection, jobs: &[Job]) -> Result<Vec<Vec<bool>>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(jobs.len());
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO events (model, request_id, ts_ms, received_ms, event) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let received = now_ms();
        for job in jobs {
            let mut inserted = Vec::with_capacity(job.events.len());
            for e in &job.events {
                inserted.push(
                    stmt.execute(params![e.model, e.request_id, e.ts_ms, received, e.json])? == 1,
                );
            }
            out.push(inserted);
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
        let events = reopened.events_since("m", 6).expect("read");
        assert_eq!(
            events,
            vec!["{\"id\": \"a\"}".to_string(), "{\"id\": \"b\"}".to_string()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
