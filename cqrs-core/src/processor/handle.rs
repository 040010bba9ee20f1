//! The handle of a running processor: status, waits, controls, dead letters, shutdown.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::failure::{DeadLetter, Failure};
use super::runner::ask;
use super::status::{ProcessorStatus, WaitError, wait_for_position};
use super::{Processor, ProcessorState};
use crate::event::Position;
use crate::store::{EventStore as _, StoreError};

/// A request to a running processor, answered on its oneshot.
pub(crate) enum Control {
    Pause(oneshot::Sender<Result<(), ControlError>>),
    Resume(oneshot::Sender<Result<(), ControlError>>),
    Rebuild(oneshot::Sender<Result<(), ControlError>>),
    SkipTo(Position, oneshot::Sender<Result<(), ControlError>>),
    Retry(String, oneshot::Sender<Result<(), ControlError>>),
    Discard(String, oneshot::Sender<Result<bool, ControlError>>),
}

impl Control {
    /// Answers the request with `error` instead of carrying it out.
    pub(crate) fn refuse(self, error: ControlError) {
        match self {
            Control::Pause(done)
            | Control::Resume(done)
            | Control::Rebuild(done)
            | Control::SkipTo(_, done)
            | Control::Retry(_, done) => {
                let _ = done.send(Err(error));
            }
            Control::Discard(_, done) => {
                let _ = done.send(Err(error));
            }
        }
    }
}

/// Why a request to a processor through its handle was not carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The runner has stopped (shut down, or its task ended).
    #[error("processor `{processor}` is not running")]
    NotRunning {
        /// The processor.
        processor: &'static str,
    },
    /// This node does not lead the processor; ask the node that does.
    #[error("processor `{processor}` is led by another node; this one stands by")]
    NotLeader {
        /// The processor.
        processor: &'static str,
    },
    /// The processor cannot do this (a saga cannot be rebuilt).
    #[error("processor `{processor}` cannot be rebuilt")]
    Unsupported {
        /// The processor.
        processor: &'static str,
    },
    /// A checkpoint cannot move back: the events in between would be handled twice. A
    /// projection replays them with a rebuild.
    #[error(
        "processor `{processor}` is at position {checkpoint}: moving it back to {to} would handle \
         the events in between twice (rebuild a projection to replay the log)"
    )]
    WouldReplay {
        /// The processor.
        processor: &'static str,
        /// Its checkpoint.
        checkpoint: Position,
        /// The position asked for.
        to: Position,
    },
    /// The position is past the last event of the log.
    #[error("position {to} is past the head of the log ({head}) that `{processor}` follows")]
    BeyondHead {
        /// The processor.
        processor: &'static str,
        /// The position asked for.
        to: Position,
        /// The head of the log.
        head: Position,
    },
    /// There is no dead letter with this id.
    #[error("processor `{processor}` has no dead letter `{id}`")]
    UnknownDeadLetter {
        /// The processor.
        processor: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The dead letter is not about an event (a saga deadline): it can only be discarded.
    #[error("dead letter `{id}` of processor `{processor}` is not an event; discard it instead")]
    NotAnEvent {
        /// The processor.
        processor: &'static str,
        /// The dead letter.
        id: String,
    },
    /// The dead letter's event is no longer in the log.
    #[error("the event at position {position} parked by `{processor}` is no longer in the log")]
    EventGone {
        /// The processor.
        processor: &'static str,
        /// The event's position.
        position: Position,
    },
    /// Handling the event failed again; the dead letter stays.
    #[error("{0}")]
    Failed(Box<Failure>),
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(StoreError),
}

/// What a handle reads from the processor without going through its runner.
#[async_trait::async_trait]
pub(crate) trait Backing: Send + Sync + 'static {
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError>;
    async fn head(&self) -> Result<Position, StoreError>;
}

pub(crate) struct Backed<P>(pub(crate) Arc<P>);

#[async_trait::async_trait]
impl<P: Processor> Backing for Backed<P> {
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.0.store().dead_letters(self.0.name()).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.0.events().head().await
    }
}

/// A running processor (projection or saga), from
/// [`ProcessorRunner::spawn`](super::ProcessorRunner::spawn).
///
/// Dropping it aborts the runner as a crash would (an open batch rolls back, a leader lock is
/// released); call [`shutdown`](ProcessorHandle::shutdown) to stop cleanly.
pub struct ProcessorHandle {
    name: &'static str,
    status: watch::Receiver<ProcessorStatus>,
    controls: mpsc::UnboundedSender<Control>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    backing: Arc<dyn Backing>,
}

impl ProcessorHandle {
    pub(crate) fn new(
        name: &'static str,
        status: watch::Receiver<ProcessorStatus>,
        controls: mpsc::UnboundedSender<Control>,
        shutdown: watch::Sender<bool>,
        task: JoinHandle<()>,
        backing: Arc<dyn Backing>,
    ) -> Self {
        ProcessorHandle {
            name,
            status,
            controls,
            shutdown,
            task: Some(task),
            backing,
        }
    }

