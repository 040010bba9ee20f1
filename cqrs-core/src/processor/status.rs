//! What a running processor tells about itself, and waiting for it to reach a position.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use super::failure::Failure;
use crate::event::Position;

/// What a processor is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProcessorState {
    /// Loading its checkpoint, or waiting to know whether it leads.
    Starting,
    /// Another node holds the processor's leader lock and runs it; this one stands by, keeps its
    /// checkpoint in step with the stored one, and takes over when the leader goes.
    Standby,
    /// Handling events that were in the log before it caught up.
    CatchingUp,
    /// Caught up with the head of the log, waiting for new events.
    Live,
    /// Waiting to try a failing event again, under the failure policy.
    Retrying {
        /// The attempts made at the event so far.
        attempts: u32,
    },
    /// Its store failed (connection lost, server restarting, pool exhausted); it keeps trying,
    /// with capped, jittered backoff, and resumes from its checkpoint once the store is back.
    Reconnecting {
        /// When the store first failed.
        since: SystemTime,
        /// The attempts that failed since then.
        attempts: u32,
        /// What the store said last.
        last_error: String,
    },
    /// Paused by its handle; [`resume`](super::ProcessorHandle::resume) goes on.
    Paused,
    /// Replaying the log from the start into an emptied read model.
    Rebuilding,
    /// Stopped at an event by the failure policy ([`ProcessorStatus::last_error`] says which
    /// and why); [`resume`](super::ProcessorHandle::resume) tries it again.
    Failed,
    /// Shut down (or its handle dropped).
    Stopped,
}

impl ProcessorState {
    /// Its name, as serialized (`catching_up`, `reconnecting`, ...): the value of the
    /// `cqrs.state` field of the processor's events.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProcessorState::Starting => "starting",
            ProcessorState::Standby => "standby",
            ProcessorState::CatchingUp => "catching_up",
            ProcessorState::Live => "live",
            ProcessorState::Retrying { .. } => "retrying",
            ProcessorState::Reconnecting { .. } => "reconnecting",
            ProcessorState::Paused => "paused",
            ProcessorState::Rebuilding => "rebuilding",
            ProcessorState::Failed => "failed",
            ProcessorState::Stopped => "stopped",
        }
    }
}

/// A snapshot of a processor's progress and health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessorStatus {
    /// The processor's name.
    pub name: &'static str,
    /// What it is doing.
    pub state: ProcessorState,
    /// Whether this runner leads (runs) the processor; `false` on a standby node.
    pub leader: bool,
    /// Its checkpoint: the position of the last event whose effects it committed.
    pub checkpoint: Position,
    /// The head of the global log, as last seen.
    pub head: Position,
    /// How many positions it is behind the head.
    pub lag: u64,
    /// How long the oldest event it has not handled yet has been waiting, in seconds (0 when
    /// caught up).
    pub lag_seconds: f64,
    /// When the oldest event it has not handled yet was recorded, when it has read one.
    pub oldest_unhandled: Option<SystemTime>,
    /// When its checkpoint last moved (or it started).
    pub checkpoint_moved: SystemTime,
    /// The most recent failure, including ones that a retry later got past.
    pub last_error: Option<Failure>,
    /// How many dead letters it has parked and not yet retried or discarded.
    pub dead_letters: u64,
}

impl ProcessorStatus {
    /// The status of a processor that is starting.
    pub fn new(name: &'static str) -> Self {
        ProcessorStatus {
            name,
            state: ProcessorState::Starting,
            leader: false,
            checkpoint: Position::START,
            head: Position::START,
            lag: 0,
            lag_seconds: 0.0,
            oldest_unhandled: None,
            checkpoint_moved: SystemTime::now(),
            last_error: None,
            dead_letters: 0,
        }
    }

    /// Whether it has stopped for good (shut down): its checkpoint will not move again.
    pub fn is_stopped(&self) -> bool {
        self.state == ProcessorState::Stopped
    }

    /// Whether it is stopped at a failing event, waiting for a person.
    pub fn is_failed(&self) -> bool {
        self.state == ProcessorState::Failed
    }

    /// How long its checkpoint has stood still while events wait for it, as of `now`; zero
    /// when it is caught up.
    pub fn stalled_for(&self, now: SystemTime) -> Duration {
        if self.lag == 0 {
            return Duration::ZERO;
        }
        now.duration_since(self.checkpoint_moved)
            .unwrap_or(Duration::ZERO)
    }

    /// Sets the lag figures from the checkpoint, the head and the oldest unhandled event, as of
    /// `now`.
    pub(crate) fn refresh(&mut self, now: SystemTime) {
        self.head = self.head.max(self.checkpoint);
        self.lag = self.head.0 - self.checkpoint.0;
        if self.lag == 0 {
            self.oldest_unhandled = None;
        }
        self.lag_seconds = match self.oldest_unhandled {
            Some(oldest) if self.lag > 0 => now
                .duration_since(oldest)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
            _ => 0.0,
        };
    }

