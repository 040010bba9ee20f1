//! An in-memory event store with the guarantees of a durable one, for tests, examples and
//! single-process applications.
//!
//! ```
//! use cqrs_core::{EventId, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId, Version};
//! use cqrs_memstore::MemStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemStore::new();
//! let stream = StreamId::for_aggregate("show", 42)?;
//! let reserved = NewEvent {
//!     event_id: EventId::new(),
//!     event_type: "SeatReserved".into(),
//!     schema_version: 1,
//!     payload: r#"{"seat":"A1"}"#.into(),
//!     metadata: Metadata::default(),
//! };
//!
//! let receipt = store
//!     .append(&stream, ExpectedVersion::NoStream, vec![reserved])
//!     .await?;
//! assert_eq!(receipt.version, Version(1));
//!
//! // A second writer that still believes the stream is new is refused.
//! let stale = store.append(&stream, ExpectedVersion::NoStream, vec![]).await;
//! assert!(stale.is_err());
//!
//! let events = store.read_stream(&stream, Version(1), 100).await?;
//! assert_eq!(events[0].event_type, "SeatReserved");
//! assert_eq!(events[0].payload.as_bytes(), br#"{"seat":"A1"}"#);
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! [`MemStore`] keeps every promise of [`EventStore`] and passes the same conformance suite as
//! the PostgreSQL store: an append checks its expected version and command id and writes all of
//! its events in one atomic step, contiguous in the stream and in the global log; a reader never
//! sees part of an append; the global order agrees with the order of every stream.
//!
//! Appending no events checks the expected version and writes nothing; its receipt has
//! `first_version` one past the stream's version, `version` equal to it, and no positions.
//!
//! # Concurrency
//!
//! Each stream has its own lock, held for the whole of an append to it, so appends to different
//! streams do not wait for each other except for the short step that assigns global positions.
//! No lock is ever held across an `.await`.
//!
//! Turns ([`EventStore::take_turn`], which the repository takes on a hot stream after repeated
//! conflicts) are a fair queue per stream: while a turn is held or waited for, other appends to
//! the stream wait in the same queue, then go on.
//!
//! # Yielding
//!
//! A store made with [`MemStore::new`] never yields to the scheduler: each call runs to its end
//! in one go, in microseconds, so concurrent tasks rarely overlap between reading a stream and
//! appending to it, and the conflicts that a store over a network shows all the time hardly ever
//! happen in a test. A store made with [`MemStore::yielding`] yields before and after every call,
//! so that one task's read, decision and append interleave with other tasks', on a multi-threaded
//! runtime as on a single-threaded one. Use it in concurrency tests, yours and the
//! conformance suite's, to exercise conflict and retry paths on every run.
//!
//! # Fault injection
//!
//! [`MemStore::fail_next_appends`] and [`MemStore::fail_next_appends_after_writing`] make the next
//! appends fail with [`StoreError::Backend`], before or after writing, so that callers (a
//! repository's retry loop, a saga's idempotency) can be tested against a failing store.
//!
//! # Telemetry
//!
//! Each append and each read (of a stream or of the global log) runs in a DEBUG span,
//! `store.append` or `store.read`, with `db.system.name = "memory"` and the fields that
//! [`cqrs_core::telemetry`] lists. The store writes each append on its own, so it records no
//! `cqrs.batch.appends` and no batch size histogram.
#![doc(html_root_url = "https://docs.rs/cqrs-memstore/0.1.0")]

mod admin;
mod fault;
mod log;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cqrs_core::__private::IdHasher as Hasher;
use cqrs_core::store::StreamTurn;
use cqrs_core::store::command_id_of;
use cqrs_core::telemetry::store as store_telemetry;
use cqrs_core::{
    AppendReceipt, CommandId, CommandRecord, EventStore, ExpectedVersion, LogBatch, NewEvent,
    Position, RecordedEvent, Snapshot, StoreError, StreamId, Version,
};
use tokio::sync::watch;

use crate::fault::Faults;
pub use crate::fault::InjectedFault;
use crate::log::Log;

/// The value of `db.system.name` on this store's spans.
const SYSTEM: &str = "memory";

