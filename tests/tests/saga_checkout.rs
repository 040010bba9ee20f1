//! The checkout saga end to end on the in-memory store: booking requested -> seats reserved ->
//! card charged -> booking confirmed, or seats released when the card declines, the show is sold
//! out, or the payment never arrives; replays and crashes never apply a command twice.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use cqrs_core::event::Metadata;
use cqrs_core::processor::{
    CatchUp, CatchUpError, DeadLetter, FailureKind, FailurePolicy, Processor as _, ProcessorState,
    ProcessorStore, Reconnect,
};
use cqrs_core::saga::{
    Clock, CommandBus, ManualClock, MemorySagaStore, SAGA_HEADER, SagaProcessor, SagaReport,
    SagaRunner, SagaStore, read_process,
};
use cqrs_core::{
    CommandMetadata, EventId, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    Repository, StoreError, StreamId,
};
use cqrs_examples::booking::{Booking, BookingCommand, BookingStatus, Checkout, PAYMENT_TIMEOUT};
use cqrs_examples::payment::{Card, Payment};
use cqrs_examples::show::{BookingId, Show, ShowCommand};
use cqrs_memstore::MemStore;
use uuid::Uuid;

const SHOW: &str = "hamlet";
const WAIT: Duration = Duration::from_secs(10);

/// What one catch-up did: the runner's counts and the saga's.
#[derive(Debug)]
struct Ran {
    caught_up: CatchUp,
    saga: SagaReport,
}

/// Catches `runner` up (its events and its due deadlines) and says what it did. The saga counts
/// since its processor was made, hence the difference.
async fn run(
    runner: &SagaRunner<Checkout, MemStore, MemorySagaStore>,
) -> Result<Ran, CatchUpError> {
    let before = runner.processor().report();
    let caught_up = runner.catch_up().await?;
    let after = runner.processor().report();
    Ok(Ran {
        caught_up,
        saga: SagaReport {
            handled: after.handled - before.handled,
            commands: after.commands - before.commands,
            deduplicated: after.deduplicated - before.deduplicated,
            rejected: after.rejected - before.rejected,
            deadlines: after.deadlines - before.deadlines,
        },
    })
}

/// One application: the store, the repositories behind a bus, the saga store and the clock.
struct App {
    store: MemStore,
    sagas: MemorySagaStore,
    clock: ManualClock,
    shows: Repository<Show, MemStore>,
    bookings: Repository<Booking, MemStore>,
    payments: Repository<Payment, MemStore>,
}

impl App {
    async fn with_show(capacity: u32) -> Self {
        let app = App::restart_from(
            MemStore::new(),
            MemorySagaStore::new(),
            ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        );
        app.shows
            .execute(SHOW, ShowCommand::Schedule { capacity })
            .await
            .expect("show scheduled");
        app
    }

    /// A new process on the same durable data: fresh repositories (empty caches), fresh runner.
    fn restart(&self) -> Self {
        App::restart_from(self.store.clone(), self.sagas.clone(), self.clock.clone())
    }

    fn restart_from(store: MemStore, sagas: MemorySagaStore, clock: ManualClock) -> Self {
        App {
            shows: Repository::new(store.clone()),
            bookings: Repository::new(store.clone()),
            payments: Repository::new(store.clone()),
            store,
            sagas,
            clock,
        }
    }

    fn runner(&self) -> SagaRunner<Checkout, MemStore, MemorySagaStore> {
        let bus = CommandBus::new()
            .register(self.shows.clone())
            .register(self.bookings.clone())
            .register(self.payments.clone());
        self.runner_on(bus)
    }

    /// A runner whose bus has no payment repository: a deployment that forgot one.
    fn runner_without_payments(&self) -> SagaRunner<Checkout, MemStore, MemorySagaStore> {
        let bus = CommandBus::new()
            .register(self.shows.clone())
            .register(self.bookings.clone());
        self.runner_on(bus)
    }

