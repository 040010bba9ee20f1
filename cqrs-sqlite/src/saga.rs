//! A SQLite [`SagaStore`]: a saga's checkpoint and dead letters (shared with projections, see
//! [`crate::processor`]) and its instances (state and deadlines), each commit one piece of work
//! in the writer's transaction.
//!
//! A saga's instances are rows of `cqrs_saga_instances`: state and deadlines as JSON text, the
//! instance's own position, and the earliest pending deadline (`next_due`, microseconds rounded
//! down, indexed), so that finding due deadlines does not read every instance.
//! [`SagaStore::commit`] runs on the store's writer: it compares the checkpoint with the one
//! the commit expects, then writes the checkpoint, the instances, the dead letters and the
//! removal of a retried one in the same savepoint of the same transaction: all or nothing.

use std::time::SystemTime;

use cqrs_core::processor::{CommitError, DeadLetter, Lease, ProcessorStore};
use cqrs_core::saga::{Deadline, InstanceRecord, SagaCommit, SagaStore};
use cqrs_core::{Position, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tracing::Instrument as _;

use crate::SqliteStore;
use crate::error::{backend, record_error};
use crate::processor::{
    expect_checkpoint, move_checkpoint, record_dead_letters, remove_dead_letter,
    remove_dead_letters, span, stored_position,
};

/// A [`SagaStore`] in the file of a [`SqliteStore`], committing through its writer. Clones share
/// the store. Run [`SqliteStore::migrate`] first.
#[derive(Debug, Clone)]
pub struct SqliteSagaStore {
    store: SqliteStore,
}

impl SqliteSagaStore {
    /// A saga store in `store`'s file.
    pub fn new(store: SqliteStore) -> Self {
        SqliteSagaStore { store }
    }

    /// Every instance of `saga`, ordered by instance id, for inspection.
    pub async fn instances(&self, saga: &str) -> Result<Vec<InstanceRecord>, StoreError> {
        let saga = saga.to_owned();
        self.store
            .read(move |connection| {
                let stored: Vec<StoredInstance> = connection
                    .prepare_cached(&format!(
                        "SELECT {INSTANCE_COLUMNS} FROM cqrs_saga_instances \
                         WHERE saga = ?1 ORDER BY instance"
                    ))
                    .and_then(|mut statement| {
                        statement.query_map([&saga], StoredInstance::of)?.collect()
                    })
                    .map_err(backend("reading saga instances"))?;
                stored
                    .into_iter()
                    .map(|stored| stored.decode(&saga))
                    .collect()
            })
            .await
    }
}

const INSTANCE_COLUMNS: &str = "instance, state, position, finished, deadlines";

/// An instance's row, before its JSON is decoded.
struct StoredInstance {
    instance: String,
    state: String,
    position: i64,
    finished: bool,
    deadlines: String,
}

impl StoredInstance {
    fn of(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(StoredInstance {
            instance: row.get(0)?,
            state: row.get(1)?,
            position: row.get(2)?,
            finished: row.get(3)?,
            deadlines: row.get(4)?,
        })
    }

    fn decode(self, saga: &str) -> Result<InstanceRecord, StoreError> {
        let what = || format!("instance `{}`", self.instance);
        Ok(InstanceRecord {
            state: serde_json::from_str(&self.state).map_err(|error| {
                record_error(
                    saga,
                    what(),
                    format!("has a state that does not decode: {error}"),
                )
            })?,
            position: stored_position(self.position, saga, &format!("the position of {}", what()))?,
            finished: self.finished,
            deadlines: serde_json::from_str(&self.deadlines).map_err(|error| {
                record_error(
                    saga,
                    what(),
                    format!("has deadlines that do not decode: {error}"),
                )
            })?,
            instance: self.instance,
        })
    }
}

/// `time` in microseconds since the epoch, rounded down: never after `time`, so that a search
/// by `next_due <= floor(now)` finds every instance with a deadline due by `now` (the exact
/// comparison is made on the decoded deadlines).
fn floor_micros(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let whole = before.as_micros() + u128::from(before.subsec_nanos() % 1_000 != 0);
            i64::try_from(whole)
                .map(|micros| -micros)
                .unwrap_or(i64::MIN)
        }
    }
}

