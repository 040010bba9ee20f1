//! Turning rows back into the core's types, with a typed error for a row that does not fit, and
//! the conversions of the core's numbers and times to SQLite's.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use cqrs_core::{
    CommandId, EventData, EventId, LogEntry, Metadata, Payload, Position, RecordedEvent,
    StoreError, StreamId, UnreadableEvent, Version,
};
use rusqlite::Row;
use rusqlite::types::ValueRef;
use uuid::Uuid;

/// The columns [`recorded_event`] reads, in its order, as a literal for `concat!`: the statements
/// that name them are then constants, not strings formatted on every call.
macro_rules! event_columns {
    () => {
        "position, stream, version, event_id, event_type, schema_version, payload, \
         correlation_id, causation_id, command_id, occurred_at, headers"
    };
}
pub(crate) use event_columns;

/// The columns [`recorded_event`] reads, in its order.
pub(crate) const EVENT_COLUMNS: &str = event_columns!();

/// The columns of [`event_columns!`] that decoding needs, at their places there and NULL in the
/// others: [`stream_data`] reads them with the same helpers, and its errors name the columns as
/// the full read's do.
macro_rules! stream_data_columns {
    () => {
        "NULL, NULL, version, NULL, event_type, schema_version, payload"
    };
}
pub(crate) use stream_data_columns;

/// A stored row that cannot be a valid event, snapshot or record (edited by hand, or written by
/// something else than this crate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stored row{}{} of stream `{stream}` does not fit: {reason}",
    .position.map(|position| format!(" at position {position}")).unwrap_or_default(),
    .version.map(|version| format!(" (version {version})")).unwrap_or_default()
)]
pub struct CorruptRow {
    /// The row's global position, when it is an event's and that could be read.
    pub position: Option<Position>,
    /// The stream the row belongs to, as stored.
    pub stream: String,
    /// The row's version, when that could be read.
    pub version: Option<Version>,
    /// What is wrong with it.
    pub reason: String,
}

/// A `u64` the contract hands over, as an `INTEGER`; values beyond `i64::MAX` cannot be stored
/// and saturate (no stream or log gets that long).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Microseconds since the Unix epoch (negative before it), saturating.
pub(crate) fn micros(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros())
            .map(|micros| -micros)
            .unwrap_or(i64::MIN),
    }
}

fn time_of(micros: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    }
}

/// Where a row is, for its error.
struct Place<'a> {
    position: Option<Position>,
    stream: &'a str,
    version: Option<Version>,
}

impl Place<'_> {
    fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::backend(CorruptRow {
            position: self.position,
            stream: self.stream.to_owned(),
            version: self.version,
            reason: reason.into(),
        })
    }
}

fn column_error(index: usize, error: impl std::fmt::Display) -> String {
    let name = EVENT_COLUMNS
        .split(", ")
        .nth(index)
        .unwrap_or("unknown column");
    format!("{name}: {error}")
}

fn integer(row: &Row<'_>, index: usize) -> Result<i64, String> {
    row.get::<_, i64>(index)
        .map_err(|error| column_error(index, error))
}

fn text<'row>(row: &'row Row<'_>, index: usize) -> Result<&'row str, String> {
    match row
        .get_ref(index)
        .map_err(|error| column_error(index, error))?
    {
        ValueRef::Text(bytes) => {
            std::str::from_utf8(bytes).map_err(|error| column_error(index, error))
        }
        other => Err(column_error(
            index,
            format!("expected text, found {}", other.data_type()),
        )),
    }
}

fn optional_text<'row>(row: &'row Row<'_>, index: usize) -> Result<Option<&'row str>, String> {
    match row
        .get_ref(index)
        .map_err(|error| column_error(index, error))?
    {
        ValueRef::Null => Ok(None),
        _ => text(row, index).map(Some),
    }
}

fn blob<'row>(row: &'row Row<'_>, index: usize) -> Result<&'row [u8], String> {
    match row
        .get_ref(index)
        .map_err(|error| column_error(index, error))?
    {
        ValueRef::Blob(bytes) => Ok(bytes),
        other => Err(column_error(
            index,
            format!("expected a blob, found {}", other.data_type()),
        )),
    }
}

