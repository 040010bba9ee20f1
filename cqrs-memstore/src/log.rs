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

    /// Clones up to `limit` events after `after` into a new vector, in position order.
    pub(crate) fn read_after(&self, after: Position, limit: usize) -> Vec<RecordedEvent> {
        let remaining = self.len.saturating_sub(after.0);
        let count = usize::try_from(remaining).map_or(limit, |remaining| remaining.min(limit));
        let mut events = Vec::with_capacity(count);
        // `after < len` whenever `count > 0`, so `after` fits in a usize.
        let Ok(mut index) = usize::try_from(after.0) else {
            return events;
        };
        while events.len() < count {
            let Some(segment) = self.segments.get(index / SEGMENT_LEN) else {
                break;
            };
            let start = index % SEGMENT_LEN;
            let take = (count - events.len()).min(segment.len().saturating_sub(start));
            if take == 0 {
                break;
            }
            events.extend_from_slice(&segment[start..start + take]);
            index += take;
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
        let remaining = self.len.saturating_sub(after.0);
        let count = usize::try_from(remaining).map_or(limit, |remaining| remaining.min(limit));
        let mut batch = LogBatch::default();
        let Ok(mut index) = usize::try_from(after.0) else {
            return batch;
        };
        let end = index.saturating_add(count);
        while index < end {
            let Some(segment) = self.segments.get(index / SEGMENT_LEN) else {
                break;
            };
            let start = index % SEGMENT_LEN;
            let take = (end - index).min(segment.len().saturating_sub(start));
            let Some(events) = segment
                .get(start..start + take)
                .filter(|events| !events.is_empty())
            else {
                break;
            };
            batch.entries.extend(
                events
                    .iter()
                    .filter(|event| event.stream.is_of_any(aggregates))
                    .cloned()
                    .map(LogEntry::Event),
            );
            batch.last = events.last().map(|event| event.position);
            index += take;
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
