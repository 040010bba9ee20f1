//! The store's one writer: a thread that owns the write connection and turns the requests that
//! queued up into one `BEGIN IMMEDIATE` transaction, each append in a savepoint of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cqrs_core::telemetry::store as store_telemetry;
use cqrs_core::{
    AppendReceipt, CommandId, CommandRecord, ExpectedVersion, NewEvent, Position, Snapshot,
    StoreError, StreamId, Version,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
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
            let connection = match connection::open(&thread_path, &options, Role::Writer) {
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

struct Writer {
    connection: Connection,
    options: SqliteOptions,
    head: Arc<watch::Sender<Position>>,
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
    fn run(mut self, mut receiver: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.options.max_batch);
        while let Some(first) = receiver.blocking_recv() {
            batch.push(first);
            while batch.len() < self.options.max_batch {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.serve(&mut batch);
        }
    }

    fn serve(&mut self, batch: &mut Vec<Request>) {
        let mut writes = Vec::with_capacity(batch.len());
        for request in batch.drain(..) {
            match request {
                // Rare, and DDL: a transaction of its own, before the batch's writes.
                Request::Migrate { reply } => {
                    let _ = reply.send(crate::migrate::run(&mut self.connection));
                }
                other => writes.push(other),
            }
        }
        if writes.is_empty() {
            return;
        }
        let spans: Vec<&tracing::Span> = writes
            .iter()
            .filter_map(|request| match request {
                Request::Append(append) => Some(&append.span),
                _ => None,
            })
            .collect();
        if !spans.is_empty() {
            store_telemetry::record_batch(STORE_LABEL, spans.into_iter());
        }
        match self.transaction(&mut writes) {
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
                for (request, outcome) in writes.into_iter().zip(outcomes) {
                    reply(request, outcome);
                }
            }
            Err(error) => {
                for request in writes {
                    fail(request, &error);
                }
            }
        }
    }

    /// Runs `writes` in one transaction, each in a savepoint of its own, so that one refused or
    /// failed request leaves the others alone. `Err` when the transaction itself failed (to begin
    /// or to commit): then nothing of it was written.
    fn transaction(
        &mut self,
        writes: &mut [Request],
    ) -> Result<(Vec<Outcome>, Position), SqliteError> {
        // IMMEDIATE: the write lock is taken now (waiting up to the busy timeout for another
        // process), so the head and versions read below cannot change before the commit. A
        // deferred transaction that reads first and writes later fails with BUSY at once instead.
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|error| SqliteError::new("beginning a write transaction", &error))?;
        let head: i64 = transaction
            .query_row(
                "SELECT coalesce(max(position), 0) FROM cqrs_events",
                [],
                |row| row.get(0),
            )
            .map_err(|error| SqliteError::new("reading the head", &error))?;
        let mut head = u64::try_from(head).unwrap_or(0);
        let mut outcomes = Vec::with_capacity(writes.len());
        for request in writes.iter_mut() {
            match request {
                Request::Append(append) => outcomes.push(Outcome::Append(
                    in_savepoint(&transaction, "appending", |connection| {
                        append_one(connection, Position(head), append)
                    })
                    .inspect(|receipt| {
                        if let Some(position) = receipt.position {
                            head = position.0;
                        }
                    }),
                )),
                Request::SaveSnapshot {
                    stream, snapshot, ..
                } => outcomes.push(Outcome::Snapshot(in_savepoint(
                    &transaction,
                    "saving a snapshot",
                    |connection| save_snapshot(connection, stream, snapshot),
                ))),
                Request::Run(job) => outcomes.push(Outcome::Ran(run_job(&transaction, &mut **job))),
                // Served before the transaction (see `serve`).
                Request::Migrate { .. } => {}
            }
        }
        transaction
            .commit()
            .map_err(|error| SqliteError::new("committing", &error))?;
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
        Request::Run(job) => job.answer(Err(error())),
    }
}

/// Runs `job` in a savepoint of its own, kept or rolled back as the job says.
fn run_job(connection: &Connection, job: &mut dyn Job) -> Result<(), StoreError> {
    const OPERATION: &str = "running a processor's work";
    connection
        .execute_batch("SAVEPOINT cqrs_request")
        .map_err(backend(OPERATION))?;
    let statement = if job.run(connection) {
        "RELEASE cqrs_request"
    } else {
        "ROLLBACK TO cqrs_request; RELEASE cqrs_request"
    };
    // Should this fail, the commit fails too and every request of the batch learns it.
    connection
        .execute_batch(statement)
        .map_err(backend(OPERATION))
}

/// Runs `work` in a savepoint: released when it succeeds, rolled back (undoing whatever part of
/// it was written) when it fails.
fn in_savepoint<T>(
    connection: &Connection,
    operation: &'static str,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    connection
        .execute_batch("SAVEPOINT cqrs_request")
        .map_err(backend(operation))?;
    match work(connection) {
        Ok(value) => {
            connection
                .execute_batch("RELEASE cqrs_request")
                .map_err(backend(operation))?;
            Ok(value)
        }
        Err(error) => {
            // Should the rollback itself fail, the commit fails too and every request of the
            // batch learns it: nothing is left half-written.
            connection
                .execute_batch("ROLLBACK TO cqrs_request; RELEASE cqrs_request")
                .map_err(backend(operation))?;
            Err(error)
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
fn append_one(
    connection: &Connection,
    head: Position,
    append: &Append,
) -> Result<AppendReceipt, StoreError> {
    let stream = &append.stream;
    if let Some(command_id) = &append.command_id
        && let Some(earlier) = command_record(connection, stream, command_id)?
    {
        return Err(StoreError::DuplicateCommand { earlier });
    }
    let actual = stream_version(connection, stream)?;
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
    let mut insert = connection
        .prepare_cached(&format!(
            "INSERT INTO cqrs_events ({}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            rows::EVENT_COLUMNS
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
        let options = SqliteOptions::default();
        let mut connection =
            connection::open(file.path(), &options, Role::Writer).expect("open writer");
        crate::migrate::run(&mut connection).expect("migrate");
        connection
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON cqrs_events \
                 WHEN NEW.event_type = 'Poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned event refused'); END;",
            )
            .expect("trigger");
        let head = Arc::new(watch::Sender::new(Position::START));
        let mut writer = Writer {
            connection,
            options,
            head: Arc::clone(&head),
        };

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
        let mut batch = vec![a, a_again, b, b_again, poisoned, d];
        writer.serve(&mut batch);

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
        let options = SqliteOptions::default();
        let mut connection =
            connection::open(file.path(), &options, Role::Writer).expect("open writer");
        crate::migrate::run(&mut connection).expect("migrate");
        connection
            .execute_batch("CREATE TABLE model (n INTEGER NOT NULL)")
            .expect("table");
        let head = Arc::new(watch::Sender::new(Position::START));
        let mut writer = Writer {
            connection,
            options,
            head,
        };
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
        let mut batch = vec![
            Request::Run(kept),
            Request::Run(refused),
            Request::Run(panicking),
            a,
        ];
        writer.serve(&mut batch);

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
}
