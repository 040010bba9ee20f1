//! What the framework tells a running service: `tracing` spans and events, and metrics through
//! the [`metrics`] facade.
//!
//! The libraries depend on `tracing` and `metrics` alone: the service installs a subscriber
//! (`tracing-subscriber`, an OpenTelemetry layer) and a recorder (a Prometheus exporter, an
//! OpenTelemetry bridge). With neither installed, every span, event and metric is a cheap no-op.
//! Spans and events carry ids, counts, versions and positions, never payloads or header values.
//! Metric labels are bounded (aggregate names, processor names, outcomes), never stream ids.
//!
//! # Spans
//!
//! | span | level | where | fields |
//! |---|---|---|---|
//! | [`COMMAND_SPAN`] | INFO | [`Repository::execute`](crate::Repository::execute) and `execute_with` | `cqrs.aggregate`, `cqrs.stream`, `cqrs.command` (the variant), `cqrs.command.id` (when given), `cqrs.attempts`, `cqrs.outcome`, `cqrs.version.before`, `cqrs.version.after`, `cqrs.position`, `otel.status_code` (on failure) |
//! | [`APPEND_SPAN`] | DEBUG | each store's `append` | `db.system.name`, `db.operation.name`, `cqrs.stream`, `cqrs.expected` (`any`, `no_stream`, `stream_exists`, `exact 3`), `cqrs.events`, `cqrs.version.after`, `cqrs.position`, `cqrs.batch.appends` (PostgreSQL: how many appends shared the transaction; none on an append in a turn), `cqrs.outcome` (`ok`, `conflict`, `duplicate_command`, `error`) |
//! | [`READ_SPAN`] | DEBUG | each store's stream and log reads | `db.system.name`, `db.operation.name` (`read_stream`, `visit_stream`, `visit_stream_data`, `read_all`, `read_log`), `cqrs.stream` or `cqrs.from`, `cqrs.limit`, `cqrs.events` |
//! | [`PROCESSOR_STORE_SPAN`] | DEBUG | SQLite's processor store calls | `db.system.name`, `db.operation.name` (`checkpoint`, `commit`, `dead_letters`, `saga_commit`, ...), `cqrs.processor` |
//! | [`PROCESSOR_BATCH_SPAN`] | INFO | one batch of a projection or saga, around its commit | `cqrs.processor`, `cqrs.checkpoint.before`, `cqrs.checkpoint.after`, `cqrs.events` (handled; dead letters not counted), `cqrs.dead_letters` |
//!
//! The store spans are made by [`store`](mod@store), so that every backend traces the same way;
//! their target is `cqrs_core::telemetry::store`. A store call made by a command nests in the
//! command's span.
//!
//! # Events
//!
//! Commands (target `cqrs_core::repository`), inside their span:
//!
//! | message | level | fields |
//! |---|---|---|
//! | `conflict: deciding again on the fresh state` | DEBUG | `cqrs.attempts`, `cqrs.expected`, `cqrs.actual` |
//! | `command handled` | INFO | `cqrs.attempts`, `cqrs.outcome` (`ok`, `deduplicated`), `cqrs.version.after`, `cqrs.events` |
//! | `command refused` | INFO | `cqrs.attempts`, `cqrs.outcome` (`domain_error`), `error` |
//! | `command failed` | WARN | `cqrs.attempts`, `cqrs.outcome` (`conflict`: retries exhausted; `error`), `error` |
//!
//! With `RUST_LOG=info` that is one line per command. Durations are the span's own (a
//! subscriber measures them); the duration histogram below has them too.
//!
//! Processors (target `cqrs_core::processor`), every event with `cqrs.processor`:
//!
//! | message | level | fields |
//! |---|---|---|
//! | `processor parked an event as a dead letter` | WARN | `cqrs.position`, `cqrs.stream`, `cqrs.version`, `cqrs.event_type` (or `cqrs.subject` for a saga deadline), `cqrs.dead_letter` (its id), `cqrs.attempts`, `cqrs.failure` (`decode`, `handler`, `panic`, `command`), `error` |
//! | `processor will retry a failing event` | WARN | as above, without `cqrs.dead_letter` |
//! | `processor stopped by its failure policy` | ERROR | as above |
//! | `processor store failed, reconnecting` | WARN | `cqrs.attempts`, `error`; once per outage |
//! | `processor store still failing` | DEBUG | `cqrs.attempts`, `error`; each later attempt |
//! | `processor store is back` | INFO | `cqrs.checkpoint` |
//! | `processor state changed` | INFO | `cqrs.state` (`catching_up`, `live`, `paused`, `rebuilding`), `cqrs.checkpoint`, `cqrs.lag`; not for the round trip a live processor makes with each new batch |
//! | `processor leadership changed` | INFO | `cqrs.leader` |
//! | `processor checkpoint moved forward, events skipped` | WARN | `cqrs.from`, `cqrs.checkpoint`; an operator's [`skip_to`](crate::processor::ProcessorHandle::skip_to) |
//!
//! The PostgreSQL store adds DEBUG events inside an append's span when it sends a batch again
//! (after a deadlock or serialization failure: `cqrs.retry`, `cqrs.batch.appends`,
//! `db.response.status_code` with the SQLSTATE), splits a batch after the server refused one
//! append's data, or waits for another writer's turn.
//!
//! Names follow OpenTelemetry's conventions where one exists (`db.system.name`,
//! `db.operation.name`, `otel.status_code`), and Emmett's `command.handle` / `processor.handle`
//! for the framework's own operations. Everything else is under `cqrs.`.
//!
//! # Metrics
//!
//! Call [`describe_metrics`] once after installing a recorder to give every metric its unit and
//! description. The names:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`COMMAND_DURATION`] | histogram, seconds | `aggregate`, `outcome` |
//! | [`COMMAND_CONFLICTS`] | counter | `aggregate`, `result` (`retried`, `exhausted`) |
//! | [`EVENTS_APPENDED`] | counter | `aggregate` |
//! | [`APPEND_BATCH_SIZE`] | histogram, appends | `store` |
//! | [`PROCESSOR_LAG_EVENTS`] | gauge | `processor` |
//! | [`PROCESSOR_LAG_SECONDS`] | gauge, seconds | `processor` |
//! | [`PROCESSOR_STALLED_SECONDS`] | gauge, seconds | `processor` |
//! | [`PROCESSOR_EVENTS`] | counter | `processor` |
//! | [`PROCESSOR_DEAD_LETTERS`] | counter | `processor` |
//! | [`PROCESSOR_RECONNECTS`] | counter | `processor` |
//!
//! A repository takes its metric handles when it is built, and a processor when its runner
//! starts (so that recording costs a branch when no recorder is installed): install the
//! recorder first, at the start of `main`, before building repositories and spawning
//! processors. The gauges are set each time a processor's status changes, and every second while
//! it waits (failed, paused, backing off), so a stuck processor's stall keeps growing. The
//! [production chapter](crate::guide::production) says which of these to alert on.

