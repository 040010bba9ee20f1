//! Turning rows back into the core's types, with a typed error for a row that does not fit.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::SystemTime;

use cqrs_core::{
    CommandId, EventData, EventId, LogEntry, Metadata, Payload, Position, RecordedEvent,
    StoreError, StreamId, UnreadableEvent, Version,
};
use tokio_postgres::Row;
use uuid::Uuid;

/// The columns [`recorded_event`] reads, in its order.
pub(crate) const EVENT_COLUMNS: &str = "stream, version, position, event_id, event_type, \
     schema_version, payload, correlation_id, causation_id, command_id, occurred_at, \
     headers::text";

/// A stored row that cannot be a valid event, snapshot or record (edited by hand, or written by
/// something else than this crate).
#[derive(Debug, thiserror::Error)]
#[error("stored row of stream `{stream}` does not fit: {reason}")]
pub struct CorruptRow {
    /// The stream the row belongs to, as stored.
    pub stream: String,
    /// What is wrong with it.
    pub reason: String,
}

fn corrupt(stream: impl Into<String>, reason: impl Into<String>) -> StoreError {
    StoreError::backend(CorruptRow {
        stream: stream.into(),
        reason: reason.into(),
    })
}

/// A `u64` the contract hands over, as a `bigint`; values beyond `i64::MAX` cannot be stored and
/// saturate (no stream gets that long).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn version(value: i64, stream: &StreamId) -> Result<Version, StoreError> {
    u64::try_from(value)
        .map(Version)
        .map_err(|_| corrupt(stream.as_str(), format!("negative version {value}")))
}

pub(crate) fn position(value: i64, stream: &StreamId) -> Result<Position, StoreError> {
    u64::try_from(value)
        .map(Position)
        .map_err(|_| corrupt(stream.as_str(), format!("negative position {value}")))
}

pub(crate) fn head(value: i64) -> Result<Position, StoreError> {
    u64::try_from(value)
        .map(Position)
        .map_err(|_| corrupt("", format!("negative head position {value}")))
}

/// A stored command id, which this crate only ever writes valid: one that breaks the rule was
/// written by something else.
fn command_id(stored: &str, stream: &StreamId) -> Result<CommandId, StoreError> {
    CommandId::new(stored)
        .map_err(|error| corrupt(stream.as_str(), format!("command id {stored:?}: {error}")))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
    stream: &str,
) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|error| corrupt(stream, format!("column {index}: {error}")))
}

/// [`EVENT_COLUMNS`] for a query of one stream's events, with NULL in place of the stream, which
/// the caller knows: the same column order, without the stream id sent again with every row.
pub(crate) const STREAM_EVENT_COLUMNS: &str = "NULL::text, version, position, event_id, \
     event_type, schema_version, payload, correlation_id, causation_id, command_id, \
     occurred_at, headers::text";

/// The columns [`stream_data`] reads, in its order: what decoding an event needs, and whether it
/// has a position yet.
pub(crate) const STREAM_DATA_COLUMNS: &str =
    "version, position IS NULL, event_type, schema_version, payload";

/// A row selected with [`STREAM_DATA_COLUMNS`].
pub(crate) enum StreamRow<'row> {
    /// A numbered event, borrowed from its row.
    Numbered(EventData<'row>),
    /// The version of an event that has no position yet.
    Unnumbered(i64),
}

/// Reads a row of `stream` selected with [`STREAM_DATA_COLUMNS`], borrowing its type and payload
/// from the row; the rest of the envelope is not read, so a row whose metadata does not fit
/// still decodes.
pub(crate) fn stream_data<'row>(
    row: &'row Row,
    stream: &'row StreamId,
) -> Result<StreamRow<'row>, StoreError> {
    let stored = stream.as_str();
    let version_number: i64 = get(row, 0, stored)?;
    if get::<bool>(row, 1, stored)? {
        return Ok(StreamRow::Unnumbered(version_number));
    }
    let schema_version = schema_version(row, 3, stored)?;
    Ok(StreamRow::Numbered(EventData {
        stream,
        version: version(version_number, stream)?,
        event_type: get(row, 2, stored)?,
        schema_version,
        payload: get(row, 4, stored)?,
    }))
}

/// The schema version in column `index` of `row` (of stream `stored`): a `u32`, or the row is
/// corrupt.
fn schema_version(row: &Row, index: usize, stored: &str) -> Result<u32, StoreError> {
    let schema_version: i64 = get(row, index, stored)?;
    u32::try_from(schema_version)
        .map_err(|_| corrupt(stored, format!("schema version {schema_version}")))
}