fn uuid(row: &Row<'_>, index: usize) -> Result<Option<Uuid>, String> {
    match row
        .get_ref(index)
        .map_err(|error| column_error(index, error))?
    {
        ValueRef::Null => Ok(None),
        _ => {
            let bytes = blob(row, index)?;
            Uuid::from_slice(bytes)
                .map(Some)
                .map_err(|error| column_error(index, format!("not a UUID: {error}")))
        }
    }
}

fn unsigned(row: &Row<'_>, index: usize) -> Result<u64, String> {
    let value = integer(row, index)?;
    u64::try_from(value).map_err(|_| column_error(index, format!("negative value {value}")))
}

/// Reads a row selected with [`EVENT_COLUMNS`]; the error names its position, stream and version.
pub(crate) fn recorded_event(row: &Row<'_>) -> Result<RecordedEvent, StoreError> {
    event_or_corrupt(row, None)
}

/// Reads a row of `stream` selected with [`EVENT_COLUMNS`] (by a query on that stream: its
/// stored id is `stream`'s, which is shared rather than read and validated again).
pub(crate) fn stream_event(row: &Row<'_>, stream: &StreamId) -> Result<RecordedEvent, StoreError> {
    event_or_corrupt(row, Some(stream))
}

/// Reads a row of `stream` selected with [`stream_data_columns!`], borrowing its type and
/// payload. The rest of the envelope is not read, so a row whose metadata does not fit still
/// decodes.
pub(crate) fn stream_data<'a>(
    row: &'a Row<'_>,
    stream: &'a StreamId,
) -> Result<EventData<'a>, StoreError> {
    data_of(row, stream).map_err(|reason| {
        Place {
            position: None,
            stream: stream.as_str(),
            version: unsigned(row, 2).ok().map(Version),
        }
        .corrupt(reason)
    })
}

fn data_of<'a>(row: &'a Row<'_>, stream: &'a StreamId) -> Result<EventData<'a>, String> {
    let version = Version(unsigned(row, 2)?);
    let event_type = text(row, 4)?;
    let schema_version = schema_version(row)?;
    let payload = blob(row, 6)?;
    Ok(EventData {
        stream,
        version,
        event_type,
        schema_version,
        payload,
    })
}

fn schema_version(row: &Row<'_>) -> Result<u32, String> {
    let schema_version = integer(row, 5)?;
    u32::try_from(schema_version)
        .map_err(|_| column_error(5, format!("{schema_version} is not a u32")))
}

fn event_or_corrupt(row: &Row<'_>, stream: Option<&StreamId>) -> Result<RecordedEvent, StoreError> {
    event_of(row, stream).map_err(|reason| {
        Place {
            position: unsigned(row, 0).ok().map(Position),
            stream: text(row, 1).unwrap_or_default(),
            version: unsigned(row, 2).ok().map(Version),
        }
        .corrupt(reason)
    })
}

fn event_of(row: &Row<'_>, known_stream: Option<&StreamId>) -> Result<RecordedEvent, String> {
    let position = Position(unsigned(row, 0)?);
    let stream = match known_stream {
        Some(stream) => stream.clone(),
        None => StreamId::new(text(row, 1)?).map_err(|error| column_error(1, error))?,
    };
    let version = Version(unsigned(row, 2)?);
    let event_id = uuid(row, 3)?.ok_or_else(|| column_error(3, "NULL"))?;
    let event_type = text(row, 4)?;
    let schema_version = schema_version(row)?;
    let payload = blob(row, 6)?;
    let command_id = optional_text(row, 9)?
        .map(|id| CommandId::new(id).map_err(|error| column_error(9, error)))
        .transpose()?;
    let occurred_at = integer(row, 10)?;
    let timestamp = time_of(occurred_at)
        .ok_or_else(|| column_error(10, format!("{occurred_at} µs is out of range")))?;
    let headers = text(row, 11)?;
    let headers: BTreeMap<String, String> = if headers == "{}" {
        BTreeMap::new()
    } else {
        serde_json::from_str(headers).map_err(|error| column_error(11, error))?
    };
    Ok(RecordedEvent {
        stream,
        version,
        position,
        event_id: EventId(event_id),
        event_type: Cow::Owned(event_type.to_owned()),
        schema_version,
        payload: Payload::from(payload),
        metadata: Metadata {
            correlation_id: uuid(row, 7)?,
            causation_id: uuid(row, 8)?,
            command_id,
            timestamp,
            headers,
        },
    })
}