/// An [`EventStore`] that keeps everything in memory.
///
/// Clones share the same data, so a clone can be handed to each task or component.
#[derive(Clone, Default)]
pub struct MemStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The read lock finds a stream; the write lock is taken only to create one.
    streams: RwLock<HashMap<StreamId, Arc<Mutex<StreamState>>, Hasher>>,
    /// Taken for writing only to assign positions to one append and push its events, while the
    /// appender also holds the stream's lock. Lock order: stream, then log.
    log: RwLock<Log>,
    /// The head position, published after each append so that waiters wake without polling.
    head: watch::Sender<Position>,
    faults: Faults,
    /// Whether every call yields to the scheduler before and after its work (see
    /// [`MemStore::yielding`]).
    yielding: bool,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            streams: RwLock::default(),
            log: RwLock::default(),
            head: watch::Sender::new(Position::START),
            faults: Faults::default(),
            yielding: false,
        }
    }
}

/// One stream. Its events live in the global log; the stream keeps their positions.
#[derive(Default)]
struct StreamState {
    /// `positions[v - 1]` is the global position of the event with version `v`.
    positions: Vec<Position>,
    commands: HashMap<CommandId, CommandRecord, Hasher>,
    snapshot: Option<Snapshot>,
    /// The queue of writers waiting for a turn on the stream (see [`EventStore::take_turn`]),
    /// made on first use.
    turns: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Whether a turn is held: other appends wait in the queue, then go on.
    turn_held: bool,
    /// How many writers wait for a turn: an append that arrives meanwhile queues behind them, so
    /// that a writer who just won cannot win again and again ahead of those waiting.
    turn_waiters: usize,
}

impl StreamState {
    fn version(&self) -> Version {
        Version(self.positions.len() as u64)
    }
}

// Every critical section leaves the data consistent between statements and performs no operation
// that can panic halfway, so a poisoned lock still guards valid data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Checks `expected` against a stream at `actual`.
fn check_version(
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: Version,
) -> Result<(), StoreError> {
    if expected.matches(actual) {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        })
    }
}

