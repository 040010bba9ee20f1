//! What every projection runner does the same way between its steps, so that a runner over
//! another store (cqrs-postgres's, say) keeps the in-memory [`ProjectionRunner`]'s behaviour: a
//! failure goes into the status and the runner waits before trying again, unless shutdown comes
//! first; a failed read of the log or the store is retried under the store retry policy; the
//! attempts at one failing event are counted and the [`ErrorPolicy`] says what comes next; and
//! the way the runner ended goes into the status.
//!
//! [`ProjectionRunner`]: super::ProjectionRunner

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::watch;

use super::policy::{ErrorPolicy, FailureKind, ProjectionFailure, RetriesExhausted};
use super::runner::RebuildError;
use super::status::{ProjectionState, ProjectionStatus};
use crate::event::{Position, RecordedEvent};
use crate::retry::RetryPolicy;
use crate::store::EventStore;
use crate::subscription::LogFollower;

/// Why a projection runner's loop ended.
#[derive(Debug)]
pub enum Halt {
    /// Shutdown was requested (or every handle is gone).
    ShutDown,
    /// A failure the error policy or the store retry policy does not get past.
    Failed(ProjectionFailure),
}

impl Halt {
    /// The answer to a rebuild request that this halt cut short.
    pub fn rebuild_error(&self, projection: &'static str) -> RebuildError {
        match self {
            Halt::ShutDown => RebuildError::NotRunning { projection },
            Halt::Failed(failure) => RebuildError::Failed {
                projection,
                failure: failure.clone(),
            },
        }
    }
}

/// The store retry policy a projection runner starts with: 10 attempts, 10 ms doubling to 1 s.
pub const DEFAULT_STORE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    base_delay: Duration::from_millis(10),
    max_delay: Duration::from_secs(1),
    deadline: None,
    turn_after: None,
};

/// A runner's status, shutdown signal and store retry policy, and the steps that use them.
#[derive(Debug)]
pub struct Pacer {
    /// Where the runner publishes its status.
    pub status: watch::Sender<ProjectionStatus>,
    /// Turns `true` when shutdown is requested.
    pub shutdown: watch::Receiver<bool>,
    /// How often and how patiently a failed store operation is retried.
    pub store_retry: RetryPolicy,
}

impl Pacer {
    /// Whether shutdown was requested.
    pub fn shutdown_requested(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Records `failure` in the status (state [`Retrying`](ProjectionState::Retrying)), then
    /// sleeps `delay` unless shutdown is requested first.
    pub async fn pause(&self, failure: ProjectionFailure, delay: Duration) -> Result<(), Halt> {
        let attempts = failure.attempts;
        self.status.send_modify(|status| {
            status.state = ProjectionState::Retrying { attempts };
            status.last_error = Some(failure);
        });
        let mut shutdown = self.shutdown.clone();
        match first_of(
            async { shutdown.wait_for(|requested| *requested).await.is_ok() },
            tokio::time::sleep(delay),
        )
        .await
        {
            Either::First(_) => Err(Halt::ShutDown),
            Either::Second(()) => Ok(()),
        }
    }

    /// Counts a failed store operation (on `event`, when there is one) in `attempts` and waits
    /// before the next attempt; stops once the store retry policy's attempts are used up.
    pub async fn store_failed(
        &self,
        kind: FailureKind,
        event: Option<Arc<RecordedEvent>>,
        attempts: &mut u32,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Result<(), Halt> {
        *attempts += 1;
        let failure = ProjectionFailure {
            kind,
            event,
            attempts: *attempts,
            error: Arc::new(error),
        };
        if *attempts >= self.store_retry.max_attempts.max(1) {
            return Err(Halt::Failed(failure));
        }
        self.pause(failure, self.store_retry.delay_after(*attempts))
            .await
    }

    /// Reads the next batch after `follower`'s position, retrying a failed read.
    pub async fn read_batch<S: EventStore>(
        &self,
        follower: &mut LogFollower<S>,
    ) -> Result<Vec<RecordedEvent>, Halt> {
        let mut attempts = 0;
        loop {
            match follower.poll_batch().await {
                Ok(batch) => return Ok(batch),
                Err(error) => {
                    self.store_failed(FailureKind::ReadLog, None, &mut attempts, error)
                        .await?;
                }
            }
        }
    }

    /// Applies `policy` to `failure` of an event, counting its attempts in `failing`: waits and
    /// returns `Ok(None)` when the event is to be tried again, returns `Ok(Some(failure))` when
    /// it is to be skipped (recorded as such), and stops otherwise.
    pub async fn event_failed(
        &self,
        policy: ErrorPolicy,
        failing: &mut FailingEvent,
        mut failure: ProjectionFailure,
    ) -> Result<Option<ProjectionFailure>, Halt> {
        failure.attempts = failing.count(&failure);
        match policy {
            ErrorPolicy::Skip => Ok(Some(failure)),
            ErrorPolicy::Retry { retry, exhausted } => {
                if failure.attempts < retry.max_attempts.max(1) {
                    let delay = retry.delay_after(failure.attempts);
                    self.pause(failure, delay).await?;
                    Ok(None)
                } else if exhausted == RetriesExhausted::Skip {
                    Ok(Some(failure))
                } else {
                    Err(Halt::Failed(failure))
                }
            }
            ErrorPolicy::Stop => Err(Halt::Failed(failure)),
        }
    }

    /// Records in the status how the runner ended, and returns the failure it stopped at.
    pub fn halted(&self, halt: &Halt) -> Option<ProjectionFailure> {
        let failure = match halt {
            Halt::ShutDown => None,
            Halt::Failed(failure) => Some(failure.clone()),
        };
        self.status.send_modify(|status| match &failure {
            None => status.state = ProjectionState::ShutDown,
            Some(failure) => {
                status.state = ProjectionState::Failed;
                status.last_error = Some(failure.clone());
            }
        });
        failure
    }
}

/// The event that failed last and how many attempts it has had: a failure of another event
/// starts the count again.
#[derive(Debug, Default)]
pub struct FailingEvent {
    last: Option<(Position, u32)>,
}

impl FailingEvent {
    /// Counts one more attempt at `failure`'s event and returns how many it has had.
    pub fn count(&mut self, failure: &ProjectionFailure) -> u32 {
        let position = failure.event_position();
        let attempts = match self.last {
            Some((last, attempts)) if Some(last) == position => attempts + 1,
            _ => 1,
        };
        self.last = position.map(|position| (position, attempts));
        attempts
    }
}

/// Which of two futures finished first.
pub(crate) enum Either<A, B> {
    First(A),
    Second(B),
}

/// Runs `first` and `second` together and returns the output of whichever finishes first,
/// preferring `first` when both are ready; the other is dropped. (`tokio::select!` without the
/// `macros` feature.)
pub(crate) async fn first_of<A: Future, B: Future>(
    first: A,
    second: B,
) -> Either<A::Output, B::Output> {
    let mut first = pin!(first);
    let mut second = pin!(second);
    poll_fn(|context| {
        if let Poll::Ready(output) = first.as_mut().poll(context) {
            return Poll::Ready(Either::First(output));
        }
        second.as_mut().poll(context).map(Either::Second)
    })
    .await
}
