//! Turns on hot streams (see the crate docs, "Turns on hot streams"): one transaction that holds
//! the stream's turn lock in exclusive mode while the writer reads, decides and appends.
//!
//! Every append statement first tries the same lock in shared mode and, when a turn holds it,
//! writes nothing and waits for the turn to end (`WAIT_FOR_TURN`) before it is sent again. So
//! nothing is appended to the stream between the turn's read and its append: its decision cannot
//! lose. No statement ever waits for a turn lock while it holds another lock or a row (the shared
//! tries never wait; the turn waits for its lock before it reads or writes anything), so turns add
//! no deadlock.

use std::sync::Arc;

use cqrs_core::store::command_id_of;
use cqrs_core::{
    AppendReceipt, EventData, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError,
    StreamId, StreamTurn, Version,
};
use tokio::sync::OwnedMutexGuard;

use crate::batch::{APPEND_ISOLATED, AppendParts, Arguments};
use crate::error::backend;
use crate::read::{self, visit_stream_on};
use crate::rows::AppendAnswer;
use crate::{Columns, ExpectedArgument, PostgresStore, TURN_GATES};
use cqrs_core::telemetry::store as store_telemetry;

/// Waits for the turn lock in exclusive mode, for the rest of the transaction, and marks the
/// transaction as the stream's turn (`cqrs.turn`, which `cqrs_turn_free` reads). A turn lock is
/// the advisory lock (1668444787 (`'cqrs'` in ASCII), `hashtext(stream)`): two streams whose
/// hashes collide share turns, which only makes one wait for the other's.
const TAKE_TURN: &str = "SELECT pg_advisory_xact_lock(1668444787, hashtext($1::text)), \
     set_config('cqrs.turn', $1::text, true)";

/// Waits until no turn holds the lock, then releases it at once (the statement is its own
/// transaction).
pub(crate) const WAIT_FOR_TURN: &str =
    "SELECT pg_advisory_xact_lock_shared(1668444787, hashtext($1::text))";

/// A turn on one stream of a [`PostgresStore`].
pub(crate) struct PostgresTurn {
    store: PostgresStore,
    stream: StreamId,
    /// The connection whose open transaction holds the turn lock; `None` once it is committed.
    client: Option<deadpool_postgres::Object>,
    /// This store's gate for the stream, so that it waits on the server for one turn at a time.
    _gate: OwnedMutexGuard<()>,
}

impl PostgresTurn {
    /// Waits for the stream's gate in this store, then for its turn lock on the server.
    pub(crate) async fn take(store: &PostgresStore, stream: &StreamId) -> Result<Self, StoreError> {
        let gate = Arc::clone(&store.inner.turn_gates[gate_of(stream)]);
        let gate = gate.lock_owned().await;
        let client = store.client().await?;
        // Until the lock is held and the turn is built, a cancelled wait (a deadline) must not
        // hand the connection back in the middle of a transaction: the guard closes it instead.
        let mut pending = Pending(Some(client));
        let client = pending.0.as_ref().ok_or_else(|| {
            StoreError::backend(crate::PostgresError::UnexpectedAnswer(
                "a turn without a connection".into(),
            ))
        })?;
        let statement = client.prepare_cached(TAKE_TURN).await.map_err(backend)?;
        // Sent together, one round trip: the driver pipelines queries issued at once.
        let name = stream.as_str();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
        let (begun, locked) = tokio::join!(
            client.batch_execute("BEGIN"),
            client.execute(&statement, &params)
        );
        begun.map_err(backend)?;
        locked.map_err(backend)?;
        Ok(PostgresTurn {
            store: store.clone(),
            stream: stream.clone(),
            client: pending.0.take(),
            _gate: gate,
        })
    }

    fn client(&self) -> Result<&deadpool_postgres::Object, StoreError> {
        self.client.as_ref().ok_or_else(|| {
            StoreError::backend(crate::PostgresError::UnexpectedAnswer(
                "the turn has ended".into(),
            ))
        })
    }
}

/// Which of the store's gates a stream waits at.
fn gate_of(stream: &StreamId) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    stream.hash(&mut hasher);
    // The modulo keeps the value below TURN_GATES, which fits any usize.
    (hasher.finish() % TURN_GATES as u64) as usize
}

