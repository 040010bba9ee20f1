//! Projections whose read model lives in PostgreSQL: the runner hands the projection its SQL
//! transaction, writes the checkpoint in that same transaction, and runs on one node at a time.
//!
//! A [`PostgresProjection`] is the PostgreSQL sibling of cqrs-core's
//! [`Projection`](cqrs_core::projection::Projection): the same name, events and routing, but its
//! `apply` is `async` and gets the [`Transaction`] the batch is committed in, so the read model's
//! tables are changed by plain SQL. A [`PostgresProjectionRunner`] follows the log from the
//! checkpoint stored in `cqrs_projections`, and for each batch opens one transaction, locks the
//! checkpoint row, lets the projection write, moves the checkpoint and commits: the read model
//! and the checkpoint change together or not at all.
//!
//! ```no_run
//! use cqrs_core::prelude::*;
//! use cqrs_core::projection::EventContext;
//! use cqrs_postgres::{PostgresProjection, PostgresProjectionRunner, PostgresStore, Transaction};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! pub enum ShowEvent {
//!     Scheduled { capacity: u32 },
//!     SeatsReserved { booking: u64, seats: u32 },
//!     ReservationCancelled { booking: u64, seats: u32 },
//! }
//!
//! /// Seats reserved per show, in the table `reserved_seats (show text PRIMARY KEY, seats bigint)`.
//! struct ReservedSeats;
//!
//! #[async_trait::async_trait]
//! impl PostgresProjection for ReservedSeats {
//!     const NAME: &'static str = "reserved_seats";
//!     const AGGREGATES: &'static [&'static str] = &["show"];
//!     type Event = ShowEvent;
//!     type Error = cqrs_postgres::tokio_postgres::Error;
//!
//!     async fn apply(
//!         &self,
//!         transaction: &Transaction<'_>,
//!         event: ShowEvent,
//!         context: &EventContext<'_>,
//!     ) -> Result<(), Self::Error> {
//!         let change: i64 = match event {
//!             ShowEvent::Scheduled { .. } => 0,
//!             ShowEvent::SeatsReserved { seats, .. } => seats.into(),
//!             ShowEvent::ReservationCancelled { seats, .. } => -i64::from(seats),
//!         };
//!         let upsert = transaction
//!             .prepare_cached(
//!                 "INSERT INTO reserved_seats (show, seats) VALUES ($1, $2) \
//!                  ON CONFLICT (show) DO UPDATE SET seats = reserved_seats.seats + $2",
//!             )
//!             .await?;
//!         transaction.execute(&upsert, &[&context.aggregate_id(), &change]).await?;
//!         Ok(())
//!     }
//!
//!     async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), Self::Error> {
//!         transaction.batch_execute("TRUNCATE reserved_seats").await
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::new("host=/var/run/postgresql user=app dbname=app")?;
//! store.migrate().await?;
//! store
//!     .pool()
//!     .get()
//!     .await?
//!     .batch_execute(
//!         "CREATE TABLE IF NOT EXISTS reserved_seats (show text PRIMARY KEY, seats bigint NOT NULL)",
//!     )
//!     .await?;
//! // Start it on every node: one of them leads, the others stand by.
//! let projection = PostgresProjectionRunner::new(ReservedSeats, store.clone()).spawn();
//! // ... execute commands, then read your own write:
//! # let position = cqrs_core::Position(1);
//! projection.wait_for(position, std::time::Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Exactly once
//!
//! A batch is one transaction: `SELECT position FROM cqrs_projections WHERE name = $1 FOR
//! UPDATE`, the projection's SQL, `UPDATE cqrs_projections SET position = $reached`, `COMMIT`.
//! A crash anywhere before the commit (the process killed, the connection lost) rolls back the
//! projection's SQL with the checkpoint; after it, both are durable. The row lock and the
//! comparison with the position the runner expects mean that two runners can never both commit
//! the same events, even in the moment when a deposed leader has not noticed yet: the second
//! finds the checkpoint moved, re-reads it and goes on from there.
//!
//! [`apply_batch`](PostgresProjection::apply_batch) receives a whole run of events at once, for
//! set-based SQL (one `INSERT ... SELECT unnest(...)` per batch instead of one statement per
//! event); by default it calls [`apply`](PostgresProjection::apply) for each.
//!
//! # Errors
//!
//! Decoding errors, errors returned by `apply` or `apply_batch`, and panics in them go through
//! cqrs-core's [`ErrorPolicy`] and show in the same [`ProjectionStatus`] as the in-memory
//! runner's. A failed event's transaction is rolled back (an SQL error leaves a PostgreSQL
//! transaction unusable anyway); the events before it are committed in a new transaction, then
//! the policy decides: stop with the checkpoint right before it, skip it (the checkpoint moves
//! past it, the status lists it), or retry it. When `apply_batch` fails, the runner replays the
//! run one event at a time to find the failing event, so `apply` and `apply_batch` must have the
//! same effect.
//!
//! # One runner per projection across nodes
//!
//! Every node may start the runner; only the one holding the projection's *leader lock* applies
//! events. The lock is a session-level advisory lock, `pg_try_advisory_lock(7305271, lock_id)`
//! where `lock_id` is the projection's own number in `cqrs_projections` (unique, so two
//! projections never share a lock), held on a dedicated connection that is not part of the pool.
//! The other nodes try to take it every [`leader_poll`](PostgresProjectionRunner::leader_poll)
//! and meanwhile keep their status's position in step with the stored checkpoint, so
//! [`wait_for`](PostgresProjectionHandle::wait_for) works on any node. When the leader dies, its
//! connection closes and PostgreSQL releases the lock: the next node to try takes over from the
//! stored checkpoint. A leader whose lock connection closes (terminated, network lost) stops
//! applying and stands by again.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::projection::pacing::{DEFAULT_STORE_RETRY, FailingEvent, Halt, Pacer};
use cqrs_core::projection::{
    ErrorPolicy, EventContext, FailureKind, Panicked, ProjectionEvent, ProjectionFailure,
    ProjectionState, ProjectionStatus, ProjectionStoreError, RebuildError, WaitError,
};
use cqrs_core::subscription::LogFollower;
use cqrs_core::{EventStore, Position, RecordedEvent, RetryPolicy, StoreError};
use futures_util::FutureExt as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use crate::{PostgresStore, Transaction};

