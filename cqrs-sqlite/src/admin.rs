//! cqrs-core's [`StoreAdmin`] for [`SqliteStore`]: streams, processors, migrations and the
//! integrity check, each one read transaction on a read connection.
//!
//! The check compares each row with the one before it (`LAG` over the position, and over the
//! version within each stream), so SQLite streams through the table once per kind of problem
//! and only the problems found (at most `limit + 1` of each) leave the database.

use cqrs_core::admin::{
    CheckReport, MigrationState, PositionHole, ProcessorSummary, StoreAdmin, StreamQuery,
    StreamSummary, VersionBreak, cap,
};
use cqrs_core::{Position, StoreError, Version};
use rusqlite::{Connection, OptionalExtension, params};

use crate::SqliteStore;
use crate::error::backend;

/// A count or position read back as unsigned. The schema's `CHECK`s keep them positive; a
/// negative value (a row written by something else) reads as 0 rather than failing the listing.
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

/// A SQLite `LIMIT` of `limit` rows.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn streams(connection: &Connection, query: &StreamQuery) -> Result<Vec<StreamSummary>, StoreError> {
    // A category never holds `-` (see `validate_aggregate_name`): no stream is of such a one.
    if query
        .category
        .as_deref()
        .is_some_and(|category| category.contains('-'))
    {
        return Ok(Vec::new());
    }
    // The streams of a category are the id equal to it and the ids from `{category}-` up to
    // (not including) `{category}.`, `.` being the character after `-`: a range of the
    // (stream, version) index.
    let mut statement = connection
        .prepare_cached(
            "SELECT stream, max(version), count(*), max(position) FROM cqrs_events \
             WHERE (?1 IS NULL OR stream = ?1 OR (stream >= ?1 || '-' AND stream < ?1 || '.')) \
             AND (?2 IS NULL OR stream > ?2) \
             GROUP BY stream ORDER BY stream LIMIT ?3",
        )
        .map_err(backend("listing streams"))?;
    let rows = statement
        .query_map(
            params![query.category, query.after, sql_limit(query.limit)],
            |row| {
                Ok(StreamSummary {
                    stream: row.get(0)?,
                    version: Version(unsigned(row.get(1)?)),
                    events: unsigned(row.get(2)?),
                    last_position: row.get::<_, Option<i64>>(3)?.map(|p| Position(unsigned(p))),
                })
            },
        )
        .map_err(backend("listing streams"))?;
    rows.collect::<Result<_, _>>()
        .map_err(backend("listing streams"))
}

fn processors(connection: &Connection) -> Result<Vec<ProcessorSummary>, StoreError> {
    let mut statement = connection
        .prepare_cached(
            "SELECT n.name, \
             coalesce((SELECT p.position FROM cqrs_processors p WHERE p.name = n.name), 0), \
             (SELECT count(*) FROM cqrs_dead_letters d WHERE d.processor = n.name) \
             FROM (SELECT name FROM cqrs_processors \
                   UNION SELECT processor FROM cqrs_dead_letters) AS n \
             ORDER BY n.name",
        )
        .map_err(backend("listing processors"))?;
    let rows = statement
        .query_map([], |row| {
            Ok(ProcessorSummary {
                name: row.get(0)?,
                checkpoint: Position(unsigned(row.get(1)?)),
                dead_letters: unsigned(row.get(2)?),
            })
        })
        .map_err(backend("listing processors"))?;
    rows.collect::<Result<_, _>>()
        .map_err(backend("listing processors"))
}

fn migrations(connection: &Connection) -> Result<Vec<MigrationState>, StoreError> {
    let bookkept: Option<i64> = connection
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cqrs_schema_migrations'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend("reading the applied migrations"))?;
    let applied: Vec<u32> = match bookkept {
        None => Vec::new(),
        Some(_) => {
            let mut statement = connection
                .prepare("SELECT version FROM cqrs_schema_migrations")
                .map_err(backend("reading the applied migrations"))?;
            let versions = statement
                .query_map([], |row| row.get(0))
                .map_err(backend("reading the applied migrations"))?;
            versions
                .collect::<Result<_, _>>()
                .map_err(backend("reading the applied migrations"))?
        }
    };
    Ok(crate::migrate::MIGRATIONS
        .iter()
        .map(|migration| MigrationState {
            version: migration.version,
            name: migration.name.to_owned(),
            applied: applied.contains(&migration.version),
        })
        .collect())
}

fn check(connection: &Connection, limit: usize) -> Result<CheckReport, StoreError> {
    // One read transaction: every query sees the same commit.
    let transaction = connection
        .unchecked_transaction()
        .map_err(backend("checking the store"))?;
    let (events, head, streams): (i64, i64, i64) = transaction
        .query_row(
            "SELECT count(*), coalesce(max(position), 0), count(DISTINCT stream) FROM cqrs_events",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .map_err(backend("checking the store"))?;
    let fetch = sql_limit(limit).saturating_add(1);
    let holes: Vec<PositionHole> = transaction
        .prepare(
            "SELECT previous + 1, position - 1 FROM \
             (SELECT position, lag(position, 1, 0) OVER (ORDER BY position) AS previous \
              FROM cqrs_events) \
             WHERE position > previous + 1 ORDER BY position LIMIT ?1",
        )
        .and_then(|mut statement| {
            statement
                .query_map([fetch], |row| {
                    Ok(PositionHole {
                        from: Position(unsigned(row.get(0)?)),
                        to: Position(unsigned(row.get(1)?)),
                    })
                })?
                .collect()
        })
        .map_err(backend("checking positions"))?;
    let breaks: Vec<VersionBreak> = transaction
        .prepare(
            "SELECT stream, previous + 1, version FROM \
             (SELECT stream, version, \
              lag(version, 1, 0) OVER (PARTITION BY stream ORDER BY version) AS previous \
              FROM cqrs_events) \
             WHERE version <> previous + 1 ORDER BY stream, version LIMIT ?1",
        )
        .and_then(|mut statement| {
            statement
                .query_map([fetch], |row| {
                    Ok(VersionBreak {
                        stream: row.get(0)?,
                        expected: Version(unsigned(row.get(1)?)),
                        found: Version(unsigned(row.get(2)?)),
                    })
                })?
                .collect()
        })
        .map_err(backend("checking versions"))?;
    let mut report = CheckReport::empty(Position(unsigned(head)), limit);
    report.events = unsigned(events);
    report.streams = unsigned(streams);
    (report.position_holes, report.position_holes_truncated) = cap(holes, limit);
    (report.version_breaks, report.version_breaks_truncated) = cap(breaks, limit);
    // Positions are assigned in the write transaction: no event ever waits for one.
    Ok(report)
}

#[async_trait::async_trait]
impl StoreAdmin for SqliteStore {
    async fn streams(&self, query: &StreamQuery) -> Result<Vec<StreamSummary>, StoreError> {
        let query = query.clone();
        self.read(move |connection| streams(connection, &query))
            .await
    }

    async fn processors(&self) -> Result<Vec<ProcessorSummary>, StoreError> {
        self.read(processors).await
    }

    async fn migrations(&self) -> Result<Vec<MigrationState>, StoreError> {
        self.read(migrations).await
    }

    async fn check(&self, limit: usize) -> Result<CheckReport, StoreError> {
        self.read(move |connection| check(connection, limit)).await
    }
}
