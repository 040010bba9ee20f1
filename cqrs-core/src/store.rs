//! The contract every event store fulfils: atomic appends with an expected version, stream and
//! global reads, waiting for new events, snapshots and command-id records.

use std::fmt;
use std::sync::Arc;

use crate::event::{
    CommandId, DecodeError, EventData, InvalidStreamId, NewEvent, Position, RecordedEvent,
    StreamId, Version,
};

/// What the writer believes about a stream's version before it appends.
///
/// The same four states as KurrentDB's. Versions are 1-based and a stream with no events has
/// version 0, so `Exact(Version(0))` means the same as `NoStream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version is.
    Any,
    /// The stream must not have any events yet.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's version must be exactly this one.
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` satisfies this expectation.
    pub fn matches(self, actual: Version) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == Version::INITIAL,
            ExpectedVersion::StreamExists => actual > Version::INITIAL,
            ExpectedVersion::Exact(expected) => actual == expected,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// What a successful append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    /// The version of the first event written (the stream's version + 1 before the append).
    pub first_version: Version,
    /// The stream's version after the append: the version of its last event.
    pub version: Version,
    /// The global position of the first event written, `None` when no event was written.
    pub first_position: Option<Position>,
    /// The global position of the last event written, `None` when no event was written.
    pub position: Option<Position>,
}

/// The durable record that a command id was applied to a stream, and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// The command's id.
    pub command_id: CommandId,
    /// The stream it was applied to.
    pub stream: StreamId,
    /// The version of the first event it wrote.
    pub first_version: Version,
    /// The version of the last event it wrote.
    pub version: Version,
    /// The global position of the last event it wrote.
    pub position: Position,
}

/// A stored snapshot of an aggregate's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream version the state covers: events up to and including this version are in it.
    pub version: Version,
    /// The schema version of the encoded state; a snapshot of another schema version is ignored.
    pub schema_version: u32,
    /// The encoded state.
    pub payload: Vec<u8>,
}

/// What [`EventStore::read_log`] read: the events of the streams asked for, and how far the read
/// went.
#[derive(Debug, Default)]
pub struct LogBatch {
    /// The events (and unreadable rows) of the streams asked for, in position order.
    pub entries: Vec<LogEntry>,
    /// The last position the read covered, events of other streams included; `None` when it
    /// found nothing after the position it started from.
    pub last: Option<Position>,
}

/// One position of the global log, as [`EventStore::read_log`] hands it out.
#[derive(Debug)]
pub enum LogEntry {
    /// A stored event.
    Event(RecordedEvent),
    /// A stored row that is not a valid event.
    Unreadable(UnreadableEvent),
}

impl LogEntry {
    /// The entry's global position.
    pub fn position(&self) -> Position {
        match self {
            LogEntry::Event(event) => event.position,
            LogEntry::Unreadable(unreadable) => unreadable.position,
        }
    }
}

/// A row of the global log that cannot be read as an event: as much of it as could be read, and
/// why the rest could not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the stored event at position {position} (stream `{stream}`{}{}) cannot be read: {reason}",
    .version.map(|version| format!(", version {version}")).unwrap_or_default(),
    .event_type.as_ref().map(|event_type| format!(", type `{event_type}`")).unwrap_or_default()
)]
pub struct UnreadableEvent {
    /// Its global position.
    pub position: Position,
    /// Its stream id, as stored (it may not be a valid [`StreamId`]).
    pub stream: String,
    /// Its version in the stream, when that could be read.
    pub version: Option<Version>,
    /// Its stored type name, when that could be read.
    pub event_type: Option<String>,
    /// What is wrong with it.
    pub reason: String,
}

/// Everything that can go wrong in a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream's version did not match the expected one; nothing was written.
    #[error("version conflict on stream `{stream}`: expected {expected}, found version {actual}")]
    Conflict {
        /// The stream appended to.
        stream: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's actual version (0 when it has no events).
        actual: Version,
    },
    /// The events carried a command id that was already applied to the stream; nothing was written.
    #[error("command `{}` was already applied to stream `{}`", .earlier.command_id, .earlier.stream)]
    DuplicateCommand {
        /// What the earlier application of the command wrote.
        earlier: CommandRecord,
    },
    /// A stream id was refused.
    #[error(transparent)]
    InvalidStream(#[from] InvalidStreamId),
    /// A stored event could not be decoded.
    #[error(
        "cannot decode event `{event_type}` at version {version} of stream `{stream}`: {source}"
    )]
    Decode {
        /// The stream the event belongs to.
        stream: StreamId,
        /// Its version in the stream.
        version: Version,
        /// Its stored type name.
        event_type: String,
        /// Why it could not be decoded.
        #[source]
        source: DecodeError,
    },
    /// The events of one append carried different command ids.
    #[error("the events of one append carry different command ids ({first:?} and {other:?})")]
    MixedCommandIds {
        /// The first event's command id.
        first: Option<CommandId>,
        /// Another command id in the same append.
        other: Option<CommandId>,
    },
    /// A stream's stored versions are not contiguous: a row is missing (deleted by hand, a
    /// restore gone wrong). Loading it would silently skip events, so it is refused.
    #[error(
        "stream `{stream}` is missing version {missing}: the next stored event is version {found}"
    )]
    MissingVersion {
        /// The stream read.
        stream: StreamId,
        /// The first version that is not stored.
        missing: Version,
        /// The version stored where `missing` should have been.
        found: Version,
    },
    /// The store could not serve the call in time (for example, every pooled connection stayed
    /// busy). Nothing was written by the call that timed out.
    #[error("event store timed out after {waited:?}: {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long the call waited.
        waited: std::time::Duration,
    },
    /// The storage backend failed (I/O, connection, database error). The append may be retried.
    #[error("event store backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Backend(error.into())
    }
}

/// The command id shared by all of `events`, checking that they agree.
///
/// A store records it with the append (see [`EventStore::append`]).
pub fn command_id_of(events: &[NewEvent]) -> Result<Option<&CommandId>, StoreError> {
    let mut events = events.iter();
    let Some(first) = events.next() else {
        return Ok(None);
    };
    let command_id = first.metadata.command_id.as_ref();
    for event in events {
        if event.metadata.command_id.as_ref() != command_id {
            return Err(StoreError::MixedCommandIds {
                first: command_id.cloned(),
                other: event.metadata.command_id.clone(),
            });
        }
    }
    Ok(command_id)
}

/// An event store: the durable home of every stream.
///
/// Every implementation passes the shared conformance suite in the `cqrs-tests` package, so the
/// guarantees below hold whichever store runs underneath.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if its version matches `expected`: all of them, contiguous in
    /// the stream and in the global log, or none. A reader never sees part of an append.
    ///
    /// When the events carry a command id (all of them the same, see [`command_id_of`]) that was
    /// already applied to this stream, nothing is written and the error is
    /// [`StoreError::DuplicateCommand`] with the earlier record, whatever `expected` says. The
    /// record is written in the same atomic step as the events.
    ///
    /// Appending no events checks `expected` and writes nothing.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError>;

    /// Reads up to `limit` events of `stream` with a version of `from` or later, in version order.
    /// A stream with no events reads as empty.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Hands up to `limit` events of `stream`, from version `from` on, to `visit` in version order,
    /// and returns how many it handed over. Stops at the first error `visit` returns.
    ///
    /// The default reads with [`read_stream`](EventStore::read_stream); a store that holds events
    /// in memory overrides it to lend them instead of copying them. The repository rehydrates
    /// with [`visit_stream_data`](EventStore::visit_stream_data) instead, which needs less of
    /// each event.
    async fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        let events = self.read_stream(stream, from, limit).await?;
        for event in &events {
            visit(event)?;
        }
        Ok(events.len())
    }

    /// [`visit_stream`](EventStore::visit_stream) for a reader that only decodes: each event is
    /// handed over as its [`EventData`] (stream, version, type, schema version, payload), and
    /// the rest of the envelope need not be read at all. The same events, in the same order,
    /// with the same count and the same stop at the visitor's first error.
    ///
    /// This is how the repository rehydrates. The default goes through `visit_stream`; a
    /// database store overrides it to select only these columns and lend them from its rows.
    async fn visit_stream_data(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        self.visit_stream(stream, from, limit, &mut |event| visit(event.data()))
            .await
    }

    /// Reads up to `limit` events of the global log with a position after `after`, in position
    /// order. A reader that continues after the last position it saw never skips an event.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads the next part of the global log for a processor that reads the streams of
    /// `aggregates` (every stream when it is empty): up to `limit` positions after `after`, in
    /// position order.
    ///
    /// Events of other streams are left out before anything of them is decoded, and a stored
    /// row that cannot be read as an event (its headers, metadata or stream id do not fit) comes
    /// back as [`LogEntry::Unreadable`] with what could be read of it, instead of failing the
    /// whole read: one bad row never stops a reader of other streams, and a reader of its stream
    /// sees it at its place. [`LogBatch::last`] is the last position the read covered, filtered
    /// events included, so that a reader moves past them.
    ///
    /// The default reads [`read_all`](EventStore::read_all) and filters; a store whose rows can
    /// be corrupt (a database edited by hand) overrides it.
    async fn read_log(
        &self,
        after: Position,
        limit: usize,
        aggregates: &[&str],
    ) -> Result<LogBatch, StoreError> {
        let events = self.read_all(after, limit).await?;
        let last = events.last().map(|event| event.position);
        let entries = events
            .into_iter()
            .filter(|event| event.stream.is_of_any(aggregates))
            .map(LogEntry::Event)
            .collect();
        Ok(LogBatch { entries, last })
    }

    /// The position of the last event in the global log ([`Position::START`] when it is empty).
    async fn head(&self) -> Result<Position, StoreError>;

    /// Waits until the global log holds an event after `after`, then returns the head position.
    /// Returns at once when it already does. It waits without polling; wrap it in
    /// `tokio::time::timeout` to bound the wait.
    async fn wait_for_events(&self, after: Position) -> Result<Position, StoreError>;

    /// Stores a snapshot of `stream`, replacing an older one.
    async fn save_snapshot(&self, stream: &StreamId, snapshot: Snapshot) -> Result<(), StoreError>;

    /// Loads the latest snapshot of `stream` written with `schema_version`. A snapshot of another
    /// schema version reads as `None`: it is never handed out to code that would misread it.
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// The record of `command_id` on `stream`, if that command was applied to it.
    async fn command_record(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError>;

    /// Waits for an exclusive turn on `stream`: while the returned [`StreamTurn`] lives, no other
    /// writer appends to the stream (their appends wait for the turn to end, then go on as
    /// usual), so a decision made on what the turn reads cannot lose to a concurrent writer.
    ///
    /// This is how the repository makes progress on a hot stream that many independent writers
    /// (several nodes, or caches off) keep changing: after repeated conflicts it takes a turn
    /// instead of backing off again (see the guide's repository chapter). `None` (the default)
    /// says the store has no turns; the repository then keeps retrying with backoff. Dropping
    /// the turn ends it.
    async fn take_turn(
        &self,
        stream: &StreamId,
    ) -> Result<Option<Box<dyn StreamTurn>>, StoreError> {
        let _ = stream;
        Ok(None)
    }
}

/// An exclusive turn on one stream, from [`EventStore::take_turn`]: reads and one append that no
/// other writer can get in between. Dropping it ends the turn.
#[async_trait::async_trait]
pub trait StreamTurn: Send {
    /// The stream the turn is on.
    fn stream(&self) -> &StreamId;

    /// [`EventStore::visit_stream`] within the turn.
    async fn visit_stream(
        &mut self,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError>;

    /// [`EventStore::visit_stream_data`] within the turn. The default goes through
    /// [`visit_stream`](StreamTurn::visit_stream).
    async fn visit_stream_data(
        &mut self,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        self.visit_stream(from, limit, &mut |event| visit(event.data()))
            .await
    }

    /// [`EventStore::append`] within the turn, which ends with it (whatever the outcome).
    async fn append(
        self: Box<Self>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError>;
}

macro_rules! forward_event_store {
    ($($pointer:ty),*) => {$(
        #[async_trait::async_trait]
        impl<S: EventStore + ?Sized> EventStore for $pointer {
            async fn append(
                &self,
                stream: &StreamId,
                expected: ExpectedVersion,
                events: Vec<NewEvent>,
            ) -> Result<AppendReceipt, StoreError> {
                (**self).append(stream, expected, events).await
            }

            async fn read_stream(
                &self,
                stream: &StreamId,
                from: Version,
                limit: usize,
            ) -> Result<Vec<RecordedEvent>, StoreError> {
                (**self).read_stream(stream, from, limit).await
            }

            async fn visit_stream(
                &self,
                stream: &StreamId,
                from: Version,
                limit: usize,
                visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
            ) -> Result<usize, StoreError> {
                (**self).visit_stream(stream, from, limit, visit).await
            }

            async fn visit_stream_data(
                &self,
                stream: &StreamId,
                from: Version,
                limit: usize,
                visit: &mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
            ) -> Result<usize, StoreError> {
                (**self).visit_stream_data(stream, from, limit, visit).await
            }

            async fn read_all(
                &self,
                after: Position,
                limit: usize,
            ) -> Result<Vec<RecordedEvent>, StoreError> {
                (**self).read_all(after, limit).await
            }

            async fn read_log(
                &self,
                after: Position,
                limit: usize,
                aggregates: &[&str],
            ) -> Result<LogBatch, StoreError> {
                (**self).read_log(after, limit, aggregates).await
            }

            async fn head(&self) -> Result<Position, StoreError> {
                (**self).head().await
            }

            async fn wait_for_events(&self, after: Position) -> Result<Position, StoreError> {
                (**self).wait_for_events(after).await
            }

            async fn save_snapshot(
                &self,
                stream: &StreamId,
                snapshot: Snapshot,
            ) -> Result<(), StoreError> {
                (**self).save_snapshot(stream, snapshot).await
            }

            async fn load_snapshot(
                &self,
                stream: &StreamId,
                schema_version: u32,
            ) -> Result<Option<Snapshot>, StoreError> {
                (**self).load_snapshot(stream, schema_version).await
            }

            async fn command_record(
                &self,
                stream: &StreamId,
                command_id: &CommandId,
            ) -> Result<Option<CommandRecord>, StoreError> {
                (**self).command_record(stream, command_id).await
            }

            async fn take_turn(
                &self,
                stream: &StreamId,
            ) -> Result<Option<Box<dyn StreamTurn>>, StoreError> {
                (**self).take_turn(stream).await
            }
        }
    )*};
}

forward_event_store!(Arc<S>, Box<S>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions_match_as_documented() {
        let (empty, three) = (Version(0), Version(3));
        assert!(ExpectedVersion::Any.matches(empty) && ExpectedVersion::Any.matches(three));
        assert!(
            ExpectedVersion::NoStream.matches(empty) && !ExpectedVersion::NoStream.matches(three)
        );
        assert!(!ExpectedVersion::StreamExists.matches(empty));
        assert!(ExpectedVersion::StreamExists.matches(three));
        assert!(ExpectedVersion::Exact(three).matches(three));
        assert!(!ExpectedVersion::Exact(Version(2)).matches(three));
        assert!(ExpectedVersion::Exact(empty).matches(empty));
    }

    #[test]
    fn the_conflict_message_names_stream_expected_and_actual() {
        let error = StoreError::Conflict {
            stream: StreamId::new("show-1").expect("valid"),
            expected: ExpectedVersion::Exact(Version(2)),
            actual: Version(5),
        };
        assert_eq!(
            error.to_string(),
            "version conflict on stream `show-1`: expected version 2, found version 5"
        );
    }
}
