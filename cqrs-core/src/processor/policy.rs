//! What a processor does with an event it cannot handle, and how patiently it waits for its
//! store.

use std::time::Duration;

use crate::retry::RetryPolicy;

/// What a processor (projection or saga) does with an event whose handling fails: it could not
/// be decoded (payload, headers, an unknown type in a stream it reads), the handler returned an
/// error or panicked, or a command it sent failed for a reason other than a domain refusal.
///
/// A failure of the store (connection lost, server restarting, pool exhausted) is never the
/// event's failure and never goes through the policy: the processor reconnects by itself (see
/// [`ProcessorState::Reconnecting`](super::ProcessorState::Reconnecting)). Whatever the policy,
/// a failing event is never passed over without a record: it shows in the status, and a skipped
/// one is a [dead letter](super::DeadLetter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Stop at the event: the checkpoint stays right before it and the processor shows
    /// [`Failed`](super::ProcessorState::Failed) until it is
    /// [resumed](super::ProcessorHandle::resume) (which tries the event again) or rebuilt.
    Stop,
    /// Park the event as a dead letter, in the same commit that moves the checkpoint past it,
    /// and go on.
    Skip,
    /// Try the event again after a jittered, growing delay, up to `policy.max_attempts`
    /// attempts in all; then do what `then` says.
    Retry {
        /// Attempts and delays (`max_attempts`, `base_delay`, `max_delay`; the others are not
        /// used here).
        policy: RetryPolicy,
        /// What to do once the attempts are used up.
        then: AfterRetries,
    },
}

impl FailurePolicy {
    /// Retries `attempts` times in all, from `base_delay` doubling up to 30 s, then stops.
    pub const fn retry(attempts: u32, base_delay: Duration) -> Self {
        FailurePolicy::Retry {
            policy: RetryPolicy {
                max_attempts: attempts,
                base_delay,
                max_delay: Duration::from_secs(30),
                deadline: None,
                turn_after: None,
            },
            then: AfterRetries::Stop,
        }
    }

    /// The same retries, then parks the event as a dead letter instead of stopping. On `Stop` or
    /// `Skip`, `Skip`.
    #[must_use]
    pub const fn then_skip(self) -> Self {
        match self {
            FailurePolicy::Retry { policy, .. } => FailurePolicy::Retry {
                policy,
                then: AfterRetries::Skip,
            },
            FailurePolicy::Stop | FailurePolicy::Skip => FailurePolicy::Skip,
        }
    }

    /// What to do after the `attempts`-th failed attempt at one event.
    pub(crate) fn after(&self, attempts: u32) -> Verdict {
        match self {
            FailurePolicy::Stop => Verdict::Stop,
            FailurePolicy::Skip => Verdict::Skip,
            FailurePolicy::Retry { policy, then } => {
                if attempts < policy.max_attempts.max(1) {
                    Verdict::Retry(policy.delay_after(attempts))
                } else {
                    match then {
                        AfterRetries::Stop => Verdict::Stop,
                        AfterRetries::Skip => Verdict::Skip,
                    }
                }
            }
        }
    }
}

impl Default for FailurePolicy {
    /// Four attempts in all, from 100 ms, then stop: a failure that lasts needs a person.
    fn default() -> Self {
        FailurePolicy::retry(4, Duration::from_millis(100))
    }
}

/// What a [`FailurePolicy::Retry`] does once its attempts are used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRetries {
    /// Stop, as [`FailurePolicy::Stop`].
    Stop,
    /// Park the event, as [`FailurePolicy::Skip`].
    Skip,
}

/// What the policy says after one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Retry(Duration),
    Skip,
    Stop,
}

/// How a processor waits for its store to come back: retries without limit, the delay doubling
/// from `base_delay` up to `max_delay`, each one jittered (between zero and the ceiling), so
/// that many processors do not all knock at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// The ceiling of the first delay.
    pub base_delay: Duration,
    /// The ceiling of every later delay.
    pub max_delay: Duration,
}

impl Reconnect {
    /// The delay before attempt `attempt + 1`, jittered.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: self.base_delay,
            max_delay: self.max_delay,
            deadline: None,
            turn_after: None,
        }
        .delay_after(attempt)
    }
}

impl Default for Reconnect {
    /// 50 ms doubling up to 2 s: a restarted server is found within about 2 s of its return.
    fn default() -> Self {
        Reconnect {
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_then_does_what_it_says() {
        let policy = FailurePolicy::retry(3, Duration::from_millis(10));
        assert!(matches!(policy.after(1), Verdict::Retry(_)));
        assert!(matches!(policy.after(2), Verdict::Retry(_)));
        assert_eq!(policy.after(3), Verdict::Stop);
        assert_eq!(policy.then_skip().after(3), Verdict::Skip);
        assert_eq!(FailurePolicy::Skip.after(1), Verdict::Skip);
        assert_eq!(FailurePolicy::Stop.after(1), Verdict::Stop);
    }

    #[test]
    fn reconnect_delays_stay_under_the_ceiling() {
        let reconnect = Reconnect::default();
        for attempt in 1..50 {
            assert!(reconnect.delay_after(attempt) <= reconnect.max_delay);
        }
    }
}
