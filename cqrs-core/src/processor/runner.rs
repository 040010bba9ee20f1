//! The processor runner: follows the log from the checkpoint, commits batches under the failure
//! policy, reconnects when the store fails, leads or stands by, and answers its handle.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument as _;

use super::failure::{DeadLetter, EventFailure, EventRef, Failure, FailureKind};
use super::handle::{Backed, Control, ControlError, ProcessorHandle};
use super::instruments::{Gauges, Instruments};
use super::policy::{FailurePolicy, Reconnect, Verdict};
use super::status::{ProcessorState, ProcessorStatus};
use super::store::Lease;
use super::{Batch, CommitError, Committed, Processor, ResetError, TickError};
use crate::event::{Position, RecordedEvent};
use crate::store::{EventStore, LogEntry, StoreError};

/// How many rounds of "events, then timed work" one [`ProcessorRunner::catch_up`] makes at most:
/// a saga's deadline sends commands whose events the saga then reads, hence more than one.
const MAX_CATCH_UP_ROUNDS: u32 = 64;

/// How often a processor that stands still (failed at an event, paused, waiting to retry or to
/// reconnect) sets its lag and stall gauges again: nothing else publishes its status then, and
/// a stall alert must see the stall grow.
const GAUGE_REFRESH: Duration = Duration::from_secs(1);

/// Sets up and runs one [`Processor`]: batch size, failure policy, reconnection backoff, and
/// how often a standby node tries to lead.
///
/// [`spawn`](ProcessorRunner::spawn) starts it on its own task and returns its
/// [`ProcessorHandle`]; [`catch_up`](ProcessorRunner::catch_up) runs it inline until it has
/// caught up (for tests and batch jobs). Both go through the same steps.
///
/// Both emit what [`telemetry`](crate::telemetry) names: a `processor.handle` span per batch,
/// events for parked events, retries, store outages, state and leadership changes, and the
/// `cqrs_processor_*` metrics. The runner takes its metric handles when it starts, from the
/// recorder installed then: install the recorder (and the `tracing` subscriber) before calling
/// [`spawn`](ProcessorRunner::spawn) or [`catch_up`](ProcessorRunner::catch_up), or the
/// processor's metrics are lost for as long as it runs.
#[derive(Debug)]
pub struct ProcessorRunner<P> {
    processor: Arc<P>,
    batch_size: usize,
    policy: FailurePolicy,
    reconnect: Reconnect,
    leader_poll: Duration,
}

/// What one [`ProcessorRunner::catch_up`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CatchUp {
    /// The checkpoint it reached.
    pub checkpoint: Position,
    /// Events of the processor's streams it committed (handled or parked).
    pub events: u64,
    /// Events it parked as dead letters.
    pub dead_letters: u64,
    /// Attempts it made again at failing events.
    pub retries: u64,
}

/// Why [`ProcessorRunner::catch_up`] stopped before catching up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatchUpError {
    /// The store failed (a spawned runner would reconnect; an inline one reports it).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event failed and the failure policy says stop; the checkpoint is right before it.
    #[error("{0}")]
    Failed(Box<Failure>),
}

impl<P: Processor> ProcessorRunner<P> {
    /// A runner of `processor`: 500 events per batch, [`FailurePolicy::default`],
    /// [`Reconnect::default`], a leadership attempt every second.
    pub fn new(processor: P) -> Self {
        ProcessorRunner {
            processor: Arc::new(processor),
            batch_size: 500,
            policy: FailurePolicy::default(),
            reconnect: Reconnect::default(),
            leader_poll: Duration::from_secs(1),
        }
    }

    /// How many positions of the log to read and commit at a time (at least 1).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// What to do with an event whose handling fails.
    #[must_use]
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How to wait for a failed store to come back.
    #[must_use]
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// How often a node that does not lead tries to (and refreshes its checkpoint from the
    /// store); 1 s by default. It bounds how long a processor stands still after its leader died.
    #[must_use]
    pub fn leader_poll(mut self, interval: Duration) -> Self {
        self.leader_poll = interval.max(Duration::from_millis(1));
        self
    }

    /// The processor it runs.
    pub fn processor(&self) -> &P {
        &self.processor
    }

