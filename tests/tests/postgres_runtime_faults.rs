//! The runtime across server restarts: while four writers send 20,000 commands, the PostgreSQL
//! server is stopped twice (fast, then immediate, down two seconds each) under a projection
//! into a table and a saga that sends a command for every tenth event. Both processors resume
//! by themselves (their status goes through `Reconnecting` and back to `Live`), the read model
//! equals the one a rebuild makes and the one computed from the log, and every saga command
//! was applied exactly once.

use cqrs_tests::meters::{Bonus, Ledger, LedgerEvent, Meter, MeterCommand, MeterEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cqrs_core::prelude::*;
use cqrs_core::processor::{Processor as _, ProcessorHandle, ProcessorState};
use cqrs_core::projection::EventContext;
use cqrs_core::saga::{CommandBus, SagaProcessor};
use cqrs_core::{EventStore, Position};
use cqrs_postgres::testing::{StopMode, TestCluster};
use cqrs_postgres::{
    PostgresProjection, PostgresProjector, PostgresSagaStore, PostgresStore, Transaction,
};

const WRITERS: u64 = 4;
const COMMANDS_PER_WRITER: u64 = 5_000;
const METERS: u64 = 100;
const PATIENCE: Duration = Duration::from_secs(180);

/// kWh and readings per meter, in the table `rt_usage`.
struct Usage;

#[cqrs_postgres::async_trait]
impl PostgresProjection for Usage {
    const NAME: &'static str = "rt_usage";
    const AGGREGATES: &'static [&'static str] = &["meter"];
    type Event = MeterEvent;
    type Error = cqrs_postgres::tokio_postgres::Error;

    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        MeterEvent::Read { kwh, .. }: MeterEvent,
        context: &EventContext<'_>,
    ) -> Result<(), Self::Error> {
        let upsert = transaction
            .prepare_cached(
                "INSERT INTO rt_usage (meter, kwh, readings) VALUES ($1, $2, 1) \
                 ON CONFLICT (meter) DO UPDATE SET kwh = rt_usage.kwh + $2, \
                 readings = rt_usage.readings + 1",
            )
            .await?;
        let kwh = i64::try_from(kwh).unwrap_or(i64::MAX);
        transaction
            .execute(&upsert, &[&context.aggregate_id(), &kwh])
            .await?;
        Ok(())
    }

    async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), Self::Error> {
        transaction.batch_execute("TRUNCATE rt_usage").await
    }
}

/// The states a processor went through until `done`: how many times it started reconnecting,
/// every kind of state it showed, and the last.
#[derive(Debug, Default)]
struct States {
    reconnections: u32,
    seen: BTreeSet<String>,
    last: String,
}

fn watch_states(
    handle: &ProcessorHandle,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<States> {
    let mut updates = handle.status_updates();
    tokio::spawn(async move {
        let mut states = States::default();
        loop {
            let kind = match &updates.borrow_and_update().state {
                ProcessorState::Reconnecting { .. } => "reconnecting".to_owned(),
                state => format!("{state:?}").to_lowercase(),
            };
            if kind == "reconnecting" && states.last != kind {
                states.reconnections += 1;
            }
            states.seen.insert(kind.clone());
            states.last = kind;
            if done.load(Ordering::SeqCst) {
                return states;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), updates.changed()).await;
        }
    })
}

