//! The processor conformance suites against the PostgreSQL backend: a projection into a table
//! through `PostgresProjector`, and the `PostgresSagaStore`, each check on a fresh database of
//! the shared test cluster.

use cqrs_core::Position;
use cqrs_core::projection::EventContext;
use cqrs_postgres::testing::TestCluster;
use cqrs_postgres::{
    PostgresProjection, PostgresProjector, PostgresSagaStore, PostgresStore, Transaction,
};
use cqrs_tests::processors::{TALLY, Tally, TallyEvent, TallyRefused};

/// The tally as SQL: every applied event's position, in the order applied.
struct TallyTable;

/// Why [`TallyTable`] failed.
#[derive(Debug, thiserror::Error)]
enum TallyError {
    #[error(transparent)]
    Refused(#[from] TallyRefused),
    #[error(transparent)]
    Database(#[from] cqrs_postgres::tokio_postgres::Error),
}

#[cqrs_postgres::async_trait]
impl PostgresProjection for TallyTable {
    const NAME: &'static str = "tally_table";
    const AGGREGATES: &'static [&'static str] = &[TALLY];
    type Event = TallyEvent;
    type Error = TallyError;

    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        TallyEvent::Counted { fail }: TallyEvent,
        context: &EventContext<'_>,
    ) -> Result<(), TallyError> {
        if fail {
            return Err(TallyRefused.into());
        }
        let position = i64::try_from(context.position.0).unwrap_or(i64::MAX);
        transaction
            .execute(
                "INSERT INTO tally_applied (position) VALUES ($1)",
                &[&position],
            )
            .await?;
        Ok(())
    }

    async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), TallyError> {
        Ok(transaction.batch_execute("TRUNCATE tally_applied").await?)
    }
}

async fn fresh_store() -> PostgresStore {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");
    let store = PostgresStore::new(&url).expect("store");
    store.migrate().await.expect("migrate");
    store
}

async fn postgres_tally() -> Tally<PostgresProjector<TallyTable>> {
    let store = fresh_store().await;
    store
        .pool()
        .get()
        .await
        .expect("client")
        .batch_execute(
            "CREATE TABLE tally_applied (seq bigserial PRIMARY KEY, position bigint NOT NULL)",
        )
        .await
        .expect("table");
    let reader = store.clone();
    Tally {
        processor: PostgresProjector::new(TallyTable, store),
        applied: Box::new(move |_| {
            let reader = reader.clone();
            Box::pin(async move {
                let client = reader.pool().get().await.expect("client");
                client
                    .query("SELECT position FROM tally_applied ORDER BY seq", &[])
                    .await
                    .expect("query")
                    .iter()
                    .map(|row| Position(u64::try_from(row.get::<_, i64>(0)).expect("position")))
                    .collect()
            })
        }),
    }
}

cqrs_tests::processor_tests!(postgres_tally(), exclusive = true);

cqrs_tests::saga_store_tests!(async { PostgresSagaStore::new(fresh_store().await) });
