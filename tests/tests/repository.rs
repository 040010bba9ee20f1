//! The repository over the in-memory store: decide, append, retry on conflict, idempotency,
//! snapshots, the cache, temporal loads, metadata, and bad stored data.

use cqrs_core::event::{Metadata, NewEvent, Payload};
use cqrs_core::store::Snapshot;
use cqrs_core::{
    CommandId, CommandMetadata, EventId, EventStore, ExecuteError, ExpectedVersion, Position,
    Repository, RetryPolicy, StoreError, StreamId, Version,
};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowError, ShowEvent};
use cqrs_memstore::MemStore;
use cqrs_tests::interposed::Interposed;

fn reserve(booking: u64, seats: u32) -> ShowCommand {
    ShowCommand::ReserveSeats {
        booking: BookingId(booking),
        seats,
    }
}

/// Schedules show `id` with `capacity` seats through `shows`.
async fn schedule<S: EventStore>(shows: &Repository<Show, S>, id: &str, capacity: u32) {
    shows
        .execute(id, ShowCommand::Schedule { capacity })
        .await
        .expect("schedules");
}

fn stream(id: &str) -> StreamId {
    StreamId::for_aggregate("show", id).expect("valid stream id")
}

fn command(id: &str) -> CommandId {
    CommandId::new(id).expect("valid command id")
}

/// Another writer's reservation, with an optional command id.
fn competing(booking: u64, seats: u32, command_id: Option<&str>) -> Option<NewEvent> {
    let metadata = Metadata {
        command_id: command_id.map(command),
        ..Metadata::default()
    };
    let event = ShowEvent::SeatsReserved {
        booking: BookingId(booking),
        seats,
    };
    Some(NewEvent::encode(&event, metadata).expect("encodes"))
}

#[tokio::test]
async fn execute_reports_version_events_position_and_attempts() {
    let shows = Repository::<Show, _>::new(MemStore::new());
    let scheduled = shows
        .execute("a", ShowCommand::Schedule { capacity: 10 })
        .await
        .expect("schedules");
    assert_eq!(scheduled.version, Version(1));
    assert_eq!(
        scheduled.events,
        vec![ShowEvent::Scheduled { capacity: 10 }]
    );
    assert_eq!(scheduled.attempts, 1);
    assert_eq!(scheduled.position, Some(Position(1)));
    assert!(!scheduled.deduplicated);

    let reserved = shows.execute("a", reserve(7, 3)).await.expect("reserves");
    assert_eq!(reserved.version, Version(2));
    assert_eq!(
        reserved.events,
        vec![ShowEvent::SeatsReserved {
            booking: BookingId(7),
            seats: 3
        }]
    );
    assert_eq!(reserved.stream, stream("a"));
    let loaded = shows.load("a").await.expect("loads");
    assert_eq!((loaded.version, loaded.state.reserved()), (Version(2), 3));
}

#[tokio::test]
async fn a_no_op_command_writes_nothing() {
    let store = MemStore::new();
    let shows = Repository::<Show, _>::new(store.clone());
    schedule(&shows, "a", 10).await;
    shows.execute("a", reserve(1, 2)).await.expect("reserves");
    let again = shows.execute("a", reserve(1, 2)).await.expect("no-op");
    assert!(again.events.is_empty());
    assert_eq!((again.version, again.position), (Version(2), None));
    assert_eq!(store.head().await.expect("head"), Position(2));
}

#[tokio::test]
async fn domain_errors_return_at_once_and_write_nothing() {
    let store = Interposed::new(|_| None);
    let shows = Repository::<Show, _>::new(store.clone());
    let error = shows
        .execute("a", reserve(1, 1))
        .await
        .expect_err("not scheduled");
    assert!(
        matches!(error, ExecuteError::Domain(ShowError::NotScheduled)),
        "{error:?}"
    );
    assert_eq!(store.appends(), 0, "a refused command reached the store");
}

