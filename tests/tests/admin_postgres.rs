//! The admin seam's checks against [`PostgresStore`], each on a fresh database of a throwaway
//! cluster; the hole is made by deleting a row with SQL.

use cqrs_core::admin::StoreAdmin as _;
use cqrs_postgres::PostgresStore;
use cqrs_postgres::testing::TestCluster;

async fn fresh_store(migrated: bool) -> PostgresStore {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster
        .create_database()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let store = PostgresStore::with_pool_size(&url, 4).unwrap_or_else(|error| panic!("{error}"));
    if migrated {
        store
            .migrate()
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    }
    store
}

#[tokio::test]
async fn a_clean_store_checks_clean() {
    cqrs_tests::admin::a_clean_store_checks_clean(fresh_store(true).await).await;
}

#[tokio::test]
async fn streams_are_listed_by_category_and_in_pages() {
    cqrs_tests::admin::streams_are_listed_by_category_and_in_pages(fresh_store(true).await).await;
}

#[tokio::test]
async fn a_deleted_event_is_found_and_named() {
    let store = fresh_store(true).await;
    let pool = store.pool().clone();
    cqrs_tests::admin::a_deleted_event_is_found_and_named(store, |stream, version| async move {
        let client = pool.get().await.unwrap_or_else(|error| panic!("{error}"));
        let version = version.0 as i64;
        let deleted = client
            .execute(
                "DELETE FROM cqrs_events WHERE stream = $1 AND version = $2",
                &[&stream, &version],
            )
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(deleted, 1);
    })
    .await;
}

#[tokio::test]
async fn an_event_waiting_for_a_position_is_named() {
    let store = fresh_store(true).await;
    cqrs_tests::admin::write_sample(&store).await;
    let client = store
        .pool()
        .get()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    // What an appender that died between its commit and the numbering leaves behind.
    client
        .execute(
            "UPDATE cqrs_events SET position = NULL WHERE stream = 'order-1' AND version = 2",
            &[],
        )
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let report = store
        .check(10)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        report.problems(),
        ["version 2 of stream `order-1` is waiting for a position"]
    );
    assert!(report.position_holes.is_empty() && report.version_breaks.is_empty());
}

#[tokio::test]
async fn migrations_are_listed_as_applied() {
    let store = fresh_store(false).await;
    let migrate = async {
        store
            .migrate()
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    };
    cqrs_tests::admin::migrations_are_listed_as_applied(&store, migrate).await;
}
