//! `mem_projection_catchup`: a projection catching up on 1,000,000 events from the in-memory
//! store into an in-memory read model (seats available per show); the same catch-up from other
//! stores.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use cqrs_core::processor::Processor as _;
use cqrs_core::projection::{EventContext, MemoryReadModel, Projection, Projector};
use cqrs_core::{EventStore, ExpectedVersion, StreamId, Version};
use cqrs_examples::show::ShowEvent;
use cqrs_memstore::MemStore;

use crate::{BenchResult, per_second, report};

/// Seats available per show id.
struct AvailableSeats;

impl Projection for AvailableSeats {
    const NAME: &'static str = "available_seats";
    const AGGREGATES: &'static [&'static str] = &["show"];
    type Event = ShowEvent;
    type ReadModel = HashMap<String, i64>;
    type Error = Infallible;

    fn apply(
        &self,
        seats: &mut Self::ReadModel,
        event: ShowEvent,
        context: &EventContext<'_>,
    ) -> Result<(), Infallible> {
        let show = context.aggregate_id();
        // Looked up by `&str` first: only a show's first event allocates its key.
        let available = match seats.get_mut(show) {
            Some(available) => available,
            None => seats.entry(show.to_owned()).or_default(),
        };
        match event {
            ShowEvent::Scheduled { capacity } => *available = i64::from(capacity),
            ShowEvent::SeatsReserved { seats, .. } => *available -= i64::from(seats),
            ShowEvent::ReservationCancelled { seats, .. } => *available += i64::from(seats),
        }
        Ok(())
    }
}

/// `mem_projection_catchup`: 1,000 shows of 1,000 events each (scheduled, then 999 one-seat
/// reservations), written first; then the time from starting the runner until it has applied
/// the last event, in batches of 1,000.
pub(crate) async fn mem_projection_catchup() -> BenchResult {
    catchup("mem_projection_catchup", MemStore::new(), 1_000, 1_000).await
}

/// `name`: `shows` shows of `events_per_show` events each written to `store`, then the time an
/// in-memory projection takes to catch up on them from position 0, in batches of 1,000.
pub(crate) async fn catchup<S>(
    name: &str,
    store: S,
    shows: u64,
    events_per_show: u64,
) -> BenchResult
where
    S: EventStore + Clone + 'static,
{
    for show in 0..shows {
        let stream = StreamId::for_aggregate("show", show)?;
        let events = crate::show_history(0..events_per_show, events_per_show)?;
        store
            .append(&stream, ExpectedVersion::Exact(Version(0)), events)
            .await?;
    }
    let head = store.head().await?;

    let read_model = MemoryReadModel::new();
    let started = Instant::now();
    let projection = Projector::new(AvailableSeats, store.clone(), read_model.clone())
        .runner()
        .batch_size(1_000)
        .spawn();
    projection.wait_for(head, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed();
    projection.shutdown().await;

    let wrong = read_model.read(|seats| {
        seats.len() != shows as usize || seats.values().any(|available| *available != 1)
    });
    if wrong {
        return Err("the read model does not hold one seat left per show".into());
    }
    report(name, per_second(head.0, elapsed), "events/s");
    Ok(())
}
