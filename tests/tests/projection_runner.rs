//! The projection runner over the in-memory store: catch-up and live tail, crash at every step,
//! resume after downtime, rebuilds, read-your-writes, failure policies, corrupt events, status,
//! and many projections side by side.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::event::{Metadata, NewEvent};
use cqrs_core::processor::{
    AfterRetries, CommitError, DeadLetter, FailureKind, FailurePolicy, Processor as _,
    ProcessorHandle, ProcessorState, ProcessorStore, WaitError,
};
use cqrs_core::projection::{
    Applied, EventContext, MemoryReadModel, Projection, ProjectionCommit, ProjectionStore,
    Projector,
};
use cqrs_core::{
    EventId, EventStore, ExpectedVersion, Position, Repository, RetryPolicy, StoreError, StreamId,
};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowEvent};
use cqrs_memstore::MemStore;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(10);

/// Seats left per show, and every position applied, in order: a lost or doubled event shows.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seats {
    available: BTreeMap<String, i64>,
    applied: Vec<u64>,
    generation: u32,
}

/// What the test wants the projection to do wrong, and when.
#[derive(Debug, Default)]
struct Plan {
    /// Fail on the event at this position...
    fail_at: Option<Position>,
    /// ...this many times...
    failures_left: u32,
    /// ...by panicking instead of returning an error.
    panic: bool,
    /// Written into the model, to tell one rebuild from another.
    generation: u32,
    /// Slows every apply down, to make a rebuild take a while.
    delay: Duration,
}

#[derive(Clone, Default)]
struct Faults(Arc<Mutex<Plan>>);

impl Faults {
    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn failing(position: u64, times: u32) -> Self {
        let faults = Faults::default();
        faults.plan().fail_at = Some(Position(position));
        faults.plan().failures_left = times;
        faults
    }
}

#[derive(Debug, thiserror::Error)]
#[error("refused the event at position {0}")]
struct Refused(Position);

struct AvailableSeats {
    faults: Faults,
}

impl AvailableSeats {
    fn new() -> Self {
        AvailableSeats {
            faults: Faults::default(),
        }
    }

    fn with(faults: &Faults) -> Self {
        AvailableSeats {
            faults: faults.clone(),
        }
    }
}

impl Projection for AvailableSeats {
    const NAME: &'static str = "available_seats";
    const AGGREGATES: &'static [&'static str] = &["show"];
    type Event = ShowEvent;
    type ReadModel = Seats;
    type Error = Refused;

    fn apply(
        &self,
        seats: &mut Seats,
        event: ShowEvent,
        context: &EventContext<'_>,
    ) -> Result<(), Refused> {
        let (panic, delay, generation) = {
            let mut plan = self.faults.plan();
            let fail = plan.fail_at == Some(context.position) && plan.failures_left > 0;
            if fail {
                plan.failures_left -= 1;
                if !plan.panic {
                    return Err(Refused(context.position));
                }
            }
            (fail && plan.panic, plan.delay, plan.generation)
        };
        if panic {
            panic!("the projection panics at position {}", context.position);
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let show = seats
            .available
            .entry(context.aggregate_id().to_owned())
            .or_default();
        match event {
            ShowEvent::Scheduled { capacity } => *show = i64::from(capacity),
            ShowEvent::SeatsReserved { seats, .. } => *show -= i64::from(seats),
            ShowEvent::ReservationCancelled { seats, .. } => *show += i64::from(seats),
        }
        seats.applied.push(context.position.0);
        seats.generation = generation;
        Ok(())
    }
}

fn reserve(booking: u64, seats: u32) -> ShowCommand {
    ShowCommand::ReserveSeats {
        booking: BookingId(booking),
        seats,
    }
}

/// Writes `shows` shows with `reservations` reservations each (and cancels every third),
/// through the repository. Returns the head.
async fn write_shows(store: &MemStore, first_show: u64, shows: u64, reservations: u64) -> Position {
    let repository = Repository::<Show, _>::new(store.clone());
    for show in first_show..first_show + shows {
        repository
            .execute(show, ShowCommand::Schedule { capacity: 100 })
            .await
            .expect("schedules");
        for booking in 0..reservations {
            repository
                .execute(show, reserve(booking, 1 + booking as u32 % 3))
                .await
                .expect("reserves");
            if booking % 3 == 2 {
                repository
                    .execute(
                        show,
                        ShowCommand::CancelReservation {
                            booking: BookingId(booking),
                        },
                    )
                    .await
                    .expect("cancels");
            }
        }
    }
    store.head().await.expect("head")
}

