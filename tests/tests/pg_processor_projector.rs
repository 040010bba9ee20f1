//! `PostgresProjector`: a batch's SQL, dead letters and checkpoint commit in one transaction;
//! a failing event commits the events before it; a retried dead letter goes with its event; a
//! moved checkpoint commits nothing; and the core runner drives it end to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cqrs_core::prelude::*;
use cqrs_core::processor::{
    Batch, CommitError, DeadLetter, EventFailure, EventRef, Failure, FailureKind, FailurePolicy,
    Processor, ProcessorStore,
};
use cqrs_core::projection::EventContext;
use cqrs_core::{
    EventId, EventStore, ExpectedVersion, LogEntry, Metadata, NewEvent, Position, RecordedEvent,
};
use cqrs_postgres::testing::{PostgresProjectionTest, ProjectionTestError, TestCluster};
use cqrs_postgres::{PostgresProjection, PostgresProjector, PostgresStore, Transaction};

const TIMEOUT: Duration = Duration::from_secs(20);
const NONE: u64 = u64::MAX;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled { capacity: u32 },
    SeatsReserved { booking: u64, seats: u32 },
}

/// Seats reserved per show in `seats`, and one row per applied event in `applied` (its primary
/// key makes a double apply fail loudly).
#[derive(Clone)]
struct Seats {
    /// The booking whose reservation fails, after the projection wrote its `applied` row.
    fail_on: Arc<AtomicU64>,
    /// The booking whose reservation panics.
    panic_on: u64,
    /// How many times `apply_batch` ran.
    batches: Arc<AtomicU64>,
    /// The booking whose reservation meets a serialization failure on the server.
    conflict_on: u64,
    /// The booking whose reservation, once, kills its own connection (as a server restart would).
    disconnect_on: Arc<AtomicU64>,
    /// The booking whose reservation finds the server's disk full (while it is set).
    disk_full_on: Arc<AtomicU64>,
}

impl Seats {
    fn new() -> Self {
        Seats {
            fail_on: Arc::new(AtomicU64::new(NONE)),
            panic_on: NONE,
            batches: Arc::new(AtomicU64::new(0)),
            conflict_on: NONE,
            disconnect_on: Arc::new(AtomicU64::new(NONE)),
            disk_full_on: Arc::new(AtomicU64::new(NONE)),
        }
    }

    fn failing_on(booking: u64) -> Self {
        let seats = Seats::new();
        seats.fail_on.store(booking, Ordering::SeqCst);
        seats
    }
}

#[derive(Debug, thiserror::Error)]
enum SeatsError {
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
    #[error("booking {0} is refused")]
    Refused(u64),
}

#[async_trait::async_trait]
impl PostgresProjection for Seats {
    const NAME: &'static str = "seats";
    const AGGREGATES: &'static [&'static str] = &["show"];
    type Event = ShowEvent;
    type Error = SeatsError;

    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        event: ShowEvent,
        context: &EventContext<'_>,
    ) -> Result<(), SeatsError> {
        let position = context.position.0 as i64;
        let log = transaction
            .prepare_cached("INSERT INTO applied (position) VALUES ($1)")
            .await?;
        transaction.execute(&log, &[&position]).await?;
        let seats: i64 = match event {
            ShowEvent::Scheduled { .. } => 0,
            ShowEvent::SeatsReserved { booking, seats } => {
                if booking == self.fail_on.load(Ordering::SeqCst) {
                    return Err(SeatsError::Refused(booking));
                }
                if booking == self.panic_on {
                    panic!("booking {booking} panics");
                }
                if self
                    .disconnect_on
                    .compare_exchange(booking, NONE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    transaction
                        .batch_execute("SELECT pg_terminate_backend(pg_backend_pid())")
                        .await?;
                }
                if booking == self.disk_full_on.load(Ordering::SeqCst) {
                    transaction
                        .batch_execute(
                            "DO $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left \
                             on device' USING ERRCODE = '53100'; END $$",
                        )
                        .await?;
                }
                if booking == self.conflict_on {
                    transaction
                        .batch_execute(
                            "DO $$ BEGIN RAISE EXCEPTION 'could not serialize access' \
                             USING ERRCODE = '40001'; END $$",
                        )
                        .await?;
                }
                seats.into()
            }
        };
        let upsert = transaction
            .prepare_cached(
                "INSERT INTO seats (show, reserved) VALUES ($1, $2) \
                 ON CONFLICT (show) DO UPDATE SET reserved = seats.reserved + $2",
            )
            .await?;
        transaction
            .execute(&upsert, &[&context.aggregate_id(), &seats])
            .await?;
        Ok(())
    }

    async fn apply_batch(
        &self,
        transaction: &Transaction<'_>,
        events: Vec<(ShowEvent, EventContext<'_>)>,
    ) -> Result<(), SeatsError> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        for (event, context) in events {
            self.apply(transaction, event, &context).await?;
        }
        Ok(())
    }

    async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), SeatsError> {
        transaction.batch_execute("TRUNCATE seats, applied").await?;
        Ok(())
    }
}

