//! The seat-reservation proof: many concurrent writers on one show never oversell it, every
//! command ends, and no conflict reaches the caller.

use std::time::Duration;

use cqrs_core::{EventStore, ExecuteError, Repository, StreamId, Version};
use cqrs_examples::latency::RoundTrip;
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowError, ShowEvent};
use cqrs_memstore::MemStore;

const TASKS: u64 = 8;
const COMMANDS_PER_TASK: u64 = 1000;

struct Tally {
    reserved: u64,
    sold_out: u64,
    retries: u64,
}

/// 8 tasks x 1000 reserve(1) on one show of `capacity`, through `nodes` (repositories that
/// share one store, as application nodes would); checks the invariant and returns the tally.
async fn race<S: EventStore>(capacity: u32, nodes: Vec<Repository<Show, S>>, store: &S) -> Tally {
    nodes[0]
        .execute("race", ShowCommand::Schedule { capacity })
        .await
        .expect("schedules");
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let shows = nodes[task as usize % nodes.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                reserved: 0,
                sold_out: 0,
                retries: 0,
            };
            for n in 0..COMMANDS_PER_TASK {
                let booking = BookingId(task * COMMANDS_PER_TASK + n);
                match shows
                    .execute("race", ShowCommand::ReserveSeats { booking, seats: 1 })
                    .await
                {
                    Ok(outcome) => {
                        assert_eq!(outcome.events.len(), 1);
                        tally.reserved += 1;
                        tally.retries += u64::from(outcome.attempts - 1);
                    }
                    Err(ExecuteError::Domain(ShowError::SoldOut {
                        requested: 1,
                        available: 0,
                    })) => {
                        tally.sold_out += 1;
                    }
                    Err(other) => panic!("a command failed with {other:?}"),
                }
            }
            tally
        }));
    }
    let mut total = Tally {
        reserved: 0,
        sold_out: 0,
        retries: 0,
    };
    for task in tasks {
        let tally = task.await.expect("task finished");
        total.reserved += tally.reserved;
        total.sold_out += tally.sold_out;
        total.retries += tally.retries;
    }

    // Every command ended one way or the other.
    assert_eq!(total.reserved + total.sold_out, TASKS * COMMANDS_PER_TASK);

    // The stored stream: contiguous versions, exactly the acknowledged reservations.
    let stream = StreamId::for_aggregate("show", "race").expect("valid");
    let events = store
        .read_stream(&stream, Version(1), usize::MAX)
        .await
        .expect("reads");
    for (index, event) in events.iter().enumerate() {
        assert_eq!(
            event.version,
            Version(index as u64 + 1),
            "versions are not contiguous"
        );
    }
    let stored_reservations = events
        .iter()
        .filter(|event| {
            matches!(
                event.decode::<ShowEvent>(),
                Ok(ShowEvent::SeatsReserved { .. })
            )
        })
        .count() as u64;
    assert_eq!(
        stored_reservations, total.reserved,
        "acknowledged and stored reservations differ"
    );

    let show = nodes[0].load("race").await.expect("loads");
    assert_eq!(u64::from(show.state.reserved()), total.reserved);
    assert!(
        show.state.reserved() <= capacity,
        "oversold: {} of {capacity}",
        show.state.reserved()
    );
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_fill_4000_seats_exactly() {
    let store = MemStore::new();
    let tally = race(4000, vec![Repository::new(store.clone())], &store).await;
    assert_eq!((tally.reserved, tally.sold_out), (4000, 4000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_uncached_writers_fill_4000_seats_exactly_through_retries() {
    // No cache: every command loads the show (from a snapshot) and races the others, so
    // conflicts happen and are retried on fresh state. Yielding before every read and append
    // makes the writers interleave between load and append even on a busy machine.
    let store = RoundTrip::new(MemStore::new(), Duration::ZERO);
    let shows = Repository::builder(store.clone())
        .cache(0)
        .snapshot_every(50)
        .build();
    let tally = race(4000, vec![shows], &store).await;
    assert_eq!((tally.reserved, tally.sold_out), (4000, 4000));
    assert!(
        tally.retries > 0,
        "no writer ever lost a race: the retry path was not exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_nodes_with_their_own_caches_fill_4000_seats_exactly() {
    let store = RoundTrip::new(MemStore::new(), Duration::ZERO);
    let nodes = (0..4).map(|_| Repository::new(store.clone())).collect();
    let tally = race(4000, nodes, &store).await;
    assert_eq!((tally.reserved, tally.sold_out), (4000, 4000));
    assert!(
        tally.retries > 0,
        "no node ever lost a race: the retry path was not exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_get_exactly_100_seats() {
    let store = MemStore::new();
    let shows = Repository::builder(store.clone()).cache(0).build();
    let tally = race(100, vec![shows], &store).await;
    assert_eq!((tally.reserved, tally.sold_out), (100, 7900));
}
