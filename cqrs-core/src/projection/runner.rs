//! The projection runner: follows the global log from the checkpoint, applies batches through
//! the error policy, commits each with its checkpoint, then tails the log; rebuilds on request.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::checkpoint::{ProjectionStore, ProjectionStoreError};
use super::pacing::Either::{First, Second};
use super::pacing::{DEFAULT_STORE_RETRY, FailingEvent, Halt, Pacer, first_of};
use super::policy::{ErrorPolicy, FailureKind, Panicked, ProjectionFailure};
use super::status::{ProjectionState, ProjectionStatus, WaitError};
use super::{EventContext, Projection, route};
use crate::event::{Position, RecordedEvent};
use crate::retry::RetryPolicy;
use crate::store::EventStore;
use crate::subscription::LogFollower;

/// Sets up and starts one projection: the projection, the event store it reads, the
/// [`ProjectionStore`] that holds its read model and checkpoint, the batch size and the error
/// policy.
///
/// [`spawn`](ProjectionRunner::spawn) starts it on its own tokio task, so many projections run
/// side by side, each at its own pace. See the [module documentation](super) for an example.
#[derive(Debug)]
pub struct ProjectionRunner<P, S, R> {
    projection: P,
    events: S,
    store: R,
    batch_size: usize,
    policy: ErrorPolicy,
    store_retry: RetryPolicy,
}

impl<P, S, R> ProjectionRunner<P, S, R>
where
    P: Projection,
    S: EventStore + Clone,
    R: ProjectionStore<Model = P::ReadModel>,
{
    /// A runner of `projection` that reads `events` and keeps its model in `store`; 500 events
    /// per batch, [`ErrorPolicy::Stop`].
    pub fn new(projection: P, events: S, store: R) -> Self {
        ProjectionRunner {
            projection,
            events,
            store,
            batch_size: 500,
            policy: ErrorPolicy::Stop,
            store_retry: DEFAULT_STORE_RETRY,
        }
    }

    /// How many events to read, apply and commit at a time (at least 1). Larger batches mean
    /// fewer commits; the write lock of an in-memory model is held for one batch.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// What to do with an event that cannot be decoded or applied.
    #[must_use]
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How often and how patiently to retry a failed read of the log or a failed commit before
    /// the projection stops ([`DEFAULT_STORE_RETRY`] by default: 10 attempts, 10 ms doubling to
    /// 1 s).
    #[must_use]
    pub fn store_retry(mut self, retry: RetryPolicy) -> Self {
        self.store_retry = retry;
        self
    }

    /// Starts the projection on its own task. Must be called within a tokio runtime.
    pub fn spawn(self) -> ProjectionHandle {
        let (status_sender, status) = watch::channel(ProjectionStatus::new(P::NAME));
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let (controls, control_receiver) = mpsc::unbounded_channel();
        let head: Arc<dyn EventStore> = Arc::new(self.events.clone());
        let worker = Worker {
            projection: self.projection,
            follower: LogFollower::new(self.events, Position::START, self.batch_size),
            store: self.store,
            policy: self.policy,
            pacer: Pacer {
                status: status_sender,
                shutdown: shutdown_receiver,
                store_retry: self.store_retry,
            },
            controls: control_receiver,
        };
        let task = tokio::spawn(worker.run());
        ProjectionHandle {
            name: P::NAME,
            status,
            head,
            controls,
            shutdown,
            task: Some(task),
        }
    }
}

/// Why a rebuild did not complete.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// The runner is not running (it failed, was shut down, or its task ended).
    #[error("projection `{projection}` is not running")]
    NotRunning {
        /// The projection's name.
        projection: &'static str,
    },
    /// The rebuild failed and the runner stopped, as its error policy says; a rebuild into a
    /// fresh model leaves the live one as it was.
    #[error("rebuilding projection `{projection}` failed: {failure}")]
    Failed {
        /// The projection's name.
        projection: &'static str,
        /// What went wrong.
        failure: ProjectionFailure,
    },
}

