//! The database's schema: numbered migrations tracked in `PRAGMA
//! user_version` (a database from a newer driftwatch is refused), and how
//! a connection is opened (WAL, synchronous NORMAL).

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

/// Schema migrations, applied in order; never edit one that has shipped.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 8: events stored in arrival order, the key in an index of its own.
    // Request ids are random (the agent's are 32 random hex digits): as
    // the key of a WITHOUT ROWID table every event, whole, went to a
    // random page of the table (a page written per event, and split),
    // about four times the cost of appending it and indexing its key.
    "CREATE TABLE events_by_arrival (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        request_id TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        event TEXT NOT NULL
    );
    INSERT INTO events_by_arrival (model, request_id, ts_ms, received_ms, event)
        SELECT model, request_id, ts_ms, received_ms, event FROM events ORDER BY received_ms, ts_ms;
    DROP TABLE events;
    ALTER TABLE events_by_arrival RENAME TO events;
    CREATE UNIQUE INDEX events_by_request ON events (model, request_id);
    CREATE INDEX events_by_time ON events (model, ts_ms);",
    // 9: a label's reward (experiments whose metric is `reward`).
    "ALTER TABLE labels ADD COLUMN reward REAL;",
];

/// Names the database in a SQLite error.
pub(super) fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// A connection to the database (WAL).
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
    let err = sqlite_error(path);
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

/// The writer's connection: a larger page cache (the key index's pages
/// stay in memory while it grows: SQLite's default is 2 MB) and a larger
/// write-ahead log between checkpoints (a page written by many
/// transactions is copied back once).
pub(super) fn writer_settings(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = sqlite_error(path);
    // Negative: KiB.
    conn.pragma_update(None, "cache_size", -32 * 1024)
        .map_err(err)?;
    conn.pragma_update(None, "wal_autocheckpoint", 8192)
        .map_err(err)?;
    Ok(())
}

/// Applies the migrations not applied yet; a newer schema is refused.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let err = sqlite_error(path);
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
