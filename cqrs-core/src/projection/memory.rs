//! The in-memory read model: the model and its checkpoint behind one lock.

use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::checkpoint::{ProjectionStore, ProjectionStoreError};
use crate::event::Position;

/// A read model held in memory together with its checkpoint, for a [`ProjectionRunner`] to keep
/// up to date and for queries to [`read`](MemoryReadModel::read). Cloning is cheap and shares
/// the model.
///
/// The model and the checkpoint sit behind one lock: a commit changes both before anyone can
/// look, so a reader never sees an event applied without its checkpoint, and a runner dropped at
/// any point leaves the two in step. A runner holds the write lock only while it applies one
/// batch (no `.await` in between); readers share the read lock.
///
/// [`ProjectionRunner`]: super::ProjectionRunner
pub struct MemoryReadModel<M> {
    inner: Arc<RwLock<Checkpointed<M>>>,
}

struct Checkpointed<M> {
    model: M,
    checkpoint: Position,
}

impl<M: Default> MemoryReadModel<M> {
    /// An empty model at [`Position::START`].
    pub fn new() -> Self {
        Self::with_model(M::default(), Position::START)
    }
}

impl<M: Default> Default for MemoryReadModel<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> MemoryReadModel<M> {
    /// A model that already holds the events up to `checkpoint` (e.g. restored from a file).
    pub fn with_model(model: M, checkpoint: Position) -> Self {
        MemoryReadModel {
            inner: Arc::new(RwLock::new(Checkpointed { model, checkpoint })),
        }
    }

    /// Runs `query` on the model. The runner waits while `query` runs, so keep it short.
    pub fn read<R>(&self, query: impl FnOnce(&M) -> R) -> R {
        query(&self.read_lock().model)
    }

    /// Runs `query` on the model and its checkpoint, read together.
    pub fn read_with_checkpoint<R>(&self, query: impl FnOnce(&M, Position) -> R) -> R {
        let state = self.read_lock();
        query(&state.model, state.checkpoint)
    }

    /// The position of the last event the model holds.
    pub fn position(&self) -> Position {
        self.read_lock().checkpoint
    }

    /// A copy of the model and its checkpoint, taken together.
    pub fn snapshot(&self) -> (M, Position)
    where
        M: Clone,
    {
        let state = self.read_lock();
        (state.model.clone(), state.checkpoint)
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, Checkpointed<M>> {
        // Poisoning cannot leave a half-applied batch: the runner catches a panicking `apply`
        // before it unwinds through the write lock, so a poisoned lock only means a reader's
        // query panicked, which changed nothing.
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Checkpointed<M>> {
        // See `read_lock` for why a poisoned lock still holds a consistent state.
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<M> Clone for MemoryReadModel<M> {
    fn clone(&self) -> Self {
        MemoryReadModel {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M: fmt::Debug> fmt::Debug for MemoryReadModel<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read_lock();
        f.debug_struct("MemoryReadModel")
            .field("checkpoint", &state.checkpoint)
            .field("model", &state.model)
            .finish()
    }
}

#[async_trait::async_trait]
impl<M: Default + Send + Sync + 'static> ProjectionStore for MemoryReadModel<M> {
    type Model = M;

    async fn checkpoint(&self) -> Result<Position, ProjectionStoreError> {
        Ok(self.position())
    }

    async fn commit(
        &self,
        expected: Position,
        apply: &mut (dyn for<'m> FnMut(&'m mut M) -> Position + Send),
    ) -> Result<Position, ProjectionStoreError> {
        let mut state = self.write_lock();
        if state.checkpoint != expected {
            return Err(ProjectionStoreError::CheckpointMoved {
                expected,
                actual: state.checkpoint,
            });
        }
        // The change and the checkpoint are made under the same guard, with no `.await` between
        // them: nothing can observe or interrupt one without the other.
        let reached = apply(&mut state.model);
        state.checkpoint = reached;
        Ok(reached)
    }

    async fn reset(&self) -> Result<(), ProjectionStoreError> {
        let mut state = self.write_lock();
        state.model = M::default();
        state.checkpoint = Position::START;
        Ok(())
    }

    async fn fresh(&self) -> Result<Self, ProjectionStoreError> {
        Ok(MemoryReadModel::new())
    }

    async fn replace_with(&self, rebuilt: Self) -> Result<(), ProjectionStoreError> {
        let (model, checkpoint) = {
            let mut rebuilt = rebuilt.write_lock();
            (std::mem::take(&mut rebuilt.model), rebuilt.checkpoint)
        };
        let mut state = self.write_lock();
        state.model = model;
        state.checkpoint = checkpoint;
        Ok(())
    }
}