#[tokio::test]
async fn a_conflict_is_decided_again_on_fresh_state() {
    // Another writer takes 2 of the 3 seats just before our first append.
    let store = Interposed::new(|call| {
        if call == 2 {
            competing(99, 2, None)
        } else {
            None
        }
    });
    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .build();
    schedule(&shows, "a", 3).await;
    let error = shows
        .execute("a", reserve(1, 2))
        .await
        .expect_err("sold out on fresh state");
    assert_eq!(
        error.domain(),
        Some(&ShowError::SoldOut {
            requested: 2,
            available: 1
        })
    );
    let loaded = shows.load("a").await.expect("loads");
    assert_eq!(loaded.state.reserved(), 2, "the stale decision was written");
}

/// The decided events are applied to the state before they are appended (so that an `apply`
/// that panics writes nothing); after a conflict that state holds events the store refused, so
/// the retry decides on a state loaded afresh (from the latest snapshot, when there is one).
#[tokio::test]
async fn a_retry_decides_on_a_freshly_loaded_state() {
    let store = Interposed::new(|call| {
        if call == 3 {
            competing(99, 1, None)
        } else {
            None
        }
    });
    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .build();
    schedule(&shows, "a", 10).await;
    shows.execute("a", reserve(1, 1)).await.expect("reserves");
    store.clear_reads();

    let outcome = shows
        .execute("a", reserve(2, 1))
        .await
        .expect("reserves after a retry");
    assert_eq!(outcome.attempts, 2);
    assert_eq!(outcome.version, Version(4));
    // One load for the first attempt, one for the retry.
    assert_eq!(store.reads_from(), vec![Version(1), Version(1)]);
    assert_eq!(shows.load("a").await.expect("loads").state.reserved(), 3);
}

/// Once a cached stream met a conflict, the repository keeps a copy of the state while it appends
/// (the aggregate derives `Clone`), so the next conflict only reads the events it missed.
#[tokio::test]
async fn a_contended_cached_stream_catches_up_instead_of_loading_again() {
    let store = Interposed::new(|call| match call {
        3 => competing(98, 1, None),
        5 => competing(99, 1, None),
        _ => None,
    });
    let shows = Repository::<Show, _>::new(store.clone());
    schedule(&shows, "a", 10).await;
    shows.execute("a", reserve(1, 1)).await.expect("reserves");
    store.clear_reads();

    let first = shows.execute("a", reserve(2, 1)).await.expect("reserves");
    let second = shows.execute("a", reserve(3, 1)).await.expect("reserves");
    assert_eq!((first.attempts, second.attempts), (2, 2));
    assert_eq!(second.version, Version(6));
    // The first conflict threw the cached state away and loaded the stream from the start; the
    // second went back to the copy and read only version 5, the other writer's.
    assert_eq!(store.reads_from(), vec![Version(1), Version(5)]);
    let loaded = shows.load("a").await.expect("loads");
    assert_eq!(loaded.state.reserved(), 5);
}

