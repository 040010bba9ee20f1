//! The one processor runtime, in memory: dead letters parked and retried, a projection that
//! reconnects after its store failed, pause and resume, a failed processor resumed after a fix,
//! health; and sagas on it: a failing instance parked while the others go on, a command that
//! fails for a non-domain reason, a finished instance started afresh, routes that read the
//! event's context.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cqrs_core::event::{Metadata, NewEvent};
use cqrs_core::prelude::*;
use cqrs_core::processor::{
    CatchUpError, ControlError, FailureKind, FailurePolicy, HealthCheck, Processor as _,
    ProcessorHandle, ProcessorState, ProcessorStatus, ProcessorStore, Reconnect, WaitError,
};
use cqrs_core::projection::{EventContext, MemoryReadModel, Projection, Projector};
use cqrs_core::saga::{CommandBus, HandlerError, MemorySagaStore, SagaProcessor, SagaStore};
use cqrs_core::{EventId, EventStore, ExpectedVersion, Position, StreamId};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowEvent};
use cqrs_memstore::MemStore;
use cqrs_tests::flaky::Flaky;

const WAIT: Duration = Duration::from_secs(10);

/// The booking whose reservation the projection refuses while told to.
const REFUSED: BookingId = BookingId(13);

/// Seats left per show, and every position applied, in order: a lost or doubled event shows.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seats {
    available: BTreeMap<String, i64>,
    applied: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("refused the reservation of {0}")]
struct Refused(BookingId);

/// Seats per show; refuses the reservation of [`REFUSED`] while `refuse` is set.
struct AvailableSeats {
    refuse: Arc<AtomicBool>,
}

impl AvailableSeats {
    fn new() -> Self {
        AvailableSeats {
            refuse: Arc::new(AtomicBool::new(false)),
        }
    }

    fn refusing(refuse: &Arc<AtomicBool>) -> Self {
        AvailableSeats {
            refuse: Arc::clone(refuse),
        }
    }
}

impl Projection for AvailableSeats {
    const NAME: &'static str = "available_seats";
    const AGGREGATES: &'static [&'static str] = &["show"];
    type Event = ShowEvent;
    type ReadModel = Seats;
    type Error = Refused;

    fn apply(
        &self,
        seats: &mut Seats,
        event: ShowEvent,
        context: &EventContext<'_>,
    ) -> Result<(), Refused> {
        if let ShowEvent::SeatsReserved { booking, .. } = event
            && booking == REFUSED
            && self.refuse.load(Ordering::SeqCst)
        {
            return Err(Refused(booking));
        }
        let show = seats
            .available
            .entry(context.aggregate_id().to_owned())
            .or_default();
        match event {
            ShowEvent::Scheduled { capacity } => *show = i64::from(capacity),
            ShowEvent::SeatsReserved { seats, .. } => *show -= i64::from(seats),
            ShowEvent::ReservationCancelled { seats, .. } => *show += i64::from(seats),
        }
        seats.applied.push(context.position.0);
        Ok(())
    }
}

fn reserve(booking: BookingId, seats: u32) -> ShowCommand {
    ShowCommand::ReserveSeats { booking, seats }
}

/// Schedules `show` and reserves seats for `bookings` (two each), through the repository;
/// returns the position of the last event.
async fn write_show(store: &MemStore, show: &str, bookings: &[u64]) -> Position {
    let shows = Repository::<Show, _>::new(store.clone());
    shows
        .execute(show, ShowCommand::Schedule { capacity: 100 })
        .await
        .expect("schedules");
    for booking in bookings {
        shows
            .execute(show, reserve(BookingId(*booking), 2))
            .await
            .expect("reserves");
    }
    store.head().await.expect("head")
}

/// The model a projection builds from the whole log in one inline catch-up, without faults.
async fn caught_up_from_zero(store: &MemStore) -> Seats {
    let model = MemoryReadModel::new();
    Projector::new(AvailableSeats::new(), store.clone(), model.clone())
        .runner()
        .catch_up()
        .await
        .expect("catches up");
    model.snapshot().0
}

