//! Where processors (projections and sagas) keep their checkpoints and dead letters in
//! PostgreSQL, and how the nodes agree on which of them runs each one: cqrs-core's
//! [`ProcessorStore`] for [`PostgresStore`].
//!
//! Every processor has one row in `cqrs_projections`: its name, its checkpoint, and the
//! `lock_id` of its leader lock. Its dead letters are rows of `cqrs_dead_letters`, each the
//! JSON of a [`DeadLetter`]. Projections and sagas share the scheme (and so one namespace of
//! names): a [`PostgresProjector`](crate::PostgresProjector) and a
//! [`PostgresSagaStore`](crate::PostgresSagaStore) commit a batch in one transaction that locks
//! the processor's row (`SELECT ... FOR UPDATE`), checks that the checkpoint is the one its
//! runner expects, writes the batch's effects and dead letters and moves the checkpoint.
//!
//! [`lead`](ProcessorStore::lead) takes the processor's leader lock: the session-level advisory
//! lock `pg_try_advisory_lock(7305271, lock_id)` ([`LEADER_LOCK_CLASS`]), on a connection of
//! its own outside the pool, which the [`Lease`] holds. When that
//! connection closes (the process died, the server restarted or terminated the session), the
//! server releases the lock and the lease's `lost()` resolves, so that a node stops leading
//! when it may no longer be the only one; the row lock and the checkpoint comparison of every
//! commit keep two leaders from committing the same events even in the moment before it notices.

use cqrs_core::processor::{CommitError, DeadLetter, Lease, ProcessorStore};
use cqrs_core::{Position, StoreError};

use crate::{PostgresStore, Transaction};

/// The first key of every processor's leader lock (the second is its `lock_id` in
/// `cqrs_projections`).
pub const LEADER_LOCK_CLASS: i32 = 7_305_271;

/// A processor's stored record (checkpoint, dead letter, saga instance) that does not read back
/// (edited by hand, written by something else than this crate), or a record that cannot be
/// written.
#[derive(Debug, thiserror::Error)]
#[error("{what} of processor `{processor}` {reason}")]
pub struct ProcessorRecordError {
    /// The processor.
    pub processor: String,
    /// Which record: `the checkpoint`, `dead letter \`12\``, `instance \`order-7\``.
    pub what: String,
    /// What is wrong with it: `does not decode: ...`, `cannot be encoded: ...`.
    pub reason: String,
}

/// A [`ProcessorRecordError`] as a store error.
pub(crate) fn record_error(
    processor: &str,
    what: impl Into<String>,
    reason: impl Into<String>,
) -> StoreError {
    StoreError::backend(ProcessorRecordError {
        processor: processor.to_owned(),
        what: what.into(),
        reason: reason.into(),
    })
}

/// A stored checkpoint (or saga position) of `processor` as a position.
pub(crate) fn stored_position(
    value: i64,
    processor: &str,
    what: &str,
) -> Result<Position, StoreError> {
    u64::try_from(value)
        .map(Position)
        .map_err(|_| record_error(processor, what, format!("is negative ({value})")))
}

/// Makes sure `processor` has its row in `cqrs_projections`; returns its lock id.
pub(crate) async fn register(
    client: &tokio_postgres::Client,
    processor: &str,
) -> Result<i32, StoreError> {
    let row = client
        .query_one(
            "WITH inserted AS (INSERT INTO cqrs_projections (name) VALUES ($1) \
             ON CONFLICT (name) DO NOTHING RETURNING lock_id) \
             SELECT lock_id FROM inserted \
             UNION ALL SELECT lock_id FROM cqrs_projections WHERE name = $1",
            &[&processor],
        )
        .await
        .map_err(crate::error::backend)?;
    row.try_get(0).map_err(crate::error::backend)
}