/// Stores `record` as instance of `saga`, replacing its earlier record.
fn store_instance(
    connection: &Connection,
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
    connection
        .prepare_cached(
            "INSERT INTO cqrs_saga_instances \
             (saga, instance, state, position, finished, deadlines, next_due) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (saga, instance) DO UPDATE SET state = excluded.state, \
             position = excluded.position, finished = excluded.finished, \
             deadlines = excluded.deadlines, next_due = excluded.next_due",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                saga,
                record.instance,
                state,
                crate::rows::to_i64(record.position.0),
                record.finished,
                deadlines,
                record.next_due().map(floor_micros),
            ])
        })
        .map_err(backend("storing a saga instance"))?;
    Ok(())
}

/// Writes `commit` of `saga` on the writer's connection.
fn commit_on(
    connection: &Connection,
    saga: &'static str,
    commit: &SagaCommit,
) -> Result<(), CommitError> {
    if let Some(expected) = commit.expected {
        expect_checkpoint(connection, saga, expected)?;
    }
    if let Some(position) = commit.checkpoint
        && commit.expected != Some(position)
    {
        move_checkpoint(connection, saga, position)?;
    }
    for record in &commit.instances {
        store_instance(connection, saga, record)?;
    }
    record_dead_letters(connection, saga, &commit.dead_letters)?;
    if let Some(retried) = &commit.retried {
        remove_dead_letter(connection, saga, retried)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl SagaStore for SqliteSagaStore {
    async fn set_checkpoint(&self, saga: &str, position: Position) -> Result<(), StoreError> {
        let saga_name = saga;
        let saga = saga.to_owned();
        self.store
            .write(move |connection| move_checkpoint(connection, &saga, position))
            .instrument(span("set_checkpoint", saga_name))
            .await?
    }

    async fn instance(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let saga_name = saga;
        let (saga, instance) = (saga.to_owned(), instance.to_owned());
        self.store
            .read(move |connection| {
                let stored = connection
                    .prepare_cached(&format!(
                        "SELECT {INSTANCE_COLUMNS} FROM cqrs_saga_instances \
                         WHERE saga = ?1 AND instance = ?2"
                    ))
                    .and_then(|mut statement| {
                        statement
                            .query_row([&saga, &instance], StoredInstance::of)
                            .optional()
                    })
                    .map_err(backend("reading a saga instance"))?;
                stored.map(|stored| stored.decode(&saga)).transpose()
            })
            .instrument(span("saga_instance", saga_name))
            .await
    }

    async fn commit(&self, saga: &'static str, commit: SagaCommit) -> Result<(), CommitError> {
        self.store
            .write(move |connection| commit_on(connection, saga, &commit))
            .instrument(span("saga_commit", saga))
            .await?
    }

    async fn due_deadlines(
        &self,
        saga: &str,
        now: SystemTime,
    ) -> Result<Vec<(String, Deadline)>, StoreError> {
        let saga_name = saga;
        let saga = saga.to_owned();
        let records = self
            .store
            .read(move |connection| {
                let stored: Vec<StoredInstance> = connection
                    .prepare_cached(&format!(
                        "SELECT {INSTANCE_COLUMNS} FROM cqrs_saga_instances \
                         WHERE saga = ?1 AND next_due IS NOT NULL AND next_due <= ?2"
                    ))
                    .and_then(|mut statement| {
                        statement
                            .query_map(params![saga, floor_micros(now)], StoredInstance::of)?
                            .collect()
                    })
                    .map_err(backend("reading due saga deadlines"))?;
                stored
                    .into_iter()
                    .map(|stored| stored.decode(&saga))
                    .collect::<Result<Vec<_>, _>>()
            })
            .instrument(span("due_deadlines", saga_name))
            .await?;
        let mut due = Vec::new();
        for record in records {
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
        let saga_name = saga;
        let saga = saga.to_owned();
        self.store
            .read(move |connection| {
                // Every instance whose rounded earliest deadline is the smallest: the exact
                // earliest deadline is among them.
                let stored: Vec<String> = connection
                    .prepare_cached(
                        "SELECT deadlines FROM cqrs_saga_instances WHERE saga = ?1 AND next_due = \
                         (SELECT min(next_due) FROM cqrs_saga_instances WHERE saga = ?1)",
                    )
                    .and_then(|mut statement| {
                        statement.query_map([&saga], |row| row.get(0))?.collect()
                    })
                    .map_err(backend("reading the next saga deadline"))?;
                let mut earliest: Option<SystemTime> = None;
                for deadlines in stored {
                    let deadlines: Vec<Deadline> =
                        serde_json::from_str(&deadlines).map_err(|error| {
                            record_error(
                                &saga,
                                "the deadlines of an instance",
                                format!("do not decode: {error}"),
                            )
                        })?;
                    for deadline in deadlines {
                        earliest = Some(earliest.map_or(deadline.due, |due| due.min(deadline.due)));
                    }
                }
                Ok(earliest)
            })
            .instrument(span("next_deadline", saga_name))
            .await
    }

    async fn forget(&self, saga: &str) -> Result<(), StoreError> {
        let saga_name = saga;
        let saga = saga.to_owned();
        self.store
            .write(move |connection| {
                move_checkpoint(connection, &saga, Position::START)?;
                connection
                    .prepare_cached("DELETE FROM cqrs_saga_instances WHERE saga = ?1")
                    .and_then(|mut statement| statement.execute([&saga]))
                    .map_err(backend("forgetting a saga"))?;
                remove_dead_letters(connection, &saga)
            })
            .instrument(span("forget", saga_name))
            .await?
    }
}

/// The checkpoints, dead letters and leases of sagas are those of every processor, kept by
/// [`SqliteStore`]'s [`ProcessorStore`].
#[async_trait::async_trait]
impl ProcessorStore for SqliteSagaStore {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scratch::ScratchFile;

    fn instance(id: &str, due: SystemTime) -> InstanceRecord {
        InstanceRecord {
            instance: id.to_owned(),
            state: serde_json::json!({ "step": 1, "note": "é" }),
            position: Position(4),
            finished: false,
            deadlines: vec![Deadline {
                name: "timeout".to_owned(),
                due,
                id: format!("{id}/timeout"),
                correlation_id: None,
                causation_id: None,
                attempts: 2,
            }],
        }
    }

    /// What a commit stored reads back equal from a new store on the file (the deadline to the
    /// nanosecond, from the JSON rather than the rounded `next_due`), and a state edited into
    /// something that is not JSON is an error naming the saga and the instance.
    #[tokio::test]
    async fn instances_survive_a_reopen_and_a_corrupt_state_names_its_instance() {
        let file = ScratchFile::new("saga");
        let due = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let record = instance("order-7", due);
        {
            let store = SqliteStore::open(file.path()).await.expect("open");
            store.migrate().await.expect("migrate");
            let sagas = SqliteSagaStore::new(store);
            let commit = SagaCommit {
                expected: Some(Position::START),
                checkpoint: Some(Position(4)),
                instances: vec![record.clone()],
                ..SagaCommit::default()
            };
            sagas.commit("checkout", commit).await.expect("commit");
        }
        let store = SqliteStore::open(file.path()).await.expect("reopen");
        let sagas = SqliteSagaStore::new(store.clone());
        assert_eq!(
            sagas.checkpoint("checkout").await.expect("checkpoint"),
            Position(4)
        );
        assert_eq!(
            sagas
                .instance("checkout", "order-7")
                .await
                .expect("instance"),
            Some(record.clone())
        );
        assert_eq!(
            sagas.next_deadline("checkout").await.expect("next"),
            Some(due)
        );
        let just_before = due - Duration::from_nanos(1);
        assert!(
            sagas
                .due_deadlines("checkout", just_before)
                .await
                .expect("due")
                .is_empty()
        );
        assert_eq!(
            sagas.due_deadlines("checkout", due).await.expect("due"),
            [("order-7".to_owned(), record.deadlines[0].clone())]
        );

        store
            .write(|connection| {
                connection.execute(
                    "UPDATE cqrs_saga_instances SET state = 'not json' WHERE instance = 'order-7'",
                    [],
                )
            })
            .await
            .expect("store")
            .expect("corrupt the state");
        let error = sagas
            .instance("checkout", "order-7")
            .await
            .expect_err("a corrupt state");
        let message = error.to_string();
        assert!(
            message.contains(
                "instance `order-7` of processor `checkout` has a state that does not decode"
            ),
            "{message}"
        );
    }

    #[test]
    fn rounded_deadlines_never_lie_after_the_deadline() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(floor_micros(epoch + Duration::from_nanos(1_999)), 1);
        assert_eq!(floor_micros(epoch - Duration::from_nanos(1_001)), -2);
        assert_eq!(floor_micros(epoch - Duration::from_nanos(1_000)), -1);
    }
}