/// The first key of every projection's leader lock (the second is its `lock_id`).
pub const LEADER_LOCK_CLASS: i32 = 7_305_271;

/// A read model kept in PostgreSQL tables, changed by SQL in the runner's transaction.
///
/// See the [module documentation](self) for an example and the guarantees.
#[async_trait::async_trait]
pub trait PostgresProjection: Send + Sync + 'static {
    /// The projection's stable name: its checkpoint row and its leader lock are keyed by it.
    const NAME: &'static str;

    /// The aggregate types whose streams it reads, as
    /// [`Projection::AGGREGATES`](cqrs_core::projection::Projection::AGGREGATES): when not
    /// empty, every event of a listed stream must route to [`Event`](PostgresProjection::Event)
    /// and other streams are passed over.
    const AGGREGATES: &'static [&'static str] = &[];

    /// The events it reads: a [`DomainEvent`](cqrs_core::DomainEvent) enum or an enum of
    /// several (see [`ProjectionEvent`]).
    type Event: ProjectionEvent;

    /// Why applying can fail: often [`tokio_postgres::Error`].
    type Error: std::error::Error + Send + Sync + 'static;

    /// Changes the read model for one event, in `transaction` (the batch's, which the runner
    /// commits with the checkpoint). Must not commit or roll back, and must be deterministic: a
    /// rebuild replays the same events.
    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        event: Self::Event,
        context: &EventContext<'_>,
    ) -> Result<(), Self::Error>;

    /// Changes the read model for a run of consecutive events (those of one batch that this
    /// projection reads, in log order), in `transaction`. Override it for set-based SQL; it must
    /// have the same effect as calling [`apply`](PostgresProjection::apply) for each, which the
    /// runner does to find the culprit when it fails.
    async fn apply_batch(
        &self,
        transaction: &Transaction<'_>,
        events: Vec<(Self::Event, EventContext<'_>)>,
    ) -> Result<(), Self::Error> {
        for (event, context) in events {
            self.apply(transaction, event, &context).await?;
        }
        Ok(())
    }

    /// Empties the read model (e.g. `TRUNCATE`), in the transaction that also moves the
    /// checkpoint back to the start: the first step of a rebuild.
    async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), Self::Error>;
}

