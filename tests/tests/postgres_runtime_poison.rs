//! Bad rows under the one runtime, on PostgreSQL: a corrupt row in a stream the processors do
//! not read never reaches them; a poison event in a stream they read is parked (one dead letter
//! each, everything after it handled), and retried after the row is fixed it is handled once.

use cqrs_tests::meters::{Bonus, Ledger, LedgerEvent, Meter, MeterCommand, MeterEvent};
use std::collections::BTreeMap;
use std::time::Duration;

use cqrs_core::prelude::*;
use cqrs_core::processor::{ControlError, FailureKind, FailurePolicy, Processor as _};
use cqrs_core::projection::EventContext;
use cqrs_core::saga::{CommandBus, SagaProcessor};
use cqrs_core::{EventId, EventStore, ExpectedVersion, LogEntry, Metadata, NewEvent, Position};
use cqrs_postgres::testing::TestCluster;
use cqrs_postgres::{
    PostgresProjection, PostgresProjector, PostgresSagaStore, PostgresStore, Transaction,
};

const PATIENCE: Duration = Duration::from_secs(30);

struct Usage;

#[cqrs_postgres::async_trait]
impl PostgresProjection for Usage {
    const NAME: &'static str = "poison_usage";
    const AGGREGATES: &'static [&'static str] = &["meter"];
    type Event = MeterEvent;
    type Error = cqrs_postgres::tokio_postgres::Error;

    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        MeterEvent::Read { kwh, .. }: MeterEvent,
        context: &EventContext<'_>,
    ) -> Result<(), Self::Error> {
        let kwh = i64::try_from(kwh).unwrap_or(i64::MAX);
        transaction
            .execute(
                "INSERT INTO poison_usage (meter, kwh, readings) VALUES ($1, $2, 1) \
                 ON CONFLICT (meter) DO UPDATE SET kwh = poison_usage.kwh + $2, \
                 readings = poison_usage.readings + 1",
                &[&context.aggregate_id(), &kwh],
            )
            .await?;
        Ok(())
    }

    async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), Self::Error> {
        transaction.batch_execute("TRUNCATE poison_usage").await
    }
}

async fn usage(store: &PostgresStore) -> BTreeMap<String, (i64, i64)> {
    let client = store.pool().get().await.expect("client");
    client
        .query("SELECT meter, kwh, readings FROM poison_usage", &[])
        .await
        .expect("query")
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect()
}

