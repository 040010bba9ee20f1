//! What a command tells the service: its `command.handle` span, the events in it, and the
//! command metrics (see [`telemetry`](crate::telemetry) for the names).
//!
//! With no subscriber and no recorder installed, the span is disabled (nothing is formatted) and
//! every metric handle is a no-op.

use std::time::Instant;

use metrics::{Counter, Histogram, IntoF64};
use tracing::field::{Empty, display};
use tracing::{Level, Span};

use super::{CommandMetadata, ExecuteError, ExecuteOutcome};
use crate::aggregate::CommandHandler;
use crate::event::{StreamId, Version};
use crate::telemetry::{self, outcome};

/// The target of the command's span and events: `RUST_LOG=cqrs_core::repository=debug` shows
/// its retries.
const TARGET: &str = "cqrs_core::repository";

/// One repository's metric handles, taken from the recorder installed when it is built (labels
/// are the aggregate's name and the outcome). Taken once, a handle costs a branch per command
/// when no recorder is installed.
pub(super) struct CommandMetrics {
    /// By outcome, in the order of [`OUTCOMES`].
    durations: [Histogram; OUTCOMES.len()],
    retried: Counter,
    exhausted: Counter,
    appended: Counter,
}

const OUTCOMES: [&str; 5] = [
    outcome::OK,
    outcome::DEDUPLICATED,
    outcome::DOMAIN_ERROR,
    outcome::CONFLICT,
    outcome::ERROR,
];

impl CommandMetrics {
    pub(super) fn new(aggregate: &'static str) -> Self {
        let duration = |outcome: &'static str| {
            metrics::histogram!(
                telemetry::COMMAND_DURATION,
                "aggregate" => aggregate,
                "outcome" => outcome
            )
        };
        let conflicts = |result: &'static str| {
            metrics::counter!(
                telemetry::COMMAND_CONFLICTS,
                "aggregate" => aggregate,
                "result" => result
            )
        };
        CommandMetrics {
            durations: OUTCOMES.map(duration),
            retried: conflicts("retried"),
            exhausted: conflicts("exhausted"),
            appended: metrics::counter!(telemetry::EVENTS_APPENDED, "aggregate" => aggregate),
        }
    }
}

/// A command's duration, read from the clock only when a histogram records it: with no
/// recorder installed, finishing a command reads no clock.
struct SinceStart(Instant);

impl IntoF64 for SinceStart {
    fn into_f64(self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// The span of one command, with what is known before it runs.
pub(super) fn command_span<A: CommandHandler>(
    command: &A::Command,
    metadata: &CommandMetadata,
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "command.handle",
        cqrs.aggregate = A::NAME,
        cqrs.stream = Empty,
        cqrs.command = Empty,
        cqrs.command.id = Empty,
        cqrs.attempts = Empty,
        cqrs.outcome = Empty,
        cqrs.version.before = Empty,
        cqrs.version.after = Empty,
        cqrs.position = Empty,
        otel.status_code = Empty,
    );
    if !span.is_disabled() {
        span.record("cqrs.command", A::command_name(command));
        if let Some(id) = &metadata.command_id {
            span.record("cqrs.command.id", display(id));
        }
    }
    span
}

/// The stream, once the aggregate id has made one.
#[inline]
pub(super) fn stream(span: &Span, stream: &StreamId) {
    span.record("cqrs.stream", display(stream));
}

/// The version an attempt decides on (the last attempt's stays on the span).
#[inline]
pub(super) fn deciding(span: &Span, version: Version) {
    span.record("cqrs.version.before", version.0);
}

/// A conflict the command decides again after.
pub(super) fn retrying(
    metrics: &CommandMetrics,
    attempts: u32,
    expected: Version,
    actual: Version,
) {
    tracing::event!(
        target: TARGET,
        Level::DEBUG,
        cqrs.attempts = attempts,
        cqrs.expected = expected.0,
        cqrs.actual = actual.0,
        "conflict: deciding again on the fresh state"
    );
    metrics.retried.increment(1);
}

/// Records how the command ended: the span's last fields, one event, and the metrics.
pub(super) fn finished<E, Error: std::fmt::Display>(
    metrics: &CommandMetrics,
    span: &Span,
    started: Instant,
    attempts: u32,
    result: &Result<ExecuteOutcome<E>, ExecuteError<Error>>,
) {
    let index = match result {
        Ok(outcome) if outcome.deduplicated => 1,
        Ok(_) => 0,
        Err(ExecuteError::Domain(_)) => 2,
        Err(ExecuteError::Conflict { .. }) => 3,
        Err(_) => 4,
    };
    let name = OUTCOMES[index];
    metrics.durations[index].record(SinceStart(started));
    match result {
        Ok(outcome) if !outcome.deduplicated && outcome.position.is_some() => {
            metrics.appended.increment(outcome.events.len() as u64);
        }
        Err(ExecuteError::Conflict { .. }) => metrics.exhausted.increment(1),
        _ => {}
    }
    // With the span off, only a failure's WARN line can still be wanted.
    let failed = index >= 3;
    if span.is_disabled() && !(failed && tracing::level_enabled!(Level::WARN)) {
        return;
    }
    // The line first, then the span's last fields: a formatter that prints the span's fields
    // beside the event's then shows each once.
    match result {
        Ok(outcome) => tracing::event!(
            target: TARGET,
            parent: span,
            Level::INFO,
            cqrs.attempts = attempts,
            cqrs.outcome = name,
            cqrs.version.after = outcome.version.0,
            cqrs.events = outcome.events.len(),
            "command handled"
        ),
        Err(ExecuteError::Domain(error)) => tracing::event!(
            target: TARGET,
            parent: span,
            Level::INFO,
            cqrs.attempts = attempts,
            cqrs.outcome = name,
            error = %error,
            "command refused"
        ),
        Err(error) => tracing::event!(
            target: TARGET,
            parent: span,
            Level::WARN,
            cqrs.attempts = attempts,
            cqrs.outcome = name,
            error = %error,
            "command failed"
        ),
    }
    span.record("cqrs.outcome", name);
    span.record("cqrs.attempts", attempts);
    match result {
        Ok(outcome) => {
            span.record("cqrs.version.after", outcome.version.0);
            if let Some(position) = outcome.position {
                span.record("cqrs.position", position.0);
            }
        }
        Err(ExecuteError::Domain(_)) => {}
        Err(_) => {
            span.record("otel.status_code", "ERROR");
        }
    }
}
