//! The processor conformance suites against the in-memory backends: a projection over
//! `MemoryReadModel` and the `MemorySagaStore`.

use cqrs_core::saga::MemorySagaStore;
use cqrs_memstore::MemStore;

cqrs_tests::processor_tests!(
    async { cqrs_tests::processors::memory_tally(MemStore::new()) },
    exclusive = false
);

cqrs_tests::saga_store_tests!(async { MemorySagaStore::new() });
