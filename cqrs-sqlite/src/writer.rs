//! The store's one writer: a thread that owns the write connection and turns the requests that
//! queued up into one `BEGIN IMMEDIATE` transaction, each append in a savepoint of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::telemetry::store as store_telemetry;
use cqrs_core::{
    AppendReceipt, CommandId, CommandRecord, ExpectedVersion, NewEvent, Position, Snapshot,
    StoreError, StreamId, Version,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot, watch};

use crate::connection::{self, Role};
use crate::error::{SqliteError, SqliteStoreError, backend};
use crate::options::SqliteOptions;
use crate::rows;

/// The value of the batch size histogram's `store` label.
const STORE_LABEL: &str = "sqlite";

/// One append on its way to the writer, checked and encoded by the caller.
pub(crate) struct Append {
    pub(crate) stream: StreamId,
    pub(crate) expected: ExpectedVersion,
    pub(crate) command_id: Option<CommandId>,
    pub(crate) events: Vec<NewEvent>,
    /// Each event's headers as JSON, encoded on the caller's task rather than the writer's.
    pub(crate) headers: Vec<String>,
    pub(crate) span: tracing::Span,
    pub(crate) reply: oneshot::Sender<Result<AppendReceipt, StoreError>>,
}

/// What the writer is asked to do.
pub(crate) enum Request {
    Append(Append),
    SaveSnapshot {
        stream: StreamId,
        snapshot: Snapshot,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Migrate {
        reply: oneshot::Sender<Result<Vec<u32>, StoreError>>,
    },
    /// Checkpoint the whole WAL into the database file, close the connection and stop.
    Close {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Work of the caller's (a processor's batch, a saga's commit), run on the writer's
    /// connection in a savepoint of its own.
    Run(Box<dyn Job>),
}

/// Work that runs in the writer's transaction: [`job`] makes one from a closure.
pub(crate) trait Job: Send {
    /// Runs the work on `connection`, inside its savepoint; `true` to keep what it wrote,
    /// `false` to roll it back (the work failed).
    fn run(&mut self, connection: &Connection) -> bool;

    /// Hands the caller the work's result once the transaction committed (`Ok`), or the
    /// failure of the transaction or of the savepoint (`Err`): then nothing of it was written.
    fn answer(self: Box<Self>, transaction: Result<(), StoreError>);
}

/// What the caller of a [`job`] gets: the work's own result, or the failure of the transaction
/// it ran in.
pub(crate) type JobAnswer<T, E> = oneshot::Receiver<Result<Result<T, E>, StoreError>>;

/// A [`Job`] that runs `work`, keeps what it wrote when it returns `Ok` and rolls it back when
/// it returns `Err` (or panics: the panic is caught, so that the writer thread lives on, and
/// answered as a store error).
pub(crate) fn job<T, E, F>(work: F) -> (Box<dyn Job>, JobAnswer<T, E>)
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let job = Closure {
        work: Some(work),
        result: None,
        reply,
    };
    (Box::new(job), answer)
}

struct Closure<T, E, F> {
    work: Option<F>,
    result: Option<Result<Result<T, E>, StoreError>>,
    reply: oneshot::Sender<Result<Result<T, E>, StoreError>>,
}

impl<T, E, F> Job for Closure<T, E, F>
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
{
    fn run(&mut self, connection: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(connection)));
        let (keep, result) = match ran {
            Ok(result) => (result.is_ok(), Ok(result)),
            Err(payload) => (
                false,
                Err(StoreError::backend(SqliteStoreError::WorkPanicked(
                    cqrs_core::processor::Panicked::from_payload(&*payload).to_string(),
                ))),
            ),
        };
        self.result = Some(result);
        keep
    }

    fn answer(self: Box<Self>, transaction: Result<(), StoreError>) {
        let answer = match (transaction, self.result) {
            (Err(error), _) => Err(error),
            (Ok(()), Some(result)) => result,
            // Not run: the writer answers every job it did not run with an error.
            (Ok(()), None) => return,
        };
        let _ = self.reply.send(answer);
    }
}

/// Starts the writer thread on `path`; returns once its connection is open (or failed to open).
pub(crate) async fn start(
    path: PathBuf,
    options: SqliteOptions,
    head: Arc<watch::Sender<Position>>,
) -> Result<mpsc::Sender<Request>, StoreError> {
    let (sender, receiver) = mpsc::channel(options.max_batch.saturating_mul(16).max(64));
    let (opened, open_result) = oneshot::channel();
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name("cqrs-sqlite-writer".into())
        .spawn(move || {
            let connection = match connection::open(&thread_path, &options, Role::Writer).and_then(
                |connection| {
                    // The writer polls for the lock itself (see `WriteTransaction::begin`).
                    connection.busy_timeout(Duration::ZERO).map_err(|error| {
                        StoreError::backend(SqliteError::new("setting busy_timeout", &error))
                    })?;
                    Ok(connection)
                },
            ) {
                Ok(connection) => connection,
                Err(error) => {
                    let _ = opened.send(Err(error));
                    return;
                }
            };
            if opened.send(Ok(())).is_err() {
                return;
            }
            Writer {
                connection,
                options,
                head,
                known: Known::default(),
            }
            .run(receiver);
        })
        .map_err(|_| StoreError::backend(SqliteStoreError::WriterStopped { path: path.clone() }))?;
    match open_result.await {
        Ok(Ok(())) => Ok(sender),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(StoreError::backend(SqliteStoreError::WriterStopped {
            path,
        })),
    }
}

