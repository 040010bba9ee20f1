//! The processor conformance suites against the SQLite backend: a projection into a table
//! through `SqliteProjector`, and the `SqliteSagaStore`, each check on a fresh file.

use std::sync::atomic::{AtomicUsize, Ordering};

use cqrs_core::Position;
use cqrs_core::projection::EventContext;
use cqrs_sqlite::rusqlite::{self, Connection};
use cqrs_sqlite::{SqliteProjection, SqliteProjector, SqliteSagaStore, SqliteStore};
use cqrs_tests::processors::{TALLY, Tally, TallyEvent, TallyRefused};
use cqrs_tests::scratch_database::test_directory;

/// A migrated store on a file no other check of this run uses.
async fn fresh_store() -> SqliteStore {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = test_directory().join(format!("processors-{n}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = SqliteStore::open(&path)
        .await
        .unwrap_or_else(|error| panic!("open: {error}"));
    store
        .migrate()
        .await
        .unwrap_or_else(|error| panic!("migrate: {error}"));
    store
}

/// The tally as SQL: every applied event's position, in the order applied.
struct TallyTable;

/// Why [`TallyTable`] failed.
#[derive(Debug, thiserror::Error)]
enum TallyError {
    #[error(transparent)]
    Refused(#[from] TallyRefused),
    #[error(transparent)]
    Database(#[from] rusqlite::Error),
}

impl SqliteProjection for TallyTable {
    const NAME: &'static str = "tally_table";
    const AGGREGATES: &'static [&'static str] = &[TALLY];
    type Event = TallyEvent;
    type Error = TallyError;

    fn apply(
        &self,
        connection: &Connection,
        TallyEvent::Counted { fail }: TallyEvent,
        context: &EventContext<'_>,
    ) -> Result<(), TallyError> {
        let position = i64::try_from(context.position.0).unwrap_or(i64::MAX);
        // Written before the refusal, so that a failing event's own write must be rolled back.
        connection.execute(
            "INSERT INTO tally_applied (position) VALUES (?1)",
            [position],
        )?;
        if fail {
            return Err(TallyRefused.into());
        }
        Ok(())
    }

    fn reset(&self, connection: &Connection) -> Result<(), TallyError> {
        Ok(connection.execute_batch("DELETE FROM tally_applied")?)
    }
}

async fn sqlite_tally() -> Tally<SqliteProjector<TallyTable>> {
    let store = fresh_store().await;
    store
        .write(|connection| {
            connection.execute_batch(
                "CREATE TABLE tally_applied (seq INTEGER PRIMARY KEY, position INTEGER NOT NULL)",
            )
        })
        .await
        .expect("store")
        .expect("table");
    let reader = store.clone();
    Tally {
        processor: SqliteProjector::new(TallyTable, store),
        applied: Box::new(move |_| {
            let path = reader.path().to_owned();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    let connection = Connection::open(path).expect("open");
                    connection
                        .prepare("SELECT position FROM tally_applied ORDER BY seq")
                        .and_then(|mut statement| {
                            statement
                                .query_map([], |row| row.get::<_, i64>(0))?
                                .collect::<Result<Vec<_>, _>>()
                        })
                        .expect("query")
                        .into_iter()
                        .map(|position| Position(u64::try_from(position).expect("position")))
                        .collect()
                })
                .await
                .expect("read task")
            })
        }),
    }
}

cqrs_tests::processor_tests!(sqlite_tally(), exclusive = false);

cqrs_tests::saga_store_tests!(async { SqliteSagaStore::new(fresh_store().await) });