    /// Moves the checkpoint to `position` (and the head with it, if behind). The oldest
    /// unhandled event is then unknown until the runner reads the next one.
    pub(crate) fn moved_to(&mut self, position: Position) {
        if position != self.checkpoint {
            self.checkpoint = position;
            self.checkpoint_moved = SystemTime::now();
            self.oldest_unhandled = None;
        }
        self.refresh(SystemTime::now());
    }
}

/// Why [`ProcessorHandle::wait_for`](super::ProcessorHandle::wait_for) returned without the
/// processor reaching the position.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// It did not reach the position in time.
    #[error(
        "processor `{processor}` did not reach position {target} within {timeout:?}; it is at {reached} ({state:?})"
    )]
    Timeout {
        /// The processor's name.
        processor: &'static str,
        /// The position waited for.
        target: Position,
        /// Where it was when the wait ended.
        reached: Position,
        /// What it was doing then.
        state: ProcessorState,
        /// How long it waited.
        timeout: Duration,
    },
    /// It stopped (failed at an event, or shut down) before it reached the position.
    #[error("processor `{processor}` stopped at position {reached}, before {target}{}", .error.as_ref().map(|error| format!(": {error}")).unwrap_or_default())]
    Stopped {
        /// The processor's name.
        processor: &'static str,
        /// The position waited for.
        target: Position,
        /// Where it stopped.
        reached: Position,
        /// The failure that stopped it, if it failed.
        error: Option<Failure>,
    },
}

/// Waits until the status published on `status` reaches `position` (read your own writes), at
/// most `timeout`; `None` (a command that wrote nothing) returns the current checkpoint at once.
pub(crate) async fn wait_for_position(
    status: &watch::Receiver<ProcessorStatus>,
    position: Option<Position>,
    timeout: Duration,
) -> Result<Position, WaitError> {
    let mut status = status.clone();
    let Some(target) = position else {
        return Ok(status.borrow().checkpoint);
    };
    let reached = tokio::time::timeout(
        timeout,
        status.wait_for(|status| {
            status.checkpoint >= target || status.is_stopped() || status.is_failed()
        }),
    )
    .await
    .map(|waited| waited.is_ok());
    let current = status.borrow().clone();
    match reached {
        Ok(true) if current.checkpoint >= target => Ok(current.checkpoint),
        Err(_) => Err(WaitError::Timeout {
            processor: current.name,
            target,
            reached: current.checkpoint,
            state: current.state,
            timeout,
        }),
        // Stopped or failed, or the runner's task ended (the sender went away with it).
        Ok(_) => Err(WaitError::Stopped {
            processor: current.name,
            target,
            reached: current.checkpoint,
            error: current.last_error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_counted_in_events_and_in_the_age_of_the_oldest_unhandled_one() {
        let now = SystemTime::now();
        let mut status = ProcessorStatus::new("lagging");
        status.head = Position(10);
        status.moved_to(Position(4));
        status.oldest_unhandled = Some(now - Duration::from_secs(12));
        status.refresh(now);
        assert_eq!(status.lag, 6);
        assert!(
            (status.lag_seconds - 12.0).abs() < 0.001,
            "{}",
            status.lag_seconds
        );
        // Moving on forgets the oldest event: the next read says which one is oldest now.
        status.moved_to(Position(10));
        assert_eq!((status.lag, status.lag_seconds), (0, 0.0));
        assert_eq!(status.oldest_unhandled, None);
        assert_eq!(
            status.stalled_for(now + Duration::from_secs(60)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_status_serializes_with_its_state_tagged() {
        let mut status = ProcessorStatus::new("json");
        status.state = ProcessorState::Reconnecting {
            since: SystemTime::UNIX_EPOCH,
            attempts: 3,
            last_error: "connection refused".to_owned(),
        };
        let json = serde_json::to_value(&status).expect("serializes");
        assert_eq!(json["state"]["state"], "reconnecting");
        assert_eq!(json["state"]["attempts"], 3);
        assert_eq!(json["name"], "json");
    }

    #[test]
    fn a_state_is_named_as_it_serializes() {
        let states = [
            ProcessorState::Starting,
            ProcessorState::Standby,
            ProcessorState::CatchingUp,
            ProcessorState::Live,
            ProcessorState::Retrying { attempts: 1 },
            ProcessorState::Reconnecting {
                since: SystemTime::UNIX_EPOCH,
                attempts: 1,
                last_error: String::new(),
            },
            ProcessorState::Paused,
            ProcessorState::Rebuilding,
            ProcessorState::Failed,
            ProcessorState::Stopped,
        ];
        for state in states {
            let json = serde_json::to_value(&state).expect("serializes");
            assert_eq!(json["state"], state.as_str());
        }
    }
}
