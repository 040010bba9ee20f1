//! The store's `tracing` spans (named in [`cqrs_core::telemetry`]): one DEBUG span around each
//! append and each read, with counts, versions and positions, never payloads or headers.
//!
//! With no subscriber that wants them the spans are disabled and cost a level check: the work
//! runs as a plain future, and nothing is formatted or recorded.

use std::fmt;

use cqrs_core::telemetry::{APPEND_SPAN, READ_SPAN};
use cqrs_core::{AppendReceipt, ExpectedVersion, Position, StoreError, StreamId};
use tracing::Span;
use tracing::field::Empty;

/// The value of `db.system.name` for this store.
const SYSTEM: &str = "memory";

/// The span around an append of `events` events to `stream`.
pub(crate) fn append_span(stream: &StreamId, expected: ExpectedVersion, events: usize) -> Span {
    tracing::debug_span!(
        APPEND_SPAN,
        db.system.name = SYSTEM,
        db.operation.name = "append",
        cqrs.stream = stream.as_str(),
        cqrs.expected = %Expected(expected),
        cqrs.events = events,
        cqrs.version.after = Empty,
        cqrs.position = Empty,
        cqrs.outcome = Empty,
    )
}

/// The span around a read of `stream` (`operation`: `read_stream` or `visit_stream`).
pub(crate) fn stream_read_span(operation: &'static str, stream: &StreamId, limit: usize) -> Span {
    tracing::debug_span!(
        READ_SPAN,
        db.system.name = SYSTEM,
        db.operation.name = operation,
        cqrs.stream = stream.as_str(),
        cqrs.limit = limit,
        cqrs.events = Empty,
    )
}

/// The span around a read of the global log after `from` (`operation`: `read_all` or
/// `read_log`).
pub(crate) fn log_read_span(operation: &'static str, from: Position, limit: usize) -> Span {
    tracing::debug_span!(
        READ_SPAN,
        db.system.name = SYSTEM,
        db.operation.name = operation,
        cqrs.from = from.0,
        cqrs.limit = limit,
        cqrs.events = Empty,
    )
}

/// Runs the async block `work` inside `span` (a `&Span`) and gives its value.
///
/// A disabled span adds nothing: `work` then runs inline, in the caller's own state machine, as
/// if the macro were not there (wrapping it in a future of its own cost the in-memory store's
/// appends about 200 instructions each, 3%, with no one listening). A `?` or `return` in `work`
/// leaves the method when the span is disabled and only the block when it is enabled: the
/// caller gets the same value either way as long as the code after the macro does nothing but
/// record on the span (a no-op on a disabled one).
macro_rules! in_span {
    ($span:expr, $work:block $(,)?) => {{
        let span: &::tracing::Span = $span;
        if span.is_disabled() {
            $work
        } else {
            ::tracing::Instrument::instrument(async $work, span.clone()).await
        }
    }};
}
pub(crate) use in_span;

/// Records how an append ended on its span.
pub(crate) fn record_append(span: &Span, result: &Result<AppendReceipt, StoreError>) {
    if span.is_disabled() {
        return;
    }
    if let Ok(receipt) = result {
        span.record("cqrs.version.after", receipt.version.0);
        if let Some(position) = receipt.position {
            span.record("cqrs.position", position.0);
        }
    }
    span.record("cqrs.outcome", outcome(result));
}

/// Records how many events a read returned or visited on its span.
pub(crate) fn record_read<T>(span: &Span, result: &Result<T, StoreError>, events: fn(&T) -> usize) {
    if span.is_disabled() {
        return;
    }
    if let Ok(read) = result {
        span.record("cqrs.events", events(read));
    }
}

/// The value of `cqrs.outcome` for an append's result.
fn outcome(result: &Result<AppendReceipt, StoreError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StoreError::Conflict { .. }) => "conflict",
        Err(StoreError::DuplicateCommand { .. }) => "duplicate_command",
        Err(_) => "error",
    }
}

/// An expected version as `cqrs.expected` shows it: `any`, `no_stream`, `stream_exists`,
/// `exact 3`.
struct Expected(ExpectedVersion);

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no_stream"),
            ExpectedVersion::StreamExists => f.write_str("stream_exists"),
            ExpectedVersion::Exact(version) => write!(f, "exact {}", version.0),
        }
    }
}
