//! What a processor runner tells a running service: its batch span, its events (a parked
//! event, a retry, the store failing and coming back, state and leadership changes, a stop) and
//! its metrics, under the names of [`crate::telemetry`].
//!
//! The runner takes its metric handles once, when it starts ([`Instruments::new`]): a handle
//! taken before a recorder is installed records nothing, ever. With no subscriber and no
//! recorder, a batch costs a disabled span (one level check) and a few no-op handle calls;
//! nothing here formats or allocates unless something listens. Fields carry ids, positions,
//! counts and error texts, never payloads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use metrics::{Counter, Gauge};
use tracing::field::Empty;
use tracing::{Level, Span};

use super::failure::{DeadLetter, Failure};
use super::status::ProcessorStatus;
use crate::event::Position;
use crate::telemetry::{
    PROCESSOR_BATCH_SPAN, PROCESSOR_DEAD_LETTERS, PROCESSOR_EVENTS, PROCESSOR_LAG_EVENTS,
    PROCESSOR_LAG_SECONDS, PROCESSOR_RECONNECTS, PROCESSOR_STALLED_SECONDS,
};

/// The target of the processors' spans and events: `RUST_LOG=cqrs_core::processor=info`.
const TARGET: &str = "cqrs_core::processor";

/// One event about `failure` at `level`, with every field that locates it (position, stream,
/// version, type, or the saga deadline's subject) and says what failed; `extra` fields go
/// before the attempts.
macro_rules! failure_event {
    ($level:expr, $processor:expr, $failure:expr, $message:expr $(, $($extra:tt)+)?) => {{
        let failure: &Failure = $failure;
        let event = failure.event.as_ref();
        tracing::event!(
            target: TARGET,
            $level,
            cqrs.processor = $processor,
            cqrs.position = event.map(|event| event.position.0),
            cqrs.stream = event.map(|event| event.stream.as_str()),
            cqrs.version = event
                .and_then(|event| event.version)
                .map(|version| version.0),
            cqrs.event_type = event.and_then(|event| event.event_type.as_deref()),
            cqrs.subject = failure.subject.as_deref(),
            $($($extra)+)?
            cqrs.attempts = failure.attempts,
            cqrs.failure = failure.kind.as_str(),
            error = failure.error.as_str(),
            "{}",
            $message,
        )
    }};
}

/// The messages of the events processors emit: what a log filter or an alert matches on.
pub(crate) mod message {
    /// WARN: an event (or a saga deadline) was parked as a dead letter.
    pub(crate) const PARKED: &str = "processor parked an event as a dead letter";
    /// WARN: an event failed and the failure policy tries it again.
    pub(crate) const RETRYING: &str = "processor will retry a failing event";
    /// ERROR: the failure policy stopped the processor at a failure.
    pub(crate) const STOPPED: &str = "processor stopped by its failure policy";
    /// WARN: the store failed; the processor reconnects. Once per outage: the attempts after
    /// the first are DEBUG events under [`STILL_RECONNECTING`].
    pub(crate) const RECONNECTING: &str = "processor store failed, reconnecting";
    /// DEBUG: another attempt of an outage failed.
    pub(crate) const STILL_RECONNECTING: &str = "processor store still failing";
    /// INFO: the store answers again after an outage.
    pub(crate) const STORE_BACK: &str = "processor store is back";
    /// INFO: the processor started catching up, went live, paused or started a rebuild.
    pub(crate) const STATE: &str = "processor state changed";
    /// WARN: an operator moved the checkpoint forward past events that were not handled.
    pub(crate) const SKIPPED: &str = "processor checkpoint moved forward, events skipped";
    /// INFO: the processor started or stopped leading.
    pub(crate) const LEADERSHIP: &str = "processor leadership changed";
}

/// The metric handles of one processor, labelled with its name, and the events it emits.
pub(super) struct Instruments {
    processor: &'static str,
    lag_events: Gauge,
    lag_seconds: Gauge,
    stalled_seconds: Gauge,
    events: Counter,
    dead_letters: Counter,
    reconnects: Counter,
    /// Set when a live processor went back to catching up for new events: that round trip is
    /// what a live processor does with every batch, so neither way is announced.
    quiet_catch_up: AtomicBool,
}

