//! The admin seam's checks against [`MemStore`].
//!
//! The hole check is left out: the in-memory store has no way to lose an event (positions are
//! indexes into its log, versions indexes into each stream's list), and no test hook to fake
//! one, so there is nothing honest to delete.

use cqrs_memstore::MemStore;

#[tokio::test]
async fn a_clean_store_checks_clean() {
    cqrs_tests::admin::a_clean_store_checks_clean(MemStore::new()).await;
}

#[tokio::test]
async fn streams_are_listed_by_category_and_in_pages() {
    cqrs_tests::admin::streams_are_listed_by_category_and_in_pages(MemStore::new()).await;
}

#[tokio::test]
async fn no_processors_and_no_migrations_are_listed() {
    use cqrs_core::admin::StoreAdmin as _;
    let store = MemStore::new();
    assert!(
        store
            .processors()
            .await
            .unwrap_or_else(|error| panic!("{error}"))
            .is_empty()
    );
    assert!(
        store
            .migrations()
            .await
            .unwrap_or_else(|error| panic!("{error}"))
            .is_empty()
    );
}
