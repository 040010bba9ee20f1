//! cqrs-core's [`StoreAdmin`] for [`PostgresStore`]: streams, processors, migrations and the
//! integrity check.
//!
//! The check runs in one `REPEATABLE READ, READ ONLY` transaction, so that its queries see one
//! snapshot. Holes and version breaks are found by comparing each row with the one before it
//! (`lag` over the position, and over the version within each stream): the server streams
//! through the table and sends only the problems found, at most `limit + 1` of each. Events
//! committed without a position (see the crate docs, "The global order") are listed as
//! [`UnnumberedEvent`]s: for a moment after an append that is normal, an event that stays so is
//! an appender that died before it numbered its events.
//!
//! Stream ids are compared byte by byte (`COLLATE "C"`), whatever the database's collation, so
//! that pages follow the order the trait promises.

use cqrs_core::admin::{
    CheckReport, MigrationState, PositionHole, ProcessorSummary, StoreAdmin, StreamQuery,
    StreamSummary, UnnumberedEvent, VersionBreak, cap,
};
use cqrs_core::{Position, StoreError, Version};

use crate::PostgresStore;
use crate::error::backend;

/// A count, version or position read back as unsigned. The schema's `CHECK`s keep them
/// positive; a negative value (a row written by something else) reads as 0 rather than failing
/// the listing.
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

/// A SQL `LIMIT` of `limit` rows.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl StoreAdmin for PostgresStore {
    async fn streams(&self, query: &StreamQuery) -> Result<Vec<StreamSummary>, StoreError> {
        // A category never holds `-` (see `validate_aggregate_name`): no stream is of such a one.
        if query
            .category
            .as_deref()
            .is_some_and(|category| category.contains('-'))
        {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT stream, max(version), count(*), max(position) FROM cqrs_events \
                 WHERE ($1::text IS NULL OR stream = $1 OR starts_with(stream, $1 || '-')) \
                 AND ($2::text IS NULL OR stream COLLATE \"C\" > $2) \
                 GROUP BY stream ORDER BY stream COLLATE \"C\" LIMIT $3",
                &[&query.category, &query.after, &sql_limit(query.limit)],
            )
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(StreamSummary {
                    stream: row.try_get(0)?,
                    version: Version(unsigned(row.try_get(1)?)),
                    events: unsigned(row.try_get(2)?),
                    last_position: row
                        .try_get::<_, Option<i64>>(3)?
                        .map(|position| Position(unsigned(position))),
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(backend)
    }

    async fn processors(&self) -> Result<Vec<ProcessorSummary>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT n.name, \
                 coalesce((SELECT p.position FROM cqrs_projections p WHERE p.name = n.name), 0), \
                 (SELECT count(*) FROM cqrs_dead_letters d WHERE d.processor = n.name) \
                 FROM (SELECT name FROM cqrs_projections \
                       UNION SELECT processor FROM cqrs_dead_letters) AS n \
                 ORDER BY n.name COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(ProcessorSummary {
                    name: row.try_get(0)?,
                    checkpoint: Position(unsigned(row.try_get(1)?)),
                    dead_letters: unsigned(row.try_get(2)?),
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(backend)
    }

    async fn migrations(&self) -> Result<Vec<MigrationState>, StoreError> {
        let client = self.client().await?;
        let bookkept: bool = client
            .query_one(
                "SELECT to_regclass('cqrs_schema_migrations') IS NOT NULL",
                &[],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(backend)?;
        let applied: Vec<i32> = if bookkept {
            client
                .query("SELECT version FROM cqrs_schema_migrations", &[])
                .await
                .map_err(backend)?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(backend)?
        } else {
            Vec::new()
        };
        Ok(crate::migrate::MIGRATIONS
            .iter()
            .map(|migration| MigrationState {
                version: u32::try_from(migration.version).unwrap_or_default(),
                name: migration.name.to_owned(),
                applied: applied.contains(&migration.version),
            })
            .collect())
    }

    async fn check(&self, limit: usize) -> Result<CheckReport, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(backend)?;
        transaction
            .batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(backend)?;
        let fetch = sql_limit(limit).saturating_add(1);
        let totals = transaction
            .query_one(
                "SELECT count(*), coalesce(max(position), 0), count(DISTINCT stream) \
                 FROM cqrs_events",
                &[],
            )
            .await
            .map_err(backend)?;
        let holes = transaction
            .query(
                "SELECT previous + 1, position - 1 FROM \
                 (SELECT position, lag(position, 1, 0::bigint) OVER (ORDER BY position) AS previous \
                  FROM cqrs_events WHERE position IS NOT NULL) AS numbered \
                 WHERE position > previous + 1 ORDER BY position LIMIT $1",
                &[&fetch],
            )
            .await
            .map_err(backend)?
            .iter()
            .map(|row| {
                Ok(PositionHole {
                    from: Position(unsigned(row.try_get(0)?)),
                    to: Position(unsigned(row.try_get(1)?)),
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(backend)?;
        let breaks = transaction
            .query(
                "SELECT stream, previous + 1, version FROM \
                 (SELECT stream, version, \
                  lag(version, 1, 0::bigint) OVER (PARTITION BY stream ORDER BY version) \
                  AS previous FROM cqrs_events) AS versions \
                 WHERE version <> previous + 1 ORDER BY stream COLLATE \"C\", version LIMIT $1",
                &[&fetch],
            )
            .await
            .map_err(backend)?
            .iter()
            .map(|row| {
                Ok(VersionBreak {
                    stream: row.try_get(0)?,
                    expected: Version(unsigned(row.try_get(1)?)),
                    found: Version(unsigned(row.try_get(2)?)),
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(backend)?;
        let unnumbered = transaction
            .query(
                "SELECT stream, version FROM cqrs_events WHERE position IS NULL \
                 ORDER BY stream COLLATE \"C\", version LIMIT $1",
                &[&fetch],
            )
            .await
            .map_err(backend)?
            .iter()
            .map(|row| {
                Ok(UnnumberedEvent {
                    stream: row.try_get(0)?,
                    version: Version(unsigned(row.try_get(1)?)),
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(backend)?;
        transaction.commit().await.map_err(backend)?;

        let mut report = CheckReport::empty(
            Position(unsigned(totals.try_get(1).map_err(backend)?)),
            limit,
        );
        report.events = unsigned(totals.try_get(0).map_err(backend)?);
        report.streams = unsigned(totals.try_get(2).map_err(backend)?);
        (report.position_holes, report.position_holes_truncated) = cap(holes, limit);
        (report.version_breaks, report.version_breaks_truncated) = cap(breaks, limit);
        (report.unnumbered, report.unnumbered_truncated) = cap(unnumbered, limit);
        Ok(report)
    }
}