/// Sets up and starts one [`PostgresProjection`]: batch size, error policy, store retries and
/// how often a standby node tries to become the leader.
#[derive(Debug)]
pub struct PostgresProjectionRunner<P> {
    projection: P,
    store: PostgresStore,
    batch_size: usize,
    policy: ErrorPolicy,
    store_retry: RetryPolicy,
    leader_poll: Duration,
}

impl<P: PostgresProjection> PostgresProjectionRunner<P> {
    /// A runner of `projection` reading `store`'s log and writing through `store`'s pool; 500
    /// events per batch, [`ErrorPolicy::Stop`], a leadership attempt every second.
    pub fn new(projection: P, store: PostgresStore) -> Self {
        PostgresProjectionRunner {
            projection,
            store,
            batch_size: 500,
            policy: ErrorPolicy::Stop,
            store_retry: DEFAULT_STORE_RETRY,
            leader_poll: Duration::from_secs(1),
        }
    }

    /// How many events one transaction applies (at least 1).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// What to do with an event that cannot be decoded or applied.
    #[must_use]
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How often and how patiently to retry a failed read of the log or a failed commit before
    /// the projection stops ([`DEFAULT_STORE_RETRY`] by default: 10 attempts, 10 ms doubling to
    /// 1 s).
    #[must_use]
    pub fn store_retry(mut self, retry: RetryPolicy) -> Self {
        self.store_retry = retry;
        self
    }

    /// How often a node that is not the leader tries to take the leader lock (and refreshes its
    /// status from the stored checkpoint); 1 s by default. It bounds how long a projection
    /// stands still after its leader died.
    #[must_use]
    pub fn leader_poll(mut self, interval: Duration) -> Self {
        self.leader_poll = interval.max(Duration::from_millis(1));
        self
    }

    /// Starts the runner on its own task. Must be called within a tokio runtime.
    pub fn spawn(self) -> PostgresProjectionHandle {
        let (status_sender, status) = watch::channel(ProjectionStatus::new(P::NAME));
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let (leader_sender, leader) = watch::channel(false);
        let (controls, control_receiver) = mpsc::unbounded_channel();
        let worker = Worker {
            projection: self.projection,
            follower: LogFollower::new(self.store.clone(), Position::START, self.batch_size),
            store: self.store.clone(),
            policy: self.policy,
            leader_poll: self.leader_poll,
            pacer: Pacer {
                status: status_sender,
                shutdown: shutdown_receiver,
                store_retry: self.store_retry,
            },
            leader: leader_sender,
            controls: control_receiver,
        };
        let task = tokio::spawn(worker.run());
        PostgresProjectionHandle {
            name: P::NAME,
            store: self.store,
            status,
            leader,
            controls,
            shutdown,
            task: Some(task),
        }
    }
}