/// Locks the checkpoint row of `processor` until the transaction ends (creating it at
/// [`Position::START`] for a new processor) and returns the checkpoint.
pub(crate) async fn lock_checkpoint(
    transaction: &Transaction<'_>,
    processor: &str,
) -> Result<Position, StoreError> {
    let select = transaction
        .prepare_cached("SELECT position FROM cqrs_projections WHERE name = $1 FOR UPDATE")
        .await
        .map_err(crate::error::backend)?;
    let mut row = transaction
        .query_opt(&select, &[&processor])
        .await
        .map_err(crate::error::backend)?;
    if row.is_none() {
        // A new processor. Its row must exist before it is locked: two first commits that both
        // found no row would otherwise both go ahead. The insert waits for a concurrent one,
        // and the second select then locks the row whichever inserted it.
        let insert = transaction
            .prepare_cached(
                "INSERT INTO cqrs_projections (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            )
            .await
            .map_err(crate::error::backend)?;
        transaction
            .execute(&insert, &[&processor])
            .await
            .map_err(crate::error::backend)?;
        row = transaction
            .query_opt(&select, &[&processor])
            .await
            .map_err(crate::error::backend)?;
    }
    match row {
        Some(row) => stored_position(
            row.try_get(0).map_err(crate::error::backend)?,
            processor,
            "the checkpoint",
        ),
        None => Err(record_error(
            processor,
            "the checkpoint row",
            "was deleted while it was being locked",
        )),
    }
}

/// Locks the checkpoint row of `processor` and checks that the checkpoint is `expected`:
/// otherwise another runner (or a rebuild) moved it, and nothing may be committed.
pub(crate) async fn expect_checkpoint(
    transaction: &Transaction<'_>,
    processor: &'static str,
    expected: Position,
) -> Result<(), CommitError> {
    let actual = lock_checkpoint(transaction, processor).await?;
    if actual != expected {
        return Err(CommitError::CheckpointMoved {
            processor,
            expected,
            actual,
        });
    }
    Ok(())
}

/// Sets the checkpoint of `processor` to `position` (creating its row if need be).
pub(crate) async fn move_checkpoint(
    transaction: &Transaction<'_>,
    processor: &str,
    position: Position,
) -> Result<(), StoreError> {
    let statement = transaction
        .prepare_cached(
            "INSERT INTO cqrs_projections (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()",
        )
        .await
        .map_err(crate::error::backend)?;
    let position = crate::rows::to_i64(position.0);
    transaction
        .execute(&statement, &[&processor, &position])
        .await
        .map_err(crate::error::backend)?;
    Ok(())
}

/// Records `letters` as dead letters of `processor`, each replacing an earlier one of its id.
pub(crate) async fn record_dead_letters(
    transaction: &Transaction<'_>,
    processor: &str,
    letters: &[DeadLetter],
) -> Result<(), StoreError> {
    if letters.is_empty() {
        return Ok(());
    }
    let statement = transaction
        .prepare_cached(
            "INSERT INTO cqrs_dead_letters (processor, id, position, record) \
             VALUES ($1, $2, $3, $4::text::json) \
             ON CONFLICT (processor, id) DO UPDATE SET position = excluded.position, \
             record = excluded.record, parked_at = now()",
        )
        .await
        .map_err(crate::error::backend)?;
    for letter in letters {
        let record = serde_json::to_string(letter).map_err(|error| {
            record_error(
                processor,
                format!("dead letter `{}`", letter.id),
                format!("cannot be encoded: {error}"),
            )
        })?;
        let position = letter
            .position()
            .map(|position| crate::rows::to_i64(position.0));
        transaction
            .execute(&statement, &[&processor, &letter.id, &position, &record])
            .await
            .map_err(crate::error::backend)?;
    }
    Ok(())
}

/// Removes the dead letter `id` of `processor` (the one a commit retried).
pub(crate) async fn remove_dead_letter(
    transaction: &Transaction<'_>,
    processor: &str,
    id: &str,
) -> Result<(), StoreError> {
    let statement = transaction
        .prepare_cached("DELETE FROM cqrs_dead_letters WHERE processor = $1 AND id = $2")
        .await
        .map_err(crate::error::backend)?;
    transaction
        .execute(&statement, &[&processor, &id])
        .await
        .map_err(crate::error::backend)?;
    Ok(())
}

/// Removes every dead letter of `processor` (a rebuild's, a forgotten saga's).
pub(crate) async fn remove_dead_letters(
    transaction: &Transaction<'_>,
    processor: &str,
) -> Result<(), StoreError> {
    transaction
        .execute(
            "DELETE FROM cqrs_dead_letters WHERE processor = $1",
            &[&processor],
        )
        .await
        .map_err(crate::error::backend)?;
    Ok(())
}

#[async_trait::async_trait]
impl ProcessorStore for PostgresStore {
    async fn checkpoint(&self, processor: &str) -> Result<Position, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT position FROM cqrs_projections WHERE name = $1")
            .await
            .map_err(crate::error::backend)?;
        let row = client
            .query_opt(&statement, &[&processor])
            .await
            .map_err(crate::error::backend)?;
        match row {
            Some(row) => stored_position(
                row.try_get(0).map_err(crate::error::backend)?,
                processor,
                "the checkpoint",
            ),
            None => Ok(Position::START),
        }
    }

    async fn dead_letters(&self, processor: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT id, record::text FROM cqrs_dead_letters WHERE processor = $1")
            .await
            .map_err(crate::error::backend)?;
        let rows = client
            .query(&statement, &[&processor])
            .await
            .map_err(crate::error::backend)?;
        let mut letters = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: &str = row.try_get(0).map_err(crate::error::backend)?;
            let record: &str = row.try_get(1).map_err(crate::error::backend)?;
            let letter: DeadLetter = serde_json::from_str(record).map_err(|error| {
                record_error(
                    processor,
                    format!("dead letter `{id}`"),
                    format!("does not decode: {error}"),
                )
            })?;
            letters.push(letter);
        }
        // The order of the in-memory stores: deadlines first, then by position.
        letters.sort_by(|a, b| (a.position(), &a.id).cmp(&(b.position(), &b.id)));
        Ok(letters)
    }

    async fn discard_dead_letter(&self, processor: &str, id: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("DELETE FROM cqrs_dead_letters WHERE processor = $1 AND id = $2")
            .await
            .map_err(crate::error::backend)?;
        let deleted = client
            .execute(&statement, &[&processor, &id])
            .await
            .map_err(crate::error::backend)?;
        Ok(deleted > 0)
    }

    async fn lead(&self, processor: &str) -> Result<Option<Lease>, StoreError> {
        crate::lease::lead(self, processor).await
    }
}