/// The receipt of an append that wrote nothing to a stream at `version`.
fn empty_receipt(version: Version) -> AppendReceipt {
    AppendReceipt {
        first_version: version.next(),
        version,
        first_position: None,
        position: None,
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose every call yields to the scheduler before taking its locks and again
    /// after releasing them, as a store that waits for a database would; clones share the mode.
    ///
    /// It keeps every guarantee of a store made with [`MemStore::new`] and changes no result,
    /// only the timing: tasks that read a stream, decide and append at the version they read
    /// interleave with each other, so their appends conflict as they would in production, and
    /// the conflict and retry paths of the code under test run on every test run instead of once
    /// in a while. Each call costs two trips through the scheduler more.
    ///
    /// ```
    /// use cqrs_core::{EventId, EventStore, ExpectedVersion, NewEvent, StoreError, StreamId, Version};
    /// use cqrs_memstore::MemStore;
    ///
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = MemStore::yielding();
    /// let counter = StreamId::new("counter-1")?;
    /// let event = || NewEvent {
    ///     event_id: EventId::new(),
    ///     event_type: "Incremented".into(),
    ///     schema_version: 1,
    ///     payload: "{}".into(),
    ///     metadata: Default::default(),
    /// };
    ///
    /// // Eight writers read the counter's version and append at it, retrying on a conflict.
    /// let writers: Vec<_> = (0..8)
    ///     .map(|_| {
    ///         let (store, counter) = (store.clone(), counter.clone());
    ///         tokio::spawn(async move {
    ///             let mut conflicts = 0;
    ///             loop {
    ///                 let read = store.read_stream(&counter, Version(1), usize::MAX).await?;
    ///                 let expected = ExpectedVersion::Exact(Version(read.len() as u64));
    ///                 match store.append(&counter, expected, vec![event()]).await {
    ///                     Ok(_) => return Ok::<u32, StoreError>(conflicts),
    ///                     Err(StoreError::Conflict { .. }) => conflicts += 1,
    ///                     Err(error) => return Err(error),
    ///                 }
    ///             }
    ///         })
    ///     })
    ///     .collect();
    /// let mut conflicts = 0;
    /// for writer in writers {
    ///     conflicts += writer.await??;
    /// }
    /// // Each writer read, then yielded before appending: most of them lost a race at least once
    /// // (with `MemStore::new()`, almost none would), and every increment was still written once.
    /// println!("{conflicts} conflicts");
    /// let read = store.read_stream(&counter, Version(1), usize::MAX).await?;
    /// assert_eq!(read.len(), 8);
    /// # Ok(())
    /// # }
    /// ```
    pub fn yielding() -> Self {
        MemStore {
            inner: Arc::new(Inner {
                yielding: true,
                ..Inner::default()
            }),
        }
    }

    /// Lets other tasks run, in a store made with [`MemStore::yielding`]; nothing otherwise.
    async fn pause(&self) {
        if self.inner.yielding {
            tokio::task::yield_now().await;
        }
    }

    /// Makes the next `count` appends fail with [`StoreError::Backend`] (its source is
    /// [`InjectedFault::BeforeWrite`]) before anything is checked or written: nothing is lost and
    /// nothing is half-written. Replaces an earlier count; `0` disarms it.
    pub fn fail_next_appends(&self, count: usize) {
        self.inner.faults.set(InjectedFault::BeforeWrite, count);
    }

    /// Makes the next `count` successful appends write their events and then fail with
    /// [`StoreError::Backend`] (its source is [`InjectedFault::AfterWrite`]), as when a connection
    /// drops after the commit: the caller cannot tell whether the append happened. Appends refused
    /// for another reason (a conflict, a duplicate command) return that error and do not count.
    /// Replaces an earlier count; `0` disarms it.
    pub fn fail_next_appends_after_writing(&self, count: usize) {
        self.inner.faults.set(InjectedFault::AfterWrite, count);
    }

    fn find_stream(&self, stream: &StreamId) -> Option<Arc<Mutex<StreamState>>> {
        read(&self.inner.streams).get(stream).cloned()
    }

    fn find_or_create_stream(&self, stream: &StreamId) -> Arc<Mutex<StreamState>> {
        if let Some(state) = self.find_stream(stream) {
            return state;
        }
        write(&self.inner.streams)
            .entry(stream.clone())
            .or_default()
            .clone()
    }

    /// Writes `events` to `stream`, whose lock the caller holds and whose version is checked.
    fn write_events(
        &self,
        stream: &StreamId,
        state: &mut StreamState,
        command_id: Option<CommandId>,
        events: Vec<NewEvent>,
    ) -> AppendReceipt {
        let first_version = state.version().next();
        let (first_position, last_position) = {
            let mut log = write(&self.inner.log);
            let first_position = Position(log.head().0 + 1);
            let mut version = first_version;
            for event in events {
                let position = Position(log.head().0 + 1);
                log.push(RecordedEvent {
                    stream: stream.clone(),
                    version,
                    position,
                    event_id: event.event_id,
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    payload: event.payload,
                    metadata: event.metadata,
                });
                version = version.next();
            }
            (first_position, log.head())
        };
        state
            .positions
            .extend((first_position.0..=last_position.0).map(Position));
        let version = state.version();
        if let Some(command_id) = command_id {
            let record = CommandRecord {
                command_id: command_id.clone(),
                stream: stream.clone(),
                first_version,
                version,
                position: last_position,
            };
            state.commands.insert(command_id, record);
        }
        AppendReceipt {
            first_version,
            version,
            first_position: Some(first_position),
            position: Some(last_position),
        }
    }

    /// Wakes the tasks waiting for events up to `position`.
    fn publish_head(&self, position: Position) {
        let head = &self.inner.head;
        head.send_if_modified(|published| {
            // Two appenders may publish out of commit order; the head only moves forward.
            if position <= *published {
                return false;
            }
            *published = position;
            // Waking costs more than the rest of an append, so it is skipped when nobody waits.
            // The value is updated either way, under the channel's lock: a waiter that subscribes
            // later reads it, and one that subscribed earlier is counted here and woken.
            head.receiver_count() > 0
        });
    }

    fn acknowledge(&self, receipt: AppendReceipt) -> Result<AppendReceipt, StoreError> {
        if self.inner.faults.take(InjectedFault::AfterWrite) {
            return Err(StoreError::backend(InjectedFault::AfterWrite));
        }
        Ok(receipt)
    }
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let streams = read(&self.inner.streams).len();
        let head = read(&self.inner.log).head();
        f.debug_struct("MemStore")
            .field("streams", &streams)
            .field("head", &head)
            .finish_non_exhaustive()
    }
}

