//! The SQLite benchmarks, each on a fresh file (`synchronous=FULL`, WAL) in the temporary
//! directory (or `CQRS_BENCH_SQLITE_DIR`): the store's own (`sqlite_exec_distinct_1` and `_8`,
//! `sqlite_exec_same`, `sqlite_rehydrate`, `sqlite_projection_catchup`), and the physical
//! reference: a bare rusqlite loop inserting the same rows into a table of the same shape with
//! the same pragmas, one row per transaction (`sqlite_reference_1`) and 8 rows per transaction
//! (`sqlite_reference_8`, as the store's writer batches the appends of 8 tasks).

use std::path::PathBuf;
use std::time::Instant;

use cqrs_core::event::{Metadata, NewEvent};
use cqrs_core::{DomainEvent as _, EventId};
use cqrs_examples::show::{BookingId, ShowEvent};
use cqrs_sqlite::SqliteStore;
use cqrs_sqlite::rusqlite::{self, Connection, params};

use crate::stores::{self, run_id};
use crate::{BenchResult, BoxError, per_second, report};

/// Removes a database file and its WAL and shared-memory files.
fn remove(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// A fresh database path for `name`, removed again when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let directory = std::env::var_os("CQRS_BENCH_SQLITE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let path = directory.join(format!("cqrs-bench-{name}-{}.db", run_id()));
        remove(&path);
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

async fn store(scratch: &Scratch) -> Result<SqliteStore, BoxError> {
    let store = SqliteStore::open(&scratch.0).await?;
    store.migrate().await?;
    Ok(store)
}

/// Runs the SQLite benchmarks `wanted` selects.
pub(crate) async fn run(wanted: impl Fn(&str) -> bool) -> BenchResult {
    for (name, tasks, per_task) in [
        ("sqlite_exec_distinct_1", 1, 2_000),
        ("sqlite_exec_distinct_8", 8, 500),
    ] {
        if wanted(name) {
            let scratch = Scratch::new(name);
            stores::exec_distinct("sqlite", store(&scratch).await?, tasks, per_task).await?;
        }
    }
    if wanted("sqlite_exec_same") {
        let scratch = Scratch::new("sqlite_exec_same");
        stores::exec_same("sqlite", store(&scratch).await?).await?;
    }
    if wanted("sqlite_rehydrate") {
        let scratch = Scratch::new("sqlite_rehydrate");
        stores::rehydrate("sqlite", store(&scratch).await?).await?;
    }
    if wanted("sqlite_projection_catchup") {
        let scratch = Scratch::new("sqlite_projection_catchup");
        let store = store(&scratch).await?;
        crate::projection::catchup("sqlite_projection_catchup", store, 200, 1_000).await?;
    }
    for (name, rows_per_transaction) in [("sqlite_reference_1", 1), ("sqlite_reference_8", 8)] {
        if wanted(name) {
            let scratch = Scratch::new(name);
            let path = scratch.0.clone();
            let rows = tokio::task::spawn_blocking(move || reference(&path, rows_per_transaction))
                .await??;
            report(name, rows, "rows/s");
        }
    }
    Ok(())
}

/// The physical reference: 2,000 (or 4,000 in transactions of 8) one-event rows, shaped as the
/// store's `cqrs_events` rows (a reservation's JSON payload, its metadata, a unique stream and
/// version), inserted with the store's pragmas, `rows_per_transaction` to a transaction. Rows
/// per second.
fn reference(path: &std::path::Path, rows_per_transaction: u64) -> Result<f64, BoxError> {
    let rows = if rows_per_transaction == 1 {
        2_000
    } else {
        4_000
    };
    let mut connection = Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.execute_batch(
        "CREATE TABLE events (
             position INTEGER PRIMARY KEY,
             stream TEXT NOT NULL,
             version INTEGER NOT NULL,
             event_id BLOB NOT NULL,
             event_type TEXT NOT NULL,
             schema_version INTEGER NOT NULL,
             payload BLOB NOT NULL,
             correlation_id BLOB,
             recorded_at INTEGER NOT NULL,
             headers TEXT NOT NULL,
             UNIQUE (stream, version)
         ) STRICT;",
    )?;
    let event = ShowEvent::SeatsReserved {
        booking: BookingId(1),
        seats: 1,
    };
    let encoded = NewEvent::encode(&event, Metadata::default())?;
    let payload = encoded.payload.as_bytes();
    let event_type = event.event_type();
    let started = Instant::now();
    let mut written = 0;
    while written < rows {
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO events (stream, version, event_id, event_type, schema_version, \
                 payload, correlation_id, recorded_at, headers) \
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, '{}')",
            )?;
            for _ in 0..rows_per_transaction {
                // 100 shows round-robin, as `sqlite_exec_distinct` spreads its commands.
                let stream = format!("show-{}", written % 100);
                let version = written / 100 + 1;
                let id = EventId::new().0;
                insert.execute(params![
                    stream,
                    version as i64,
                    id.as_bytes().as_slice(),
                    event_type,
                    payload,
                    id.as_bytes().as_slice(),
                    written as i64,
                ])?;
                written += 1;
            }
        }
        transaction.commit()?;
    }
    Ok(per_second(rows, started.elapsed()))
}
