//! Where a saga keeps its checkpoint, its instances (state and deadlines) and its dead letters.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::Position;
use crate::processor::{CommitError, DeadLetter, ProcessorStore};
use crate::store::StoreError;

/// One saga instance as it is stored: its state, the last event it handled, its deadlines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The instance's id, the key its events are routed by.
    pub instance: String,
    /// The saga's state, encoded as JSON.
    pub state: serde_json::Value,
    /// The global position of the last event this instance handled. An event at or before it is
    /// never handled again, even when the saga's checkpoint is moved back.
    pub position: Position,
    /// Whether the instance completed; later events routed to it are ignored.
    pub finished: bool,
    /// The deadlines the instance is waiting for.
    pub deadlines: Vec<Deadline>,
}

impl InstanceRecord {
    /// The earliest deadline the instance still waits for: none once it finished. What a store
    /// indexes to find the instances due.
    pub fn next_due(&self) -> Option<SystemTime> {
        if self.finished {
            return None;
        }
        self.deadlines.iter().map(|deadline| deadline.due).min()
    }

    /// The state and the deadlines as the JSON texts a store keeps.
    pub fn encode(&self) -> Result<(String, String), InstanceEncodeError> {
        let state = serde_json::to_string(&self.state).map_err(InstanceEncodeError::State)?;
        let deadlines =
            serde_json::to_string(&self.deadlines).map_err(InstanceEncodeError::Deadlines)?;
        Ok((state, deadlines))
    }
}

/// Why [`InstanceRecord::encode`] failed; its message completes "instance `x` ...".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceEncodeError {
    /// The state did not encode.
    #[error("has a state that cannot be encoded: {0}")]
    State(#[source] serde_json::Error),
    /// The deadlines did not encode.
    #[error("has deadlines that cannot be encoded: {0}")]
    Deadlines(#[source] serde_json::Error),
}

/// A time at which a saga instance asked to be woken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    /// The name the saga gave it.
    pub name: String,
    /// When it is due.
    pub due: SystemTime,
    /// A deterministic id: what scheduled it (an event id or another deadline's id) and its name.
    /// The command ids of the commands it sends are derived from it.
    pub id: String,
    /// The correlation id of the process that scheduled it.
    pub correlation_id: Option<Uuid>,
    /// The id of the event that scheduled it.
    pub causation_id: Option<Uuid>,
    /// The attempts that failed at it so far (it is due again later, under the failure
    /// policy).
    #[serde(default)]
    pub attempts: u32,
}

/// What a saga processor writes in one atomic step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SagaCommit {
    /// Where the stored checkpoint must be for the commit to go ahead; `None` for a commit that
    /// does not depend on it (a deadline's).
    pub expected: Option<Position>,
    /// The saga's new checkpoint, if it moves.
    pub checkpoint: Option<Position>,
    /// The instances to store, each replacing the earlier record of the same id.
    pub instances: Vec<InstanceRecord>,
    /// Events (or deadlines) parked as dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// A dead letter to remove: the one this commit retried.
    pub retried: Option<String>,
}

/// The durable home of sagas: checkpoints and dead letters (the [`ProcessorStore`] part, which
/// every processor backend provides), instances with their state and deadlines.
///
/// [`commit`](SagaStore::commit) is atomic: the checkpoint, the instances, the dead letters and
/// the removal of a retried one are all stored or none is. A PostgreSQL implementation does it
/// in one transaction. The conformance suite in the `cqrs-tests` package checks every
/// implementation.
#[async_trait::async_trait]
pub trait SagaStore: ProcessorStore {
    /// Moves the checkpoint of `saga`, e.g. back to [`Position::START`] to replay the log.
    /// Instances keep their own positions, so a replay does not handle an event twice.
    async fn set_checkpoint(&self, saga: &str, position: Position) -> Result<(), StoreError>;