/// A connection inside a transaction that is not handed to anyone yet: closed when dropped, so
/// that the server rolls the transaction back and releases its locks.
struct Pending(Option<deadpool_postgres::Object>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Drop for PostgresTurn {
    fn drop(&mut self) {
        // Ended without an append (the command was refused, or a deadline passed): roll back, so
        // that the lock is released, and only then hand the connection back to the pool.
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move {
                if client.batch_execute("ROLLBACK").await.is_err() {
                    drop(deadpool_postgres::Object::take(client));
                }
            })),
            Err(_) => drop(deadpool_postgres::Object::take(client)),
        }
    }
}

#[async_trait::async_trait]
impl StreamTurn for PostgresTurn {
    fn stream(&self) -> &StreamId {
        &self.stream
    }

    async fn visit_stream(
        &mut self,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        // A pending event is numbered inside the turn's transaction, which then holds the
        // sequencer lock until it ends: a turn never needs a second connection, so turns waiting
        // on the server can never take the connection the holder needs.
        let span =
            store_telemetry::stream_read_span(crate::SYSTEM, "visit_stream", &self.stream, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            let rows = &mut read::Envelopes::new(visit);
            visit_stream_on(self.client()?, &self.stream, from, limit, rows).await
        });
        store_telemetry::record_read(&span, &result, |visited| *visited);
        result
    }

    async fn visit_stream_data(
        &mut self,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        // Numbers a pending event inside the turn's transaction, as `visit_stream` does.
        let span = store_telemetry::stream_read_span(
            crate::SYSTEM,
            "visit_stream_data",
            &self.stream,
            limit,
        );
        let result = cqrs_core::telemetry::in_span!(&span, {
            let rows = &mut read::Data::new(visit);
            visit_stream_on(self.client()?, &self.stream, from, limit, rows).await
        });
        store_telemetry::record_read(&span, &result, |visited| *visited);
        result
    }

    async fn append(
        self: Box<Self>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError> {
        // Not batched: the append goes in the turn's own transaction, so the span has no
        // `cqrs.batch.appends` and the batch size histogram does not count it.
        let span =
            store_telemetry::append_span(crate::SYSTEM, &self.stream, expected, events.len());
        let result =
            cqrs_core::telemetry::in_span!(&span, { self.append_now(expected, events).await });
        store_telemetry::record_append(&span, &result);
        result
    }
}

impl PostgresTurn {
    /// [`StreamTurn::append`]'s work, inside its span.
    async fn append_now(
        mut self: Box<Self>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError> {
        let command_id = command_id_of(&events)?.cloned();
        let columns = Columns::new(&events)?;
        let client = self.client()?;
        let parts = [AppendParts {
            stream: &self.stream,
            expected: ExpectedArgument::from(expected),
            command_id: command_id.as_ref(),
            columns: &columns,
        }];
        let arguments = Arguments::new(&parts);
        let statement = client
            .prepare_cached(APPEND_ISOLATED)
            .await
            .map_err(backend)?;
        // The append and the COMMIT in one round trip. Should the append fail, the transaction
        // is aborted and the COMMIT rolls it back.
        let params = arguments.params();
        let (row, committed) = tokio::join!(
            client.query_one(&statement, &params),
            client.batch_execute("COMMIT")
        );
        let row = row.map_err(backend)?;
        committed.map_err(backend)?;
        let answer = AppendAnswer::read(&row, &self.stream)?;
        // Committed: the lock is released, and the connection is handed back as it is.
        let client = self.client.take();
        let store = self.store.clone();
        let stream = self.stream.clone();
        drop(self);
        if answer.outcome == 3 {
            // A unique violation: a writer that does not respect turns (a node still on an older
            // version during a rollout) got there first.
            drop(client);
            return match store
                .refusal_after_unique_violation(&stream, expected, command_id.as_ref())
                .await?
            {
                Some(refused) => Err(refused),
                None => store.append(&stream, expected, events).await,
            };
        }
        // Written unnumbered, it is settled on the turn's own connection.
        store
            .receipt(
                &stream,
                expected,
                command_id.as_ref(),
                answer,
                events.is_empty(),
                client.as_deref(),
            )
            .await
    }
}
