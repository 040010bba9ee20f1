//! `SqliteProjector`: a projection into tables of the store's file, run by the core runner; a
//! restart resumes from the stored checkpoint and the read model then equals a rebuild; a
//! database failure met by `apply` commits nothing; a panic in `apply` is the event's failure
//! and the writer lives on.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cqrs_core::prelude::*;
use cqrs_core::processor::{
    Batch, CommitError, FailureKind, FailurePolicy, Processor, ProcessorStore,
};
use cqrs_core::projection::EventContext;
use cqrs_core::{EventStore, ExpectedVersion, LogEntry, Metadata, NewEvent, Position};
use cqrs_sqlite::migrate::Migration;
use cqrs_sqlite::rusqlite::{self, Connection};
use cqrs_sqlite::{MigrationError, SqliteProjection, SqliteProjector, SqliteStore};
use cqrs_tests::scratch_database::fresh_path;

const TIMEOUT: Duration = Duration::from_secs(20);
const NONE: u64 = u64::MAX;

const SEATS_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "seats",
        sql: "CREATE TABLE seats (show TEXT PRIMARY KEY, reserved INTEGER NOT NULL) STRICT",
    },
    Migration {
        version: 2,
        name: "applied",
        sql: "CREATE TABLE applied (position INTEGER PRIMARY KEY) STRICT",
    },
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled { capacity: u32 },
    SeatsReserved { booking: u64, seats: u32 },
}

/// Seats reserved per show in `seats`, and one row per applied event in `applied` (its primary
/// key makes a double apply fail loudly).
#[derive(Clone)]
struct Seats {
    /// The booking whose reservation finds the disk full (as SQLite reports it), while set.
    disk_full_on: Arc<AtomicU64>,
    /// The booking whose reservation panics.
    panic_on: u64,
}

impl Seats {
    fn new() -> Self {
        Seats {
            disk_full_on: Arc::new(AtomicU64::new(NONE)),
            panic_on: NONE,
        }
    }
}

impl SqliteProjection for Seats {
    const NAME: &'static str = "seats";
    const AGGREGATES: &'static [&'static str] = &["show"];
    const MIGRATIONS: &'static [Migration] = SEATS_MIGRATIONS;
    type Event = ShowEvent;
    type Error = rusqlite::Error;

    fn apply(
        &self,
        connection: &Connection,
        event: ShowEvent,
        context: &EventContext<'_>,
    ) -> Result<(), rusqlite::Error> {
        let position = i64::try_from(context.position.0).unwrap_or(i64::MAX);
        connection.execute("INSERT INTO applied (position) VALUES (?1)", [position])?;
        let seats: i64 = match event {
            ShowEvent::Scheduled { .. } => 0,
            ShowEvent::SeatsReserved { booking, seats } => {
                if booking == self.disk_full_on.load(Ordering::SeqCst) {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                        Some("database or disk is full".into()),
                    ));
                }
                if booking == self.panic_on {
                    panic!("booking {booking} panics");
                }
                seats.into()
            }
        };
        connection.execute(
            "INSERT INTO seats (show, reserved) VALUES (?1, ?2) \
             ON CONFLICT (show) DO UPDATE SET reserved = seats.reserved + excluded.reserved",
            rusqlite::params![context.aggregate_id(), seats],
        )?;
        Ok(())
    }

    fn reset(&self, connection: &Connection) -> Result<(), rusqlite::Error> {
        connection.execute_batch("DELETE FROM seats; DELETE FROM applied;")
    }
}

/// Opens the store on `path` and migrates it and the read model.
async fn open(path: &Path) -> SqliteStore {
    let store = SqliteStore::open(path).await.expect("open");
    store.migrate().await.expect("migrate");
    SqliteProjector::new(Seats::new(), store.clone())
        .migrate()
        .await
        .expect("read model migrations");
    store
}

async fn append(store: &SqliteStore, stream: &str, events: &[ShowEvent]) -> Position {
    let stream = StreamId::new(stream).expect("stream id");
    let events = events
        .iter()
        .map(|event| NewEvent::encode(event, Metadata::default()))
        .collect::<Result<Vec<_>, _>>()
        .expect("encode");
    store
        .append(&stream, ExpectedVersion::Any, events)
        .await
        .expect("append")
        .position
        .expect("a position")
}

fn reserve(booking: u64) -> ShowEvent {
    ShowEvent::SeatsReserved { booking, seats: 1 }
}

/// The read model: seats per show, and the applied positions in order.
async fn read_model(store: &SqliteStore) -> (Vec<(String, i64)>, Vec<i64>) {
    let path = store.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let connection = Connection::open(path).expect("open");
        let seats = connection
            .prepare("SELECT show, reserved FROM seats ORDER BY show")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("seats");
        let applied = connection
            .prepare("SELECT position FROM applied ORDER BY position")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("applied");
        (seats, applied)
    })
    .await
    .expect("read task")
}

