//! Following the global log: every event once, in order, and waiting without polling.

use std::time::Duration;

use cqrs_core::subscription::LogFollower;
use cqrs_core::{Position, Repository};
use cqrs_examples::show::{BookingId, Show, ShowCommand};
use cqrs_memstore::MemStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_every_event_once_while_writers_append() {
    let store = MemStore::new();
    let shows = Repository::<Show, _>::new(store.clone());
    let mut follower = LogFollower::new(store.clone(), Position::START, 7);

    let writer = tokio::spawn(async move {
        for show in 0..20u64 {
            shows
                .execute(show, ShowCommand::Schedule { capacity: 5 })
                .await
                .expect("schedules");
            for booking in 0..4 {
                let command = ShowCommand::ReserveSeats {
                    booking: BookingId(booking),
                    seats: 1,
                };
                shows.execute(show, command).await.expect("reserves");
            }
        }
    });

    let mut seen = Vec::new();
    while seen.len() < 100 {
        let batch = tokio::time::timeout(Duration::from_secs(10), follower.next_batch())
            .await
            .expect("a batch arrives")
            .expect("reads");
        assert!(!batch.is_empty() && batch.len() <= 7);
        seen.extend(batch.into_iter().map(|event| event.position.0));
    }
    writer.await.expect("writer finished");
    assert_eq!(seen, (1..=100).collect::<Vec<_>>());
    assert_eq!(follower.position(), Position(100));

    // Caught up: the next batch waits for a new event instead of returning empty.
    let waiting = tokio::time::timeout(Duration::from_millis(100), follower.next_batch()).await;
    assert!(waiting.is_err(), "next_batch returned without a new event");
    follower.seek(Position(98));
    assert_eq!(follower.poll_batch().await.expect("reads").len(), 2);
}