fn spawn(
    store: &MemStore,
    projection: AvailableSeats,
    model: &MemoryReadModel<Seats>,
    policy: FailurePolicy,
) -> ProcessorHandle {
    Projector::new(projection, store.clone(), model.clone())
        .runner()
        .batch_size(3)
        .failure_policy(policy)
        .spawn()
}

async fn live(handle: &ProcessorHandle, at: Position) -> ProcessorStatus {
    handle
        .wait_until(WAIT, |status| {
            status.state == ProcessorState::Live && status.checkpoint == at
        })
        .await
        .unwrap_or_else(|status| panic!("not live at {at}: {status:?}"))
}

fn positions(range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    range.collect()
}

/// A `SeatsReserved` whose payload does not decode.
fn poison() -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: "SeatsReserved".into(),
        schema_version: 2,
        payload: r#"{"nope":1}"#.into(),
        metadata: Metadata::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_parked_once_and_every_later_event_applied() {
    let store = MemStore::new();
    write_show(&store, "1", &[1]).await;
    let show = StreamId::for_aggregate("show", "1").expect("valid");
    let receipt = store
        .append(&show, ExpectedVersion::Exact(Version(2)), vec![poison()])
        .await
        .expect("appends");
    assert_eq!(receipt.position, Some(Position(3)));
    let head = write_show(&store, "2", &[2, 3]).await;

    let model = MemoryReadModel::new();
    let handle = spawn(&store, AvailableSeats::new(), &model, FailurePolicy::Skip);
    handle.wait_for(head, WAIT).await.expect("goes past it");
    assert_eq!(live(&handle, head).await.dead_letters, 1);

    let letters = handle.dead_letters().await.expect("readable");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.processor, "available_seats");
    assert_eq!(letter.failure.kind, FailureKind::Decode);
    assert_eq!(letter.failure.attempts, 1);
    let event = letter.failure.event.as_ref().expect("names the event");
    assert_eq!(
        (
            event.position,
            event.stream.as_str(),
            event.version,
            event.event_type.as_deref()
        ),
        (
            Position(3),
            "show-1",
            Some(Version(3)),
            Some("SeatsReserved")
        )
    );
    let mut later = positions(1..=head.0);
    later.retain(|position| *position != 3);
    assert_eq!(model.read(|seats| seats.applied.clone()), later);

    // Still poison: the retry fails again and the dead letter stays.
    match handle.retry_dead_letter(&letter.id).await {
        Err(ControlError::Failed(failure)) => {
            assert_eq!(failure.kind, FailureKind::Decode);
            assert_eq!(failure.position(), Some(Position(3)));
        }
        other => panic!("expected the retry to fail, got {other:?}"),
    }
    assert_eq!(handle.dead_letters().await.expect("readable"), letters);
    let status = handle.status().await;
    assert_eq!((status.dead_letters, status.checkpoint), (1, head));
    assert_eq!(model.read(|seats| seats.applied.clone()), later);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_retried_after_the_fix_is_applied_exactly_once() {
    let store = MemStore::new();
    write_show(&store, "1", &[1, REFUSED.0, 2]).await;
    let head = write_show(&store, "2", &[3]).await;
    let refuse = Arc::new(AtomicBool::new(true));

    let model = MemoryReadModel::new();
    let handle = spawn(
        &store,
        AvailableSeats::refusing(&refuse),
        &model,
        FailurePolicy::Skip,
    );
    handle.wait_for(head, WAIT).await.expect("goes past it");
    let letters = handle.dead_letters().await.expect("readable");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let refused = letters[0].position().expect("an event");
    assert_eq!(letters[0].failure.kind, FailureKind::Handler);
    assert_eq!(
        letters[0].failure.error,
        "refused the reservation of booking-13"
    );
    assert!(!model.read(|seats| seats.applied.contains(&refused.0)));

    // Fixed: the retry applies it, and its removal commits with it.
    refuse.store(false, Ordering::SeqCst);
    handle
        .retry_dead_letter(&letters[0].id)
        .await
        .expect("applies it now");
    let applied = model.read(|seats| seats.applied.clone());
    assert_eq!(
        applied
            .iter()
            .filter(|position| **position == refused.0)
            .count(),
        1,
        "{applied:?}"
    );
    let mut sorted = applied;
    sorted.sort_unstable();
    assert_eq!(sorted, positions(1..=head.0));
    assert_eq!(
        model.snapshot().0.available,
        caught_up_from_zero(&store).await.available
    );
    assert!(handle.dead_letters().await.expect("readable").is_empty());
    let status = handle.status().await;
    assert_eq!((status.dead_letters, status.checkpoint), (0, head));

    match handle.retry_dead_letter(&letters[0].id).await {
        Err(ControlError::UnknownDeadLetter { processor, id }) => {
            assert_eq!((processor, id), ("available_seats", letters[0].id.clone()));
        }
        other => panic!("expected an unknown dead letter, got {other:?}"),
    }
    assert_eq!(
        model
            .read(|seats| seats.applied.clone())
            .iter()
            .filter(|position| **position == refused.0)
            .count(),
        1
    );
    handle.shutdown().await;
}