    fn runner_on(&self, bus: CommandBus) -> SagaRunner<Checkout, MemStore, MemorySagaStore> {
        SagaProcessor::new(self.store.clone(), bus, self.sagas.clone())
            .clock(self.clock.clone())
            .runner()
            .failure_policy(FailurePolicy::Stop)
    }

    /// The saga's dead letters.
    async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.sagas.dead_letters("checkout").await.expect("readable")
    }

    /// The customer books `seats` seats; returns the correlation id of the process.
    async fn request(&self, booking: u64, seats: u32, card: Card) -> Uuid {
        let correlation_id = Uuid::from_u128(0x00C0_FFEE_0000 + u128::from(booking));
        let command = BookingCommand::Request {
            booking: BookingId(booking),
            show: SHOW.to_owned(),
            seats,
            amount: 4_500 * u64::from(seats),
            card,
        };
        let metadata = CommandMetadata {
            correlation_id: Some(correlation_id),
            ..CommandMetadata::default()
        };
        self.bookings
            .execute_with(booking, command, metadata)
            .await
            .expect("booking requested");
        correlation_id
    }

    async fn all_events(&self) -> Vec<RecordedEvent> {
        self.store
            .read_all(Position::START, usize::MAX)
            .await
            .expect("log readable")
    }

    async fn status(&self, booking: u64) -> BookingStatus {
        self.bookings
            .load(booking)
            .await
            .expect("booking loads")
            .state
            .status()
    }

    async fn reserved_seats(&self) -> u32 {
        self.shows
            .load(SHOW)
            .await
            .expect("show loads")
            .state
            .reserved()
    }

    /// Event types written per stream, for comparing the whole store at once.
    async fn streams(&self) -> BTreeMap<String, Vec<String>> {
        let mut streams: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for event in self.all_events().await {
            streams
                .entry(event.stream.to_string())
                .or_default()
                .push(event.event_type.to_string());
        }
        streams
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

#[tokio::test]
async fn a_paid_booking_is_reserved_charged_and_confirmed() {
    let app = App::with_show(10).await;
    app.request(1, 2, Card::Good).await;

    let report = run(&app.runner()).await.expect("saga runs").saga;

    assert_eq!(app.status(1).await, BookingStatus::Confirmed);
    assert_eq!(app.reserved_seats().await, 2);
    let payment = app.payments.load(1).await.expect("payment loads").state;
    assert_eq!(payment.charged(), 9_000);
    assert_eq!(
        app.streams().await,
        BTreeMap::from([
            ("booking-1".to_owned(), strings(&["Requested", "Confirmed"])),
            ("payment-1".to_owned(), strings(&["Charged"])),
            (
                format!("show-{SHOW}"),
                strings(&["Scheduled", "SeatsReserved"])
            ),
        ])
    );
    assert_eq!(
        (report.commands, report.deduplicated, report.rejected),
        (3, 0, 0)
    );
    let instances = app.sagas.instances("checkout");
    assert_eq!(instances.len(), 1);
    assert!(
        instances[0].finished,
        "a confirmed booking ends its checkout"
    );
    assert!(
        instances[0].deadlines.is_empty(),
        "the payment deadline is cancelled"
    );
}

#[tokio::test]
async fn a_process_reads_back_by_its_correlation_id() {
    let app = App::with_show(10).await;
    let first = app.request(1, 2, Card::Good).await;
    let second = app.request(2, 1, Card::Declining).await;
    app.runner().catch_up().await.expect("saga runs");

    let process = read_process(&app.store, first).await.expect("readable");
    let steps: Vec<(String, String)> = process
        .iter()
        .map(|event| (event.stream.to_string(), event.event_type.to_string()))
        .collect();
    assert_eq!(
        steps,
        [
            ("booking-1", "Requested"),
            ("show-hamlet", "SeatsReserved"),
            ("payment-1", "Charged"),
            ("booking-1", "Confirmed"),
        ]
        .map(|(stream, kind)| (stream.to_owned(), kind.to_owned()))
    );
    // Each step was caused by the one before it, through a command the saga sent.
    for pair in process.windows(2) {
        assert_eq!(pair[1].metadata.causation_id, Some(pair[0].event_id.0));
        let command_id = pair[1].metadata.command_id.as_ref().expect("a command id");
        assert_eq!(
            command_id.as_str(),
            format!("checkout/1/{}/0", pair[0].event_id)
        );
        assert_eq!(
            pair[1]
                .metadata
                .headers
                .get(SAGA_HEADER)
                .map(String::as_str),
            Some("checkout")
        );
    }

    let declined = read_process(&app.store, second).await.expect("readable");
    let kinds: Vec<&str> = declined.iter().map(|e| &*e.event_type).collect();
    assert_eq!(
        kinds,
        [
            "Requested",
            "SeatsReserved",
            "Declined",
            "ReservationCancelled",
            "Failed"
        ]
    );
}

#[tokio::test]
async fn replaying_from_position_zero_writes_nothing_anywhere() {
    let app = App::with_show(10).await;
    app.request(1, 2, Card::Good).await;
    app.request(2, 1, Card::Declining).await;
    app.request(3, 20, Card::Good).await; // sold out
    app.runner().catch_up().await.expect("saga runs");
    let before = app.all_events().await;
    let head = app.store.head().await.expect("head");

    // The checkpoint moves back: the instances remember what they handled.
    app.sagas
        .set_checkpoint("checkout", Position::START)
        .await
        .expect("reset");
    let Ran { caught_up, saga } = run(&app.restart().runner()).await.expect("replays");
    assert_eq!(caught_up.events, head.0, "the whole log was read again");
    assert_eq!((saga.handled, saga.commands, saga.deduplicated), (0, 0, 0));
    assert_eq!(app.all_events().await, before);

    // Even with every instance forgotten, the command ids make the targets refuse the repeats.
    app.sagas.forget("checkout").await.expect("forgets");
    let replay = run(&app.restart().runner()).await.expect("replays").saga;
    assert!(replay.handled > 0, "the saga ran again from scratch");
    assert_eq!(replay.commands, 0, "no command wrote anything");
    assert!(replay.deduplicated >= 6, "{replay:?}");
    assert_eq!(app.all_events().await, before);
}

#[tokio::test]
async fn a_crash_between_dispatch_and_commit_applies_each_command_once() {
    let app = App::with_show(10).await;
    app.request(1, 2, Card::Good).await;
    app.request(2, 1, Card::Declining).await;

    // Crash at every commit in turn: each run gets one step further, dispatches, and dies before
    // saving; the next process starts from what was saved. One event per batch, so that a step
    // is one event.
    let mut crashes = 0;
    let mut app = app.restart();
    loop {
        // Dies at once: whatever it dispatches again is deduplicated.
        app.sagas.fail_next_commits(1);
        let replayed = app.runner().batch_size(1).catch_up().await;
        assert!(replayed.is_err(), "the first commit of a run fails");
        app = app.restart();
        // Saves one step, dispatches the next, dies.
        app.sagas.fail_commits_after(1, 1);
        match app.runner().batch_size(1).catch_up().await {
            Err(CatchUpError::Store(StoreError::Backend(_))) => {
                crashes += 1;
                app = app.restart();
            }
            Ok(_) => break,
            Err(other) => panic!("unexpected error: {other}"),
        }
        assert!(crashes < 100, "the saga never finished");
    }
    app.sagas.fail_next_commits(0);
    app.runner().catch_up().await.expect("saga finishes");
    assert!(crashes >= 8, "only {crashes} crashes");

    assert_eq!(app.status(1).await, BookingStatus::Confirmed);
    assert_eq!(app.status(2).await, BookingStatus::Failed);
    assert_eq!(app.reserved_seats().await, 2);
    assert_eq!(
        app.streams().await,
        BTreeMap::from([
            ("booking-1".to_owned(), strings(&["Requested", "Confirmed"])),
            ("booking-2".to_owned(), strings(&["Requested", "Failed"])),
            ("payment-1".to_owned(), strings(&["Charged"])),
            ("payment-2".to_owned(), strings(&["Declined"])),
            (
                format!("show-{SHOW}"),
                strings(&[
                    "Scheduled",
                    "SeatsReserved",
                    "SeatsReserved",
                    "ReservationCancelled"
                ])
            ),
        ])
    );
    let command_ids: Vec<_> = app
        .all_events()
        .await
        .into_iter()
        .filter_map(|event| event.metadata.command_id)
        .collect();
    let distinct: HashSet<_> = command_ids.iter().collect();
    assert_eq!(distinct.len(), command_ids.len(), "{command_ids:?}");
}

#[tokio::test]
async fn a_declined_card_releases_the_seats_and_fails_the_booking() {
    let app = App::with_show(10).await;
    app.request(1, 4, Card::Declining).await;
    app.runner().catch_up().await.expect("saga runs");

    assert_eq!(app.status(1).await, BookingStatus::Failed);
    let booking = app.bookings.load(1).await.expect("loads").state;
    assert_eq!(
        booking.reason(),
        Some("payment declined: insufficient funds")
    );
    assert_eq!(app.reserved_seats().await, 0);
}

#[tokio::test]
async fn a_sold_out_show_fails_the_booking_instead_of_crashing_the_saga() {
    let app = App::with_show(3).await;
    app.request(1, 2, Card::Good).await;
    app.request(2, 2, Card::Good).await;

    let report = run(&app.runner()).await.expect("saga runs").saga;

    assert_eq!(report.rejected, 1);
    assert_eq!(app.status(1).await, BookingStatus::Confirmed);
    assert_eq!(app.status(2).await, BookingStatus::Failed);
    let booking = app.bookings.load(2).await.expect("loads").state;
    assert_eq!(booking.reason(), Some("sold out: 1 seats left"));
    assert!(
        !app.streams().await.contains_key("payment-2"),
        "never charged"
    );
    assert!(app.dead_letters().await.is_empty());
}

#[tokio::test]
async fn the_payment_deadline_fires_once_after_a_restart() {
    let app = App::with_show(10).await;
    app.request(1, 2, Card::Silent).await;
    app.runner().catch_up().await.expect("saga runs");
    assert_eq!(app.status(1).await, BookingStatus::Pending);
    assert_eq!(app.reserved_seats().await, 2);
    let instance = &app.sagas.instances("checkout")[0];
    assert_eq!(instance.deadlines.len(), 1);
    assert_eq!(instance.deadlines[0].due, app.clock.now() + PAYMENT_TIMEOUT);

    // The process stops; time passes; a new process starts.
    let app = app.restart();
    app.clock.advance(PAYMENT_TIMEOUT - Duration::from_secs(1));
    let early = run(&app.runner()).await.expect("runs").saga;
    assert_eq!(early.deadlines, 0, "not due yet");
    assert_eq!(app.status(1).await, BookingStatus::Pending);

    app.clock.advance(Duration::from_secs(1));
    let due = run(&app.runner()).await.expect("runs").saga;
    assert_eq!(due.deadlines, 1);
    assert_eq!(app.status(1).await, BookingStatus::Failed);
    let booking = app.bookings.load(1).await.expect("loads").state;
    assert_eq!(booking.reason(), Some("payment timed out"));
    assert_eq!(app.reserved_seats().await, 0);

    // Never again: not on the next run, not on a replay.
    let before = app.all_events().await;
    app.clock.advance(Duration::from_secs(3600));
    let again = run(&app.restart().runner()).await.expect("runs").saga;
    assert_eq!(again.deadlines, 0);
    app.sagas
        .set_checkpoint("checkout", Position::START)
        .await
        .expect("reset");
    app.restart().runner().catch_up().await.expect("replays");
    assert_eq!(app.all_events().await, before);
}

#[tokio::test]
async fn a_crash_after_a_deadline_dispatched_does_not_release_twice() {
    let app = App::with_show(10).await;
    app.request(1, 2, Card::Silent).await;
    app.runner().catch_up().await.expect("saga runs");
    app.clock.advance(PAYMENT_TIMEOUT);

    app.sagas.fail_next_commits(1);
    let crashed = app.runner().catch_up().await;
    assert!(
        matches!(crashed, Err(CatchUpError::Store(_))),
        "{crashed:?}"
    );
    assert_eq!(
        app.status(1).await,
        BookingStatus::Failed,
        "dispatched before the crash"
    );
    assert_eq!(
        app.sagas.instances("checkout")[0].deadlines.len(),
        1,
        "the deadline was not saved as fired"
    );

    // The next run reads what the deadline's commands wrote before it looks at the deadlines:
    // the booking's failure ends the instance and drops the deadline with it, so nothing is
    // sent again.
    let app = app.restart();
    let report = run(&app.runner()).await.expect("runs").saga;
    assert_eq!(
        (report.deadlines, report.commands, report.deduplicated),
        (0, 0, 0)
    );
    let instance = &app.sagas.instances("checkout")[0];
    assert!(instance.finished && instance.deadlines.is_empty());
    let show = app.streams().await.remove(&format!("show-{SHOW}"));
    assert_eq!(
        show,
        Some(strings(&[
            "Scheduled",
            "SeatsReserved",
            "ReservationCancelled"
        ]))
    );
}

#[tokio::test]
async fn a_deadline_cut_off_mid_dispatch_fires_again_and_sends_nothing_twice() {
    let app = App::with_show(10).await;
    app.request(1, 2, Card::Silent).await;
    app.runner().catch_up().await.expect("saga runs");
    app.clock.advance(PAYMENT_TIMEOUT);

    // The release is written, then its acknowledgement is lost: the booking is not failed yet.
    app.store.fail_next_appends_after_writing(1);
    let cut_off = app.runner().catch_up().await;
    assert!(
        matches!(cut_off, Err(CatchUpError::Store(_))),
        "{cut_off:?}"
    );
    assert_eq!(app.status(1).await, BookingStatus::Pending);
    assert_eq!(app.sagas.instances("checkout")[0].deadlines.len(), 1);

    // The deadline fires again: the release carries the same id and writes nothing, the
    // booking's failure is sent for the first time.
    let app = app.restart();
    let report = run(&app.runner()).await.expect("fires").saga;
    assert_eq!(
        (report.deadlines, report.deduplicated, report.commands),
        (1, 1, 1)
    );
    let report = run(&app.runner()).await.expect("runs").saga;
    assert_eq!((report.deadlines, report.commands), (0, 0));
    assert!(app.sagas.instances("checkout")[0].finished);
    assert_eq!(app.status(1).await, BookingStatus::Failed);
    let show = app.streams().await.remove(&format!("show-{SHOW}"));
    assert_eq!(
        show,
        Some(strings(&[
            "Scheduled",
            "SeatsReserved",
            "ReservationCancelled"
        ]))
    );
}

/// An event in a booking stream that does not decode.
async fn append_garbage(store: &MemStore, booking: u64) {
    let event = NewEvent {
        event_id: EventId::new(),
        event_type: "Requested".into(),
        schema_version: 1,
        payload: r#"{"booking":"not a number"}"#.into(),
        metadata: Metadata::default(),
    };
    let stream = StreamId::for_aggregate("booking", booking).expect("valid");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .expect("appended");
}

#[tokio::test]
async fn skip_parks_the_failing_event_and_moves_on() {
    let app = App::with_show(10).await;
    append_garbage(&app.store, 9).await;
    app.request(1, 2, Card::Good).await;

    let runner = app.runner().failure_policy(FailurePolicy::Skip);
    let report = runner.catch_up().await.expect("skips");

    assert_eq!(report.dead_letters, 1);
    assert_eq!(app.status(1).await, BookingStatus::Confirmed);
    let parked = app.dead_letters().await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let failure = &parked[0].failure;
    assert_eq!(failure.kind, FailureKind::Decode);
    assert_eq!(
        failure.event.as_ref().map(|event| event.stream.as_str()),
        Some("booking-9")
    );
    assert!(failure.error.contains("cannot decode"), "{}", failure.error);
}

#[tokio::test]
async fn stop_keeps_the_failing_event_and_everything_after_it() {
    let app = App::with_show(10).await;
    append_garbage(&app.store, 9).await;
    app.request(1, 2, Card::Good).await;

    for _ in 1..=2 {
        let stopped = app.runner().catch_up().await;
        let Err(CatchUpError::Failed(failure)) = stopped else {
            panic!("expected a stop, got {stopped:?}");
        };
        let event = failure.event.as_ref().expect("names the event");
        assert_eq!(
            (event.stream.as_str(), event.event_type.as_deref()),
            ("booking-9", Some("Requested"))
        );
        // Stopped, not parked: the failure is in the error, not among the dead letters.
        assert!(app.dead_letters().await.is_empty());
        assert_eq!(app.status(1).await, BookingStatus::Pending, "not passed");
    }
    assert!(
        app.sagas.checkpoint("checkout").await.expect("readable") < Position(2),
        "the checkpoint stays before the failing event"
    );
}

/// A command whose target store fails is not the event's failure: an inline catch-up reports
/// the store error and stores nothing, a spawned saga reconnects until it gets past the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_not_the_events_failure_and_the_saga_gets_past_it() {
    let app = App::with_show(10).await;
    app.request(1, 2, Card::Good).await;
    app.store.fail_next_appends(2);

    let outage = app.runner().catch_up().await;
    assert!(
        matches!(outage, Err(CatchUpError::Store(StoreError::Backend(_)))),
        "{outage:?}"
    );
    assert!(app.dead_letters().await.is_empty());
    assert_eq!(app.status(1).await, BookingStatus::Pending);

    let handle = app
        .runner()
        .reconnect(Reconnect {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        })
        .spawn();
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.status(1).await != BookingStatus::Confirmed {
        assert!(tokio::time::Instant::now() < deadline, "never confirmed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let live = handle
        .wait_until(WAIT, |status| status.state == ProcessorState::Live)
        .await
        .expect("goes live");
    // The outage was never an event's failure: nothing went through the policy.
    assert_eq!((live.last_error, live.dead_letters), (None, 0));
    handle.shutdown().await;
    assert_eq!(app.reserved_seats().await, 2);
}

#[tokio::test]
async fn retries_that_run_out_fall_back_to_the_policy() {
    let app = App::with_show(10).await;
    app.request(1, 2, Card::Good).await;

    // No repository for the payment: the charge fails for a reason that is not a refusal.
    let runner = app
        .runner_without_payments()
        .failure_policy(FailurePolicy::retry(3, Duration::from_millis(1)));
    let stopped = runner.catch_up().await;
    let Err(CatchUpError::Failed(failure)) = stopped else {
        panic!("expected a stop, got {stopped:?}");
    };
    assert_eq!((failure.kind, failure.attempts), (FailureKind::Command, 3));
    assert!(
        failure
            .error
            .contains("no repository for aggregate `payment`"),
        "{}",
        failure.error
    );
    let event = failure.event.as_ref().expect("names the event");
    assert_eq!(
        (event.stream.as_str(), event.event_type.as_deref()),
        ("show-hamlet", Some("SeatsReserved"))
    );
    assert_eq!(app.status(1).await, BookingStatus::Pending);

    app.runner()
        .catch_up()
        .await
        .expect("the next run, with the repository, gets through");
    assert_eq!(app.status(1).await, BookingStatus::Confirmed);
}

#[tokio::test]
async fn checkouts_of_other_bookings_are_independent() {
    let app = App::with_show(5).await;
    for booking in 1..=4 {
        let card = if booking % 2 == 0 {
            Card::Declining
        } else {
            Card::Good
        };
        app.request(booking, 1, card).await;
    }
    let stages: Vec<_> = app
        .runner()
        .catch_up()
        .await
        .map(|_| ())
        .into_iter()
        .collect();
    assert_eq!(stages.len(), 1);
    assert_eq!(app.status(1).await, BookingStatus::Confirmed);
    assert_eq!(app.status(2).await, BookingStatus::Failed);
    assert_eq!(app.status(3).await, BookingStatus::Confirmed);
    assert_eq!(app.status(4).await, BookingStatus::Failed);
    assert_eq!(app.reserved_seats().await, 2);
}
