//! A store for tests that play a concurrent writer at an exact moment: just before an append
//! reaches the real store, the test's event for that call is written to the same stream, so the
//! append meets a conflict it cannot avoid.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cqrs_core::event::NewEvent;
use cqrs_core::store::{AppendReceipt, CommandRecord, Snapshot};
use cqrs_core::{
    CommandId, EventStore, ExpectedVersion, Position, RecordedEvent, StoreError, StreamId, Version,
};
use cqrs_memstore::MemStore;

/// A store that lets a test act just before each append reaches the real store (to play a
/// concurrent writer) and records where stream reads started.
pub struct Interposed {
    inner: MemStore,
    before_append: Box<dyn Fn(u32) -> Option<NewEvent> + Send + Sync>,
    appends: AtomicU32,
    reads_from: Mutex<Vec<Version>>,
}

impl Interposed {
    /// A store whose `call`th append (from 1) is preceded by the event `before_append` returns
    /// for it, appended to the same stream with no expected version.
    pub fn new(
        before_append: impl Fn(u32) -> Option<NewEvent> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Interposed {
            inner: MemStore::new(),
            before_append: Box::new(before_append),
            appends: AtomicU32::new(0),
            reads_from: Mutex::new(Vec::new()),
        })
    }

    /// Where the stream reads since the last [`clear_reads`](Self::clear_reads) started.
    pub fn reads_from(&self) -> Vec<Version> {
        self.reads_from.lock().expect("not poisoned").clone()
    }

    /// Forgets the reads recorded so far.
    pub fn clear_reads(&self) {
        self.reads_from.lock().expect("not poisoned").clear();
    }

    /// How many appends reached this store (the test's own competing ones not counted).
    pub fn appends(&self) -> u32 {
        self.appends.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EventStore for Interposed {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError> {
        let call = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(competing) = (self.before_append)(call) {
            self.inner
                .append(stream, ExpectedVersion::Any, vec![competing])
                .await?;
        }
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.reads_from.lock().expect("not poisoned").push(from);
        self.inner.read_stream(stream, from, limit).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }

    async fn wait_for_events(&self, after: Position) -> Result<Position, StoreError> {
        self.inner.wait_for_events(after).await
    }

    async fn save_snapshot(&self, stream: &StreamId, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(stream, snapshot).await
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream, schema_version).await
    }

    async fn command_record(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.inner.command_record(stream, command_id).await
    }
}