async fn fresh_store() -> PostgresStore {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");
    let store = PostgresStore::with_pool_size(&url, 4).expect("store");
    store.migrate().await.expect("migrate");
    store
        .pool()
        .get()
        .await
        .expect("connection")
        .batch_execute(
            "CREATE TABLE seats (show text PRIMARY KEY, reserved bigint NOT NULL);
             CREATE TABLE applied (position bigint PRIMARY KEY);",
        )
        .await
        .expect("read model tables");
    store
}

async fn append(store: &PostgresStore, stream: &str, events: &[ShowEvent]) -> Position {
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

/// Every event of the log, as the runner reads it for `Seats`.
async fn log(store: &PostgresStore) -> Vec<RecordedEvent> {
    store
        .read_log(Position::START, 1_000, Seats::AGGREGATES)
        .await
        .expect("read_log")
        .entries
        .into_iter()
        .map(|entry| match entry {
            LogEntry::Event(event) => event,
            LogEntry::Unreadable(row) => panic!("unexpected {row}"),
        })
        .collect()
}

fn batch<'a>(
    expected: Position,
    end: Position,
    events: Vec<&'a RecordedEvent>,
    dead_letters: Vec<DeadLetter>,
) -> Batch<'a> {
    Batch {
        processor: Seats::NAME,
        expected,
        end,
        events,
        dead_letters,
        retried: None,
    }
}

/// A dead letter for `event`, as the runner parks it.
fn parked(event: &RecordedEvent) -> DeadLetter {
    let failure = EventFailure::new(FailureKind::Handler, "refused by the test");
    DeadLetter::new(
        Seats::NAME,
        Failure::of_event(EventRef::of(event), &failure, 1),
    )
}

