//! The one processor runtime, in memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cqrs_core::prelude::*;
use cqrs_core::processor::{FailurePolicy, Processor as _, ProcessorHandle, ProcessorState};
use cqrs_core::projection::{EventContext, MemoryReadModel, Projection, Projector};
use cqrs_core::{EventStore, Position};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowEvent};
use cqrs_memstore::MemStore;

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
