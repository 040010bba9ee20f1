//! The saga runner: follows the global log from the saga's checkpoint, hands each event to its
//! instance, dispatches the commands, fires due deadlines, and commits state and position together.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::event::{Position, RecordedEvent};
use crate::repository::CommandMetadata;
use crate::saga::bus::CommandBus;
use crate::saga::clock::{Clock, SystemClock};
use crate::saga::command_id::saga_command_id;
use crate::saga::context::{DeadlineChange, DispatchFailure, HandlerError, Rejection, SagaContext};
use crate::saga::policy::{AfterRetries, FailurePolicy};
use crate::saga::store::{Deadline, FailureRecord, InstanceRecord, SagaCommit, SagaStore};
use crate::saga::{Route, Saga};
use crate::store::{EventStore, StoreError};
use crate::subscription::LogFollower;

/// The most commands one event (or deadline) may lead to, refusals and their compensations
/// included: a saga that keeps compensating its own refused compensations is stopped by its
/// failure policy instead of looping.
const MAX_COMMANDS_PER_TRIGGER: u32 = 256;

/// How many rounds of "events, then due deadlines" one [`SagaRunner::catch_up`] makes at most. A
/// deadline's commands write events the saga then reacts to, hence more than one round.
const MAX_ROUNDS: u32 = 64;

/// The header naming the saga on every event its commands write.
pub const SAGA_HEADER: &str = "saga";
/// The header naming the saga instance on every event its commands write.
pub const SAGA_INSTANCE_HEADER: &str = "saga-instance";

/// What one [`SagaRunner::catch_up`] (or [`fire_due_deadlines`](SagaRunner::fire_due_deadlines))
/// did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Events read from the log.
    pub events: u64,
    /// Events handled by a saga instance.
    pub handled: u64,
    /// Commands that wrote something now (or were accepted as no-ops).
    pub commands: u64,
    /// Commands whose id the target had already applied: nothing was written.
    pub deduplicated: u64,
    /// Commands refused by their aggregate and handed to `on_rejected`.
    pub rejected: u64,
    /// Deadlines fired.
    pub deadlines: u64,
    /// Events or deadlines that failed and were skipped (see [`SagaStore::failures`]).
    pub skipped: u64,
    /// Retries after failures.
    pub retries: u64,
}

impl RunReport {
    fn add(&mut self, other: RunReport) {
        self.events += other.events;
        self.handled += other.handled;
        self.commands += other.commands;
        self.deduplicated += other.deduplicated;
        self.rejected += other.rejected;
        self.deadlines += other.deadlines;
        self.skipped += other.skipped;
        self.retries += other.retries;
    }
}

/// Why a saga runner stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// An event or deadline kept failing and the policy says stop. The failure is recorded, and
    /// the checkpoint stays before the event, so the next run tries it again.
    #[error("saga `{saga}` stopped at position {}: {}", .failure.position, .failure.error)]
    Stopped {
        /// The saga's name.
        saga: &'static str,
        /// The failure, as recorded.
        failure: Box<FailureRecord>,
    },
    /// The event store or the saga store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How one try at an event or deadline ended badly.
enum Attempt {
    /// The saga store or event store failed: not the event's fault, no policy applies.
    Store(StoreError),
    /// The event failed: the policy applies.
    Failed {
        instance: Option<String>,
        error: String,
    },
}

impl Attempt {
    fn failed(instance: &str, error: impl fmt::Display) -> Self {
        Attempt::Failed {
            instance: Some(instance.to_owned()),
            error: error.to_string(),
        }
    }
}

/// Where the commands of one trigger (an event or a deadline) come from.
struct Origin {
    /// The part of the command ids that names the trigger.
    trigger: String,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
}

/// Runs one saga: follows the global log from the saga's checkpoint and fires its deadlines.
///
/// For each event the saga reacts to, the runner loads the instance it is routed to, lets it
/// handle the event, dispatches its commands in order, and then commits the instance's state, its
/// deadlines and the saga's checkpoint in one [`SagaStore::commit`]. Each command carries the
/// command id `"{saga}/{instance}/{event id}/{n}"` (`"{saga}/{instance}/deadline:{deadline
/// id}/{n}"` for a deadline, and `"{saga}/sha256:{digest of that}"` when that is not a valid
/// [`CommandId`](crate::CommandId), as for an instance id of 300 bytes), the triggering event's id
/// as causation id and its correlation id. A crash between dispatch and commit makes the next run
/// handle the event again from the stored state, sending the same commands with the same ids,
/// which their repositories do not apply twice.
///
/// Handlers must decide only from the state, the event and [`SagaContext::now`] for this to hold.
/// A domain refusal is the one input that can change between two runs (a seat freed meanwhile), so
/// a saga that compensates a refusal should do it with commands that are safe either way.
pub struct SagaRunner<G, S, St> {
    events: S,
    bus: CommandBus,
    sagas: St,
    clock: Arc<dyn Clock>,
    policy: FailurePolicy,
    batch_size: usize,
    poll_interval: Duration,
    saga: PhantomData<fn() -> G>,
}