async fn usage(store: &PostgresStore) -> BTreeMap<String, (i64, i64)> {
    let client = store.pool().get().await.expect("client");
    client
        .query("SELECT meter, kwh, readings FROM rt_usage", &[])
        .await
        .expect("query")
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processors_resume_after_the_server_restarts_twice() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start)
        .await
        .expect("task")
        .unwrap_or_else(|error| panic!("{error}"));
    let cluster = Arc::new(cluster);
    let url = cluster.create_database().await.expect("database");
    let store = PostgresStore::with_pool_size(&url, 8).expect("store");
    store.migrate().await.expect("migrate");
    store
        .pool()
        .get()
        .await
        .expect("client")
        .batch_execute(
            "CREATE TABLE rt_usage (meter text PRIMARY KEY, kwh bigint NOT NULL, readings bigint NOT NULL)",
        )
        .await
        .expect("table");
    let meters = Repository::<Meter, _>::new(store.clone());
    let ledgers = Repository::<Ledger, _>::new(store.clone());
    let bus = CommandBus::new().register(ledgers.clone());

    let projection = PostgresProjector::new(Usage, store.clone())
        .runner()
        .batch_size(200)
        .spawn();
    let saga = SagaProcessor::<Bonus, _, _>::new(
        store.clone(),
        bus,
        PostgresSagaStore::new(store.clone()),
    )
    .runner()
    .batch_size(100)
    .spawn();
    let done = Arc::new(AtomicBool::new(false));
    let projection_states = watch_states(&projection, done.clone());
    let saga_states = watch_states(&saga, done.clone());

    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let meters = meters.clone();
        writers.push(tokio::spawn(async move {
            let mut failed_attempts = 0u64;
            for n in 0..COMMANDS_PER_WRITER {
                let i = writer * COMMANDS_PER_WRITER + n;
                let command = MeterCommand::Read {
                    kwh: i % 7 + 1,
                    bonus: i % 10 == 0,
                };
                let metadata = CommandMetadata {
                    command_id: Some(CommandId::new(format!("reading-{i}")).expect("id")),
                    ..CommandMetadata::default()
                };
                // A command the server did not answer is sent again with the same id: it is
                // applied once whichever attempt got through.
                loop {
                    match meters
                        .execute_with(i % METERS, command.clone(), metadata.clone())
                        .await
                    {
                        Ok(_) => break,
                        Err(_) => {
                            failed_attempts += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
            failed_attempts
        }));
    }
    let restarts = {
        let cluster = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || {
            for mode in [StopMode::Fast, StopMode::Immediate] {
                std::thread::sleep(Duration::from_millis(1500));
                cluster
                    .restart(mode, Duration::from_secs(2))
                    .unwrap_or_else(|error| panic!("restart ({mode:?}): {error}"));
            }
        })
    };
    let mut failed_attempts = 0;
    for writer in writers {
        failed_attempts += tokio::time::timeout(PATIENCE, writer)
            .await
            .expect("a writer hung")
            .expect("writer");
    }
    restarts.await.expect("restarts");
    let written = started.elapsed();
    let head = store.head().await.expect("head");

    projection
        .wait_for(head, PATIENCE)
        .await
        .unwrap_or_else(|error| panic!("the projection did not resume: {error}"));
    // The saga writes ledger events after `head`; it has handled every reading once it is
    // past `head` and live.
    saga.wait_for(head, PATIENCE)
        .await
        .unwrap_or_else(|error| panic!("the saga did not resume: {error}"));
    for handle in [&projection, &saga] {
        handle
            .wait_until(PATIENCE, |status| status.state == ProcessorState::Live)
            .await
            .unwrap_or_else(|status| panic!("{} is not live: {status:?}", status.name));
    }
    let caught_up = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let projection_states = projection_states.await.expect("states");
    let saga_states = saga_states.await.expect("states");
    for (name, states) in [("projection", &projection_states), ("saga", &saga_states)] {
        assert!(
            states.reconnections > 0,
            "the {name} never showed Reconnecting: {states:?}"
        );
        assert_eq!(states.last, "live", "{name}: {states:?}");
    }

    // What the log says.
    let all = store
        .read_all(Position::START, usize::MAX)
        .await
        .expect("read all");
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut bonus_sources = BTreeSet::new();
    let mut credited = Vec::new();
    for event in &all {
        match event.stream.aggregate() {
            "meter" => {
                let MeterEvent::Read { kwh, bonus } = event.decode().expect("decode");
                let entry = expected
                    .entry(event.stream.aggregate_id().to_owned())
                    .or_default();
                entry.0 += i64::try_from(kwh).expect("kwh");
                entry.1 += 1;
                if bonus {
                    bonus_sources.insert(event.event_id.to_string());
                }
            }
            "ledger" => {
                let LedgerEvent::Credited { source } = event.decode().expect("decode");
                credited.push(source);
            }
            other => panic!("unexpected stream of {other}"),
        }
    }
    let readings: i64 = expected.values().map(|(_, readings)| readings).sum();
    assert_eq!(
        readings,
        i64::try_from(WRITERS * COMMANDS_PER_WRITER).expect("count"),
        "every command stored once"
    );
    assert_eq!(
        usage(&store).await,
        expected,
        "the read model equals the log"
    );
    let unique: BTreeSet<String> = credited.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        credited.len(),
        "a saga command was applied twice"
    );
    assert_eq!(
        unique, bonus_sources,
        "every saga command applied exactly once"
    );

    // A rebuild arrives at the same table.
    projection.rebuild().await.expect("rebuild");
    projection
        .wait_for(head, PATIENCE)
        .await
        .expect("the rebuild caught up");
    assert_eq!(
        usage(&store).await,
        expected,
        "the read model equals a rebuild"
    );

    let projection_status = projection.shutdown().await;
    let saga_status = saga.shutdown().await;
    println!(
        "{} commands in {written:?} across two restarts ({failed_attempts} attempts failed while \
         the server was away); both processors live again {:?} after the start; {} saga \
         commands applied once each; projection states {projection_states:?}, saga states \
         {saga_states:?}; last errors: projection {:?}, saga {:?}",
        WRITERS * COMMANDS_PER_WRITER,
        caught_up,
        credited.len(),
        projection_status
            .last_error
            .map(|failure| failure.to_string()),
        saga_status.last_error.map(|failure| failure.to_string()),
    );
    assert!(failed_attempts > 0, "no command met the restarts");
}