#[tokio::test]
async fn retries_are_bounded_and_the_conflict_names_the_attempts() {
    let store = Interposed::new(|call| {
        if call > 1 {
            competing(1000 + u64::from(call), 1, None)
        } else {
            None
        }
    });
    let retry = RetryPolicy {
        max_attempts: 4,
        ..RetryPolicy::default()
    };
    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .retry(retry)
        .build();
    schedule(&shows, "a", 100).await;
    let error = shows
        .execute("a", reserve(1, 1))
        .await
        .expect_err("always conflicts");
    match error {
        ExecuteError::Conflict {
            stream: conflicted,
            attempts,
            expected,
            actual,
            ..
        } => {
            assert_eq!(attempts, 4);
            assert_eq!(conflicted, stream("a"));
            // The last attempt decided on version 4 (schedule + 3 competing events) and met 5.
            assert_eq!((expected, actual), (Version(4), Version(5)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // 1 schedule + 4 attempts reached the store.
    assert_eq!(store.appends(), 5);
    assert!(
        !shows
            .load("a")
            .await
            .expect("loads")
            .state
            .bookings()
            .contains_key(&BookingId(1))
    );
}

#[tokio::test]
async fn a_command_id_is_applied_once() {
    let store = MemStore::new();
    let shows = Repository::<Show, _>::new(store.clone());
    schedule(&shows, "a", 10).await;
    let first = shows
        .execute_with(
            "a",
            reserve(1, 2),
            CommandMetadata::with_command_id(command("request-1")),
        )
        .await
        .expect("reserves");
    // Same command id, even with other fields: the earlier outcome, nothing written.
    let second = shows
        .execute_with(
            "a",
            reserve(2, 5),
            CommandMetadata::with_command_id(command("request-1")),
        )
        .await
        .expect("deduplicated");
    assert!(second.deduplicated);
    assert_eq!(
        (second.version, second.position),
        (first.version, first.position)
    );
    assert_eq!(second.events, first.events);
    assert_eq!(store.head().await.expect("head"), Position(2));
    // The id belongs to the stream: another show takes it independently.
    schedule(&shows, "b", 10).await;
    let other = shows
        .execute_with(
            "b",
            reserve(1, 2),
            CommandMetadata::with_command_id(command("request-1")),
        )
        .await
        .expect("reserves");
    assert!(!other.deduplicated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_id_is_applied_once_under_concurrency() {
    for cache in [0, 16] {
        let store = MemStore::new();
        let shows = Repository::<Show, _>::builder(store.clone())
            .cache(cache)
            .build();
        schedule(&shows, "a", 100).await;
        let tasks: Vec<_> = (0..8)
            .map(|task| {
                let shows = shows.clone();
                tokio::spawn(async move {
                    let metadata = CommandMetadata::with_command_id(command("same-request"));
                    shows.execute_with("a", reserve(task, 1), metadata).await
                })
            })
            .collect();
        let mut versions = Vec::new();
        for task in tasks {
            let outcome = task.await.expect("joins").expect("executes");
            versions.push(outcome.version);
        }
        assert!(
            versions.iter().all(|version| *version == Version(2)),
            "{versions:?}"
        );
        let loaded = shows.load("a").await.expect("loads");
        assert_eq!(
            (loaded.version, loaded.state.reserved()),
            (Version(2), 1),
            "cache {cache}"
        );
    }
}

#[tokio::test]
async fn a_duplicate_found_at_append_or_after_a_retry_returns_the_earlier_outcome() {
    // Just before our append (call 2), a redelivery of the same command wins the race.
    let store = Interposed::new(|call| {
        if call == 2 {
            competing(1, 2, Some("request-1"))
        } else {
            None
        }
    });
    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .build();
    schedule(&shows, "a", 10).await;
    let outcome = shows
        .execute_with(
            "a",
            reserve(1, 2),
            CommandMetadata::with_command_id(command("request-1")),
        )
        .await
        .expect("deduplicated");
    assert!(outcome.deduplicated);
    assert_eq!((outcome.version, outcome.attempts), (Version(2), 1));
    assert_eq!(
        outcome.events,
        vec![ShowEvent::SeatsReserved {
            booking: BookingId(1),
            seats: 2
        }]
    );
    assert_eq!(store.head().await.expect("head"), Position(2));

    // A plain conflict first (call 2), then the redelivery wins before the retry (call 3).
    let store = Interposed::new(|call| match call {
        2 => competing(50, 1, None),
        3 => competing(1, 2, Some("request-1")),
        _ => None,
    });
    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .build();
    schedule(&shows, "a", 10).await;
    let outcome = shows
        .execute_with(
            "a",
            reserve(1, 2),
            CommandMetadata::with_command_id(command("request-1")),
        )
        .await
        .expect("deduplicated");
    assert!(outcome.deduplicated);
    assert_eq!((outcome.version, outcome.attempts), (Version(3), 2));
    let loaded = shows.load("a").await.expect("loads");
    assert_eq!((loaded.version, loaded.state.reserved()), (Version(3), 3));
}

#[tokio::test]
async fn events_carry_the_command_metadata() {
    let store = MemStore::new();
    let shows = Repository::<Show, _>::new(store.clone());
    let correlation = uuid::Uuid::from_u128(42);
    let causation = uuid::Uuid::from_u128(43);
    let mut metadata = CommandMetadata::with_command_id(command("cmd-1"));
    metadata.correlation_id = Some(correlation);
    metadata.causation_id = Some(causation);
    metadata.headers.insert("user".into(), "alice".into());
    shows
        .execute_with("a", ShowCommand::Schedule { capacity: 1 }, metadata)
        .await
        .expect("schedules");
    let shows_b = shows.clone();
    schedule(&shows_b, "b", 1).await;

    let events = store.read_all(Position::START, 10).await.expect("reads");
    let first = &events[0].metadata;
    assert_eq!(first.correlation_id, Some(correlation));
    assert_eq!(first.causation_id, Some(causation));
    assert_eq!(first.command_id, Some(command("cmd-1")));
    assert_eq!(first.headers.get("user").map(String::as_str), Some("alice"));
    assert_eq!(events[0].event_type, "Scheduled");
    // Without a correlation id, a fresh one is made.
    assert!(events[1].metadata.correlation_id.is_some());
    assert_ne!(events[1].metadata.correlation_id, Some(correlation));
}

#[tokio::test]
async fn snapshots_are_taken_and_loads_start_from_them() {
    let store = Interposed::new(|_| None);
    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .snapshot_every(10)
        .build();
    schedule(&shows, "a", 100).await;
    for booking in 0..24 {
        let outcome = shows
            .execute("a", reserve(booking, 1))
            .await
            .expect("reserves");
        assert!(outcome.snapshot_error.is_none());
    }
    let snapshot = store
        .load_snapshot(&stream("a"), 1)
        .await
        .expect("loads")
        .expect("a snapshot");
    assert_eq!(snapshot.version, Version(20));

    store.clear_reads();
    let loaded = shows.load("a").await.expect("loads");
    assert_eq!((loaded.version, loaded.state.reserved()), (Version(25), 24));
    assert_eq!(
        store.reads_from(),
        vec![Version(21)],
        "the load did not start after the snapshot"
    );
}

#[tokio::test]
async fn a_snapshot_of_another_schema_or_corrupt_is_ignored() {
    let store = MemStore::new();
    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .snapshot_every(1000)
        .build();
    schedule(&shows, "a", 10).await;
    shows.execute("a", reserve(1, 4)).await.expect("reserves");

    let garbage = Snapshot {
        version: Version(2),
        schema_version: 7,
        payload: b"{\"not\":\"a show\"}".to_vec(),
    };
    store
        .save_snapshot(&stream("a"), garbage)
        .await
        .expect("saves");
    let loaded = shows.load("a").await.expect("loads");
    assert_eq!((loaded.version, loaded.state.reserved()), (Version(2), 4));

    let corrupt = Snapshot {
        version: Version(2),
        schema_version: 1,
        payload: b"\xff\xfe".to_vec(),
    };
    store
        .save_snapshot(&stream("a"), corrupt)
        .await
        .expect("saves");
    let loaded = shows.load("a").await.expect("loads");
    assert_eq!((loaded.version, loaded.state.reserved()), (Version(2), 4));
}

#[tokio::test]
async fn a_stale_cache_is_caught_up_before_deciding() {
    // Two nodes, each with its own cache, over one store.
    let store = MemStore::new();
    let node_a = Repository::<Show, _>::new(store.clone());
    let node_b = Repository::<Show, _>::new(store.clone());
    schedule(&node_a, "a", 3).await;
    node_a
        .execute("a", reserve(1, 1))
        .await
        .expect("caches the show on node a");
    node_b
        .execute("a", reserve(2, 2))
        .await
        .expect("node b takes the last seats");
    let error = node_a
        .execute("a", reserve(3, 1))
        .await
        .expect_err("node a must see b's write");
    assert_eq!(
        error.domain(),
        Some(&ShowError::SoldOut {
            requested: 1,
            available: 0
        })
    );
    let outcome = node_a
        .execute(
            "a",
            ShowCommand::CancelReservation {
                booking: BookingId(2),
            },
        )
        .await;
    assert_eq!(outcome.expect("cancels").version, Version(4));
}

#[tokio::test]
async fn a_refusal_or_no_op_on_a_stale_cache_is_confirmed_on_fresh_state() {
    let store = MemStore::new();
    let node_a = Repository::<Show, _>::new(store.clone());
    let node_b = Repository::<Show, _>::new(store.clone());
    schedule(&node_a, "a", 2).await;
    node_a
        .execute("a", reserve(1, 2))
        .await
        .expect("node a caches a full show");
    node_b
        .execute(
            "a",
            ShowCommand::CancelReservation {
                booking: BookingId(1),
            },
        )
        .await
        .expect("cancels");

    // Node a's cache says sold out, and that booking 1 holds seats; both are stale.
    let outcome = node_a
        .execute("a", reserve(2, 1))
        .await
        .expect("seats were freed on node b");
    assert_eq!((outcome.version, outcome.attempts), (Version(4), 1));
    let outcome = node_a
        .execute("a", reserve(1, 1))
        .await
        .expect("booking 1 was cancelled on node b");
    assert_eq!(
        outcome.events,
        vec![ShowEvent::SeatsReserved {
            booking: BookingId(1),
            seats: 1
        }]
    );
    assert_eq!(node_b.load("a").await.expect("loads").state.reserved(), 2);
}

#[tokio::test]
async fn load_at_gives_the_state_as_of_a_past_version() {
    let shows = Repository::<Show, _>::builder(MemStore::new())
        .snapshot_every(2)
        .build();
    schedule(&shows, "a", 10).await;
    for booking in 1..=4 {
        shows
            .execute("a", reserve(booking, 1))
            .await
            .expect("reserves");
    }
    shows
        .execute(
            "a",
            ShowCommand::CancelReservation {
                booking: BookingId(2),
            },
        )
        .await
        .expect("cancels");
    let at_3 = shows.load_at("a", Version(3)).await.expect("loads");
    assert_eq!((at_3.version, at_3.state.reserved()), (Version(3), 2));
    assert!(at_3.state.bookings().contains_key(&BookingId(2)));
    let at_1 = shows.load_at("a", Version(1)).await.expect("loads");
    assert_eq!(
        (at_1.version, at_1.state.reserved(), at_1.state.capacity()),
        (Version(1), 0, 10)
    );
    let now = shows.load_at("a", Version(100)).await.expect("loads");
    assert_eq!((now.version, now.state.reserved()), (Version(6), 3));
    assert!(!now.state.bookings().contains_key(&BookingId(2)));
}

#[tokio::test]
async fn a_corrupt_or_unknown_stored_event_is_a_typed_error() {
    for (event_type, payload) in [
        ("SeatsReserved", "{\"seats\":\"many\"}"),
        ("SeatsTeleported", "{}"),
    ] {
        let store = MemStore::new();
        let shows = Repository::<Show, _>::builder(store.clone())
            .cache(0)
            .build();
        schedule(&shows, "a", 10).await;
        let bad = NewEvent {
            event_id: EventId::new(),
            event_type: event_type.into(),
            schema_version: 1,
            payload: Payload::from(payload),
            metadata: Metadata::default(),
        };
        store
            .append(&stream("a"), ExpectedVersion::Any, vec![bad])
            .await
            .expect("appends");
        let error = shows
            .execute("a", reserve(1, 1))
            .await
            .expect_err("cannot decode");
        match error {
            ExecuteError::Store(StoreError::Decode {
                stream: at,
                version,
                event_type: named,
                ..
            }) => {
                assert_eq!(
                    (at, version, named.as_str()),
                    (stream("a"), Version(2), event_type)
                );
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
        assert!(shows.load("a").await.is_err());
        assert_eq!(
            store.head().await.expect("head"),
            Position(2),
            "something was written"
        );
    }
}

#[tokio::test]
async fn a_store_failure_loses_nothing() {
    let store = MemStore::new();
    let shows = Repository::<Show, _>::new(store.clone());
    schedule(&shows, "a", 10).await;
    store.fail_next_appends(1);
    let error = shows
        .execute("a", reserve(1, 1))
        .await
        .expect_err("the store fails");
    assert!(
        matches!(error, ExecuteError::Store(StoreError::Backend(_))),
        "{error:?}"
    );
    assert_eq!(store.head().await.expect("head"), Position(1));
    let outcome = shows
        .execute("a", reserve(1, 1))
        .await
        .expect("works again");
    assert_eq!(outcome.version, Version(2));
}

#[tokio::test]
async fn a_bad_aggregate_id_is_a_typed_error() {
    let shows = Repository::<Show, _>::new(MemStore::new());
    let error = shows
        .execute("a\nb", ShowCommand::Schedule { capacity: 1 })
        .await
        .expect_err("refused");
    assert!(matches!(error, ExecuteError::InvalidStream(_)), "{error:?}");
    let long = "x".repeat(cqrs_core::MAX_STREAM_ID_LEN);
    let error = shows
        .execute(&long, ShowCommand::Schedule { capacity: 1 })
        .await
        .expect_err("refused");
    assert!(matches!(error, ExecuteError::InvalidStream(_)), "{error:?}");
}

mod fragile {
    //! An aggregate whose `apply` panics on one event: what a bug in `apply` costs.

    use cqrs_core::prelude::*;
    use cqrs_core::{
        EventId, EventStore, ExecuteError, ExpectedVersion, LoadError, Metadata, NewEvent, Position,
    };
    use cqrs_memstore::MemStore;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
    pub(crate) enum FragileEvent {
        Fine,
        Poison,
    }

    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("never")]
    pub(crate) struct Never;

    #[derive(Debug, Default, Clone, Aggregate)]
    #[aggregate(name = "fragile", event = FragileEvent, error = Never)]
    pub(crate) struct Fragile {
        fine: u32,
    }

    #[command_handler]
    impl Fragile {
        pub(crate) fn touch(&self, poison: bool) -> FragileEvent {
            if poison {
                FragileEvent::Poison
            } else {
                FragileEvent::Fine
            }
        }
    }

    impl Fragile {
        fn apply(&mut self, event: FragileEvent) {
            match event {
                FragileEvent::Fine => self.fine += 1,
                FragileEvent::Poison => panic!("a bug in apply"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_decision_whose_apply_panics_writes_nothing() {
        let store = MemStore::new();
        let fragile = Repository::<Fragile, _>::new(store.clone());
        fragile
            .execute("a", FragileCommand::Touch { poison: false })
            .await
            .expect("fine");
        let error = fragile
            .execute("a", FragileCommand::Touch { poison: true })
            .await
            .expect_err("apply panics");
        match &error {
            ExecuteError::Apply(panicked) => {
                assert_eq!(panicked.stream.as_str(), "fragile-a");
                assert_eq!(panicked.version, Version(2));
                assert_eq!(panicked.event_type, "Poison");
                assert!(!panicked.stored);
                assert_eq!(panicked.message, "a bug in apply");
            }
            other => panic!("expected an apply error, got {other:?}"),
        }
        let message = error.to_string();
        assert!(message.contains("nothing written"), "{message}");
        // Nothing was written, and the aggregate still loads and takes commands (the cached
        // state the panic left half-changed was thrown away).
        assert_eq!(store.head().await.expect("head"), Position(1));
        assert_eq!(fragile.load("a").await.expect("loads").state.fine, 1);
        let outcome = fragile
            .execute("a", FragileCommand::Touch { poison: false })
            .await
            .expect("fine again");
        assert_eq!(outcome.version, Version(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stored_event_whose_apply_panics_is_a_typed_load_error() {
        let store = MemStore::new();
        let stream = StreamId::for_aggregate("fragile", "b").expect("valid");
        let poison = NewEvent::encode(&FragileEvent::Poison, Metadata::default()).expect("encode");
        let fine = NewEvent {
            event_id: EventId::new(),
            ..NewEvent::encode(&FragileEvent::Fine, Metadata::default()).expect("encode")
        };
        store
            .append(&stream, ExpectedVersion::NoStream, vec![fine, poison])
            .await
            .expect("written by someone else");
        let fragile = Repository::<Fragile, _>::new(store.clone());
        match fragile.load("b").await {
            Err(LoadError::Apply(panicked)) => {
                assert_eq!((panicked.version, panicked.stored), (Version(2), true));
            }
            other => panic!("expected an apply error, got {other:?}"),
        }
        let executed = fragile
            .execute("b", FragileCommand::Touch { poison: false })
            .await;
        assert!(
            matches!(executed, Err(ExecuteError::Apply(_))),
            "{executed:?}"
        );
        assert_eq!(store.head().await.expect("head"), Position(2));
    }
}