/// A runner stopped halfway (aborted, its store dropped: the process gone) and started again on
/// a new store of the same file resumes from the stored checkpoint: every event applied once
/// (the `applied` primary key would refuse a second apply), the seats summed, and the read
/// model equal to what a rebuild from the start makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_checkpoint_and_equals_a_rebuild() {
    let path = fresh_path("restart");
    let store = open(&path).await;
    append(&store, "show-1", &[ShowEvent::Scheduled { capacity: 9 }]).await;
    append(&store, "show-2", &[ShowEvent::Scheduled { capacity: 4 }]).await;
    let first_head = append(&store, "show-1", &[reserve(1), reserve(2)]).await;
    let handle = SqliteProjector::new(Seats::new(), store.clone())
        .runner()
        .batch_size(2)
        .spawn();
    handle
        .wait_for(first_head, TIMEOUT)
        .await
        .expect("caught up");
    handle.abort().await;
    let checkpoint = store.checkpoint(Seats::NAME).await.expect("checkpoint");
    assert_eq!(checkpoint, first_head, "the checkpoint is durable");
    drop(store);

    let store = open(&path).await;
    append(&store, "show-2", &[reserve(3)]).await;
    let head = append(&store, "show-1", &[reserve(4)]).await;
    let handle = SqliteProjector::new(Seats::new(), store.clone())
        .runner()
        .batch_size(2)
        .spawn();
    handle
        .wait_for(head, TIMEOUT)
        .await
        .expect("caught up again");
    let (seats, applied) = read_model(&store).await;
    assert_eq!(seats, [("1".to_owned(), 3), ("2".to_owned(), 1)]);
    assert_eq!(applied, [1, 2, 3, 4, 5, 6], "each event applied once");

    handle.rebuild().await.expect("rebuild");
    handle.wait_for(head, TIMEOUT).await.expect("rebuilt");
    assert_eq!(
        read_model(&store).await,
        (seats, applied),
        "equal to a rebuild"
    );
    let status = handle.shutdown().await;
    assert_eq!(status.checkpoint, head);
}

/// `apply` meeting a full disk is no event's failure: the commit is a store error and nothing of
/// the batch is written (not the events before it either, nor the checkpoint); once the disk has
/// room the runner applies everything once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_failure_in_apply_commits_nothing() {
    let store = open(&fresh_path("disk-full")).await;
    append(&store, "show-1", &[ShowEvent::Scheduled { capacity: 9 }]).await;
    let head = append(&store, "show-1", &[reserve(1), reserve(2)]).await;
    let seats = Seats::new();
    seats.disk_full_on.store(2, Ordering::SeqCst);
    let projector = SqliteProjector::new(seats.clone(), store.clone());

    let events: Vec<_> = store
        .read_log(Position::START, 100, &["show"])
        .await
        .expect("read log")
        .entries
        .into_iter()
        .filter_map(|entry| match entry {
            LogEntry::Event(event) => Some(event),
            LogEntry::Unreadable(_) => None,
        })
        .collect();
    let batch = Batch {
        processor: Seats::NAME,
        expected: Position::START,
        end: head,
        events: events.iter().collect(),
        dead_letters: Vec::new(),
        retried: None,
    };
    match projector.commit(batch).await {
        Err(CommitError::Store(error)) => {
            let message = error.to_string();
            assert!(message.contains("disk is full"), "{message}");
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    assert_eq!(
        store.checkpoint(Seats::NAME).await.expect("checkpoint"),
        Position::START
    );
    assert_eq!(
        read_model(&store).await,
        (vec![], vec![]),
        "nothing written"
    );

    let handle = projector.runner().spawn();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.checkpoint(Seats::NAME).await.expect("checkpoint"),
        Position::START,
        "still refused while the disk is full"
    );
    seats.disk_full_on.store(NONE, Ordering::SeqCst);
    handle.wait_for(head, TIMEOUT).await.expect("caught up");
    let (seats, applied) = read_model(&store).await;
    assert_eq!(seats, [("1".to_owned(), 2)]);
    assert_eq!(applied, [1, 2, 3]);
    handle.shutdown().await;
}

