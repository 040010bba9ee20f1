//! A store wrapper that yields to the scheduler before every append and stream read, so that
//! concurrent writers interleave between their load and their append even on a busy machine with
//! one runnable worker thread. Races that a fast in-memory store would otherwise rarely show
//! happen on every run.

use async_trait::async_trait;
use cqrs_core::store::{AppendReceipt, CommandRecord, Snapshot};
use cqrs_core::{
    CommandId, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError,
    StreamId, Version,
};

/// Wraps a store; see the module docs.
#[derive(Debug, Clone)]
pub struct Yielding<S>(pub S);

#[async_trait]
impl<S: EventStore> EventStore for Yielding<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError> {
        tokio::task::yield_now().await;
        self.0.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        tokio::task::yield_now().await;
        self.0.read_stream(stream, from, limit).await
    }

    async fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        tokio::task::yield_now().await;
        self.0.visit_stream(stream, from, limit, visit).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.read_all(after, limit).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.0.head().await
    }

    async fn wait_for_events(&self, after: Position) -> Result<Position, StoreError> {
        self.0.wait_for_events(after).await
    }

    async fn save_snapshot(&self, stream: &StreamId, snapshot: Snapshot) -> Result<(), StoreError> {
        self.0.save_snapshot(stream, snapshot).await
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.0.load_snapshot(stream, schema_version).await
    }

    async fn command_record(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.0.command_record(stream, command_id).await
    }
}
