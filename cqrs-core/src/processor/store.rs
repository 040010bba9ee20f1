//! The storage seam every processor backend provides: checkpoints, dead letters, and the leader
//! lock of a processor that must run once across nodes.

use std::future::Future;
use std::pin::Pin;

use super::failure::DeadLetter;
use crate::event::Position;
use crate::store::StoreError;

/// Where processors keep their checkpoints and dead letters, and how they agree on which node
/// runs each one. A backend implements it once (memory, PostgreSQL, SQLite); the handler effects
/// that commit with the checkpoint go through the kind-specific seams
/// ([`ProjectionStore`](crate::projection::ProjectionStore),
/// [`SagaStore`](crate::saga::SagaStore), or the backend's own projection trait), which write
/// checkpoint and dead letters in the same transaction.
///
/// The conformance suite in the `cqrs-tests` package checks every implementation.
#[async_trait::async_trait]
pub trait ProcessorStore: Send + Sync + 'static {
    /// The checkpoint of `processor`: the position of the last event whose effects it committed
    /// ([`Position::START`] for a new one).
    async fn checkpoint(&self, processor: &str) -> Result<Position, StoreError>;

    /// The dead letters of `processor`, oldest position first.
    async fn dead_letters(&self, processor: &str) -> Result<Vec<DeadLetter>, StoreError>;

    /// Removes the dead letter `id` of `processor` without handling its event; `false` when
    /// there is none with that id.
    async fn discard_dead_letter(&self, processor: &str, id: &str) -> Result<bool, StoreError>;

    /// Tries to become the one runner of `processor`: `Some` lease while this runner may run it,
    /// `None` while another holds it. The default, for a store that lives in one process, always
    /// grants a lease that is never lost.
    async fn lead(&self, processor: &str) -> Result<Option<Lease>, StoreError> {
        let _ = processor;
        Ok(Some(Lease::unopposed()))
    }
}

/// A held leader lock: the right to run a processor, until [`lost`](Lease::lost) says it is
/// gone. Dropping it releases the lock.
pub struct Lease {
    lock: Option<Box<dyn HeldLock>>,
}

/// A backend's leader lock, as a [`Lease`] holds it.
pub trait HeldLock: Send + 'static {
    /// Resolves once the lock is lost (its connection closed, the server restarted).
    fn lost(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl Lease {
    /// A lease nobody can take away: the only runner in the process.
    pub fn unopposed() -> Self {
        Lease { lock: None }
    }

    /// A lease on `lock`.
    pub fn new(lock: impl HeldLock) -> Self {
        Lease {
            lock: Some(Box::new(lock)),
        }
    }

    /// Resolves once the lease is lost; never for an [`unopposed`](Lease::unopposed) one.
    pub async fn lost(&mut self) {
        match &mut self.lock {
            Some(lock) => lock.lost().await,
            None => std::future::pending().await,
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("unopposed", &self.lock.is_none())
            .finish()
    }
}
