//! What a running projection tells about itself, and waiting for it to reach a position.

use std::collections::VecDeque;
use std::time::Duration;

use super::policy::ProjectionFailure;
use crate::event::Position;
use crate::store::EventStore;

/// How many skipped events a status keeps; older ones are counted in
/// [`ProjectionStatus::skipped_total`] only, so that a projection skipping millions of events
/// does not hold them all in memory.
pub(crate) const SKIPPED_KEPT: usize = 1000;

/// What a projection runner is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProjectionState {
    /// Loading its checkpoint.
    Starting,
    /// Applying events that were in the log before it caught up.
    CatchingUp,
    /// Caught up with the head of the log, waiting for new events.
    Live,
    /// Waiting to try a failing event (or a failed read or commit) again.
    Retrying {
        /// The attempts made so far.
        attempts: u32,
    },
    /// Replaying the log into a fresh model that will replace the live one.
    Rebuilding {
        /// How far the fresh model has got.
        position: Position,
    },
    /// Stopped by its error policy; [`ProjectionStatus::last_error`] says why.
    Failed,
    /// Shut down (or dropped) cleanly.
    ShutDown,
}

/// A snapshot of a projection's progress and health.
#[derive(Debug, Clone)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: &'static str,
    /// What the runner is doing.
    pub state: ProjectionState,
    /// The checkpoint: the last position whose effect the read model holds.
    pub position: Position,
    /// The head of the global log, as last seen.
    pub head: Position,
    /// The most recent failure, including ones that a retry later got past.
    pub last_error: Option<ProjectionFailure>,
    /// The most recently skipped events with their errors, oldest first (at most 1,000).
    pub skipped: VecDeque<ProjectionFailure>,
    /// How many events were skipped since the runner started.
    pub skipped_total: u64,
}

impl ProjectionStatus {
    /// The status of a runner that is starting: at the start of the log, nothing failed.
    pub fn new(name: &'static str) -> Self {
        ProjectionStatus {
            name,
            state: ProjectionState::Starting,
            position: Position::START,
            head: Position::START,
            last_error: None,
            skipped: VecDeque::new(),
            skipped_total: 0,
        }
    }

    /// How many log positions the read model is behind the head.
    pub fn lag(&self) -> u64 {
        self.head.0.saturating_sub(self.position.0)
    }

    /// Whether the runner has stopped (failed or shut down): its position will not move again.
    pub fn is_stopped(&self) -> bool {
        matches!(
            self.state,
            ProjectionState::Failed | ProjectionState::ShutDown
        )
    }

    /// Records an event skipped by the [`ErrorPolicy`](super::ErrorPolicy): it becomes the last
    /// error and joins the skipped list, of which the latest 1,000 are kept.
    pub fn record_skip(&mut self, failure: ProjectionFailure) {
        if self.skipped.len() == SKIPPED_KEPT {
            self.skipped.pop_front();
        }
        self.last_error = Some(failure.clone());
        self.skipped.push_back(failure);
        self.skipped_total += 1;
    }
}

/// Why [`ProjectionHandle::wait_for`](super::ProjectionHandle::wait_for) returned without the
/// projection reaching the position.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The projection did not reach the position in time.
    #[error(
        "projection `{projection}` did not reach position {target} within {timeout:?}; it is at {reached}"
    )]
    Timeout {
        /// The projection's name.
        projection: &'static str,
        /// The position waited for.
        target: Position,
        /// Where the projection was when the wait ended.
        reached: Position,
        /// How long it waited.
        timeout: Duration,
    },
    /// The projection stopped before it reached the position.
    #[error("projection `{projection}` stopped at position {reached}, before {target}{}", .error.as_ref().map(|error| format!(": {error}")).unwrap_or_default())]
    Stopped {
        /// The projection's name.
        projection: &'static str,
        /// The position waited for.
        target: Position,
        /// Where it stopped.
        reached: Position,
        /// The failure that stopped it, if it failed.
        error: Option<ProjectionFailure>,
    },
}

/// The status published on `status`, with its head (and so its lag) measured against `store`'s
/// current head. A failed read of the head keeps the last head the runner saw: the status is
/// still worth returning. Every projection runner's handle answers `status` with it.
pub async fn status_with_head<S: EventStore + ?Sized>(
    status: &tokio::sync::watch::Receiver<ProjectionStatus>,
    store: &S,
) -> ProjectionStatus {
    let mut current = status.borrow().clone();
    if let Ok(head) = store.head().await {
        current.head = current.head.max(head);
    }
    current
}

/// Waits until the status published on `status` reaches `position` (read your own writes), at
/// most `timeout`; `None` (a command that wrote nothing) returns the current position at once.
///
/// Every projection runner's handle answers `wait_for` with it, whatever store the runner
/// commits to: a runner only has to publish its [`ProjectionStatus`] on a watch channel.
pub async fn wait_for_position(
    status: &tokio::sync::watch::Receiver<ProjectionStatus>,
    position: Option<Position>,
    timeout: Duration,
) -> Result<Position, WaitError> {
    let mut status = status.clone();
    let Some(target) = position else {
        return Ok(status.borrow().position);
    };
    let reached = tokio::time::timeout(
        timeout,
        status.wait_for(|status| status.position >= target || status.is_stopped()),
    )
    .await
    .map(|waited| waited.is_ok());
    let current = status.borrow().clone();
    match reached {
        Ok(true) if current.position >= target => Ok(current.position),
        Err(_) => Err(WaitError::Timeout {
            projection: current.name,
            target,
            reached: current.position,
            timeout,
        }),
        // Stopped, or the runner's task ended (the status sender went away with it).
        Ok(_) => Err(WaitError::Stopped {
            projection: current.name,
            target,
            reached: current.position,
            error: current.last_error,
        }),
    }
}