/// Reads a row selected with [`EVENT_COLUMNS`]: `None` for an event that has no position yet.
pub(crate) fn recorded_event(row: &Row) -> Result<Option<RecordedEvent>, StoreError> {
    let stored: &str = get(row, 0, "")?;
    event_of(row, stored)
}

/// Reads a row selected with [`EVENT_COLUMNS`] whose stream column holds `stored`.
fn event_of(row: &Row, stored: &str) -> Result<Option<RecordedEvent>, StoreError> {
    let stream = StreamId::new(stored).map_err(|error| corrupt(stored, error.to_string()))?;
    Fields::read(row, &stream)?
        .map(|fields| fields.into_event(stream))
        .transpose()
}

/// Reads a numbered row selected with [`EVENT_COLUMNS`] for a reader of the streams of
/// `aggregates` (every stream when it is empty), as [`EventStore::read_log`] hands it out:
/// `None` for a row of another stream, of which nothing but the stream id is decoded, and
/// [`LogEntry::Unreadable`] with what could be read for a row that is not a valid event. Only
/// a position that cannot be read at all (a schema this crate did not make) fails.
///
/// [`EventStore::read_log`]: cqrs_core::EventStore::read_log
pub(crate) fn log_entry(row: &Row, aggregates: &[&str]) -> Result<Option<LogEntry>, StoreError> {
    let stored = match row.try_get::<_, &str>(0) {
        Ok(stored) => stored,
        // Nothing says which stream it is, so every reader sees it rather than passing over
        // an event that may be one of theirs.
        Err(error) => {
            return unreadable(row, "", format!("stream id: {error}")).map(Some);
        }
    };
    // The stream's aggregate as `StreamId::aggregate` has it, read off the stored text, so
    // that a stored id that is not a valid `StreamId` is still filtered by its aggregate.
    let aggregate = stored
        .split_once('-')
        .map_or(stored, |(aggregate, _)| aggregate);
    if !aggregates.is_empty() && !aggregates.contains(&aggregate) {
        return Ok(None);
    }
    match event_of(row, stored) {
        Ok(Some(event)) => Ok(Some(LogEntry::Event(event))),
        // `position > after` never matches an unnumbered event.
        Ok(None) => Ok(None),
        Err(error) => unreadable(row, stored, reason(&error)).map(Some),
    }
}

/// The position of a numbered row selected with [`EVENT_COLUMNS`].
pub(crate) fn log_position(row: &Row) -> Result<Position, StoreError> {
    let value: i64 = get(row, 2, "")?;
    u64::try_from(value)
        .map(Position)
        .map_err(|_| corrupt("", format!("negative position {value}")))
}

/// The entry of a row that is not a valid event: its position, stream, and what else of it
/// reads (its version and type), with `reason`.
fn unreadable(row: &Row, stream: &str, reason: String) -> Result<LogEntry, StoreError> {
    let version = row
        .try_get::<_, i64>(1)
        .ok()
        .and_then(|value| u64::try_from(value).ok())
        .map(Version);
    let event_type = row.try_get::<_, &str>(4).ok().map(str::to_owned);
    Ok(LogEntry::Unreadable(UnreadableEvent {
        position: log_position(row)?,
        stream: stream.to_owned(),
        version,
        event_type,
        reason,
    }))
}

/// What is wrong with a row, without the stream an [`UnreadableEvent`] names already.
fn reason(error: &StoreError) -> String {
    if let StoreError::Backend(source) = error
        && let Some(corrupt) = source.downcast_ref::<CorruptRow>()
    {
        return corrupt.reason.clone();
    }
    error.to_string()
}

