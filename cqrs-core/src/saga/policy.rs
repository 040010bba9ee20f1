//! What a saga runner does when an event (or a deadline) fails: retry, skip, or stop.

use std::time::Duration;

/// What to do once the retries of a failing event are used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRetries {
    /// Record the failure (visible through [`SagaStore::failures`](crate::saga::SagaStore::failures))
    /// and move on to the next event.
    Skip,
    /// Record the failure and stop: the runner returns
    /// [`SagaError::Stopped`](crate::saga::SagaError::Stopped) and its checkpoint stays before the
    /// event, so the next run tries it again.
    Stop,
}

/// How a saga runner treats an event whose handling fails: the handler returned an error, a
/// command failed for a reason other than a domain refusal (the store was down, conflicts never
/// settled), a refusal was not handled, or the event could not be decoded.
///
/// A domain refusal the saga handles in [`Saga::on_rejected`](crate::saga::Saga::on_rejected) is
/// not a failure. A failing event is never dropped silently: with every policy it is recorded with
/// its error.
///
/// Retrying is safe: the handler runs again on the state from before the event, and the commands
/// it already dispatched carry the same command ids, so their targets do not apply them twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    /// How many times a failing event is tried again before `then`.
    pub retries: u32,
    /// The delay before the first retry; it doubles for each later one.
    pub base_delay: Duration,
    /// The longest delay between two tries.
    pub max_delay: Duration,
    /// What happens once the retries are used up.
    pub then: AfterRetries,
}

impl FailurePolicy {
    /// Stop at the first failure, without retrying.
    pub const fn stop() -> Self {
        FailurePolicy {
            retries: 0,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            then: AfterRetries::Stop,
        }
    }

    /// Record the failure and move on, without retrying.
    pub const fn skip() -> Self {
        FailurePolicy {
            then: AfterRetries::Skip,
            ..Self::stop()
        }
    }

    /// Retry up to `retries` times, waiting `base_delay` first and doubling (up to 30 s), then
    /// stop. Chain [`then_skip`](FailurePolicy::then_skip) to move on instead.
    pub const fn retry(retries: u32, base_delay: Duration) -> Self {
        FailurePolicy {
            retries,
            base_delay,
            max_delay: Duration::from_secs(30),
            then: AfterRetries::Stop,
        }
    }

    /// The same policy, skipping the event once the retries are used up.
    #[must_use]
    pub const fn then_skip(self) -> Self {
        FailurePolicy {
            then: AfterRetries::Skip,
            ..self
        }
    }

    /// The same policy, stopping once the retries are used up.
    #[must_use]
    pub const fn then_stop(self) -> Self {
        FailurePolicy {
            then: AfterRetries::Stop,
            ..self
        }
    }

    /// The delay before retry number `retry` (1-based).
    pub fn delay_before(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        self.base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay)
    }
}

impl Default for FailurePolicy {
    /// Three retries from 100 ms, then stop: a failure that persists needs a person.
    fn default() -> Self {
        Self::retry(3, Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_ceiling() {
        let policy = FailurePolicy::retry(10, Duration::from_secs(1));
        assert_eq!(policy.delay_before(1), Duration::from_secs(1));
        assert_eq!(policy.delay_before(2), Duration::from_secs(2));
        assert_eq!(policy.delay_before(3), Duration::from_secs(4));
        assert_eq!(policy.delay_before(9), Duration::from_secs(30));
    }
}
