//! Where a projection keeps its read model and its checkpoint, and the one rule about them:
//! they change together.

use crate::event::Position;

/// Why a [`ProjectionStore`] refused or failed an operation. Nothing was changed in either case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionStoreError {
    /// The checkpoint was not where the runner expected it: another runner of the same
    /// projection moved it, or the model was reset underneath. Nothing was applied.
    #[error("the projection's checkpoint is at {actual}, expected {expected}")]
    CheckpointMoved {
        /// Where the runner expected it.
        expected: Position,
        /// Where it is.
        actual: Position,
    },
    /// The storage backend failed; the operation may be retried.
    #[error("projection store backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ProjectionStoreError {
    /// Wraps a backend error.
    pub fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ProjectionStoreError::Backend(error.into())
    }
}

/// The home of one projection's read model and checkpoint (the position of the last event whose
/// effect the model holds), which it changes in one atomic step.
///
/// That step is [`commit`](ProjectionStore::commit): the runner's `apply` closure changes the
/// model for a run of events and returns the position it reached; the store keeps the change
/// and the new checkpoint together, or neither. A crash at any point (the runner dropped between
/// two `.await`s, the process killed) therefore leaves a model that holds exactly the events up
/// to its checkpoint, and the next runner resumes right after it.
///
/// [`MemoryReadModel`](super::MemoryReadModel) does it under one lock. A database store opens a
/// transaction, lets `apply` fill a [`Model`](ProjectionStore::Model) that collects the changes
/// (statements to run, rows to upsert), writes them and the checkpoint row
/// (`UPDATE ... SET position = $reached WHERE name = $name AND position = $expected`), and
/// commits.
#[async_trait::async_trait]
pub trait ProjectionStore: Send + Sync + 'static {
    /// What the runner's `apply` changes: the read model itself, or a change set.
    type Model: Send + Sync + 'static;

    /// The checkpoint: the position of the last event the model holds ([`Position::START`] for
    /// a new model).
    async fn checkpoint(&self) -> Result<Position, ProjectionStoreError>;

    /// Runs `apply` on the model and moves the checkpoint from `expected` to the position it
    /// returns, as one atomic step. When the checkpoint is not at `expected`, `apply` is not run
    /// and the error is [`ProjectionStoreError::CheckpointMoved`]. On any error, nothing changed.
    async fn commit(
        &self,
        expected: Position,
        apply: &mut (dyn for<'m> FnMut(&'m mut Self::Model) -> Position + Send),
    ) -> Result<Position, ProjectionStoreError>;

    /// Empties the model and moves the checkpoint back to [`Position::START`], in one step: the
    /// start of a rebuild in place.
    async fn reset(&self) -> Result<(), ProjectionStoreError>;

    /// A new, empty store of the same kind, to rebuild into beside the live one.
    async fn fresh(&self) -> Result<Self, ProjectionStoreError>
    where
        Self: Sized;

    /// Replaces this store's model and checkpoint with those of `rebuilt`, in one step, so
    /// that readers see the old model until the new one takes its place.
    async fn replace_with(&self, rebuilt: Self) -> Result<(), ProjectionStoreError>
    where
        Self: Sized;
}