/// Reads a row selected with [`EVENT_COLUMNS`] for a reader of the streams of `aggregates`
/// (every stream when it is empty), as [`EventStore::read_log`] hands it out: `None` for a row of
/// another stream, of which nothing but the stream id is decoded, and [`LogEntry::Unreadable`]
/// with what could be read for a row that is not a valid event. Only a position that cannot be
/// read at all fails.
///
/// [`EventStore::read_log`]: cqrs_core::EventStore::read_log
pub(crate) fn log_entry(
    row: &Row<'_>,
    aggregates: &[&str],
) -> Result<Option<LogEntry>, StoreError> {
    let position = log_position(row)?;
    let stored = match text(row, 1) {
        Ok(stored) => stored,
        // Nothing says which stream it is, so every reader sees it rather than passing over an
        // event that may be one of theirs.
        Err(reason) => return Ok(Some(unreadable(row, position, "", reason))),
    };
    // The aggregate as `StreamId::aggregate` has it, read off the stored text, so that a stored
    // id that is not a valid `StreamId` is still filtered by its aggregate.
    let aggregate = stored
        .split_once('-')
        .map_or(stored, |(aggregate, _)| aggregate);
    if !aggregates.is_empty() && !aggregates.contains(&aggregate) {
        return Ok(None);
    }
    Ok(Some(match event_of(row, None) {
        Ok(event) => LogEntry::Event(event),
        Err(reason) => unreadable(row, position, stored, reason),
    }))
}

/// The position of a row selected with [`EVENT_COLUMNS`].
pub(crate) fn log_position(row: &Row<'_>) -> Result<Position, StoreError> {
    unsigned(row, 0).map(Position).map_err(|reason| {
        Place {
            position: None,
            stream: "",
            version: None,
        }
        .corrupt(reason)
    })
}

fn unreadable(row: &Row<'_>, position: Position, stream: &str, reason: String) -> LogEntry {
    LogEntry::Unreadable(UnreadableEvent {
        position,
        stream: stream.to_owned(),
        version: unsigned(row, 2).ok().map(Version),
        event_type: text(row, 4).ok().map(str::to_owned),
        reason,
    })
}

/// A version read from a command record or a snapshot of `stream`.
pub(crate) fn stored_version(value: i64, stream: &StreamId) -> Result<Version, StoreError> {
    u64::try_from(value).map(Version).map_err(|_| {
        Place {
            position: None,
            stream: stream.as_str(),
            version: None,
        }
        .corrupt(format!("negative version {value}"))
    })
}

/// A position read from a command record of `stream`, or the head.
pub(crate) fn stored_position(value: i64, stream: &str) -> Result<Position, StoreError> {
    u64::try_from(value).map(Position).map_err(|_| {
        Place {
            position: None,
            stream,
            version: None,
        }
        .corrupt(format!("negative position {value}"))
    })
}

/// A schema version read from a snapshot of `stream`.
pub(crate) fn stored_schema_version(value: i64, stream: &StreamId) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| {
        Place {
            position: None,
            stream: stream.as_str(),
            version: None,
        }
        .corrupt(format!("snapshot schema version {value} is not a u32"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_microsecond_on_both_sides_of_the_epoch() {
        for micros_value in [0, 1, 1_700_000_000_123_456, -1, -86_400_000_001] {
            let time = time_of(micros_value).expect("in range");
            assert_eq!(micros(time), micros_value);
        }
    }
}
