//! Appends that queue up behind each other go to the server together: one transaction, one round
//! trip and one WAL flush for the whole batch (see the crate docs, "The global order").
//!
//! Each store has one queue. An append that finds no batch in flight sends itself (a batch of
//! one, from the caller's own task); one that finds a batch in flight waits in the queue. When
//! the batch in flight is answered, the queue goes to a task that takes every waiting request (up
//! to [`MAX_APPENDS`], at most one per stream, the others wait for the next batch in their
//! order), sends them as one statement, hands each caller its answer and starts over until the
//! queue is empty. With one caller at a time a batch is one append; with several, an append waits
//! for at most the batch in flight.
//!
//! The statements are plain SQL, in `append.sql` (any batch) and `append_one.sql` (a lone
//! one-event append at an exact version without a command id); both say why their numbering is
//! safe. Only after a unique violation does a batch go again through the PL/pgSQL function
//! `cqrs_append_batch_with_turns`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use cqrs_core::{CommandId, StoreError, StreamId};
use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::rows::AppendAnswer;
use crate::{Columns, ExpectedArgument, KIND_EXACT, KIND_NO_STREAM, PostgresStore};
use cqrs_core::telemetry::store as store_telemetry;

/// The most appends in one batch: after a unique violation each one is a subtransaction, and a
/// transaction with more than 64 subtransactions makes every other session's snapshots slower.
pub(crate) const MAX_APPENDS: usize = 48;

/// Every batch `APPEND_ONE` does not take, a lone append included: one statement, no PL/pgSQL
/// (see the file for why its numbering is safe).
pub(crate) const APPEND: &str = include_str!("append.sql");

/// A lone append of one event at an exact version without a command id (what a repository sends
/// for most commands): a plain insert, the cheapest statement (see the file).
pub(crate) const APPEND_ONE: &str = include_str!("append_one.sql");

/// The same batch after `APPEND` met a unique violation: a function that reads with a fresh
/// snapshot after the sequencer lock and writes each append in a subtransaction of its own, so
/// that only the append that met the violation fails.
pub(crate) const APPEND_ISOLATED: &str = "SELECT outcome, actual_version, first_version, last_version, \
     first_position, last_position FROM cqrs_append_batch_with_turns($1::text[], \
     $2::smallint[], $3::bigint[], $4::text[], $5::integer[], $6::uuid[], $7::text[], \
     $8::bigint[], $9::bytea[], $10::uuid[], $11::uuid[], $12::text[], $13::timestamptz[], \
     $14::text[], true)";

/// What an append gets back: its answer, or `None` when it met a unique violation (another
/// transaction wrote the same version or command id first) and wrote nothing.
pub(crate) type Reply = Result<Option<AppendAnswer>, StoreError>;

/// One append waiting for its batch.
pub(crate) struct Request {
    pub(crate) stream: StreamId,
    pub(crate) expected: ExpectedArgument,
    pub(crate) command_id: Option<CommandId>,
    pub(crate) columns: Arc<Columns>,
    /// The append's span, whichever task sends the batch: the batch records its size on it.
    pub(crate) span: tracing::Span,
    pub(crate) reply: oneshot::Sender<Reply>,
}

impl Request {
    fn parts(&self) -> AppendParts<'_> {
        AppendParts {
            stream: &self.stream,
            expected: self.expected,
            command_id: self.command_id.as_ref(),
            columns: &self.columns,
        }
    }
}

/// What the append statements take of one append.
#[derive(Clone, Copy)]
pub(crate) struct AppendParts<'a> {
    pub(crate) stream: &'a StreamId,
    pub(crate) expected: ExpectedArgument,
    pub(crate) command_id: Option<&'a CommandId>,
    pub(crate) columns: &'a Columns,
}

/// A store's queue of appends.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Request>,
    /// Whether a task is running batches (and will look at `waiting` again before it ends).
    running: bool,
}

