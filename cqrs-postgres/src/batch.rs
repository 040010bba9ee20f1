//! Appends that queue up behind each other go to the server together: one transaction, one round
//! trip and one WAL flush for the whole batch (see the crate docs, "The global order").
//!
//! Each store has one queue. An append puts its request in it; when no batch is running, it
//! spawns the task that runs them: the task takes every waiting request (up to [`MAX_APPENDS`],
//! at most one per stream, the others wait for the next batch in their order), sends them in one
//! call of `cqrs_append_batch`, hands each caller its answer and starts over until the queue is
//! empty. With one caller at a time a batch is one append; with several, an append waits for at
//! most the batch in flight.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use cqrs_core::{CommandId, StoreError, StreamId};
use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::rows::AppendAnswer;
use crate::{Columns, ExpectedArgument, PostgresStore};

/// The most appends in one batch: after a unique violation each one is a subtransaction, and a
/// transaction with more than 64 subtransactions makes every other session's snapshots slower.
pub(crate) const MAX_APPENDS: usize = 48;

/// A batch of one append calls `cqrs_append`, which does the same work in less time.
const APPEND: &str = "SELECT outcome, actual_version, first_version, last_version, first_position, \
     last_position FROM cqrs_append($1::text, $2::smallint, $3::bigint, $4::text, $5::uuid[], \
     $6::text[], $7::bigint[], $8::bytea[], $9::uuid[], $10::uuid[], $11::text[], \
     $12::timestamptz[], $13::text[])";

const APPEND_BATCH: &str = "SELECT outcome, actual_version, first_version, last_version, \
     first_position, last_position FROM cqrs_append_batch($1::text[], $2::smallint[], \
     $3::bigint[], $4::text[], $5::integer[], $6::uuid[], $7::text[], $8::bigint[], \
     $9::bytea[], $10::uuid[], $11::uuid[], $12::text[], $13::timestamptz[], $14::text[])";

/// What an append gets back: its answer, or `None` when it met a unique violation (another
/// transaction wrote the same version or command id first) and wrote nothing.
pub(crate) type Reply = Result<Option<AppendAnswer>, StoreError>;