/// What an append found: its result, or a turn held by another writer to wait for.
enum Attempt {
    Done(Result<AppendReceipt, StoreError>),
    WaitForTurn(Arc<tokio::sync::Mutex<()>>),
}

impl MemStore {
    /// Appends, or waits for the turn another writer holds on the stream and appends then.
    async fn append_waiting_for_turns(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        in_turn: bool,
    ) -> Result<AppendReceipt, StoreError> {
        if self.inner.faults.take(InjectedFault::BeforeWrite) {
            return Err(StoreError::backend(InjectedFault::BeforeWrite));
        }
        let command_id = command_id_of(&events)?.cloned();
        let mut events = Some(events);
        loop {
            match self.try_append(stream, expected, &command_id, &mut events, in_turn) {
                Attempt::Done(result) => return result,
                // Queued behind the turn (and any writer queued before this one): once through,
                // the stream is free, or another turn has it and the append queues again.
                Attempt::WaitForTurn(turns) => drop(turns.lock().await),
            }
        }
    }

    /// One try of an append; takes `events` only when it does not have to wait.
    fn try_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        command_id: &Option<CommandId>,
        events: &mut Option<Vec<NewEvent>>,
        in_turn: bool,
    ) -> Attempt {
        let empty = events.as_ref().is_none_or(Vec::is_empty);
        let state = match self.find_stream(stream) {
            Some(state) => state,
            // A stream that does not exist is at version 0 with no command records and no turn;
            // an append that would write nothing to it does not create it.
            None if empty || !expected.matches(Version::INITIAL) => {
                return Attempt::Done(
                    check_version(stream, expected, Version::INITIAL)
                        .and_then(|()| self.acknowledge(empty_receipt(Version::INITIAL))),
                );
            }
            None => self.find_or_create_stream(stream),
        };

        let receipt = {
            let mut state = lock(&state);
            if (state.turn_held || state.turn_waiters > 0) && !in_turn {
                if let Some(turns) = &state.turns {
                    return Attempt::WaitForTurn(Arc::clone(turns));
                }
            }
            // The command id comes first: a command already applied is reported as such, whatever
            // version its retry expects.
            if let Some(earlier) = command_id
                .as_ref()
                .and_then(|command_id| state.commands.get(command_id))
            {
                return Attempt::Done(Err(StoreError::DuplicateCommand {
                    earlier: earlier.clone(),
                }));
            }
            if let Err(conflict) = check_version(stream, expected, state.version()) {
                return Attempt::Done(Err(conflict));
            }
            let events = events.take().unwrap_or_default();
            if events.is_empty() {
                return Attempt::Done(self.acknowledge(empty_receipt(state.version())));
            }
            self.write_events(stream, &mut state, command_id.clone(), events)
        };
        if let Some(position) = receipt.position {
            self.publish_head(position);
        }
        Attempt::Done(self.acknowledge(receipt))
    }
}

/// A turn on one stream of a [`MemStore`]: appends of other writers to the stream wait until it
/// is dropped.
struct MemTurn {
    store: MemStore,
    stream: StreamId,
    state: Arc<Mutex<StreamState>>,
    /// This turn's place in the stream's queue, released on drop.
    _queue: tokio::sync::OwnedMutexGuard<()>,
}

/// A writer waiting for a turn, counted in [`StreamState::turn_waiters`] while it lives.
struct Waiting<'a>(&'a Mutex<StreamState>);

impl Waiting<'_> {
    /// The wait is over and the turn is held: one step, so that no append slips in between.
    fn hold(self) {
        let mut state = lock(self.0);
        state.turn_waiters = state.turn_waiters.saturating_sub(1);
        state.turn_held = true;
        drop(state);
        std::mem::forget(self);
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = lock(self.0);
        state.turn_waiters = state.turn_waiters.saturating_sub(1);
    }
}

impl Drop for MemTurn {
    fn drop(&mut self) {
        lock(&self.state).turn_held = false;
    }
}

#[async_trait::async_trait]
impl StreamTurn for MemTurn {
    fn stream(&self) -> &StreamId {
        &self.stream
    }

