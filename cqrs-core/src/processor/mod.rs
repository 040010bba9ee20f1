//! The one runtime for everything that follows the global log: projections and sagas are
//! *processors*, run by one [`ProcessorRunner`] and watched through one [`ProcessorHandle`].
//!
//! A processor reads the global log from its checkpoint, keeps the events of the aggregate types
//! it reads (the others are passed over before anything of them is decoded), handles a batch
//! and commits the batch's effects with the new checkpoint in one atomic step. What differs
//! between a projection and a saga, and between backends, sits behind the [`Processor`] trait:
//!
//! - [`Projector`](crate::projection::Projector) runs a
//!   [`Projection`](crate::projection::Projection) over a
//!   [`ProjectionStore`](crate::projection::ProjectionStore) (the in-memory
//!   [`MemoryReadModel`](crate::projection::MemoryReadModel), say);
//! - [`SagaProcessor`](crate::saga::SagaProcessor) runs a [`Saga`](crate::saga::Saga) over a
//!   [`SagaStore`](crate::saga::SagaStore), sending its commands through a
//!   [`CommandBus`](crate::saga::CommandBus) and firing its deadlines;
//! - cqrs-postgres's `PostgresProjector` runs a projection whose read model is SQL tables,
//!   changed in the transaction that moves the checkpoint.
//!
//! What the runner does is the same for all of them:
//!
//! - **Supervision.** A failure of the store (connection refused, server restart,
//!   serialization failure, pool timeout) never stops a processor: it shows
//!   [`ProcessorState::Reconnecting`], retries without limit with capped, jittered backoff
//!   ([`Reconnect`]), and resumes from the stored checkpoint when the store is back.
//! - **One failure policy** for an event's own failure (it does not decode, the handler fails or
//!   panics, a command it sent is refused for a non-domain reason): [`FailurePolicy`] stops,
//!   parks the event as a [`DeadLetter`] in the same commit that moves the checkpoint past it,
//!   or retries and then does one of those. Dead letters can be listed, retried (handled once,
//!   then removed) and discarded through the handle.
//! - **One handle and one status**: [`ProcessorHandle::status`] ([`ProcessorStatus`]: state,
//!   checkpoint, head, lag in events and seconds, last error, dead letters, leadership),
//!   [`wait_for`](ProcessorHandle::wait_for) a position (read your own writes),
//!   [`pause`](ProcessorHandle::pause) / [`resume`](ProcessorHandle::resume),
//!   [`rebuild`](ProcessorHandle::rebuild) where the processor supports it, graceful
//!   [`shutdown`](ProcessorHandle::shutdown) and [`abort`](ProcessorHandle::abort).
//! - **One runner per processor across nodes**: a store that serves several nodes grants a
//!   [`Lease`] to one of them ([`ProcessorStore::lead`]); the others stand by.
//! - **Health** for a readiness probe: [`HealthCheck`] over every processor a service started.
//!
//! See the guide's projection and saga chapters for complete examples.

mod failure;
mod handle;
mod health;
mod instruments;
mod policy;
mod runner;
mod status;
mod store;

use std::time::Duration;

pub use self::failure::{
    DeadLetter, EventFailure, EventRef, Failure, FailureKind, Panicked, describe,
};
pub use self::handle::{ControlError, ProcessorHandle};
pub use self::health::{Health, HealthCheck, ProcessorHealth};
pub(crate) use self::instruments::parked;
pub(crate) use self::policy::Verdict;
pub use self::policy::{AfterRetries, FailurePolicy, Reconnect};
pub use self::runner::{CatchUp, CatchUpError, ProcessorRunner};
pub use self::status::{ProcessorState, ProcessorStatus, WaitError};
pub use self::store::{HeldLock, Lease, ProcessorStore};

use crate::event::{Position, RecordedEvent};
use crate::store::{EventStore, StoreError};

