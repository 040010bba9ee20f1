//! Where processors (projections and sagas) keep their checkpoints and dead letters in the
//! SQLite file: cqrs-core's [`ProcessorStore`] for [`SqliteStore`].
//!
//! Every processor has one row in `cqrs_processors` (its name and checkpoint) and its dead
//! letters are rows of `cqrs_dead_letters`, each the JSON of a [`DeadLetter`]. Projections and
//! sagas share the scheme and so one namespace of names, as on PostgreSQL. A
//! [`SqliteProjector`](crate::SqliteProjector) and a [`SqliteSagaStore`](crate::SqliteSagaStore)
//! commit a batch as one piece of work on the store's writer (see [`SqliteStore::write`]): the
//! checkpoint is read and compared with the one the runner expects, the batch's effects and dead
//! letters written and the checkpoint moved, all under the file's one write lock and in one
//! transaction.
//!
//! The leader lease is [`Lease::unopposed`] (the trait's default): a file is served by one
//! process, whose store grants every lease. Should two processes run the same processor on one
//! file, the checkpoint comparison under the write lock still keeps them from both committing
//! the same events: the second gets [`CommitError::CheckpointMoved`].

use cqrs_core::processor::{CommitError, DeadLetter, Lease, ProcessorStore};
use cqrs_core::{Position, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use tracing::Instrument as _;

use crate::SqliteStore;
use crate::error::{backend, record_error};
use crate::rows;

/// The DEBUG span of one processor store call (`db.operation.name`: `checkpoint`,
/// `dead_letters`, `discard_dead_letter`, `commit`, `reset`, `saga_commit`, ...).
pub(crate) fn span(operation: &'static str, processor: &str) -> tracing::Span {
    cqrs_core::telemetry::store::processor_store_span(crate::store::SYSTEM, operation, processor)
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

/// The checkpoint of `processor` ([`Position::START`] for a new one).
pub(crate) fn checkpoint(connection: &Connection, processor: &str) -> Result<Position, StoreError> {
    let stored: Option<i64> = connection
        .prepare_cached("SELECT position FROM cqrs_processors WHERE name = ?1")
        .and_then(|mut statement| {
            statement
                .query_row([processor], |row| row.get(0))
                .optional()
        })
        .map_err(backend("reading a checkpoint"))?;
    match stored {
        Some(value) => stored_position(value, processor, "the checkpoint"),
        None => Ok(Position::START),
    }
}

/// Checks that the checkpoint of `processor` is `expected`: otherwise another runner (or a
/// rebuild) moved it, and nothing may be committed. Run on the writer, under the write lock, so
/// the checkpoint cannot move before the commit.
pub(crate) fn expect_checkpoint(
    connection: &Connection,
    processor: &'static str,
    expected: Position,
) -> Result<(), CommitError> {
    let actual = checkpoint(connection, processor)?;
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
pub(crate) fn move_checkpoint(
    connection: &Connection,
    processor: &str,
    position: Position,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT INTO cqrs_processors (name, position, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
             updated_at = excluded.updated_at",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                processor,
                rows::to_i64(position.0),
                crate::migrate::now_micros()
            ])
        })
        .map_err(backend("moving a checkpoint"))?;
    Ok(())
}

/// Records `letters` as dead letters of `processor`, each replacing an earlier one of its id.
pub(crate) fn record_dead_letters(
    connection: &Connection,
    processor: &str,
    letters: &[DeadLetter],
) -> Result<(), StoreError> {
    if letters.is_empty() {
        return Ok(());
    }
    let mut insert = connection
        .prepare_cached(
            "INSERT INTO cqrs_dead_letters (processor, id, position, record, parked_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (processor, id) DO UPDATE SET position = excluded.position, \
             record = excluded.record, parked_at = excluded.parked_at",
        )
        .map_err(backend("recording a dead letter"))?;
    for letter in letters {
        let record = serde_json::to_string(letter).map_err(|error| {
            record_error(
                processor,
                format!("dead letter `{}`", letter.id),
                format!("cannot be encoded: {error}"),
            )
        })?;
        let position = letter.position().map(|position| rows::to_i64(position.0));
        insert
            .execute(params![
                processor,
                letter.id,
                position,
                record,
                crate::migrate::now_micros()
            ])
            .map_err(backend("recording a dead letter"))?;
    }
    Ok(())
}

/// Removes the dead letter `id` of `processor`; `false` when there was none.
pub(crate) fn remove_dead_letter(
    connection: &Connection,
    processor: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let removed = connection
        .prepare_cached("DELETE FROM cqrs_dead_letters WHERE processor = ?1 AND id = ?2")
        .and_then(|mut statement| statement.execute([processor, id]))
        .map_err(backend("removing a dead letter"))?;
    Ok(removed > 0)
}

/// Removes every dead letter of `processor` (a rebuild's, a forgotten saga's).
pub(crate) fn remove_dead_letters(
    connection: &Connection,
    processor: &str,
) -> Result<(), StoreError> {
    connection
        .prepare_cached("DELETE FROM cqrs_dead_letters WHERE processor = ?1")
        .and_then(|mut statement| statement.execute([processor]))
        .map_err(backend("removing dead letters"))?;
    Ok(())
}

/// The dead letters of `processor`, in the order of the other stores: deadlines first, then by
/// position, then by id.
fn dead_letters(connection: &Connection, processor: &str) -> Result<Vec<DeadLetter>, StoreError> {
    let stored: Vec<(String, String)> = connection
        .prepare_cached("SELECT id, record FROM cqrs_dead_letters WHERE processor = ?1")
        .and_then(|mut statement| {
            statement
                .query_map([processor], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(backend("reading dead letters"))?;
    let mut letters = Vec::with_capacity(stored.len());
    for (id, record) in stored {
        let letter: DeadLetter = serde_json::from_str(&record).map_err(|error| {
            record_error(
                processor,
                format!("dead letter `{id}`"),
                format!("does not decode: {error}"),
            )
        })?;
        letters.push(letter);
    }
    letters.sort_by(|a, b| (a.position(), &a.id).cmp(&(b.position(), &b.id)));
    Ok(letters)
}

#[async_trait::async_trait]
impl ProcessorStore for SqliteStore {
    async fn checkpoint(&self, processor: &str) -> Result<Position, StoreError> {
        let processor = processor.to_owned();
        let span = span("checkpoint", &processor);
        self.read(move |connection| checkpoint(connection, &processor))
            .instrument(span)
            .await
    }

    async fn dead_letters(&self, processor: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let processor = processor.to_owned();
        let span = span("dead_letters", &processor);
        self.read(move |connection| dead_letters(connection, &processor))
            .instrument(span)
            .await
    }

    async fn discard_dead_letter(&self, processor: &str, id: &str) -> Result<bool, StoreError> {
        let (processor, id) = (processor.to_owned(), id.to_owned());
        let span = span("discard_dead_letter", &processor);
        self.write(move |connection| remove_dead_letter(connection, &processor, &id))
            .instrument(span)
            .await?
    }

    async fn lead(&self, processor: &str) -> Result<Option<Lease>, StoreError> {
        let _ = processor;
        Ok(Some(Lease::unopposed()))
    }
}
