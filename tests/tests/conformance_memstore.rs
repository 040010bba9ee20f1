//! The store conformance suite against [`MemStore`](cqrs_memstore::MemStore), plain and in its
//! yielding mode.

cqrs_tests::conformance_tests!(async { cqrs_memstore::MemStore::new() });

/// The suite's own entry point for running every check in one go, used once so that it stays
/// callable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_checks_in_one_test() {
    cqrs_tests::conformance::run_all(|| async { cqrs_memstore::MemStore::new() }).await;
}

/// The suite again against [`MemStore::yielding`](cqrs_memstore::MemStore::yielding), whose calls
/// interleave: its concurrency checks then race for real, as they do against PostgreSQL, and the
/// other checks show that yielding changes no result.
mod yielding {
    use std::sync::Arc;

    use cqrs_core::{
        EventId, EventStore, ExpectedVersion, NewEvent, StoreError, StreamId, Version,
    };
    use cqrs_memstore::MemStore;
    use tokio::sync::Barrier;

    cqrs_tests::conformance_tests!(async { cqrs_memstore::MemStore::yielding() });

    const TASKS: u64 = 16;
    const ROUNDS: u64 = 20;

    /// What the writers of [`race`] saw.
    #[derive(Debug, Default)]
    struct Tally {
        /// Appends refused because another writer appended between the read and the append.
        conflicts: u64,
        /// Writers whose first append was refused.
        writers_that_lost_a_race: u64,
    }

    /// `ROUNDS` times, on a fresh stream: `TASKS` writers start together, each reads the stream's
    /// version, decides at once (no `.await` between the read and the append) and appends one
    /// event at exactly that version, reading again after a conflict until its event is in.
    async fn race(store: MemStore) -> Tally {
        let mut tally = Tally::default();
        for round in 0..ROUNDS {
            let stream = StreamId::new(format!("race-{round}")).expect("valid stream id");
            let barrier = Arc::new(Barrier::new(TASKS as usize));
            let writers: Vec<_> = (0..TASKS)
                .map(|_| {
                    let (store, stream, barrier) =
                        (store.clone(), stream.clone(), Arc::clone(&barrier));
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let mut conflicts = 0;
                        loop {
                            let read = store
                                .read_stream(&stream, Version(1), usize::MAX)
                                .await
                                .expect("read_stream");
                            let expected = ExpectedVersion::Exact(Version(read.len() as u64));
                            let event = NewEvent {
                                event_id: EventId::new(),
                                event_type: "Counted".into(),
                                schema_version: 1,
                                payload: "{}".into(),
                                metadata: Default::default(),
                            };
                            match store.append(&stream, expected, vec![event]).await {
                                Ok(_) => return conflicts,
                                Err(StoreError::Conflict { .. }) => conflicts += 1,
                                Err(error) => panic!("append failed: {error}"),
                            }
                        }
                    })
                })
                .collect();
            for writer in writers {
                let conflicts = writer.await.expect("writer finished");
                tally.conflicts += conflicts;
                tally.writers_that_lost_a_race += u64::from(conflicts > 0);
            }
            let written = store
                .read_stream(&stream, Version(1), usize::MAX)
                .await
                .expect("read_stream");
            assert_eq!(
                written.len() as u64,
                TASKS,
                "every writer's event is in, once"
            );
        }
        tally
    }

    /// The yielding store makes writers that read, decide and append at once collide, where the
    /// plain store lets each of them run its whole cycle alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn read_decide_append_cycles_interleave() {
        let plain = race(MemStore::new()).await;
        let yielding = race(MemStore::yielding()).await;
        println!(
            "{ROUNDS} rounds of {TASKS} writers on one stream, 4 worker threads: \
             plain store {} conflicts ({} writers lost a race), \
             yielding store {} conflicts ({} writers lost a race)",
            plain.conflicts,
            plain.writers_that_lost_a_race,
            yielding.conflicts,
            yielding.writers_that_lost_a_race,
        );
        assert!(
            yielding.conflicts > 0,
            "no writer of the yielding store ever lost a race: {yielding:?}"
        );
    }

    /// On one thread the difference is exact: the plain store never conflicts, since no call of
    /// it ever gives the thread away; the yielding store does.
    #[tokio::test(flavor = "current_thread")]
    async fn on_one_thread_only_the_yielding_store_conflicts() {
        let plain = race(MemStore::new()).await;
        let yielding = race(MemStore::yielding()).await;
        println!(
            "{ROUNDS} rounds of {TASKS} writers on one stream, one thread: \
             plain store {} conflicts, yielding store {} conflicts ({} writers lost a race)",
            plain.conflicts, yielding.conflicts, yielding.writers_that_lost_a_race,
        );
        assert_eq!(plain.conflicts, 0, "{plain:?}");
        assert!(yielding.conflicts > 0, "{yielding:?}");
    }
}