/// Reads a row selected with [`STREAM_EVENT_COLUMNS`] for `stream` into `event`, reusing what it
/// holds (the stream id, the type's buffer) instead of building a new event: a stream is read one
/// event after the other, each lent to the caller for a moment. `Ok(Some(version))` for an event
/// that has no position yet.
pub(crate) fn read_stream_event(
    row: &Row,
    stream: &StreamId,
    event: &mut Option<RecordedEvent>,
) -> Result<Option<i64>, StoreError> {
    let Some(fields) = Fields::read(row, stream)? else {
        return Ok(Some(get(row, 1, stream.as_str())?));
    };
    let Some(event) = event else {
        *event = Some(fields.into_event(stream.clone())?);
        return Ok(None);
    };
    event.version = fields.version;
    event.position = fields.position;
    event.event_id = fields.event_id;
    match &mut event.event_type {
        Cow::Owned(event_type) => {
            event_type.clear();
            event_type.push_str(fields.event_type);
        }
        event_type => *event_type = Cow::Owned(fields.event_type.to_owned()),
    }
    event.schema_version = fields.schema_version;
    event.payload = Payload::from(fields.payload);
    let metadata = &mut event.metadata;
    metadata.correlation_id = fields.correlation_id;
    metadata.causation_id = fields.causation_id;
    if metadata.command_id.as_ref().map(CommandId::as_str) != fields.command_id {
        metadata.command_id = fields
            .command_id
            .map(|id| command_id(id, stream))
            .transpose()?;
    }
    metadata.timestamp = fields.timestamp;
    metadata.headers = fields.headers;
    Ok(None)
}

/// The columns of a numbered event's row after the stream, borrowed from the row.
struct Fields<'row> {
    version: Version,
    position: Position,
    event_id: EventId,
    event_type: &'row str,
    schema_version: u32,
    payload: &'row [u8],
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    command_id: Option<&'row str>,
    timestamp: SystemTime,
    headers: BTreeMap<String, String>,
}

impl<'row> Fields<'row> {
    /// `None` for an event that has no position yet.
    fn read(row: &'row Row, stream: &StreamId) -> Result<Option<Self>, StoreError> {
        let stored = stream.as_str();
        let version_number: i64 = get(row, 1, stored)?;
        let Some(position_number) = get::<Option<i64>>(row, 2, stored)? else {
            return Ok(None);
        };
        let schema_version = schema_version(row, 5, stored)?;
        let headers: &str = get(row, 11, stored)?;
        let headers: BTreeMap<String, String> = if headers == "{}" {
            BTreeMap::new()
        } else {
            serde_json::from_str(headers)
                .map_err(|error| corrupt(stored, format!("headers: {error}")))?
        };
        Ok(Some(Fields {
            version: version(version_number, stream)?,
            position: position(position_number, stream)?,
            event_id: EventId(get::<Uuid>(row, 3, stored)?),
            event_type: get(row, 4, stored)?,
            schema_version,
            payload: get(row, 6, stored)?,
            correlation_id: get(row, 7, stored)?,
            causation_id: get(row, 8, stored)?,
            command_id: get(row, 9, stored)?,
            timestamp: get::<SystemTime>(row, 10, stored)?,
            headers,
        }))
    }

    fn into_event(self, stream: StreamId) -> Result<RecordedEvent, StoreError> {
        let command_id = self
            .command_id
            .map(|id| command_id(id, &stream))
            .transpose()?;
        Ok(RecordedEvent {
            stream,
            version: self.version,
            position: self.position,
            event_id: self.event_id,
            event_type: Cow::Owned(self.event_type.to_owned()),
            schema_version: self.schema_version,
            payload: Payload::from(self.payload),
            metadata: Metadata {
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
                command_id,
                timestamp: self.timestamp,
                headers: self.headers,
            },
        })
    }
}

/// What the append statements or `cqrs_append_batch_with_turns` answered for one append.
pub(crate) struct AppendAnswer {
    pub(crate) outcome: i16,
    pub(crate) actual_version: Version,
    pub(crate) first_version: Version,
    pub(crate) last_version: Version,
    /// The positions, when the append numbered its own events.
    pub(crate) positions: Option<(Position, Position)>,
}

impl AppendAnswer {
    pub(crate) fn read(row: &Row, stream: &StreamId) -> Result<Self, StoreError> {
        let name = stream.as_str();
        let outcome: i16 = get(row, 0, name)?;
        let optional_version = |index| -> Result<Version, StoreError> {
            match get::<Option<i64>>(row, index, name)? {
                Some(value) => version(value, stream),
                None => Ok(Version::INITIAL),
            }
        };
        let first_position: Option<i64> = get(row, 4, name)?;
        let last_position: Option<i64> = get(row, 5, name)?;
        let positions = match (first_position, last_position) {
            (Some(first), Some(last)) => Some((position(first, stream)?, position(last, stream)?)),
            _ => None,
        };
        Ok(AppendAnswer {
            outcome,
            actual_version: optional_version(1)?,
            first_version: optional_version(2)?,
            last_version: optional_version(3)?,
            positions,
        })
    }
}
