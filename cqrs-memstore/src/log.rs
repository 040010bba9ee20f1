//! The global log: every recorded event once, in position order.

use cqrs_core::{LogBatch, LogEntry, Position, RecordedEvent};

/// How many events one segment of the log holds.
///
/// The log grows by whole segments instead of reallocating one vector, so an append never copies
/// the whole history (a pause for readers and twice the memory at the moment of the copy).
const SEGMENT_LEN: usize = 1 << 14;

/// Every event of the store, stored once; the event at position `p` is at index `p - 1`, because
/// positions are contiguous from 1.
#[derive(Default)]
pub(crate) struct Log {
    /// Every segment but the last holds exactly [`SEGMENT_LEN`] events.
    segments: Vec<Vec<RecordedEvent>>,
    len: u64,
}

impl Log {
    /// The position of the last event, [`Position::START`] when the log is empty.
    pub(crate) fn head(&self) -> Position {
        Position(self.len)
    }

    /// Appends `event`, which must carry the position after [`Log::head`].
    pub(crate) fn push(&mut self, event: RecordedEvent) {
        debug_assert_eq!(event.position, Position(self.len + 1));
        match self.segments.last_mut() {
            Some(segment) if segment.len() < SEGMENT_LEN => segment.push(event),
            _ => {
                let mut segment = Vec::with_capacity(if self.segments.is_empty() {
                    // A small store should not reserve a whole segment up front.
                    16
                } else {
                    SEGMENT_LEN
                });
                segment.push(event);
                self.segments.push(segment);
            }
        }
        self.len += 1;
    }

    /// The event at `position`, if the log holds it.
    pub(crate) fn get(&self, position: Position) -> Option<&RecordedEvent> {
        let index = usize::try_from(position.0).ok()?.checked_sub(1)?;
        self.segments
            .get(index / SEGMENT_LEN)?
            .get(index % SEGMENT_LEN)
    }

    /// How many events after `after` a read of at most `limit` covers.
    fn count_after(&self, after: Position, limit: usize) -> usize {
        let remaining = self.len.saturating_sub(after.0);
        usize::try_from(remaining).map_or(limit, |remaining| remaining.min(limit))
    }

    /// The events of up to `limit` positions after `after`, in position order, as the slices
    /// of the segments that hold them.
    fn slices_after(
        &self,
        after: Position,
        limit: usize,
    ) -> impl Iterator<Item = &[RecordedEvent]> + '_ {
        // `after < len` whenever anything is left to read, so `after` fits in a usize then.
        let mut index = usize::try_from(after.0).unwrap_or(usize::MAX);
        let end = index.saturating_add(self.count_after(after, limit));
        std::iter::from_fn(move || {
            if index >= end {
                return None;
            }
            let segment = self.segments.get(index / SEGMENT_LEN)?;
            let start = index % SEGMENT_LEN;
            let take = (end - index).min(segment.len().saturating_sub(start));
            let events = segment
                .get(start..start + take)
                .filter(|events| !events.is_empty())?;
            index += take;
            Some(events)
        })
    }

    /// Clones up to `limit` events after `after` into a new vector, in position order.
    pub(crate) fn read_after(&self, after: Position, limit: usize) -> Vec<RecordedEvent> {
        let mut events = Vec::with_capacity(self.count_after(after, limit));
        for slice in self.slices_after(after, limit) {
            events.extend_from_slice(slice);
        }
        events
    }

    /// Up to `limit` positions after `after`, as [`EventStore::read_log`] hands them out: only
    /// the events of `aggregates`' streams are cloned, and `last` covers the others too.
    ///
    /// [`EventStore::read_log`]: cqrs_core::EventStore::read_log
    pub(crate) fn read_log_after(
        &self,
        after: Position,
        limit: usize,
        aggregates: &[&str],
    ) -> LogBatch {
        let mut batch = LogBatch::default();
        for slice in self.slices_after(after, limit) {
            batch.entries.extend(
                slice
                    .iter()
                    .filter(|event| event.stream.is_of_any(aggregates))
                    .cloned()
                    .map(LogEntry::Event),
            );
            batch.last = slice.last().map(|event| event.position);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::{EventId, Metadata, StreamId, Version};

    fn event(position: u64) -> RecordedEvent {
        RecordedEvent {
            stream: StreamId::new("log-test").expect("valid stream id"),
            version: Version(position),
            position: Position(position),
            event_id: EventId::new(),
            event_type: "Tested".into(),
            schema_version: 1,
            payload: "{}".into(),
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn reads_across_segment_boundaries() {
        let mut log = Log::default();
        let total = 2 * SEGMENT_LEN as u64 + 5;
        for position in 1..=total {
            log.push(event(position));
        }
        assert_eq!(log.head(), Position(total));
        assert_eq!(log.segments.len(), 3);

        let after = SEGMENT_LEN as u64 - 3;
        let read = log.read_after(Position(after), 10);
        let positions: Vec<u64> = read.iter().map(|event| event.position.0).collect();
        assert_eq!(positions, (after + 1..=after + 10).collect::<Vec<_>>());

        let all = log.read_after(Position::START, usize::MAX);
        assert_eq!(all.len() as u64, total);
        assert!(
            all.iter()
                .zip(1..)
                .all(|(event, position)| event.position.0 == position)
        );

        assert!(log.read_after(Position(total), 10).is_empty());
        assert!(log.read_after(Position(u64::MAX), 10).is_empty());
        assert!(log.read_after(Position::START, 0).is_empty());
        assert_eq!(log.read_after(Position(total - 2), 10).len(), 2);

        for position in [1, SEGMENT_LEN as u64, SEGMENT_LEN as u64 + 1, total] {
            let found = log.get(Position(position)).map(|event| event.position);
            assert_eq!(found, Some(Position(position)));
        }
        assert!(log.get(Position::START).is_none());
        assert!(log.get(Position(total + 1)).is_none());
    }
}
