//! Projections whose read model lives in PostgreSQL tables: each batch's SQL and the
//! checkpoint commit in one transaction, run by cqrs-core's one
//! [processor runner](cqrs_core::processor), on one node at a time.
//!
//! A [`PostgresProjection`] is the PostgreSQL sibling of cqrs-core's
//! [`Projection`](cqrs_core::projection::Projection): the same name, aggregates, events and
//! routing, but its `apply` is `async` and gets the [`Transaction`] the batch is committed in,
//! so the read model's tables are changed by plain SQL. A [`PostgresProjector`] is such a
//! projection as a [`Processor`]; its [`runner`](Processor::runner) (a
//! [`PostgresProjectionRunner`]) follows the log from the checkpoint stored in
//! `cqrs_projections` and hands each batch to it, and the
//! [`ProcessorHandle`](cqrs_core::processor::ProcessorHandle) it spawns tells the status, waits
//! for a position (read your own writes), lists, retries and discards dead letters, rebuilds,
//! pauses and shuts down, as for every other processor.
//!
//! ```no_run
//! use cqrs_core::prelude::*;
//! use cqrs_core::processor::Processor as _;
//! use cqrs_core::projection::EventContext;
//! use cqrs_postgres::{PostgresProjection, PostgresProjector, PostgresStore, Transaction};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! pub enum ShowEvent {
//!     Scheduled { capacity: u32 },
//!     SeatsReserved { booking: u64, seats: u32 },
//!     ReservationCancelled { booking: u64, seats: u32 },
//! }
//!
//! /// Seats reserved per show, in the table `reserved_seats (show text PRIMARY KEY, seats bigint)`.
//! struct ReservedSeats;
//!
//! #[cqrs_postgres::async_trait]
//! impl PostgresProjection for ReservedSeats {
//!     const NAME: &'static str = "reserved_seats";
//!     // Every event of a `show-...` stream must decode as a `ShowEvent`; other streams are
//!     // passed over.
//!     const AGGREGATES: &'static [&'static str] = &["show"];
//!     type Event = ShowEvent;
//!     type Error = cqrs_postgres::tokio_postgres::Error;
//!
//!     async fn apply(
//!         &self,
//!         transaction: &Transaction<'_>,
//!         event: ShowEvent,
//!         context: &EventContext<'_>,
//!     ) -> Result<(), Self::Error> {
//!         let change: i64 = match event {
//!             ShowEvent::Scheduled { .. } => 0,
//!             ShowEvent::SeatsReserved { seats, .. } => seats.into(),
//!             ShowEvent::ReservationCancelled { seats, .. } => -i64::from(seats),
//!         };
//!         let upsert = transaction
//!             .prepare_cached(
//!                 "INSERT INTO reserved_seats (show, seats) VALUES ($1, $2) \
//!                  ON CONFLICT (show) DO UPDATE SET seats = reserved_seats.seats + $2",
//!             )
//!             .await?;
//!         transaction.execute(&upsert, &[&context.aggregate_id(), &change]).await?;
//!         Ok(())
//!     }
//!
//!     async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), Self::Error> {
//!         transaction.batch_execute("TRUNCATE reserved_seats").await
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::new("host=/var/run/postgresql user=app dbname=app")?;
//! store.migrate().await?;
//! store
//!     .pool()
//!     .get()
//!     .await?
//!     .batch_execute(
//!         "CREATE TABLE IF NOT EXISTS reserved_seats (show text PRIMARY KEY, seats bigint NOT NULL)",
//!     )
//!     .await?;
//! // Start it on every node: one of them leads, the others stand by.
//! let projection = PostgresProjector::new(ReservedSeats, store.clone())
//!     .runner()
//!     .batch_size(1_000)
//!     .spawn();
//! // ... execute commands, then read your own write:
//! # let position = cqrs_core::Position(1);
//! projection.wait_for(position, std::time::Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Exactly once
//!
//! A batch is one transaction: `SELECT position FROM cqrs_projections WHERE name = $1 FOR
//! UPDATE`, the projection's SQL, the batch's dead letters into `cqrs_dead_letters`,
//! `UPDATE cqrs_projections SET position = $reached`, `COMMIT`. A crash anywhere before the
//! commit (the process killed, the connection lost) rolls back the projection's SQL with the
//! checkpoint; after it, both are durable. The row lock and the comparison with the checkpoint
//! the runner expects mean that two runners can never both commit the same events, even in the
//! moment when a deposed leader has not noticed yet: the second gets
//! [`CommitError::CheckpointMoved`], and its runner re-reads the checkpoint and goes on from
//! there.
//!
//! [`apply_batch`](PostgresProjection::apply_batch) receives a batch's whole run of events at
//! once, for set-based SQL (one `INSERT ... SELECT unnest(...)` per batch instead of one
//! statement per event); by default it calls [`apply`](PostgresProjection::apply) for each.
//!
//! # Errors
//!
//! An event that does not decode (an unknown type in a stream of
//! [`AGGREGATES`](PostgresProjection::AGGREGATES) included), an error returned by `apply` or
//! `apply_batch`, and a panic in them are that event's failure, under the runner's
//! [`FailurePolicy`](cqrs_core::processor::FailurePolicy) (stop, park as a dead letter, retry
//! then one of those), shown in the same
//! [`ProcessorStatus`](cqrs_core::processor::ProcessorStatus) as every processor's. The failed
//! transaction is rolled back (an SQL error leaves a PostgreSQL transaction unusable anyway),
//! and the events before the failing one are committed in a new transaction with the checkpoint
//! right before it. When `apply_batch` fails, the projector replays the run one event at a time
//! to find the failing event, so `apply` and `apply_batch` must have the same effect. A parked
//! event's dead letter is written in the transaction that moves the checkpoint past it; a
//! retried one is removed in the transaction that applies its event.
//!
//! A failure of the database itself is not the event's: the connection lost, the pool
//! exhausted, and, met by `apply`, a deadlock or serialization failure (40P01, 40001), a
//! connection exception (class 08), a server shutting down or refusing connections (57P01 to
//! 57P03) or out of resources (class 53: a full disk, too many connections). Nothing is
//! committed, and the runner reconnects and sends the batch again.
//!
//! # One runner per projection across nodes
//!
//! Every node may start the runner; only the one holding the projection's *leader lock*
//! ([`ProcessorStore::lead`], see [`crate::processor`]) applies events: a session-level
//! advisory lock held on a connection of its own outside the pool. The other nodes stand by,
//! try to take it every [`leader_poll`](cqrs_core::processor::ProcessorRunner::leader_poll),
//! and meanwhile keep their status's checkpoint in step with the stored one, so that
//! [`wait_for`](cqrs_core::processor::ProcessorHandle::wait_for) works on any node. When the
//! leader dies, its connection closes and PostgreSQL releases the lock: the next node to try
//! takes over from the stored checkpoint. A leader whose lock connection closes (terminated,
//! network lost) stops applying and stands by again.