/// A running projection: its status, read-your-writes waits, rebuilds, shutdown.
///
/// Dropping the handle aborts the runner as a crash would: the read model keeps every event up
/// to its checkpoint and nothing more, and the next runner resumes from there. Call
/// [`shutdown`](ProjectionHandle::shutdown) to stop it cleanly.
pub struct ProjectionHandle {
    name: &'static str,
    status: watch::Receiver<ProjectionStatus>,
    head: Arc<dyn EventStore>,
    controls: mpsc::UnboundedSender<Control>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ProjectionHandle {
    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The projection's status, with its lag measured against the log's current head.
    pub async fn status(&self) -> ProjectionStatus {
        super::status::status_with_head(&self.status, &*self.head).await
    }

    /// A receiver of every status change, e.g. to export metrics.
    pub fn status_updates(&self) -> watch::Receiver<ProjectionStatus> {
        self.status.clone()
    }

    /// Waits until the read model holds the event at `position` (read your own writes: pass
    /// [`ExecuteOutcome::position`](crate::ExecuteOutcome::position)), at most `timeout`.
    /// `None` (a command that wrote nothing) returns at once. Returns the projection's position.
    pub async fn wait_for(
        &self,
        position: impl Into<Option<Position>>,
        timeout: Duration,
    ) -> Result<Position, WaitError> {
        super::status::wait_for_position(&self.status, position.into(), timeout).await
    }

    /// Rebuilds the read model in place: empties it and moves the checkpoint to the start of
    /// the log, in one step; the runner then replays the whole log into it. Returns once the
    /// model was reset; [`wait_for`](ProjectionHandle::wait_for) the head to know when the
    /// replay has caught up. Readers see the model fill up again meanwhile.
    pub async fn rebuild(&self) -> Result<(), RebuildError> {
        self.request_rebuild(RebuildKind::InPlace).await
    }

    /// Rebuilds into a fresh model beside the live one, which readers keep seeing (no longer
    /// updated) until the fresh model has caught up with the log and replaces it in one step.
    /// Returns once it has.
    pub async fn rebuild_fresh(&self) -> Result<(), RebuildError> {
        self.request_rebuild(RebuildKind::Fresh).await
    }

    async fn request_rebuild(&self, kind: RebuildKind) -> Result<(), RebuildError> {
        let not_running = RebuildError::NotRunning {
            projection: self.name,
        };
        let (done, outcome) = oneshot::channel();
        if self.controls.send(Control::Rebuild { kind, done }).is_err() {
            return Err(not_running);
        }
        outcome.await.unwrap_or(Err(not_running))
    }

    /// Stops the runner after the batch it is on (committed whole or not at all) and returns
    /// its last status.
    pub async fn shutdown(mut self) -> ProjectionStatus {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            // A task that panicked or was aborted still left a consistent model; its last
            // status says how far it got.
            let _ = task.await;
        }
        self.status.borrow().clone()
    }

    /// Stops the runner at once, as a crash would, and waits until its task has ended. Dropping
    /// the handle does the same without waiting.
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Cancelled, or it had just finished: either way it is gone.
            let _ = task.await;
        }
    }
}

impl std::fmt::Debug for ProjectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionHandle")
            .field("name", &self.name)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for ProjectionHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum RebuildKind {
    InPlace,
    Fresh,
}

#[derive(Debug)]
enum Control {
    Rebuild {
        kind: RebuildKind,
        done: oneshot::Sender<Result<(), RebuildError>>,
    },
}

struct Worker<P: Projection, S, R> {
    projection: P,
    follower: LogFollower<S>,
    store: R,
    policy: ErrorPolicy,
    pacer: Pacer,
    controls: mpsc::UnboundedReceiver<Control>,
}

/// What one commit's apply closure got through.
#[derive(Default)]
struct Progress {
    /// The index in the batch of the first event not yet committed.
    next: usize,
    /// The events skipped on the way, with their errors.
    skipped: Vec<ProjectionFailure>,
    /// The failure `next` stopped at, when it did not get through the batch.
    failure: Option<ProjectionFailure>,
}