fn reconnect_attempts(status: &ProcessorStatus) -> Option<u32> {
    match &status.state {
        ProcessorState::Reconnecting { attempts, .. } => Some(*attempts),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_whose_store_fails_reconnects_and_goes_on_with_every_event_once() {
    let store = MemStore::new();
    let head = write_show(&store, "1", &[1, 2, 3]).await;
    let flaky = Flaky::new(store.clone(), false);
    let model = MemoryReadModel::new();
    let handle = Projector::new(AvailableSeats::new(), flaky.clone(), model.clone())
        .runner()
        .batch_size(2)
        .reconnect(Reconnect {
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(10),
        })
        .spawn();
    live(&handle, head).await;

    // The store goes away while new events wait: the runner says so and keeps trying.
    flaky.set_down(true);
    let later = write_show(&store, "2", &[4, 5, 6, 7]).await;
    let reconnecting = handle
        .wait_until(WAIT, |status| reconnect_attempts(status).is_some())
        .await
        .expect("reconnects");
    let first = reconnect_attempts(&reconnecting).expect("reconnecting");
    let again = handle
        .wait_until(WAIT, |status| {
            reconnect_attempts(status).is_some_and(|attempts| attempts >= first + 3)
        })
        .await
        .expect("keeps trying, counting its attempts");
    let (
        ProcessorState::Reconnecting { since, .. },
        ProcessorState::Reconnecting {
            since: still,
            last_error,
            ..
        },
    ) = (&reconnecting.state, &again.state)
    else {
        panic!("not reconnecting: {again:?}");
    };
    assert_eq!(since, still, "one outage, one start");
    assert!(last_error.contains("injected outage"), "{last_error}");
    // A store failure is not an event's: nothing went through the failure policy.
    assert_eq!((again.last_error.clone(), again.dead_letters), (None, 0));
    assert_eq!(
        model.position(),
        head,
        "nothing read while the store is down"
    );

    // Back: it resumes from its checkpoint and goes live again.
    flaky.set_down(false);
    live(&handle, later).await;
    let (seats, checkpoint) = model.snapshot();
    assert_eq!(checkpoint, later);
    assert_eq!(seats.applied, positions(1..=later.0), "every event once");
    assert_eq!(seats, caught_up_from_zero(&store).await);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_projection_stands_still_until_resumed() {
    let store = MemStore::new();
    let head = write_show(&store, "1", &[1, 2]).await;
    let model = MemoryReadModel::new();
    let handle = spawn(&store, AvailableSeats::new(), &model, FailurePolicy::Stop);
    live(&handle, head).await;

    handle.pause().await.expect("pauses");
    handle
        .wait_until(WAIT, |status| status.state == ProcessorState::Paused)
        .await
        .expect("paused");
    let later = write_show(&store, "2", &[3, 4]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(model.position(), head, "a paused projection reads nothing");
    let status = handle.status().await;
    assert_eq!(
        (status.state, status.lag),
        (ProcessorState::Paused, later.0 - head.0)
    );
    // Paused on purpose: still healthy.
    assert!(HealthCheck::new().with(&handle).check().healthy);

    handle.resume().await.expect("resumes");
    handle.wait_for(later, WAIT).await.expect("goes on");
    live(&handle, later).await;
    assert_eq!(model.snapshot().0, caught_up_from_zero(&store).await);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_projection_is_unhealthy_until_resumed_after_the_fix() {
    let store = MemStore::new();
    let head = write_show(&store, "1", &[1, REFUSED.0, 2]).await;
    let refuse = Arc::new(AtomicBool::new(true));

    let failing_model = MemoryReadModel::new();
    let failing = spawn(
        &store,
        AvailableSeats::refusing(&refuse),
        &failing_model,
        FailurePolicy::Stop,
    );
    let healthy_model = MemoryReadModel::new();
    let healthy = spawn(
        &store,
        AvailableSeats::new(),
        &healthy_model,
        FailurePolicy::Stop,
    );
    let health = HealthCheck::new().with(&failing).with(&healthy);

    let failure = match failing.wait_for(head, WAIT).await {
        Err(WaitError::Stopped {
            reached,
            error: Some(failure),
            ..
        }) => {
            assert_eq!(reached, Position(2));
            failure
        }
        other => panic!("expected the projection to fail, got {other:?}"),
    };
    assert_eq!(failure.position(), Some(Position(3)));
    assert_eq!(failing.status().await.state, ProcessorState::Failed);
    live(&healthy, head).await;

    let verdict = health.check();
    assert!(!verdict.healthy);
    let reason = verdict.processors[0]
        .reason
        .clone()
        .expect("says why it is unhealthy");
    assert!(
        reason.starts_with("failed")
            && reason.contains("`SeatsReserved`")
            && reason.contains("stream `show-1`")
            && reason.contains("position 3"),
        "{reason}"
    );
    assert!(verdict.processors[1].healthy);
    // Failed waits for a person, it does not end.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(failing.last_status().state, ProcessorState::Failed);

    refuse.store(false, Ordering::SeqCst);
    failing.resume().await.expect("resumes");
    failing.wait_for(head, WAIT).await.expect("goes on");
    live(&failing, head).await;
    assert!(health.check().healthy, "{:?}", health.check());
    assert_eq!(failing_model.snapshot().0, healthy_model.snapshot().0);
    failing.shutdown().await;
    healthy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_stuck_behind_an_event_or_an_outage_turns_unhealthy_in_time() {
    // Stuck retrying one event for ever: its checkpoint stands still while events wait.
    let store = MemStore::new();
    let head = write_show(&store, "1", &[1, REFUSED.0, 2]).await;
    let refuse = Arc::new(AtomicBool::new(true));
    let model = MemoryReadModel::new();
    let stuck = spawn(
        &store,
        AvailableSeats::refusing(&refuse),
        &model,
        FailurePolicy::retry(u32::MAX, Duration::from_millis(20)),
    );
    let stall = Duration::from_millis(300);
    let health = HealthCheck::new().stall_after(stall).with(&stuck);
    stuck
        .wait_until(WAIT, |status| {
            matches!(status.state, ProcessorState::Retrying { .. })
        })
        .await
        .unwrap_or_else(|status| panic!("not retrying: {status:?}"));
    assert!(health.check().healthy, "retrying, but not for long yet");
    tokio::time::sleep(stall + Duration::from_millis(200)).await;
    let verdict = health.check();
    assert!(!verdict.healthy, "{verdict:?}");
    let reason = verdict.processors[0].reason.clone().expect("a reason");
    assert!(reason.contains("has not moved"), "{reason}");
    let stuck_status = &verdict.processors[0].status;
    assert!(stuck_status.lag > 0);
    // The event it is stuck on has waited since it was written, before the stall began.
    assert!(
        stuck_status.lag_seconds >= stall.as_secs_f64(),
        "{stuck_status:?}"
    );
    // Fixed: it moves on and is healthy again.
    refuse.store(false, Ordering::SeqCst);
    live(&stuck, head).await;
    assert!(health.check().healthy, "{:?}", health.check());
    stuck.shutdown().await;

    // A store that stays away longer than the stall limit.
    let flaky = Flaky::new(MemStore::new(), true);
    let waiting = Projector::new(AvailableSeats::new(), flaky.clone(), MemoryReadModel::new())
        .runner()
        .reconnect(Reconnect {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        })
        .spawn();
    let health = HealthCheck::new().stall_after(stall).with(&waiting);
    waiting
        .wait_until(WAIT, |status| {
            matches!(status.state, ProcessorState::Reconnecting { .. })
        })
        .await
        .unwrap_or_else(|status| panic!("not reconnecting: {status:?}"));
    assert!(health.check().healthy, "reconnecting, but not for long yet");
    tokio::time::sleep(stall + Duration::from_millis(200)).await;
    let verdict = health.check();
    assert!(!verdict.healthy, "{verdict:?}");
    let reason = verdict.processors[0].reason.clone().expect("a reason");
    assert!(reason.contains("store has been failing"), "{reason}");
    flaky.set_down(false);
    waiting
        .wait_until(WAIT, |status| status.state == ProcessorState::Live)
        .await
        .unwrap_or_else(|status| panic!("not live: {status:?}"));
    assert!(health.check().healthy, "{:?}", health.check());
    waiting.shutdown().await;
}

// Sagas.

/// What happened to an order (public, as the shipping saga's input is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub enum OrderEvent {
    /// It was placed.
    Placed {
        /// The order's id.
        order: u64,
    },
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "order", event = OrderEvent, error = Infallible)]
struct Order;

impl Order {
    fn apply(&mut self, _: OrderEvent) {}
}

#[command_handler]
impl Order {
    pub(crate) fn place(&self, order: u64) -> OrderEvent {
        OrderEvent::Placed { order }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ParcelEvent {
    Shipped { order: u64 },
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "parcel", event = ParcelEvent, error = Infallible)]
struct Parcel {
    shipped: u32,
}

impl Parcel {
    fn apply(&mut self, _: ParcelEvent) {
        self.shipped += 1;
    }
}

#[command_handler]
impl Parcel {
    pub(crate) fn ship(&self, order: u64) -> ParcelEvent {
        ParcelEvent::Shipped { order }
    }
}

/// An order the shipping saga's handler refuses.
const UNLUCKY: u64 = 13;
/// An order whose parcel id the saga gets wrong: it holds a control character.
const GARBLED: u64 = 7;

/// Ships every order as a parcel of the same id.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Shipping {
    order: u64,
}

#[saga(name = "shipping")]
impl Shipping {
    fn route(input: &ShippingInput) -> Route {
        match input {
            ShippingInput::Order(OrderEvent::Placed { order }) => Route::start(order),
        }
    }

    #[on(Order)]
    fn on_order(&mut self, event: OrderEvent, saga: &mut SagaContext) -> Result<(), HandlerError> {
        let OrderEvent::Placed { order } = event;
        if order == UNLUCKY {
            return Err(format!("order {order} is unlucky").into());
        }
        self.order = order;
        let parcel = if order == GARBLED {
            format!("{order}\u{7}")
        } else {
            order.to_string()
        };
        saga.send::<Parcel>(parcel, ParcelCommand::Ship { order });
        saga.complete();
        Ok(())
    }
}

struct Warehouse {
    store: MemStore,
    orders: Repository<Order, MemStore>,
    parcels: Repository<Parcel, MemStore>,
    sagas: MemorySagaStore,
}

impl Warehouse {
    fn new() -> Self {
        let store = MemStore::new();
        Warehouse {
            orders: Repository::new(store.clone()),
            parcels: Repository::new(store.clone()),
            store,
            sagas: MemorySagaStore::new(),
        }
    }

    async fn place(&self, orders: &[u64]) -> Position {
        for order in orders {
            self.orders
                .execute(order, OrderCommand::Place { order: *order })
                .await
                .expect("placed");
        }
        self.store.head().await.expect("head")
    }

    fn shipping(&self, bus: CommandBus) -> SagaProcessor<Shipping, MemStore, MemorySagaStore> {
        SagaProcessor::new(self.store.clone(), bus, self.sagas.clone())
    }

    fn bus(&self) -> CommandBus {
        CommandBus::new().register(self.parcels.clone())
    }

    async fn shipped(&self, order: u64) -> u32 {
        self.parcels.load(order).await.expect("loads").state.shipped
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_parks_the_instance_that_fails_and_the_others_go_on() {
    let warehouse = Warehouse::new();
    let head = warehouse.place(&[1, 2, UNLUCKY, 4]).await;

    let handle = warehouse
        .shipping(warehouse.bus())
        .runner()
        .failure_policy(FailurePolicy::Skip)
        .spawn();
    handle.wait_for(head, WAIT).await.expect("goes past it");
    assert_eq!(handle.status().await.dead_letters, 1);
    let letters = handle.dead_letters().await.expect("readable");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let failure = &letters[0].failure;
    assert_eq!(failure.kind, FailureKind::Handler);
    assert_eq!(failure.error, "order 13 is unlucky");
    let event = failure.event.as_ref().expect("names the event");
    assert_eq!(
        (event.position, event.stream.as_str(), event.version),
        (Position(3), "order-13", Some(Version(1)))
    );
    handle.shutdown().await;

    for order in [1, 2, 4] {
        assert_eq!(warehouse.shipped(order).await, 1, "order {order}");
    }
    assert_eq!(warehouse.shipped(UNLUCKY).await, 0);
    assert_eq!(
        warehouse
            .sagas
            .dead_letters("shipping")
            .await
            .expect("readable"),
        letters
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_fails_for_a_non_domain_reason_stops_the_saga_where_everyone_sees_it() {
    let warehouse = Warehouse::new();
    let head = warehouse.place(&[1, GARBLED, 2]).await;

    let handle = warehouse
        .shipping(warehouse.bus())
        .runner()
        .failure_policy(FailurePolicy::Stop)
        .spawn();
    let stopped = handle.wait_for(head, WAIT).await;
    let Err(WaitError::Stopped {
        reached,
        error: Some(failure),
        ..
    }) = stopped
    else {
        panic!("expected the saga to stop, got {stopped:?}");
    };
    assert_eq!(reached, Position(1), "right before the event");
    let status = handle.status().await;
    assert_eq!(status.state, ProcessorState::Failed);
    assert_eq!(status.last_error.as_ref(), Some(&failure));
    assert_eq!(failure.kind, FailureKind::Command);
    let event = failure.event.as_ref().expect("names the event");
    assert_eq!(
        (event.position, event.stream.as_str(), event.version),
        (Position(2), "order-7", Some(Version(1)))
    );
    assert!(
        failure.error.contains("control character"),
        "{}",
        failure.error
    );
    let reason = HealthCheck::new().with(&handle).check().processors[0]
        .reason
        .clone()
        .expect("unhealthy");
    assert!(reason.contains("stream `order-7`"), "{reason}");
    handle.shutdown().await;
    assert_eq!(warehouse.shipped(1).await, 1);
    assert_eq!(warehouse.shipped(2).await, 0, "nothing after it");
    assert!(
        warehouse
            .sagas
            .dead_letters("shipping")
            .await
            .expect("readable")
            .is_empty()
    );

    // An aggregate missing from the bus is the same kind of failure; under Skip, parked.
    let warehouse = Warehouse::new();
    let head = warehouse.place(&[3]).await;
    let runner = warehouse
        .shipping(CommandBus::new())
        .runner()
        .failure_policy(FailurePolicy::Skip);
    let caught_up = runner.catch_up().await.expect("parks it");
    assert_eq!((caught_up.checkpoint, caught_up.dead_letters), (head, 1));
    let letters = warehouse
        .sagas
        .dead_letters("shipping")
        .await
        .expect("readable");
    assert_eq!(letters[0].failure.kind, FailureKind::Command);
    assert!(
        letters[0]
            .failure
            .error
            .contains("no repository for aggregate `parcel`"),
        "{}",
        letters[0].failure
    );

    // And under Stop, an inline catch-up returns it.
    let warehouse = Warehouse::new();
    warehouse.place(&[3]).await;
    let stopped = warehouse
        .shipping(CommandBus::new())
        .runner()
        .failure_policy(FailurePolicy::Stop)
        .catch_up()
        .await;
    match stopped {
        Err(CatchUpError::Failed(failure)) => {
            assert_eq!(failure.kind, FailureKind::Command);
            assert_eq!(failure.position(), Some(Position(1)));
        }
        other => panic!("expected the command's failure, got {other:?}"),
    }
}

/// What a club member did (public, as the welcome saga's input is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub enum MemberEvent {
    /// They joined.
    Joined {
        /// The member's id.
        member: u64,
    },
    /// They left.
    Left {
        /// The member's id.
        member: u64,
    },
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "member", event = MemberEvent, error = Infallible)]
struct Member;

impl Member {
    fn apply(&mut self, _: MemberEvent) {}
}

#[command_handler]
impl Member {
    pub(crate) fn join(&self, member: u64) -> MemberEvent {
        MemberEvent::Joined { member }
    }

    pub(crate) fn leave(&self, member: u64) -> MemberEvent {
        MemberEvent::Left { member }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum LetterEvent {
    Sent { greeting: u32 },
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "letters", event = LetterEvent, error = Infallible)]
struct Letters {
    greetings: Vec<u32>,
}

impl Letters {
    fn apply(&mut self, event: LetterEvent) {
        let LetterEvent::Sent { greeting } = event;
        self.greetings.push(greeting);
    }
}

#[command_handler]
impl Letters {
    pub(crate) fn send(&self, greeting: u32) -> LetterEvent {
        LetterEvent::Sent { greeting }
    }
}

/// Welcomes a member each time they join; their leaving ends the instance. The greeting counts
/// the joins the instance has seen, so a stale state would show.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Welcome {
    joins: u32,
}

#[saga(name = "welcome")]
impl Welcome {
    fn route(input: &WelcomeInput) -> Route {
        match input {
            WelcomeInput::Member(MemberEvent::Joined { member }) => Route::start(member),
            WelcomeInput::Member(MemberEvent::Left { member }) => Route::stop(member),
        }
    }

    #[on(Member)]
    fn on_member(&mut self, event: MemberEvent, saga: &mut SagaContext) {
        if let MemberEvent::Joined { member } = event {
            self.joins += 1;
            saga.send::<Letters>(
                member,
                LettersCommand::Send {
                    greeting: self.joins,
                },
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_instance_that_meets_a_new_start_begins_afresh() {
    let store = MemStore::new();
    let members = Repository::<Member, _>::new(store.clone());
    let letters = Repository::<Letters, _>::new(store.clone());
    let sagas = MemorySagaStore::new();
    let runner = SagaProcessor::<Welcome, _, _>::new(
        store.clone(),
        CommandBus::new().register(letters.clone()),
        sagas.clone(),
    )
    .runner()
    .failure_policy(FailurePolicy::Stop);

    members
        .execute(5, MemberCommand::Join { member: 5 })
        .await
        .expect("joins");
    members
        .execute(5, MemberCommand::Leave { member: 5 })
        .await
        .expect("leaves");
    runner.catch_up().await.expect("runs");
    let instance = sagas
        .instance("welcome", "5")
        .await
        .expect("readable")
        .expect("stored");
    assert!(instance.finished);

    let rejoined = members
        .execute(5, MemberCommand::Join { member: 5 })
        .await
        .expect("joins again");
    runner.catch_up().await.expect("runs");
    let instance = sagas
        .instance("welcome", "5")
        .await
        .expect("readable")
        .expect("stored");
    assert!(!instance.finished, "started again");
    assert_eq!(
        instance.state,
        serde_json::json!({ "joins": 1 }),
        "from scratch"
    );
    assert_eq!(instance.position, rejoined.position.expect("wrote"));
    // Welcomed twice, each time by a fresh instance.
    assert_eq!(
        letters.load(5).await.expect("loads").state.greetings,
        [1, 1]
    );
    assert_eq!(runner.processor().report().handled, 3);
}

/// What a door did; it names no door (public, as the watch saga's input is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub enum DoorEvent {
    /// It opened.
    Opened,
    /// It closed.
    Closed,
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "door", event = DoorEvent, error = Infallible)]
struct Door;

impl Door {
    fn apply(&mut self, _: DoorEvent) {}
}

#[command_handler]
impl Door {
    pub(crate) fn open(&self) -> DoorEvent {
        DoorEvent::Opened
    }

    pub(crate) fn close(&self) -> DoorEvent {
        DoorEvent::Closed
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum AlarmEvent {
    Armed,
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "alarm", event = AlarmEvent, error = Infallible)]
struct Alarm {
    armed: u32,
}

impl Alarm {
    fn apply(&mut self, _: AlarmEvent) {
        self.armed += 1;
    }
}

#[command_handler]
impl Alarm {
    pub(crate) fn arm(&self) -> AlarmEvent {
        AlarmEvent::Armed
    }
}

/// Arms the alarm of a door while it is open. Door events carry no id: the route and the
/// handler take it from the stream.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Watch {
    door: String,
}

#[saga(name = "watch")]
impl Watch {
    fn route(input: &WatchInput, event: &EventContext<'_>) -> Route {
        match input {
            WatchInput::Door(DoorEvent::Opened) => Route::start(event.aggregate_id()),
            WatchInput::Door(DoorEvent::Closed) => Route::stop(event.aggregate_id()),
        }
    }

    #[on(Door)]
    fn on_door(&mut self, event: DoorEvent, saga: &mut SagaContext) -> Result<(), HandlerError> {
        let door = saga
            .event()
            .map(|event| event.aggregate_id().to_owned())
            .ok_or("a door event without its stream")?;
        if event == DoorEvent::Opened {
            saga.send::<Alarm>(&door, AlarmCommand::Arm);
            self.door = door;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_takes_the_instance_id_from_the_events_stream() {
    let store = MemStore::new();
    let doors = Repository::<Door, _>::new(store.clone());
    let alarms = Repository::<Alarm, _>::new(store.clone());
    let sagas = MemorySagaStore::new();
    let handle = SagaProcessor::<Watch, _, _>::new(
        store.clone(),
        CommandBus::new().register(alarms.clone()),
        sagas.clone(),
    )
    .runner()
    .failure_policy(FailurePolicy::Stop)
    .spawn();

    doors
        .execute("front", DoorCommand::Open)
        .await
        .expect("opens");
    doors
        .execute("back", DoorCommand::Open)
        .await
        .expect("opens");
    let closed = doors
        .execute("front", DoorCommand::Close)
        .await
        .expect("closes");
    handle
        .wait_for(closed.position, WAIT)
        .await
        .expect("handles them");
    handle.shutdown().await;

    assert_eq!(alarms.load("front").await.expect("loads").state.armed, 1);
    assert_eq!(alarms.load("back").await.expect("loads").state.armed, 1);
    let instances: Vec<(String, bool, serde_json::Value)> = sagas
        .instances("watch")
        .into_iter()
        .map(|record| (record.instance, record.finished, record.state))
        .collect();
    assert_eq!(
        instances,
        [
            (
                "back".to_owned(),
                false,
                serde_json::json!({ "door": "back" })
            ),
            (
                "front".to_owned(),
                true,
                serde_json::json!({ "door": "front" })
            ),
        ]
    );

    // The same route and handler, given a stream by the test.
    Watch::given::<DoorEvent>([])
        .when_in("door-side", DoorEvent::Opened)
        .then_expect_commands([SagaCommand::to::<Alarm>("side", AlarmCommand::Arm)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_resume_returns_the_status_no_longer_says_failed() {
    let store = MemStore::new();
    let refuse = Arc::new(AtomicBool::new(false));
    let model = MemoryReadModel::new();
    let handle = spawn(
        &store,
        AvailableSeats::refusing(&refuse),
        &model,
        FailurePolicy::Stop,
    );
    for round in 0..20 {
        refuse.store(true, Ordering::SeqCst);
        let head = write_show(&store, &round.to_string(), &[REFUSED.0]).await;
        handle
            .wait_until(WAIT, |status| status.state == ProcessorState::Failed)
            .await
            .expect("fails at the refused reservation");

        refuse.store(false, Ordering::SeqCst);
        handle.resume().await.expect("resumes");
        // Read your own resume: a wait right after it must not find the old failure.
        assert_ne!(
            handle.last_status().state,
            ProcessorState::Failed,
            "round {round}"
        );
        handle.wait_for(head, WAIT).await.expect("goes on");
    }
    handle.shutdown().await;
    assert_eq!(model.snapshot().0, caught_up_from_zero(&store).await);
}
