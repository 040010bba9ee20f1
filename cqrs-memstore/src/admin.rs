//! cqrs-core's [`StoreAdmin`] for [`MemStore`]: its streams, and the integrity check run over
//! the log it holds.
//!
//! Positions are indexes into the log and versions are indexes into each stream's list of
//! positions, so the check finds no problem unless the store itself is broken; it runs anyway,
//! for the same report every store gives. Processors keep their checkpoints beside the
//! in-memory store, not in it, and it has no schema: it lists no processor and no migration.

use std::collections::HashMap;
use std::sync::Arc;

use cqrs_core::admin::{
    CheckReport, MigrationState, PositionHole, ProcessorSummary, StoreAdmin, StreamQuery,
    StreamSummary, VersionBreak, cap,
};
use cqrs_core::{Position, StoreError, StreamId, Version};

use crate::{MemStore, lock, read};

impl MemStore {
    fn stream_summaries(&self, query: &StreamQuery) -> Vec<StreamSummary> {
        // The stream locks are taken after the map's lock is released.
        let streams: Vec<_> = read(&self.inner.streams)
            .iter()
            .filter(|(stream, _)| {
                query
                    .category
                    .as_deref()
                    .is_none_or(|category| stream.is_of(category))
                    && query
                        .after
                        .as_deref()
                        .is_none_or(|after| stream.as_str() > after)
            })
            .map(|(stream, state)| (stream.clone(), Arc::clone(state)))
            .collect();
        let mut summaries: Vec<StreamSummary> = streams
            .into_iter()
            .filter_map(|(stream, state)| {
                let state = lock(&state);
                let last_position = *state.positions.last()?;
                Some(StreamSummary {
                    stream: stream.to_string(),
                    version: state.version(),
                    events: state.version().0,
                    last_position: Some(last_position),
                })
            })
            .collect();
        summaries.sort_by(|a, b| a.stream.cmp(&b.stream));
        summaries.truncate(query.limit);
        summaries
    }

    fn check_now(&self, limit: usize) -> CheckReport {
        let log = read(&self.inner.log);
        let head = log.head();
        let mut holes = Vec::new();
        let mut breaks = Vec::new();
        let mut versions: HashMap<StreamId, Version> = HashMap::new();
        let mut missing_from: Option<Position> = None;
        let mut events = 0;
        for position in (1..=head.0).map(Position) {
            let Some(event) = log.get(position).filter(|event| event.position == position) else {
                missing_from.get_or_insert(position);
                continue;
            };
            events += 1;
            if let Some(from) = missing_from.take() {
                if holes.len() <= limit {
                    holes.push(PositionHole {
                        from,
                        to: Position(position.0 - 1),
                    });
                }
            }
            let last = versions
                .entry(event.stream.clone())
                .or_insert(Version::INITIAL);
            if event.version != last.next() && breaks.len() <= limit {
                breaks.push(VersionBreak {
                    stream: event.stream.to_string(),
                    expected: last.next(),
                    found: event.version,
                });
            }
            *last = event.version;
        }
        breaks.sort_by(|a, b| (&a.stream, a.found).cmp(&(&b.stream, b.found)));
        let mut report = CheckReport::empty(head, limit);
        report.events = events;
        report.streams = versions.len() as u64;
        (report.position_holes, report.position_holes_truncated) = cap(holes, limit);
        (report.version_breaks, report.version_breaks_truncated) = cap(breaks, limit);
        report
    }
}

#[async_trait::async_trait]
impl StoreAdmin for MemStore {
    async fn streams(&self, query: &StreamQuery) -> Result<Vec<StreamSummary>, StoreError> {
        Ok(self.stream_summaries(query))
    }

    async fn processors(&self) -> Result<Vec<ProcessorSummary>, StoreError> {
        Ok(Vec::new())
    }

    async fn migrations(&self) -> Result<Vec<MigrationState>, StoreError> {
        Ok(Vec::new())
    }

    async fn check(&self, limit: usize) -> Result<CheckReport, StoreError> {
        Ok(self.check_now(limit))
    }
}