impl<P, S, R> Worker<P, S, R>
where
    P: Projection,
    S: EventStore,
    R: ProjectionStore<Model = P::ReadModel>,
{
    async fn run(mut self) {
        let halt = match self.follow().await {
            Ok(never) => match never {},
            Err(halt) => halt,
        };
        self.pacer.halted(&halt);
        // Rebuild requests that arrived too late are answered rather than left hanging.
        self.controls.close();
        while let Ok(Control::Rebuild { done, .. }) = self.controls.try_recv() {
            let _ = done.send(Err(halt.rebuild_error(P::NAME)));
        }
    }

    /// Catch up, then tail the log, until shut down or stopped by the error policy.
    async fn follow(&mut self) -> Result<std::convert::Infallible, Halt> {
        let mut attempts = 0;
        let mut checkpoint = loop {
            match self.store.checkpoint().await {
                Ok(checkpoint) => break checkpoint,
                Err(error) => {
                    self.pacer
                        .store_failed(FailureKind::Commit, None, &mut attempts, error)
                        .await?;
                }
            }
        };
        self.follower.seek(checkpoint);
        self.pacer.status.send_modify(|status| {
            status.position = checkpoint;
            status.head = status.head.max(checkpoint);
        });
        loop {
            if self.pacer.shutdown_requested() {
                return Err(Halt::ShutDown);
            }
            while let Ok(control) = self.controls.try_recv() {
                self.control(control, &mut checkpoint).await?;
            }
            let batch = self.pacer.read_batch(&mut self.follower).await?;
            if batch.is_empty() {
                self.pacer.status.send_modify(|status| {
                    status.state = ProjectionState::Live;
                    status.head = status.head.max(checkpoint);
                });
                self.wait_for_events(&mut checkpoint).await?;
                continue;
            }
            self.pacer
                .status
                .send_modify(|status| status.state = ProjectionState::CatchingUp);
            self.commit_batch(&self.store, &mut checkpoint, &batch, false)
                .await?;
            if let Ok(head) = self.follower.store().head().await {
                self.pacer
                    .status
                    .send_modify(|status| status.head = status.head.max(head));
            }
        }
    }

    /// Caught up: waits for new events, a control request or shutdown, whichever comes first.
    async fn wait_for_events(&mut self, checkpoint: &mut Position) -> Result<(), Halt> {
        let mut shutdown = self.pacer.shutdown.clone();
        let after = self.follower.position();
        let woken = first_of(
            async { shutdown.wait_for(|requested| *requested).await.is_ok() },
            first_of(
                self.controls.recv(),
                self.follower.store().wait_for_events(after),
            ),
        )
        .await;
        match woken {
            First(_) => Err(Halt::ShutDown),
            Second(First(Some(control))) => self.control(control, checkpoint).await,
            // Every handle is gone: nobody can ask for anything any more.
            Second(First(None)) => Err(Halt::ShutDown),
            Second(Second(head)) => {
                // A failed wait is not a failure of the projection: the next read retries, and
                // reports the store's error if it keeps failing.
                if let Ok(head) = head {
                    self.pacer
                        .status
                        .send_modify(|status| status.head = status.head.max(head));
                }
                Ok(())
            }
        }
    }

    async fn control(&mut self, control: Control, checkpoint: &mut Position) -> Result<(), Halt> {
        let Control::Rebuild { kind, done } = control;
        let outcome = match kind {
            RebuildKind::InPlace => self.rebuild_in_place(checkpoint).await,
            RebuildKind::Fresh => self.rebuild_fresh(checkpoint).await,
        };
        let _ = done.send(
            outcome
                .as_ref()
                .map_err(|halt| halt.rebuild_error(P::NAME))
                .copied(),
        );
        outcome
    }

    async fn rebuild_in_place(&mut self, checkpoint: &mut Position) -> Result<(), Halt> {
        let mut attempts = 0;
        while let Err(error) = self.store.reset().await {
            self.pacer
                .store_failed(FailureKind::Commit, None, &mut attempts, error)
                .await?;
        }
        *checkpoint = Position::START;
        self.follower.seek(Position::START);
        self.pacer.status.send_modify(|status| {
            status.position = Position::START;
            status.state = ProjectionState::CatchingUp;
        });
        Ok(())
    }

    async fn rebuild_fresh(&mut self, checkpoint: &mut Position) -> Result<(), Halt> {
        let mut attempts = 0;
        let fresh = loop {
            match self.store.fresh().await {
                Ok(fresh) => break fresh,
                Err(error) => {
                    self.pacer
                        .store_failed(FailureKind::Commit, None, &mut attempts, error)
                        .await?;
                }
            }
        };
        let mut fresh_checkpoint = Position::START;
        self.follower.seek(Position::START);
        self.pacer.status.send_modify(|status| {
            status.state = ProjectionState::Rebuilding {
                position: Position::START,
            };
        });
        let replayed = async {
            loop {
                if self.pacer.shutdown_requested() {
                    return Err(Halt::ShutDown);
                }
                let batch = self.pacer.read_batch(&mut self.follower).await?;
                if batch.is_empty() {
                    return Ok(());
                }
                self.commit_batch(&fresh, &mut fresh_checkpoint, &batch, true)
                    .await?;
                self.pacer.status.send_modify(|status| {
                    status.state = ProjectionState::Rebuilding {
                        position: fresh_checkpoint,
                    };
                });
            }
        }
        .await;
        if let Err(halt) = replayed {
            // The live model was not touched; the next runner resumes it where it was.
            self.follower.seek(*checkpoint);
            return Err(halt);
        }
        if let Err(error) = self.store.replace_with(fresh).await {
            // `replace_with` consumed the fresh model: there is nothing to retry with. The live
            // model is as it was before the rebuild.
            self.follower.seek(*checkpoint);
            return Err(Halt::Failed(ProjectionFailure {
                kind: FailureKind::Commit,
                event: None,
                attempts: 1,
                error: Arc::new(error),
            }));
        }
        *checkpoint = fresh_checkpoint;
        self.pacer.status.send_modify(|status| {
            status.position = fresh_checkpoint;
            status.state = ProjectionState::CatchingUp;
        });
        Ok(())
    }

    /// Applies and commits the whole of `batch` to `store`, following the error policy: returns
    /// once every event of it is committed (applied, passed over or skipped), or the projection
    /// has to stop.
    async fn commit_batch(
        &self,
        store: &R,
        checkpoint: &mut Position,
        batch: &[RecordedEvent],
        rebuilding: bool,
    ) -> Result<(), Halt> {
        let mut next = 0;
        let mut failing = FailingEvent::default();
        // Set when retries are used up and the policy says skip: the next commit skips it.
        let mut skip_first: Option<ProjectionFailure> = None;
        let mut store_attempts = 0;
        while next < batch.len() {
            let mut progress = Progress::default();
            let start = *checkpoint;
            let committed = store
                .commit(start, &mut |model| {
                    // Runs under the store's commit; may run again if the store retries, so it
                    // starts from scratch each time.
                    progress = self.apply_run(model, batch, next, skip_first.as_ref());
                    progress
                        .next
                        .checked_sub(1)
                        .and_then(|last| batch.get(last))
                        .map_or(start, |event| event.position)
                })
                .await;
            let reached = match committed {
                Ok(reached) => reached,
                Err(error) => {
                    let event = batch.get(next).cloned().map(Arc::new);
                    if let ProjectionStoreError::CheckpointMoved { .. } = error {
                        // Trying again from the same checkpoint cannot succeed.
                        return Err(Halt::Failed(ProjectionFailure {
                            kind: FailureKind::Commit,
                            event,
                            attempts: store_attempts + 1,
                            error: Arc::new(error),
                        }));
                    }
                    self.pacer
                        .store_failed(FailureKind::Commit, event, &mut store_attempts, error)
                        .await?;
                    continue;
                }
            };
            store_attempts = 0;
            *checkpoint = reached;
            if progress.next > next {
                skip_first = None;
            }
            next = progress.next;
            let skipped = std::mem::take(&mut progress.skipped);
            self.pacer.status.send_modify(|status| {
                if !rebuilding {
                    status.position = reached;
                }
                for failure in skipped {
                    status.record_skip(failure);
                }
            });
            let Some(failure) = progress.failure else {
                continue;
            };
            // (`apply_run` skips on its own under `ErrorPolicy::Skip`.)
            let skipped = self.pacer.event_failed(self.policy, &mut failing, failure);
            if let Some(skipped) = skipped.await? {
                skip_first = Some(skipped);
            }
        }
        Ok(())
    }

    /// Applies `batch[next..]` to `model` until an event fails and the policy does not skip
    /// it. `skip_first` skips `batch[next]` with that failure (retries used up).
    fn apply_run(
        &self,
        model: &mut P::ReadModel,
        batch: &[RecordedEvent],
        next: usize,
        skip_first: Option<&ProjectionFailure>,
    ) -> Progress {
        let mut progress = Progress {
            next,
            ..Progress::default()
        };
        if let Some(failure) = skip_first {
            progress.skipped.push(failure.clone());
            progress.next += 1;
        }
        while let Some(event) = batch.get(progress.next) {
            match self.apply_one(model, event) {
                Ok(()) => progress.next += 1,
                Err(failure) if self.policy == ErrorPolicy::Skip => {
                    progress.skipped.push(failure);
                    progress.next += 1;
                }
                Err(failure) => {
                    progress.failure = Some(failure);
                    break;
                }
            }
        }
        progress
    }

    fn apply_one(
        &self,
        model: &mut P::ReadModel,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionFailure> {
        apply_recorded(&self.projection, model, event)
    }
}

/// Routes `event` for `projection` and applies it to `model`: a decode error, an error from
/// `apply` and a panic in it all come back as a failure with attempt count 1.
pub(crate) fn apply_recorded<P: Projection>(
    projection: &P,
    model: &mut P::ReadModel,
    event: &RecordedEvent,
) -> Result<(), ProjectionFailure> {
    let failure = |kind, error: Arc<dyn std::error::Error + Send + Sync>| ProjectionFailure {
        kind,
        event: Some(Arc::new(event.clone())),
        attempts: 1,
        error,
    };
    // A panic in user code is caught here, before it could unwind through the store's lock,
    // and goes through the error policy like an error.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let routed = match route::<P>(event) {
            Ok(Some(routed)) => routed,
            Ok(None) => return Ok(()),
            Err(error) => return Err(failure(FailureKind::Decode, Arc::new(error))),
        };
        projection
            .apply(model, routed, &EventContext::new(event))
            .map_err(|error| failure(FailureKind::Apply, Arc::new(error)))
    }));
    outcome.unwrap_or_else(|payload| {
        Err(failure(
            FailureKind::Panic,
            Arc::new(Panicked::from_payload(&*payload)),
        ))
    })
}