/// Something that follows the global log and commits what it does with each batch together
/// with its checkpoint: a projection or a saga on some backend. The [`ProcessorRunner`] drives
/// it; see the [module documentation](self).
#[async_trait::async_trait]
pub trait Processor: Send + Sync + 'static {
    /// The event store whose log it follows.
    type Events: EventStore;

    /// Its stable name: its checkpoint, dead letters and leader lock are keyed by it.
    fn name(&self) -> &'static str;

    /// The aggregate types whose streams it reads (every stream when empty). Events of other
    /// streams are passed over before they are decoded; every event of these streams must be
    /// one the processor knows, or it is a [`FailureKind::Decode`] failure under the policy.
    fn aggregates(&self) -> &'static [&'static str];

    /// The event store it follows.
    fn events(&self) -> &Self::Events;

    /// Where its checkpoint and dead letters are kept.
    fn store(&self) -> &dyn ProcessorStore;

    /// Handles `batch.events` in order and commits their effects, `batch.dead_letters` and the
    /// checkpoint `batch.end`, as one atomic step, provided the stored checkpoint is
    /// `batch.expected` (otherwise nothing is done and the error is
    /// [`CommitError::CheckpointMoved`]).
    ///
    /// When an event fails, the processor commits what comes before it instead: the events
    /// before it, the dead letters before it and the checkpoint right before it
    /// ([`Batch::before`]), and reports the failure with the index of the event in
    /// [`Committed::failed`]. On an error, nothing was committed.
    ///
    /// When `batch.retried` names a dead letter, the batch is that one event, the checkpoint
    /// does not move (`end == expected`), and the dead letter is removed in the same step when
    /// the event is handled.
    async fn commit(&self, batch: Batch<'_>) -> Result<Committed, CommitError>;

    /// Empties what the processor built, removes its dead letters and moves its checkpoint back
    /// to [`Position::START`], in one step: the start of a rebuild. By default a processor
    /// cannot be rebuilt (a saga's commands cannot be taken back).
    async fn reset(&self) -> Result<(), ResetError> {
        Err(ResetError::Unsupported {
            processor: self.name(),
        })
    }

    /// Does the time-driven work that is due (a saga's deadlines) and says how long to wait at
    /// most before calling again, `None` when there is no such work. Called whenever the
    /// processor has caught up and after every batch.
    async fn tick(&self, policy: &FailurePolicy) -> Result<Option<Duration>, TickError> {
        let _ = policy;
        Ok(None)
    }

    /// A runner of this processor, to configure and [spawn](ProcessorRunner::spawn).
    fn runner(self) -> ProcessorRunner<Self>
    where
        Self: Sized,
    {
        ProcessorRunner::new(self)
    }
}

/// One atomic step of a processor: events to handle, dead letters to record, the checkpoint to
/// move. See [`Processor::commit`].
#[derive(Debug)]
pub struct Batch<'a> {
    /// The processor's name.
    pub processor: &'static str,
    /// Where the stored checkpoint must be.
    pub expected: Position,
    /// Where the checkpoint goes when every event is handled.
    pub end: Position,
    /// The events to handle, in log order: those of the streams the processor reads, minus the
    /// ones parked as dead letters.
    pub events: Vec<&'a RecordedEvent>,
    /// Events parked since `expected`, to record in this step.
    pub dead_letters: Vec<DeadLetter>,
    /// The id of the dead letter this step retries, if it is a retry.
    pub retried: Option<&'a str>,
}

impl Batch<'_> {
    /// The checkpoint right before the event at `index`: what a processor commits when that
    /// event fails.
    pub fn before(&self, index: usize) -> Position {
        match self.events.get(index) {
            Some(event) => Position(event.position.0.saturating_sub(1)).max(self.expected),
            None => self.end,
        }
    }

    /// The dead letters that belong before `checkpoint` (all of them for the batch's end).
    pub fn dead_letters_until(&self, checkpoint: Position) -> Vec<DeadLetter> {
        self.dead_letters
            .iter()
            .filter(|letter| {
                letter
                    .position()
                    .is_none_or(|position| position <= checkpoint)
            })
            .cloned()
            .collect()
    }
}

/// What a [`Processor::commit`] committed.
#[derive(Debug)]
pub struct Committed {
    /// The checkpoint it committed.
    pub reached: Position,
    /// The event it stopped at (its index in [`Batch::events`]) and why, when one failed.
    pub failed: Option<(usize, EventFailure)>,
}

impl Committed {
    /// Everything of a batch ending at `end` was committed.
    pub fn all(end: Position) -> Self {
        Committed {
            reached: end,
            failed: None,
        }
    }
}

/// Why a [`Processor::commit`] committed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The stored checkpoint was not where the runner expected it: another runner of the same
    /// processor moved it, or a rebuild reset it.
    #[error("the checkpoint of `{processor}` is at {actual}, expected {expected}")]
    CheckpointMoved {
        /// The processor.
        processor: &'static str,
        /// Where the runner expected it.
        expected: Position,
        /// Where it is.
        actual: Position,
    },
    /// The store failed (or a command the processor sent failed on its store): nothing was
    /// committed, and the runner reconnects and tries again.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`Processor::reset`] did nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResetError {
    /// The processor cannot be rebuilt.
    #[error("processor `{processor}` cannot be rebuilt")]
    Unsupported {
        /// The processor.
        processor: &'static str,
    },
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`Processor::tick`] did not get through its work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TickError {
    /// The store failed; the runner reconnects and ticks again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A timed task failed and the failure policy says stop.
    #[error("{0}")]
    Stopped(Box<Failure>),
}