impl Queue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sends `request` on `store`, in the next batch when one is in flight, and waits for its answer.
pub(crate) async fn submit(
    store: &PostgresStore,
    request: Request,
    reply: oneshot::Receiver<Reply>,
) -> Reply {
    let alone = {
        let mut state = store.inner.queue.state();
        if state.running {
            state.waiting.push_back(request);
            None
        } else {
            state.running = true;
            Some(request)
        }
    };
    if let Some(request) = alone {
        // Nothing in flight: the caller sends its append itself, which spares a lone append a
        // task switch. The appends that queue up meanwhile are handed to a task when it is done.
        let claim = Claim { store };
        run_batch(store, vec![request]).await;
        drop(claim);
    }
    reply.await.unwrap_or_else(|_| {
        Err(StoreError::backend(
            "the task running the append batch ended before it answered",
        ))
    })
}

/// The claim of a caller that sends its own append on the queue. Released, when the append is
/// answered or the caller gave up waiting, it hands the appends that queued up behind it to a
/// task of their own: a caller that gives up never stops the others' batch.
struct Claim<'a> {
    store: &'a PostgresStore,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut state = self.store.inner.queue.state();
        if state.waiting.is_empty() {
            state.running = false;
            return;
        }
        drop(state);
        let running = Running {
            store: self.store.clone(),
            finished: false,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(run(running))),
            // The runtime is gone: `running` fails the waiting appends, which were never sent.
            Err(_) => drop(running),
        }
    }
}

/// The running task's claim on its queue. Dropped before the queue is empty (the runtime shut
/// down, a panic), it fails the waiting appends, which were never sent, and lets the next append
/// start over.
struct Running {
    store: PostgresStore,
    finished: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            let waiting = {
                let mut state = self.store.inner.queue.state();
                state.running = false;
                std::mem::take(&mut state.waiting)
            };
            drop(waiting);
        }
    }
}

async fn run(mut running: Running) {
    loop {
        let batch = {
            let mut state = running.store.inner.queue.state();
            let batch = take_batch(&mut state.waiting);
            if batch.is_empty() {
                state.running = false;
                running.finished = true;
                return;
            }
            batch
        };
        let appends = batch.len();
        run_batch(&running.store, batch).await;
        if appends > 1 {
            // The callers just answered tend to append again at once: letting them queue up
            // first makes the next batch take them along instead of going out half empty.
            tokio::task::yield_now().await;
        }
    }
}

/// Takes the waiting requests for one batch: in queue order, one per stream.
fn take_batch(waiting: &mut VecDeque<Request>) -> Vec<Request> {
    let mut batch: Vec<Request> = Vec::new();
    let mut later = VecDeque::new();
    while let Some(request) = waiting.pop_front() {
        if batch.len() >= MAX_APPENDS {
            later.push_back(request);
            later.extend(waiting.drain(..));
            break;
        }
        if batch.iter().any(|taken| taken.stream == request.stream) {
            later.push_back(request);
        } else {
            batch.push(request);
        }
    }
    *waiting = later;
    batch
}

/// How many times a batch is sent again after the server rolled it back as a deadlock victim or
/// for a serialization failure, before its appends get the error.
const TRANSIENT_RETRIES: u32 = 8;

/// The jittered pause before each of those: under 1 ms doubling to at most 50 ms.
const TRANSIENT_BACKOFF: cqrs_core::RetryPolicy = cqrs_core::RetryPolicy {
    base_delay: std::time::Duration::from_millis(1),
    max_delay: std::time::Duration::from_millis(50),
    ..cqrs_core::RetryPolicy::NEVER
};