impl<G, S, St> fmt::Debug for SagaRunner<G, S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaRunner")
            .field("bus", &self.bus)
            .field("policy", &self.policy)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl<G, S, St> SagaRunner<G, S, St>
where
    G: Saga,
    S: EventStore + Clone,
    St: SagaStore,
{
    /// A runner of `G` reading `events`, sending commands through `bus`, keeping its state in
    /// `sagas`; the system clock, [`FailurePolicy::default`], batches of 256 events.
    pub fn new(events: S, bus: CommandBus, sagas: St) -> Self {
        SagaRunner {
            events,
            bus,
            sagas,
            clock: Arc::new(SystemClock),
            policy: FailurePolicy::default(),
            batch_size: 256,
            poll_interval: Duration::from_secs(1),
            saga: PhantomData,
        }
    }

    /// Reads time from `clock` (a [`ManualClock`](crate::saga::ManualClock) in tests).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Treats failing events and deadlines by `policy`.
    #[must_use]
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Reads the log `batch_size` events at a time (at least 1).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// How often [`run`](SagaRunner::run) looks at the clock while no event arrives (default 1 s).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The saga store.
    pub fn saga_store(&self) -> &St {
        &self.sagas
    }

    /// Handles every event after the checkpoint and fires every due deadline, until neither is
    /// left; then returns what it did.
    pub async fn catch_up(&self) -> Result<RunReport, SagaError> {
        let mut report = RunReport::default();
        for _ in 0..MAX_ROUNDS {
            self.handle_new_events(&mut report).await?;
            let fired = self.fire_due_deadlines().await?;
            report.add(fired);
            if fired.deadlines == 0 && fired.skipped == 0 {
                break;
            }
        }
        Ok(report)
    }

    /// Runs until an error: catches up, then waits for new events or the next deadline.
    pub async fn run(&self) -> Result<(), SagaError> {
        loop {
            self.catch_up().await?;
            let checkpoint = self.sagas.checkpoint(G::NAME).await?;
            // The clock may be a manual one that jumps, so never sleep past the poll interval.
            let wait = match self.sagas.next_deadline(G::NAME).await? {
                Some(due) => due
                    .duration_since(self.clock.now())
                    .unwrap_or(Duration::ZERO)
                    .min(self.poll_interval),
                None => self.poll_interval,
            };
            // A timeout only means "look at the deadlines again".
            let _ = tokio::time::timeout(wait, self.events.wait_for_events(checkpoint)).await;
        }
    }

    /// Fires every deadline due by the clock's current time, once each.
    pub async fn fire_due_deadlines(&self) -> Result<RunReport, SagaError> {
        let mut report = RunReport::default();
        let due = self.sagas.due_deadlines(G::NAME, self.clock.now()).await?;
        for (instance, deadline) in due {
            self.fire_deadline(&instance, &deadline, &mut report)
                .await?;
        }
        Ok(report)
    }

    async fn handle_new_events(&self, report: &mut RunReport) -> Result<(), SagaError> {
        let checkpoint = self.sagas.checkpoint(G::NAME).await?;
        let mut follower = LogFollower::new(self.events.clone(), checkpoint, self.batch_size);
        let mut committed = checkpoint;
        loop {
            let batch = follower.poll_batch().await?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            let last = last.position;
            for event in &batch {
                report.events += 1;
                if self.handle_event(event, report).await? {
                    committed = event.position;
                }
            }
            // Events no instance handled move the checkpoint too, once per batch.
            if committed < last {
                let commit = SagaCommit {
                    position: Some(last),
                    ..SagaCommit::default()
                };
                self.sagas.commit(G::NAME, commit).await?;
                committed = last;
            }
        }
    }

    /// Handles one event under the failure policy. `true` when a commit moved the checkpoint to
    /// it.
    async fn handle_event(
        &self,
        event: &RecordedEvent,
        report: &mut RunReport,
    ) -> Result<bool, SagaError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut attempt_report = RunReport::default();
            let error = match self.try_event(event, &mut attempt_report).await {
                Ok(committed) => {
                    report.add(attempt_report);
                    return Ok(committed);
                }
                Err(Attempt::Store(error)) => return Err(error.into()),
                Err(Attempt::Failed { instance, error }) => (instance, error),
            };
            if tries <= self.policy.retries {
                report.retries += 1;
                tokio::time::sleep(self.policy.delay_before(tries)).await;
                continue;
            }
            let (instance, error) = error;
            let failure = FailureRecord {
                position: event.position,
                event_id: Some(event.event_id),
                stream: Some(event.stream.clone()),
                event_type: Some(event.event_type.to_string()),
                instance,
                deadline: None,
                error,
                attempts: tries,
                skipped: self.policy.then == AfterRetries::Skip,
            };
            return self
                .give_up(failure, Some(event.position), None, report)
                .await;
        }
    }

    /// Records a failure; moves on past it (skip) or stops (stop).
    async fn give_up(
        &self,
        failure: FailureRecord,
        position: Option<Position>,
        instance: Option<InstanceRecord>,
        report: &mut RunReport,
    ) -> Result<bool, SagaError> {
        if failure.skipped {
            report.skipped += 1;
            let commit = SagaCommit {
                position,
                instance,
                failure: Some(failure),
            };
            self.sagas.commit(G::NAME, commit).await?;
            return Ok(position.is_some());
        }
        let commit = SagaCommit {
            failure: Some(failure.clone()),
            ..SagaCommit::default()
        };
        self.sagas.commit(G::NAME, commit).await?;
        Err(SagaError::Stopped {
            saga: G::NAME,
            failure: Box::new(failure),
        })
    }

    /// One try at an event. `Ok(true)` when it committed the instance and the checkpoint.
    async fn try_event(
        &self,
        event: &RecordedEvent,
        report: &mut RunReport,
    ) -> Result<bool, Attempt> {
        let input = match G::decode(event) {
            Ok(Some(input)) => input,
            Ok(None) => return Ok(false),
            Err(error) => {
                return Err(Attempt::Failed {
                    instance: None,
                    error: error.to_string(),
                });
            }
        };
        let (id, starts, stops) = match G::route(&input) {
            Route::Start(id) => (id, true, false),
            Route::Continue(id) => (id, false, false),
            Route::Stop(id) => (id, false, true),
            Route::Ignore => return Ok(false),
        };
        let stored = self
            .sagas
            .instance(G::NAME, &id)
            .await
            .map_err(Attempt::Store)?;
        let mut record = match stored {
            // Handled before the checkpoint was moved back, or before a crash lost the
            // checkpoint but not the instance: never twice.
            Some(record) if record.finished || record.position >= event.position => {
                return Ok(false);
            }
            Some(record) => record,
            None if starts => InstanceRecord {
                instance: id.clone(),
                state: serde_json::Value::Null,
                position: Position::START,
                finished: false,
                deadlines: Vec::new(),
            },
            None => return Ok(false),
        };
        let mut state = decode_state::<G>(&record).map_err(|error| Attempt::failed(&id, error))?;
        let mut context = SagaContext::new(self.clock.now());
        state
            .handle(input, &mut context)
            .map_err(|error| Attempt::failed(&id, error))?;
        let origin = Origin {
            trigger: event.event_id.to_string(),
            // A process started by an event written without a correlation id is named after it.
            correlation_id: Some(event.metadata.correlation_id.unwrap_or(event.event_id.0)),
            causation_id: Some(event.event_id.0),
        };
        self.dispatch_all(&mut state, &mut context, &id, &origin, report)
            .await
            .map_err(|error| Attempt::failed(&id, error))?;
        apply_changes(&mut record, &mut context, &origin);
        if stops {
            finish(&mut record);
        }
        record.state = serde_json::to_value(&state).map_err(|error| Attempt::failed(&id, error))?;
        record.position = event.position;
        report.handled += 1;
        let commit = SagaCommit {
            position: Some(event.position),
            instance: Some(record),
            failure: None,
        };
        self.sagas
            .commit(G::NAME, commit)
            .await
            .map_err(Attempt::Store)?;
        Ok(true)
    }

    async fn fire_deadline(
        &self,
        instance: &str,
        deadline: &Deadline,
        report: &mut RunReport,
    ) -> Result<(), SagaError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut attempt_report = RunReport::default();
            let error = match self
                .try_deadline(instance, deadline, &mut attempt_report)
                .await
            {
                Ok(()) => {
                    report.add(attempt_report);
                    return Ok(());
                }
                Err(Attempt::Store(error)) => return Err(error.into()),
                Err(Attempt::Failed { error, .. }) => error,
            };
            if tries <= self.policy.retries {
                report.retries += 1;
                tokio::time::sleep(self.policy.delay_before(tries)).await;
                continue;
            }
            let skipped = self.policy.then == AfterRetries::Skip;
            // A skipped deadline is dropped, so it does not fail again on every run.
            let record = if skipped {
                self.sagas
                    .instance(G::NAME, instance)
                    .await?
                    .map(|mut record| {
                        record.deadlines.retain(|d| d.id != deadline.id);
                        record
                    })
            } else {
                None
            };
            let failure = FailureRecord {
                position: self.sagas.checkpoint(G::NAME).await?,
                event_id: None,
                stream: None,
                event_type: None,
                instance: Some(instance.to_owned()),
                deadline: Some(deadline.name.clone()),
                error,
                attempts: tries,
                skipped,
            };
            self.give_up(failure, None, record, report).await?;
            return Ok(());
        }
    }

    async fn try_deadline(
        &self,
        instance: &str,
        deadline: &Deadline,
        report: &mut RunReport,
    ) -> Result<(), Attempt> {
        let stored = self
            .sagas
            .instance(G::NAME, instance)
            .await
            .map_err(Attempt::Store)?;
        let Some(mut record) = stored else {
            return Ok(());
        };
        // Fired, cancelled or replaced since it was listed.
        if record.finished || !record.deadlines.iter().any(|d| d.id == deadline.id) {
            return Ok(());
        }
        let mut state =
            decode_state::<G>(&record).map_err(|error| Attempt::failed(instance, error))?;
        let mut context = SagaContext::new(self.clock.now());
        state
            .on_deadline(&deadline.name, &mut context)
            .map_err(|error| Attempt::failed(instance, error))?;
        let origin = Origin {
            trigger: format!("deadline:{}", deadline.id),
            correlation_id: deadline.correlation_id,
            causation_id: deadline.causation_id,
        };
        self.dispatch_all(&mut state, &mut context, instance, &origin, report)
            .await
            .map_err(|error| Attempt::failed(instance, error))?;
        // Dropped before the handler's own changes, so that it can schedule the same name again.
        record.deadlines.retain(|d| d.id != deadline.id);
        apply_changes(&mut record, &mut context, &origin);
        record.state =
            serde_json::to_value(&state).map_err(|error| Attempt::failed(instance, error))?;
        report.deadlines += 1;
        let commit = SagaCommit {
            position: None,
            instance: Some(record),
            failure: None,
        };
        self.sagas
            .commit(G::NAME, commit)
            .await
            .map_err(Attempt::Store)
    }

    /// Sends the context's commands in order; a refusal goes to `on_rejected`, whose commands
    /// are sent after the ones already queued.
    async fn dispatch_all(
        &self,
        state: &mut G,
        context: &mut SagaContext,
        instance: &str,
        origin: &Origin,
        report: &mut RunReport,
    ) -> Result<(), HandlerError> {
        let mut queue: VecDeque<_> = context.commands.drain(..).collect();
        let mut sequence: u32 = 0;
        while let Some(command) = queue.pop_front() {
            if sequence >= MAX_COMMANDS_PER_TRIGGER {
                return Err(format!(
                    "more than {MAX_COMMANDS_PER_TRIGGER} commands for one trigger: a refusal loop?"
                )
                .into());
            }
            let command_id = saga_command_id(G::NAME, instance, &origin.trigger, sequence);
            sequence += 1;
            let metadata = CommandMetadata {
                command_id: Some(command_id),
                correlation_id: origin.correlation_id,
                causation_id: origin.causation_id,
                headers: BTreeMap::from([
                    (SAGA_HEADER.to_owned(), G::NAME.to_owned()),
                    (SAGA_INSTANCE_HEADER.to_owned(), instance.to_owned()),
                ]),
            };
            match command.dispatch(&self.bus, metadata).await {
                Ok(delivery) if delivery.deduplicated => report.deduplicated += 1,
                Ok(_) => report.commands += 1,
                Err(DispatchFailure::Rejected(error, message)) => {
                    report.rejected += 1;
                    let rejection = Rejection::from_parts(command, error, message);
                    state.on_rejected(rejection, context)?;
                    queue.extend(context.commands.drain(..));
                }
                Err(DispatchFailure::Failed(error)) => return Err(error),
            }
        }
        Ok(())
    }
}

fn decode_state<G: Saga>(record: &InstanceRecord) -> Result<G, serde_json::Error> {
    if record.state.is_null() {
        return Ok(G::default());
    }
    serde_json::from_value(record.state.clone())
}

/// Applies a handler's deadline changes and completion to the instance record.
fn apply_changes(record: &mut InstanceRecord, context: &mut SagaContext, origin: &Origin) {
    for change in context.deadlines.drain(..) {
        match change {
            DeadlineChange::Schedule { name, due } => {
                record.deadlines.retain(|d| d.name != name);
                record.deadlines.push(Deadline {
                    id: format!("{}/{name}", origin.trigger),
                    name,
                    due,
                    correlation_id: origin.correlation_id,
                    causation_id: origin.causation_id,
                });
            }
            DeadlineChange::Cancel { name } => record.deadlines.retain(|d| d.name != name),
        }
    }
    if context.completed {
        finish(record);
    }
}

fn finish(record: &mut InstanceRecord) {
    record.finished = true;
    record.deadlines.clear();
}
