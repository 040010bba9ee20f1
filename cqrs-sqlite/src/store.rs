//! [`SqliteStore`]: the [`EventStore`] over one SQLite file, its writer thread and its read
//! connections.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use cqrs_core::store::command_id_of;
use cqrs_core::telemetry::store as store_telemetry;
use cqrs_core::{
    AppendReceipt, CommandId, CommandRecord, EventData, EventStore, ExpectedVersion, LogBatch,
    NewEvent, Position, RecordedEvent, Snapshot, StoreError, StreamId, Version,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::connection::{self, Role};
use crate::error::{SqliteStoreError, backend};
use crate::options::SqliteOptions;
use crate::read::{self, DataChunk, StreamChunk};
use crate::rows;
use crate::writer::{self, Append, Request};

/// The value of `db.system.name` on this store's spans (OpenTelemetry's name for SQLite).
pub(crate) const SYSTEM: &str = "sqlite";

/// An [`EventStore`] in one SQLite file.
///
/// Clones share one writer thread, one pool of read connections and one change watcher. Open a
/// file once per process and clone the store: a second [`open`](SqliteStore::open) of the same
/// file gets a writer of its own, which competes with the first through SQLite's file lock as
/// another process's would.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// The result of a read task, or its failure (a panic) as the store's error.
async fn read_task<T>(task: JoinHandle<Result<T, StoreError>>) -> Result<T, StoreError> {
    task.await
        .map_err(|error| StoreError::backend(SqliteStoreError::ReadTask(error.to_string())))?
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    writer: mpsc::Sender<Request>,
    /// Idle read connections.
    readers: Mutex<Vec<Connection>>,
    /// The highest head this store knows of: moved by its writer after each commit and by the
    /// change watcher after another process's.
    head: Arc<watch::Sender<Position>>,
    /// Upgraded by the change watcher while the store lives.
    _alive: Arc<()>,
    /// Appends sent to the writer and not answered yet.
    in_flight: AtomicUsize,
    /// Set by [`SqliteStore::close`]: the change watcher stops.
    closed: Arc<AtomicBool>,
    /// The change watcher's thread, joined by [`SqliteStore::close`].
    watcher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Counts an append in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("synchronous", &self.inner.options.synchronous)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path` with the default [`SqliteOptions`]:
    /// `synchronous=FULL`, a 5 s busy timeout. Call [`migrate`](SqliteStore::migrate) before the
    /// first use of a new file.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (or creates) the database file at `path` with `options`.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let head = Arc::new(watch::Sender::new(Position::START));
        let writer = writer::start(path.clone(), options.clone(), Arc::clone(&head)).await?;
        let alive = Arc::new(());
        let store = SqliteStore {
            inner: Arc::new(Inner {
                path: path.clone(),
                options: options.clone(),
                writer,
                readers: Mutex::new(Vec::new()),
                head: Arc::clone(&head),
                _alive: Arc::clone(&alive),
                in_flight: AtomicUsize::new(0),
                closed: Arc::new(AtomicBool::new(false)),
                watcher: Mutex::new(None),
            }),
        };
        if options.migrate_on_open {
            store.migrate().await?;
        }
        let watched = options.clone();
        let weak = Arc::downgrade(&alive);
        let closed = Arc::clone(&store.inner.closed);
        // Opening its connection blocks: not on the runtime.
        let watcher = tokio::task::spawn_blocking(move || {
            crate::change::start(path, &watched, head, weak, closed)
        })
        .await
        .map_err(|error| StoreError::backend(SqliteStoreError::ReadTask(error.to_string())))?;
        *store
            .inner
            .watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = watcher;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.inner.options
    }

    /// Applies the schema migrations this crate ships that the file lacks (see
    /// [`migrate::MIGRATIONS`](crate::migrate::MIGRATIONS)) and returns the numbers of those it
    /// applied. Safe to call on every start, and from several processes at once.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Migrate { reply }).await?;
        answer
            .await
            .map_err(|_| writer::stopped(&self.inner.path))?
    }

    /// Closes the store, for this handle and every clone of it: the change watcher stops, the
    /// idle read connections close, then the writer serves what was sent before, moves the
    /// whole WAL into the database file (`PRAGMA wal_checkpoint(TRUNCATE)`) and closes its
    /// connection. When no other process has the file open, SQLite then removes its `-wal` and
    /// `-shm` files, so that the database file alone holds everything, ready to be copied.
    ///
    /// Later calls of the store's clones fail with [`SqliteStoreError::WriterStopped`] (reads
    /// still open connections of their own, closed when they are done). A read in flight while
    /// the store closes keeps the file open: the WAL is then left for the next open. Without
    /// `close`, nothing is lost either: the next open finds the WAL and uses it, with no repair
    /// step.
    pub async fn close(self) -> Result<(), StoreError> {
        self.inner.closed.store(true, Ordering::Release);
        let watcher = self
            .inner
            .watcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let readers = std::mem::take(
            &mut *self
                .inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        // Joining waits up to one check interval; closing connections may block: not on the
        // runtime.
        tokio::task::spawn_blocking(move || {
            drop(readers);
            if let Some(watcher) = watcher {
                let _ = watcher.join();
            }
        })
        .await
        .map_err(|error| StoreError::backend(SqliteStoreError::ReadTask(error.to_string())))?;
        let (reply, answer) = oneshot::channel();
        self.send(Request::Close { reply }).await?;
        answer
            .await
            .map_err(|_| writer::stopped(&self.inner.path))?
    }

    /// Applies the migrations of `owner`'s read model (tables of the user's, kept in this file)
    /// that the file has not recorded, in order of their numbers, in one transaction of the
    /// writer: all of them or none. Each is recorded once per owner in
    /// `cqrs_read_model_migrations` with the SHA-256 of its SQL, and one whose SQL changed
    /// since is refused ([`MigrationError::ReadModelEdited`](crate::MigrationError)). Returns
    /// the numbers of those it applied. Run [`migrate`](SqliteStore::migrate) first;
    /// [`SqliteProjector::migrate`](crate::SqliteProjector::migrate) calls this with the
    /// projection's name and [`MIGRATIONS`](crate::SqliteProjection::MIGRATIONS).
    pub async fn migrate_read_model(
        &self,
        owner: &str,
        migrations: &'static [crate::migrate::Migration],
    ) -> Result<Vec<u32>, StoreError> {
        let owner = owner.to_owned();
        self.write(move |connection| crate::migrate::run_read_model(connection, &owner, migrations))
            .await?
    }

    /// Runs `work` on the writer's connection, in the writer's next transaction, in a savepoint
    /// of its own: what it writes is committed when it returns `Ok` (once the transaction
    /// commits) and rolled back when it returns `Err` or panics. For what a user keeps next to
    /// the events, such as the tables of a [`SqliteProjector`](crate::SqliteProjector)'s read
    /// model (`CREATE TABLE IF NOT EXISTS ...`). The outer `Err` is a failure of the store
    /// (the transaction did not commit, the work panicked): nothing of it was written.
    ///
    /// The work blocks the writer while it runs, and every append waits for it: keep it short.
    /// It must not commit, roll back or release the savepoint itself.
    pub async fn write<T, E, F>(&self, work: F) -> Result<Result<T, E>, StoreError>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (job, answer) = writer::job(work);
        self.send(Request::Run(job)).await?;
        answer
            .await
            .map_err(|_| writer::stopped(&self.inner.path))?
    }

    async fn send(&self, request: Request) -> Result<(), StoreError> {
        self.inner
            .writer
            .send(request)
            .await
            .map_err(|_| writer::stopped(&self.inner.path))
    }

    /// Runs `read` on a read connection, on the blocking pool: SQLite calls block.
    pub(crate) async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        read_task(self.spawn_read(read)).await
    }

    /// Starts `read` on a read connection, on the blocking pool, at once.
    fn spawn_read<T, F>(&self, read: F) -> JoinHandle<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let idle = inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let connection = match idle {
                Some(connection) => connection,
                None => connection::open(&inner.path, &inner.options, Role::Reader)?,
            };
            let result = read(&connection);
            let mut readers = inner.readers.lock().unwrap_or_else(PoisonError::into_inner);
            // A closed store keeps no connection open.
            if readers.len() < inner.options.read_connections
                && !inner.closed.load(Ordering::Acquire)
            {
                readers.push(connection);
            }
            result
        })
    }

    /// Hands each event of `stream` from `from` (at most `limit`) to `visit`.
    async fn visit_stream_now(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        self.visit_in_chunks(stream, from, limit, |chunk: &Vec<RecordedEvent>| {
            chunk.iter().try_for_each(&mut *visit)
        })
        .await
    }

    /// Hands what decoding needs of each event of `stream` from `from` (at most `limit`) to
    /// `visit`, lent from chunks that select nothing else.
    async fn visit_stream_data_now(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        self.visit_in_chunks(stream, from, limit, |chunk: &DataChunk| {
            chunk.visit(stream, visit)
        })
        .await
    }

    /// Reads the events of `stream` from `from` (at most `limit`) into chunks of `C` and hands
    /// each to `visit_chunk`, returning how many events they held. The visitor borrows the
    /// caller's state, so it cannot run on the blocking pool: the rows are read there and handed
    /// over here, so that reading the next chunk overlaps visiting this one.
    async fn visit_in_chunks<C: StreamChunk>(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        mut visit_chunk: impl FnMut(&C) -> Result<(), StoreError> + Send,
    ) -> Result<usize, StoreError> {
        const CHUNK: usize = 256;
        if limit == 0 {
            return Ok(0);
        }
        let (chunks, mut received) = mpsc::channel::<C>(2);
        let stream = stream.clone();
        let reading = self.spawn_read(move |connection| {
            let mut chunk = C::with_capacity(CHUNK.min(limit));
            let mut open = true;
            read::stream_rows::<C>(connection, &stream, from, limit, |row| {
                chunk.push(row, &stream)?;
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, C::with_capacity(CHUNK));
                    // A send fails when the visitor stopped: nothing more to read.
                    open = chunks.blocking_send(full).is_ok();
                }
                Ok(open)
            })?;
            if open && chunk.len() > 0 {
                let _ = chunks.blocking_send(chunk);
            }
            Ok(())
        });
        let mut visited = 0;
        while let Some(chunk) = received.recv().await {
            visit_chunk(&chunk)?;
            visited += chunk.len();
        }
        // Every chunk was handed over: what is left to learn is whether the read failed.
        read_task(reading).await?;
        Ok(visited)
    }

    async fn append_now(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        span: &tracing::Span,
    ) -> Result<AppendReceipt, StoreError> {
        let command_id = command_id_of(&events)?.cloned();
        let headers = events
            .iter()
            .map(|event| serde_json::to_string(&event.metadata.headers))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::backend)?;
        let (reply, answer) = oneshot::channel();
        let _in_flight = InFlight::new(&self.inner.in_flight);
        self.send(Request::Append(Append {
            stream: stream.clone(),
            expected,
            command_id,
            events,
            headers,
            span: span.clone(),
            reply,
        }))
        .await?;
        self.acknowledgement(answer).await
    }

    /// Waits for the writer's answer to an append. A lone append (the only one of this store in
    /// flight) first looks for it without sleeping, for up to [`SqliteOptions::ack_spin`],
    /// yielding to the task's other work in between: waking a sleeping thread adds tens of
    /// microseconds to each commit on a virtual machine, and a lone writer waits for nothing
    /// else. Once another append is in flight, the tasks would compete with the writer for the
    /// cores, so they sleep until answered.
    async fn acknowledgement(
        &self,
        mut answer: oneshot::Receiver<Result<AppendReceipt, StoreError>>,
    ) -> Result<AppendReceipt, StoreError> {
        let spin = self.inner.options.ack_spin;
        let alone = || self.inner.in_flight.load(Ordering::Relaxed) == 1;
        if !spin.is_zero() && alone() {
            let started = Instant::now();
            while alone() && started.elapsed() < spin {
                match answer.try_recv() {
                    Ok(result) => return result,
                    Err(oneshot::error::TryRecvError::Closed) => {
                        return Err(writer::stopped(&self.inner.path));
                    }
                    Err(oneshot::error::TryRecvError::Empty) => tokio::task::yield_now().await,
                }
            }
        }
        answer
            .await
            .map_err(|_| writer::stopped(&self.inner.path))?
    }

    async fn read_stream_now(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stream = stream.clone();
        self.read(move |connection| {
            let mut events = Vec::new();
            read::stream_rows::<Vec<RecordedEvent>>(connection, &stream, from, limit, |row| {
                StreamChunk::push(&mut events, row, &stream)?;
                Ok(true)
            })?;
            Ok(events)
        })
        .await
    }

    /// Reads up to `limit` rows after `after` and hands each to `decode`.
    async fn read_log_rows<T, F>(
        &self,
        after: Position,
        limit: usize,
        decode: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Rows<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.read(move |connection| {
            // Beyond every position an INTEGER holds, or nothing asked: an empty read.
            let after = i64::try_from(after.0).unwrap_or(i64::MAX);
            let limit = if limit == 0 {
                0
            } else {
                i64::try_from(limit).unwrap_or(i64::MAX)
            };
            let mut statement = connection
                .prepare_cached(concat!(
                    "SELECT ",
                    rows::event_columns!(),
                    " FROM cqrs_events WHERE position > ?1 ORDER BY position LIMIT ?2"
                ))
                .map_err(backend("reading the log"))?;
            let mut found = statement
                .query(params![after, limit])
                .map_err(backend("reading the log"))?;
            decode(&mut found)
        })
        .await
    }
}

#[async_trait::async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError> {
        let span = store_telemetry::append_span(SYSTEM, stream, expected, events.len());
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.append_now(stream, expected, events, &span).await
        });
        store_telemetry::record_append(&span, &result);
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let span = store_telemetry::stream_read_span(SYSTEM, "read_stream", stream, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.read_stream_now(stream, from, limit).await
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
        visit: &mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        let span = store_telemetry::stream_read_span(SYSTEM, "visit_stream_data", stream, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.visit_stream_data_now(stream, from, limit, visit).await
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
            self.read_log_rows(after, limit, |found| {
                let mut events = Vec::new();
                while let Some(row) = found.next().map_err(backend("reading the log"))? {
                    events.push(rows::recorded_event(row)?);
                }
                Ok(events)
            })
            .await
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
        let aggregates: Vec<String> = aggregates.iter().map(|name| (*name).to_owned()).collect();
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.read_log_rows(after, limit, move |found| {
                let aggregates: Vec<&str> = aggregates.iter().map(String::as_str).collect();
                let mut batch = LogBatch::default();
                while let Some(row) = found.next().map_err(backend("reading the log"))? {
                    batch.last = Some(rows::log_position(row)?);
                    if let Some(entry) = rows::log_entry(row, &aggregates)? {
                        batch.entries.push(entry);
                    }
                }
                Ok(batch)
            })
            .await
        });
        store_telemetry::record_read(&span, &result, |batch: &LogBatch| batch.entries.len());
        result
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.read(|connection| {
            let head: i64 = connection
                .prepare_cached("SELECT coalesce(max(position), 0) FROM cqrs_events")
                .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
                .map_err(backend("reading the head"))?;
            rows::stored_position(head, "")
        })
        .await
    }

    async fn wait_for_events(&self, after: Position) -> Result<Position, StoreError> {
        // Subscribe first, read the head second: a commit in between is either in the head read
        // or moves the watched head after it.
        let mut receiver = self.inner.head.subscribe();
        let head = self.head().await?;
        if head > after {
            return Ok(head);
        }
        // The sender lives as long as the store, which `&self` keeps alive: it never closes.
        receiver
            .wait_for(|head| *head > after)
            .await
            .map_err(StoreError::backend)?;
        self.head().await
    }

    async fn save_snapshot(&self, stream: &StreamId, snapshot: Snapshot) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::SaveSnapshot {
            stream: stream.clone(),
            snapshot,
            reply,
        })
        .await?;
        answer
            .await
            .map_err(|_| writer::stopped(&self.inner.path))?
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        let stream = stream.clone();
        self.read(move |connection| {
            let found = connection
                .prepare_cached(
                    "SELECT version, schema_version, payload FROM cqrs_snapshots \
                     WHERE stream = ?1 AND schema_version = ?2",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row(params![stream.as_str(), i64::from(schema_version)], |row| {
                            Ok((
                                row.get::<_, i64>(0)?,
                                row.get::<_, i64>(1)?,
                                row.get::<_, Vec<u8>>(2)?,
                            ))
                        })
                        .optional()
                })
                .map_err(backend("loading a snapshot"))?;
            let Some((version, stored_schema, payload)) = found else {
                return Ok(None);
            };
            Ok(Some(Snapshot {
                version: rows::stored_version(version, &stream)?,
                schema_version: rows::stored_schema_version(stored_schema, &stream)?,
                payload,
            }))
        })
        .await
    }

    async fn command_record(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let (stream, command_id) = (stream.clone(), command_id.clone());
        self.read(move |connection| writer::command_record(connection, &stream, &command_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use cqrs_core::{EventId, LogEntry, Metadata};

    use super::*;
    use crate::rows::CorruptRow;
    use crate::scratch::ScratchFile;

    fn event() -> NewEvent {
        NewEvent {
            event_id: EventId::new(),
            event_type: "Tested".into(),
            schema_version: 1,
            payload: "{}".into(),
            metadata: Metadata::default(),
        }
    }

    fn stream(name: &str) -> StreamId {
        StreamId::new(name).expect("valid stream id")
    }

    fn corrupt_row(error: &StoreError) -> Option<&CorruptRow> {
        match error {
            StoreError::Backend(source) => source.downcast_ref::<CorruptRow>(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn corrupt_rows_are_typed_errors_and_unreadable_log_entries() {
        let file = ScratchFile::new("corrupt");
        let store =
            SqliteStore::open_with(file.path(), SqliteOptions::default().migrate_on_open(true))
                .await
                .expect("open");
        for name in ["show-1", "show-2", "show-3", "hall-1"] {
            store
                .append(&stream(name), ExpectedVersion::NoStream, vec![event()])
                .await
                .expect("append");
        }
        let editor = Connection::open(file.path()).expect("open by hand");
        editor
            .execute_batch(
                "UPDATE cqrs_events SET event_id = x'0102' WHERE position = 2; \
                 UPDATE cqrs_events SET headers = 'not json' WHERE position = 3;",
            )
            .expect("corrupt two rows");

        let error = store
            .read_all(Position::START, 10)
            .await
            .expect_err("a corrupt row fails read_all");
        let corrupt = corrupt_row(&error).expect("a CorruptRow");
        assert_eq!(
            (corrupt.position, corrupt.stream.as_str(), corrupt.version),
            (Some(Position(2)), "show-2", Some(Version(1)))
        );
        let message = error.to_string();
        assert!(
            message.contains("at position 2") && message.contains("event_id: not a UUID"),
            "{message}"
        );
        let error = store
            .read_stream(&stream("show-3"), Version(1), 10)
            .await
            .expect_err("a corrupt row fails read_stream");
        assert!(error.to_string().contains("headers: "), "{error}");

        let batch = store
            .read_log(Position::START, 10, &["show"])
            .await
            .expect("read_log reads past corrupt rows");
        assert_eq!(batch.last, Some(Position(4)));
        let entries: Vec<(u64, bool)> = batch
            .entries
            .iter()
            .map(|entry| (entry.position().0, matches!(entry, LogEntry::Event(_))))
            .collect();
        assert_eq!(entries, [(1, true), (2, false), (3, false)]);
        let LogEntry::Unreadable(unreadable) = &batch.entries[2] else {
            panic!("position 3 is unreadable");
        };
        assert_eq!(unreadable.stream, "show-3");
        assert_eq!(unreadable.event_type.as_deref(), Some("Tested"));
        assert!(
            unreadable.reason.starts_with("headers: "),
            "{}",
            unreadable.reason
        );

        let others = store
            .read_log(Position::START, 10, &["hall"])
            .await
            .expect("read_log of another aggregate");
        assert_eq!(others.entries.len(), 1);
        assert_eq!(others.last, Some(Position(4)));
    }

    #[tokio::test]
    async fn an_unmigrated_file_and_an_edited_migration_say_what_is_wrong() {
        let file = ScratchFile::new("migrations");
        let store = SqliteStore::open(file.path()).await.expect("open");
        let error = store
            .append(&stream("show-1"), ExpectedVersion::Any, vec![event()])
            .await
            .expect_err("no schema yet");
        let message = error.to_string();
        assert!(
            message.contains("no such table: cqrs_events") && message.contains("SQLITE_ERROR"),
            "{message}"
        );

        assert_eq!(store.migrate().await.expect("migrate"), [1, 2]);
        assert_eq!(
            store.migrate().await.expect("migrate again"),
            Vec::<u32>::new()
        );
        let editor = Connection::open(file.path()).expect("open by hand");
        editor
            .execute_batch("UPDATE cqrs_schema_migrations SET checksum = 'abc' WHERE version = 1")
            .expect("edit the record");
        let error = store.migrate().await.expect_err("an edited migration");
        let message = error.to_string();
        assert!(
            message.contains("schema migration 1 (`event_store`) was applied with checksum abc"),
            "{message}"
        );
    }
}