async fn run_batch(store: &PostgresStore, mut batch: Vec<Request>) {
    // Every batch inserts in stream order: two batches that wait for each other's rows (two
    // nodes writing the same streams) then wait in the same order, never in a cycle.
    batch.sort_by(|a, b| a.stream.as_str().cmp(b.stream.as_str()));
    let mut result = send(store, &batch).await;
    let mut retries = 0;
    // The statements are written so that appends never wait for each other in a cycle (see
    // `0004_turns.sql`), but a deadlock or serialization failure rolls the whole statement back
    // and writes nothing, so it is never an answer for the caller: the batch goes again.
    while retries < TRANSIENT_RETRIES
        && matches!(&result, Err(BatchError::Postgres(error)) if crate::error::is_transient(error))
    {
        retries += 1;
        if let Err(BatchError::Postgres(error)) = &result {
            for request in &batch {
                tracing::debug!(
                    parent: &request.span,
                    cqrs.retry = retries,
                    cqrs.batch.appends = batch.len(),
                    db.response.status_code = error.code().map(SqlState::code),
                    "the server rolled the append batch back (deadlock or serialization \
                     failure): sending it again"
                );
            }
        }
        tokio::time::sleep(TRANSIENT_BACKOFF.delay_after(retries)).await;
        result = send(store, &batch).await;
    }
    match result {
        Err(BatchError::Postgres(error)) if batch.len() > 1 && refused_data(&error) => {
            // The server refused one append's data (a NUL in a text, a key too long for its
            // index) and the whole batch rolled back: each append goes again on its own, so that
            // only the guilty one fails.
            for request in &batch {
                tracing::debug!(
                    parent: &request.span,
                    cqrs.batch.appends = batch.len(),
                    db.response.status_code = error.code().map(SqlState::code),
                    "the server refused the data of an append in the batch: sending each append \
                     again on its own"
                );
            }
            for request in batch {
                let result = send(store, std::slice::from_ref(&request)).await;
                store_telemetry::record_batch(crate::STORE_LABEL, std::iter::once(&request.span));
                reply(vec![request], result);
            }
        }
        result => {
            store_telemetry::record_batch(
                crate::STORE_LABEL,
                batch.iter().map(|request| &request.span),
            );
            reply(batch, result)
        }
    }
}

/// Whether the server refused a statement for the data it was given (SQLSTATE classes 22, data
/// exception, and 54, program limit exceeded): the transaction rolled back before its COMMIT,
/// nothing was written, and running its appends again one by one is safe.
fn refused_data(error: &tokio_postgres::Error) -> bool {
    error
        .code()
        .is_some_and(|code| code.code().starts_with("22") || code.code().starts_with("54"))
}

/// Hands every request of `batch` its answer from `result`.
fn reply(batch: Vec<Request>, result: Result<Vec<Reply>, BatchError>) {
    match result {
        Ok(answers) => {
            for (request, answer) in batch.into_iter().zip(answers) {
                let _ = request.reply.send(answer);
            }
        }
        Err(error) if batch.len() == 1 => {
            // Alone, the append gets the error itself.
            if let Some(request) = batch.into_iter().next() {
                let _ = request.reply.send(Err(match error {
                    BatchError::Postgres(error) => crate::error::backend(error),
                    BatchError::Store(error) => error,
                }));
            }
        }
        Err(BatchError::Store(StoreError::Timeout { what, waited })) => {
            for request in batch {
                let what = what.clone();
                let _ = request
                    .reply
                    .send(Err(StoreError::Timeout { what, waited }));
            }
        }
        Err(error) => {
            let error: Arc<dyn std::error::Error + Send + Sync> = match error {
                BatchError::Postgres(error) => Arc::new(crate::DatabaseError::from(error)),
                BatchError::Store(error) => Arc::new(error),
            };
            for request in batch {
                let _ = request
                    .reply
                    .send(Err(StoreError::backend(Arc::clone(&error))));
            }
        }
    }
}

