//! Schema evolution: stored events of old versions and former type names load through the
//! current code, undecodable events are typed errors on every read path, and a snapshot of another
//! schema version is ignored and replaced.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use cqrs_core::event::{Metadata, NewEvent, Payload};
use cqrs_core::processor::{
    CatchUpError, FailureKind, FailurePolicy, Processor as _, ProcessorState, ProcessorStore,
    WaitError,
};
use cqrs_core::projection::{EventContext, MemoryReadModel, Projection, Projector};
use cqrs_core::saga::{CommandBus, ManualClock, MemorySagaStore, SagaProcessor};
use cqrs_core::store::Snapshot;
use cqrs_core::{
    DecodeError, DomainEvent, EventId, EventStore, ExecuteError, ExpectedVersion, LoadError,
    Position, Repository, StoreError, StreamId, Version,
};
use cqrs_examples::booking::{Booking, BookingCommand, BookingStatus, Checkout};
use cqrs_examples::payment::{Card, Payment};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowEvent};
use cqrs_memstore::MemStore;
use serde::Deserialize;

const WAIT: Duration = Duration::from_secs(10);

/// One stored event of a fixture file: what an older release of the code wrote.
#[derive(Deserialize)]
struct StoredEvent {
    event_type: String,
    schema_version: u32,
    payload: serde_json::Value,
}

fn stored(event_type: &str, schema_version: u32, payload: &str) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: event_type.to_owned().into(),
        schema_version,
        payload: Payload::from(payload),
        metadata: Metadata::default(),
    }
}

fn stream(id: &str) -> StreamId {
    StreamId::for_aggregate("show", id).expect("valid stream id")
}

/// A store holding the checked-in history of show `old`, as an older release wrote it.
async fn store_with_old_history() -> MemStore {
    let fixture = include_str!("../fixtures/show-history-v1.json");
    let events: Vec<StoredEvent> = serde_json::from_str(fixture).expect("fixture parses");
    let store = MemStore::new();
    let new_events = events
        .iter()
        .map(|event| {
            let payload = serde_json::to_string(&event.payload).expect("encodes");
            stored(&event.event_type, event.schema_version, &payload)
        })
        .collect();
    store
        .append(&stream("old"), ExpectedVersion::NoStream, new_events)
        .await
        .expect("appends");
    store
}

#[tokio::test]
async fn an_old_history_loads_into_the_current_aggregate() {
    let store = store_with_old_history().await;
    let shows = Repository::<Show, _>::new(store.clone());
    let show = shows.load("old").await.expect("loads");
    assert_eq!(show.version, Version(5));
    assert_eq!(show.state.capacity(), 10);
    assert_eq!(show.state.reserved(), 4);
    let mut bookings: Vec<_> = show
        .state
        .bookings()
        .iter()
        .map(|(b, s)| (b.0, *s))
        .collect();
    bookings.sort_unstable();
    assert_eq!(bookings, vec![(8, 3), (9, 1)]);

    // And the current code keeps deciding on it.
    let cancelled = shows
        .execute(
            "old",
            ShowCommand::CancelReservation {
                booking: BookingId(8),
            },
        )
        .await
        .expect("cancels an upcast reservation");
    assert_eq!(cancelled.version, Version(6));
}

#[tokio::test]
async fn read_all_consumers_decode_old_events_through_the_upcasters() {
    let store = store_with_old_history().await;
    let events = store.read_all(Position::START, 100).await.expect("reads");
    let decoded: Vec<ShowEvent> = events
        .iter()
        .map(|event| event.decode().expect("decodes"))
        .collect();
    assert_eq!(
        decoded,
        vec![
            ShowEvent::Scheduled { capacity: 10 },
            ShowEvent::SeatsReserved {
                booking: BookingId(7),
                seats: 2
            },
            ShowEvent::SeatsReserved {
                booking: BookingId(8),
                seats: 3
            },
            ShowEvent::ReservationCancelled {
                booking: BookingId(7),
                seats: 2
            },
            ShowEvent::SeatsReserved {
                booking: BookingId(9),
                seats: 1
            },
        ]
    );
}