/// A running [`PostgresProjectionRunner`]: status, leadership, read-your-writes waits, rebuild,
/// shutdown.
///
/// Dropping it aborts the runner as a crash would (the open batch rolls back, the leader lock is
/// released); call [`shutdown`](PostgresProjectionHandle::shutdown) to stop cleanly.
pub struct PostgresProjectionHandle {
    name: &'static str,
    store: PostgresStore,
    status: watch::Receiver<ProjectionStatus>,
    leader: watch::Receiver<bool>,
    controls: mpsc::UnboundedSender<Control>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PostgresProjectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProjectionHandle")
            .field("name", &self.name)
            .field("leader", &*self.leader.borrow())
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl PostgresProjectionHandle {
    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether this runner holds the leader lock and applies events. A standby runner shows
    /// [`ProjectionState::Starting`] and the stored checkpoint as its position.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// A receiver of leadership changes.
    pub fn leader_updates(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// The projection's status, with its lag measured against the log's current head.
    pub async fn status(&self) -> ProjectionStatus {
        cqrs_core::projection::status_with_head(&self.status, &self.store).await
    }

    /// A receiver of every status change.
    pub fn status_updates(&self) -> watch::Receiver<ProjectionStatus> {
        self.status.clone()
    }

    /// Waits until the read model holds the event at `position`, at most `timeout`; `None`
    /// returns at once. On a standby node, the position follows the stored checkpoint every
    /// [`leader_poll`](PostgresProjectionRunner::leader_poll).
    pub async fn wait_for(
        &self,
        position: impl Into<Option<Position>>,
        timeout: Duration,
    ) -> Result<Position, WaitError> {
        cqrs_core::projection::wait_for_position(&self.status, position.into(), timeout).await
    }

    /// Rebuilds the read model from the start of the log: one transaction calls
    /// [`PostgresProjection::reset`] and moves the checkpoint to [`Position::START`]; the leader
    /// (this runner or another node's) then replays the log. Returns once the reset committed.
    pub async fn rebuild(&self) -> Result<(), RebuildError> {
        let not_running = RebuildError::NotRunning {
            projection: self.name,
        };
        let (done, outcome) = oneshot::channel();
        if self.controls.send(Control::Rebuild { done }).is_err() {
            return Err(not_running);
        }
        outcome.await.unwrap_or(Err(not_running))
    }

    /// Stops the runner after the batch it is on (committed whole or not at all), releases the
    /// leader lock, and returns the last status.
    pub async fn shutdown(mut self) -> ProjectionStatus {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.status.borrow().clone()
    }

    /// Stops the runner at once, as a crash would, and waits until its task has ended.
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for PostgresProjectionHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

enum Control {
    Rebuild {
        done: oneshot::Sender<Result<(), RebuildError>>,
    },
}

/// How following the log as the leader ended without halting.
enum Deposed {
    /// The lock connection closed: someone else may lead now.
    LockLost,
}

/// What a batch transaction ran into.
enum AttemptError {
    /// The event at `index` could not be decoded or applied; nothing was committed.
    Event {
        index: usize,
        failure: ProjectionFailure,
    },
    /// `apply_batch` failed on a run of several events: which one is not known yet.
    Batch,
    /// The checkpoint or the transaction failed.
    Store(ProjectionStoreError),
}

/// The leader lock's connection. Dropping it closes the connection, which releases the lock.
struct LockConnection {
    client: tokio_postgres::Client,
    closed: watch::Receiver<bool>,
}

impl LockConnection {
    async fn open(store: &PostgresStore) -> Result<Self, tokio_postgres::Error> {
        let (client, connection) = store.config().connect(NoTls).await?;
        let (sender, closed) = watch::channel(false);
        tokio::spawn(async move {
            // Ends when the server closes the connection (terminated, restarted) or when the
            // client is dropped.
            let _ = connection.await;
            sender.send_replace(true);
        });
        Ok(LockConnection { client, closed })
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow() || self.client.is_closed()
    }

    async fn wait_closed(&mut self) {
        let _ = self.closed.wait_for(|closed| *closed).await;
    }
}

struct Worker<P> {
    projection: P,
    follower: LogFollower<PostgresStore>,
    store: PostgresStore,
    policy: ErrorPolicy,
    leader_poll: Duration,
    pacer: Pacer,
    leader: watch::Sender<bool>,
    controls: mpsc::UnboundedReceiver<Control>,
}

impl<P: PostgresProjection> Worker<P> {
    async fn run(mut self) {
        let halt = self.lead_or_stand_by().await;
        self.leader.send_replace(false);
        self.pacer.halted(&halt);
        self.controls.close();
        while let Ok(Control::Rebuild { done }) = self.controls.try_recv() {
            let _ = done.send(Err(halt.rebuild_error(P::NAME)));
        }
    }

    async fn lead_or_stand_by(&mut self) -> Halt {
        loop {
            let mut lock = match self.acquire().await {
                Ok(lock) => lock,
                Err(halt) => return halt,
            };
            self.leader.send_replace(true);
            let outcome = self.follow(&mut lock).await;
            self.leader.send_replace(false);
            // Closing the connection releases the lock for the other nodes.
            drop(lock);
            match outcome {
                Ok(Deposed::LockLost) => {
                    self.pacer
                        .status
                        .send_modify(|status| status.state = ProjectionState::Starting);
                }
                Err(halt) => return halt,
            }
        }
    }

    /// Stands by until this node holds the leader lock; answers rebuild requests meanwhile.
    async fn acquire(&mut self) -> Result<LockConnection, Halt> {
        let mut attempts = 0;
        let mut connection: Option<LockConnection> = None;
        loop {
            if self.pacer.shutdown_requested() {
                return Err(Halt::ShutDown);
            }
            while let Ok(control) = self.controls.try_recv() {
                self.control(control).await?;
            }
            match self.try_lock(&mut connection).await {
                Ok(true) => {
                    if let Some(lock) = connection.take() {
                        return Ok(lock);
                    }
                }
                Ok(false) => attempts = 0,
                Err(error) => {
                    connection = None;
                    self.pacer
                        .store_failed(FailureKind::Commit, None, &mut attempts, error)
                        .await?;
                    continue;
                }
            }
            let mut shutdown = self.pacer.shutdown.clone();
            tokio::select! {
                () = requested(&mut shutdown) => return Err(Halt::ShutDown),
                control = self.controls.recv() => match control {
                    Some(control) => self.control(control).await?,
                    None => return Err(Halt::ShutDown),
                },
                () = tokio::time::sleep(self.leader_poll) => {}
            }
        }
    }

    /// One attempt at the leader lock; on the way, the status's position follows the stored
    /// checkpoint.
    async fn try_lock(
        &self,
        connection: &mut Option<LockConnection>,
    ) -> Result<bool, ProjectionStoreError> {
        if connection.as_ref().is_none_or(LockConnection::is_closed) {
            *connection = Some(
                LockConnection::open(&self.store)
                    .await
                    .map_err(ProjectionStoreError::backend)?,
            );
        }
        let Some(lock) = connection.as_ref() else {
            return Ok(false);
        };
        let (lock_id, position) = register(&lock.client, P::NAME).await?;
        self.pacer.status.send_modify(|status| {
            status.position = position;
            status.head = status.head.max(position);
        });
        let row = lock
            .client
            .query_one(
                "SELECT pg_try_advisory_lock($1::int4, $2::int4)",
                &[&LEADER_LOCK_CLASS, &lock_id],
            )
            .await
            .map_err(ProjectionStoreError::backend)?;
        row.try_get(0).map_err(ProjectionStoreError::backend)
    }

    /// Catches up and tails the log while this node leads.
    async fn follow(&mut self, lock: &mut LockConnection) -> Result<Deposed, Halt> {
        let mut checkpoint = self.load_checkpoint().await?;
        loop {
            if self.pacer.shutdown_requested() {
                return Err(Halt::ShutDown);
            }
            if lock.is_closed() {
                return Ok(Deposed::LockLost);
            }
            while let Ok(control) = self.controls.try_recv() {
                self.control(control).await?;
                checkpoint = self.load_checkpoint().await?;
            }
            let batch = self.pacer.read_batch(&mut self.follower).await?;
            if batch.is_empty() {
                self.pacer.status.send_modify(|status| {
                    status.state = ProjectionState::Live;
                    status.head = status.head.max(checkpoint);
                });
                let after = self.follower.position();
                let mut shutdown = self.pacer.shutdown.clone();
                tokio::select! {
                    () = requested(&mut shutdown) => return Err(Halt::ShutDown),
                    () = lock.wait_closed() => return Ok(Deposed::LockLost),
                    control = self.controls.recv() => match control {
                        Some(control) => {
                            self.control(control).await?;
                            checkpoint = self.load_checkpoint().await?;
                        }
                        None => return Err(Halt::ShutDown),
                    },
                    head = self.store.wait_for_events(after) => {
                        if let Ok(head) = head {
                            self.pacer.status.send_modify(|status| status.head = status.head.max(head));
                        }
                    }
                }
                continue;
            }
            self.pacer
                .status
                .send_modify(|status| status.state = ProjectionState::CatchingUp);
            if !self.commit_batch(&mut checkpoint, &batch).await? {
                // Another runner or a rebuild moved the checkpoint: go on from where it is.
                checkpoint = self.load_checkpoint().await?;
                continue;
            }
            if let Ok(head) = self.store.head().await {
                self.pacer
                    .status
                    .send_modify(|status| status.head = status.head.max(head));
            }
        }
    }

    async fn load_checkpoint(&mut self) -> Result<Position, Halt> {
        let mut attempts = 0;
        let checkpoint = loop {
            match self.read_checkpoint().await {
                Ok(checkpoint) => break checkpoint,
                Err(error) => {
                    self.pacer
                        .store_failed(FailureKind::Commit, None, &mut attempts, error)
                        .await?;
                }
            }
        };
        self.follower.seek(checkpoint);
        self.pacer.status.send_modify(|status| {
            status.position = checkpoint;
            status.head = status.head.max(checkpoint);
        });
        Ok(checkpoint)
    }

    async fn read_checkpoint(&self) -> Result<Position, ProjectionStoreError> {
        let client = self
            .store
            .client()
            .await
            .map_err(ProjectionStoreError::backend)?;
        Ok(register(&client, P::NAME).await?.1)
    }

    async fn control(&mut self, control: Control) -> Result<(), Halt> {
        let Control::Rebuild { done } = control;
        let mut attempts = 0;
        loop {
            match self.reset().await {
                Ok(()) => break,
                Err(error) => {
                    if let Err(halt) = self
                        .pacer
                        .store_failed(FailureKind::Commit, None, &mut attempts, error)
                        .await
                    {
                        let _ = done.send(Err(halt.rebuild_error(P::NAME)));
                        return Err(halt);
                    }
                }
            }
        }
        self.follower.seek(Position::START);
        self.pacer.status.send_modify(|status| {
            status.position = Position::START;
        });
        let _ = done.send(Ok(()));
        Ok(())
    }

    /// Empties the read model and moves the checkpoint to the start, in one transaction.
    async fn reset(&self) -> Result<(), ProjectionStoreError> {
        let mut client = self
            .store
            .client()
            .await
            .map_err(ProjectionStoreError::backend)?;
        register(&client, P::NAME).await?;
        let transaction = client
            .transaction()
            .await
            .map_err(ProjectionStoreError::backend)?;
        lock_checkpoint(&transaction, P::NAME).await?;
        self.projection
            .reset(&transaction)
            .await
            .map_err(ProjectionStoreError::backend)?;
        move_checkpoint(&transaction, P::NAME, Position::START).await?;
        transaction
            .commit()
            .await
            .map_err(ProjectionStoreError::backend)
    }

    /// Applies and commits the whole of `batch`, following the error policy. `Ok(false)` when
    /// the stored checkpoint was not `checkpoint` (nothing of the batch was committed then).
    async fn commit_batch(
        &self,
        checkpoint: &mut Position,
        batch: &[RecordedEvent],
    ) -> Result<bool, Halt> {
        let mut next = 0;
        let mut end = batch.len();
        let mut one_by_one = false;
        let mut failing = FailingEvent::default();
        let mut skip_first: Option<ProjectionFailure> = None;
        let mut store_attempts = 0;
        while next < batch.len() {
            let attempt = self
                .attempt(
                    *checkpoint,
                    batch,
                    next,
                    end,
                    skip_first.is_some(),
                    one_by_one,
                )
                .await;
            match attempt {
                Ok(reached) => {
                    store_attempts = 0;
                    *checkpoint = reached;
                    let skipped = skip_first.take();
                    self.pacer.status.send_modify(|status| {
                        status.position = reached;
                        if let Some(failure) = skipped {
                            status.record_skip(failure);
                        }
                    });
                    next = end;
                    end = batch.len();
                    one_by_one = false;
                }
                Err(AttemptError::Store(ProjectionStoreError::CheckpointMoved { .. })) => {
                    return Ok(false);
                }
                Err(AttemptError::Store(error)) => {
                    let event = batch.get(next).cloned().map(Arc::new);
                    self.pacer
                        .store_failed(FailureKind::Commit, event, &mut store_attempts, error)
                        .await?;
                }
                Err(AttemptError::Batch) => one_by_one = true,
                Err(AttemptError::Event { index, failure }) if index > next => {
                    // Commit the events before the failing one first (in a new transaction: the
                    // failed one is rolled back), then deal with it on its own.
                    let _ = failure;
                    end = index;
                    one_by_one = false;
                }
                Err(AttemptError::Event { failure, .. }) => {
                    one_by_one = false;
                    let skipped = self.pacer.event_failed(self.policy, &mut failing, failure);
                    if let Some(skipped) = skipped.await? {
                        skip_first = Some(skipped);
                    }
                }
            }
        }
        Ok(true)
    }

    /// One transaction: checks the checkpoint is `expected`, applies `batch[start..end]`
    /// (passing over `batch[start]` when `skip_first`), moves the checkpoint to the last one's
    /// position, commits.
    async fn attempt(
        &self,
        expected: Position,
        batch: &[RecordedEvent],
        start: usize,
        end: usize,
        skip_first: bool,
        one_by_one: bool,
    ) -> Result<Position, AttemptError> {
        let first = if skip_first { start + 1 } else { start };
        let mut routed = Vec::with_capacity(end.saturating_sub(first));
        for (index, recorded) in batch.iter().enumerate().take(end).skip(first) {
            match route::<P>(recorded) {
                Ok(Some(event)) => routed.push((index, event)),
                Ok(None) => {}
                Err(error) => {
                    return Err(AttemptError::Event {
                        index,
                        failure: failure(FailureKind::Decode, recorded, Arc::new(error)),
                    });
                }
            }
        }
        let Some(reached) = end.checked_sub(1).and_then(|last| batch.get(last)) else {
            return Ok(expected);
        };
        let reached = reached.position;
        let store_error = |error: tokio_postgres::Error| {
            AttemptError::Store(ProjectionStoreError::backend(error))
        };
        let mut client = self
            .store
            .client()
            .await
            .map_err(|error| AttemptError::Store(ProjectionStoreError::backend(error)))?;
        let transaction = client.transaction().await.map_err(store_error)?;
        let actual = lock_checkpoint(&transaction, P::NAME)
            .await
            .map_err(AttemptError::Store)?;
        if actual != expected {
            return Err(AttemptError::Store(ProjectionStoreError::CheckpointMoved {
                expected,
                actual,
            }));
        }
        if one_by_one || routed.len() == 1 {
            for (index, event) in routed {
                let Some(recorded) = batch.get(index) else {
                    continue;
                };
                let context = EventContext::new(recorded);
                let applied =
                    AssertUnwindSafe(self.projection.apply(&transaction, event, &context))
                        .catch_unwind()
                        .await;
                if let Some(failure) = apply_failure(applied, Some(recorded)) {
                    let _ = transaction.rollback().await;
                    return Err(AttemptError::Event { index, failure });
                }
            }
        } else if !routed.is_empty() {
            let events = routed
                .into_iter()
                .filter_map(|(index, event)| {
                    batch
                        .get(index)
                        .map(|recorded| (event, EventContext::new(recorded)))
                })
                .collect();
            let applied = AssertUnwindSafe(self.projection.apply_batch(&transaction, events))
                .catch_unwind()
                .await;
            if apply_failure(applied, None).is_some() {
                let _ = transaction.rollback().await;
                return Err(AttemptError::Batch);
            }
        }
        move_checkpoint(&transaction, P::NAME, reached)
            .await
            .map_err(AttemptError::Store)?;
        transaction.commit().await.map_err(store_error)?;
        Ok(reached)
    }
}

/// Returns once shutdown is requested (or every sender is gone).
async fn requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|requested| *requested).await;
}

fn failure(
    kind: FailureKind,
    event: &RecordedEvent,
    error: Arc<dyn std::error::Error + Send + Sync>,
) -> ProjectionFailure {
    ProjectionFailure {
        kind,
        event: Some(Arc::new(event.clone())),
        attempts: 1,
        error,
    }
}

/// The failure an `apply` (or `apply_batch`) outcome is, if any.
fn apply_failure<E: std::error::Error + Send + Sync + 'static>(
    applied: Result<Result<(), E>, Box<dyn std::any::Any + Send>>,
    event: Option<&RecordedEvent>,
) -> Option<ProjectionFailure> {
    let (kind, error): (_, Arc<dyn std::error::Error + Send + Sync>) = match applied {
        Ok(Ok(())) => return None,
        Ok(Err(error)) => (FailureKind::Apply, Arc::new(error)),
        Err(payload) => (
            FailureKind::Panic,
            Arc::new(Panicked::from_payload(&*payload)),
        ),
    };
    Some(ProjectionFailure {
        kind,
        event: event.cloned().map(Arc::new),
        attempts: 1,
        error,
    })
}