/// Runs one batch: one statement (`APPEND_ONE` for the common lone append, `APPEND` otherwise),
/// then, only after a unique violation or a version that did not match, the batch again through
/// `cqrs_append_batch_with_turns`; in an explicit transaction only when the test hook asks for SQL before
/// the COMMIT. One answer per request, in order.
async fn send(store: &PostgresStore, batch: &[Request]) -> Result<Vec<Reply>, BatchError> {
    let mut client = store.client().await.map_err(BatchError::Store)?;
    let before_commit: Vec<String> = match store.before_commit() {
        None => Vec::new(),
        Some(hook) => batch
            .iter()
            .filter_map(|request| hook(&request.stream))
            .collect(),
    };
    let first = match batch {
        [request] if lone(request) => {
            let (columns, stream) = (&*request.columns, request.stream.as_str());
            let params: [&(dyn ToSql + Sync); 11] = [
                &stream,
                &request.expected.version,
                &columns.event_ids[0],
                &columns.event_types[0],
                &columns.schema_versions[0],
                &columns.payloads[0],
                &columns.correlation_ids[0],
                &columns.causation_ids[0],
                &columns.command_ids[0],
                &columns.occurred_at[0],
                &columns.headers[0],
            ];
            execute(&mut client, APPEND_ONE, &params, &before_commit)
                .await
                .map(|rows| lone_answer(&rows, request))
        }
        _ => {
            let parts: Vec<_> = batch.iter().map(Request::parts).collect();
            let arguments = Arguments::new(&parts);
            execute(&mut client, APPEND, &arguments.params(), &before_commit)
                .await
                .map(|rows| Some(answers(rows, batch)))
        }
    };
    let result = match first {
        Ok(Some(answers)) => Ok(answers),
        // Another writer took one of these versions or command ids, or another holder of the
        // sequencer lock numbered events after the statement's snapshot, or (`APPEND_ONE`) the
        // expected version is not the stream's: nothing was written.
        Ok(None) => isolated(&mut client, batch, &before_commit).await,
        Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            isolated(&mut client, batch, &before_commit).await
        }
        Err(error) => Err(error),
    };
    match result {
        Ok(answers) => answers,
        Err(error) => {
            // The connection may be broken (killed, server restarting) without the pool knowing
            // yet: it is not handed to the next caller. A statement the server refused for its
            // data, or rolled back as a deadlock victim, leaves it sound.
            if !(crate::error::is_transient(&error) || refused_data(&error)) {
                drop(deadpool_postgres::Object::take(client));
            }
            Err(BatchError::Postgres(error))
        }
    }
}

/// Sends `batch` through `cqrs_append_batch_with_turns`.
async fn isolated(
    client: &mut deadpool_postgres::Object,
    batch: &[Request],
    before_commit: &[String],
) -> Result<Result<Vec<Reply>, BatchError>, tokio_postgres::Error> {
    let parts: Vec<_> = batch.iter().map(Request::parts).collect();
    let arguments = Arguments::new(&parts);
    let rows = execute(client, APPEND_ISOLATED, &arguments.params(), before_commit).await?;
    Ok(answers(rows, batch))
}

/// Whether `request` can go as `APPEND_ONE`: it writes one event, at an exact expected version
/// (or none: `NoStream`), without a command id to record.
fn lone(request: &Request) -> bool {
    matches!(request.expected.kind, KIND_NO_STREAM | KIND_EXACT)
        && request.command_id.is_none()
        && request.columns.event_ids.len() == 1
}

/// The answer to a lone append from the row `APPEND_ONE` returned, or `None` when it wrote
/// nothing: the expected version is not the stream's.
fn lone_answer(
    rows: &[tokio_postgres::Row],
    request: &Request,
) -> Option<Result<Vec<Reply>, BatchError>> {
    let row = rows.first()?;
    let stream = &request.stream;
    let answer = (|| {
        let version: i64 = row.try_get(0).map_err(crate::error::backend)?;
        let position: Option<i64> = row.try_get(1).map_err(crate::error::backend)?;
        let version = crate::rows::version(version, stream)?;
        let position = match position {
            Some(position) => Some(crate::rows::position(position, stream)?),
            None => None,
        };
        Ok(Some(AppendAnswer {
            outcome: 0,
            actual_version: cqrs_core::Version(version.0.saturating_sub(1)),
            first_version: version,
            last_version: version,
            positions: position.map(|position| (position, position)),
        }))
    })();
    Some(Ok(vec![answer]))
}

/// One answer per request from the rows of `APPEND` or `APPEND_ISOLATED`.
fn answers(rows: Vec<tokio_postgres::Row>, batch: &[Request]) -> Result<Vec<Reply>, BatchError> {
    if rows.len() != batch.len() {
        return Err(BatchError::Store(unexpected(format!(
            "{} rows for {} appends",
            rows.len(),
            batch.len()
        ))));
    }
    Ok(batch
        .iter()
        .zip(rows)
        .map(|(request, row)| {
            AppendAnswer::read(&row, &request.stream).map(|answer| {
                // Outcome 3 (from cqrs_append_batch_with_turns): a unique violation, nothing written.
                (answer.outcome != 3).then_some(answer)
            })
        })
        .collect())
}

fn unexpected(what: String) -> StoreError {
    StoreError::backend(crate::PostgresError::UnexpectedAnswer(what))
}

