//! Projections whose read model lives in tables of the SQLite file: each batch's SQL, its dead
//! letters and the checkpoint commit in one transaction of the store's writer, run by
//! cqrs-core's one [processor runner](cqrs_core::processor).
//!
//! A [`SqliteProjection`] is the SQLite sibling of cqrs-postgres's `PostgresProjection`: the
//! same name, aggregates, events and routing, but its `apply` is a plain function that gets the
//! writer's [`Connection`], since SQLite calls block and run on the writer's thread anyway. A
//! [`SqliteProjector`] is such a projection as a [`Processor`]; its
//! [`runner`](Processor::runner) follows the log from the checkpoint stored in
//! `cqrs_processors`, and the handle it spawns tells the status, waits for a position, lists,
//! retries and discards dead letters, rebuilds, pauses and shuts down, as for every processor.
//! The read model's tables are the user's: list their migrations in
//! [`MIGRATIONS`](SqliteProjection::MIGRATIONS) and call [`SqliteProjector::migrate`] before the
//! runner starts (each applied once, checksummed, as the crate's own are).
//!
//! # Exactly once
//!
//! A batch is one piece of work on the writer (see [`SqliteStore::write`]), in the writer's
//! `BEGIN IMMEDIATE` transaction: the checkpoint is read and compared with the one the runner
//! expects, each event is applied in a savepoint of its own, the batch's dead letters written
//! and the checkpoint moved. A crash anywhere before the commit rolls the projection's SQL back
//! with the checkpoint; after it, both are durable. Another runner of the same projection (in
//! another process on the same file) cannot commit the same events: the checkpoint is compared
//! under the file's write lock, and the second gets [`CommitError::CheckpointMoved`].
//!
//! # Errors
//!
//! An event that does not decode, an error returned by `apply` and a panic in it are that
//! event's failure, under the runner's failure policy: what `apply` wrote for it is rolled back
//! to its savepoint, and the events before it are committed in the same transaction with the
//! checkpoint right before it (an SQL error leaves a SQLite transaction usable, unlike a
//! PostgreSQL one). An `apply` error that SQLite raised for the database rather than the
//! statement (`SQLITE_BUSY`, `SQLITE_LOCKED`, `SQLITE_IOERR`, `SQLITE_FULL`, `SQLITE_NOMEM`,
//! `SQLITE_READONLY`, `SQLITE_CORRUPT`, `SQLITE_CANTOPEN`) is no event's failure: nothing is
//! committed and the runner retries the batch.

use std::error::Error as StdError;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use cqrs_core::processor::{
    Batch, CommitError, Committed, DeadLetter, EventFailure, FailureKind, Panicked, Processor,
    ProcessorRunner, ProcessorStore, ResetError, describe,
};
use cqrs_core::projection::{EventContext, ProjectionEvent, route_from};
use cqrs_core::{Position, RecordedEvent, StoreError};
use rusqlite::Connection;
use tracing::Instrument as _;

use crate::SqliteStore;
use crate::error::backend;
use crate::migrate::Migration;
use crate::processor::{
    expect_checkpoint, move_checkpoint, record_dead_letters, remove_dead_letter,
    remove_dead_letters, span,
};

/// A read model kept in tables of the SQLite file, changed by SQL in the transaction its batch
/// commits in.
///
/// See the [module documentation](self) and the crate's "Processors" section for an example.
pub trait SqliteProjection: Send + Sync + 'static {
    /// The projection's stable name: its checkpoint and dead letters are keyed by it, in the
    /// namespace it shares with sagas.
    const NAME: &'static str;

    /// The aggregate types whose streams it reads (`&[]` reads every stream). Events of other
    /// streams are passed over before they are decoded; every event of a listed stream must
    /// route to [`Event`](SqliteProjection::Event), or it is a decode failure under the runner's
    /// failure policy.
    const AGGREGATES: &'static [&'static str];

    /// The migrations of its tables, applied by [`SqliteProjector::migrate`] (see
    /// [`SqliteStore::migrate_read_model`]), recorded under [`NAME`](SqliteProjection::NAME).
    /// None by default.
    const MIGRATIONS: &'static [Migration] = &[];

    /// The events it reads (see [`ProjectionEvent`]).
    type Event: ProjectionEvent;

    /// Why applying can fail: often [`rusqlite::Error`].
    type Error: StdError + Send + Sync + 'static;

    /// Changes the read model for one event on `connection`, inside the batch's transaction,
    /// which the projector commits with the checkpoint. Runs on the store's writer thread: it
    /// must not commit, roll back or release savepoints, must not wait for the store (an
    /// append from here would wait for itself), and must be deterministic: a rebuild replays
    /// the same events.
    fn apply(
        &self,
        connection: &Connection,
        event: Self::Event,
        context: &EventContext<'_>,
    ) -> Result<(), Self::Error>;

    /// Empties the read model (`DELETE FROM ...`), in the transaction that also drops the
    /// projection's dead letters and moves its checkpoint back to the start: the first step of
    /// a rebuild.
    fn reset(&self, connection: &Connection) -> Result<(), Self::Error>;
}