async fn applied(store: &PostgresStore) -> Vec<i64> {
    store
        .pool()
        .get()
        .await
        .expect("connection")
        .query("SELECT position FROM applied ORDER BY position", &[])
        .await
        .expect("applied")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn reserved(store: &PostgresStore, show: &str) -> Option<i64> {
    store
        .pool()
        .get()
        .await
        .expect("connection")
        .query_opt("SELECT reserved FROM seats WHERE show = $1", &[&show])
        .await
        .expect("seats")
        .map(|row| row.get(0))
}

fn positions(events: &[RecordedEvent]) -> Vec<i64> {
    events.iter().map(|event| event.position.0 as i64).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_with_its_checkpoint() {
    let store = fresh_store().await;
    append(
        &store,
        "show-1",
        &[ShowEvent::Scheduled { capacity: 9 }, reserve(1)],
    )
    .await;
    let end = append(
        &store,
        "show-2",
        &[ShowEvent::Scheduled { capacity: 5 }, reserve(2)],
    )
    .await;
    let events = log(&store).await;
    let seats = Seats::new();
    let projector = PostgresProjector::new(seats.clone(), store.clone());

    let committed = projector
        .commit(batch(Position::START, end, events.iter().collect(), vec![]))
        .await
        .expect("commit");
    assert_eq!(committed.reached, end);
    assert!(committed.failed.is_none());
    assert_eq!(
        store.checkpoint(Seats::NAME).await.expect("checkpoint"),
        end
    );
    assert_eq!(applied(&store).await, positions(&events));
    assert_eq!(reserved(&store, "1").await, Some(1));
    assert_eq!(reserved(&store, "2").await, Some(1));
    assert_eq!(
        seats.batches.load(Ordering::SeqCst),
        1,
        "one apply_batch for the run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_commits_the_events_and_dead_letters_before_it() {
    let store = fresh_store().await;
    let end = append(
        &store,
        "show-1",
        &[
            ShowEvent::Scheduled { capacity: 9 },
            reserve(1),
            reserve(2),
            reserve(3),
            reserve(4),
        ],
    )
    .await;
    let events = log(&store).await;
    // Bookings 1 and 4 were parked before this commit; booking 3 fails.
    let (scheduled, one, two, three, four) =
        (&events[0], &events[1], &events[2], &events[3], &events[4]);
    let (one_parked, four_parked) = (parked(one), parked(four));
    let projector = PostgresProjector::new(Seats::failing_on(3), store.clone());
    let committed = projector
        .commit(batch(
            Position::START,
            end,
            vec![scheduled, two, three],
            vec![one_parked.clone(), four_parked],
        ))
        .await
        .expect("commit");

    let right_before = Position(three.position.0 - 1);
    assert_eq!(committed.reached, right_before);
    let (index, failure) = committed.failed.expect("a failure");
    assert_eq!(index, 2);
    assert_eq!(failure.kind, FailureKind::Handler);
    assert!(
        failure.error.to_string().contains("booking 3"),
        "{}",
        failure.error
    );
    assert_eq!(
        store.checkpoint(Seats::NAME).await.expect("checkpoint"),
        right_before
    );
    // The failing event's own SQL was rolled back with it.
    assert_eq!(
        applied(&store).await,
        vec![scheduled.position.0 as i64, two.position.0 as i64]
    );
    assert_eq!(reserved(&store, "1").await, Some(1));
    // Only the dead letter before the checkpoint reached was recorded.
    let letters = store.dead_letters(Seats::NAME).await.expect("dead letters");
    assert_eq!(letters, vec![one_parked], "as parked, to the nanosecond");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_and_an_unknown_event_are_the_events_failures() {
    let store = fresh_store().await;
    append(
        &store,
        "show-1",
        &[ShowEvent::Scheduled { capacity: 9 }, reserve(1), reserve(2)],
    )
    .await;
    let stream = StreamId::new("show-1").expect("stream id");
    let mystery = NewEvent {
        event_id: EventId::new(),
        event_type: "Mystery".into(),
        schema_version: 1,
        payload: "{}".into(),
        metadata: Metadata::default(),
    };
    let end = store
        .append(&stream, ExpectedVersion::Any, vec![mystery])
        .await
        .expect("append")
        .position
        .expect("position");
    let events = log(&store).await;

    let panicking = Seats {
        panic_on: 2,
        ..Seats::new()
    };
    let projector = PostgresProjector::new(panicking, store.clone());
    let committed = projector
        .commit(batch(Position::START, end, events.iter().collect(), vec![]))
        .await
        .expect("commit");
    let (index, failure) = committed.failed.expect("a failure");
    assert_eq!((index, failure.kind), (2, FailureKind::Panic));
    assert!(
        failure.error.to_string().contains("booking 2 panics"),
        "{}",
        failure.error
    );
    assert_eq!(committed.reached, Position(events[2].position.0 - 1));
    assert_eq!(applied(&store).await, positions(&events[..2]));

    // The unknown type is decoded before anything is applied; the events before it commit.
    let projector = PostgresProjector::new(Seats::new(), store.clone());
    let rest: Vec<&RecordedEvent> = events[2..].iter().collect();
    let committed = projector
        .commit(batch(committed.reached, end, rest, vec![]))
        .await
        .expect("commit");
    let (index, failure) = committed.failed.expect("a failure");
    assert_eq!((index, failure.kind), (1, FailureKind::Decode));
    assert!(
        failure.error.to_string().contains("Mystery"),
        "{}",
        failure.error
    );
    assert_eq!(committed.reached, Position(end.0 - 1));
    assert_eq!(applied(&store).await, positions(&events[..3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_discarded_and_a_retried_one_goes_with_its_event() {
    let store = fresh_store().await;
    let end = append(
        &store,
        "show-1",
        &[ShowEvent::Scheduled { capacity: 9 }, reserve(1), reserve(2)],
    )
    .await;
    let events = log(&store).await;
    let seats = Seats::failing_on(1);
    let projector = PostgresProjector::new(seats.clone(), store.clone());
    // Bookings 1 and 2 parked: the checkpoint moves past both with their dead letters.
    let (one, two) = (parked(&events[1]), parked(&events[2]));
    let committed = projector
        .commit(batch(
            Position::START,
            end,
            vec![&events[0]],
            vec![two.clone(), one.clone()],
        ))
        .await
        .expect("commit");
    assert_eq!((committed.reached, committed.failed.is_none()), (end, true));
    let letters = store.dead_letters(Seats::NAME).await.expect("dead letters");
    assert_eq!(letters, vec![one.clone(), two.clone()], "oldest first");

    // A retry that fails again changes nothing.
    let retry = Batch {
        retried: Some(&one.id),
        ..batch(end, end, vec![&events[1]], vec![])
    };
    let committed = projector.commit(retry).await.expect("commit");
    assert_eq!(committed.reached, end);
    assert_eq!(
        committed
            .failed
            .map(|(index, failure)| (index, failure.kind)),
        Some((0, FailureKind::Handler))
    );
    assert_eq!(
        store
            .dead_letters(Seats::NAME)
            .await
            .expect("dead letters")
            .len(),
        2
    );
    assert_eq!(applied(&store).await, positions(&events[..1]));

    // Fixed: the retry applies the event and removes its dead letter, the checkpoint stays.
    seats.fail_on.store(NONE, Ordering::SeqCst);
    let retry = Batch {
        retried: Some(&one.id),
        ..batch(end, end, vec![&events[1]], vec![])
    };
    let committed = projector.commit(retry).await.expect("commit");
    assert_eq!((committed.reached, committed.failed.is_none()), (end, true));
    assert_eq!(
        store.dead_letters(Seats::NAME).await.expect("dead letters"),
        vec![two.clone()]
    );
    assert_eq!(applied(&store).await, positions(&events[..2]));
    assert_eq!(
        store.checkpoint(Seats::NAME).await.expect("checkpoint"),
        end
    );

    // Discarded without handling.
    assert!(
        store
            .discard_dead_letter(Seats::NAME, &two.id)
            .await
            .expect("discard")
    );
    assert!(
        !store
            .discard_dead_letter(Seats::NAME, &two.id)
            .await
            .expect("discard")
    );
    assert!(
        store
            .dead_letters(Seats::NAME)
            .await
            .expect("dead letters")
            .is_empty()
    );
    assert_eq!(applied(&store).await, positions(&events[..2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_checkpoint_commits_nothing() {
    let store = fresh_store().await;
    let end = append(
        &store,
        "show-1",
        &[ShowEvent::Scheduled { capacity: 9 }, reserve(1)],
    )
    .await;
    let events = log(&store).await;
    let projector = PostgresProjector::new(Seats::new(), store.clone());

    let error = projector
        .commit(batch(Position(1), end, vec![&events[1]], vec![]))
        .await
        .expect_err("the checkpoint is at 0");
    assert!(
        matches!(
            error,
            CommitError::CheckpointMoved {
                processor: "seats",
                expected: Position(1),
                actual: Position(0)
            }
        ),
        "{error:?}"
    );
    assert!(applied(&store).await.is_empty());

    projector
        .commit(batch(Position::START, end, events.iter().collect(), vec![]))
        .await
        .expect("commit");
    // The same batch again (a deposed leader's): refused, never applied twice.
    let error = projector
        .commit(batch(
            Position::START,
            end,
            events.iter().collect(),
            vec![parked(&events[1])],
        ))
        .await
        .expect_err("the checkpoint moved");
    assert!(
        matches!(error, CommitError::CheckpointMoved { actual, .. } if actual == end),
        "{error:?}"
    );
    assert_eq!(applied(&store).await, positions(&events));
    assert!(
        store
            .dead_letters(Seats::NAME)
            .await
            .expect("dead letters")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_empties_the_model_drops_dead_letters_and_rewinds() {
    let store = fresh_store().await;
    let end = append(
        &store,
        "show-1",
        &[ShowEvent::Scheduled { capacity: 9 }, reserve(1)],
    )
    .await;
    let events = log(&store).await;
    let projector = PostgresProjector::new(Seats::new(), store.clone());
    projector
        .commit(batch(
            Position::START,
            end,
            vec![&events[0]],
            vec![parked(&events[1])],
        ))
        .await
        .expect("commit");
    assert_eq!(applied(&store).await.len(), 1);

    projector.reset().await.expect("reset");
    assert!(applied(&store).await.is_empty());
    assert_eq!(reserved(&store, "1").await, None);
    assert!(
        store
            .dead_letters(Seats::NAME)
            .await
            .expect("dead letters")
            .is_empty()
    );
    assert_eq!(
        store.checkpoint(Seats::NAME).await.expect("checkpoint"),
        Position::START
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_runner_parks_retries_discards_and_rebuilds() {
    let store = fresh_store().await;
    append(
        &store,
        "show-1",
        &[ShowEvent::Scheduled { capacity: 9 }, reserve(1), reserve(2)],
    )
    .await;
    append(&store, "show-bad", &[ShowEvent::Scheduled { capacity: 3 }]).await;
    let head = append(&store, "show-1", &[reserve(3)]).await;
    // The stored row of show-bad is corrupt: its readers get it as unreadable.
    store
        .pool()
        .get()
        .await
        .expect("connection")
        .execute(
            "UPDATE cqrs_events SET headers = '[1]' WHERE stream = 'show-bad'",
            &[],
        )
        .await
        .expect("corrupt a row");

    let seats = Seats::failing_on(2);
    let handle = PostgresProjector::new(seats.clone(), store.clone())
        .runner()
        .batch_size(2)
        .failure_policy(FailurePolicy::Skip)
        .spawn();
    handle.wait_for(head, TIMEOUT).await.expect("caught up");
    assert!(handle.is_leader());
    let letters = handle.dead_letters().await.expect("dead letters");
    let ids: Vec<&str> = letters.iter().map(|letter| letter.id.as_str()).collect();
    assert_eq!(
        ids,
        ["3", "4"],
        "booking 2 and the unreadable row: {letters:?}"
    );
    assert_eq!(letters[1].failure.kind, FailureKind::Decode);
    assert_eq!(handle.status().await.dead_letters, 2);
    assert_eq!(reserved(&store, "1").await, Some(2));

    seats.fail_on.store(NONE, Ordering::SeqCst);
    handle.retry_dead_letter("3").await.expect("retry");
    assert_eq!(reserved(&store, "1").await, Some(3));
    // The unreadable row fails again; it can only be discarded.
    handle
        .retry_dead_letter("4")
        .await
        .expect_err("still unreadable");
    assert!(handle.discard_dead_letter("4").await.expect("discard"));
    assert!(
        handle
            .dead_letters()
            .await
            .expect("dead letters")
            .is_empty()
    );

    handle.rebuild().await.expect("rebuild");
    handle.wait_for(head, TIMEOUT).await.expect("rebuilt");
    assert_eq!(reserved(&store, "1").await, Some(3));
    // Rebuilt: the unreadable row is parked again.
    let letters = handle.dead_letters().await.expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let status = handle.shutdown().await;
    assert_eq!(status.checkpoint, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_then_on_the_tables() {
    let store = fresh_store().await;
    let mut test = PostgresProjectionTest::new(Seats::new(), store);
    test.given("show-1", [ShowEvent::Scheduled { capacity: 9 }])
        .await
        .expect("given");
    let caught_up = test
        .given("show-1", [reserve(1), reserve(2)])
        .await
        .expect("given");
    assert_eq!(caught_up.events, 2);
    let row = test
        .query_one("SELECT reserved FROM seats WHERE show = $1", &[&"1"])
        .await
        .expect("query");
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(test.checkpoint().await.expect("checkpoint"), Position(3));

    // A failing event stops the projection right before it, and says why.
    let mut failing = PostgresProjectionTest::new(Seats::failing_on(7), test.store().clone());
    let error = failing
        .given("show-2", [reserve(6), reserve(7)])
        .await
        .expect_err("booking 7 fails");
    let ProjectionTestError::Failed(failure) = error else {
        panic!("{error}");
    };
    assert_eq!(failure.kind, FailureKind::Handler);
    assert!(failure.to_string().contains("booking 7"), "{failure}");

    let error = test
        .query("SELECT nothing FROM seats", &[])
        .await
        .expect_err("no such column");
    assert!(error.to_string().contains("42703"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serialization_failure_in_apply_is_the_databases_not_the_events() {
    let store = fresh_store().await;
    let end = append(
        &store,
        "show-1",
        &[ShowEvent::Scheduled { capacity: 9 }, reserve(1)],
    )
    .await;
    let events = log(&store).await;
    let conflicting = Seats {
        conflict_on: 1,
        ..Seats::new()
    };
    let projector = PostgresProjector::new(conflicting, store.clone());
    let error = projector
        .commit(batch(Position::START, end, events.iter().collect(), vec![]))
        .await
        .expect_err("a store error: the runner sends the batch again");
    let CommitError::Store(error) = error else {
        panic!("{error:?}");
    };
    assert!(error.to_string().contains("40001"), "{error}");
    assert!(applied(&store).await.is_empty());
    assert_eq!(
        store.checkpoint(Seats::NAME).await.expect("checkpoint"),
        Position::START
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_retry_never_moves_the_checkpoint() {
    let store = fresh_store().await;
    append(
        &store,
        "show-1",
        &[ShowEvent::Scheduled { capacity: 9 }, reserve(1), reserve(2)],
    )
    .await;
    let events = log(&store).await;
    let projector = PostgresProjector::new(Seats::failing_on(2), store.clone());
    let first = events[0].position;
    projector
        .commit(batch(Position::START, first, vec![&events[0]], vec![]))
        .await
        .expect("commit");
    // A dead letter of an event after the checkpoint (a checkpoint moved back by hand, say):
    // its failing retry must not move the checkpoint past the events in between.
    let letter = parked(&events[2]);
    let retry = Batch {
        retried: Some(&letter.id),
        ..batch(first, first, vec![&events[2]], vec![])
    };
    let committed = projector.commit(retry).await.expect("commit");
    assert_eq!(committed.reached, first);
    assert!(committed.failed.is_some());
    assert_eq!(
        store.checkpoint(Seats::NAME).await.expect("checkpoint"),
        first
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_or_a_full_disk_in_apply_is_the_databases_failure_not_the_events() {
    let store = fresh_store().await;
    let end = append(
        &store,
        "show-1",
        &[ShowEvent::Scheduled { capacity: 9 }, reserve(1), reserve(2)],
    )
    .await;
    let events = log(&store).await;
    let seats = Seats::new();
    seats.disconnect_on.store(1, Ordering::SeqCst);
    let projector = PostgresProjector::new(seats.clone(), store.clone());
    let error = projector
        .commit(batch(Position::START, end, events.iter().collect(), vec![]))
        .await
        .expect_err("a store error: the runner reconnects and sends the batch again");
    assert!(matches!(error, CommitError::Store(_)), "{error:?}");
    assert!(applied(&store).await.is_empty());

    // A server that ran out of disk: not the event's failure either.
    seats.disk_full_on.store(1, Ordering::SeqCst);
    let error = projector
        .commit(batch(Position::START, end, events.iter().collect(), vec![]))
        .await
        .expect_err("a store error");
    assert!(
        matches!(&error, CommitError::Store(error) if error.to_string().contains("53100")),
        "{error:?}"
    );
    assert!(applied(&store).await.is_empty());
    seats.disk_full_on.store(NONE, Ordering::SeqCst);

    // Through the runner, under Skip: nothing is parked, every event applied once.
    seats.disconnect_on.store(2, Ordering::SeqCst);
    let handle = PostgresProjector::new(seats, store.clone())
        .runner()
        .failure_policy(FailurePolicy::Skip)
        .spawn();
    handle
        .wait_for(end, Duration::from_secs(30))
        .await
        .expect("caught up");
    assert!(
        handle
            .dead_letters()
            .await
            .expect("dead letters")
            .is_empty()
    );
    assert_eq!(applied(&store).await, positions(&events));
    assert_eq!(reserved(&store, "1").await, Some(2));
    handle.shutdown().await;
}
