//! The admin seam's checks against [`SqliteStore`], each on a scratch file; the hole is made by
//! deleting a row with SQL.

use cqrs_sqlite::SqliteStore;
use cqrs_tests::scratch_database::ScratchDatabase;

async fn fresh_store(database: &ScratchDatabase) -> SqliteStore {
    let store = SqliteStore::open(database.path())
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    store
        .migrate()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    store
}

#[tokio::test]
async fn a_clean_store_checks_clean() {
    let database = ScratchDatabase::new("admin-clean");
    cqrs_tests::admin::a_clean_store_checks_clean(fresh_store(&database).await).await;
}

#[tokio::test]
async fn streams_are_listed_by_category_and_in_pages() {
    let database = ScratchDatabase::new("admin-streams");
    cqrs_tests::admin::streams_are_listed_by_category_and_in_pages(fresh_store(&database).await)
        .await;
}

#[tokio::test]
async fn a_deleted_event_is_found_and_named() {
    let database = ScratchDatabase::new("admin-hole");
    let store = fresh_store(&database).await;
    let writer = store.clone();
    cqrs_tests::admin::a_deleted_event_is_found_and_named(store, |stream, version| async move {
        let deleted = writer
            .write(move |connection| {
                connection.execute(
                    "DELETE FROM cqrs_events WHERE stream = ?1 AND version = ?2",
                    cqrs_sqlite::rusqlite::params![stream, version.0 as i64],
                )
            })
            .await
            .unwrap_or_else(|error| panic!("{error}"))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(deleted, 1);
    })
    .await;
}

#[tokio::test]
async fn migrations_are_listed_as_applied() {
    let database = ScratchDatabase::new("admin-migrations");
    let store = SqliteStore::open(database.path())
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let migrate = async {
        store
            .migrate()
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    };
    cqrs_tests::admin::migrations_are_listed_as_applied(&store, migrate).await;
}