async fn credits(store: &PostgresStore) -> Vec<String> {
    // (`read_all` would fail on the corrupt row; the ledger's own part of the log does not.)
    store
        .read_log(Position::START, usize::MAX, &["ledger"])
        .await
        .expect("read the ledger")
        .entries
        .into_iter()
        .map(|entry| match entry {
            LogEntry::Event(event) => {
                let LedgerEvent::Credited { source } = event.decode().expect("decode");
                source
            }
            LogEntry::Unreadable(row) => panic!("{row}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_rows_are_kept_to_themselves_and_poison_is_parked_then_retried_once() {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");
    let store = PostgresStore::new(&url).expect("store");
    store.migrate().await.expect("migrate");
    let client = store.pool().get().await.expect("client");
    client
        .batch_execute(
            "CREATE TABLE poison_usage (meter text PRIMARY KEY, kwh bigint NOT NULL, readings bigint NOT NULL)",
        )
        .await
        .expect("table");
    let meters = Repository::<Meter, _>::new(store.clone());
    let ledgers = Repository::<Ledger, _>::new(store.clone());

    meters
        .execute(
            1,
            MeterCommand::Read {
                kwh: 1,
                bonus: true,
            },
        )
        .await
        .expect("read");
    // A row of another aggregate whose headers are not a map: unreadable, and nobody's business.
    let other = StreamId::new("other-1").expect("stream");
    let other_event = NewEvent::encode(
        &MeterEvent::Read {
            kwh: 100,
            bonus: true,
        },
        Metadata::default(),
    )
    .expect("encode");
    store
        .append(&other, ExpectedVersion::NoStream, vec![other_event])
        .await
        .expect("append");
    client
        .execute(
            "UPDATE cqrs_events SET headers = '[1, 2]' WHERE stream = 'other-1'",
            &[],
        )
        .await
        .expect("corrupt the headers");
    // A poison event in a stream both processors read: its payload does not fit.
    let poison = NewEvent {
        event_id: EventId::new(),
        event_type: "Read".into(),
        schema_version: 1,
        payload: br#"{"kwh":"five","bonus":true}"#.to_vec().into(),
        metadata: Metadata::default(),
    };
    let poison_id = poison.event_id;
    let poisoned = store
        .append(
            &StreamId::for_aggregate("meter", "2").expect("stream"),
            ExpectedVersion::NoStream,
            vec![poison],
        )
        .await
        .expect("append")
        .position
        .expect("position");
    // (Meter 2 itself cannot take commands now: its stream does not load.)
    meters
        .execute(
            5,
            MeterCommand::Read {
                kwh: 2,
                bonus: false,
            },
        )
        .await
        .expect("read");
    let last = meters
        .execute(
            3,
            MeterCommand::Read {
                kwh: 3,
                bonus: true,
            },
        )
        .await
        .expect("read")
        .position
        .expect("position");

    let projection = PostgresProjector::new(Usage, store.clone())
        .runner()
        .failure_policy(FailurePolicy::Skip)
        .spawn();
    let saga = SagaProcessor::<Bonus, _, _>::new(
        store.clone(),
        CommandBus::new().register(ledgers.clone()),
        PostgresSagaStore::new(store.clone()),
    )
    .runner()
    .failure_policy(FailurePolicy::Skip)
    .spawn();
    projection
        .wait_for(last, PATIENCE)
        .await
        .expect("the projection went on");
    saga.wait_for(last, PATIENCE)
        .await
        .expect("the saga went on");

    // Everything but the poison, once; the corrupt row was never seen.
    assert_eq!(
        usage(&store).await,
        BTreeMap::from([
            ("1".to_owned(), (1, 1)),
            ("3".to_owned(), (3, 1)),
            ("5".to_owned(), (2, 1))
        ])
    );
    assert_eq!(credits(&store).await.len(), 2, "meters 1 and 3 credited");
    for handle in [&projection, &saga] {
        let letters = handle.dead_letters().await.expect("dead letters");
        assert_eq!(
            letters.len(),
            1,
            "{}: one dead letter: {letters:?}",
            handle.name()
        );
        let failure = &letters[0].failure;
        assert_eq!(failure.kind, FailureKind::Decode);
        let event = failure.event.as_ref().expect("an event");
        assert_eq!(
            (event.position, event.stream.as_str(), event.event_id),
            (poisoned, "meter-2", Some(poison_id))
        );
        assert_eq!(handle.status().await.dead_letters, 1);
        // Still poison: the retry fails and the dead letter stays.
        let retried = handle.retry_dead_letter(&letters[0].id).await;
        assert!(
            matches!(retried, Err(ControlError::Failed(_))),
            "{retried:?}"
        );
        assert_eq!(handle.dead_letters().await.expect("dead letters").len(), 1);
    }

    // The fix, then the retries: applied once each.
    let position = i64::try_from(poisoned.0).expect("position");
    client
        .execute(
            "UPDATE cqrs_events SET payload = convert_to('{\"kwh\":5,\"bonus\":true}', 'UTF8') WHERE position = $1",
            &[&position],
        )
        .await
        .expect("fix the row");
    for handle in [&projection, &saga] {
        let id = handle.dead_letters().await.expect("dead letters")[0]
            .id
            .clone();
        handle
            .retry_dead_letter(&id)
            .await
            .expect("the retry applies");
        assert!(
            handle
                .dead_letters()
                .await
                .expect("dead letters")
                .is_empty()
        );
        let again = handle.retry_dead_letter(&id).await;
        assert!(
            matches!(again, Err(ControlError::UnknownDeadLetter { .. })),
            "{again:?}"
        );
        assert_eq!(handle.status().await.dead_letters, 0);
    }
    assert_eq!(
        usage(&store).await.get("2"),
        Some(&(5, 1)),
        "the fixed event applied once"
    );
    let credited = credits(&store).await;
    assert_eq!(credited.len(), 3);
    assert_eq!(
        credited
            .iter()
            .filter(|source| **source == poison_id.to_string())
            .count(),
        1,
        "the fixed event's saga command applied once"
    );

    // And they go on.
    let next = meters
        .execute(
            4,
            MeterCommand::Read {
                kwh: 4,
                bonus: false,
            },
        )
        .await
        .expect("read")
        .position
        .expect("position");
    projection.wait_for(next, PATIENCE).await.expect("goes on");
    saga.wait_for(next, PATIENCE).await.expect("goes on");
    assert_eq!(usage(&store).await.get("4"), Some(&(4, 1)));
    println!(
        "corrupt row at position {} unseen; poison at {poisoned} parked and retried once by both",
        poisoned.0 - 1
    );
    projection.shutdown().await;
    saga.shutdown().await;
}
