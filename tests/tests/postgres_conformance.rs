//! The store conformance suite against [`PostgresStore`](cqrs_postgres::PostgresStore), on a
//! throwaway PostgreSQL cluster with a fresh database per check.

use cqrs_postgres::PostgresStore;
use cqrs_postgres::testing::TestCluster;

async fn fresh_store() -> PostgresStore {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster
        .create_database()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let store = PostgresStore::with_pool_size(&url, 8).unwrap_or_else(|error| panic!("{error}"));
    store
        .migrate()
        .await
        .unwrap_or_else(|error| panic!("migrate: {error}"));
    store
}

cqrs_tests::conformance_tests!(fresh_store());
