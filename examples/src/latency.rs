//! A store wrapper that makes every stream read and append take as long as a database round trip.
//!
//! The in-memory store answers in microseconds, so concurrent customers rarely overlap between
//! loading a show and appending to it, and the race the seat-reservation example tells would
//! have no losers to retry. Over a network, with a real database, they overlap all the time.
//! [`RoundTrip`] puts that time back, so the in-memory story shows what production shows. It
//! changes no result, only the timing.

use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::store::{AppendReceipt, CommandRecord, Snapshot, StreamTurn};
use cqrs_core::{
    CommandId, EventData, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    StoreError, StreamId, Version,
};

/// Wraps a store, waiting `delay` before each stream read and append; see the module docs.
///
/// With a zero delay it still yields to the scheduler there, so that concurrent writers
/// interleave between their load and their append even on a machine with one busy core: the
/// tests use it to make races happen on every run.
#[derive(Debug, Clone)]
pub struct RoundTrip<S> {
    store: S,
    delay: Duration,
}

impl<S> RoundTrip<S> {
    /// `store`, with `delay` before each stream read and append.
    pub fn new(store: S, delay: Duration) -> Self {
        RoundTrip { store, delay }
    }

    async fn wait(&self) {
        if self.delay.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(self.delay).await;
        }
    }
}

#[async_trait]
impl<S: EventStore> EventStore for RoundTrip<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError> {
        self.wait().await;
        self.store.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.wait().await;
        self.store.read_stream(stream, from, limit).await
    }

    async fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        self.wait().await;
        self.store.visit_stream(stream, from, limit, visit).await
    }

    async fn visit_stream_data(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        self.wait().await;
        self.store
            .visit_stream_data(stream, from, limit, visit)
            .await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.store.read_all(after, limit).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
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
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.store.command_record(stream, command_id).await
    }

    async fn take_turn(
        &self,
        stream: &StreamId,
    ) -> Result<Option<Box<dyn StreamTurn>>, StoreError> {
        self.wait().await;
        self.store.take_turn(stream).await
    }
}