pub mod store;

/// Runs an async block inside a span, inline when the span is disabled; see
/// [`store`](mod@store) for its use in a store backend.
pub use crate::__in_span as in_span;

/// The span around one command: load, decide, append, retries.
pub const COMMAND_SPAN: &str = "command.handle";
/// The span around one store append.
pub const APPEND_SPAN: &str = "store.append";
/// The span around one store read (a stream, or the global log).
pub const READ_SPAN: &str = "store.read";
/// The span around one call of a processor store (a checkpoint, dead letters, a commit).
pub const PROCESSOR_STORE_SPAN: &str = "store.processor";
/// The span around one batch a processor (projection or saga) handles and commits.
pub const PROCESSOR_BATCH_SPAN: &str = "processor.handle";

/// How a command ended: the value of `cqrs.outcome` and of the duration histogram's `outcome`
/// label.
pub mod outcome {
    /// Its events were appended (or it decided nothing and wrote nothing).
    pub const OK: &str = "ok";
    /// Its command id had been applied before: the earlier outcome was returned.
    pub const DEDUPLICATED: &str = "deduplicated";
    /// The aggregate refused it.
    pub const DOMAIN_ERROR: &str = "domain_error";
    /// Every attempt met a concurrent write until the retry budget ran out.
    pub const CONFLICT: &str = "conflict";
    /// The store failed, an event did not encode or decode, an `apply` panicked, or the id was
    /// not a valid stream id.
    pub const ERROR: &str = "error";
}

