//! Reading one stream's events in version order, for the store and for turns: the whole envelope
//! ([`EventStore::visit_stream`]) or only what decoding needs ([`EventStore::visit_stream_data`]),
//! with one handling of the events that have no position yet.
//!
//! [`EventStore::visit_stream`]: cqrs_core::EventStore::visit_stream
//! [`EventStore::visit_stream_data`]: cqrs_core::EventStore::visit_stream_data

use cqrs_core::{EventData, RecordedEvent, StoreError, StreamId, Version};
use futures_util::{TryStreamExt, pin_mut};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::backend;
use crate::rows;

/// A way of reading a stream's rows: the columns it selects, and how it hands a row over.
pub(crate) trait StreamRows: Send {
    /// The columns selected, in the order [`hand_over`](StreamRows::hand_over) reads them.
    const COLUMNS: &'static str;

    /// Hands the event of `row` (of `stream`) to the visitor, or, for an event that has no
    /// position yet, hands nothing over and returns its version.
    fn hand_over(&mut self, row: &Row, stream: &StreamId) -> Result<Option<i64>, StoreError>;
}

/// Hands each whole [`RecordedEvent`] to the visitor.
pub(crate) struct Envelopes<'v> {
    /// One event, refilled from each row: the visitor only borrows it.
    event: Option<RecordedEvent>,
    visit: &'v mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
}

impl<'v> Envelopes<'v> {
    pub(crate) fn new(
        visit: &'v mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
    ) -> Self {
        Envelopes { event: None, visit }
    }
}

impl StreamRows for Envelopes<'_> {
    const COLUMNS: &'static str = rows::STREAM_EVENT_COLUMNS;

    fn hand_over(&mut self, row: &Row, stream: &StreamId) -> Result<Option<i64>, StoreError> {
        if let Some(pending) = rows::read_stream_event(row, stream, &mut self.event)? {
            return Ok(Some(pending));
        }
        if let Some(event) = &self.event {
            (self.visit)(event)?;
        }
        Ok(None)
    }
}

/// Hands each event's [`EventData`] to the visitor, borrowed from its row: nothing is copied.
pub(crate) struct Data<'v> {
    visit: &'v mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
}

impl<'v> Data<'v> {
    pub(crate) fn new(
        visit: &'v mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Self {
        Data { visit }
    }
}

impl StreamRows for Data<'_> {
    const COLUMNS: &'static str = rows::STREAM_DATA_COLUMNS;

    fn hand_over(&mut self, row: &Row, stream: &StreamId) -> Result<Option<i64>, StoreError> {
        match rows::stream_data(row, stream)? {
            rows::StreamRow::Numbered(data) => {
                (self.visit)(data)?;
                Ok(None)
            }
            rows::StreamRow::Unnumbered(version) => Ok(Some(version)),
        }
    }
}

/// Hands up to `limit` events of `stream`, from version `from` on, to `rows`' visitor, on
/// `client`: the store's reads, and a turn's within its transaction.
///
/// Events are read in one query and handed over as they arrive. A stream's unnumbered events
/// (committed, their appender not yet through `cqrs_settle`) can only be its last ones: the
/// reader numbers them itself and goes on from there, so that it never misses a committed event
/// nor hands one over without its position.
pub(crate) async fn visit_stream_on<R: StreamRows>(
    client: &deadpool_postgres::ClientWrapper,
    stream: &StreamId,
    from: Version,
    limit: usize,
    rows: &mut R,
) -> Result<usize, StoreError> {
    let Ok(mut from) = i64::try_from(from.0) else {
        return Ok(0);
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut visited: i64 = 0;
    while visited < limit {
        let pending =
            visit_numbered(client, stream, from, limit - visited, &mut visited, rows).await?;
        let Some(pending) = pending else {
            break;
        };
        client
            .execute("SELECT cqrs_sequence_pending()", &[])
            .await
            .map_err(backend)?;
        from = pending;
    }
    Ok(usize::try_from(visited).unwrap_or(usize::MAX))
}

/// Hands the events of `stream` from version `from` on to `rows`' visitor until the first
/// unnumbered one, whose version it returns.
async fn visit_numbered<R: StreamRows>(
    client: &deadpool_postgres::ClientWrapper,
    stream: &StreamId,
    from: i64,
    limit: i64,
    visited: &mut i64,
    rows: &mut R,
) -> Result<Option<i64>, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {} FROM cqrs_events WHERE stream = $1 AND version >= $2 \
             ORDER BY version LIMIT $3",
            R::COLUMNS
        ))
        .await
        .map_err(backend)?;
    let params: [&(dyn ToSql + Sync); 3] = [&stream.as_str(), &from, &limit];
    let found = client
        .query_raw(&statement, params)
        .await
        .map_err(backend)?;
    pin_mut!(found);
    while let Some(row) = found.try_next().await.map_err(backend)? {
        if let Some(pending) = rows.hand_over(&row, stream)? {
            return Ok(Some(pending));
        }
        *visited += 1;
    }
    Ok(None)
}
