//! A store that goes away and comes back: the in-memory store, whose log reads fail on demand,
//! for tests of processors meeting an outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use cqrs_core::store::{AppendReceipt, CommandRecord, LogBatch, Snapshot};
use cqrs_core::{
    EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError, StreamId, Version,
};
use cqrs_memstore::MemStore;

/// The error a read of a [`Flaky`] store that is down fails with.
#[derive(Debug, thiserror::Error)]
#[error("injected outage: the log cannot be read")]
pub struct Outage;

/// The in-memory store, whose log reads (and head) fail while it is down: a database that went
/// away, for the processors that follow the log.
#[derive(Debug, Clone)]
pub struct Flaky {
    store: MemStore,
    down: Arc<AtomicBool>,
}

impl Flaky {
    /// `store`, down from the start when `down`.
    pub fn new(store: MemStore, down: bool) -> Self {
        Flaky {
            store,
            down: Arc::new(AtomicBool::new(down)),
        }
    }

    /// Takes the store down, or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn up(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::backend(Outage))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl EventStore for Flaky {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError> {
        self.store.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.store.read_stream(stream, from, limit).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.up()?;
        self.store.read_all(after, limit).await
    }

    async fn read_log(
        &self,
        after: Position,
        limit: usize,
        aggregates: &[&str],
    ) -> Result<LogBatch, StoreError> {
        self.up()?;
        self.store.read_log(after, limit, aggregates).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.up()?;
        self.store.head().await
    }

    async fn wait_for_events(&self, after: Position) -> Result<Position, StoreError> {
        self.store.wait_for_events(after).await
    }

    async fn save_snapshot(&self, stream: &StreamId, snapshot: Snapshot) -> Result<(), StoreError> {
        self.store.save_snapshot(stream, snapshot).await
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.store.load_snapshot(stream, schema_version).await
    }

    async fn command_record(
        &self,
        stream: &StreamId,
        command_id: &cqrs_core::CommandId,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.store.command_record(stream, command_id).await
    }
}