/// One append waiting for its batch.
pub(crate) struct Request {
    pub(crate) stream: StreamId,
    pub(crate) expected: ExpectedArgument,
    pub(crate) command_id: Option<CommandId>,
    pub(crate) columns: Arc<Columns>,
    pub(crate) reply: oneshot::Sender<Reply>,
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

/// Queues `request` on `store` and waits for its answer.
pub(crate) async fn submit(
    store: &PostgresStore,
    request: Request,
    reply: oneshot::Receiver<Reply>,
) -> Reply {
    let start = {
        let mut state = store.inner.queue.state();
        state.waiting.push_back(request);
        !std::mem::replace(&mut state.running, true)
    };
    if start {
        // A task of its own: a caller that gives up waiting does not stop the others' batch.
        tokio::spawn(run(Running {
            store: store.clone(),
            finished: false,
        }));
    }
    reply.await.unwrap_or_else(|_| {
        Err(StoreError::backend(
            "the task running the append batch ended before it answered",
        ))
    })
}

/// The running task's claim on its queue. Dropped before the queue is empty (the runtime shut
/// down, a panic), it fails the waiting appends, which were never sent, and lets the next append
/// start a new task.
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
        run_batch(&running.store, batch).await;
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

async fn run_batch(store: &PostgresStore, mut batch: Vec<Request>) {
    // Every batch inserts in stream order: two batches that wait for each other's rows (two
    // nodes writing the same streams) then wait in the same order, never in a cycle.
    batch.sort_by(|a, b| a.stream.as_str().cmp(b.stream.as_str()));
    match send(store, &batch).await {
        Err(BatchError::Postgres(error)) if batch.len() > 1 && refused_data(&error) => {
            // The server refused one append's data (a NUL in a text, a key too long for its
            // index) and the whole batch rolled back: each append goes again on its own, so that
            // only the guilty one fails.
            for request in batch {
                let result = send(store, std::slice::from_ref(&request)).await;
                reply(vec![request], result);
            }
        }
        result => reply(batch, result),
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
fn reply(batch: Vec<Request>, result: Result<Option<Vec<tokio_postgres::Row>>, BatchError>) {
    match result {
        Ok(None) => {
            // The only append met a unique violation.
            for request in batch {
                let _ = request.reply.send(Ok(None));
            }
        }
        Ok(Some(rows)) => {
            for (request, row) in batch.into_iter().zip(rows) {
                let answer = AppendAnswer::read(&row, &request.stream).map(|answer| {
                    // Outcome 3: a unique violation, nothing written.
                    (answer.outcome != 3).then_some(answer)
                });
                let _ = request.reply.send(answer);
            }
        }
        Err(BatchError::Postgres(error)) if batch.len() == 1 => {
            // Alone, the append gets the driver's error itself.
            if let Some(request) = batch.into_iter().next() {
                let _ = request.reply.send(Err(StoreError::backend(error)));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for request in batch {
                let _ = request
                    .reply
                    .send(Err(StoreError::backend(Arc::clone(&error))));
            }
        }
    }
}

/// Runs one batch: one call of `cqrs_append_batch` (of `cqrs_append` for a single append), in an
/// explicit transaction only when the test hook asks for SQL before the COMMIT. One row per
/// request, in order; `None` when a single append met a unique violation.
async fn send(
    store: &PostgresStore,
    batch: &[Request],
) -> Result<Option<Vec<tokio_postgres::Row>>, BatchError> {
    let mut client = store.client().await.map_err(BatchError::Store)?;
    let before_commit: Vec<String> = match store.before_commit() {
        None => Vec::new(),
        Some(hook) => batch
            .iter()
            .filter_map(|request| hook(&request.stream))
            .collect(),
    };
    if let [request] = batch {
        let columns = &*request.columns;
        let command_id = request.command_id.as_ref().map(CommandId::as_str);
        let params: [&(dyn ToSql + Sync); 13] = [
            &request.stream.as_str(),
            &request.expected.kind,
            &request.expected.version,
            &command_id,
            &columns.event_ids,
            &columns.event_types,
            &columns.schema_versions,
            &columns.payloads,
            &columns.correlation_ids,
            &columns.causation_ids,
            &columns.command_ids,
            &columns.occurred_at,
            &columns.headers,
        ];
        let result = execute(&mut client, APPEND, &params, &before_commit).await;
        return match result {
            Ok(rows) => check(rows, batch.len()).map(Some),
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(None),
            Err(error) => {
                drop(deadpool_postgres::Object::take(client));
                Err(BatchError::Postgres(error))
            }
        };
    }
    let events: usize = batch
        .iter()
        .map(|request| request.columns.event_ids.len())
        .sum();
    let streams: Vec<&str> = batch
        .iter()
        .map(|request| request.stream.as_str())
        .collect();
    let kinds: Vec<i16> = batch.iter().map(|request| request.expected.kind).collect();
    let expected: Vec<i64> = batch
        .iter()
        .map(|request| request.expected.version)
        .collect();
    let command_ids: Vec<Option<&str>> = batch
        .iter()
        .map(|request| request.command_id.as_ref().map(CommandId::as_str))
        .collect();
    let counts: Vec<i32> = batch
        .iter()
        .map(|request| i32::try_from(request.columns.event_ids.len()).unwrap_or(i32::MAX))
        .collect();
    let mut flat = FlatColumns::with_capacity(events);
    for request in batch {
        flat.extend(&request.columns);
    }
    let params: [&(dyn ToSql + Sync); 14] = [
        &streams,
        &kinds,
        &expected,
        &command_ids,
        &counts,
        &flat.event_ids,
        &flat.event_types,
        &flat.schema_versions,
        &flat.payloads,
        &flat.correlation_ids,
        &flat.causation_ids,
        &flat.command_ids,
        &flat.occurred_at,
        &flat.headers,
    ];
    match execute(&mut client, APPEND_BATCH, &params, &before_commit).await {
        Ok(rows) => check(rows, batch.len()).map(Some),
        Err(error) => {
            // The connection may be broken (killed, server restarting) without the pool knowing
            // yet: it is not handed to the next caller.
            drop(deadpool_postgres::Object::take(client));
            Err(BatchError::Postgres(error))
        }
    }
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

/// One row per append, or the answer is not understood.
fn check(
    rows: Vec<tokio_postgres::Row>,
    appends: usize,
) -> Result<Vec<tokio_postgres::Row>, BatchError> {
    if rows.len() == appends {
        return Ok(rows);
    }
    Err(BatchError::Store(StoreError::backend(
        crate::PostgresError::UnexpectedAnswer(format!(
            "{} rows for {appends} appends",
            rows.len()
        )),
    )))
}

/// Why a batch failed: every append of it gets the same error.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error(transparent)]
    Postgres(tokio_postgres::Error),
    #[error(transparent)]
    Store(StoreError),
}

/// Every event of a batch, one array per column, borrowing from the requests.
struct FlatColumns<'a> {
    event_ids: Vec<uuid::Uuid>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i64>,
    payloads: Vec<&'a [u8]>,
    correlation_ids: Vec<Option<uuid::Uuid>>,
    causation_ids: Vec<Option<uuid::Uuid>>,
    command_ids: Vec<Option<&'a str>>,
    occurred_at: Vec<std::time::SystemTime>,
    headers: Vec<&'a str>,
}

impl<'a> FlatColumns<'a> {
    fn with_capacity(events: usize) -> Self {
        FlatColumns {
            event_ids: Vec::with_capacity(events),
            event_types: Vec::with_capacity(events),
            schema_versions: Vec::with_capacity(events),
            payloads: Vec::with_capacity(events),
            correlation_ids: Vec::with_capacity(events),
            causation_ids: Vec::with_capacity(events),
            command_ids: Vec::with_capacity(events),
            occurred_at: Vec::with_capacity(events),
            headers: Vec::with_capacity(events),
        }
    }

    fn extend(&mut self, columns: &'a Columns) {
        self.event_ids.extend_from_slice(&columns.event_ids);
        self.event_types
            .extend(columns.event_types.iter().map(String::as_str));
        self.schema_versions
            .extend_from_slice(&columns.schema_versions);
        self.payloads
            .extend(columns.payloads.iter().map(Vec::as_slice));
        self.correlation_ids
            .extend_from_slice(&columns.correlation_ids);
        self.causation_ids.extend_from_slice(&columns.causation_ids);
        self.command_ids
            .extend(columns.command_ids.iter().map(Option::as_deref));
        self.occurred_at.extend_from_slice(&columns.occurred_at);
        self.headers
            .extend(columns.headers.iter().map(String::as_str));
    }
}
