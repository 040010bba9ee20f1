//! Turning rows back into the core's types, with a typed error for a row that does not fit.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::SystemTime;

use cqrs_core::{
    CommandId, EventId, Metadata, Payload, Position, RecordedEvent, StoreError, StreamId, Version,
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

/// One row of `cqrs_events`.
pub(crate) enum Read {
    /// A numbered event.
    Numbered(RecordedEvent),
    /// A committed event that has no position yet.
    Pending {
        /// Its version.
        version: i64,
    },
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
    stream: &str,
) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|error| corrupt(stream, format!("column {index}: {error}")))
}

/// Reads a row selected with [`EVENT_COLUMNS`]. `known` is the stream when the query was for one
/// (its id is then not parsed again).
pub(crate) fn recorded_event(row: &Row, known: Option<&StreamId>) -> Result<Read, StoreError> {
    let stored: &str = get(row, 0, "")?;
    let stream = match known {
        Some(stream) if stream.as_str() == stored => stream.clone(),
        _ => StreamId::new(stored).map_err(|error| corrupt(stored, error.to_string()))?,
    };
    let version_number: i64 = get(row, 1, stored)?;
    let Some(position_number) = get::<Option<i64>>(row, 2, stored)? else {
        return Ok(Read::Pending {
            version: version_number,
        });
    };
    let event_type: &str = get(row, 4, stored)?;
    let schema_version: i64 = get(row, 5, stored)?;
    let schema_version = u32::try_from(schema_version)
        .map_err(|_| corrupt(stored, format!("schema version {schema_version}")))?;
    let payload: &[u8] = get(row, 6, stored)?;
    let command_id: Option<&str> = get(row, 9, stored)?;
    let headers: &str = get(row, 11, stored)?;
    let headers: BTreeMap<String, String> = if headers == "{}" {
        BTreeMap::new()
    } else {
        serde_json::from_str(headers)
            .map_err(|error| corrupt(stored, format!("headers: {error}")))?
    };
    Ok(Read::Numbered(RecordedEvent {
        version: version(version_number, &stream)?,
        position: position(position_number, &stream)?,
        event_id: EventId(get::<Uuid>(row, 3, stored)?),
        event_type: Cow::Owned(event_type.to_owned()),
        schema_version,
        payload: Payload::from(payload),
        metadata: Metadata {
            correlation_id: get(row, 7, stored)?,
            causation_id: get(row, 8, stored)?,
            command_id: command_id.map(CommandId::from),
            timestamp: get::<SystemTime>(row, 10, stored)?,
            headers,
        },
        stream,
    }))
}

/// What `cqrs_append` or `cqrs_append_batch` answered for one append.
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