/// A runner of a [`SqliteProjection`]: cqrs-core's [`ProcessorRunner`] over a
/// [`SqliteProjector`], from [`Processor::runner`].
pub type SqliteProjectionRunner<P> = ProcessorRunner<SqliteProjector<P>>;

/// A [`SqliteProjection`] as a [`Processor`]: reads the log of a [`SqliteStore`] and applies
/// each batch on that store's writer, with its dead letters and checkpoint, in one transaction.
#[derive(Debug)]
pub struct SqliteProjector<P> {
    projection: Arc<P>,
    store: SqliteStore,
}

impl<P: SqliteProjection> SqliteProjector<P> {
    /// The processor of `projection`, reading and writing `store`'s file.
    pub fn new(projection: P, store: SqliteStore) -> Self {
        SqliteProjector {
            projection: Arc::new(projection),
            store,
        }
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// Applies the projection's [`MIGRATIONS`](SqliteProjection::MIGRATIONS) that the file
    /// lacks; returns the numbers of those it applied. Call it before the runner starts.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        self.store.migrate_read_model(P::NAME, P::MIGRATIONS).await
    }
}

/// Why [`SqliteProjection::reset`] failed (returned an error or panicked): nothing was reset.
#[derive(Debug, thiserror::Error)]
#[error("resetting the read model of projection `{projection}` failed: {source}")]
pub struct ProjectionResetError {
    /// The projection.
    pub projection: &'static str,
    /// What `reset` returned, or the panic.
    #[source]
    pub source: Box<dyn StdError + Send + Sync>,
}

/// A batch as the writer thread gets it: owned, since the work outlives the runner's borrow.
struct OwnedBatch {
    expected: Position,
    end: Position,
    events: Vec<RecordedEvent>,
    dead_letters: Vec<DeadLetter>,
    retried: Option<String>,
}

/// Commits `owned` of projection `P` on the writer's connection: the events up to the first
/// that fails, each in a savepoint, then the dead letters before the checkpoint reached, the
/// removal of a retried dead letter whose event applied, and the checkpoint.
fn commit_on<P: SqliteProjection>(
    projection: &P,
    connection: &Connection,
    owned: &OwnedBatch,
) -> Result<Committed, CommitError> {
    expect_checkpoint(connection, P::NAME, owned.expected)?;
    let batch = Batch {
        processor: P::NAME,
        expected: owned.expected,
        end: owned.end,
        events: owned.events.iter().collect(),
        dead_letters: owned.dead_letters.clone(),
        retried: owned.retried.as_deref(),
    };
    let mut failed = None;
    for (index, recorded) in owned.events.iter().enumerate() {
        if let Some(failure) = apply_one(projection, connection, recorded)? {
            failed = Some((index, failure));
            break;
        }
    }
    let reached = match &failed {
        Some((index, _)) if batch.retried.is_none() => batch.before(*index),
        // A retried event lies at or before the checkpoint, which stays where it is whether the
        // event applies or not.
        _ => batch.end,
    };
    record_dead_letters(connection, P::NAME, &batch.dead_letters_until(reached))?;
    if let Some(id) = batch.retried
        && failed.is_none()
    {
        remove_dead_letter(connection, P::NAME, id)?;
    }
    if reached != batch.expected {
        move_checkpoint(connection, P::NAME, reached)?;
    }
    Ok(Committed { reached, failed })
}