/// The gauge values of a status, as of one instant.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gauges {
    lag_events: f64,
    lag_seconds: f64,
    stalled_seconds: f64,
}

impl Gauges {
    /// The gauges of `status` at `now`: the lag in seconds counts from the oldest unhandled
    /// event to `now`, not to the status's last refresh.
    pub(super) fn of(status: &ProcessorStatus, now: SystemTime) -> Self {
        let lag_seconds = match status.oldest_unhandled {
            Some(oldest) if status.lag > 0 => now
                .duration_since(oldest)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
            _ if status.lag > 0 => status.lag_seconds,
            _ => 0.0,
        };
        Gauges {
            lag_events: status.lag as f64,
            lag_seconds,
            stalled_seconds: status.stalled_for(now).as_secs_f64(),
        }
    }
}

impl Instruments {
    /// Takes the metric handles of `processor` from the recorder installed now.
    pub(super) fn new(processor: &'static str) -> Self {
        Instruments {
            processor,
            lag_events: metrics::gauge!(PROCESSOR_LAG_EVENTS, "processor" => processor),
            lag_seconds: metrics::gauge!(PROCESSOR_LAG_SECONDS, "processor" => processor),
            stalled_seconds: metrics::gauge!(PROCESSOR_STALLED_SECONDS, "processor" => processor),
            events: metrics::counter!(PROCESSOR_EVENTS, "processor" => processor),
            dead_letters: metrics::counter!(PROCESSOR_DEAD_LETTERS, "processor" => processor),
            reconnects: metrics::counter!(PROCESSOR_RECONNECTS, "processor" => processor),
            quiet_catch_up: AtomicBool::new(false),
        }
    }

    /// Sets the lag and stall gauges.
    pub(super) fn set_gauges(&self, gauges: Gauges) {
        self.lag_events.set(gauges.lag_events);
        self.lag_seconds.set(gauges.lag_seconds);
        self.stalled_seconds.set(gauges.stalled_seconds);
    }

    /// The span of one batch, from `before`; the runner enters it around the batch's handling
    /// and commit, then [records](Instruments::committed) what it committed.
    pub(super) fn batch_span(&self, before: Position) -> Span {
        tracing::info_span!(
            target: TARGET,
            PROCESSOR_BATCH_SPAN,
            cqrs.processor = self.processor,
            cqrs.checkpoint.before = before.0,
            cqrs.checkpoint.after = Empty,
            cqrs.events = Empty,
            cqrs.dead_letters = Empty,
        )
    }

    /// A batch committed up to `after`, having handled `events` and recorded `letters`: the
    /// span's fields, the counters, and a WARN event per letter (inside the span).
    pub(super) fn committed(
        &self,
        span: &Span,
        after: Position,
        events: usize,
        letters: &[DeadLetter],
    ) {
        span.record("cqrs.checkpoint.after", after.0);
        span.record("cqrs.events", events as u64);
        span.record("cqrs.dead_letters", letters.len() as u64);
        self.events.increment(events as u64);
        if !letters.is_empty() {
            self.dead_letters.increment(letters.len() as u64);
            span.in_scope(|| {
                for letter in letters {
                    parked(self.processor, letter);
                }
            });
        }
    }

    /// An event failed and will be tried again.
    pub(super) fn retrying(&self, failure: &Failure) {
        failure_event!(Level::WARN, self.processor, failure, message::RETRYING);
    }

    /// The failure policy stopped the processor at `failure`.
    pub(super) fn stopped(&self, failure: &Failure) {
        failure_event!(Level::ERROR, self.processor, failure, message::STOPPED);
    }

    /// An operator moved the checkpoint from `from` to `to` without handling the events between.
    pub(super) fn skipped(&self, from: Position, to: Position) {
        tracing::event!(
            target: TARGET,
            Level::WARN,
            cqrs.processor = self.processor,
            cqrs.from = from.0,
            cqrs.checkpoint = to.0,
            "{}",
            message::SKIPPED,
        );
    }