use std::error::Error as StdError;
use std::panic::AssertUnwindSafe;

use cqrs_core::processor::{
    Batch, CommitError, Committed, EventFailure, FailureKind, Panicked, Processor, ProcessorRunner,
    ProcessorStore, ResetError, describe,
};
use cqrs_core::projection::{EventContext, ProjectionEvent, route_from};
use cqrs_core::{Position, RecordedEvent, StoreError};
use futures_util::FutureExt as _;

use crate::processor::{
    expect_checkpoint, lock_checkpoint, move_checkpoint, record_dead_letters, remove_dead_letter,
    remove_dead_letters,
};
use crate::{PostgresStore, Transaction};

/// A read model kept in PostgreSQL tables, changed by SQL in the transaction its batch commits
/// in.
///
/// See the [module documentation](self) for an example and the guarantees.
#[async_trait::async_trait]
pub trait PostgresProjection: Send + Sync + 'static {
    /// The projection's stable name: its checkpoint row, dead letters and leader lock are keyed
    /// by it, in the namespace it shares with sagas.
    const NAME: &'static str;

    /// The aggregate types whose streams it reads (the part of the stream id before the first
    /// `-`, `"show"` for `show-42`); `&[]` reads every stream. As for cqrs-core's
    /// [`Projection::AGGREGATES`](cqrs_core::projection::Projection::AGGREGATES), events of
    /// other streams are passed over before they are decoded, and every event of a listed
    /// stream must route to [`Event`](PostgresProjection::Event): one that does not (an unknown
    /// event type) is a decode failure under the runner's failure policy.
    const AGGREGATES: &'static [&'static str];

    /// The events it reads: a [`DomainEvent`](cqrs_core::DomainEvent) enum or an enum of
    /// several (see [`ProjectionEvent`]).
    type Event: ProjectionEvent;

    /// Why applying can fail: often [`tokio_postgres::Error`].
    type Error: std::error::Error + Send + Sync + 'static;

    /// Changes the read model for one event, in `transaction` (the batch's, which the projector
    /// commits with the checkpoint). Must not commit or roll back, and must be deterministic: a
    /// rebuild replays the same events.
    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        event: Self::Event,
        context: &EventContext<'_>,
    ) -> Result<(), Self::Error>;

    /// Changes the read model for a run of consecutive events (those of one batch, in log
    /// order), in `transaction`. Override it for set-based SQL; it must have the same effect as
    /// calling [`apply`](PostgresProjection::apply) for each, which the projector does to find
    /// the failing event when it fails.
    async fn apply_batch(
        &self,
        transaction: &Transaction<'_>,
        events: Vec<(Self::Event, EventContext<'_>)>,
    ) -> Result<(), Self::Error> {
        for (event, context) in events {
            self.apply(transaction, event, &context).await?;
        }
        Ok(())
    }

    /// Empties the read model (e.g. `TRUNCATE`), in the transaction that also drops the
    /// projection's dead letters and moves its checkpoint back to the start: the first step of
    /// a rebuild.
    async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), Self::Error>;
}

