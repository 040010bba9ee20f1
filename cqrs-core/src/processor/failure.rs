//! What went wrong with an event, and the dead letter a parked event leaves.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::event::{EventId, Position, RecordedEvent, Version};
use crate::store::UnreadableEvent;

/// Which step of handling an event failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The stored event could not be read or decoded: its payload, its headers, or a type the
    /// processor does not know in a stream it reads.
    Decode,
    /// The handler (a projection's `apply`, a saga's handler) returned an error.
    Handler,
    /// The handler panicked.
    Panic,
    /// A command the handler sent failed for a reason other than a domain refusal (an invalid
    /// id, no repository for it, conflicts that never settled).
    Command,
}

impl FailureKind {
    /// Its name, as serialized (`decode`, `handler`, `panic`, `command`): the value of the
    /// `cqrs.failure` field of the processor's events.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Decode => "decode",
            FailureKind::Handler => "handler",
            FailureKind::Panic => "panic",
            FailureKind::Command => "command",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Decode => "decoding the event failed",
            FailureKind::Handler => "handling the event failed",
            FailureKind::Panic => "handling the event panicked",
            FailureKind::Command => "a command sent for the event failed",
        })
    }
}

/// Which stored event something is about: enough to find it in the log and in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventRef {
    /// Its global position.
    pub position: Position,
    /// Its stream id, as stored.
    pub stream: String,
    /// Its version in the stream, when it could be read.
    pub version: Option<Version>,
    /// Its stored type name, when it could be read.
    pub event_type: Option<String>,
    /// Its id, when it could be read.
    pub event_id: Option<EventId>,
}

impl EventRef {
    /// The reference of a stored event.
    pub fn of(event: &RecordedEvent) -> Self {
        EventRef {
            position: event.position,
            stream: event.stream.to_string(),
            version: Some(event.version),
            event_type: Some(event.event_type.to_string()),
            event_id: Some(event.event_id),
        }
    }

    /// The reference of a row that could not be read as an event.
    pub fn of_unreadable(row: &UnreadableEvent) -> Self {
        EventRef {
            position: row.position,
            stream: row.stream.clone(),
            version: row.version,
            event_type: row.event_type.clone(),
            event_id: None,
        }
    }
}

impl fmt::Display for EventRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.event_type {
            Some(event_type) => write!(f, "`{event_type}`")?,
            None => f.write_str("the event")?,
        }
        if let Some(version) = self.version {
            write!(f, " at version {version}")?;
        }
        write!(
            f,
            " of stream `{}` (position {})",
            self.stream, self.position
        )
    }
}

/// How handling one event failed, as a processor reports it to the runner.
#[derive(Debug, Clone)]
pub struct EventFailure {
    /// Which step failed.
    pub kind: FailureKind,
    /// The error.
    pub error: Arc<dyn StdError + Send + Sync>,
}

impl EventFailure {
    /// A failure of `kind` with `error`.
    pub fn new(kind: FailureKind, error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        EventFailure {
            kind,
            error: Arc::from(error.into()),
        }
    }

    /// The failure a caught panic is, with the panic's message.
    pub fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        EventFailure::new(FailureKind::Panic, Panicked::from_payload(payload))
    }
}

/// One failure a processor met: which step, on which event, after how many attempts, when, and
/// the error with its sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Which step failed.
    pub kind: FailureKind,
    /// The event it failed on; `None` for a failure that is not about one event (a saga's
    /// deadline, say).
    pub event: Option<EventRef>,
    /// What else it was about when not an event: `"deadline `name` of instance `id`"`.
    pub subject: Option<String>,
    /// How many times it was attempted so far.
    pub attempts: u32,
    /// The error and its sources, `: `-separated.
    pub error: String,
    /// When it failed (last).
    pub at: SystemTime,
}

impl Failure {
    /// A failure of `event` described by `failure`, at its `attempts`-th attempt.
    pub fn of_event(event: EventRef, failure: &EventFailure, attempts: u32) -> Self {
        Failure {
            kind: failure.kind,
            event: Some(event),
            subject: None,
            attempts,
            error: describe(&*failure.error),
            at: SystemTime::now(),
        }
    }

    /// The global position of the event it failed on, if any.
    pub fn position(&self) -> Option<Position> {
        self.event.as_ref().map(|event| event.position)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(event) = &self.event {
            write!(f, " on {event}")?;
        }
        if let Some(subject) = &self.subject {
            write!(f, " on {subject}")?;
        }
        write!(f, " after {} attempt(s): {}", self.attempts, self.error)
    }
}

/// An event a processor parked under [`FailurePolicy::Skip`](super::FailurePolicy::Skip) (or
/// after its retries): recorded in the processor's store in the same commit that moved the
/// checkpoint past it, so it is never passed over without a trace. It can be
/// [retried](super::ProcessorHandle::retry_dead_letter) (applied once, then removed) or
/// [discarded](super::ProcessorHandle::discard_dead_letter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its key among the processor's dead letters: the event's position in decimal, or
    /// `deadline/{instance}/{deadline id}` for a saga deadline.
    pub id: String,
    /// The processor that parked it.
    pub processor: String,
    /// The failure that parked it (the event, the error, the attempts, when).
    pub failure: Failure,
}

impl DeadLetter {
    /// The dead letter of `failure` for `processor`, keyed by its event's position (or its
    /// subject, for a failure that is not about an event).
    pub fn new(processor: &str, failure: Failure) -> Self {
        let id = match (&failure.event, &failure.subject) {
            (Some(event), _) => event.position.0.to_string(),
            (None, Some(subject)) => subject.clone(),
            (None, None) => String::from("unknown"),
        };
        DeadLetter {
            id,
            processor: processor.to_owned(),
            failure,
        }
    }

    /// The position of the event it parked, if it parked an event.
    pub fn position(&self) -> Option<Position> {
        self.failure.position()
    }
}

/// The message of a panic caught in a handler, recorded as the failure's error (kind
/// [`FailureKind::Panic`]).
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

/// `error` and its sources, `: `-separated, each said once (many errors repeat their source in
/// their own message).
pub fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_kind_is_named_as_it_serializes() {
        for kind in [
            FailureKind::Decode,
            FailureKind::Handler,
            FailureKind::Panic,
            FailureKind::Command,
        ] {
            let json = serde_json::to_value(kind).expect("serializes");
            assert_eq!(json, kind.as_str());
        }
    }
}