    /// An attempt at the store failed with `error`; `first` when it starts an outage (the
    /// processor was not reconnecting), which is what the reconnect counter counts and what is
    /// said at WARN: the backoff caps at a few seconds, so one WARN per attempt would fill a log
    /// during a long outage.
    pub(super) fn store_failed(&self, first: bool, attempts: u32, error: &str) {
        if first {
            self.reconnects.increment(1);
            tracing::event!(
                target: TARGET,
                Level::WARN,
                cqrs.processor = self.processor,
                cqrs.attempts = attempts,
                error,
                "{}",
                message::RECONNECTING,
            );
        } else {
            tracing::event!(
                target: TARGET,
                Level::DEBUG,
                cqrs.processor = self.processor,
                cqrs.attempts = attempts,
                error,
                "{}",
                message::STILL_RECONNECTING,
            );
        }
    }

    /// The state went from `before` to `after` (their [`as_str`](super::ProcessorState::as_str)
    /// names): says the store is back after an outage, and announces catching up, live, paused
    /// and rebuilding. The others have their own events (retrying, reconnecting, stopped by the
    /// policy) or say nothing an operator acts on (starting, standby, stopped on shutdown).
    pub(super) fn state_changed(
        &self,
        before: &'static str,
        after: &'static str,
        checkpoint: Position,
        lag: u64,
    ) {
        if before == RECONNECTING && after != STOPPED {
            tracing::event!(
                target: TARGET,
                Level::INFO,
                cqrs.processor = self.processor,
                cqrs.checkpoint = checkpoint.0,
                "{}",
                message::STORE_BACK,
            );
        }
        let quiet = match (before, after) {
            (LIVE, CATCHING_UP) => {
                self.quiet_catch_up.store(true, Ordering::Relaxed);
                true
            }
            (CATCHING_UP, LIVE) => self.quiet_catch_up.swap(false, Ordering::Relaxed),
            _ => {
                self.quiet_catch_up.store(false, Ordering::Relaxed);
                false
            }
        };
        if !quiet && matches!(after, CATCHING_UP | LIVE | PAUSED | REBUILDING) {
            tracing::event!(
                target: TARGET,
                Level::INFO,
                cqrs.processor = self.processor,
                cqrs.state = after,
                cqrs.checkpoint = checkpoint.0,
                cqrs.lag = lag,
                "{}",
                message::STATE,
            );
        }
    }

    /// This runner started (`true`) or stopped leading its processor.
    pub(super) fn leadership(&self, leader: bool) {
        tracing::event!(
            target: TARGET,
            Level::INFO,
            cqrs.processor = self.processor,
            cqrs.leader = leader,
            "{}",
            message::LEADERSHIP,
        );
    }
}

// The `as_str` names of the states `state_changed` tells apart.
const CATCHING_UP: &str = "catching_up";
const LIVE: &str = "live";
const PAUSED: &str = "paused";
const REBUILDING: &str = "rebuilding";
const RECONNECTING: &str = "reconnecting";
const STOPPED: &str = "stopped";

/// The WARN event of a dead letter `processor` parked. A free function: a saga parks its failing
/// deadlines itself, outside the runner.
pub(crate) fn parked(processor: &'static str, letter: &DeadLetter) {
    failure_event!(
        Level::WARN,
        processor,
        &letter.failure,
        message::PARKED,
        cqrs.dead_letter = letter.id.as_str(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::ProcessorState;

    #[test]
    fn the_states_told_apart_are_named_as_the_states_say() {
        assert_eq!(CATCHING_UP, ProcessorState::CatchingUp.as_str());
        assert_eq!(LIVE, ProcessorState::Live.as_str());
        assert_eq!(PAUSED, ProcessorState::Paused.as_str());
        assert_eq!(REBUILDING, ProcessorState::Rebuilding.as_str());
        assert_eq!(STOPPED, ProcessorState::Stopped.as_str());
        let reconnecting = ProcessorState::Reconnecting {
            since: SystemTime::UNIX_EPOCH,
            attempts: 1,
            last_error: String::new(),
        };
        assert_eq!(RECONNECTING, reconnecting.as_str());
    }
}