/// A runner of a [`PostgresProjection`]: cqrs-core's [`ProcessorRunner`] over a
/// [`PostgresProjector`], from [`Processor::runner`].
pub type PostgresProjectionRunner<P> = ProcessorRunner<PostgresProjector<P>>;

/// A [`PostgresProjection`] as a [`Processor`]: reads the log of a [`PostgresStore`], applies
/// each batch in one transaction of that store's pool together with its dead letters and
/// checkpoint, and takes its checkpoint and leader lock from the same database (the
/// [`ProcessorStore`] of [`PostgresStore`]).
///
/// ```text
/// let handle = PostgresProjector::new(ReservedSeats, store.clone()).runner().spawn();
/// ```
#[derive(Debug)]
pub struct PostgresProjector<P> {
    projection: P,
    store: PostgresStore,
}

impl<P: PostgresProjection> PostgresProjector<P> {
    /// The processor of `projection`, reading `store`'s log and writing through `store`'s pool.
    pub fn new(projection: P, store: PostgresStore) -> Self {
        PostgresProjector { projection, store }
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// One attempt at committing `batch`: its first `events.len()` events (decoded as
    /// `events`), the dead letters before the checkpoint it reaches, the checkpoint right before
    /// `failed_at` (the end of the batch when `None`, and for a retry), in one transaction. On the failure of an
    /// event (or of the run, for `apply_batch`) it is rolled back and nothing is committed.
    async fn attempt(
        &self,
        batch: &Batch<'_>,
        events: Vec<P::Event>,
        failed_at: Option<usize>,
        one_by_one: bool,
    ) -> Result<Attempt, CommitError> {
        let reached = match failed_at {
            Some(index) if batch.retried.is_none() => batch.before(index),
            // A retried event lies at or before the checkpoint, which stays where it is whether
            // the event applies or not.
            _ => batch.end,
        };
        let letters = batch.dead_letters_until(reached);
        // A retried dead letter goes only with its event applied.
        let retried = batch.retried.filter(|_| failed_at.is_none());
        if events.is_empty() && letters.is_empty() && retried.is_none() && reached == batch.expected
        {
            return Ok(Attempt::Committed(reached));
        }
        let mut client = self.store.client().await?;
        let transaction = client.transaction().await.map_err(crate::error::backend)?;
        expect_checkpoint(&transaction, P::NAME, batch.expected).await?;
        if let Some(failed) = self.apply(&transaction, batch, events, one_by_one).await {
            // A failed rollback means the connection went: the database failed, not the event.
            transaction
                .rollback()
                .await
                .map_err(crate::error::backend)?;
            if let Attempt::EventFailed(_, failure) = &failed
                && let Some(why) = database_failure(&*failure.error)
            {
                return Err(CommitError::Store(StoreError::backend(format!(
                    "{} ({why})",
                    describe(&*failure.error)
                ))));
            }
            return Ok(failed);
        }
        record_dead_letters(&transaction, P::NAME, &letters).await?;
        if let Some(id) = retried {
            remove_dead_letter(&transaction, P::NAME, id).await?;
        }
        if reached != batch.expected {
            move_checkpoint(&transaction, P::NAME, reached).await?;
        }
        transaction.commit().await.map_err(crate::error::backend)?;
        Ok(Attempt::Committed(reached))
    }

    /// Applies `events` (the first `events.len()` of the batch) in `transaction`: with
    /// `apply_batch` when there are several and not `one_by_one`, with `apply` otherwise.
    /// `None` when all of them applied.
    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        batch: &Batch<'_>,
        events: Vec<P::Event>,
        one_by_one: bool,
    ) -> Option<Attempt> {
        let recorded = batch.events.iter().copied();
        if events.len() > 1 && !one_by_one {
            let run = events
                .into_iter()
                .zip(recorded)
                .map(|(event, recorded)| (event, EventContext::new(recorded)))
                .collect();
            let applied = AssertUnwindSafe(self.projection.apply_batch(transaction, run))
                .catch_unwind()
                .await;
            return match applied {
                Ok(Ok(())) => None,
                Ok(Err(_)) | Err(_) => Some(Attempt::RunFailed),
            };
        }
        for (index, (event, recorded)) in events.into_iter().zip(recorded).enumerate() {
            let context = EventContext::new(recorded);
            let applied = AssertUnwindSafe(self.projection.apply(transaction, event, &context))
                .catch_unwind()
                .await;
            let failure = match applied {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => EventFailure::new(FailureKind::Handler, error),
                Err(payload) => EventFailure::panicked(&*payload),
            };
            return Some(Attempt::EventFailed(index, failure));
        }
        None
    }
}

