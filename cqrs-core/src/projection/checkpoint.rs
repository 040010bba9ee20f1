//! Where a projection keeps its read model, its checkpoint and its dead letters, and the one
//! rule about them: they change together.

use crate::event::Position;
use crate::processor::{CommitError, DeadLetter, ProcessorStore};
use crate::store::StoreError;

/// What one [`ProjectionStore::commit`] records besides the model's change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectionCommit {
    /// Where the stored checkpoint must be; otherwise nothing is applied and the error is
    /// [`CommitError::CheckpointMoved`].
    pub expected: Position,
    /// Events parked as dead letters; those at or before the checkpoint the commit reaches are
    /// recorded.
    pub dead_letters: Vec<DeadLetter>,
    /// The dead letter this commit retries: removed when the apply closure got through.
    pub retried: Option<String>,
}

/// What a commit's apply closure got through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The checkpoint to commit: the position of the last event whose change the model holds
    /// (or the batch's end, when every event applied).
    pub reached: Position,
    /// Whether every event applied.
    pub complete: bool,
}

/// The home of one projection's read model, checkpoint and dead letters, which it changes in
/// one atomic step: the [`ProcessorStore`] seam plus a commit that runs the projection's
/// synchronous `apply` on the model.
///
/// That step is [`commit`](ProjectionStore::commit): the runner's `apply` closure changes the
/// model for a run of events and says how far it got; the store keeps the change, the new
/// checkpoint and the dead letters together, or none of them. A crash at any point (the runner
/// dropped between two `.await`s, the process killed) therefore leaves a model that holds
/// exactly the events up to its checkpoint, and the next runner resumes right after it.
///
/// [`MemoryReadModel`](super::MemoryReadModel) does it under one lock. A database whose read
/// models are tables gives its projections the transaction instead (cqrs-postgres's
/// `PostgresProjection`).
#[async_trait::async_trait]
pub trait ProjectionStore: ProcessorStore {
    /// What the runner's `apply` changes: the read model itself, or a change set.
    type Model: Send + Sync + 'static;

    /// Runs `apply` on the model and moves the checkpoint of `projection` from
    /// `commit.expected` to the position it reached, recording `commit`'s dead letters up to
    /// there (and removing the retried one when `apply` got through), as one atomic step.
    async fn commit(
        &self,
        projection: &'static str,
        commit: ProjectionCommit,
        apply: &mut (dyn for<'m> FnMut(&'m mut Self::Model) -> Applied + Send),
    ) -> Result<Position, CommitError>;

    /// Empties the model, drops the dead letters and moves the checkpoint back to
    /// [`Position::START`], in one step: the start of a rebuild.
    async fn reset(&self, projection: &str) -> Result<(), StoreError>;
}
