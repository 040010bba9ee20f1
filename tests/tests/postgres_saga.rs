//! The checkout saga end to end on PostgreSQL (`cqrs_tests::checkout`): events in a
//! [`PostgresStore`], saga state, deadlines and checkpoint in a [`PostgresSagaStore`]. A restart
//! is a new pool on the same database.

use cqrs_core::StoreError;
use cqrs_core::saga::InstanceRecord;
use cqrs_postgres::testing::TestCluster;
use cqrs_postgres::{PostgresSagaStore, PostgresStore};
use cqrs_tests::checkout::{self, Backend};

/// A fresh database on the shared test cluster, migrated.
struct PostgresDatabase(PostgresStore);

impl PostgresDatabase {
    async fn new() -> Self {
        let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
        let url = cluster.create_database().await.expect("database");
        let store = PostgresStore::with_pool_size(&url, 4).expect("store");
        store.migrate().await.expect("migrate");
        PostgresDatabase(store)
    }
}

impl Backend for PostgresDatabase {
    type Store = PostgresStore;
    type Sagas = PostgresSagaStore;

    async fn open(&self) -> (PostgresStore, PostgresSagaStore) {
        let store = PostgresStore::from_config(self.0.config().clone(), 4).expect("store");
        let sagas = PostgresSagaStore::new(store.clone());
        (store, sagas)
    }

    async fn instances(
        sagas: &PostgresSagaStore,
        saga: &str,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        sagas.instances(saga).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_confirms_paid_bookings_releases_declined_ones_and_a_replay_writes_nothing() {
    checkout::checkout_confirms_paid_bookings_releases_declined_ones_and_a_replay_writes_nothing(
        PostgresDatabase::new().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_deadline_is_stored_and_fires_once_after_a_restart() {
    checkout::the_payment_deadline_is_stored_and_fires_once_after_a_restart(
        PostgresDatabase::new().await,
    )
    .await;
}
