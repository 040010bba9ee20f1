//! Sagas as processors: each event a saga listens to goes to its instance, whose commands are
//! dispatched before the instance's state and the checkpoint commit together; due deadlines
//! fire between batches.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use crate::event::{DecodeError, Position, RecordedEvent};
use crate::processor::{
    Batch, CommitError, Committed, DeadLetter, EventFailure, Failure, FailureKind, FailurePolicy,
    Processor, ProcessorStore, TickError, describe,
};
use crate::projection::EventContext;
use crate::repository::CommandMetadata;
use crate::saga::bus::CommandBus;
use crate::saga::clock::{Clock, SystemClock};
use crate::saga::command_id::saga_command_id;
use crate::saga::context::{DeadlineChange, DispatchFailure, HandlerError, Rejection, SagaContext};
use crate::saga::store::{Deadline, InstanceRecord, SagaCommit, SagaStore};
use crate::saga::{Route, Saga};
use crate::store::{EventStore, StoreError};
use crate::telemetry::PROCESSOR_DEAD_LETTERS;

/// The most commands one event (or deadline) may lead to, refusals and their compensations
/// included: a saga that keeps compensating its own refused compensations fails under its
/// policy instead of looping.
const MAX_COMMANDS_PER_TRIGGER: u32 = 256;

/// The header naming the saga on every event its commands write.
pub const SAGA_HEADER: &str = "saga";
/// The header naming the saga instance on every event its commands write.
pub const SAGA_INSTANCE_HEADER: &str = "saga-instance";

/// A runner of a saga: [`ProcessorRunner`](crate::processor::ProcessorRunner) over a
/// [`SagaProcessor`].
pub type SagaRunner<G, S, St> = crate::processor::ProcessorRunner<SagaProcessor<G, S, St>>;

/// What a [`SagaProcessor`] has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SagaReport {
    /// Events handled by a saga instance.
    pub handled: u64,
    /// Commands that wrote something (or were accepted as no-ops).
    pub commands: u64,
    /// Commands whose id the target had already applied: nothing was written.
    pub deduplicated: u64,
    /// Commands refused by their aggregate and handed to `on_rejected`.
    pub rejected: u64,
    /// Deadlines fired.
    pub deadlines: u64,
}

/// How handling one trigger ended badly.
enum Handling {
    /// A store failed (the saga store, or a command's target): nothing is the event's fault.
    Store(StoreError),
    /// The trigger failed: the policy applies.
    Failed(EventFailure),
}

impl Handling {
    fn failed(kind: FailureKind, error: impl Into<HandlerError>) -> Self {
        Handling::Failed(EventFailure::new(kind, error.into()))
    }
}

/// Where the commands of one trigger (an event or a deadline) come from.
struct Origin {
    /// The part of the command ids that names the trigger.
    trigger: String,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
}

/// A [`Saga`] as a [`Processor`]: follows the log of the aggregate types the saga listens to,
/// hands each event to the instance [`Saga::route`] names, dispatches its commands through the
/// [`CommandBus`], and commits the instances, the dead letters and the checkpoint of a batch in
/// one [`SagaStore::commit`]; fires due deadlines between batches.
///
/// Each command carries the command id `"{saga}/{instance}/{event id}/{n}"`
/// (`"{saga}/{instance}/deadline:{deadline id}/{n}"` for a deadline, and
/// `"{saga}/sha256:{digest of that}"` when that is not a valid [`CommandId`](crate::CommandId)),
/// the triggering event's id as causation id and its correlation id. A crash between dispatch
/// and commit makes the next run handle the event again from the stored state, sending the same
/// commands with the same ids, which their repositories do not apply twice; each instance also
/// stores the position of the last event it handled, so an event is never handled twice by it.
///
/// Handlers must decide only from the state, the event and [`SagaContext::now`] for this to
/// hold. A command whose target store fails is not the event's failure: the runner reconnects
/// and handles the batch again.
pub struct SagaProcessor<G, S, St> {
    events: S,
    bus: CommandBus,
    sagas: St,
    clock: Arc<dyn Clock>,
    poll_interval: Duration,
    report: Mutex<SagaReport>,
    saga: PhantomData<fn() -> G>,
}

impl<G, S, St> fmt::Debug for SagaProcessor<G, S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaProcessor")
            .field("bus", &self.bus)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl<G, S, St> SagaProcessor<G, S, St>