    /// The processor's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The processor's status, with its lag measured against the log's current head (the head
    /// the runner saw last, when the store does not answer within a quarter of a second: a
    /// status asked for during an outage comes back at once).
    pub async fn status(&self) -> ProcessorStatus {
        let mut current = self.status.borrow().clone();
        if let Ok(Ok(head)) =
            tokio::time::timeout(Duration::from_millis(250), self.backing.head()).await
        {
            current.head = current.head.max(head);
        }
        current.refresh(SystemTime::now());
        current
    }

    /// The status as the runner last published it, without asking the store.
    pub fn last_status(&self) -> ProcessorStatus {
        self.status.borrow().clone()
    }

    /// A receiver of every status change.
    pub fn status_updates(&self) -> watch::Receiver<ProcessorStatus> {
        self.status.clone()
    }

    /// Whether this runner leads the processor (a standby node's does not).
    pub fn is_leader(&self) -> bool {
        self.status.borrow().leader
    }

    /// Waits until the processor has committed the event at `position` (read your own writes),
    /// at most `timeout`; `None` (a command that wrote nothing) returns at once. On a standby
    /// node the checkpoint follows the stored one, so this works on every node.
    pub async fn wait_for(
        &self,
        position: impl Into<Option<Position>>,
        timeout: Duration,
    ) -> Result<Position, WaitError> {
        wait_for_position(&self.status, position.into(), timeout).await
    }

    /// Waits until the status satisfies `condition`, at most `timeout`; the last status either
    /// way.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&ProcessorStatus) -> bool,
    ) -> Result<ProcessorStatus, ProcessorStatus> {
        let mut status = self.status.clone();
        let reached = tokio::time::timeout(timeout, status.wait_for(|status| condition(status)))
            .await
            .is_ok_and(|waited| waited.is_ok());
        let current = status.borrow().clone();
        if reached { Ok(current) } else { Err(current) }
    }

    /// Pauses the processor after the batch in hand; it shows
    /// [`Paused`](ProcessorState::Paused) until [`resume`](ProcessorHandle::resume).
    pub async fn pause(&self) -> Result<(), ControlError> {
        ask(&self.controls, self.name, Control::Pause).await
    }

    /// Resumes a paused processor, or one stopped at a failing event by its policy (the event
    /// gets the policy's attempts again).
    pub async fn resume(&self) -> Result<(), ControlError> {
        ask(&self.controls, self.name, Control::Resume).await
    }

    /// Empties what the processor built, drops its dead letters and replays the log from the
    /// start (a projection; a saga cannot be rebuilt). Returns once the reset is committed;
    /// the status shows [`Rebuilding`](ProcessorState::Rebuilding) until it has caught up
    /// with the head as it was then.
    pub async fn rebuild(&self) -> Result<(), ControlError> {
        ask(&self.controls, self.name, Control::Rebuild).await
    }

    /// Moves the checkpoint forward to `to`, past the events in between without handling them
    /// (an operator skipping events that must not be handled, say a batch imported twice). It
    /// commits like a batch with no events, so the processor's effects and dead letters stay as
    /// they are, and a failure stopped at a skipped event is cleared.
    ///
    /// A position before the checkpoint is refused with [`ControlError::WouldReplay`] (a
    /// projection replays with [`rebuild`](ProcessorHandle::rebuild)), one past the head with
    /// [`ControlError::BeyondHead`]; the checkpoint itself changes nothing.
    pub async fn skip_to(&self, to: Position) -> Result<(), ControlError> {
        ask(&self.controls, self.name, |done| Control::SkipTo(to, done)).await
    }

    /// The processor's dead letters, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.backing.dead_letters().await
    }

    /// Handles the dead letter `id`'s event again (after a fix): once it succeeds, its effects
    /// and the removal of the dead letter commit together, so it is handled exactly once. On a
    /// new failure the dead letter stays and the error says why.
    pub async fn retry_dead_letter(&self, id: &str) -> Result<(), ControlError> {
        let id = id.to_owned();
        ask(&self.controls, self.name, |done| Control::Retry(id, done)).await
    }

    /// Removes the dead letter `id` without handling its event; `false` when there was none.
    pub async fn discard_dead_letter(&self, id: &str) -> Result<bool, ControlError> {
        let id = id.to_owned();
        ask(&self.controls, self.name, |done| Control::Discard(id, done)).await
    }

    /// Asks the runner to stop after the batch in hand and waits until it has; returns its last
    /// status.
    pub async fn shutdown(mut self) -> ProcessorStatus {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            // A task that panicked or was aborted still left a consistent store; its last
            // status says how far it got.
            let _ = task.await;
        }
        let mut status = self.status.borrow().clone();
        status.state = ProcessorState::Stopped;
        status
    }

    /// Stops the runner at once, as a crash would, and waits until its task has ended. Dropping
    /// the handle does the same without waiting.
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl std::fmt::Debug for ProcessorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorHandle")
            .field("name", &self.name)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for ProcessorHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