    async fn visit_stream(
        &mut self,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        self.store
            .visit_stream(&self.stream, from, limit, visit)
            .await
    }

    async fn visit_stream_data(
        &mut self,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(cqrs_core::EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        self.store
            .visit_stream_data(&self.stream, from, limit, visit)
            .await
    }

    async fn append(
        self: Box<Self>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError> {
        let span = store_telemetry::append_span(SYSTEM, &self.stream, expected, events.len());
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.store
                .append_waiting_for_turns(&self.stream, expected, events, true)
                .await
        });
        store_telemetry::record_append(&span, &result);
        result
    }
}

// The work of each call, without an `.await`: the `EventStore` methods below run it between two
// pauses of a yielding store.
impl MemStore {
    fn read_stream_now(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Vec<RecordedEvent> {
        let Some(state) = self.find_stream(stream) else {
            return Vec::new();
        };
        let state = lock(&state);
        let start = usize::try_from(from.0.saturating_sub(1)).unwrap_or(usize::MAX);
        let positions = state.positions.get(start..).unwrap_or_default();
        let positions = &positions[..positions.len().min(limit)];
        let log = read(&self.inner.log);
        let mut events = Vec::with_capacity(positions.len());
        events.extend(
            positions
                .iter()
                .filter_map(|position| log.get(*position).cloned()),
        );
        events
    }

    fn save_snapshot_now(&self, stream: &StreamId, snapshot: Snapshot) {
        let state = self.find_or_create_stream(stream);
        let mut state = lock(&state);
        // A slow snapshotter must not replace a newer snapshot of the same schema with an older one.
        let keep_earlier = state.snapshot.as_ref().is_some_and(|earlier| {
            earlier.schema_version == snapshot.schema_version && earlier.version > snapshot.version
        });
        if !keep_earlier {
            state.snapshot = Some(snapshot);
        }
    }

    fn load_snapshot_now(&self, stream: &StreamId, schema_version: u32) -> Option<Snapshot> {
        let state = self.find_stream(stream)?;
        let state = lock(&state);
        state
            .snapshot
            .as_ref()
            .filter(|snapshot| snapshot.schema_version == schema_version)
            .cloned()
    }

    fn command_record_now(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
    ) -> Option<CommandRecord> {
        let state = self.find_stream(stream)?;
        let state = lock(&state);
        state.commands.get(command_id).cloned()
    }
}

impl MemStore {
    /// [`EventStore::visit_stream`]'s work, outside its span. Generic over the visitor, so that
    /// the lean visit's adapter is inlined rather than a second dynamic call per event.
    async fn visit_stream_now<F>(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut F,
    ) -> Result<usize, StoreError>
    where
        F: for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send + ?Sized,
    {
        // Lends the stored events instead of copying them. The caller's code runs under the log's
        // read lock, so the events go in small chunks: a writer waits for one chunk at most.
        const CHUNK: usize = 256;
        self.pause().await;
        let Some(state) = self.find_stream(stream) else {
            self.pause().await;
            return Ok(0);
        };
        let mut next = usize::try_from(from.0.saturating_sub(1)).unwrap_or(usize::MAX);
        let mut visited = 0;
        let mut positions = Vec::with_capacity(CHUNK.min(limit));
        while visited < limit {
            positions.clear();
            {
                let state = lock(&state);
                let rest = state.positions.get(next..).unwrap_or_default();
                positions.extend_from_slice(&rest[..rest.len().min(CHUNK).min(limit - visited)]);
            }
            if positions.is_empty() {
                break;
            }
            {
                let log = read(&self.inner.log);
                for event in positions.iter().filter_map(|position| log.get(*position)) {
                    visit(event)?;
                    visited += 1;
                }
            }
            next += positions.len();
            if visited < limit {
                // No lock is held between two chunks: writers get their turn here too.
                self.pause().await;
            }
        }
        self.pause().await;
        Ok(visited)
    }
}

#[async_trait::async_trait]
impl EventStore for MemStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError> {
        let span = store_telemetry::append_span(SYSTEM, stream, expected, events.len());
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.pause().await;
            let result = self
                .append_waiting_for_turns(stream, expected, events, false)
                .await;
            self.pause().await;
            result
        });
        store_telemetry::record_append(&span, &result);
        result
    }

    async fn take_turn(
        &self,
        stream: &StreamId,
    ) -> Result<Option<Box<dyn StreamTurn>>, StoreError> {
        self.pause().await;
        let state = self.find_or_create_stream(stream);
        let turns = {
            let mut state = lock(&state);
            state.turn_waiters += 1;
            Arc::clone(
                state
                    .turns
                    .get_or_insert_with(|| Arc::new(tokio::sync::Mutex::new(()))),
            )
        };
        // Counted out again however the wait ends, a caller's deadline included.
        let waiting = Waiting(&state);
        // Writers get turns in the order they asked (tokio's mutex is fair).
        let queue = turns.lock_owned().await;
        waiting.hold();
        Ok(Some(Box::new(MemTurn {
            store: self.clone(),
            stream: stream.clone(),
            state,
            _queue: queue,
        })))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let span = store_telemetry::stream_read_span(SYSTEM, "read_stream", stream, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.pause().await;
            let events = self.read_stream_now(stream, from, limit);
            self.pause().await;
            Ok(events)
        });
        store_telemetry::record_read(&span, &result, Vec::len);
        result
    }

    async fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        let span = store_telemetry::stream_read_span(SYSTEM, "visit_stream", stream, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.visit_stream_now(stream, from, limit, visit).await
        });
        store_telemetry::record_read(&span, &result, |visited| *visited);
        result
    }

    async fn visit_stream_data(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(cqrs_core::EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        // The events are lent either way: the lean visit only narrows what the visitor sees.
        let span = store_telemetry::stream_read_span(SYSTEM, "visit_stream_data", stream, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.visit_stream_now(stream, from, limit, &mut |event| visit(event.data()))
                .await
        });
        store_telemetry::record_read(&span, &result, |visited| *visited);
        result
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let span = store_telemetry::log_read_span(SYSTEM, "read_all", after, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.pause().await;
            let events = read(&self.inner.log).read_after(after, limit);
            self.pause().await;
            Ok(events)
        });
        store_telemetry::record_read(&span, &result, Vec::len);
        result
    }

    async fn read_log(
        &self,
        after: Position,
        limit: usize,
        aggregates: &[&str],
    ) -> Result<LogBatch, StoreError> {
        let span = store_telemetry::log_read_span(SYSTEM, "read_log", after, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.pause().await;
            let batch = read(&self.inner.log).read_log_after(after, limit, aggregates);
            self.pause().await;
            Ok(batch)
        });
        store_telemetry::record_read(&span, &result, |batch: &LogBatch| batch.entries.len());
        result
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.pause().await;
        let head = read(&self.inner.log).head();
        self.pause().await;
        Ok(head)
    }

    async fn wait_for_events(&self, after: Position) -> Result<Position, StoreError> {
        self.pause().await;
        let mut head = read(&self.inner.log).head();
        if head <= after {
            let mut receiver = self.inner.head.subscribe();
            // The sender lives as long as the store, which `&self` keeps alive, so it never closes.
            receiver
                .wait_for(|head| *head > after)
                .await
                .map_err(StoreError::backend)?;
            head = read(&self.inner.log).head();
        }
        self.pause().await;
        Ok(head)
    }

    async fn save_snapshot(&self, stream: &StreamId, snapshot: Snapshot) -> Result<(), StoreError> {
        self.pause().await;
        self.save_snapshot_now(stream, snapshot);
        self.pause().await;
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.pause().await;
        let snapshot = self.load_snapshot_now(stream, schema_version);
        self.pause().await;
        Ok(snapshot)
    }

    async fn command_record(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.pause().await;
        let record = self.command_record_now(stream, command_id);
        self.pause().await;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::{EventId, Metadata};

    fn stream(name: &str) -> StreamId {
        StreamId::new(name).expect("valid stream id")
    }

    fn command(id: &str) -> CommandId {
        CommandId::new(id).expect("valid command id")
    }

    fn event(command_id: Option<&str>) -> NewEvent {
        NewEvent {
            event_id: EventId::new(),
            event_type: "Tested".into(),
            schema_version: 1,
            payload: "{}".into(),
            metadata: Metadata {
                command_id: command_id.map(command),
                ..Metadata::default()
            },
        }
    }

    fn injected(error: &StoreError) -> Option<InjectedFault> {
        match error {
            StoreError::Backend(source) => source.downcast_ref::<InjectedFault>().copied(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn fail_next_appends_refuses_before_writing() {
        let store = MemStore::new();
        let stream = stream("fault-1");
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event(None)])
            .await
            .expect("first append");

        store.fail_next_appends(2);
        for _ in 0..2 {
            let error = store
                .append(
                    &stream,
                    ExpectedVersion::Exact(Version(1)),
                    vec![event(Some("c")), event(Some("c"))],
                )
                .await
                .expect_err("injected failure");
            assert_eq!(injected(&error), Some(InjectedFault::BeforeWrite));
            assert!(error.to_string().contains("before writing anything"));
        }
        assert_eq!(store.head().await.expect("head"), Position(1));
        assert_eq!(
            store
                .command_record(&stream, &command("c"))
                .await
                .expect("command record"),
            None
        );

        // The count is used up: the same append now succeeds.
        let receipt = store
            .append(
                &stream,
                ExpectedVersion::Exact(Version(1)),
                vec![event(Some("c")), event(Some("c"))],
            )
            .await
            .expect("append after the injected failures");
        assert_eq!(receipt.version, Version(3));
    }

    #[tokio::test]
    async fn fail_next_appends_zero_disarms() {
        let store = MemStore::new();
        store.fail_next_appends(5);
        store.fail_next_appends(0);
        store
            .append(&stream("fault-2"), ExpectedVersion::Any, vec![event(None)])
            .await
            .expect("disarmed");
    }

    #[tokio::test]
    async fn fail_after_writing_writes_then_reports_failure() {
        let store = MemStore::new();
        let stream = stream("fault-3");
        store.fail_next_appends_after_writing(1);

        // A refused append does not use up the count.
        let conflict = store
            .append(&stream, ExpectedVersion::StreamExists, vec![event(None)])
            .await
            .expect_err("conflict");
        assert!(matches!(conflict, StoreError::Conflict { .. }));

        let error = store
            .append(&stream, ExpectedVersion::NoStream, vec![event(Some("c"))])
            .await
            .expect_err("lost acknowledgement");
        assert_eq!(injected(&error), Some(InjectedFault::AfterWrite));
        let events = store
            .read_stream(&stream, Version(1), 10)
            .await
            .expect("read");
        assert_eq!(events.len(), 1);

        // The caller retries with the same command id and learns what was written.
        let retry = store
            .append(&stream, ExpectedVersion::NoStream, vec![event(Some("c"))])
            .await
            .expect_err("duplicate");
        let StoreError::DuplicateCommand { earlier } = retry else {
            panic!("expected a duplicate command, got {retry:?}");
        };
        assert_eq!(earlier.version, Version(1));
        assert_eq!(earlier.position, Position(1));

        store
            .append(
                &stream,
                ExpectedVersion::Exact(Version(1)),
                vec![event(None)],
            )
            .await
            .expect("count used up");
    }

    #[tokio::test]
    async fn clones_share_data() {
        let store = MemStore::new();
        let clone = store.clone();
        clone
            .append(&stream("shared"), ExpectedVersion::Any, vec![event(None)])
            .await
            .expect("append");
        assert_eq!(store.head().await.expect("head"), Position(1));
        assert_eq!(
            format!("{store:?}"),
            "MemStore { streams: 1, head: Position(1), .. }"
        );
    }

    #[tokio::test]
    async fn appends_that_write_nothing_do_not_create_streams() {
        let store = MemStore::new();
        let stream = stream("ghost");
        let receipt = store
            .append(&stream, ExpectedVersion::NoStream, vec![])
            .await
            .expect("empty append");
        assert_eq!(receipt, empty_receipt(Version::INITIAL));
        store
            .append(&stream, ExpectedVersion::StreamExists, vec![event(None)])
            .await
            .expect_err("conflict");
        assert_eq!(read(&store.inner.streams).len(), 0);
    }

    #[test]
    fn poisoned_locks_are_recovered() {
        let mutex = Arc::new(Mutex::new(1));
        let poisoner = Arc::clone(&mutex);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(mutex.is_poisoned());
        assert_eq!(*lock(&mutex), 1);
    }
}
