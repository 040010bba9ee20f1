//! A PostgreSQL [`SagaStore`]: a saga's checkpoint, its instances (state and deadlines) and its
//! failures, each commit in one transaction.
//!
//! ```no_run
//! use cqrs_core::saga::SagaStore;
//! use cqrs_postgres::{PostgresSagaStore, PostgresStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::new("host=/var/run/postgresql user=app dbname=app")?;
//! store.migrate().await?;
//! let sagas = PostgresSagaStore::new(store.clone());
//! assert_eq!(sagas.checkpoint("checkout").await?, cqrs_core::Position::START);
//! // SagaRunner::new(store, bus, sagas) ...
//! # Ok(())
//! # }
//! ```
//!
//! The tables are `cqrs_saga_checkpoints` (one row per saga), `cqrs_saga_instances` (one row per
//! instance: state and deadlines as JSON, the instance's own position, and the earliest pending
//! deadline, indexed, so that finding due deadlines does not read every instance) and
//! `cqrs_saga_failures`. [`SagaStore::commit`] writes the checkpoint, the instance and the
//! failure of one commit in one transaction: all or nothing.

use std::time::SystemTime;

use cqrs_core::saga::{Deadline, FailureRecord, InstanceRecord, SagaCommit, SagaStore};
use cqrs_core::{Position, StoreError};

use crate::PostgresStore;

/// A [`SagaStore`] in the database of a [`PostgresStore`], sharing its connection pool. Clones
/// share the pool. Run [`PostgresStore::migrate`] first.
#[derive(Debug, Clone)]
pub struct PostgresSagaStore {
    store: PostgresStore,
}

impl PostgresSagaStore {
    /// A saga store in `store`'s database.
    pub fn new(store: PostgresStore) -> Self {
        PostgresSagaStore { store }
    }

    /// Every instance of `saga`, ordered by instance id, for inspection.
    pub async fn instances(&self, saga: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        let client = self.store.client().await?;
        let rows = client
            .query(
                "SELECT instance, state::text, position, finished, deadlines::text \
                 FROM cqrs_saga_instances WHERE saga = $1 ORDER BY instance",
                &[&saga],
            )
            .await
            .map_err(crate::error::backend)?;
        rows.iter().map(instance_record).collect()
    }
}

fn instance_record(row: &tokio_postgres::Row) -> Result<InstanceRecord, StoreError> {
    let instance: String = row.try_get(0).map_err(crate::error::backend)?;
    let state: String = row.try_get(1).map_err(crate::error::backend)?;
    let position: i64 = row.try_get(2).map_err(crate::error::backend)?;
    let finished: bool = row.try_get(3).map_err(crate::error::backend)?;
    let deadlines: String = row.try_get(4).map_err(crate::error::backend)?;
    Ok(InstanceRecord {
        state: serde_json::from_str(&state).map_err(StoreError::backend)?,
        position: position_of(position, &instance)?,
        finished,
        deadlines: serde_json::from_str(&deadlines).map_err(StoreError::backend)?,
        instance,
    })
}

fn position_of(value: i64, what: &str) -> Result<Position, StoreError> {
    u64::try_from(value).map(Position).map_err(|_| {
        StoreError::backend(crate::CorruptRow {
            stream: what.to_owned(),
            reason: format!("negative saga position {value}"),
        })
    })
}

/// The earliest deadline an instance still waits for: none once it finished.
fn next_due(record: &InstanceRecord) -> Option<SystemTime> {
    if record.finished {
        return None;
    }
    record.deadlines.iter().map(|deadline| deadline.due).min()
}

#[async_trait::async_trait]
impl SagaStore for PostgresSagaStore {
    async fn checkpoint(&self, saga: &str) -> Result<Position, StoreError> {
        let client = self.store.client().await?;
        let statement = client
            .prepare_cached("SELECT position FROM cqrs_saga_checkpoints WHERE saga = $1")
            .await
            .map_err(crate::error::backend)?;
        let row = client
            .query_opt(&statement, &[&saga])
            .await
            .map_err(crate::error::backend)?;
        match row {
            Some(row) => position_of(row.try_get(0).map_err(crate::error::backend)?, saga),
            None => Ok(Position::START),
        }
    }

    async fn set_checkpoint(&self, saga: &str, position: Position) -> Result<(), StoreError> {
        let client = self.store.client().await?;
        let position = crate::rows::to_i64(position.0);
        client
            .execute(
                "INSERT INTO cqrs_saga_checkpoints (saga, position) VALUES ($1, $2) \
                 ON CONFLICT (saga) DO UPDATE SET position = excluded.position",
                &[&saga, &position],
            )
            .await
            .map_err(crate::error::backend)?;
        Ok(())
    }