#[tokio::test]
async fn new_events_are_written_with_the_current_name_and_version() {
    let store = store_with_old_history().await;
    let shows = Repository::<Show, _>::new(store.clone());
    let command = ShowCommand::ReserveSeats {
        booking: BookingId(20),
        seats: 1,
    };
    shows.execute("old", command).await.expect("reserves");
    let written = store
        .read_stream(&stream("old"), Version(6), 1)
        .await
        .expect("reads");
    assert_eq!(written[0].event_type, "SeatsReserved");
    assert_eq!(written[0].schema_version, 2);
    assert_eq!(
        written[0].payload.as_bytes(),
        br#"{"booking":20,"seats":1}"#
    );
    let current = ShowEvent::EVENT_TYPES
        .iter()
        .find(|info| info.name == "SeatsReserved");
    assert_eq!(current.map(|info| info.version), Some(2));
}

#[tokio::test]
async fn undecodable_events_are_typed_errors_on_every_read_path() {
    type Check = fn(&DecodeError) -> bool;
    let cases: [(&str, u32, &str, Check); 4] = [
        ("SeatsTeleported", 1, r#"{"seats":1}"#, |e| {
            matches!(e, DecodeError::UnknownEventType { .. })
        }),
        ("SeatsReserved", 2, r#"{"booking":"x","seats":1}"#, |e| {
            matches!(e, DecodeError::InvalidPayload(_))
        }),
        ("SeatsBooked", 1, r#"{"seats":1}"#, |e| {
            matches!(
                e,
                DecodeError::Upcast {
                    from_version: 1,
                    ..
                }
            )
        }),
        ("SeatsReserved", 3, r#"{"booking":1,"seats":1}"#, |e| {
            matches!(
                e,
                DecodeError::UnsupportedSchemaVersion {
                    found: 3,
                    current: 2
                }
            )
        }),
    ];
    for (event_type, schema_version, payload, is_expected) in cases {
        let store = MemStore::new();
        let shows = Repository::<Show, _>::builder(store.clone())
            .cache(0)
            .build();
        shows
            .execute("bad", ShowCommand::Schedule { capacity: 5 })
            .await
            .expect("schedules");
        let bad = stored(event_type, schema_version, payload);
        store
            .append(
                &stream("bad"),
                ExpectedVersion::Exact(Version(1)),
                vec![bad],
            )
            .await
            .expect("appends");

        let check = |error: &StoreError| match error {
            StoreError::Decode {
                stream: at,
                version,
                event_type: named,
                source,
            } => {
                assert_eq!(
                    (at, *version, named.as_str()),
                    (&stream("bad"), Version(2), event_type)
                );
                assert!(
                    is_expected(source),
                    "{event_type} v{schema_version}: {source:?}"
                );
            }
            other => {
                panic!("{event_type} v{schema_version}: expected a decode error, got {other:?}")
            }
        };
        // Aggregate load.
        match shows.load("bad").await {
            Err(LoadError::Store(error)) => check(&error),
            other => panic!("load: expected a decode error, got {other:?}"),
        }
        // Command execution.
        match shows
            .execute(
                "bad",
                ShowCommand::CancelReservation {
                    booking: BookingId(1),
                },
            )
            .await
        {
            Err(ExecuteError::Store(error)) => check(&error),
            other => panic!("execute: expected a decode error, got {other:?}"),
        }
        // A read_all consumer.
        let events = store.read_all(Position::START, 10).await.expect("reads");
        check(&events[1].decode::<ShowEvent>().expect_err("undecodable"));
    }
}

#[tokio::test]
async fn a_snapshot_of_another_schema_version_is_replaced_by_a_fresh_one() {
    let store = store_with_old_history().await;
    let stale = Snapshot {
        version: Version(3),
        schema_version: 99,
        payload: b"{}".to_vec(),
    };
    store
        .save_snapshot(&stream("old"), stale)
        .await
        .expect("saves");

    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .snapshot_every(4)
        .build();
    let outcome = shows
        .execute(
            "old",
            ShowCommand::ReserveSeats {
                booking: BookingId(30),
                seats: 1,
            },
        )
        .await
        .expect("reserves on a state rebuilt from events");
    assert!(outcome.snapshot_error.is_none());
    let fresh = store
        .load_snapshot(&stream("old"), 1)
        .await
        .expect("loads")
        .expect("a fresh snapshot");
    assert_eq!(
        fresh.version,
        Version(6),
        "the policy should snapshot a rebuilt state at once"
    );
    let show = shows
        .load("old")
        .await
        .expect("loads from the fresh snapshot");
    assert_eq!((show.version, show.state.reserved()), (Version(6), 5));
}