/// How one attempt at a batch ended.
enum Attempt {
    /// Committed, up to this checkpoint.
    Committed(Position),
    /// `apply_batch` failed: which event is not known yet.
    RunFailed,
    /// The event at this index failed.
    EventFailed(usize, EventFailure),
}

#[async_trait::async_trait]
impl<P: PostgresProjection> Processor for PostgresProjector<P> {
    type Events = PostgresStore;

    fn name(&self) -> &'static str {
        P::NAME
    }

    fn aggregates(&self) -> &'static [&'static str] {
        P::AGGREGATES
    }

    fn events(&self) -> &PostgresStore {
        &self.store
    }

    fn store(&self) -> &dyn ProcessorStore {
        &self.store
    }

    async fn commit(&self, batch: Batch<'_>) -> Result<Committed, CommitError> {
        let (mut events, mut failed) = decode::<P::Event>(P::AGGREGATES, &batch.events);
        let mut one_by_one = false;
        loop {
            let failed_at = failed.as_ref().map(|(index, _)| *index);
            match self.attempt(&batch, events, failed_at, one_by_one).await? {
                Attempt::Committed(reached) => return Ok(Committed { reached, failed }),
                // Replay the run one event at a time to find the failing one.
                Attempt::RunFailed => one_by_one = true,
                // Commit the events before it (in a new transaction: the failed one is rolled
                // back), the checkpoint right before it, and report it.
                Attempt::EventFailed(index, failure) => {
                    failed = Some((index, failure));
                    one_by_one = false;
                }
            }
            // Every attempt consumes its decoded events; only a failing batch decodes again.
            let until = failed
                .as_ref()
                .map_or(batch.events.len(), |(index, _)| *index);
            let (again, failed_again) =
                decode::<P::Event>(P::AGGREGATES, batch.events.get(..until).unwrap_or(&[]));
            events = again;
            if failed_again.is_some() {
                failed = failed_again;
            }
        }
    }

    async fn reset(&self) -> Result<(), ResetError> {
        let mut client = self.store.client().await?;
        let transaction = client.transaction().await.map_err(crate::error::backend)?;
        lock_checkpoint(&transaction, P::NAME).await?;
        let reset = AssertUnwindSafe(self.projection.reset(&transaction))
            .catch_unwind()
            .await;
        let failed: Option<Box<dyn StdError + Send + Sync>> = match reset {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(Box::new(error)),
            Err(payload) => Some(Box::new(Panicked::from_payload(&*payload))),
        };
        if let Some(source) = failed {
            return Err(StoreError::backend(ProjectionResetError {
                projection: P::NAME,
                source,
            })
            .into());
        }
        remove_dead_letters(&transaction, P::NAME).await?;
        move_checkpoint(&transaction, P::NAME, Position::START).await?;
        transaction.commit().await.map_err(crate::error::backend)?;
        Ok(())
    }
}

