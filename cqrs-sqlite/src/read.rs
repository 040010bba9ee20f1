//! Reading one stream's rows on a read connection, for [`read_stream`] and for the visits: whole
//! events, or only what decoding needs ([`visit_stream_data`]), collected in chunks that the
//! blocking pool hands over to the visitor.
//!
//! [`read_stream`]: cqrs_core::EventStore::read_stream
//! [`visit_stream_data`]: cqrs_core::EventStore::visit_stream_data

use cqrs_core::{EventData, RecordedEvent, StoreError, StreamId, Version};
use rusqlite::{Connection, Row, params};

use crate::error::backend;
use crate::rows;

/// A chunk of a stream's events, read on the blocking pool and visited on the caller's task.
pub(crate) trait StreamChunk: Send + 'static {
    /// The statement that selects a stream's rows from a version on, at most a number of them.
    const QUERY: &'static str;

    /// An empty chunk with room for `events` events.
    fn with_capacity(events: usize) -> Self;

    /// Adds the event of `row`, a row of `stream` selected with [`QUERY`](StreamChunk::QUERY).
    fn push(&mut self, row: &Row<'_>, stream: &StreamId) -> Result<(), StoreError>;

    /// How many events it holds.
    fn len(&self) -> usize;
}

impl StreamChunk for Vec<RecordedEvent> {
    const QUERY: &'static str = concat!(
        "SELECT ",
        rows::event_columns!(),
        " FROM cqrs_events WHERE stream = ?1 AND version >= ?2 ORDER BY version LIMIT ?3"
    );

    fn with_capacity(events: usize) -> Self {
        Vec::with_capacity(events)
    }

    fn push(&mut self, row: &Row<'_>, stream: &StreamId) -> Result<(), StoreError> {
        Vec::push(self, rows::stream_event(row, stream)?);
        Ok(())
    }

    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// Events as a reader that only decodes needs them. The type names and payloads of a chunk share
/// two buffers, so that a chunk costs a few allocations however many events it holds, where a
/// [`RecordedEvent`] costs several of its own.
#[derive(Debug, Default)]
pub(crate) struct DataChunk {
    events: Vec<ChunkEvent>,
    event_types: String,
    payloads: Vec<u8>,
}

/// One event of a [`DataChunk`]: its type name and payload end where these say, in the chunk's
/// buffers, and start where the previous event's end.
#[derive(Debug)]
struct ChunkEvent {
    version: Version,
    schema_version: u32,
    event_type_end: usize,
    payload_end: usize,
}

impl DataChunk {
    /// Hands each event to `visit`, in order, as [`EventData`] of `stream`; stops at the first
    /// error `visit` returns.
    pub(crate) fn visit(
        &self,
        stream: &StreamId,
        visit: &mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Result<(), StoreError> {
        let (mut event_type_start, mut payload_start) = (0, 0);
        for event in &self.events {
            // The ends were taken from the buffers as they grew, so these ranges are in them.
            let event_type = self
                .event_types
                .get(event_type_start..event.event_type_end)
                .unwrap_or_default();
            let payload = self
                .payloads
                .get(payload_start..event.payload_end)
                .unwrap_or_default();
            visit(EventData {
                stream,
                version: event.version,
                event_type,
                schema_version: event.schema_version,
                payload,
            })?;
            (event_type_start, payload_start) = (event.event_type_end, event.payload_end);
        }
        Ok(())
    }
}

impl StreamChunk for DataChunk {
    const QUERY: &'static str = concat!(
        "SELECT ",
        rows::stream_data_columns!(),
        " FROM cqrs_events WHERE stream = ?1 AND version >= ?2 ORDER BY version LIMIT ?3"
    );

    fn with_capacity(events: usize) -> Self {
        DataChunk {
            events: Vec::with_capacity(events),
            ..DataChunk::default()
        }
    }

    fn push(&mut self, row: &Row<'_>, stream: &StreamId) -> Result<(), StoreError> {
        let data = rows::stream_data(row, stream)?;
        self.event_types.push_str(data.event_type);
        self.payloads.extend_from_slice(data.payload);
        self.events.push(ChunkEvent {
            version: data.version,
            schema_version: data.schema_version,
            event_type_end: self.event_types.len(),
            payload_end: self.payloads.len(),
        });
        Ok(())
    }

    fn len(&self) -> usize {
        self.events.len()
    }
}

/// Hands the rows of `stream` from `from` (at most `limit`) selected with `C`'s query to `sink`,
/// in order, until it answers `false`.
pub(crate) fn stream_rows<C: StreamChunk>(
    connection: &Connection,
    stream: &StreamId,
    from: Version,
    limit: usize,
    mut sink: impl FnMut(&Row<'_>) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut statement = connection
        .prepare_cached(C::QUERY)
        .map_err(backend("reading a stream"))?;
    let mut found = statement
        .query(params![
            stream.as_str(),
            rows::to_i64(from.0),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ])
        .map_err(backend("reading a stream"))?;
    while let Some(row) = found.next().map_err(backend("reading a stream"))? {
        if !sink(row)? {
            break;
        }
    }
    Ok(())
}