/// Runs `sql` with `params`, in an explicit transaction that runs `before_commit` before its
/// COMMIT when there is any.
async fn execute(
    client: &mut deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    before_commit: &[String],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    if before_commit.is_empty() {
        let statement = client.prepare_cached(sql).await?;
        return client.query(&statement, params).await;
    }
    let transaction = client.transaction().await?;
    let statement = transaction.prepare_cached(sql).await?;
    let rows = transaction.query(&statement, params).await?;
    for sql in before_commit {
        transaction.batch_execute(sql).await?;
    }
    transaction.commit().await?;
    Ok(rows)
}

/// Why a batch failed: every append of it gets the same error.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error(transparent)]
    Postgres(tokio_postgres::Error),
    #[error(transparent)]
    Store(StoreError),
}

/// The parameters of `APPEND` and `APPEND_ISOLATED` for a batch: one array per append column and
/// one per event column (every append's events one after the other), borrowing from the requests.
pub(crate) struct Arguments<'a> {
    streams: Vec<&'a str>,
    kinds: Vec<i16>,
    expected: Vec<i64>,
    command_ids: Vec<Option<&'a str>>,
    counts: Vec<i32>,
    event_ids: Vec<uuid::Uuid>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i64>,
    payloads: Vec<&'a [u8]>,
    correlation_ids: Vec<Option<uuid::Uuid>>,
    causation_ids: Vec<Option<uuid::Uuid>>,
    event_command_ids: Vec<Option<&'a str>>,
    occurred_at: Vec<std::time::SystemTime>,
    headers: Vec<&'a str>,
}

impl<'a> Arguments<'a> {
    pub(crate) fn new(batch: &[AppendParts<'a>]) -> Self {
        let events: usize = batch
            .iter()
            .map(|request| request.columns.event_ids.len())
            .sum();
        let mut arguments = Arguments {
            streams: Vec::with_capacity(batch.len()),
            kinds: Vec::with_capacity(batch.len()),
            expected: Vec::with_capacity(batch.len()),
            command_ids: Vec::with_capacity(batch.len()),
            counts: Vec::with_capacity(batch.len()),
            event_ids: Vec::with_capacity(events),
            event_types: Vec::with_capacity(events),
            schema_versions: Vec::with_capacity(events),
            payloads: Vec::with_capacity(events),
            correlation_ids: Vec::with_capacity(events),
            causation_ids: Vec::with_capacity(events),
            event_command_ids: Vec::with_capacity(events),
            occurred_at: Vec::with_capacity(events),
            headers: Vec::with_capacity(events),
        };
        for request in batch {
            let columns = request.columns;
            arguments.streams.push(request.stream.as_str());
            arguments.kinds.push(request.expected.kind);
            arguments.expected.push(request.expected.version);
            arguments
                .command_ids
                .push(request.command_id.map(CommandId::as_str));
            arguments
                .counts
                .push(i32::try_from(columns.event_ids.len()).unwrap_or(i32::MAX));
            arguments.event_ids.extend_from_slice(&columns.event_ids);
            arguments
                .event_types
                .extend(columns.event_types.iter().map(String::as_str));
            arguments
                .schema_versions
                .extend_from_slice(&columns.schema_versions);
            arguments
                .payloads
                .extend(columns.payloads.iter().map(Vec::as_slice));
            arguments
                .correlation_ids
                .extend_from_slice(&columns.correlation_ids);
            arguments
                .causation_ids
                .extend_from_slice(&columns.causation_ids);
            arguments
                .event_command_ids
                .extend(columns.command_ids.iter().map(Option::as_deref));
            arguments
                .occurred_at
                .extend_from_slice(&columns.occurred_at);
            arguments
                .headers
                .extend(columns.headers.iter().map(String::as_str));
        }
        arguments
    }

    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.streams,
            &self.kinds,
            &self.expected,
            &self.command_ids,
            &self.counts,
            &self.event_ids,
            &self.event_types,
            &self.schema_versions,
            &self.payloads,
            &self.correlation_ids,
            &self.causation_ids,
            &self.event_command_ids,
            &self.occurred_at,
            &self.headers,
        ]
    }
}
