//! The store conformance suite against [`MemStore`](cqrs_memstore::MemStore).

cqrs_tests::conformance_tests!(async { cqrs_memstore::MemStore::new() });

/// The suite's own entry point for running every check in one go, used once so that it stays
/// callable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_checks_in_one_test() {
    cqrs_tests::conformance::run_all(|| async { cqrs_memstore::MemStore::new() }).await;
}