/// The error of a call whose request the writer never answered.
pub(crate) fn stopped(path: &Path) -> StoreError {
    StoreError::backend(SqliteStoreError::WriterStopped {
        path: path.to_owned(),
    })
}

/// The writer's transaction: `BEGIN IMMEDIATE` when made, rolled back when dropped uncommitted.
struct WriteTransaction<'c> {
    connection: &'c Connection,
    committed: bool,
}

/// The first and the longest pause between two attempts at the write lock.
const LOCK_PAUSES: (Duration, Duration) = (Duration::from_micros(100), Duration::from_millis(1));

impl<'c> WriteTransaction<'c> {
    /// Takes the file's write lock, trying again while another connection (another process)
    /// holds it, up to `timeout`. SQLite's own busy handler sleeps longer and longer between
    /// tries (up to 100 ms), so a process waiting on a writer that commits back to back rarely
    /// finds the lock free and can wait out its whole timeout; the writer tries every
    /// millisecond at most instead.
    fn begin(connection: &'c Connection, timeout: Duration) -> Result<Self, SqliteError> {
        let started = Instant::now();
        let mut pause = LOCK_PAUSES.0;
        loop {
            match connection
                .prepare_cached("BEGIN IMMEDIATE")
                .and_then(|mut statement| statement.execute([]))
            {
                Ok(_) => {
                    return Ok(WriteTransaction {
                        connection,
                        committed: false,
                    });
                }
                Err(error) => {
                    let error = SqliteError::new("beginning a write transaction", &error);
                    if !error.is_busy() || started.elapsed() >= timeout {
                        return Err(error);
                    }
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(LOCK_PAUSES.1);
        }
    }

    fn commit(mut self) -> Result<(), SqliteError> {
        self.committed = true;
        self.connection
            .prepare_cached("COMMIT")
            .and_then(|mut statement| statement.execute([]))
            .map(drop)
            .map_err(|error| {
                // A failed COMMIT can leave the transaction open: it must not stay open.
                if !self.connection.is_autocommit() {
                    let _ = self.connection.execute_batch("ROLLBACK");
                }
                SqliteError::new("committing", &error)
            })
    }
}

impl std::ops::Deref for WriteTransaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl Drop for WriteTransaction<'_> {
    fn drop(&mut self) {
        if !self.committed && !self.connection.is_autocommit() {
            // Fails only when there is nothing left to roll back.
            let _ = self.connection.execute_batch("ROLLBACK");
        }
    }
}

/// How long the writer looks for a next request before it sleeps: a writer that sends again
/// right after its answer (most do) then finds the writer awake.
const IDLE_SPIN: Duration = Duration::from_micros(50);

/// What [`next_soon`] found.
enum Next {
    Request(Request),
    Empty,
    Closed,
}

/// The next request, if one arrives before `deadline`: looked for without sleeping, yielding the
/// core in between so that the writers sending it can run.
fn next_soon(receiver: &mut mpsc::Receiver<Request>, deadline: Instant) -> Next {
    loop {
        match receiver.try_recv() {
            Ok(request) => return Next::Request(request),
            Err(mpsc::error::TryRecvError::Disconnected) => return Next::Closed,
            Err(mpsc::error::TryRecvError::Empty) if Instant::now() >= deadline => {
                return Next::Empty;
            }
            Err(mpsc::error::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
}

struct Writer {
    connection: Connection,
    options: SqliteOptions,
    head: Arc<watch::Sender<Position>>,
    known: Known,
}

/// The most stream versions the writer remembers; beyond, it forgets them all and reads them
/// again.
const KNOWN_STREAMS: usize = 65_536;

/// What the writer learned from its own commits: the head, and the versions of the streams it
/// appended to, so that an append needs neither read. Trusted while `PRAGMA data_version` is
/// what it was after the writer's last commit: SQLite changes it when another connection (another
/// process, another store on the file) commits, never for the writer's own commits. The unique
/// `(stream, version)` key stays the last word either way.
#[derive(Default)]
struct Known {
    data_version: Option<i64>,
    head: u64,
    versions: HashMap<StreamId, Version>,
}

/// The answers to the requests of one transaction, held until the writer has counted its queue.
#[must_use = "the callers wait until the answers are sent"]
enum Answers {
    /// Answered already (a migration).
    Sent,
    /// Committed: each request's outcome.
    Committed(Vec<Request>, Vec<Outcome>),
    /// Rolled back: every request gets the error.
    Failed(Vec<Request>, SqliteError),
}

impl Answers {
    fn send(self) {
        match self {
            Answers::Sent => {}
            Answers::Committed(requests, outcomes) => {
                for (request, outcome) in requests.into_iter().zip(outcomes) {
                    reply(request, outcome);
                }
            }
            Answers::Failed(requests, error) => {
                for request in requests {
                    fail(request, &error);
                }
            }
        }
    }
}

/// What one request did inside the transaction; it holds once the transaction commits.
enum Outcome {
    Append(Result<AppendReceipt, StoreError>),
    Snapshot(Result<(), StoreError>),
    /// The job ran (its result is inside it), or its savepoint failed.
    Ran(Result<(), StoreError>),
}

impl Writer {
    /// Serves requests until every sender is gone (the store and its clones dropped).
    ///
    /// Group commit: the writers answered by one transaction are likely to come back with their
    /// next request a few microseconds later, so the next transaction stays open (up to
    /// [`SqliteOptions::batch_linger`]) until it holds as many requests as the last one served
    /// plus those that queued meanwhile, running each as it arrives. A lone writer never waits:
    /// its estimate is 1. A writer that went away costs one linger, after which the estimate has
    /// dropped.
    fn run(mut self, mut receiver: mpsc::Receiver<Request>) {
        let max_batch = self.options.max_batch;
        let mut expected = 1;
        // A migration or the closing met while a transaction was open: served first after it.
        let mut held = None;
        loop {
            let first = match held.take() {
                Some(request) => request,
                None => match next_soon(&mut receiver, Instant::now() + IDLE_SPIN) {
                    Next::Request(request) => request,
                    Next::Closed => return,
                    Next::Empty => match receiver.blocking_recv() {
                        Some(request) => request,
                        None => return,
                    },
                },
            };
            let first = match first {
                Request::Close { reply } => {
                    let closed = self.close();
                    let _ = reply.send(closed);
                    return;
                }
                other => other,
            };
            let deadline = Instant::now() + self.options.batch_linger;
            let mut served = 1;
            let answers = self.serve(first, |taken| {
                served = taken;
                if taken >= max_batch {
                    return None;
                }
                let next = match receiver.try_recv() {
                    Ok(request) => request,
                    Err(_) if taken >= expected => return None,
                    Err(_) => match next_soon(&mut receiver, deadline) {
                        Next::Request(request) => request,
                        Next::Empty | Next::Closed => return None,
                    },
                };
                if let Request::Migrate { .. } | Request::Close { .. } = next {
                    held = Some(next);
                    return None;
                }
                Some(next)
            });
            // Counted before the callers hear: one answered first could queue its next request
            // before the count, and be expected twice (the next lone writer would wait a linger
            // for a writer that is not coming).
            expected = (served + receiver.len()).min(max_batch);
            answers.send();
        }
    }

    /// Serves `first` and the requests `more` hands out (asked with how many were taken so far,
    /// until it answers `None`) in one transaction; returns their answers, to send.
    fn serve(&mut self, first: Request, mut more: impl FnMut(usize) -> Option<Request>) -> Answers {
        // Rare, and DDL: a transaction of its own.
        let first = match first {
            Request::Migrate { reply } => {
                let _ = reply.send(self.migrate());
                // Tables may have changed under what the writer knows.
                self.known = Known::default();
                return Answers::Sent;
            }
            other => other,
        };
        let mut writes = Vec::with_capacity(self.options.max_batch.min(64));
        writes.push(first);
        let result = self.transaction(&mut writes, &mut more);
        let spans = writes.iter().filter_map(|request| match request {
            Request::Append(append) => Some(&append.span),
            _ => None,
        });
        let spans: Vec<&tracing::Span> = spans.collect();
        if !spans.is_empty() {
            store_telemetry::record_batch(STORE_LABEL, spans.into_iter());
        }
        match result {
            Ok((outcomes, head)) => {
                // Published before the replies, so that a caller that waits right after its
                // receipt finds the head there.
                self.head.send_if_modified(|published| {
                    if head <= *published {
                        return false;
                    }
                    *published = head;
                    true
                });
                Answers::Committed(writes, outcomes)
            }
            Err(error) => Answers::Failed(writes, error),
        }
    }

    /// Moves the whole WAL into the database file and closes the connection (SQLite removes the
    /// `-wal` and `-shm` files when it was the last one on the file).
    fn close(self) -> Result<(), StoreError> {
        let failed = |operation| {
            move |error: rusqlite::Error| StoreError::backend(SqliteError::new(operation, &error))
        };
        // Waits for other processes' readers as SQLite does, up to the busy timeout.
        self.connection
            .busy_timeout(self.options.busy_timeout)
            .map_err(failed("setting busy_timeout"))?;
        let (busy, _, _): (i64, i64, i64) = self
            .connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(failed("checkpointing"))?;
        if busy != 0 {
            return Err(StoreError::backend(SqliteError::noticed(
                "checkpointing",
                "another connection kept the WAL from being moved into the database file"
                    .to_owned(),
            )));
        }
        self.connection
            .close()
            .map_err(|(_, error)| StoreError::backend(SqliteError::new("closing", &error)))
    }

    /// Applies the shipped migrations, waiting for another process's lock as SQLite does (the
    /// writer's own polling is for its transactions only).
    fn migrate(&mut self) -> Result<Vec<u32>, StoreError> {
        let waiting = |error: rusqlite::Error| {
            StoreError::backend(SqliteError::new("setting busy_timeout", &error))
        };
        self.connection
            .busy_timeout(self.options.busy_timeout)
            .map_err(waiting)?;
        let applied = crate::migrate::run(&mut self.connection);
        self.connection
            .busy_timeout(Duration::ZERO)
            .map_err(waiting)?;
        applied
    }

    /// Runs `writes` in one transaction, each in a savepoint of its own, so that one refused or
    /// failed request leaves the others alone. `Err` when the transaction itself failed (to begin
    /// or to commit): then nothing of it was written.
    fn transaction(
        &mut self,
        writes: &mut Vec<Request>,
        more: &mut dyn FnMut(usize) -> Option<Request>,
    ) -> Result<(Vec<Outcome>, Position), SqliteError> {
        // IMMEDIATE: the write lock is taken now (waiting up to the busy timeout for another
        // process), so the head and versions read below cannot change before the commit. A
        // deferred transaction that reads first and writes later fails with BUSY at once instead.
        let transaction = WriteTransaction::begin(&self.connection, self.options.busy_timeout)?;
        let data_version: i64 = transaction
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(|error| SqliteError::new("reading the data version", &error))?;
        // Trusted again only once this transaction commits.
        let known = std::mem::take(&mut self.known);
        let (mut head, mut versions) = if known.data_version == Some(data_version) {
            (known.head, known.versions)
        } else {
            let head: i64 = transaction
                .prepare_cached("SELECT coalesce(max(position), 0) FROM cqrs_events")
                .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
                .map_err(|error| SqliteError::new("reading the head", &error))?;
            let mut versions = known.versions;
            versions.clear();
            (u64::try_from(head).unwrap_or(0), versions)
        };
        // A job may write anything, events included: what the writer knows is then not trusted.
        let mut trusted = true;
        let mut outcomes = Vec::with_capacity(writes.capacity());
        loop {
            if outcomes.len() == writes.len() {
                match more(writes.len()) {
                    Some(request) => writes.push(request),
                    None => break,
                }
            }
            let Some(request) = writes.get_mut(outcomes.len()) else {
                break;
            };
            match request {
                Request::Append(append) => {
                    let known_version = versions.get(&append.stream).copied();
                    let outcome = append_one(&transaction, Position(head), append, known_version);
                    if let Ok(receipt) = &outcome {
                        if let Some(position) = receipt.position {
                            head = position.0;
                        }
                        versions.insert(append.stream.clone(), receipt.version);
                    }
                    outcomes.push(Outcome::Append(outcome));
                }
                Request::SaveSnapshot {
                    stream, snapshot, ..
                } => outcomes.push(Outcome::Snapshot(in_savepoint(
                    &transaction,
                    "saving a snapshot",
                    |connection| save_snapshot(connection, stream, snapshot),
                ))),
                Request::Run(job) => {
                    trusted = false;
                    outcomes.push(Outcome::Ran(run_job(&transaction, &mut **job)));
                }
                // `run` serves migrations and closing alone and never hands one here; were one
                // handed, its reply would be dropped, and its caller would learn that it was not
                // served.
                Request::Migrate { .. } | Request::Close { .. } => {
                    outcomes.push(Outcome::Ran(Ok(())))
                }
            }
            // SQLite rolls a whole transaction back by itself after some errors (a full disk,
            // an I/O error). The next request would then run outside of any transaction and
            // commit on its own: the batch stops here and fails as a whole instead.
            if transaction.is_autocommit() {
                let cause = match outcomes.last() {
                    Some(
                        Outcome::Append(Err(error))
                        | Outcome::Snapshot(Err(error))
                        | Outcome::Ran(Err(error)),
                    ) => error.to_string(),
                    _ => "an error".to_owned(),
                };
                return Err(SqliteError::noticed(
                    "writing",
                    format!("SQLite rolled the write transaction back after {cause}"),
                ));
            }
        }
        transaction.commit()?;
        if trusted {
            if versions.len() > KNOWN_STREAMS {
                versions.clear();
            }
            self.known = Known {
                data_version: Some(data_version),
                head,
                versions,
            };
        }
        Ok((outcomes, Position(head)))
    }
}

/// Hands each request its outcome. A caller that stopped waiting (its future dropped) is not an
/// error of the writer.
fn reply(request: Request, outcome: Outcome) {
    match (request, outcome) {
        (Request::Append(append), Outcome::Append(result)) => {
            let _ = append.reply.send(result);
        }
        (Request::SaveSnapshot { reply, .. }, Outcome::Snapshot(result)) => {
            let _ = reply.send(result);
        }
        (Request::Run(job), Outcome::Ran(result)) => job.answer(result),
        // `transaction` answers each request with its own kind of outcome, and migrations are
        // answered in `serve`: nothing else reaches here (a reply dropped unanswered would tell
        // its caller that the writer stopped).
        _ => {}
    }
}

/// Hands each request of a transaction that failed as a whole the failure.
fn fail(request: Request, error: &SqliteError) {
    let error = || StoreError::backend(error.clone());
    match request {
        Request::Append(append) => {
            let _ = append.reply.send(Err(error()));
        }
        Request::SaveSnapshot { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Request::Migrate { reply } => {
            let _ = reply.send(Err(error()));
        }
        Request::Close { reply } => {
            let _ = reply.send(Err(error()));
        }
        Request::Run(job) => job.answer(Err(error())),
    }
}

/// Runs `job` in a savepoint of its own, kept or rolled back as the job says.
fn run_job(connection: &Connection, job: &mut dyn Job) -> Result<(), StoreError> {
    const OPERATION: &str = "running a processor's work";
    savepoint(connection, Savepoint::Begin).map_err(backend(OPERATION))?;
    let end = if job.run(connection) {
        Savepoint::Release
    } else {
        Savepoint::RollBack
    };
    end_savepoint(connection, end).map_err(backend(OPERATION))
}

/// Runs `work` in a savepoint: released when it succeeds, rolled back (undoing whatever part of
/// it was written) when it fails.
fn in_savepoint<T>(
    connection: &Connection,
    operation: &'static str,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    savepoint(connection, Savepoint::Begin).map_err(backend(operation))?;
    match work(connection) {
        Ok(value) => {
            end_savepoint(connection, Savepoint::Release).map_err(backend(operation))?;
            Ok(value)
        }
        Err(error) => {
            // The request's own failure is what its caller learns, whatever the rollback does.
            let _ = end_savepoint(connection, Savepoint::RollBack);
            Err(error)
        }
    }
}

/// Ends the request's savepoint with `step`. Should that fail, what the request wrote cannot be
/// told apart from the rest of the transaction any more: the whole transaction is rolled back,
/// and the writer, finding no transaction open, fails the batch rather than commit part of a
/// request.
fn end_savepoint(connection: &Connection, step: Savepoint) -> rusqlite::Result<()> {
    savepoint(connection, step).inspect_err(|_| {
        // Fails only when there is no transaction left to roll back, which is the aim.
        let _ = connection.execute_batch("ROLLBACK");
    })
}

/// A step of the one savepoint each request runs in.
#[derive(Clone, Copy)]
enum Savepoint {
    Begin,
    Release,
    RollBack,
}

/// Takes `step` with cached statements: the writer runs these for every request, and parsing
/// them each time is a measurable part of a small append.
fn savepoint(connection: &Connection, step: Savepoint) -> rusqlite::Result<()> {
    let run = |sql: &str| {
        connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map(drop)
    };
    match step {
        Savepoint::Begin => run("SAVEPOINT cqrs_request"),
        Savepoint::Release => run("RELEASE cqrs_request"),
        Savepoint::RollBack => {
            run("ROLLBACK TO cqrs_request")?;
            run("RELEASE cqrs_request")
        }
    }
}

/// The command record of `command_id` on `stream`, read on `connection`.
pub(crate) fn command_record(
    connection: &Connection,
    stream: &StreamId,
    command_id: &CommandId,
) -> Result<Option<CommandRecord>, StoreError> {
    let row = connection
        .prepare_cached(
            "SELECT first_version, version, position FROM cqrs_commands \
             WHERE stream = ?1 AND command_id = ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![stream.as_str(), command_id.as_str()], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .optional()
        })
        .map_err(backend("reading a command record"))?;
    let Some((first_version, version, position)) = row else {
        return Ok(None);
    };
    Ok(Some(CommandRecord {
        command_id: command_id.clone(),
        stream: stream.clone(),
        first_version: rows::stored_version(first_version, stream)?,
        version: rows::stored_version(version, stream)?,
        position: rows::stored_position(position, stream.as_str())?,
    }))
}

/// The version of `stream`, read on `connection`.
pub(crate) fn stream_version(
    connection: &Connection,
    stream: &StreamId,
) -> Result<Version, StoreError> {
    let version: i64 = connection
        .prepare_cached("SELECT coalesce(max(version), 0) FROM cqrs_events WHERE stream = ?1")
        .and_then(|mut statement| statement.query_row([stream.as_str()], |row| row.get(0)))
        .map_err(backend("reading a stream's version"))?;
    rows::stored_version(version, stream)
}

/// One append inside the writer's transaction, after the last position `head`: the command id
/// first (whatever `expected` says), then the expected version, then the events and the record.
/// The checks only read; the writes of more than one statement run in a savepoint, so that one
/// failing halfway (a trigger of the user's, a constraint) leaves nothing of the append behind.
fn append_one(
    connection: &Connection,
    head: Position,
    append: &Append,
    known_version: Option<Version>,
) -> Result<AppendReceipt, StoreError> {
    let stream = &append.stream;
    if let Some(command_id) = &append.command_id
        && let Some(earlier) = command_record(connection, stream, command_id)?
    {
        return Err(StoreError::DuplicateCommand { earlier });
    }
    let actual = match known_version {
        Some(version) => version,
        None => stream_version(connection, stream)?,
    };
    if !append.expected.matches(actual) {
        return Err(StoreError::Conflict {
            stream: stream.clone(),
            expected: append.expected,
            actual,
        });
    }
    let first_version = actual.next();
    if append.events.is_empty() {
        return Ok(AppendReceipt {
            first_version,
            version: actual,
            first_position: None,
            position: None,
        });
    }
    if append.events.len() == 1 && append.command_id.is_none() {
        // One statement: SQLite undoes a failing statement by itself, and a failure that undoes
        // the whole transaction is caught by the writer after each request.
        return insert_events(connection, head, actual, append);
    }
    in_savepoint(connection, "appending", |connection| {
        insert_events(connection, head, actual, append)
    })
}

/// The rows of an append whose checks passed: its events after `head` and `actual`, and its
/// command record.
fn insert_events(
    connection: &Connection,
    head: Position,
    actual: Version,
    append: &Append,
) -> Result<AppendReceipt, StoreError> {
    let stream = &append.stream;
    let first_version = actual.next();
    let mut insert = connection
        .prepare_cached(concat!(
            "INSERT INTO cqrs_events (",
            rows::event_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ))
        .map_err(backend("appending"))?;
    let mut position = head.0;
    let mut version = actual.0;
    for (event, headers) in append.events.iter().zip(&append.headers) {
        position += 1;
        version += 1;
        let metadata = &event.metadata;
        insert
            .execute(params![
                rows::to_i64(position),
                stream.as_str(),
                rows::to_i64(version),
                event.event_id.0.as_bytes().as_slice(),
                event.event_type.as_ref(),
                i64::from(event.schema_version),
                event.payload.as_bytes(),
                metadata
                    .correlation_id
                    .as_ref()
                    .map(|id| id.as_bytes().as_slice()),
                metadata
                    .causation_id
                    .as_ref()
                    .map(|id| id.as_bytes().as_slice()),
                metadata.command_id.as_ref().map(CommandId::as_str),
                rows::micros(metadata.timestamp),
                headers.as_str(),
            ])
            .map_err(backend("appending"))?;
    }
    if let Some(command_id) = &append.command_id {
        connection
            .prepare_cached(
                "INSERT INTO cqrs_commands (stream, command_id, first_version, version, position) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    stream.as_str(),
                    command_id.as_str(),
                    rows::to_i64(first_version.0),
                    rows::to_i64(version),
                    rows::to_i64(position),
                ])
            })
            .map_err(backend("recording the command id"))?;
    }
    Ok(AppendReceipt {
        first_version,
        version: Version(version),
        first_position: Some(Position(head.0 + 1)),
        position: Some(Position(position)),
    })
}

/// Stores `snapshot` of `stream`, unless the stored one has the same schema version and a later
/// stream version (a slow snapshotter must not replace a newer snapshot with an older one).
fn save_snapshot(
    connection: &Connection,
    stream: &StreamId,
    snapshot: &Snapshot,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT INTO cqrs_snapshots (stream, version, schema_version, payload, saved_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (stream) DO UPDATE SET version = excluded.version, \
             schema_version = excluded.schema_version, payload = excluded.payload, \
             saved_at = excluded.saved_at \
             WHERE NOT (cqrs_snapshots.schema_version = excluded.schema_version \
                        AND cqrs_snapshots.version > excluded.version)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                stream.as_str(),
                rows::to_i64(snapshot.version.0),
                i64::from(snapshot.schema_version),
                snapshot.payload.as_slice(),
                crate::migrate::now_micros(),
            ])
        })
        .map_err(backend("saving a snapshot"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use cqrs_core::{EventId, Metadata};

    use super::*;
    use crate::scratch::ScratchFile;

    fn event(event_type: &'static str, command_id: Option<&str>) -> NewEvent {
        NewEvent {
            event_id: EventId::new(),
            event_type: event_type.into(),
            schema_version: 1,
            payload: "{}".into(),
            metadata: Metadata {
                command_id: command_id.map(|id| CommandId::new(id).expect("valid command id")),
                ..Metadata::default()
            },
        }
    }

    type Answer = oneshot::Receiver<Result<AppendReceipt, StoreError>>;

    /// A writer on a new migrated file, after `setup` (SQL) ran on its connection.
    fn writer_on(file: &ScratchFile, setup: &str) -> Writer {
        let options = SqliteOptions::default();
        let mut connection =
            connection::open(file.path(), &options, Role::Writer).expect("open writer");
        crate::migrate::run(&mut connection).expect("migrate");
        connection.execute_batch(setup).expect("setup");
        Writer {
            connection,
            options,
            head: Arc::new(watch::Sender::new(Position::START)),
            known: Known::default(),
        }
    }

    /// Serves `batch` as `run` serves the requests that queued up: in one transaction, unless
    /// one stops it early; those left then go in the next.
    fn serve_all(writer: &mut Writer, batch: Vec<Request>) {
        let mut batch = batch.into_iter();
        while let Some(first) = batch.next() {
            writer.serve(first, |_| batch.next()).send();
        }
    }

    fn append(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> (Request, Answer) {
        let (reply, answer) = oneshot::channel();
        let command_id = events
            .first()
            .and_then(|event| event.metadata.command_id.clone());
        let headers = events.iter().map(|_| "{}".to_owned()).collect();
        let request = Request::Append(Append {
            stream: StreamId::new(stream).expect("valid stream id"),
            expected,
            command_id,
            events,
            headers,
            span: tracing::Span::none(),
            reply,
        });
        (request, answer)
    }

    /// One batch, one transaction: an append refused for its version, one refused as a
    /// duplicate command and one that fails halfway (SQLite aborts its second insert) each roll
    /// back alone; the others are committed with positions 1, 2, 3: no hole where the failed
    /// append's first event was inserted and rolled back.
    #[test]
    fn a_failing_append_rolls_back_alone_and_leaves_no_hole() {
        let file = ScratchFile::new("batch");
        let mut writer = writer_on(
            &file,
            "CREATE TRIGGER poison BEFORE INSERT ON cqrs_events \
             WHEN NEW.event_type = 'Poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned event refused'); END;",
        );
        let head = Arc::clone(&writer.head);

        let (a, a_answer) = append("a-1", ExpectedVersion::NoStream, vec![event("Ok", None)]);
        let (a_again, a_again_answer) =
            append("a-1", ExpectedVersion::NoStream, vec![event("Ok", None)]);
        let (b, b_answer) = append("b-1", ExpectedVersion::Any, vec![event("Ok", Some("c1"))]);
        let (b_again, b_again_answer) =
            append("b-1", ExpectedVersion::Any, vec![event("Ok", Some("c1"))]);
        let (poisoned, poisoned_answer) = append(
            "c-1",
            ExpectedVersion::Any,
            vec![event("Ok", None), event("Poison", None)],
        );
        let (d, d_answer) = append("d-1", ExpectedVersion::NoStream, vec![event("Ok", None)]);
        let batch = vec![a, a_again, b, b_again, poisoned, d];
        serve_all(&mut writer, batch);

        let answer = |mut answer: Answer| answer.try_recv().expect("answered");
        let a = answer(a_answer).expect("first append");
        assert_eq!((a.position, a.version), (Some(Position(1)), Version(1)));
        assert!(matches!(
            answer(a_again_answer),
            Err(StoreError::Conflict {
                actual: Version(1),
                ..
            })
        ));
        let b = answer(b_answer).expect("command c1");
        assert_eq!(b.position, Some(Position(2)));
        match answer(b_again_answer) {
            Err(StoreError::DuplicateCommand { earlier }) => {
                assert_eq!(earlier.position, Position(2))
            }
            other => panic!("expected a duplicate command, got {other:?}"),
        }
        let poisoned = answer(poisoned_answer).expect_err("the poisoned append fails");
        let message = poisoned.to_string();
        assert!(
            message.contains("poisoned event refused") && message.contains("SQLITE_CONSTRAINT"),
            "the error says what SQLite said: {message}"
        );
        let d = answer(d_answer).expect("append after the failed one");
        assert_eq!(d.first_position, Some(Position(3)), "no hole");
        assert_eq!(*head.borrow(), Position(3), "the head is published");

        let stored: Vec<(i64, String)> = writer
            .connection
            .prepare("SELECT position, stream FROM cqrs_events ORDER BY position")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .expect("stored rows");
        assert_eq!(
            stored,
            [(1, "a-1".into()), (2, "b-1".into()), (3, "d-1".into())]
        );
    }

    /// A job shares the batch's transaction with appends: one that returns `Err` and one that
    /// panics are rolled back alone (the panic answered as a store error, the writer alive), one
    /// that returns `Ok` is committed with the appends around it.
    #[test]
    fn jobs_run_in_savepoints_of_the_batch_and_a_panic_rolls_back_alone() {
        let file = ScratchFile::new("jobs");
        let mut writer = writer_on(&file, "CREATE TABLE model (n INTEGER NOT NULL)");
        let insert = |n: i64| {
            move |connection: &Connection| {
                connection
                    .execute("INSERT INTO model (n) VALUES (?1)", [n])
                    .map_err(|error| error.to_string())
            }
        };
        let (kept, mut kept_answer) = job(insert(1));
        let (refused, mut refused_answer) = job(move |connection: &Connection| {
            insert(2)(connection)?;
            Err::<usize, String>("refused".into())
        });
        let (panicking, mut panicking_answer) =
            job(move |connection: &Connection| -> Result<usize, String> {
                let _ = insert(3)(connection);
                panic!("the work panics");
            });
        let (a, a_answer) = append("a-1", ExpectedVersion::Any, vec![event("Ok", None)]);
        let batch = vec![
            Request::Run(kept),
            Request::Run(refused),
            Request::Run(panicking),
            a,
        ];
        serve_all(&mut writer, batch);

        let answer = |answer: &mut JobAnswer<usize, String>| {
            answer
                .try_recv()
                .expect("answered")
                .expect("no store error")
        };
        assert_eq!(answer(&mut kept_answer), Ok(1));
        assert_eq!(answer(&mut refused_answer), Err("refused".into()));
        let panicked = panicking_answer
            .try_recv()
            .expect("answered")
            .expect_err("a panic is a store error");
        assert!(
            panicked.to_string().contains("the work panics"),
            "{panicked}"
        );
        let mut a_answer = a_answer;
        assert_eq!(
            a_answer
                .try_recv()
                .expect("answered")
                .expect("append")
                .position,
            Some(Position(1))
        );
        let stored: Vec<i64> = writer
            .connection
            .prepare("SELECT n FROM model ORDER BY n")
            .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
            .expect("stored rows");
        assert_eq!(stored, [1], "only the kept job's write");
    }

    /// A full file (`max_page_count` reached) fails an append halfway, and SQLite may then roll
    /// the whole transaction back by itself. Whichever it does, every append answered `Ok` is
    /// stored whole, every one answered `Err` left nothing, and nothing ran outside the
    /// transaction.
    #[test]
    fn a_full_file_fails_appends_without_losing_or_half_writing_any() {
        let file = ScratchFile::new("full");
        let mut writer = writer_on(&file, "");
        let pages: i64 = writer
            .connection
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .expect("page count");
        writer
            .connection
            .execute_batch(&format!("PRAGMA max_page_count = {}", pages + 2))
            .expect("cap the file");
        let big = |n: usize| {
            (0..n)
                .map(|_| NewEvent {
                    payload: vec![b'x'; 2_000].as_slice().into(),
                    ..event("Big", None)
                })
                .collect::<Vec<_>>()
        };
        let (small, small_answer) =
            append("small-1", ExpectedVersion::Any, vec![event("Ok", None)]);
        let (huge, huge_answer) = append("huge-1", ExpectedVersion::Any, big(200));
        let (after, after_answer) =
            append("after-1", ExpectedVersion::Any, vec![event("Ok", None)]);
        serve_all(&mut writer, vec![small, huge, after]);

        let answer = |mut answer: Answer| answer.try_recv().expect("answered");
        let answers = [
            ("small-1", 1, answer(small_answer)),
            ("huge-1", 200, answer(huge_answer)),
            ("after-1", 1, answer(after_answer)),
        ];
        assert!(answers[1].2.is_err(), "the huge append does not fit");
        let message = answers[1].2.as_ref().expect_err("huge").to_string();
        assert!(message.contains("SQLITE_FULL"), "{message}");
        for (stream, events, answer) in &answers {
            let stored: i64 = writer
                .connection
                .query_row(
                    "SELECT count(*) FROM cqrs_events WHERE stream = ?1",
                    [stream],
                    |row| row.get(0),
                )
                .expect("count");
            let expected = if answer.is_ok() { *events } else { 0 };
            assert_eq!(stored, expected, "{stream}: {answer:?}");
        }
        println!(
            "after a full file: {:?}",
            answers
                .iter()
                .map(|(stream, _, answer)| (stream, answer.is_ok()))
                .collect::<Vec<_>>()
        );
        assert!(
            writer.connection.is_autocommit(),
            "no transaction left open"
        );
    }
}