/// Routes `recorded` for `P`, as cqrs-core's runner does for a
/// [`Projection`](cqrs_core::projection::Projection).
fn route<P: PostgresProjection>(recorded: &RecordedEvent) -> Result<Option<P::Event>, StoreError> {
    cqrs_core::projection::route_from(P::AGGREGATES, recorded)
}

/// Makes sure the projection has its row; returns its lock id and checkpoint.
async fn register(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<(i32, Position), ProjectionStoreError> {
    let row = client
        .query_one(
            "WITH inserted AS (INSERT INTO cqrs_projections (name) VALUES ($1) \
             ON CONFLICT (name) DO NOTHING RETURNING lock_id, position) \
             SELECT lock_id, position FROM inserted \
             UNION ALL SELECT lock_id, position FROM cqrs_projections WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(ProjectionStoreError::backend)?;
    let lock_id: i32 = row.try_get(0).map_err(ProjectionStoreError::backend)?;
    let position: i64 = row.try_get(1).map_err(ProjectionStoreError::backend)?;
    Ok((lock_id, to_position(position)?))
}

/// Locks the projection's checkpoint row until the transaction ends and returns the checkpoint.
async fn lock_checkpoint(
    transaction: &Transaction<'_>,
    name: &str,
) -> Result<Position, ProjectionStoreError> {
    let statement = transaction
        .prepare_cached("SELECT position FROM cqrs_projections WHERE name = $1 FOR UPDATE")
        .await
        .map_err(ProjectionStoreError::backend)?;
    let row = transaction
        .query_opt(&statement, &[&name])
        .await
        .map_err(ProjectionStoreError::backend)?;
    match row {
        Some(row) => to_position(row.try_get(0).map_err(ProjectionStoreError::backend)?),
        // Registered before any batch; a missing row was deleted by hand: a fresh start.
        None => Ok(Position::START),
    }
}

async fn move_checkpoint(
    transaction: &Transaction<'_>,
    name: &str,
    position: Position,
) -> Result<(), ProjectionStoreError> {
    let statement = transaction
        .prepare_cached(
            "INSERT INTO cqrs_projections (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()",
        )
        .await
        .map_err(ProjectionStoreError::backend)?;
    let position = crate::rows::to_i64(position.0);
    transaction
        .execute(&statement, &[&name, &position])
        .await
        .map_err(ProjectionStoreError::backend)?;
    Ok(())
}

fn to_position(value: i64) -> Result<Position, ProjectionStoreError> {
    u64::try_from(value).map(Position).map_err(|_| {
        ProjectionStoreError::backend(crate::CorruptRow {
            stream: String::new(),
            reason: format!("negative projection checkpoint {value}"),
        })
    })
}
