//! The SQLite benchmarks, each on a fresh file (`synchronous=FULL`, WAL) in the temporary
//! directory (or `CQRS_BENCH_SQLITE_DIR`): the store's own (`sqlite_exec_distinct_1` and `_8`,
//! `sqlite_exec_same`, `sqlite_rehydrate`, `sqlite_projection_catchup`), and the physical
//! reference: a bare rusqlite loop inserting the same rows into the store's own table with the
//! same pragmas, one row per transaction (`sqlite_reference_1`) and 8 rows per transaction
//! (`sqlite_reference_8`, as the store's writer batches the appends of 8 tasks).

use std::path::PathBuf;
use std::time::Instant;

use cqrs_core::codec::Codec;
use cqrs_core::event::{Metadata, NewEvent};
use cqrs_core::{DomainEvent as _, EventId};
use cqrs_examples::show::{BookingId, ShowEvent};
use cqrs_sqlite::SqliteStore;
use cqrs_sqlite::rusqlite::{self, Connection, params};

use crate::stores::{self, run_id};
use crate::{BenchResult, BoxError, per_second, report};

/// Removes a database file and its WAL and shared-memory files, whatever is left of them.
fn remove(path: &std::path::Path) {
    let _ = cqrs_sqlite::remove_database(path);
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
    for codec in [Codec::Json, Codec::MessagePack] {
        let name = stores::rehydrate_name("sqlite", codec);
        if wanted(&name) {
            let scratch = Scratch::new(&name);
            stores::rehydrate("sqlite", store(&scratch).await?, codec).await?;
        }
    }
    if wanted("sqlite_rehydrate_codec_ceiling") {
        let scratch = Scratch::new("sqlite_rehydrate_codec_ceiling");
        stores::codec_ceiling("sqlite", store(&scratch).await?).await?;
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

/// The physical reference: the rows `sqlite_exec_distinct_1` (`rows_per_transaction` 1) and
/// `_8` (8) write, inserted by a bare rusqlite loop with the store's pragmas into the store's own
/// `cqrs_events` table (its migration, so the same columns, checks and indexes): first one
/// `Scheduled` row per show (not timed), then the reservations, in the benchmark's order. As in
/// the benchmark, each of the `rows_per_transaction` writers has its own 100 shows round-robin,
/// and a transaction holds one reservation of each. Rows per second.
fn reference(path: &std::path::Path, rows_per_transaction: u64) -> Result<f64, BoxError> {
    const SHOWS_PER_WRITER: u64 = 100;
    let (writers, per_writer) = if rows_per_transaction == 1 {
        (1, 2_000)
    } else {
        (rows_per_transaction, 500)
    };
    let mut connection = Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.execute_batch(include_str!(
        "../../cqrs-sqlite/migrations/0001_event_store.sql"
    ))?;
    let run = run_id();
    let stream = |show: u64| format!("show-d{run}-{show}");
    let scheduled = NewEvent::encode(
        &ShowEvent::Scheduled {
            capacity: per_writer as u32,
        },
        Metadata::default(),
    )?;
    let reserved = ShowEvent::SeatsReserved {
        booking: BookingId(1),
        seats: 1,
    };
    let encoded = NewEvent::encode(&reserved, Metadata::default())?;
    let mut position = 0_i64;
    let mut insert_row = |connection: &Connection,
                          stream: &str,
                          version: u64,
                          event_type: &str,
                          payload: &[u8]|
     -> rusqlite::Result<()> {
        position += 1;
        let id = EventId::new().0;
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros() as i64);
        connection
            .prepare_cached(
                "INSERT INTO cqrs_events (position, stream, version, event_id, event_type, \
                 schema_version, payload, correlation_id, causation_id, command_id, \
                 occurred_at, headers) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, NULL, NULL, ?8, '{}')",
            )?
            .execute(params![
                position,
                stream,
                version as i64,
                id.as_bytes().as_slice(),
                event_type,
                payload,
                id.as_bytes().as_slice(),
                micros,
            ])
            .map(drop)
    };
    {
        let transaction = connection.transaction()?;
        for show in 0..writers * SHOWS_PER_WRITER {
            insert_row(
                &transaction,
                &stream(show),
                1,
                ShowEvent::Scheduled { capacity: 0 }.event_type(),
                scheduled.payload.as_bytes(),
            )?;
        }
        transaction.commit()?;
    }
    let event_type = reserved.event_type();
    let payload = encoded.payload.as_bytes();
    let started = Instant::now();
    for n in 0..per_writer {
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for writer in 0..writers {
            let show = writer * SHOWS_PER_WRITER + n % SHOWS_PER_WRITER;
            let version = n / SHOWS_PER_WRITER + 2;
            insert_row(&transaction, &stream(show), version, event_type, payload)?;
        }
        transaction.commit()?;
    }
    Ok(per_second(writers * per_writer, started.elapsed()))
}