/// Seats per booking, fed by the show events.
struct SeatsPerBooking;

impl Projection for SeatsPerBooking {
    const NAME: &'static str = "seats_per_booking";
    const AGGREGATES: &'static [&'static str] = &["show"];
    type Event = ShowEvent;
    type ReadModel = BTreeMap<u64, u32>;
    type Error = Infallible;

    fn apply(
        &self,
        bookings: &mut Self::ReadModel,
        event: ShowEvent,
        _: &EventContext<'_>,
    ) -> Result<(), Infallible> {
        match event {
            ShowEvent::Scheduled { .. } => {}
            ShowEvent::SeatsReserved { booking, seats } => {
                bookings.insert(booking.0, seats);
            }
            ShowEvent::ReservationCancelled { booking, .. } => {
                bookings.remove(&booking.0);
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn an_old_history_feeds_a_projection_through_the_upcasters() {
    let store = store_with_old_history().await;
    let model = MemoryReadModel::new();
    let handle = Projector::new(SeatsPerBooking, store.clone(), model.clone())
        .runner()
        .spawn();
    handle
        .wait_for(Position(5), WAIT)
        .await
        .expect("catches up");
    assert_eq!(model.read(Clone::clone), BTreeMap::from([(8, 3), (9, 1)]));
    handle.shutdown().await;
}

#[tokio::test]
async fn an_undecodable_event_goes_through_the_projection_failure_policy() {
    let store = store_with_old_history().await;
    let bad = stored("SeatsBooked", 1, r#"{"seats":4}"#);
    store
        .append(
            &stream("old"),
            ExpectedVersion::Exact(Version(5)),
            vec![bad],
        )
        .await
        .expect("appends");
    let after = stored("SeatsReserved", 2, r#"{"booking":10,"seats":2}"#);
    store
        .append(
            &stream("old"),
            ExpectedVersion::Exact(Version(6)),
            vec![after],
        )
        .await
        .expect("appends");

    // Stop: the projection halts right before the bad event, with the error visible.
    let stopping = MemoryReadModel::new();
    let handle = Projector::new(SeatsPerBooking, store.clone(), stopping.clone())
        .runner()
        .failure_policy(FailurePolicy::Stop)
        .spawn();
    let error = handle
        .wait_for(Position(7), WAIT)
        .await
        .expect_err("stops at position 6");
    assert!(
        matches!(
            error,
            WaitError::Stopped {
                reached: Position(5),
                ..
            }
        ),
        "{error:?}"
    );
    let status = handle.status().await;
    assert_eq!(status.state, ProcessorState::Failed);
    let failure = status.last_error.expect("the failure is visible");
    assert_eq!(
        failure.event.as_ref().map(|event| event.position),
        Some(Position(6))
    );
    assert_eq!(failure.kind, FailureKind::Decode);
    let message = failure.error;
    assert!(
        message.contains("upcasting from schema version 1 failed"),
        "{message}"
    );
    handle.shutdown().await;

    // Skip: the projection goes on, and the skipped event is parked with its error.
    let skipping = MemoryReadModel::new();
    let handle = Projector::new(SeatsPerBooking, store.clone(), skipping.clone())
        .runner()
        .failure_policy(FailurePolicy::Skip)
        .spawn();
    handle
        .wait_for(Position(7), WAIT)
        .await
        .expect("goes past the bad event");
    assert_eq!(
        skipping.read(Clone::clone),
        BTreeMap::from([(8, 3), (9, 1), (10, 2)])
    );
    let status = handle.status().await;
    assert_eq!(status.dead_letters, 1);
    let parked = handle.dead_letters().await.expect("readable");
    assert_eq!(
        parked
            .iter()
            .map(|letter| (letter.position(), letter.failure.kind))
            .collect::<Vec<_>>(),
        [(Some(Position(6)), FailureKind::Decode)]
    );
    assert!(
        parked[0]
            .failure
            .error
            .contains("upcasting from schema version 1 failed"),
        "{}",
        parked[0].failure
    );
    handle.shutdown().await;
}

/// The checkout saga over a store whose show stream holds a version 1 `SeatsBooked` event: the
/// saga reads it through the upcaster as `SeatsReserved` and goes on to charge and confirm.
#[tokio::test]
async fn an_old_event_drives_a_saga_through_the_upcasters() {
    let store = MemStore::new();
    let shows = Repository::<Show, _>::new(store.clone());
    let bookings = Repository::<Booking, _>::new(store.clone());
    let payments = Repository::<Payment, _>::new(store.clone());
    shows
        .execute("gala", ShowCommand::Schedule { capacity: 10 })
        .await
        .expect("schedules");
    let request = BookingCommand::Request {
        booking: BookingId(7),
        show: "gala".to_owned(),
        seats: 2,
        amount: 9_000,
        card: Card::Good,
    };
    bookings.execute(7, request).await.expect("requests");
    // An older release recorded the reservation in its own format.
    let old = stored("SeatsBooked", 1, r#"{"customer":7,"seats":2}"#);
    store
        .append(
            &stream("gala"),
            ExpectedVersion::Exact(Version(1)),
            vec![old],
        )
        .await
        .expect("appends");

    let bus = CommandBus::new()
        .register(shows.clone())
        .register(bookings.clone())
        .register(payments);
    let runner = SagaProcessor::<Checkout, _, _>::new(store.clone(), bus, MemorySagaStore::new())
        .clock(ManualClock::at(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ))
        .runner()
        .failure_policy(FailurePolicy::Stop);
    runner.catch_up().await.expect("the saga runs");

    let booking = bookings.load(7).await.expect("loads").state;
    assert_eq!(booking.status(), BookingStatus::Confirmed);
    let show = shows.load("gala").await.expect("loads").state;
    assert_eq!(
        (show.reserved(), show.bookings().get(&BookingId(7))),
        (2, Some(&2))
    );
}

/// An event the saga cannot decode stops it (policy Stop) with the failure reported, or is
/// parked as a dead letter (policy Skip), instead of being skipped silently.
#[tokio::test]
async fn an_undecodable_event_goes_through_the_saga_failure_policy() {
    let store = MemStore::new();
    let shows = Repository::<Show, _>::new(store.clone());
    let bookings = Repository::<Booking, _>::new(store.clone());
    let payments = Repository::<Payment, _>::new(store.clone());
    shows
        .execute("gala", ShowCommand::Schedule { capacity: 10 })
        .await
        .expect("schedules");
    let corrupt = stored("SeatsBooked", 1, r#"{"seats":2}"#);
    store
        .append(
            &stream("gala"),
            ExpectedVersion::Exact(Version(1)),
            vec![corrupt],
        )
        .await
        .expect("appends");

    let bus = CommandBus::new()
        .register(shows)
        .register(bookings)
        .register(payments);

    let sagas = MemorySagaStore::new();
    let runner = SagaProcessor::<Checkout, _, _>::new(store.clone(), bus.clone(), sagas.clone())
        .runner()
        .failure_policy(FailurePolicy::Stop);
    let error = runner
        .catch_up()
        .await
        .expect_err("the saga stops at the corrupt event");
    let message = error.to_string();
    assert!(message.contains("SeatsBooked"), "{message}");
    match error {
        CatchUpError::Failed(failure) => {
            assert_eq!(failure.kind, FailureKind::Decode);
            assert_eq!(failure.position(), Some(Position(2)));
        }
        other => panic!("expected the event's failure, got {other:?}"),
    }
    // Stopped right before it; the failure is the caller's to see, not a stored record.
    assert_eq!(
        sagas.checkpoint("checkout").await.expect("readable"),
        Position(1)
    );
    assert!(
        sagas
            .dead_letters("checkout")
            .await
            .expect("readable")
            .is_empty()
    );

    let sagas = MemorySagaStore::new();
    let runner = SagaProcessor::<Checkout, _, _>::new(store.clone(), bus, sagas.clone())
        .runner()
        .failure_policy(FailurePolicy::Skip);
    let caught_up = runner
        .catch_up()
        .await
        .expect("parks the event and goes on");
    assert_eq!(
        (caught_up.checkpoint, caught_up.dead_letters),
        (Position(2), 1)
    );
    let parked = sagas.dead_letters("checkout").await.expect("readable");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].position(), Some(Position(2)));
    assert_eq!(parked[0].failure.kind, FailureKind::Decode);
}