/// The model a projection builds when it replays the whole log from zero, without faults.
async fn rebuilt_from_zero(store: &MemStore) -> Seats {
    let model = MemoryReadModel::new();
    let handle = Projector::new(AvailableSeats::new(), store.clone(), model.clone())
        .runner()
        .batch_size(7)
        .spawn();
    let head = store.head().await.expect("head");
    handle.wait_for(head, WAIT).await.expect("rebuilds");
    handle.shutdown().await;
    model.snapshot().0
}

fn spawn(store: &MemStore, model: &MemoryReadModel<Seats>, batch_size: usize) -> ProcessorHandle {
    Projector::new(AvailableSeats::new(), store.clone(), model.clone())
        .runner()
        .batch_size(batch_size)
        .spawn()
}

/// A runner of the projection with `faults`, under `policy`.
fn spawn_with(
    store: &MemStore,
    model: &MemoryReadModel<Seats>,
    faults: &Faults,
    batch_size: usize,
    policy: FailurePolicy,
) -> ProcessorHandle {
    Projector::new(AvailableSeats::with(faults), store.clone(), model.clone())
        .runner()
        .batch_size(batch_size)
        .failure_policy(policy)
        .spawn()
}

/// The dead letters of a running projection, oldest first.
async fn parked(handle: &ProcessorHandle) -> Vec<DeadLetter> {
    handle.dead_letters().await.expect("reads the dead letters")
}