/// Decodes and applies one event in a savepoint of its own: `Some` failure (its writes rolled
/// back) when it does not decode, `apply` fails or panics; `Err` when the database failed.
fn apply_one<P: SqliteProjection>(
    projection: &P,
    connection: &Connection,
    recorded: &RecordedEvent,
) -> Result<Option<EventFailure>, StoreError> {
    const OPERATION: &str = "applying an event to a projection";
    let routed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        route_from::<P::Event>(P::AGGREGATES, recorded)
    }));
    let event = match routed {
        Ok(Ok(event)) => event,
        Ok(Err(error)) => return Ok(Some(EventFailure::new(FailureKind::Decode, error))),
        Err(payload) => return Ok(Some(EventFailure::panicked(&*payload))),
    };
    connection
        .execute_batch("SAVEPOINT cqrs_event")
        .map_err(backend(OPERATION))?;
    let context = EventContext::new(recorded);
    let applied = std::panic::catch_unwind(AssertUnwindSafe(|| {
        projection.apply(connection, event, &context)
    }));
    let failure = match applied {
        Ok(Ok(())) => {
            connection
                .execute_batch("RELEASE cqrs_event")
                .map_err(backend(OPERATION))?;
            return Ok(None);
        }
        Ok(Err(error)) => {
            if let Some(why) = database_failure(&error) {
                return Err(StoreError::backend(format!("{} ({why})", describe(&error))));
            }
            EventFailure::new(FailureKind::Handler, error)
        }
        Err(payload) => EventFailure::panicked(&*payload),
    };
    connection
        .execute_batch("ROLLBACK TO cqrs_event; RELEASE cqrs_event")
        .map_err(backend(OPERATION))?;
    Ok(Some(failure))
}

/// What says, in an `apply` error's sources, that the database failed rather than the event:
/// SQLite's result code for a lock held too long, an I/O failure, a full disk, no memory, a
/// read-only or corrupt file. `None` for everything else (a constraint the projection's SQL
/// broke, say), which is the event's failure.
fn database_failure(error: &(dyn StdError + 'static)) -> Option<String> {
    use rusqlite::ErrorCode::*;
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(rusqlite::Error::SqliteFailure(failure, _)) =
            error.downcast_ref::<rusqlite::Error>()
        {
            let transient = matches!(
                failure.code,
                DatabaseBusy
                    | DatabaseLocked
                    | SystemIoFailure
                    | DiskFull
                    | OutOfMemory
                    | ReadOnly
                    | DatabaseCorrupt
                    | CannotOpen
            );
            return transient.then(|| format!("SQLite extended code {}", failure.extended_code));
        }
        cause = error.source();
    }
    None
}

#[async_trait::async_trait]
impl<P: SqliteProjection> Processor for SqliteProjector<P> {
    type Events = SqliteStore;

    fn name(&self) -> &'static str {
        P::NAME
    }

    fn aggregates(&self) -> &'static [&'static str] {
        P::AGGREGATES
    }

    fn events(&self) -> &SqliteStore {
        &self.store
    }

    fn store(&self) -> &dyn ProcessorStore {
        &self.store
    }

    async fn commit(&self, batch: Batch<'_>) -> Result<Committed, CommitError> {
        if batch.events.is_empty()
            && batch.dead_letters.is_empty()
            && batch.retried.is_none()
            && batch.end == batch.expected
        {
            return Ok(Committed::all(batch.end));
        }
        let owned = OwnedBatch {
            expected: batch.expected,
            end: batch.end,
            events: batch.events.iter().map(|event| (*event).clone()).collect(),
            dead_letters: batch.dead_letters,
            retried: batch.retried.map(str::to_owned),
        };
        let projection = Arc::clone(&self.projection);
        self.store
            .write(move |connection| commit_on(&*projection, connection, &owned))
            .instrument(span("commit", P::NAME))
            .await?
    }

    async fn reset(&self) -> Result<(), ResetError> {
        let projection = Arc::clone(&self.projection);
        self.store
            .write(move |connection| {
                let reset =
                    std::panic::catch_unwind(AssertUnwindSafe(|| projection.reset(connection)));
                let failed: Option<Box<dyn StdError + Send + Sync>> = match reset {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(Box::new(error)),
                    Err(payload) => Some(Box::new(Panicked::from_payload(&*payload))),
                };
                if let Some(source) = failed {
                    return Err(StoreError::backend(ProjectionResetError {
                        projection: P::NAME,
                        source,
                    }));
                }
                remove_dead_letters(connection, P::NAME)?;
                move_checkpoint(connection, P::NAME, Position::START)
            })
            .instrument(span("reset", P::NAME))
            .await??;
        Ok(())
    }
}
