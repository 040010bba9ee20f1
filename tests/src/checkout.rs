//! The checkout saga end to end on a durable backend: events in its event store, saga state,
//! deadlines and checkpoint in its saga store. Paid, declined and timed-out bookings finish as
//! on the in-memory store; a replay from position zero writes nothing; a restarted process
//! fires a deadline once. A backend's test file implements [`Backend`] and runs each scenario
//! in a test of its own.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use cqrs_core::processor::{
    CatchUp, CatchUpError, FailurePolicy, Processor as _, ProcessorStore as _,
};
use cqrs_core::saga::{
    Clock, CommandBus, InstanceRecord, ManualClock, SagaProcessor, SagaReport, SagaRunner,
    SagaStore,
};
use cqrs_core::{CommandMetadata, EventStore, Position, RecordedEvent, Repository, StoreError};
use cqrs_examples::booking::{Booking, BookingCommand, BookingStatus, Checkout, PAYMENT_TIMEOUT};
use cqrs_examples::payment::{Card, Payment};
use cqrs_examples::show::{BookingId, Show, ShowCommand};
use uuid::Uuid;

/// A database the scenarios run on, and how a process opens it.
pub trait Backend: Sized {
    /// Its event store.
    type Store: EventStore + Clone + 'static;
    /// Its saga store, on the same database.
    type Sagas: SagaStore + Clone + 'static;

    /// The stores of a new process on the database (migrated): a new pool or writer each time.
    fn open(&self) -> impl Future<Output = (Self::Store, Self::Sagas)>;

    /// Every stored instance of `saga` (each saga store has this, outside of the contract).
    fn instances(
        sagas: &Self::Sagas,
        saga: &str,
    ) -> impl Future<Output = Result<Vec<InstanceRecord>, StoreError>>;
}

const SHOW: &str = "hamlet";

/// What one catch-up did: the runner's counts and the saga's.
#[derive(Debug)]
struct Ran {
    caught_up: CatchUp,
    saga: SagaReport,
}

/// Catches `runner` up (its events and its due deadlines) and says what it did. Every runner
/// here is made for one catch-up, so the saga's counts since its processor was made are this
/// run's.
async fn run<S: EventStore + 'static, G: SagaStore + 'static>(
    runner: &SagaRunner<Checkout, S, G>,
) -> Result<Ran, CatchUpError> {
    let caught_up = runner.catch_up().await?;
    Ok(Ran {
        caught_up,
        saga: runner.processor().report(),
    })
}

struct App<'b, B: Backend> {
    backend: &'b B,
    store: B::Store,
    sagas: B::Sagas,
    clock: ManualClock,
    shows: Repository<Show, B::Store>,
    bookings: Repository<Booking, B::Store>,
    payments: Repository<Payment, B::Store>,
}

impl<'b, B: Backend> App<'b, B> {
    async fn with_show(backend: &'b B, capacity: u32) -> Self {
        let clock = ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let app = App::open(backend, clock).await;
        app.shows
            .execute(SHOW, ShowCommand::Schedule { capacity })
            .await
            .expect("show scheduled");
        app
    }

    /// A new process on the same database: new stores, fresh repositories, a fresh runner.
    async fn restart(&self) -> Self {
        App::open(self.backend, self.clock.clone()).await
    }

    async fn open(backend: &'b B, clock: ManualClock) -> Self {
        let (store, sagas) = backend.open().await;
        App {
            backend,
            shows: Repository::new(store.clone()),
            bookings: Repository::new(store.clone()),
            payments: Repository::new(store.clone()),
            sagas,
            store,
            clock,
        }
    }

    fn runner(&self) -> SagaRunner<Checkout, B::Store, B::Sagas> {
        let bus = CommandBus::new()
            .register(self.shows.clone())
            .register(self.bookings.clone())
            .register(self.payments.clone());
        SagaProcessor::new(self.store.clone(), bus, self.sagas.clone())
            .clock(self.clock.clone())
            .runner()
            .failure_policy(FailurePolicy::Stop)
    }