    /// Starts the processor on its own task. Must be called within a tokio runtime.
    pub fn spawn(self) -> ProcessorHandle {
        let name = self.processor.name();
        let (status_sender, status) = watch::channel(ProcessorStatus::new(name));
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let (controls, control_receiver) = mpsc::unbounded_channel();
        let backing = Arc::new(Backed(Arc::clone(&self.processor)));
        let worker = self.worker(status_sender, Some(shutdown_receiver));
        let task = tokio::spawn(worker.run(control_receiver));
        ProcessorHandle::new(name, status, controls, shutdown, task, backing)
    }

    /// Runs the processor inline until it has caught up with the log (and done the timed work
    /// that fell due meanwhile), then returns what it did. It does not take the leader lock and
    /// does not reconnect: a store error is returned.
    pub async fn catch_up(&self) -> Result<CatchUp, CatchUpError> {
        let (status, _) = watch::channel(ProcessorStatus::new(self.processor.name()));
        let mut worker = self.worker(status, None);
        worker.checkpoint = worker.store_checkpoint().await?;
        for _ in 0..MAX_CATCH_UP_ROUNDS {
            loop {
                match worker.step().await {
                    Ok(Step::Progress) => {}
                    Ok(Step::Idle) => break,
                    Err(Interrupt::Store(error)) => return Err(error.into()),
                    Err(Interrupt::Moved) => {
                        worker.checkpoint = worker.store_checkpoint().await?;
                    }
                    Err(Interrupt::Failed(failure)) => {
                        return Err(CatchUpError::Failed(Box::new(failure)));
                    }
                    Err(Interrupt::ShutDown) => return Ok(worker.counts),
                }
            }
            match self.processor.tick(&self.policy).await {
                Ok(_) => {}
                Err(TickError::Store(error)) => return Err(error.into()),
                Err(TickError::Stopped(failure)) => {
                    worker.instruments.stopped(&failure);
                    return Err(CatchUpError::Failed(failure));
                }
            }
            if self.processor.events().head().await? <= worker.checkpoint {
                break;
            }
        }
        worker.counts.checkpoint = worker.checkpoint;
        Ok(worker.counts)
    }

    fn worker(
        &self,
        status: watch::Sender<ProcessorStatus>,
        shutdown: Option<watch::Receiver<bool>>,
    ) -> Worker<P> {
        Worker {
            processor: Arc::clone(&self.processor),
            batch_size: self.batch_size,
            policy: self.policy,
            reconnect: self.reconnect,
            leader_poll: self.leader_poll,
            status,
            shutdown,
            instruments: Instruments::new(self.processor.name()),
            checkpoint: Position::START,
            failing: None,
            counts: CatchUp::default(),
            failed: false,
            paused: false,
            rebuild_until: None,
        }
    }
}

/// How one step ended well.
enum Step {
    /// Nothing after the checkpoint.
    Idle,
    /// It committed something, or waited to retry: read again.
    Progress,
}

/// Why a step (or a wait) ended early.
enum Interrupt {
    /// The store failed: reconnect.
    Store(StoreError),
    /// The stored checkpoint moved: read it again.
    Moved,
    /// The failure policy says stop at this failure.
    Failed(Failure),
    /// Shutdown was requested.
    ShutDown,
}

/// Why the runner stopped leading.
enum Led {
    /// Its lease was lost: stand by again.
    Deposed,
    /// Shut down.
    ShutDown,
}

/// What woke a runner that waits.
enum Woken {
    ShutDown,
    Control(Option<Control>),
    LeaseLost,
    Events(Result<Position, StoreError>),
    Timer,
}

struct Worker<P> {
    processor: Arc<P>,
    batch_size: usize,
    policy: FailurePolicy,
    reconnect: Reconnect,
    leader_poll: Duration,
    status: watch::Sender<ProcessorStatus>,
    /// `None` for an inline catch-up, which nobody shuts down.
    shutdown: Option<watch::Receiver<bool>>,
    instruments: Instruments,
    checkpoint: Position,
    /// The event failing last and the attempts at it.
    failing: Option<(Position, u32)>,
    counts: CatchUp,
    /// Stopped at an event by the policy, until resumed.
    failed: bool,
    paused: bool,
    /// The head when a rebuild started: the state says `Rebuilding` until it is reached.
    rebuild_until: Option<Position>,
}

