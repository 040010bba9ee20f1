//! What a store holds before a run: the aggregates and events earlier runs left, counted from
//! the log, for the first line of a run that continues them.

use std::fmt;
use std::io::Write;

use cqrs_core::{EventStore, Position, Version};

use crate::Error;
use crate::database::Database;

/// Events read per call while counting.
const BATCH: usize = 1_000;

/// The aggregates and events earlier runs left in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierRuns {
    /// For each aggregate asked about, by the plural its count is shown with: how many streams.
    pub aggregates: Vec<(&'static str, u64)>,
    /// Events in the log, of every stream.
    pub events: u64,
}

impl EarlierRuns {
    /// Reads the whole log of `store` and counts the streams of each aggregate in `aggregates`
    /// (pairs of the aggregate's name and the plural to show, `("show", "shows")`): a stream is
    /// counted at its first event.
    pub async fn survey<S: EventStore>(
        store: &S,
        aggregates: &[(&str, &'static str)],
    ) -> Result<Self, Error> {
        let mut found = EarlierRuns {
            aggregates: aggregates.iter().map(|(_, plural)| (*plural, 0)).collect(),
            events: 0,
        };
        let mut after = Position::START;
        loop {
            let events = store.read_all(after, BATCH).await?;
            let Some(last) = events.last() else { break };
            after = last.position;
            found.events += events.len() as u64;
            for event in events.iter().filter(|event| event.version == Version(1)) {
                let aggregate = event.stream.aggregate();
                if let Some(index) = aggregates.iter().position(|(name, _)| *name == aggregate) {
                    found.aggregates[index].1 += 1;
                }
            }
        }
        Ok(found)
    }

    /// Whether the store held nothing at all.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }
}

impl fmt::Display for EarlierRuns {
    /// `found 4 shows, 6 bookings, 57 events from earlier runs.` or `a new database.`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "a new database.");
        }
        write!(f, "found ")?;
        for (plural, count) in &self.aggregates {
            write!(f, "{count} {plural}, ")?;
        }
        write!(f, "{} events from earlier runs.", self.events)
    }
}

/// Writes a run's first line: where its events go, and what earlier runs left there
/// (`On SQLite (shows.db): found 4 shows, 6 bookings, 57 events from earlier runs.`).
pub async fn introduce<S: EventStore, W: Write>(
    store: &S,
    database: &Database,
    aggregates: &[(&str, &'static str)],
    out: &mut W,
) -> Result<EarlierRuns, Error> {
    let found = EarlierRuns::survey(store, aggregates).await?;
    match database {
        Database::Memory => writeln!(
            out,
            "In memory: nothing is kept (without --memory the events go to a SQLite file)."
        )?,
        Database::Sqlite(_) | Database::Postgres(_) => writeln!(out, "On {database}: {found}")?,
    }
    Ok(found)
}