where
    G: Saga,
    S: EventStore,
    St: SagaStore,
{
    /// The processor of `G` reading `events`, sending commands through `bus`, keeping its
    /// instances in `sagas`; the system clock, deadlines looked at least every second.
    pub fn new(events: S, bus: CommandBus, sagas: St) -> Self {
        SagaProcessor {
            events,
            bus,
            sagas,
            clock: Arc::new(SystemClock),
            poll_interval: Duration::from_secs(1),
            report: Mutex::new(SagaReport::default()),
            saga: PhantomData,
        }
    }

    /// Reads time from `clock` (a [`ManualClock`](crate::saga::ManualClock) in tests).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How often to look at the deadlines at least, whatever the clock says (1 s by default): a
    /// manual clock may jump.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// What it has done so far.
    pub fn report(&self) -> SagaReport {
        *self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The saga store it commits to.
    pub fn sagas(&self) -> &St {
        &self.sagas
    }

    fn count(&self, change: impl FnOnce(&mut SagaReport)) {
        change(&mut self.report.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Handles `event` for its instance, taking the instance from `touched` (this batch's) or
    /// the store, and leaves the changed instance in `touched`.
    async fn handle_event(
        &self,
        event: &RecordedEvent,
        touched: &mut BTreeMap<String, InstanceRecord>,
        retried: bool,
    ) -> Result<(), Handling> {
        let input = match G::decode(event) {
            Ok(Some(input)) => input,
            Ok(None) => {
                let error = StoreError::Decode {
                    stream: event.stream.clone(),
                    version: event.version,
                    event_type: event.event_type.to_string(),
                    source: DecodeError::UnknownEventType {
                        event_type: event.event_type.to_string(),
                    },
                };
                return Err(Handling::failed(FailureKind::Decode, error));
            }
            Err(error) => return Err(Handling::failed(FailureKind::Decode, error)),
        };
        let context = EventContext::new(event);
        let (id, starts, stops) = match G::route(&input, &context) {
            Route::Start(id) => (id, true, false),
            Route::Continue(id) => (id, false, false),
            Route::Stop(id) => (id, false, true),
            Route::Ignore => return Ok(()),
        };
        let stored = match touched.get(&id) {
            Some(record) => Some(record.clone()),
            None => self
                .sagas
                .instance(G::NAME, &id)
                .await
                .map_err(Handling::Store)?,
        };
        let fresh = || InstanceRecord {
            instance: id.clone(),
            state: serde_json::Value::Null,
            position: Position::START,
            finished: false,
            deadlines: Vec::new(),
        };
        let mut record = match stored {
            // Handled before the checkpoint was moved back, or before a crash lost the
            // checkpoint but not the instance: never twice. A retried dead letter is the one
            // exception: it was never handled, and its removal commits with it.
            Some(record) if record.position >= event.position && !retried => return Ok(()),
            // A finished instance that meets a new start begins again.
            Some(record) if record.finished && starts => InstanceRecord {
                position: record.position,
                ..fresh()
            },
            Some(record) if record.finished => return Ok(()),
            Some(record) => record,
            None if starts => fresh(),
            None => return Ok(()),
        };
        let mut state = decode_state::<G>(&record).map_err(|error| {
            Handling::failed(
                FailureKind::Handler,
                format!("the stored state of instance `{id}` does not decode: {error}"),
            )
        })?;
        let mut saga = SagaContext::new(self.clock.now()).handling(event.clone());
        let handled = catch_unwind(AssertUnwindSafe(|| state.handle(input, &mut saga)));
        match handled {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(Handling::failed(FailureKind::Handler, error)),
            Err(payload) => return Err(Handling::Failed(EventFailure::panicked(&*payload))),
        }
        let origin = Origin {
            trigger: event.event_id.to_string(),
            // A process started by an event written without a correlation id is named after it.
            correlation_id: Some(event.metadata.correlation_id.unwrap_or(event.event_id.0)),
            causation_id: Some(event.event_id.0),
        };
        self.dispatch_all(&mut state, &mut saga, &id, &origin)
            .await?;
        apply_changes(&mut record, &mut saga, &origin);
        if stops {
            finish(&mut record);
        }
        record.state = serde_json::to_value(&state)
            .map_err(|error| Handling::failed(FailureKind::Handler, error))?;
        record.position = record.position.max(event.position);
        self.count(|report| report.handled += 1);
        touched.insert(id, record);
        Ok(())
    }

    /// Sends the context's commands in order; a refusal goes to `on_rejected`, whose commands
    /// are sent after the ones already queued.
    async fn dispatch_all(
        &self,
        state: &mut G,
        saga: &mut SagaContext,
        instance: &str,
        origin: &Origin,
    ) -> Result<(), Handling> {
        let mut queue: VecDeque<_> = saga.commands.drain(..).collect();
        let mut sequence: u32 = 0;
        while let Some(command) = queue.pop_front() {
            if sequence >= MAX_COMMANDS_PER_TRIGGER {
                return Err(Handling::failed(
                    FailureKind::Handler,
                    format!(
                        "more than {MAX_COMMANDS_PER_TRIGGER} commands for one trigger: a refusal loop?"
                    ),
                ));
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
                Ok(delivery) if delivery.deduplicated => self.count(|r| r.deduplicated += 1),
                Ok(_) => self.count(|r| r.commands += 1),
                Err(DispatchFailure::Rejected(error, message)) => {
                    self.count(|r| r.rejected += 1);
                    let rejection = Rejection::from_parts(command, error, message);
                    let handled =
                        catch_unwind(AssertUnwindSafe(|| state.on_rejected(rejection, saga)));
                    match handled {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            return Err(Handling::failed(FailureKind::Handler, error));
                        }
                        Err(payload) => {
                            return Err(Handling::Failed(EventFailure::panicked(&*payload)));
                        }
                    }
                    queue.extend(saga.commands.drain(..));
                }
                Err(DispatchFailure::Unavailable(error)) => return Err(Handling::Store(error)),
                Err(DispatchFailure::Failed(error)) => {
                    return Err(Handling::failed(FailureKind::Command, error));
                }
            }
        }
        Ok(())
    }

    /// Fires one due deadline, under `policy` when it fails.
    async fn fire(
        &self,
        instance: &str,
        deadline: &Deadline,
        policy: &FailurePolicy,
    ) -> Result<(), TickError> {
        let Some(mut record) = self.sagas.instance(G::NAME, instance).await? else {
            return Ok(());
        };
        // Fired, cancelled or replaced since it was listed.
        if record.finished || !record.deadlines.iter().any(|d| d.id == deadline.id) {
            return Ok(());
        }
        let origin = Origin {
            trigger: format!("deadline:{}", deadline.id),
            correlation_id: deadline.correlation_id,
            causation_id: deadline.causation_id,
        };
        match self.try_deadline(&mut record, deadline, &origin).await {
            Ok(()) => {
                self.count(|report| report.deadlines += 1);
                self.commit_instance(record, Vec::new()).await
            }
            Err(Handling::Store(error)) => Err(error.into()),
            Err(Handling::Failed(failure)) => {
                let attempts = deadline.attempts + 1;
                let subject = format!("deadline/{instance}/{}", deadline.id);
                let failure = Failure {
                    kind: failure.kind,
                    event: None,
                    subject: Some(subject),
                    attempts,
                    error: describe(&*failure.error),
                    at: SystemTime::now(),
                };
                // The record as stored: a failed handler's changes are not kept.
                let Some(mut record) = self.sagas.instance(G::NAME, instance).await? else {
                    return Ok(());
                };
                match policy.after(attempts) {
                    crate::processor::Verdict::Retry(delay) => {
                        let due = self.clock.now() + delay;
                        for pending in &mut record.deadlines {
                            if pending.id == deadline.id {
                                pending.due = due;
                                pending.attempts = attempts;
                            }
                        }
                        self.commit_instance(record, Vec::new()).await
                    }
                    crate::processor::Verdict::Skip => {
                        record.deadlines.retain(|d| d.id != deadline.id);
                        let letter = DeadLetter::new(G::NAME, failure);
                        self.commit_instance(record, vec![letter.clone()]).await?;
                        // Parked here, not by the runner: told and counted as the runner does
                        // with an event (a failing deadline is rare, so the handle is looked up
                        // each time).
                        crate::processor::parked(G::NAME, &letter);
                        metrics::counter!(PROCESSOR_DEAD_LETTERS, "processor" => G::NAME)
                            .increment(1);
                        Ok(())
                    }
                    crate::processor::Verdict::Stop => Err(TickError::Stopped(Box::new(failure))),
                }
            }
        }
    }

    async fn commit_instance(
        &self,
        record: InstanceRecord,
        dead_letters: Vec<DeadLetter>,
    ) -> Result<(), TickError> {
        let commit = SagaCommit {
            instances: vec![record],
            dead_letters,
            ..SagaCommit::default()
        };
        match self.sagas.commit(G::NAME, commit).await {
            Ok(()) => Ok(()),
            Err(CommitError::Store(error)) => Err(error.into()),
            Err(moved @ CommitError::CheckpointMoved { .. }) => {
                Err(StoreError::backend(moved).into())
            }
        }
    }

    async fn try_deadline(
        &self,
        record: &mut InstanceRecord,
        deadline: &Deadline,
        origin: &Origin,
    ) -> Result<(), Handling> {
        let instance = record.instance.clone();
        let mut state = decode_state::<G>(record).map_err(|error| {
            Handling::failed(
                FailureKind::Handler,
                format!("the stored state of instance `{instance}` does not decode: {error}"),
            )
        })?;
        let mut saga = SagaContext::new(self.clock.now());
        let handled = catch_unwind(AssertUnwindSafe(|| {
            state.on_deadline(&deadline.name, &mut saga)
        }));
        match handled {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(Handling::failed(FailureKind::Handler, error)),
            Err(payload) => return Err(Handling::Failed(EventFailure::panicked(&*payload))),
        }
        self.dispatch_all(&mut state, &mut saga, &instance, origin)
            .await?;
        // Dropped before the handler's own changes, so that it can schedule the same name again.
        record.deadlines.retain(|d| d.id != deadline.id);
        apply_changes(record, &mut saga, origin);
        record.state = serde_json::to_value(&state)
            .map_err(|error| Handling::failed(FailureKind::Handler, error))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl<G, S, St> Processor for SagaProcessor<G, S, St>
where
    G: Saga,
    S: EventStore,
    St: SagaStore,
{
    type Events = S;

    fn name(&self) -> &'static str {
        G::NAME
    }

    fn aggregates(&self) -> &'static [&'static str] {
        G::AGGREGATES
    }

    fn events(&self) -> &S {
        &self.events
    }

    fn store(&self) -> &dyn ProcessorStore {
        &self.sagas
    }

    async fn commit(&self, batch: Batch<'_>) -> Result<Committed, CommitError> {
        let retried = batch.retried.is_some();
        let mut touched: BTreeMap<String, InstanceRecord> = BTreeMap::new();
        let mut failed = None;
        for (index, event) in batch.events.iter().enumerate() {
            // `handle_event` changes `touched` only once the event is handled: a failing event
            // leaves the batch's instances as they were.
            match self.handle_event(event, &mut touched, retried).await {
                Ok(()) => {}
                Err(Handling::Store(error)) => return Err(CommitError::Store(error)),
                Err(Handling::Failed(failure)) => {
                    failed = Some((index, failure));
                    break;
                }
            }
        }
        let reached = match &failed {
            Some((index, _)) => batch.before(*index),
            None => batch.end,
        };
        if retried && failed.is_some() {
            // A failed retry changes nothing: the dead letter stays.
            return Ok(Committed {
                reached: batch.expected,
                failed,
            });
        }
        let commit = SagaCommit {
            expected: Some(batch.expected),
            checkpoint: Some(reached),
            instances: touched.into_values().collect(),
            dead_letters: batch.dead_letters_until(reached),
            retried: batch.retried.map(str::to_owned),
        };
        self.sagas.commit(G::NAME, commit).await?;
        Ok(Committed { reached, failed })
    }

    async fn tick(&self, policy: &FailurePolicy) -> Result<Option<Duration>, TickError> {
        let due = self.sagas.due_deadlines(G::NAME, self.clock.now()).await?;
        for (instance, deadline) in due {
            self.fire(&instance, &deadline, policy).await?;
        }
        // The clock may be a manual one that jumps, so never wait past the poll interval.
        let wait = match self.sagas.next_deadline(G::NAME).await? {
            Some(due) => due
                .duration_since(self.clock.now())
                .unwrap_or(Duration::ZERO)
                .min(self.poll_interval),
            None => self.poll_interval,
        };
        Ok(Some(wait))
    }
}

fn decode_state<G: Saga>(record: &InstanceRecord) -> Result<G, serde_json::Error> {
    if record.state.is_null() {
        return Ok(G::default());
    }
    serde_json::from_value(record.state.clone())
}

/// Applies a handler's deadline changes and completion to the instance record.
fn apply_changes(record: &mut InstanceRecord, saga: &mut SagaContext, origin: &Origin) {
    for change in saga.deadlines.drain(..) {
        match change {
            DeadlineChange::Schedule { name, due } => {
                record.deadlines.retain(|d| d.name != name);
                record.deadlines.push(Deadline {
                    id: format!("{}/{name}", origin.trigger),
                    name,
                    due,
                    correlation_id: origin.correlation_id,
                    causation_id: origin.causation_id,
                    attempts: 0,
                });
            }
            DeadlineChange::Cancel { name } => record.deadlines.retain(|d| d.name != name),
        }
    }
    if saga.completed {
        finish(record);
    }
}

fn finish(record: &mut InstanceRecord) {
    record.finished = true;
    record.deadlines.clear();
}
