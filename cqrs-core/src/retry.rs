//! How the repository retries after a concurrency conflict: at once, then in turns, within a budget.

use std::time::Duration;

/// Bounds and pacing of the repository's retries after a version conflict.
///
/// What a command does when another writer changed its stream first:
///
/// 1. The first conflict is retried at once, on the state caught up with what the other writer
///    wrote: most conflicts are two writers meeting once.
/// 2. From the [`turn_after`](RetryPolicy::turn_after)th conflict on, the command waits for an
///    exclusive turn on the stream ([`EventStore::take_turn`](crate::EventStore::take_turn)):
///    while it holds the turn no other writer can append to the stream, so its next attempt
///    cannot lose. Writers queue for turns in order, so a hot stream is served fairly. On a store
///    without turns it backs off instead: the delay before retry `n` (1-based) is drawn uniformly
///    from zero to `min(max_delay, base_delay * 2^(n-1))` ("full jitter"), so writers that
///    collided spread out instead of colliding again in lockstep.
/// 3. The conflict reaches the caller only when [`max_attempts`](RetryPolicy::max_attempts)
///    decisions were made or the [`deadline`](RetryPolicy::deadline) passed.
///
/// Domain errors are never retried. The projection runners use the same type for their store
/// retries (attempts and delays; the deadline and turns are the repository's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times a command is decided and appended before the conflict is returned.
    /// At least 1 (a value of 0 behaves as 1).
    pub max_attempts: u32,
    /// The ceiling of the first backoff delay.
    pub base_delay: Duration,
    /// The largest ceiling any backoff delay is drawn under.
    pub max_delay: Duration,
    /// The caller's time budget for one command, from the call (loading included): no retry
    /// starts, and no wait for a turn goes on, past it. `None`: attempts alone bound the retries.
    pub deadline: Option<Duration>,
    /// After how many conflicts on one command the repository waits for an exclusive turn on the
    /// stream instead of backing off (`None`: never). At least 1.
    pub turn_after: Option<u32>,
}

impl RetryPolicy {
    /// No retries: the first conflict is returned to the caller.
    pub const NEVER: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        deadline: None,
        turn_after: None,
    };

    /// The delay to wait before attempt `attempt + 1`, after `attempt` attempts failed.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let ceiling = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if ceiling_nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(crate::id::next_u64() % (ceiling_nanos + 1))
    }
}

impl Default for RetryPolicy {
    /// Up to 100 attempts within 10 seconds; a turn from the second conflict on; backoff delays
    /// (on stores without turns) drawn under 1 ms doubling to at most 100 ms.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 100,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(100),
            deadline: Some(Duration::from_secs(10)),
            turn_after: Some(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_doubling_ceiling() {
        let policy = RetryPolicy::default();
        for attempt in 1..40 {
            let ceiling = (policy.base_delay * 2u32.pow(attempt.min(20) - 1)).min(policy.max_delay);
            for _ in 0..100 {
                assert!(policy.delay_after(attempt) <= ceiling);
            }
        }
    }

    #[test]
    fn delays_are_jittered() {
        let policy = RetryPolicy::default();
        let delays: std::collections::HashSet<_> = (0..50).map(|_| policy.delay_after(5)).collect();
        assert!(
            delays.len() > 40,
            "{} distinct delays out of 50",
            delays.len()
        );
    }

    #[test]
    fn never_waits_for_nothing() {
        assert_eq!(RetryPolicy::NEVER.delay_after(1), Duration::ZERO);
    }
}