    async fn request(&self, booking: u64, seats: u32, card: Card) {
        let command = BookingCommand::Request {
            booking: BookingId(booking),
            show: SHOW.to_owned(),
            seats,
            amount: 4_500 * u64::from(seats),
            card,
        };
        let metadata = CommandMetadata {
            correlation_id: Some(Uuid::from_u128(0x00C0_FFEE_0000 + u128::from(booking))),
            ..CommandMetadata::default()
        };
        self.bookings
            .execute_with(booking, command, metadata)
            .await
            .expect("booking requested");
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

/// Paid bookings are confirmed, declined and sold-out ones fail; state, position and deadlines
/// are stored per instance; a replay from zero by a new process handles and writes nothing.
pub async fn checkout_confirms_paid_bookings_releases_declined_ones_and_a_replay_writes_nothing<
    B: Backend,
>(
    backend: B,
) {
    let app = App::with_show(&backend, 10).await;
    app.request(1, 2, Card::Good).await;
    app.request(2, 1, Card::Declining).await;
    app.request(3, 20, Card::Good).await; // sold out

    let report = run(&app.runner()).await.expect("saga runs").saga;
    assert!(report.commands >= 6, "{report:?}");
    assert_eq!(app.status(1).await, BookingStatus::Confirmed);
    assert_eq!(app.status(2).await, BookingStatus::Failed);
    assert_eq!(app.status(3).await, BookingStatus::Failed);
    assert_eq!(app.reserved_seats().await, 2);
    let payment = app.payments.load(1).await.expect("payment loads").state;
    assert_eq!(payment.charged(), 9_000);
    let streams = app.streams().await;
    assert_eq!(
        streams.get("booking-1"),
        Some(&strings(&["Requested", "Confirmed"]))
    );
    assert_eq!(
        streams.get("booking-2"),
        Some(&strings(&["Requested", "Failed"]))
    );
    assert_eq!(streams.get("payment-1"), Some(&strings(&["Charged"])));

    // State, position and deadlines were stored together, per instance.
    let instances = B::instances(&app.sagas, "checkout")
        .await
        .expect("instances");
    assert_eq!(instances.len(), 3);
    assert!(instances.iter().all(|instance| instance.finished));
    assert!(
        instances
            .iter()
            .all(|instance| instance.deadlines.is_empty())
    );
    let head = app.store.head().await.expect("head");
    assert_eq!(
        app.sagas.checkpoint("checkout").await.expect("checkpoint"),
        head
    );

    // A replay from zero, by a new process: every event is read again, nothing is handled or
    // written.
    let before = app.all_events().await;
    app.sagas
        .set_checkpoint("checkout", Position::START)
        .await
        .expect("reset");
    assert_eq!(
        app.sagas.checkpoint("checkout").await.expect("checkpoint"),
        Position::START
    );
    let Ran { caught_up, saga } = run(&app.restart().await.runner()).await.expect("replays");
    assert_eq!(caught_up.events, head.0, "the whole log was read again");
    assert_eq!((saga.handled, saga.commands, saga.deduplicated), (0, 0, 0));
    assert_eq!(app.all_events().await, before);
    assert!(
        app.sagas
            .dead_letters("checkout")
            .await
            .expect("dead letters")
            .is_empty()
    );
}

/// A payment deadline is stored with its instance and fires once, in a restarted process, when
/// due and not before; replays fire it no more.
pub async fn the_payment_deadline_is_stored_and_fires_once_after_a_restart<B: Backend>(backend: B) {
    let app = App::with_show(&backend, 10).await;
    app.request(1, 2, Card::Silent).await;
    app.runner().catch_up().await.expect("saga runs");
    assert_eq!(app.status(1).await, BookingStatus::Pending);
    let instances = B::instances(&app.sagas, "checkout")
        .await
        .expect("instances");
    assert_eq!(instances[0].deadlines.len(), 1);
    let due = app.clock.now() + PAYMENT_TIMEOUT;
    assert_eq!(instances[0].deadlines[0].due, due);
    assert_eq!(
        app.sagas.next_deadline("checkout").await.expect("next"),
        Some(due)
    );

    let app = app.restart().await;
    app.clock.advance(PAYMENT_TIMEOUT - Duration::from_secs(1));
    assert!(
        app.sagas
            .due_deadlines("checkout", app.clock.now())
            .await
            .expect("due")
            .is_empty()
    );
    let early = run(&app.runner()).await.expect("runs").saga;
    assert_eq!(early.deadlines, 0, "not due yet");

    app.clock.advance(Duration::from_secs(1));
    let fired = run(&app.runner()).await.expect("runs").saga;
    assert_eq!(fired.deadlines, 1);
    assert_eq!(app.status(1).await, BookingStatus::Failed);
    assert_eq!(app.reserved_seats().await, 0);
    assert_eq!(
        app.sagas.next_deadline("checkout").await.expect("next"),
        None
    );

    let before = app.all_events().await;
    app.clock.advance(Duration::from_secs(3600));
    let again = run(&app.restart().await.runner()).await.expect("runs").saga;
    assert_eq!(again.deadlines, 0);
    app.sagas
        .set_checkpoint("checkout", Position::START)
        .await
        .expect("reset");
    app.restart()
        .await
        .runner()
        .catch_up()
        .await
        .expect("replays");
    assert_eq!(app.all_events().await, before);
}