/// How long commands take, from the call to the outcome, by `aggregate` and `outcome`.
pub const COMMAND_DURATION: &str = "cqrs_command_duration_seconds";
/// Conflicts met by commands, by `aggregate` and `result`: `retried` (decided again) or
/// `exhausted` (the retry budget ran out and the command failed).
pub const COMMAND_CONFLICTS: &str = "cqrs_command_conflicts_total";
/// Events appended by commands, by `aggregate`.
pub const EVENTS_APPENDED: &str = "cqrs_events_appended_total";
/// How many appends a store wrote in one transaction, by `store`.
pub const APPEND_BATCH_SIZE: &str = "cqrs_append_batch_size";
/// How many positions a processor is behind the head of the log, by `processor`.
pub const PROCESSOR_LAG_EVENTS: &str = "cqrs_processor_lag_events";
/// How long the oldest event a processor has not handled has been waiting, by `processor`.
pub const PROCESSOR_LAG_SECONDS: &str = "cqrs_processor_lag_seconds";
/// How long a processor's checkpoint has not moved while events wait for it (0 when caught up):
/// the watermark that alerts on a stuck processor, by `processor`.
pub const PROCESSOR_STALLED_SECONDS: &str = "cqrs_processor_stalled_seconds";
/// Events a processor has handled and committed, by `processor`.
pub const PROCESSOR_EVENTS: &str = "cqrs_processor_events_total";
/// Events (and saga deadlines) a processor has parked as dead letters, by `processor`.
pub const PROCESSOR_DEAD_LETTERS: &str = "cqrs_processor_dead_letters_total";
/// Times a processor's store failed and the processor went to reconnecting, by `processor`.
pub const PROCESSOR_RECONNECTS: &str = "cqrs_processor_reconnects_total";

/// Gives every metric above its unit and description, in the recorder installed now.
///
/// Optional: metrics are recorded without it, but exporters such as Prometheus show the
/// descriptions as `# HELP` lines.
pub fn describe_metrics() {
    use metrics::Unit;
    metrics::describe_histogram!(
        COMMAND_DURATION,
        Unit::Seconds,
        "How long commands take, from the call to the outcome"
    );
    metrics::describe_counter!(
        COMMAND_CONFLICTS,
        Unit::Count,
        "Conflicts met by commands: retried, or exhausted (the command failed)"
    );
    metrics::describe_counter!(EVENTS_APPENDED, Unit::Count, "Events appended by commands");
    metrics::describe_histogram!(
        APPEND_BATCH_SIZE,
        Unit::Count,
        "How many appends a store wrote in one transaction"
    );
    metrics::describe_gauge!(
        PROCESSOR_LAG_EVENTS,
        Unit::Count,
        "How many positions a processor is behind the head of the log"
    );
    metrics::describe_gauge!(
        PROCESSOR_LAG_SECONDS,
        Unit::Seconds,
        "How long the oldest event a processor has not handled has been waiting"
    );
    metrics::describe_gauge!(
        PROCESSOR_STALLED_SECONDS,
        Unit::Seconds,
        "How long a processor's checkpoint has not moved while events wait for it"
    );
    metrics::describe_counter!(
        PROCESSOR_EVENTS,
        Unit::Count,
        "Events a processor has handled and committed"
    );
    metrics::describe_counter!(
        PROCESSOR_DEAD_LETTERS,
        Unit::Count,
        "Events and deadlines a processor has parked as dead letters"
    );
    metrics::describe_counter!(
        PROCESSOR_RECONNECTS,
        Unit::Count,
        "Times a processor's store failed and it went to reconnecting"
    );
}