impl<P: Processor> Worker<P> {
    fn name(&self) -> &'static str {
        self.processor.name()
    }

    fn shutdown_requested(&self) -> bool {
        self.shutdown
            .as_ref()
            .is_some_and(|shutdown| *shutdown.borrow())
    }

    /// Changes the status with `change` (which says whether it changed anything) and, when it
    /// did, sets the gauges, wakes the watchers and tells a change of state. Every change of the
    /// status goes through here, so the gauges are what the status says.
    fn publish(&self, change: impl FnOnce(&mut ProcessorStatus) -> bool) {
        let mut changed = None;
        self.status.send_if_modified(|status| {
            let before = status.state.as_str();
            if !change(status) {
                return false;
            }
            // Set before the watchers wake (a gauge is an atomic store): whoever sees the
            // status sees the gauges that go with it.
            self.instruments
                .set_gauges(Gauges::of(status, SystemTime::now()));
            changed = Some((before, status.state.as_str(), status.checkpoint, status.lag));
            true
        });
        // Told once the status is released: a subscriber may be slow, and watchers wait.
        let Some((before, after, checkpoint, lag)) = changed else {
            return;
        };
        if before != after {
            self.instruments
                .state_changed(before, after, checkpoint, lag);
        }
    }

    /// Sets the gauges again from the status as it stands, as of now.
    fn refresh_gauges(&self) {
        let gauges = Gauges::of(&self.status.borrow(), SystemTime::now());
        self.instruments.set_gauges(gauges);
    }

    fn set_state(&self, state: ProcessorState) {
        self.publish(|status| {
            if status.state == state {
                return false;
            }
            status.state = state;
            true
        });
    }

    async fn store_checkpoint(&self) -> Result<Position, StoreError> {
        self.processor.store().checkpoint(self.name()).await
    }

    /// Moves the checkpoint (and the status) to `reached`.
    fn advance(&mut self, reached: Position) {
        self.checkpoint = reached;
        if self
            .failing
            .is_some_and(|(position, _)| position <= reached)
        {
            self.failing = None;
        }
        self.publish(|status| {
            status.moved_to(reached);
            true
        });
    }

    /// Records the head the runner saw (and when the oldest event it has not handled was
    /// recorded, if it did not know). Watchers are woken only when the head moved: a
    /// catching-up runner wakes them once per batch, when its checkpoint moves.
    fn saw_head(&self, head: Position, oldest: Option<SystemTime>) {
        self.publish(|status| {
            let moved = head > status.head;
            status.head = status.head.max(head);
            if status.oldest_unhandled.is_none() {
                status.oldest_unhandled = oldest;
            }
            status.refresh(SystemTime::now());
            moved
        });
    }

    /// Sleeps `delay`, unless shutdown comes first. The runner sleeps only when something is
    /// wrong (a retry, a reconnect), and nothing publishes its status meanwhile: it sets the
    /// gauges again every [`GAUGE_REFRESH`], so that a stall shows as it grows.
    async fn sleep(&self, delay: Duration) -> Result<(), Interrupt> {
        let until = tokio::time::Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            self.sleep_once(left.min(GAUGE_REFRESH)).await?;
            self.refresh_gauges();
        }
    }

    async fn sleep_once(&self, delay: Duration) -> Result<(), Interrupt> {
        let Some(shutdown) = &self.shutdown else {
            tokio::time::sleep(delay).await;
            return Ok(());
        };
        let mut shutdown = shutdown.clone();
        let sleep = pin!(tokio::time::sleep(delay));
        let requested =
            pin!(async move { shutdown.wait_for(|requested| *requested).await.is_ok() });
        let mut sleep = sleep;
        let mut requested = requested;
        let interrupted = poll_fn(|context| {
            if let Poll::Ready(requested) = requested.as_mut().poll(context) {
                // A dropped sender (the handle is gone) is a shutdown too.
                let _ = requested;
                return Poll::Ready(true);
            }
            sleep.as_mut().poll(context).map(|()| false)
        })
        .await;
        if interrupted {
            Err(Interrupt::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Reads the log after the checkpoint and commits what it finds, under the failure policy.
    async fn step(&mut self) -> Result<Step, Interrupt> {
        let read = self
            .processor
            .events()
            .read_log(
                self.checkpoint,
                self.batch_size,
                self.processor.aggregates(),
            )
            .await
            .map_err(Interrupt::Store)?;
        let Some(last) = read.last else {
            return Ok(Step::Idle);
        };
        let first_recorded = read.entries.iter().find_map(|entry| match entry {
            LogEntry::Event(event) => Some(event.metadata.timestamp),
            LogEntry::Unreadable(_) => None,
        });
        self.saw_head(last, first_recorded);
        let entries = read.entries;
        // Events parked in this step and not committed yet: the next commit records them.
        let mut parked: Vec<DeadLetter> = Vec::new();
        loop {
            let mut events: Vec<&RecordedEvent> = Vec::new();
            let mut end = last;
            let mut blocker: Option<(EventRef, EventFailure)> = None;
            for entry in &entries {
                let position = entry.position();
                if position <= self.checkpoint
                    || parked
                        .iter()
                        .any(|letter| letter.position() == Some(position))
                {
                    continue;
                }
                match entry {
                    LogEntry::Event(event) => events.push(event),
                    LogEntry::Unreadable(row) => {
                        end = Position(position.0.saturating_sub(1));
                        blocker = Some((
                            EventRef::of_unreadable(row),
                            EventFailure::new(FailureKind::Decode, row.clone()),
                        ));
                        break;
                    }
                }
            }
            let handled = events.clone();
            let (committed, span) = if end > self.checkpoint || !parked.is_empty() {
                let batch = Batch {
                    processor: self.name(),
                    expected: self.checkpoint,
                    end,
                    events,
                    dead_letters: parked.clone(),
                    retried: None,
                };
                let span = self.instruments.batch_span(self.checkpoint);
                match self.processor.commit(batch).instrument(span.clone()).await {
                    Ok(committed) => (committed, Some(span)),
                    Err(CommitError::CheckpointMoved { .. }) => return Err(Interrupt::Moved),
                    Err(CommitError::Store(error)) => return Err(Interrupt::Store(error)),
                }
            } else {
                (Committed::all(self.checkpoint), None)
            };
            let reached = committed.reached;
            let (stored, waiting): (Vec<DeadLetter>, Vec<DeadLetter>) = parked
                .into_iter()
                .partition(|letter| letter.position().is_none_or(|position| position <= reached));
            parked = waiting;
            let stored_letters = stored.len();
            let applied = match &committed.failed {
                Some((index, _)) => *index,
                None => handled.len(),
            };
            if let Some(span) = &span {
                self.instruments.committed(span, reached, applied, &stored);
            }
            self.counts.events += (applied + stored_letters) as u64;
            self.counts.dead_letters += stored_letters as u64;
            if stored_letters > 0 {
                self.publish(|status| {
                    status.dead_letters += stored_letters as u64;
                    true
                });
            }
            self.advance(reached);
            if let Some((index, failure)) = committed.failed {
                let event = handled
                    .get(index)
                    .map(|event| EventRef::of(event))
                    .unwrap_or_else(|| EventRef {
                        position: reached,
                        stream: String::new(),
                        version: None,
                        event_type: None,
                        event_id: None,
                    });
                blocker = Some((event, failure));
            }
            let Some((event, failure)) = blocker else {
                return Ok(Step::Progress);
            };
            match self.event_failed(event, &failure).await? {
                Some(letter) => parked.push(letter),
                None => return Ok(Step::Progress),
            }
        }
    }

    /// Applies the policy to a failure of `event`: `Some` dead letter to park it, `None` after
    /// waiting to try again, or the failure that stops the processor.
    async fn event_failed(
        &mut self,
        event: EventRef,
        failure: &EventFailure,
    ) -> Result<Option<DeadLetter>, Interrupt> {
        let attempts = match self.failing {
            Some((position, attempts)) if position == event.position => attempts + 1,
            _ => 1,
        };
        self.failing = Some((event.position, attempts));
        let record = Failure::of_event(event, failure, attempts);
        self.publish(|status| {
            status.last_error = Some(record.clone());
            true
        });
        match self.policy.after(attempts) {
            // Told when the commit that records it succeeds: a letter lost with a failed commit
            // was never parked.
            Verdict::Skip => {
                self.failing = None;
                Ok(Some(DeadLetter::new(self.name(), record)))
            }
            Verdict::Retry(delay) => {
                self.instruments.retrying(&record);
                self.counts.retries += 1;
                self.set_state(ProcessorState::Retrying { attempts });
                self.sleep(delay).await?;
                Ok(None)
            }
            Verdict::Stop => {
                self.instruments.stopped(&record);
                Err(Interrupt::Failed(record))
            }
        }
    }

    /// Shows the store's failure and waits before the next attempt.
    async fn reconnecting(&self, error: &StoreError, attempts: u32) -> Result<(), Interrupt> {
        let last_error = super::failure::describe(error);
        let mut first = false;
        self.publish(|status| {
            let since = match &status.state {
                ProcessorState::Reconnecting { since, .. } => *since,
                _ => {
                    first = true;
                    SystemTime::now()
                }
            };
            status.state = ProcessorState::Reconnecting {
                since,
                attempts,
                last_error: last_error.clone(),
            };
            true
        });
        self.instruments.store_failed(first, attempts, &last_error);
        self.sleep(self.reconnect.delay_after(attempts)).await
    }

    /// Reads the stored checkpoint, reconnecting as long as it takes.
    async fn reload_checkpoint(&mut self) -> Result<(), Interrupt> {
        let mut attempts = 0;
        loop {
            match self.store_checkpoint().await {
                Ok(checkpoint) => {
                    self.advance(checkpoint);
                    return Ok(());
                }
                Err(error) => {
                    attempts += 1;
                    self.reconnecting(&error, attempts).await?;
                }
            }
        }
    }

    async fn count_dead_letters(&self) {
        if let Ok(letters) = self.processor.store().dead_letters(self.name()).await {
            let count = letters.len() as u64;
            self.publish(|status| {
                status.dead_letters = count;
                true
            });
        }
    }

    /// The spawned runner: leads when it can, stands by when another node leads.
    async fn run(mut self, mut controls: mpsc::UnboundedReceiver<Control>) {
        let mut attempts = 0;
        loop {
            if self.shutdown_requested() {
                break;
            }
            let lease = match self.processor.store().lead(self.name()).await {
                Ok(lease) => {
                    attempts = 0;
                    lease
                }
                Err(error) => {
                    attempts += 1;
                    match self.reconnecting(&error, attempts).await {
                        Ok(()) => continue,
                        Err(_) => break,
                    }
                }
            };
            match lease {
                Some(mut lease) => {
                    self.publish(|status| {
                        status.leader = true;
                        true
                    });
                    self.instruments.leadership(true);
                    let led = self.lead(&mut lease, &mut controls).await;
                    self.publish(|status| {
                        status.leader = false;
                        true
                    });
                    self.instruments.leadership(false);
                    match led {
                        Led::Deposed => continue,
                        Led::ShutDown => break,
                    }
                }
                None => {
                    if self.stand_by(&mut controls).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.set_state(ProcessorState::Stopped);
        controls.close();
        while let Ok(control) = controls.try_recv() {
            control.refuse(ControlError::NotRunning {
                processor: self.name(),
            });
        }
    }

    /// One leader-poll interval on a node that does not lead: the checkpoint follows the stored
    /// one, controls are refused.
    async fn stand_by(
        &mut self,
        controls: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Result<(), Interrupt> {
        self.set_state(ProcessorState::Standby);
        if let Ok(checkpoint) = self.store_checkpoint().await {
            self.advance(checkpoint);
        }
        let deadline = tokio::time::Instant::now() + self.leader_poll;
        loop {
            let timer = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.wait(controls, None, None, Some(timer)).await {
                Woken::ShutDown | Woken::Control(None) => return Err(Interrupt::ShutDown),
                Woken::Control(Some(control)) => control.refuse(ControlError::NotLeader {
                    processor: self.name(),
                }),
                Woken::Timer | Woken::LeaseLost | Woken::Events(_) => return Ok(()),
            }
        }
    }

    /// Runs the processor while `lease` holds.
    async fn lead(
        &mut self,
        lease: &mut Lease,
        controls: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Led {
        self.set_state(ProcessorState::Starting);
        if self.reload_checkpoint().await.is_err() {
            return Led::ShutDown;
        }
        self.count_dead_letters().await;
        let mut store_attempts = 0;
        loop {
            if self.shutdown_requested() {
                return Led::ShutDown;
            }
            if lease_lost(lease).await {
                return Led::Deposed;
            }
            while let Ok(control) = controls.try_recv() {
                self.control(control).await;
            }
            if self.failed || self.paused {
                let state = if self.failed {
                    ProcessorState::Failed
                } else {
                    ProcessorState::Paused
                };
                self.set_state(state);
                match self
                    .wait(controls, Some(lease), None, Some(GAUGE_REFRESH))
                    .await
                {
                    Woken::ShutDown | Woken::Control(None) => return Led::ShutDown,
                    Woken::LeaseLost => return Led::Deposed,
                    Woken::Control(Some(control)) => self.control(control).await,
                    Woken::Timer => self.refresh_gauges(),
                    Woken::Events(_) => {}
                }
                continue;
            }
            let stepped = self.step().await;
            let outcome = match stepped {
                Ok(step) => {
                    store_attempts = 0;
                    Ok(step)
                }
                Err(interrupt) => Err(interrupt),
            };
            match outcome {
                Ok(Step::Progress) => {
                    self.show_progress();
                    let mut behind = false;
                    if let Ok(head) = self.processor.events().head().await {
                        self.saw_head(head, None);
                        behind = head > self.checkpoint;
                    }
                    // A catch-up over a store that answers at once never waits, so it would
                    // hold its worker thread batch after batch: a task it wakes (the caller of
                    // a control it just answered, an HTTP handler) sits in that worker's slot
                    // until the catch-up ends. Between batches, the others run. At the head the
                    // next step goes on at once, to find nothing more and show it is live.
                    if behind {
                        tokio::task::yield_now().await;
                    }
                    if let Err(interrupt) = self.tick().await {
                        match self.interrupted(interrupt, &mut store_attempts).await {
                            Ok(()) => {}
                            Err(()) => return Led::ShutDown,
                        }
                    }
                }
                Ok(Step::Idle) => {
                    self.rebuild_until = None;
                    let timer = match self.tick().await {
                        Ok(timer) => timer,
                        Err(interrupt) => {
                            match self.interrupted(interrupt, &mut store_attempts).await {
                                Ok(()) => continue,
                                Err(()) => return Led::ShutDown,
                            }
                        }
                    };
                    self.set_state(ProcessorState::Live);
                    self.saw_head(self.checkpoint, None);
                    let after = self.checkpoint;
                    match self.wait(controls, Some(lease), Some(after), timer).await {
                        Woken::ShutDown | Woken::Control(None) => return Led::ShutDown,
                        Woken::LeaseLost => return Led::Deposed,
                        Woken::Control(Some(control)) => self.control(control).await,
                        Woken::Events(Ok(head)) => self.saw_head(head, None),
                        Woken::Events(Err(_)) => {
                            // The next read reports a failing store; this only keeps a broken
                            // wait from spinning.
                            if self.sleep(self.reconnect.base_delay).await.is_err() {
                                return Led::ShutDown;
                            }
                        }
                        Woken::Timer => {}
                    }
                }
                Err(interrupt) => {
                    if self
                        .interrupted(interrupt, &mut store_attempts)
                        .await
                        .is_err()
                    {
                        return Led::ShutDown;
                    }
                }
            }
        }
    }

    /// Deals with an interrupted step: reconnects after a store failure, re-reads a moved
    /// checkpoint, stops at a failure. `Err` on shutdown.
    async fn interrupted(
        &mut self,
        interrupt: Interrupt,
        store_attempts: &mut u32,
    ) -> Result<(), ()> {
        match interrupt {
            Interrupt::Store(error) => {
                *store_attempts += 1;
                if self.reconnecting(&error, *store_attempts).await.is_err() {
                    return Err(());
                }
                // The failed call may have committed before its answer was lost.
                self.reload_checkpoint().await.map_err(|_| ())
            }
            Interrupt::Moved => self.reload_checkpoint().await.map_err(|_| ()),
            Interrupt::Failed(failure) => {
                self.failed = true;
                self.publish(|status| {
                    status.state = ProcessorState::Failed;
                    status.last_error = Some(failure);
                    true
                });
                Ok(())
            }
            Interrupt::ShutDown => Err(()),
        }
    }

    fn show_progress(&self) {
        let state = match self.rebuild_until {
            Some(until) if self.checkpoint < until => ProcessorState::Rebuilding,
            _ => ProcessorState::CatchingUp,
        };
        self.set_state(state);
    }

    async fn tick(&self) -> Result<Option<Duration>, Interrupt> {
        match self.processor.tick(&self.policy).await {
            Ok(timer) => Ok(timer),
            Err(TickError::Store(error)) => Err(Interrupt::Store(error)),
            Err(TickError::Stopped(failure)) => {
                self.instruments.stopped(&failure);
                Err(Interrupt::Failed(*failure))
            }
        }
    }

    /// Waits for whichever comes first: shutdown, a control, the lease lost, events after
    /// `after`, the timer.
    async fn wait(
        &self,
        controls: &mut mpsc::UnboundedReceiver<Control>,
        lease: Option<&mut Lease>,
        after: Option<Position>,
        timer: Option<Duration>,
    ) -> Woken {
        let mut shutdown = self.shutdown.clone();
        let mut requested = pin!(async move {
            match &mut shutdown {
                Some(shutdown) => {
                    let _ = shutdown.wait_for(|requested| *requested).await;
                }
                None => std::future::pending().await,
            }
        });
        let mut control = pin!(controls.recv());
        let mut lost = pin!(async move {
            match lease {
                Some(lease) => lease.lost().await,
                None => std::future::pending().await,
            }
        });
        let events = self.processor.events();
        let mut arrived = pin!(async move {
            match after {
                Some(after) => events.wait_for_events(after).await,
                None => std::future::pending().await,
            }
        });
        let mut timer = pin!(async move {
            match timer {
                Some(timer) => tokio::time::sleep(timer).await,
                None => std::future::pending().await,
            }
        });
        poll_fn(|context| {
            if requested.as_mut().poll(context).is_ready() {
                return Poll::Ready(Woken::ShutDown);
            }
            if let Poll::Ready(control) = control.as_mut().poll(context) {
                return Poll::Ready(Woken::Control(control));
            }
            if lost.as_mut().poll(context).is_ready() {
                return Poll::Ready(Woken::LeaseLost);
            }
            if let Poll::Ready(head) = arrived.as_mut().poll(context) {
                return Poll::Ready(Woken::Events(head));
            }
            if timer.as_mut().poll(context).is_ready() {
                return Poll::Ready(Woken::Timer);
            }
            Poll::Pending
        })
        .await
    }

    async fn control(&mut self, control: Control) {
        match control {
            Control::Pause(done) => {
                self.paused = true;
                self.set_state(ProcessorState::Paused);
                let _ = done.send(Ok(()));
            }
            Control::Resume(done) => {
                let stood_still = self.paused || self.failed;
                self.paused = false;
                self.failed = false;
                // A resumed processor gives a failing event the policy's attempts again.
                self.failing = None;
                // Shown before the answer: a caller that waits for a position right after
                // `resume` must not find the processor still `Failed` (`wait_for` would return
                // at once) or `Paused`.
                if stood_still {
                    self.show_progress();
                }
                let _ = done.send(Ok(()));
            }
            Control::Rebuild(done) => {
                let _ = done.send(self.rebuild().await);
            }
            Control::SkipTo(to, done) => {
                let _ = done.send(self.skip_to(to).await);
            }
            Control::Retry(id, done) => {
                let _ = done.send(self.retry_dead_letter(&id).await);
            }
            Control::Discard(id, done) => {
                let discarded = self
                    .processor
                    .store()
                    .discard_dead_letter(self.name(), &id)
                    .await
                    .map_err(ControlError::Store);
                if let Ok(true) = discarded {
                    self.publish(|status| {
                        status.dead_letters = status.dead_letters.saturating_sub(1);
                        true
                    });
                }
                let _ = done.send(discarded);
            }
        }
    }

    async fn rebuild(&mut self) -> Result<(), ControlError> {
        match self.processor.reset().await {
            Ok(()) => {}
            Err(ResetError::Unsupported { processor }) => {
                return Err(ControlError::Unsupported { processor });
            }
            Err(ResetError::Store(error)) => return Err(ControlError::Store(error)),
        }
        self.failed = false;
        self.failing = None;
        let head = self
            .processor
            .events()
            .head()
            .await
            .unwrap_or(Position::START);
        self.rebuild_until = Some(head);
        self.checkpoint = Position::START;
        self.publish(|status| {
            status.state = ProcessorState::Rebuilding;
            status.dead_letters = 0;
            status.oldest_unhandled = None;
            status.head = status.head.max(head);
            status.moved_to(Position::START);
            true
        });
        Ok(())
    }

    async fn skip_to(&mut self, to: Position) -> Result<(), ControlError> {
        let processor = self.name();
        if to < self.checkpoint {
            return Err(ControlError::WouldReplay {
                processor,
                checkpoint: self.checkpoint,
                to,
            });
        }
        let head = self
            .processor
            .events()
            .head()
            .await
            .map_err(ControlError::Store)?;
        if to > head {
            return Err(ControlError::BeyondHead {
                processor,
                to,
                head,
            });
        }
        if to == self.checkpoint {
            return Ok(());
        }
        let batch = Batch {
            processor,
            expected: self.checkpoint,
            end: to,
            events: Vec::new(),
            dead_letters: Vec::new(),
            retried: None,
        };
        let span = self.instruments.batch_span(self.checkpoint);
        match self.processor.commit(batch).instrument(span.clone()).await {
            Ok(Committed { reached, .. }) => {
                self.instruments.committed(&span, reached, 0, &[]);
                self.instruments.skipped(self.checkpoint, reached);
                let stood_still = self.failed;
                self.failed = false;
                self.advance(reached);
                if stood_still {
                    self.show_progress();
                }
                Ok(())
            }
            Err(CommitError::CheckpointMoved { .. }) => Err(ControlError::NotLeader { processor }),
            Err(CommitError::Store(error)) => Err(ControlError::Store(error)),
        }
    }

    async fn retry_dead_letter(&mut self, id: &str) -> Result<(), ControlError> {
        let processor = self.name();
        let letters = self
            .processor
            .store()
            .dead_letters(processor)
            .await
            .map_err(ControlError::Store)?;
        let Some(letter) = letters.into_iter().find(|letter| letter.id == id) else {
            return Err(ControlError::UnknownDeadLetter {
                processor,
                id: id.to_owned(),
            });
        };
        let Some(position) = letter.position() else {
            return Err(ControlError::NotAnEvent {
                processor,
                id: id.to_owned(),
            });
        };
        let read = self
            .processor
            .events()
            .read_log(
                Position(position.0.saturating_sub(1)),
                1,
                self.processor.aggregates(),
            )
            .await
            .map_err(ControlError::Store)?;
        let entry = read
            .entries
            .into_iter()
            .find(|entry| entry.position() == position);
        let attempts = letter.failure.attempts + 1;
        let event = match entry {
            Some(LogEntry::Event(event)) => event,
            Some(LogEntry::Unreadable(row)) => {
                let failure = EventFailure::new(FailureKind::Decode, row.clone());
                return Err(ControlError::Failed(Box::new(Failure::of_event(
                    EventRef::of_unreadable(&row),
                    &failure,
                    attempts,
                ))));
            }
            None => {
                return Err(ControlError::EventGone {
                    processor,
                    position,
                });
            }
        };
        let batch = Batch {
            processor,
            expected: self.checkpoint,
            end: self.checkpoint,
            events: vec![&event],
            dead_letters: Vec::new(),
            retried: Some(id),
        };
        let span = self.instruments.batch_span(self.checkpoint);
        let committed = self.processor.commit(batch).instrument(span.clone()).await;
        if let Ok(Committed { reached, failed }) = &committed {
            let handled = usize::from(failed.is_none());
            self.instruments.committed(&span, *reached, handled, &[]);
        }
        match committed {
            Ok(Committed { failed: None, .. }) => {
                self.publish(|status| {
                    status.dead_letters = status.dead_letters.saturating_sub(1);
                    true
                });
                Ok(())
            }
            Ok(Committed {
                failed: Some((_, failure)),
                ..
            }) => Err(ControlError::Failed(Box::new(Failure::of_event(
                EventRef::of(&event),
                &failure,
                attempts,
            )))),
            Err(CommitError::CheckpointMoved { .. }) => Err(ControlError::NotLeader { processor }),
            Err(CommitError::Store(error)) => Err(ControlError::Store(error)),
        }
    }
}

/// Whether `lease` is already lost, without waiting.
async fn lease_lost(lease: &mut Lease) -> bool {
    let mut lost = pin!(lease.lost());
    poll_fn(|context| Poll::Ready(lost.as_mut().poll(context).is_ready())).await
}

/// Sends a control to a runner and waits for the answer.
pub(crate) async fn ask<T>(
    controls: &mpsc::UnboundedSender<Control>,
    processor: &'static str,
    control: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> Control,
) -> Result<T, ControlError> {
    let (done, answer) = oneshot::channel();
    controls
        .send(control(done))
        .map_err(|_| ControlError::NotRunning { processor })?;
    answer
        .await
        .map_err(|_| ControlError::NotRunning { processor })?
}