/// A panic in `apply` is that event's failure (parked under `Skip`, its own write rolled back),
/// and the writer thread it ran on goes on serving appends and batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_apply_is_the_events_failure_and_the_writer_lives_on() {
    let store = open(&fresh_path("panic")).await;
    append(&store, "show-1", &[ShowEvent::Scheduled { capacity: 9 }]).await;
    let head = append(&store, "show-1", &[reserve(1), reserve(2)]).await;
    let seats = Seats {
        panic_on: 1,
        ..Seats::new()
    };
    let handle = SqliteProjector::new(seats, store.clone())
        .runner()
        .failure_policy(FailurePolicy::Skip)
        .spawn();
    handle.wait_for(head, TIMEOUT).await.expect("caught up");
    let letters = handle.dead_letters().await.expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].id, "2");
    assert_eq!(letters[0].failure.kind, FailureKind::Panic);

    let later = append(&store, "show-1", &[reserve(3)]).await;
    handle
        .wait_for(later, TIMEOUT)
        .await
        .expect("the writer lives on");
    let (seats, applied) = read_model(&store).await;
    assert_eq!(seats, [("1".to_owned(), 2)]);
    assert_eq!(
        applied,
        [1, 3, 4],
        "the panicking event's write rolled back"
    );
    handle.shutdown().await;
}

/// A read model's migrations are applied once (the second call applies none, and a restart
/// does not fail on tables that exist), and one whose SQL changed after it was applied is
/// refused, naming the owner and the migration; a call whose later migration fails applies
/// none of its migrations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_model_migrations_apply_once_and_an_edit_is_refused() {
    let store = SqliteStore::open(fresh_path("read-model-migrations"))
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    let projector = SqliteProjector::new(Seats::new(), store.clone());
    assert_eq!(projector.migrate().await.expect("migrate"), [1, 2]);
    assert_eq!(projector.migrate().await.expect("again"), Vec::<u32>::new());

    const EDITED: &[Migration] = &[
        Migration {
            version: 1,
            name: "seats",
            sql: "CREATE TABLE seats (show TEXT PRIMARY KEY) STRICT",
        },
        Migration {
            version: 3,
            name: "extra",
            sql: "CREATE TABLE extra (n INTEGER) STRICT",
        },
    ];
    let error = store
        .migrate_read_model(Seats::NAME, EDITED)
        .await
        .expect_err("an edited migration");
    let message = error.to_string();
    assert!(
        message.contains("read model migration 1 (`seats`) of `seats` was applied with checksum"),
        "{message}"
    );
    assert!(
        matches!(
            match &error {
                cqrs_core::StoreError::Backend(source) => source.downcast_ref::<MigrationError>(),
                _ => None,
            },
            Some(MigrationError::ReadModelEdited { version: 1, .. })
        ),
        "{error:?}"
    );
    // Another owner's migrations of the same numbers are its own.
    assert_eq!(
        store
            .migrate_read_model("other", &EDITED[1..])
            .await
            .expect("another owner"),
        [3]
    );

    const BROKEN: &[Migration] = &[
        Migration {
            version: 1,
            name: "fine",
            sql: "CREATE TABLE fine (n INTEGER) STRICT",
        },
        Migration {
            version: 2,
            name: "broken",
            sql: "CREATE TABLE broken (n NOT_A_TYPE) STRICT",
        },
    ];
    let error = store
        .migrate_read_model("broken", BROKEN)
        .await
        .expect_err("a broken migration");
    let message = error.to_string();
    assert!(
        message.contains("read model migration 2 (`broken`) of `broken` failed")
            && message.contains("SQLITE_ERROR"),
        "{message}"
    );
    let tables: i64 = store
        .write(|connection| {
            connection.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'fine'",
                [],
                |row| row.get(0),
            )
        })
        .await
        .expect("store")
        .expect("query");
    assert_eq!(tables, 0, "the first migration of the call was rolled back");
}

/// A projector's commit and a checkpoint read each run in a DEBUG `store.processor` span that
/// says the database, the operation and the processor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_store_calls_run_in_spans() {
    let capture = cqrs_tests::telemetry::Capture::start();
    let store = open(&fresh_path("spans")).await;
    let head = append(&store, "show-1", &[ShowEvent::Scheduled { capacity: 9 }]).await;
    let handle = SqliteProjector::new(Seats::new(), store.clone())
        .runner()
        .spawn();
    handle.wait_for(head, TIMEOUT).await.expect("caught up");
    handle.shutdown().await;
    store.checkpoint(Seats::NAME).await.expect("checkpoint");
    let spans = capture.spans_named("store.processor");
    for operation in ["commit", "checkpoint"] {
        assert!(
            spans.iter().any(|span| {
                span.field("db.operation.name") == Some(operation)
                    && span.field("db.system.name") == Some("sqlite")
                    && span.field("cqrs.processor") == Some(Seats::NAME)
            }),
            "no `{operation}` span among {spans:?}"
        );
    }
}
