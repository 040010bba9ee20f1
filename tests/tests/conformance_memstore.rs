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

/// The suite against a store that implements only what [`EventStore`](cqrs_core::EventStore)
/// requires (and turns only what [`StreamTurn`](cqrs_core::store::StreamTurn) requires), over
/// [`MemStore`](cqrs_memstore::MemStore): the trait's default methods, which a third-party store
/// inherits, keep the contract.
mod defaults {
    use cqrs_core::store::{AppendReceipt, CommandRecord, Snapshot, StreamTurn};
    use cqrs_core::{
        CommandId, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError,
        StreamId, Version,
    };
    use cqrs_memstore::MemStore;

    cqrs_tests::conformance_tests!(async { Minimal(MemStore::new()) });

    /// [`MemStore`] behind the required methods only.
    struct Minimal(MemStore);

    #[async_trait::async_trait]
    impl EventStore for Minimal {
        async fn append(
            &self,
            stream: &StreamId,
            expected: ExpectedVersion,
            events: Vec<NewEvent>,
        ) -> Result<AppendReceipt, StoreError> {
            self.0.append(stream, expected, events).await
        }

        async fn read_stream(
            &self,
            stream: &StreamId,
            from: Version,
            limit: usize,
        ) -> Result<Vec<RecordedEvent>, StoreError> {
            self.0.read_stream(stream, from, limit).await
        }

        async fn read_all(
            &self,
            after: Position,
            limit: usize,
        ) -> Result<Vec<RecordedEvent>, StoreError> {
            self.0.read_all(after, limit).await
        }

        async fn head(&self) -> Result<Position, StoreError> {
            self.0.head().await
        }

        async fn wait_for_events(&self, after: Position) -> Result<Position, StoreError> {
            self.0.wait_for_events(after).await
        }

        async fn save_snapshot(
            &self,
            stream: &StreamId,
            snapshot: Snapshot,
        ) -> Result<(), StoreError> {
            self.0.save_snapshot(stream, snapshot).await
        }

        async fn load_snapshot(
            &self,
            stream: &StreamId,
            schema_version: u32,
        ) -> Result<Option<Snapshot>, StoreError> {
            self.0.load_snapshot(stream, schema_version).await
        }

        async fn command_record(
            &self,
            stream: &StreamId,
            command_id: &CommandId,
        ) -> Result<Option<CommandRecord>, StoreError> {
            self.0.command_record(stream, command_id).await
        }

        async fn take_turn(
            &self,
            stream: &StreamId,
        ) -> Result<Option<Box<dyn StreamTurn>>, StoreError> {
            let turn = self.0.take_turn(stream).await?;
            Ok(turn.map(|turn| Box::new(MinimalTurn(turn)) as Box<dyn StreamTurn>))
        }
    }

    /// A [`MemStore`] turn behind the required methods only.
    struct MinimalTurn(Box<dyn StreamTurn>);

    #[async_trait::async_trait]
    impl StreamTurn for MinimalTurn {
        fn stream(&self) -> &StreamId {
            self.0.stream()
        }

        async fn visit_stream(
            &mut self,
            from: Version,
            limit: usize,
            visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
        ) -> Result<usize, StoreError> {
            self.0.visit_stream(from, limit, visit).await
        }

        async fn append(
            self: Box<Self>,
            expected: ExpectedVersion,
            events: Vec<NewEvent>,
        ) -> Result<AppendReceipt, StoreError> {
            self.0.append(expected, events).await
        }
    }
}