/// Why [`PostgresProjection::reset`] failed (returned an error or panicked): nothing was reset.
#[derive(Debug, thiserror::Error)]
#[error("resetting the read model of projection `{projection}` failed: {source}")]
pub struct ProjectionResetError {
    /// The projection.
    pub projection: &'static str,
    /// What `reset` returned, or the panic.
    #[source]
    pub source: Box<dyn StdError + Send + Sync>,
}

/// Decodes `events` for a reader of `aggregates` up to the first that fails (an unknown type,
/// a payload that does not decode, a panic in decoding): the events before it, and its index
/// and failure.
fn decode<E: ProjectionEvent>(
    aggregates: &[&str],
    events: &[&RecordedEvent],
) -> (Vec<E>, Option<(usize, EventFailure)>) {
    let mut decoded = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let routed =
            std::panic::catch_unwind(AssertUnwindSafe(|| route_from::<E>(aggregates, event)));
        let failure = match routed {
            Ok(Ok(event)) => {
                decoded.push(event);
                continue;
            }
            Ok(Err(error)) => EventFailure::new(FailureKind::Decode, error),
            Err(payload) => EventFailure::panicked(&*payload),
        };
        return (decoded, Some((index, failure)));
    }
    (decoded, None)
}

/// What says, in an `apply` error's sources, that the database failed rather than the event: a
/// connection that closed or broke (the server restarting, a network cut), a server shutting
/// down or refusing connections, out of resources, or a deadlock or serialization failure that
/// another attempt does not meet again. `None` for everything else, which is the event's failure
/// (a constraint the projection's SQL broke, say).
fn database_failure(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(driver) = error.downcast_ref::<tokio_postgres::Error>() {
            match driver.code() {
                Some(code) if transient_state(code) => {
                    return Some(format!("SQLSTATE {}", code.code()));
                }
                Some(_) => return None,
                // No server error: the connection itself failed.
                None => return Some("the connection failed".to_owned()),
            }
        }
        if let Some(server) = error.downcast_ref::<tokio_postgres::error::DbError>() {
            let code = server.code();
            return transient_state(code).then(|| format!("SQLSTATE {}", code.code()));
        }
        cause = error.source();
    }
    None
}

/// Whether a server error is about the server rather than the statement: a deadlock or
/// serialization failure, a connection exception (class 08), the server shutting down or not
/// taking connections (57P01 to 57P03), or resources it ran out of (class 53).
fn transient_state(code: &tokio_postgres::error::SqlState) -> bool {
    let code = code.code();
    crate::error::is_transient_code(&tokio_postgres::error::SqlState::from_code(code))
        || code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03")
}
