//! The write path across server restarts: the PostgreSQL server is stopped (fast, then
//! immediate, each time down for two seconds) while writers race on a hot show with their cache
//! off (turns in play) and on cached shows. No writer hangs; while the server is down commands
//! fail with a backend or timeout error and nothing else (never a conflict or a decode error);
//! afterwards every writer goes on with the same store; every acknowledged command is stored
//! once, streams stay contiguous and positions dense.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use cqrs_core::{EventStore, ExecuteError, Position, Repository, StoreError, StreamId, Version};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowEvent};
use cqrs_postgres::PostgresStore;
use cqrs_postgres::testing::{StopMode, TestCluster};

const TASKS: u64 = 16;
const SHOWS: u64 = 4;
/// How long the writers go on after the second restart.
const AFTER: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_go_on_after_the_server_restarts() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start)
        .await
        .expect("task")
        .unwrap_or_else(|error| panic!("{error}"));
    let cluster = std::sync::Arc::new(cluster);
    let url = cluster.create_database().await.expect("database");
    let store = PostgresStore::with_pool_size(&url, 8).expect("store");
    store.migrate().await.expect("migrate");
    let uncached = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .build();
    let cached = Repository::<Show, _>::new(store.clone());
    uncached
        .execute("hot", ShowCommand::Schedule { capacity: 100_000 })
        .await
        .expect("schedule");
    for show in 0..SHOWS {
        cached
            .execute(show, ShowCommand::Schedule { capacity: 100_000 })
            .await
            .expect("schedule");
    }

    let started = Instant::now();
    // Set when the server is back for good; the writers stop `AFTER` that.
    let back = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (uncached, cached, back) = (uncached.clone(), cached.clone(), back.clone());
        tasks.push(tokio::spawn(async move {
            let (mut acknowledged, mut errors, mut after) = (Vec::new(), Vec::new(), 0);
            for n in 0.. {
                if back.get().is_some_and(|back| back.elapsed() > AFTER) {
                    break;
                }
                let booking = BookingId(task * 100_000 + n);
                let command = ShowCommand::ReserveSeats { booking, seats: 1 };
                let result = if n % 2 == 0 {
                    uncached.execute("hot", command).await
                } else {
                    cached.execute((task + n) % SHOWS, command).await
                };
                match result {
                    Ok(outcome) => {
                        acknowledged.push((outcome.stream, booking));
                        if back.get().is_some() {
                            after += 1;
                        }
                    }
                    Err(error) => errors.push(error),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (acknowledged, errors, after)
        }));
    }
    let restarts = {
        let (cluster, back) = (std::sync::Arc::clone(&cluster), back.clone());
        tokio::task::spawn_blocking(move || {
            for mode in [StopMode::Fast, StopMode::Immediate] {
                std::thread::sleep(Duration::from_millis(800));
                cluster
                    .restart(mode, Duration::from_secs(2))
                    .unwrap_or_else(|error| panic!("restart ({mode:?}): {error}"));
            }
            let _ = back.set(Instant::now());
        })
    };
    let mut acknowledged: BTreeMap<StreamId, HashSet<BookingId>> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        let (acks, errors, after) = tokio::time::timeout(Duration::from_secs(180), task)
            .await
            .expect("a writer hung")
            .expect("task");
        assert!(after > 0, "a writer did not go on after the restarts");
        for (stream, booking) in acks {
            assert!(
                acknowledged.entry(stream).or_default().insert(booking),
                "{booking:?} acknowledged twice"
            );
        }
        for error in errors {
            // Only what a server that is away says: never a conflict, a deadlock, a decode error.
            assert!(
                matches!(
                    error,
                    ExecuteError::Store(StoreError::Backend(_) | StoreError::Timeout { .. })
                ),
                "unexpected error: {error}"
            );
            let text = error.to_string();
            let kind = text.split(": ").take(3).collect::<Vec<_>>().join(": ");
            *kinds.entry(kind).or_default() += 1;
        }
    }
    restarts.await.expect("restarts");
    let acks: usize = acknowledged.values().map(HashSet::len).sum();
    let failed: usize = kinds.values().sum();
    println!(
        "two restarts in {:?}: {acks} commands acknowledged, {failed} failed while the server \
         was away: {kinds:?}",
        started.elapsed()
    );
    assert!(failed > 0, "no command met the restarts");

    // The same store goes on, on every show, at once.
    for show in ["hot".to_owned(), "0".to_owned()] {
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            uncached.execute(
                &show,
                ShowCommand::ReserveSeats {
                    booking: BookingId(999_999),
                    seats: 1,
                },
            ),
        )
        .await
        .expect("a command after the restarts hung")
        .expect("a command after the restarts");
        acknowledged
            .entry(outcome.stream)
            .or_default()
            .insert(BookingId(999_999));
    }

    // Every acknowledged command stored once; contiguous streams; dense positions.
    let mut stored_total = 0;
    for (stream, acks) in &acknowledged {
        let events = store
            .read_stream(stream, Version(1), usize::MAX)
            .await
            .expect("read");
        let mut stored = HashSet::new();
        for (index, event) in events.iter().enumerate() {
            assert_eq!(
                event.version,
                Version(index as u64 + 1),
                "{stream} contiguous"
            );
            if let ShowEvent::SeatsReserved { booking, .. } = event.decode().expect("decode") {
                assert!(
                    stored.insert(booking),
                    "{booking:?} stored twice in {stream}"
                );
            }
        }
        assert!(
            acks.is_subset(&stored),
            "{stream}: an acknowledged command is missing"
        );
        stored_total += events.len();
    }
    let all = store
        .read_all(Position::START, usize::MAX)
        .await
        .expect("read all");
    assert_eq!(all.len(), stored_total, "every event has a position");
    for (index, event) in all.iter().enumerate() {
        assert_eq!(
            event.position,
            Position(index as u64 + 1),
            "dense positions"
        );
    }
}
