//! What a projection does when an event cannot be applied, and the record of what went wrong.

use std::fmt;
use std::sync::Arc;

use crate::event::RecordedEvent;
use crate::retry::RetryPolicy;

/// What a projection runner does with an event it cannot decode or apply.
///
/// A decode error (an unknown event type in a stream the projection reads, a payload that does
/// not fit), an error returned by [`Projection::apply`](super::Projection::apply) and a panic
/// in it all go through the same policy. Whatever the policy, the failure shows in the
/// [status](super::ProjectionStatus): an event is never dropped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Stop the projection at the failing event: the checkpoint stays right before it, the
    /// status says [`Failed`](super::ProjectionState::Failed) with the failure. The default:
    /// a read model that silently misses events is worse than one that visibly stops.
    #[default]
    Stop,
    /// Record the event and its error in the status's skipped list, and go on after it.
    Skip,
    /// Try the event again after a jittered, growing delay, up to `retry.max_attempts` attempts
    /// in all; then do what `exhausted` says.
    Retry {
        /// Attempts and delays.
        retry: RetryPolicy,
        /// What to do once the attempts are used up.
        exhausted: RetriesExhausted,
    },
}

impl ErrorPolicy {
    /// Retries with `retry`, then stops.
    pub fn retry_then_stop(retry: RetryPolicy) -> Self {
        ErrorPolicy::Retry {
            retry,
            exhausted: RetriesExhausted::Stop,
        }
    }

    /// Retries with `retry`, then skips the event.
    pub fn retry_then_skip(retry: RetryPolicy) -> Self {
        ErrorPolicy::Retry {
            retry,
            exhausted: RetriesExhausted::Skip,
        }
    }
}

/// What a [`ErrorPolicy::Retry`] does once its attempts are used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetriesExhausted {
    /// Stop, as [`ErrorPolicy::Stop`].
    Stop,
    /// Skip, as [`ErrorPolicy::Skip`].
    Skip,
}

/// Which step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The stored event could not be decoded into the projection's events.
    Decode,
    /// [`Projection::apply`](super::Projection::apply) returned an error.
    Apply,
    /// [`Projection::apply`](super::Projection::apply) panicked.
    Panic,
    /// Reading the global log failed.
    ReadLog,
    /// Loading or committing the checkpoint and the read model failed.
    Commit,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Decode => "decoding the event failed",
            FailureKind::Apply => "applying the event failed",
            FailureKind::Panic => "applying the event panicked",
            FailureKind::ReadLog => "reading the global log failed",
            FailureKind::Commit => "committing to the projection store failed",
        })
    }
}

/// One failure of a projection: which step, on which event, how many attempts, and the error.
#[derive(Debug, Clone)]
pub struct ProjectionFailure {
    /// Which step failed.
    pub kind: FailureKind,
    /// The event it failed on; `None` when reading the log or the store failed.
    pub event: Option<Arc<RecordedEvent>>,
    /// How many times it was attempted.
    pub attempts: u32,
    /// The error: a [`StoreError`](crate::StoreError) for decoding, the projection's own
    /// error for `apply`, the panic message for a panic.
    pub error: Arc<dyn std::error::Error + Send + Sync>,
}

impl ProjectionFailure {
    /// The global position of the event it failed on, if any.
    pub fn event_position(&self) -> Option<crate::event::Position> {
        self.event.as_ref().map(|event| event.position)
    }
}

impl fmt::Display for ProjectionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(event) = &self.event {
            write!(
                f,
                " on `{}` at version {} of stream `{}` (position {})",
                event.event_type, event.version, event.stream, event.position
            )?;
        }
        write!(f, " after {} attempt(s): {}", self.attempts, self.error)
    }
}

/// The message of a panic caught in a projection's `apply`, recorded as its
/// [`ProjectionFailure::error`] (kind [`FailureKind::Panic`]).
#[derive(Debug, thiserror::Error)]
#[error("panicked: {0}")]
pub struct Panicked(pub String);

impl Panicked {
    /// The message carried by a panic's payload (a `&str` or a `String`).
    pub fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|message| (*message).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Panicked(message)
    }
}
