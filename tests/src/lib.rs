//! Shared test code: the store conformance suite any `EventStore` plugs into.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // One check of the suite against a fresh store; a store's test file runs every check, one
//! // test each, with `cqrs_tests::conformance_tests!(async { MyStore::new() });`.
//! cqrs_tests::conformance::multi_event_append_is_contiguous(cqrs_memstore::MemStore::new()).await;
//! # }
//! ```

pub mod admin;
pub mod browser;
pub mod checkout;
pub mod codec;
pub mod conformance;
pub mod flaky;
pub mod interposed;
pub mod meters;
pub mod processors;
pub mod refusing;
pub mod scratch_database;
pub mod telemetry;
