//! The in-memory read model: the model, its checkpoint and its dead letters behind one lock.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::checkpoint::{Applied, ProjectionCommit, ProjectionStore};
use crate::event::Position;
use crate::processor::{CommitError, DeadLetter, ProcessorStore};
use crate::store::StoreError;

/// A read model held in memory together with its checkpoint and dead letters, for a
/// [`Projector`](super::Projector) to keep up to date and for queries to
/// [`read`](MemoryReadModel::read). Cloning is cheap and shares the model.
///
/// The model and the checkpoint sit behind one lock: a commit changes both before anyone can
/// look, so a reader never sees an event applied without its checkpoint, and a runner dropped at
/// any point leaves the two in step. A runner holds the write lock only while it applies one
/// batch (no `.await` in between); readers share the read lock. One model serves one
/// projection.
pub struct MemoryReadModel<M> {
    inner: Arc<RwLock<Checkpointed<M>>>,
}

struct Checkpointed<M> {
    model: M,
    checkpoint: Position,
    dead_letters: BTreeMap<String, DeadLetter>,
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
            inner: Arc::new(RwLock::new(Checkpointed {
                model,
                checkpoint,
                dead_letters: BTreeMap::new(),
            })),
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
            .field("dead_letters", &state.dead_letters.len())
            .field("model", &state.model)
            .finish()
    }
}

#[async_trait::async_trait]
impl<M: Send + Sync + 'static> ProcessorStore for MemoryReadModel<M> {
    async fn checkpoint(&self, _projection: &str) -> Result<Position, StoreError> {
        Ok(self.position())
    }

    async fn dead_letters(&self, _projection: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let mut letters: Vec<DeadLetter> =
            self.read_lock().dead_letters.values().cloned().collect();
        letters.sort_by_key(|letter| (letter.position(), letter.id.clone()));
        Ok(letters)
    }

    async fn discard_dead_letter(&self, _projection: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self.write_lock().dead_letters.remove(id).is_some())
    }
}

#[async_trait::async_trait]
impl<M: Default + Send + Sync + 'static> ProjectionStore for MemoryReadModel<M> {
    type Model = M;

    async fn commit(
        &self,
        projection: &'static str,
        commit: ProjectionCommit,
        apply: &mut (dyn for<'m> FnMut(&'m mut M) -> Applied + Send),
    ) -> Result<Position, CommitError> {
        let mut state = self.write_lock();
        if state.checkpoint != commit.expected {
            return Err(CommitError::CheckpointMoved {
                processor: projection,
                expected: commit.expected,
                actual: state.checkpoint,
            });
        }
        // The change, the checkpoint and the dead letters are made under the same guard, with
        // no `.await` between them: nothing can observe or interrupt one without the others.
        let applied = apply(&mut state.model);
        state.checkpoint = applied.reached;
        for letter in commit.dead_letters {
            if letter
                .position()
                .is_none_or(|position| position <= applied.reached)
            {
                state.dead_letters.insert(letter.id.clone(), letter);
            }
        }
        if applied.complete
            && let Some(retried) = commit.retried
        {
            state.dead_letters.remove(&retried);
        }
        Ok(applied.reached)
    }

    async fn reset(&self, _projection: &str) -> Result<(), StoreError> {
        let mut state = self.write_lock();
        state.model = M::default();
        state.checkpoint = Position::START;
        state.dead_letters.clear();
        Ok(())
    }
}