fn positions(range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    range.collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_up_then_tails_the_log_live() {
    let store = MemStore::new();
    let head = write_shows(&store, 0, 3, 5).await;
    let model = MemoryReadModel::new();
    let handle = spawn(&store, &model, 4);
    handle.wait_for(head, WAIT).await.expect("catches up");
    assert_eq!(
        model.read(|seats| seats.applied.clone()),
        positions(1..=head.0)
    );

    // Live: new events arrive while the runner waits, without polling.
    let later = write_shows(&store, 10, 1, 2).await;
    handle.wait_for(later, WAIT).await.expect("tails");
    // The runner reports Live once a read finds nothing new, just after the last commit.
    let mut updates = handle.status_updates();
    tokio::time::timeout(
        WAIT,
        updates.wait_for(|status| status.state == ProcessorState::Live),
    )
    .await
    .expect("goes live")
    .expect("the runner is running");
    let status = handle.status().await;
    assert_eq!(status.state, ProcessorState::Live);
    assert_eq!((status.checkpoint, status.lag), (later, 0));
    assert_eq!(model.snapshot().0, rebuilt_from_zero(&store).await);
    assert_eq!(model.position(), later);
    let status = handle.shutdown().await;
    assert_eq!(status.state, ProcessorState::Stopped);
}

/// Crashes the runner at its `crash_at`-th commit: before it (after running the apply closure
/// on a scratch copy, as if the change were made but not yet committed) or right after it (as
/// if the process died before the runner learnt the commit went through).
struct CrashingStore {
    inner: MemoryReadModel<Seats>,
    crash_at: usize,
    after_commit: bool,
    commits: AtomicUsize,
    crashed: Arc<Notify>,
}

#[async_trait]
impl ProcessorStore for CrashingStore {
    async fn checkpoint(&self, projection: &str) -> Result<Position, StoreError> {
        self.inner.checkpoint(projection).await
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(projection).await
    }

    async fn discard_dead_letter(&self, projection: &str, id: &str) -> Result<bool, StoreError> {
        self.inner.discard_dead_letter(projection, id).await
    }
}

#[async_trait]
impl ProjectionStore for CrashingStore {
    type Model = Seats;

    async fn commit(
        &self,
        projection: &'static str,
        commit: ProjectionCommit,
        apply: &mut (dyn for<'m> FnMut(&'m mut Seats) -> Applied + Send),
    ) -> Result<Position, CommitError> {
        if self.commits.fetch_add(1, Ordering::SeqCst) != self.crash_at {
            return self.inner.commit(projection, commit, apply).await;
        }
        if self.after_commit {
            self.inner.commit(projection, commit, apply).await?;
        } else {
            let (mut scratch, _) = self.inner.snapshot();
            apply(&mut scratch);
        }
        self.crashed.notify_one();
        std::future::pending().await
    }

    async fn reset(&self, projection: &str) -> Result<(), StoreError> {
        ProjectionStore::reset(&self.inner, projection).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_commit_neither_loses_nor_doubles_an_event() {
    let store = MemStore::new();
    let head = write_shows(&store, 0, 3, 6).await;
    let expected = rebuilt_from_zero(&store).await;
    assert_eq!(expected.applied, positions(1..=head.0));

    let batch_size = 4;
    let commits = head.0.div_ceil(batch_size as u64) as usize;
    for after_commit in [false, true] {
        for crash_at in 0..commits {
            let model = MemoryReadModel::new();
            let crashed = Arc::new(Notify::new());
            let crashing = CrashingStore {
                inner: model.clone(),
                crash_at,
                after_commit,
                commits: AtomicUsize::new(0),
                crashed: crashed.clone(),
            };
            let handle = Projector::new(AvailableSeats::new(), store.clone(), crashing)
                .runner()
                .batch_size(batch_size)
                .spawn();
            tokio::time::timeout(WAIT, crashed.notified())
                .await
                .expect("reaches the crash point");
            handle.abort().await;
            let committed = crash_at + usize::from(after_commit);
            assert_eq!(
                model.position(),
                Position(((committed * batch_size) as u64).min(head.0)),
                "crash at commit {crash_at}, after: {after_commit}"
            );

            // The next runner resumes from the checkpoint the crash left.
            let handle = spawn(&store, &model, batch_size);
            handle.wait_for(head, WAIT).await.expect("resumes");
            handle.shutdown().await;
            assert_eq!(
                model.snapshot().0,
                expected,
                "crash at commit {crash_at}, after: {after_commit}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runners_killed_at_random_moments_while_writers_write_end_equal_to_a_rebuild() {
    let store = MemStore::new();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { write_shows(&store, 0, 20, 10).await })
    };
    let model = MemoryReadModel::new();
    for round in 0..40u64 {
        let handle = spawn(&store, &model, 1 + (round as usize % 5));
        // Kills land anywhere: mid-read, mid-wait, between batches.
        tokio::time::sleep(Duration::from_micros(200 + 137 * (round % 11))).await;
        handle.abort().await;
        let (applied, position) =
            model.read_with_checkpoint(|seats, position| (seats.applied.clone(), position));
        assert_eq!(applied, positions(1..=position.0));
    }
    let head = writer.await.expect("writer finished");
    let handle = spawn(&store, &model, 3);
    handle.wait_for(head, WAIT).await.expect("finishes");
    handle.shutdown().await;
    assert_eq!(model.snapshot().0, rebuilt_from_zero(&store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_downtime_with_only_the_events_it_missed() {
    let store = MemStore::new();
    let first = write_shows(&store, 0, 2, 4).await;
    let model = MemoryReadModel::new();
    let handle = spawn(&store, &model, 5);
    handle.wait_for(first, WAIT).await.expect("catches up");
    let status = handle.shutdown().await;
    assert_eq!(status.checkpoint, first);

    // Down while more is written.
    let second = write_shows(&store, 5, 2, 4).await;
    assert_eq!(model.position(), first);

    let handle = spawn(&store, &model, 5);
    assert_eq!(
        handle.wait_for(second, WAIT).await.expect("catches up"),
        second
    );
    handle.shutdown().await;
    assert_eq!(model.snapshot().0, rebuilt_from_zero(&store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilds_in_place_from_position_zero() {
    let store = MemStore::new();
    let head = write_shows(&store, 0, 3, 4).await;
    let faults = Faults::default();
    faults.plan().generation = 1;
    let model = MemoryReadModel::new();
    let handle = spawn_with(&store, &model, &faults, 5, FailurePolicy::default());
    handle.wait_for(head, WAIT).await.expect("catches up");
    assert_eq!(model.read(|seats| seats.generation), 1);

    faults.plan().generation = 2;
    handle.rebuild().await.expect("rebuilds");
    handle.wait_for(head, WAIT).await.expect("replays");
    let (rebuilt, position) = model.snapshot();
    assert_eq!(position, head);
    assert_eq!(rebuilt.generation, 2);
    assert_eq!(rebuilt.applied, positions(1..=head.0));
    assert_eq!(
        Seats {
            generation: 0,
            ..rebuilt
        },
        rebuilt_from_zero(&store).await
    );

    // It tails the log again after the rebuild.
    let later = write_shows(&store, 9, 1, 1).await;
    handle.wait_for(later, WAIT).await.expect("tails");
    assert_eq!(
        Seats {
            generation: 0,
            ..model.snapshot().0
        },
        rebuilt_from_zero(&store).await
    );
    handle.shutdown().await;
}

/// One thread, a store that answers at once: a runner catching up must let the other tasks
/// run between its batches (here the caller of `rebuild`, an HTTP handler in a service), or
/// they wait for the whole catch-up.
#[tokio::test(flavor = "current_thread")]
async fn a_catch_up_lets_the_other_tasks_of_its_thread_run_between_batches() {
    let store = MemStore::new();
    let head = write_shows(&store, 0, 20, 10).await;
    let model = MemoryReadModel::new();
    let handle = spawn(&store, &model, 5);
    handle.wait_for(head, WAIT).await.expect("catches up");

    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = Arc::clone(&ticks);
        async move {
            loop {
                ticks.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        }
    });
    handle.rebuild().await.expect("rebuilds");
    let status = handle.last_status();
    println!(
        "after rebuild() returned: {:?} at {} of {}, the other task ran {} time(s)",
        status.state,
        status.checkpoint,
        head,
        ticks.load(Ordering::SeqCst)
    );
    assert_eq!(
        status.state,
        ProcessorState::Rebuilding,
        "the caller of rebuild() waited for the whole replay of {head} events"
    );
    assert!(status.checkpoint < head, "{status:?}");
    handle.wait_for(head, WAIT).await.expect("replays");
    assert!(ticks.load(Ordering::SeqCst) > 1, "the other task starved");
    ticker.abort();
    assert_eq!(model.snapshot().0.applied, positions(1..=head.0));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_the_position_a_command_wrote_and_times_out_with_a_typed_error() {
    let store = MemStore::new();
    let model = MemoryReadModel::new();
    let handle = spawn(&store, &model, 10);
    let shows = Repository::<Show, _>::new(store.clone());
    shows
        .execute(7, ShowCommand::Schedule { capacity: 10 })
        .await
        .expect("schedules");
    let outcome = shows.execute(7, reserve(1, 4)).await.expect("reserves");
    let position = outcome.position.expect("wrote an event");
    handle.wait_for(position, WAIT).await.expect("reaches it");
    assert_eq!(
        model.read(|seats| seats.available.get("7").copied()),
        Some(6)
    );

    // A command that wrote nothing has nothing to wait for.
    let repeat = shows.execute(7, reserve(1, 4)).await.expect("no-op");
    assert_eq!(repeat.position, None);
    handle
        .wait_for(repeat.position, Duration::ZERO)
        .await
        .expect("returns at once");

    let beyond = Position(position.0 + 5);
    match handle.wait_for(beyond, Duration::from_millis(50)).await {
        Err(WaitError::Timeout {
            processor,
            target,
            reached,
            ..
        }) => {
            assert_eq!(
                (processor, target, reached),
                ("available_seats", beyond, position)
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_then_succeeds() {
    let store = MemStore::new();
    let head = write_shows(&store, 0, 2, 4).await;
    let faults = Faults::failing(5, 2);
    let model = MemoryReadModel::new();
    let retry = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        ..RetryPolicy::NEVER
    };
    let policy = FailurePolicy::Retry {
        policy: retry,
        then: AfterRetries::Stop,
    };
    let handle = spawn_with(&store, &model, &faults, 3, policy);
    handle
        .wait_for(head, WAIT)
        .await
        .expect("gets past the failures");
    let status = handle.shutdown().await;
    let error = status.last_error.expect("the failures are visible");
    assert_eq!((error.kind, error.attempts), (FailureKind::Handler, 2));
    assert_eq!(error.event.map(|event| event.position), Some(Position(5)));
    assert_eq!(status.dead_letters, 0);
    assert_eq!(model.snapshot().0, rebuilt_from_zero(&store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_then_the_projection_stops_before_the_event() {
    let store = MemStore::new();
    let head = write_shows(&store, 0, 2, 4).await;
    let faults = Faults::failing(6, u32::MAX);
    let model = MemoryReadModel::new();
    let retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        ..RetryPolicy::NEVER
    };
    let policy = FailurePolicy::Retry {
        policy: retry,
        then: AfterRetries::Stop,
    };
    let handle = spawn_with(&store, &model, &faults, 4, policy);
    let stopped = handle.wait_for(head, WAIT).await;
    match stopped {
        Err(WaitError::Stopped { reached, error, .. }) => {
            assert_eq!(reached, Position(5));
            assert_eq!(error.map(|error| error.attempts), Some(3));
        }
        other => panic!("expected the projection to stop, got {other:?}"),
    }
    let status = handle.status().await;
    assert_eq!(status.state, ProcessorState::Failed);
    assert_eq!((status.checkpoint, status.head), (Position(5), head));
    assert_eq!(status.lag, head.0 - 5);
    assert_eq!(model.read(|seats| seats.applied.clone()), positions(1..=5));
    let message = status.last_error.expect("visible").to_string();
    assert!(
        message.contains("position 6") && message.contains("3 attempt"),
        "{message}"
    );

    // Once fixed, the failed runner resumes right at the event that failed.
    faults.plan().failures_left = 0;
    handle.resume().await.expect("resumes");
    handle.wait_for(head, WAIT).await.expect("goes on");
    handle.shutdown().await;
    assert_eq!(model.snapshot().0, rebuilt_from_zero(&store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_then_skips_when_told_to() {
    let store = MemStore::new();
    let head = write_shows(&store, 0, 1, 4).await;
    let faults = Faults::failing(3, u32::MAX);
    let model = MemoryReadModel::new();
    let retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
        ..RetryPolicy::NEVER
    };
    let policy = FailurePolicy::Retry {
        policy: retry,
        then: AfterRetries::Skip,
    };
    let handle = spawn_with(&store, &model, &faults, 500, policy);
    handle.wait_for(head, WAIT).await.expect("skips past it");
    let skipped = parked(&handle).await;
    let status = handle.shutdown().await;
    assert_eq!(status.dead_letters, 1);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].failure.attempts, 2);
    assert_eq!(skipped[0].position(), Some(Position(3)));
    let mut expected: Vec<u64> = positions(1..=head.0);
    expected.retain(|position| *position != 3);
    assert_eq!(model.read(|seats| seats.applied.clone()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skips_park_the_event_and_its_error_as_a_dead_letter() {
    let store = MemStore::new();
    let head = write_shows(&store, 0, 2, 3).await;
    let faults = Faults::failing(4, u32::MAX);
    let model = MemoryReadModel::new();
    let handle = spawn_with(&store, &model, &faults, 3, FailurePolicy::Skip);
    handle.wait_for(head, WAIT).await.expect("skips past it");
    let letters = parked(&handle).await;
    let status = handle.shutdown().await;
    assert_eq!(status.checkpoint, head);
    assert_eq!(status.dead_letters, 1);
    assert_eq!(letters.len(), 1);
    let skipped = &letters[0].failure;
    assert_eq!(skipped.kind, FailureKind::Handler);
    assert_eq!(skipped.error, "refused the event at position 4");
    let event = skipped.event.as_ref().expect("the event is kept");
    assert_eq!(
        (event.position, event.stream.as_str()),
        (Position(4), "show-0")
    );
    assert!(!model.read(|seats| seats.applied.contains(&4)));
    assert_eq!(model.read(|seats| seats.applied.len()), head.0 as usize - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_leaves_the_checkpoint_right_before_the_failing_event() {
    let store = MemStore::new();
    let head = write_shows(&store, 0, 2, 3).await;
    let faults = Faults::failing(4, 1);
    faults.plan().panic = true;
    let model = MemoryReadModel::new();
    let handle = spawn_with(&store, &model, &faults, 10, FailurePolicy::Stop);
    assert!(matches!(
        handle.wait_for(head, WAIT).await,
        Err(WaitError::Stopped {
            reached: Position(3),
            ..
        })
    ));
    let status = handle.status().await;
    assert_eq!(status.state, ProcessorState::Failed);
    handle.shutdown().await;
    let error = status.last_error.expect("visible");
    assert_eq!(error.kind, FailureKind::Panic);
    assert!(error.error.contains("panics at position 4"), "{error}");
    // The panic struck mid-batch: the events before it are committed, nothing after.
    assert_eq!(model.snapshot().1, Position(3));
    assert_eq!(model.read(|seats| seats.applied.clone()), positions(1..=3));

    let handle = spawn(&store, &model, 10);
    handle.wait_for(head, WAIT).await.expect("resumes");
    handle.shutdown().await;
    assert_eq!(model.snapshot().0, rebuilt_from_zero(&store).await);
}

fn raw(event_type: &'static str, payload: &str) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: event_type.into(),
        schema_version: 1,
        payload: payload.into(),
        metadata: Metadata::default(),
    }
}

/// Positions 1..=2: a good show; 3: a payload that does not fit; 4: an unknown event type in a
/// show stream; 5: an unknown type in another aggregate's stream; 6: a good reservation.
async fn store_with_corrupt_events() -> MemStore {
    let store = MemStore::new();
    let show = StreamId::new("show-1").expect("valid");
    let good = [
        NewEvent::encode(&ShowEvent::Scheduled { capacity: 9 }, Metadata::default())
            .expect("encodes"),
    ];
    store
        .append(&show, ExpectedVersion::NoStream, good.to_vec())
        .await
        .expect("appends");
    let reserved = ShowEvent::SeatsReserved {
        booking: BookingId(1),
        seats: 2,
    };
    let reserved = NewEvent::encode(&reserved, Metadata::default()).expect("encodes");
    for event in [
        reserved.clone(),
        raw("SeatsReserved", r#"{"seats":"many"}"#),
        raw("Teleported", "{}"),
    ] {
        store
            .append(&show, ExpectedVersion::Any, vec![event])
            .await
            .expect("appends");
    }
    let other = StreamId::new("vendor-1").expect("valid");
    store
        .append(&other, ExpectedVersion::Any, vec![raw("Registered", "{}")])
        .await
        .expect("appends");
    let mut later = reserved;
    later.event_id = EventId::new();
    store
        .append(&show, ExpectedVersion::Any, vec![later])
        .await
        .expect("appends");
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_unknown_events_go_through_the_failure_policy() {
    let store = store_with_corrupt_events().await;
    let head = store.head().await.expect("head");
    assert_eq!(head, Position(6));

    // Stop: halts at the first bad event, with a decode failure that names it.
    let model = MemoryReadModel::new();
    let handle = spawn_with(&store, &model, &Faults::default(), 10, FailurePolicy::Stop);
    assert!(handle.wait_for(head, WAIT).await.is_err());
    let status = handle.shutdown().await;
    assert_eq!(status.checkpoint, Position(2));
    let error = status.last_error.expect("visible");
    assert_eq!(error.kind, FailureKind::Decode);
    let event = error.event.as_ref().expect("names the event");
    assert_eq!(
        (
            event.position,
            event.stream.as_str(),
            event.version.map(|version| version.0),
            event.event_type.as_deref()
        ),
        (Position(3), "show-1", Some(3), Some("SeatsReserved"))
    );

    // Skip: both bad show events are parked and visible; the vendor event is not the
    // projection's business and passes silently.
    let model = MemoryReadModel::new();
    let handle = spawn_with(&store, &model, &Faults::default(), 500, FailurePolicy::Skip);
    handle.wait_for(head, WAIT).await.expect("skips");
    let letters = parked(&handle).await;
    handle.shutdown().await;
    let skipped: Vec<_> = letters
        .iter()
        .map(|letter| (letter.failure.kind, letter.position().map(|at| at.0)))
        .collect();
    assert_eq!(
        skipped,
        [
            (FailureKind::Decode, Some(3)),
            (FailureKind::Decode, Some(4))
        ]
    );
    assert!(
        letters[1]
            .failure
            .error
            .contains("unknown event type `Teleported`"),
        "{}",
        letters[1].failure
    );
    assert_eq!(model.read(|seats| seats.applied.clone()), [1, 2, 6]);
    assert_eq!(
        model.read(|seats| seats.available.get("1").copied()),
        Some(5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_position_head_and_lag() {
    let store = MemStore::new();
    let head = write_shows(&store, 0, 1, 5).await;
    let faults = Faults::failing(head.0 - 1, u32::MAX);
    let model = MemoryReadModel::new();
    let handle = spawn_with(&store, &model, &faults, 500, FailurePolicy::Stop);
    assert!(handle.wait_for(head, WAIT).await.is_err());
    let status = handle.status().await;
    assert_eq!(
        (status.checkpoint, status.head, status.lag),
        (Position(head.0 - 2), head, 2)
    );

    // The lag is measured against the log's head now, not when the runner stopped.
    let later = write_shows(&store, 5, 1, 2).await;
    let status = handle.status().await;
    assert_eq!(status.head, later);
    assert_eq!(status.lag, later.0 - (head.0 - 2));
    assert!(status.is_failed());
}

/// Counts events per stream: another projection over the same log.
struct EventsPerShow;

impl Projection for EventsPerShow {
    const NAME: &'static str = "events_per_show";
    const AGGREGATES: &'static [&'static str] = &["show"];
    type Event = ShowEvent;
    type ReadModel = BTreeMap<String, u32>;
    type Error = std::convert::Infallible;

    fn apply(
        &self,
        counts: &mut Self::ReadModel,
        _event: ShowEvent,
        context: &EventContext<'_>,
    ) -> Result<(), Self::Error> {
        *counts.entry(context.stream.to_string()).or_default() += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_projections_run_side_by_side_each_at_its_own_pace() {
    let store = MemStore::new();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { write_shows(&store, 0, 10, 6).await })
    };
    let slow_faults = Faults::default();
    slow_faults.plan().delay = Duration::from_micros(300);
    let slow = MemoryReadModel::new();
    let slow_handle = spawn_with(&store, &slow, &slow_faults, 2, FailurePolicy::default());
    let fast: Vec<_> = (0..4)
        .map(|n| {
            let model = MemoryReadModel::new();
            let handle = spawn(&store, &model, 1 + n * 50);
            (model, handle)
        })
        .collect();
    let counts = MemoryReadModel::new();
    let counts_handle = Projector::new(EventsPerShow, store.clone(), counts.clone())
        .runner()
        .spawn();
    // A broken projection stops alone; the others go on.
    let broken = MemoryReadModel::new();
    let broken_handle = spawn_with(
        &store,
        &broken,
        &Faults::failing(3, u32::MAX),
        500,
        FailurePolicy::Stop,
    );

    let head = writer.await.expect("writer finished");
    for (_, handle) in &fast {
        handle
            .wait_for(head, WAIT)
            .await
            .expect("fast one catches up");
    }
    counts_handle
        .wait_for(head, WAIT)
        .await
        .expect("counts catch up");
    slow_handle
        .wait_for(head, WAIT)
        .await
        .expect("slow one catches up");
    assert!(broken_handle.wait_for(head, WAIT).await.is_err());

    let expected = rebuilt_from_zero(&store).await;
    for (model, _) in &fast {
        assert_eq!(model.snapshot().0, expected);
    }
    assert_eq!(slow.snapshot().0, expected);
    assert_eq!(broken.position(), Position(2));
    let total: u32 = counts.read(|counts| counts.values().sum());
    assert_eq!(u64::from(total), head.0);
    for (_, handle) in fast {
        assert_eq!(handle.shutdown().await.state, ProcessorState::Stopped);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_live_or_retrying_is_prompt() {
    let store = MemStore::new();
    let head = write_shows(&store, 0, 1, 2).await;
    let model = MemoryReadModel::new();
    let handle = spawn(&store, &model, 10);
    handle.wait_for(head, WAIT).await.expect("catches up");
    let status = tokio::time::timeout(Duration::from_secs(1), handle.shutdown())
        .await
        .expect("a live runner shuts down promptly");
    assert_eq!(status.state, ProcessorState::Stopped);

    let retry = RetryPolicy {
        max_attempts: 1000,
        base_delay: Duration::from_secs(60),
        max_delay: Duration::from_secs(60),
        ..RetryPolicy::NEVER
    };
    let policy = FailurePolicy::Retry {
        policy: retry,
        then: AfterRetries::Stop,
    };
    let handle = spawn_with(
        &store,
        &MemoryReadModel::new(),
        &Faults::failing(1, u32::MAX),
        500,
        policy,
    );
    let mut updates = handle.status_updates();
    tokio::time::timeout(
        WAIT,
        updates.wait_for(|status| matches!(status.state, ProcessorState::Retrying { .. })),
    )
    .await
    .expect("retrying")
    .expect("status");
    drop(updates);
    let status = tokio::time::timeout(Duration::from_secs(1), handle.shutdown())
        .await
        .expect("a retrying runner shuts down promptly");
    assert_eq!(status.state, ProcessorState::Stopped);
}
