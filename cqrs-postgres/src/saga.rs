//! A PostgreSQL [`SagaStore`]: a saga's checkpoint, dead letters and leader lock (shared with
//! projections, see [`crate::processor`]) and its instances (state and deadlines), each commit
//! in one transaction.
//!
//! ```no_run
//! use cqrs_core::processor::ProcessorStore as _;
//! use cqrs_postgres::{PostgresSagaStore, PostgresStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::new("host=/var/run/postgresql user=app dbname=app")?;
//! store.migrate().await?;
//! let sagas = PostgresSagaStore::new(store.clone());
//! assert_eq!(sagas.checkpoint("checkout").await?, cqrs_core::Position::START);
//! // SagaProcessor::<Checkout, _, _>::new(store, bus, sagas).runner().spawn() ...
//! # Ok(())
//! # }
//! ```
//!
//! A saga's checkpoint is its row in `cqrs_projections` and its dead letters are rows of
//! `cqrs_dead_letters`, as for every processor; its instances are rows of `cqrs_saga_instances`
//! (state and deadlines as JSON, the instance's own position, and the earliest pending
//! deadline, indexed, so that finding due deadlines does not read every instance).
//! [`SagaStore::commit`] locks the checkpoint row (`SELECT ... FOR UPDATE`) when the commit
//! expects a checkpoint, checks it, and writes the checkpoint, the instances, the dead letters
//! and the removal of a retried one in the same transaction: all or nothing.

use std::time::SystemTime;

use cqrs_core::processor::{CommitError, DeadLetter, Lease, ProcessorStore};
use cqrs_core::saga::{Deadline, InstanceRecord, SagaCommit, SagaStore};
use cqrs_core::{Position, StoreError};

use crate::processor::{
    expect_checkpoint, move_checkpoint, record_dead_letters, record_error, remove_dead_letter,
    remove_dead_letters, stored_position,
};
use crate::{PostgresStore, Transaction};

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
        rows.iter().map(|row| instance_record(saga, row)).collect()
    }
}

fn instance_record(saga: &str, row: &tokio_postgres::Row) -> Result<InstanceRecord, StoreError> {
    let instance: String = row.try_get(0).map_err(crate::error::backend)?;
    let state: String = row.try_get(1).map_err(crate::error::backend)?;
    let position: i64 = row.try_get(2).map_err(crate::error::backend)?;
    let finished: bool = row.try_get(3).map_err(crate::error::backend)?;
    let deadlines: String = row.try_get(4).map_err(crate::error::backend)?;
    let what = || format!("instance `{instance}`");
    Ok(InstanceRecord {
        state: serde_json::from_str(&state).map_err(|error| {
            record_error(
                saga,
                what(),
                format!("has a state that does not decode: {error}"),
            )
        })?,
        position: stored_position(position, saga, &format!("the position of {}", what()))?,
        finished,
        deadlines: serde_json::from_str(&deadlines).map_err(|error| {
            record_error(
                saga,
                what(),
                format!("has deadlines that do not decode: {error}"),
            )
        })?,
        instance,
    })
}

/// Stores `record` as instance of `saga`, replacing its earlier record.
async fn store_instance(
    transaction: &Transaction<'_>,
    saga: &str,
    record: &InstanceRecord,
) -> Result<(), StoreError> {
    let (state, deadlines) = record.encode().map_err(|error| {
        record_error(
            saga,
            format!("instance `{}`", record.instance),
            error.to_string(),
        )
    })?;
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
                &record.next_due(),
            ],
        )
        .await
        .map_err(crate::error::backend)?;
    Ok(())
}

#[async_trait::async_trait]
impl SagaStore for PostgresSagaStore {
    async fn set_checkpoint(&self, saga: &str, position: Position) -> Result<(), StoreError> {
        let mut client = self.store.client().await?;
        let transaction = client.transaction().await.map_err(crate::error::backend)?;
        move_checkpoint(&transaction, saga, position).await?;
        transaction.commit().await.map_err(crate::error::backend)
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
        row.as_ref()
            .map(|row| instance_record(saga, row))
            .transpose()
    }

    async fn commit(&self, saga: &'static str, commit: SagaCommit) -> Result<(), CommitError> {
        let mut client = self.store.client().await?;
        let transaction = client.transaction().await.map_err(crate::error::backend)?;
        if let Some(expected) = commit.expected {
            expect_checkpoint(&transaction, saga, expected).await?;
        }
        if let Some(position) = commit.checkpoint
            && commit.expected != Some(position)
        {
            move_checkpoint(&transaction, saga, position).await?;
        }
        for record in &commit.instances {
            store_instance(&transaction, saga, record).await?;
        }
        record_dead_letters(&transaction, saga, &commit.dead_letters).await?;
        if let Some(retried) = &commit.retried {
            remove_dead_letter(&transaction, saga, retried).await?;
        }
        transaction.commit().await.map_err(crate::error::backend)?;
        Ok(())
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
            let record = instance_record(saga, row)?;
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

    async fn forget(&self, saga: &str) -> Result<(), StoreError> {
        let mut client = self.store.client().await?;
        let transaction = client.transaction().await.map_err(crate::error::backend)?;
        // The checkpoint goes back to the start rather than its row away: the row's `lock_id`
        // keys the leader lock, which a node may hold right now, and a new row would get a new
        // one, letting a second node lead.
        move_checkpoint(&transaction, saga, Position::START).await?;
        transaction
            .execute("DELETE FROM cqrs_saga_instances WHERE saga = $1", &[&saga])
            .await
            .map_err(crate::error::backend)?;
        remove_dead_letters(&transaction, saga).await?;
        transaction.commit().await.map_err(crate::error::backend)
    }
}

/// The checkpoints, dead letters and leader locks of sagas are those of every processor, kept
/// by [`PostgresStore`]'s [`ProcessorStore`].
#[async_trait::async_trait]
impl ProcessorStore for PostgresSagaStore {
    async fn checkpoint(&self, saga: &str) -> Result<Position, StoreError> {
        self.store.checkpoint(saga).await
    }

    async fn dead_letters(&self, saga: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.store.dead_letters(saga).await
    }

    async fn discard_dead_letter(&self, saga: &str, id: &str) -> Result<bool, StoreError> {
        self.store.discard_dead_letter(saga, id).await
    }

    async fn lead(&self, saga: &str) -> Result<Option<Lease>, StoreError> {
        self.store.lead(saga).await
    }
}