    /// The instance `instance` of `saga`, if it was ever stored.
    async fn instance(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<InstanceRecord>, StoreError>;

    /// Stores `commit` atomically. When `commit.expected` is not the stored checkpoint, nothing
    /// is stored and the error is [`CommitError::CheckpointMoved`].
    async fn commit(&self, saga: &'static str, commit: SagaCommit) -> Result<(), CommitError>;

    /// The instances of `saga` with a deadline due at or before `now`, with those deadlines, the
    /// earliest first.
    async fn due_deadlines(
        &self,
        saga: &str,
        now: SystemTime,
    ) -> Result<Vec<(String, Deadline)>, StoreError>;

    /// When the earliest deadline of `saga` is due, if it has any.
    async fn next_deadline(&self, saga: &str) -> Result<Option<SystemTime>, StoreError>;

    /// Forgets everything about `saga`: checkpoint, instances and dead letters.
    async fn forget(&self, saga: &str) -> Result<(), StoreError>;
}

#[derive(Debug, Default)]
struct SagaData {
    checkpoint: Position,
    instances: BTreeMap<String, InstanceRecord>,
    dead_letters: BTreeMap<String, DeadLetter>,
}

#[derive(Debug, Default)]
struct Inner {
    sagas: HashMap<String, SagaData>,
    /// Commits to let through before the injected faults start.
    commits_before_faults: usize,
    failing_commits: usize,
}

/// A [`SagaStore`] in memory, for tests and single-process applications. Clones share the data.
#[derive(Clone, Default)]
pub struct MemorySagaStore {
    inner: Arc<Mutex<Inner>>,
}

/// The error [`MemorySagaStore::fail_next_commits`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("injected saga store fault: the commit was refused and nothing was written")]
pub struct InjectedCommitFault;

impl MemorySagaStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `count` commits fail with [`StoreError::Backend`] (its source is
    /// [`InjectedCommitFault`]) without writing anything, as when the process dies after a saga
    /// dispatched its commands but before its state and checkpoint were saved. `0` disarms it.
    pub fn fail_next_commits(&self, count: usize) {
        self.fail_commits_after(0, count);
    }

    /// Lets the next `successes` commits through, then makes `count` fail as
    /// [`fail_next_commits`](MemorySagaStore::fail_next_commits) does: a crash at any chosen
    /// step. Replaces an earlier setting.
    pub fn fail_commits_after(&self, successes: usize, count: usize) {
        let mut inner = self.lock();
        inner.commits_before_faults = successes;
        inner.failing_commits = count;
    }

    /// Every instance of `saga`, for inspection.
    pub fn instances(&self, saga: &str) -> Vec<InstanceRecord> {
        self.lock()
            .sagas
            .get(saga)
            .map(|data| data.instances.values().cloned().collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every write below leaves the data consistent before it can panic, so a poisoned lock
        // holds valid data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemorySagaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sagas: Vec<String> = self.lock().sagas.keys().cloned().collect();
        f.debug_struct("MemorySagaStore")
            .field("sagas", &sagas)
            .finish()
    }
}

#[async_trait::async_trait]
impl ProcessorStore for MemorySagaStore {
    async fn checkpoint(&self, saga: &str) -> Result<Position, StoreError> {
        Ok(self
            .lock()
            .sagas
            .get(saga)
            .map_or(Position::START, |data| data.checkpoint))
    }

    async fn dead_letters(&self, saga: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let mut letters: Vec<DeadLetter> = self
            .lock()
            .sagas
            .get(saga)
            .map(|data| data.dead_letters.values().cloned().collect())
            .unwrap_or_default();
        letters.sort_by_key(|letter| (letter.position(), letter.id.clone()));
        Ok(letters)
    }

    async fn discard_dead_letter(&self, saga: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .sagas
            .get_mut(saga)
            .is_some_and(|data| data.dead_letters.remove(id).is_some()))
    }
}

#[async_trait::async_trait]
impl SagaStore for MemorySagaStore {
    async fn set_checkpoint(&self, saga: &str, position: Position) -> Result<(), StoreError> {
        self.lock()
            .sagas
            .entry(saga.to_owned())
            .or_default()
            .checkpoint = position;
        Ok(())
    }

    async fn instance(
        &self,
        saga: &str,
        instance: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        Ok(self
            .lock()
            .sagas
            .get(saga)
            .and_then(|data| data.instances.get(instance).cloned()))
    }

    async fn commit(&self, saga: &'static str, commit: SagaCommit) -> Result<(), CommitError> {
        let mut inner = self.lock();
        if inner.failing_commits > 0 && inner.commits_before_faults > 0 {
            inner.commits_before_faults -= 1;
        } else if inner.failing_commits > 0 {
            inner.failing_commits -= 1;
            return Err(StoreError::backend(InjectedCommitFault).into());
        }
        let data = inner.sagas.entry(saga.to_owned()).or_default();
        if let Some(expected) = commit.expected
            && data.checkpoint != expected
        {
            return Err(CommitError::CheckpointMoved {
                processor: saga,
                expected,
                actual: data.checkpoint,
            });
        }
        if let Some(position) = commit.checkpoint {
            data.checkpoint = position;
        }
        for instance in commit.instances {
            data.instances.insert(instance.instance.clone(), instance);
        }
        for letter in commit.dead_letters {
            data.dead_letters.insert(letter.id.clone(), letter);
        }
        if let Some(retried) = commit.retried {
            data.dead_letters.remove(&retried);
        }
        Ok(())
    }

    async fn due_deadlines(
        &self,
        saga: &str,
        now: SystemTime,
    ) -> Result<Vec<(String, Deadline)>, StoreError> {
        let inner = self.lock();
        let mut due: Vec<(String, Deadline)> = inner
            .sagas
            .get(saga)
            .into_iter()
            .flat_map(|data| data.instances.values())
            .filter(|record| !record.finished)
            .flat_map(|record| {
                record
                    .deadlines
                    .iter()
                    .filter(|deadline| deadline.due <= now)
                    .map(|deadline| (record.instance.clone(), deadline.clone()))
            })
            .collect();
        due.sort_by(|(a_instance, a), (b_instance, b)| {
            (a.due, a_instance, &a.id).cmp(&(b.due, b_instance, &b.id))
        });
        Ok(due)
    }

    async fn next_deadline(&self, saga: &str) -> Result<Option<SystemTime>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .sagas
            .get(saga)
            .into_iter()
            .flat_map(|data| data.instances.values())
            .filter(|record| !record.finished)
            .flat_map(|record| record.deadlines.iter().map(|deadline| deadline.due))
            .min())
    }

    async fn forget(&self, saga: &str) -> Result<(), StoreError> {
        self.lock().sagas.remove(saga);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn deadline(name: &str, seconds: u64) -> Deadline {
        Deadline {
            name: name.to_owned(),
            due: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
            id: name.to_owned(),
            correlation_id: None,
            causation_id: None,
            attempts: 0,
        }
    }

    #[test]
    fn the_next_due_deadline_is_the_earliest_until_the_instance_finishes() {
        let mut record = InstanceRecord {
            instance: "order-7".to_owned(),
            state: serde_json::json!({"paid": false}),
            position: Position(3),
            finished: false,
            deadlines: vec![deadline("late", 20), deadline("early", 10)],
        };
        assert_eq!(
            record.next_due(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
        );
        let (state, deadlines) = record.encode().expect("encodes");
        assert_eq!(state, r#"{"paid":false}"#);
        let decoded: Vec<Deadline> = serde_json::from_str(&deadlines).expect("decodes");
        assert_eq!(decoded, record.deadlines);
        record.finished = true;
        assert_eq!(record.next_due(), None);
        record.finished = false;
        record.deadlines.clear();
        assert_eq!(record.next_due(), None);
    }
}