    async fn instance(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let client = self.store.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT instance, state::text, position, finished, deadlines::text \
                 FROM cqrs_saga_instances WHERE saga = $1 AND instance = $2",
            )
            .await
            .map_err(crate::error::backend)?;
        let row = client
            .query_opt(&statement, &[&saga, &instance])
            .await
            .map_err(crate::error::backend)?;
        row.as_ref().map(instance_record).transpose()
    }

    async fn commit(&self, saga: &str, commit: SagaCommit) -> Result<(), StoreError> {
        let mut client = self.store.client().await?;
        let transaction = client.transaction().await.map_err(crate::error::backend)?;
        if let Some(position) = commit.position {
            let position = crate::rows::to_i64(position.0);
            let statement = transaction
                .prepare_cached(
                    "INSERT INTO cqrs_saga_checkpoints (saga, position) VALUES ($1, $2) \
                     ON CONFLICT (saga) DO UPDATE SET position = excluded.position",
                )
                .await
                .map_err(crate::error::backend)?;
            transaction
                .execute(&statement, &[&saga, &position])
                .await
                .map_err(crate::error::backend)?;
        }
        if let Some(record) = &commit.instance {
            let state = serde_json::to_string(&record.state).map_err(StoreError::backend)?;
            let deadlines =
                serde_json::to_string(&record.deadlines).map_err(StoreError::backend)?;
            let position = crate::rows::to_i64(record.position.0);
            let statement = transaction
                .prepare_cached(
                    "INSERT INTO cqrs_saga_instances \
                     (saga, instance, state, position, finished, deadlines, next_due) \
                     VALUES ($1, $2, $3::text::json, $4, $5, $6::text::json, $7) \
                     ON CONFLICT (saga, instance) DO UPDATE SET state = excluded.state, \
                     position = excluded.position, finished = excluded.finished, \
                     deadlines = excluded.deadlines, next_due = excluded.next_due",
                )
                .await
                .map_err(crate::error::backend)?;
            transaction
                .execute(
                    &statement,
                    &[
                        &saga,
                        &record.instance,
                        &state,
                        &position,
                        &record.finished,
                        &deadlines,
                        &next_due(record),
                    ],
                )
                .await
                .map_err(crate::error::backend)?;
        }
        if let Some(failure) = &commit.failure {
            let failure = serde_json::to_string(failure).map_err(StoreError::backend)?;
            transaction
                .execute(
                    "INSERT INTO cqrs_saga_failures (saga, record) VALUES ($1, $2::text::json)",
                    &[&saga, &failure],
                )
                .await
                .map_err(crate::error::backend)?;
        }
        transaction.commit().await.map_err(crate::error::backend)
    }

    async fn due_deadlines(
        &self,
        saga: &str,
        now: SystemTime,
    ) -> Result<Vec<(String, Deadline)>, StoreError> {
        let client = self.store.client().await?;
        // `next_due` is stored to the microsecond, truncated: it never lies after the deadline,
        // so this finds every instance with one due; the exact comparison is made below.
        let rows = client
            .query(
                "SELECT instance, state::text, position, finished, deadlines::text \
                 FROM cqrs_saga_instances WHERE saga = $1 AND next_due <= $2",
                &[&saga, &now],
            )
            .await
            .map_err(crate::error::backend)?;
        let mut due = Vec::new();
        for row in &rows {
            let record = instance_record(row)?;
            for deadline in record.deadlines {
                if deadline.due <= now {
                    due.push((record.instance.clone(), deadline));
                }
            }
        }
        due.sort_by(|(a_instance, a), (b_instance, b)| {
            (a.due, a_instance, &a.id).cmp(&(b.due, b_instance, &b.id))
        });
        Ok(due)
    }

    async fn next_deadline(&self, saga: &str) -> Result<Option<SystemTime>, StoreError> {
        let client = self.store.client().await?;
        // Every instance whose truncated earliest deadline is the smallest: the exact earliest
        // deadline is among them.
        let rows = client
            .query(
                "SELECT deadlines::text FROM cqrs_saga_instances WHERE saga = $1 AND next_due = \
                 (SELECT min(next_due) FROM cqrs_saga_instances WHERE saga = $1)",
                &[&saga],
            )
            .await
            .map_err(crate::error::backend)?;
        let mut earliest: Option<SystemTime> = None;
        for row in &rows {
            let deadlines: String = row.try_get(0).map_err(crate::error::backend)?;
            let deadlines: Vec<Deadline> =
                serde_json::from_str(&deadlines).map_err(StoreError::backend)?;
            for deadline in deadlines {
                earliest = Some(earliest.map_or(deadline.due, |due| due.min(deadline.due)));
            }
        }
        Ok(earliest)
    }

    async fn failures(&self, saga: &str) -> Result<Vec<FailureRecord>, StoreError> {
        let client = self.store.client().await?;
        let rows = client
            .query(
                "SELECT record::text FROM cqrs_saga_failures WHERE saga = $1 ORDER BY id",
                &[&saga],
            )
            .await
            .map_err(crate::error::backend)?;
        rows.iter()
            .map(|row| {
                let record: String = row.try_get(0).map_err(crate::error::backend)?;
                serde_json::from_str(&record).map_err(StoreError::backend)
            })
            .collect()
    }
}
