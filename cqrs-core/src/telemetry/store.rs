//! The spans every store backend wraps its appends and reads in, so that all of them (memory,
//! PostgreSQL, and any backend written later) trace the same way: one DEBUG span per call, named
//! [`APPEND_SPAN`] or [`READ_SPAN`], with counts, versions and positions, never payloads or
//! headers. Their target is this module's path: `RUST_LOG=cqrs_core::telemetry::store=debug`
//! shows every store call, and `db.system.name` says which backend made it.
//!
//! ```
//! use cqrs_core::telemetry::store;
//! use cqrs_core::{AppendReceipt, ExpectedVersion, StoreError, StreamId};
//!
//! # async fn write() -> Result<AppendReceipt, StoreError> { unimplemented!() }
//! async fn append(stream: &StreamId, expected: ExpectedVersion, events: usize) -> Result<AppendReceipt, StoreError> {
//!     let span = store::append_span("sqlite", stream, expected, events);
//!     let result = cqrs_core::telemetry::in_span!(&span, { write().await });
//!     store::record_append(&span, &result);
//!     result
//! }
//! ```

use std::fmt;

use tracing::Span;
use tracing::field::Empty;

use super::{APPEND_BATCH_SIZE, APPEND_SPAN, PROCESSOR_STORE_SPAN, READ_SPAN};
use crate::event::{Position, StreamId};
use crate::store::{AppendReceipt, ExpectedVersion, StoreError};

/// The span around an append of `events` events to `stream`, for the backend `system` (the
/// value of `db.system.name`: OpenTelemetry's name for the database, e.g. `postgresql`).
#[inline]
pub fn append_span(
    system: &'static str,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: usize,
) -> Span {
    tracing::debug_span!(
        APPEND_SPAN,
        db.system.name = system,
        db.operation.name = "append",
        cqrs.stream = stream.as_str(),
        cqrs.expected = %Expected(expected),
        cqrs.events = events,
        cqrs.batch.appends = Empty,
        cqrs.version.after = Empty,
        cqrs.position = Empty,
        cqrs.outcome = Empty,
    )
}

/// The span around a read of `stream` (`operation`: `read_stream`, `visit_stream` or
/// `visit_stream_data`).
#[inline]
pub fn stream_read_span(
    system: &'static str,
    operation: &'static str,
    stream: &StreamId,
    limit: usize,
) -> Span {
    tracing::debug_span!(
        READ_SPAN,
        db.system.name = system,
        db.operation.name = operation,
        cqrs.stream = stream.as_str(),
        cqrs.limit = limit,
        cqrs.events = Empty,
    )
}

/// The span around a read of the global log after `from` (`operation`: `read_all` or
/// `read_log`).
#[inline]
pub fn log_read_span(
    system: &'static str,
    operation: &'static str,
    from: Position,
    limit: usize,
) -> Span {
    tracing::debug_span!(
        READ_SPAN,
        db.system.name = system,
        db.operation.name = operation,
        cqrs.from = from.0,
        cqrs.limit = limit,
        cqrs.events = Empty,
    )
}

/// The span around one call of a backend's processor store (checkpoints, dead letters, a
/// processor's commit, a saga's commit), `operation` naming it (`checkpoint`, `commit`,
/// `dead_letters`, `saga_commit`, ...).
#[inline]
pub fn processor_store_span(
    system: &'static str,
    operation: &'static str,
    processor: &str,
) -> Span {
    tracing::debug_span!(
        PROCESSOR_STORE_SPAN,
        db.system.name = system,
        db.operation.name = operation,
        cqrs.processor = processor,
    )
}

/// Runs the async block `work` inside `span` (a `&Span`) and gives its value.
///
/// A disabled span adds nothing: `work` then runs inline, in the caller's own state machine, as
/// if the macro were not there (wrapping it in a future of its own cost the in-memory store's
/// appends about 200 instructions each, 3%, with no one listening); an enabled span boxes it. A `?` or `return` in `work`
/// leaves the method when the span is disabled and only the block when it is enabled: the
/// caller gets the same value either way as long as the code after the macro does nothing but
/// record on the span (a no-op on a disabled one).
#[macro_export]
#[doc(hidden)]
macro_rules! __in_span {
    ($span:expr, $work:block $(,)?) => {{
        let span: &$crate::__private::tracing::Span = $span;
        if span.is_disabled() {
            $work
        } else {
            // Boxed, so that the enabled path adds a pointer to the caller's future, not a
            // second copy of `work`'s state.
            let work = ::std::boxed::Box::pin(async $work);
            $crate::__private::tracing::Instrument::instrument(work, span.clone()).await
        }
    }};
}

/// Records how an append ended on its span: `cqrs.version.after`, `cqrs.position` and
/// `cqrs.outcome` (`ok`, `conflict`, `duplicate_command`, `error`).
#[inline]
pub fn record_append(span: &Span, result: &Result<AppendReceipt, StoreError>) {
    if span.is_disabled() {
        return;
    }
    if let Ok(receipt) = result {
        span.record("cqrs.version.after", receipt.version.0);
        if let Some(position) = receipt.position {
            span.record("cqrs.position", position.0);
        }
    }
    span.record("cqrs.outcome", append_outcome(result));
}

/// Records on a read's span how many events it returned or visited (`events` counts them).
#[inline]
pub fn record_read<T>(span: &Span, result: &Result<T, StoreError>, events: fn(&T) -> usize) {
    if span.is_disabled() {
        return;
    }
    if let Ok(read) = result {
        span.record("cqrs.events", events(read));
    }
}

/// Records one batch of appends a backend sends in one transaction: its size in the
/// [`APPEND_BATCH_SIZE`] histogram (labelled `store`), and as `cqrs.batch.appends` on the span
/// of each of its appends (`spans`).
pub fn record_batch<'a>(store: &'static str, spans: impl ExactSizeIterator<Item = &'a Span>) {
    let appends = spans.len();
    metrics::histogram!(APPEND_BATCH_SIZE, "store" => store).record(appends as f64);
    for span in spans {
        if !span.is_disabled() {
            span.record("cqrs.batch.appends", appends);
        }
    }
}

/// The value of `cqrs.outcome` for an append's result.
#[inline]
pub fn append_outcome(result: &Result<AppendReceipt, StoreError>) -> &'static str {
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
