//! The processor conformance suites: what every processor backend must guarantee, checked the
//! same way against memory and PostgreSQL (and any later backend).
//!
//! - [`processor_tests!`](crate::processor_tests) takes a factory of [`Tally`] kits: a processor
//!   of the `tally` aggregate's events over a fresh store, and a way to read what it applied.
//!   The checks drive [`Processor::commit`] directly (checkpoint atomic with effects, the prefix
//!   on a failing event, dead letters recorded, listed, retried and discarded, reset, the leader
//!   lock), then the one [`ProcessorRunner`](cqrs_core::processor::ProcessorRunner) (poison events parked, unknown types never
//!   skipped silently).
//! - [`saga_store_tests!`](crate::saga_store_tests) takes a factory of fresh [`SagaStore`]s:
//!   commits atomic and checked against the expected checkpoint, dead letters, deadlines,
//!   forget.
//!
//! ```ignore
//! cqrs_tests::processor_tests!(memory_kit(), exclusive = false);
//! cqrs_tests::saga_store_tests!(async { MemorySagaStore::new() });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use cqrs_core::processor::{
    Batch, CommitError, DeadLetter, EventRef, Failure, FailureKind, FailurePolicy, Processor,
    ProcessorState,
};
use cqrs_core::saga::{Deadline, InstanceRecord, SagaCommit, SagaStore};
use cqrs_core::{
    DomainEvent, EventId, EventStore, ExpectedVersion, LogEntry, Metadata, NewEvent, Position,
    RecordedEvent, StreamId,
};
use serde::{Deserialize, Serialize};

/// How long a check waits for something that must happen.
const PATIENCE: Duration = Duration::from_secs(20);

/// The events of the `tally` aggregate, which every [`Tally`] processor reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, cqrs_core::DomainEvent)]
pub enum TallyEvent {
    /// Counted; the processor's handler fails on it when `fail` is set.
    Counted {
        /// Makes the handler fail.
        fail: bool,
    },
}

/// The aggregate whose streams a [`Tally`] processor reads.
pub const TALLY: &str = "tally";

/// A boxed future, as [`ReadApplied`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a [`Tally`] reads what its processor applied.
pub type ReadApplied<P> = Box<dyn for<'a> Fn(&'a P) -> BoxFuture<'a, Vec<Position>> + Send + Sync>;

/// A processor under test and how to read its effects.
pub struct Tally<P: Processor> {
    /// A processor named whatever the backend likes, reading the streams of [`TALLY`]
    /// (every event a [`TallyEvent`]), whose handler records each event's position and fails
    /// on `Counted { fail: true }`, over a fresh, empty store.
    pub processor: P,
    /// The positions it has applied, in the order applied.
    pub applied: ReadApplied<P>,
}

impl<P: Processor> Tally<P> {
    async fn applied(&self) -> Vec<Position> {
        (self.applied)(&self.processor).await
    }

    async fn checkpoint(&self) -> Position {
        self.processor
            .store()
            .checkpoint(self.processor.name())
            .await
            .expect("checkpoint")
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.processor
            .store()
            .dead_letters(self.processor.name())
            .await
            .expect("dead letters")
    }

    /// Appends `events` (`Ok(fail)` a tally event, `Err(raw)` a raw one) to `stream`; returns
    /// the position of the last.
    async fn append(&self, stream: &str, events: Vec<NewEvent>) -> Position {
        let stream = StreamId::new(stream).expect("stream id");
        self.processor
            .events()
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .expect("append")
            .position
            .expect("a position")
    }

    /// The log after `after`, as the runner reads it for this processor.
    async fn read(&self, after: Position) -> (Vec<RecordedEvent>, Position) {
        let batch = self
            .processor
            .events()
            .read_log(after, 1000, self.processor.aggregates())
            .await
            .expect("read log");
        let events = batch
            .entries
            .into_iter()
            .map(|entry| match entry {
                LogEntry::Event(event) => event,
                LogEntry::Unreadable(row) => panic!("unexpected unreadable row: {row}"),
            })
            .collect();
        (events, batch.last.unwrap_or(after))
    }
}

/// A tally event, failing or not.
pub fn counted(fail: bool) -> NewEvent {
    NewEvent::encode(&TallyEvent::Counted { fail }, Metadata::default()).expect("encode")
}

/// An event of `event_type` with `payload`, as something else than this crate might write it.
pub fn raw(event_type: &str, payload: &str) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: event_type.to_owned().into(),
        schema_version: 1,
        payload: payload.as_bytes().to_vec().into(),
        metadata: Metadata::default(),
    }
}

fn batch<'a>(
    processor: &'static str,
    expected: Position,
    end: Position,
    events: &'a [RecordedEvent],
) -> Batch<'a> {
    Batch {
        processor,
        expected,
        end,
        events: events.iter().collect(),
        dead_letters: Vec::new(),
        retried: None,
    }
}

fn letter(processor: &str, event: &RecordedEvent, error: &str) -> DeadLetter {
    DeadLetter::new(
        processor,
        Failure {
            kind: FailureKind::Handler,
            event: Some(EventRef::of(event)),
            subject: None,
            attempts: 3,
            error: error.to_owned(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        },
    )
}

/// A commit applies its events, passes over the streams the processor does not read, and moves
/// the checkpoint, together.
pub async fn commit_moves_the_checkpoint_with_the_effects<P: Processor>(kit: Tally<P>) {
    kit.append("tally-1", vec![counted(false), counted(false)])
        .await;
    kit.append("other-1", vec![raw("Whatever", "{}")]).await;
    kit.append("tally-2", vec![counted(false)]).await;
    let (events, last) = kit.read(Position::START).await;
    assert_eq!(events.len(), 3, "only the tally streams: {events:?}");
    assert_eq!(last, Position(4), "the read covers the other stream too");
    let name = kit.processor.name();
    let committed = kit
        .processor
        .commit(batch(name, Position::START, last, &events))
        .await
        .expect("commit");
    assert!(committed.failed.is_none());
    assert_eq!(committed.reached, last);
    assert_eq!(kit.checkpoint().await, last);
    assert_eq!(kit.applied().await, [Position(1), Position(2), Position(4)]);
}

/// A commit whose expected checkpoint is not the stored one changes nothing.
pub async fn commit_from_another_checkpoint_changes_nothing<P: Processor>(kit: Tally<P>) {
    kit.append("tally-1", vec![counted(false), counted(false)])
        .await;
    let (events, last) = kit.read(Position::START).await;
    let name = kit.processor.name();
    let moved = kit
        .processor
        .commit(batch(name, Position(1), last, &events))
        .await;
    assert!(
        matches!(
            moved,
            Err(CommitError::CheckpointMoved {
                expected: Position(1),
                actual: Position::START,
                ..
            })
        ),
        "{moved:?}"
    );
    assert!(kit.applied().await.is_empty(), "nothing applied");
    assert_eq!(kit.checkpoint().await, Position::START);
}

/// A failing event: the events before it, the dead letters before it and the checkpoint right
/// before it are committed; nothing of it or after it.
pub async fn a_failing_event_commits_what_comes_before_it<P: Processor>(kit: Tally<P>) {
    kit.append(
        "tally-1",
        vec![counted(false), counted(false), counted(false)],
    )
    .await;
    kit.append("tally-2", vec![counted(true), counted(false)])
        .await;
    let (events, last) = kit.read(Position::START).await;
    let name = kit.processor.name();
    // Event 2 was parked earlier in this batch; event 5 is after the failure.
    let handled: Vec<RecordedEvent> = events
        .iter()
        .filter(|event| event.position != Position(2))
        .cloned()
        .collect();
    let mut step = batch(name, Position::START, last, &handled);
    step.dead_letters = vec![
        letter(name, &events[1], "parked before"),
        letter(name, &events[4], "parked after"),
    ];
    let committed = kit.processor.commit(step).await.expect("commit");
    let (index, failure) = committed.failed.expect("the fourth event fails");
    assert_eq!(handled[index].position, Position(4));
    assert_eq!(failure.kind, FailureKind::Handler);
    assert_eq!(committed.reached, Position(3));
    assert_eq!(kit.checkpoint().await, Position(3));
    assert_eq!(kit.applied().await, [Position(1), Position(3)]);
    let parked: Vec<String> = kit.dead_letters().await.into_iter().map(|d| d.id).collect();
    assert_eq!(parked, ["2"], "only the dead letter before the failure");
}

/// Dead letters round-trip, list in position order, and are discarded once.
pub async fn dead_letters_are_recorded_listed_and_discarded<P: Processor>(kit: Tally<P>) {
    kit.append(
        "tally-1",
        vec![counted(false), counted(false), counted(false)],
    )
    .await;
    let (events, last) = kit.read(Position::START).await;
    let name = kit.processor.name();
    let kept = [events[1].clone()];
    let mut step = batch(name, Position::START, last, &kept);
    let parked = vec![
        letter(name, &events[2], "third: \"quoted\", ünïcode"),
        letter(name, &events[0], "first"),
    ];
    step.dead_letters = parked.clone();
    let committed = kit.processor.commit(step).await.expect("commit");
    assert!(committed.failed.is_none());
    let stored = kit.dead_letters().await;
    assert_eq!(
        stored,
        [parked[1].clone(), parked[0].clone()],
        "round trip, by position"
    );
    assert_eq!(kit.applied().await, [Position(2)]);
    let store = kit.processor.store();
    assert!(store.discard_dead_letter(name, "1").await.expect("discard"));
    assert!(!store.discard_dead_letter(name, "1").await.expect("discard"));
    assert!(
        !store
            .discard_dead_letter(name, "nope")
            .await
            .expect("discard")
    );
    let left: Vec<String> = kit.dead_letters().await.into_iter().map(|d| d.id).collect();
    assert_eq!(left, ["3"]);
}

/// A retried dead letter is applied and removed in one step; a retry that fails again changes
/// nothing. The checkpoint does not move either way.
pub async fn a_retry_removes_the_dead_letter_only_when_it_applies<P: Processor>(kit: Tally<P>) {
    kit.append("tally-1", vec![counted(true), counted(false)])
        .await;
    let (events, last) = kit.read(Position::START).await;
    let name = kit.processor.name();
    let rest = [events[1].clone()];
    let mut step = batch(name, Position::START, last, &rest);
    step.dead_letters = vec![
        letter(name, &events[0], "fails"),
        letter(name, &events[1], "x"),
    ];
    // Event 2 is both parked and handled here only to have two dead letters; drop it first.
    step.dead_letters.truncate(1);
    kit.processor.commit(step).await.expect("commit");
    assert_eq!(kit.checkpoint().await, last);

    // Retrying the failing event fails again: nothing changes.
    let failing = [events[0].clone()];
    let mut retry = batch(name, last, last, &failing);
    retry.retried = Some("1");
    let committed = kit.processor.commit(retry).await.expect("commit");
    assert!(committed.failed.is_some(), "still failing");
    assert_eq!(kit.dead_letters().await.len(), 1, "the dead letter stays");
    assert_eq!(kit.applied().await, [Position(2)]);

    // A dead letter whose event now applies (another event standing in for the fixed one).
    let fixed = [events[1].clone()];
    let mut retry = batch(name, last, last, &fixed);
    retry.retried = Some("1");
    let committed = kit.processor.commit(retry).await.expect("commit");
    assert!(committed.failed.is_none());
    assert!(
        kit.dead_letters().await.is_empty(),
        "removed with the retry"
    );
    assert_eq!(kit.applied().await, [Position(2), Position(2)]);
    assert_eq!(
        kit.checkpoint().await,
        last,
        "a retry does not move the checkpoint"
    );
}

/// A reset empties the effects, drops the dead letters and moves the checkpoint to the start.
pub async fn reset_starts_over<P: Processor>(kit: Tally<P>) {
    kit.append("tally-1", vec![counted(false), counted(false)])
        .await;
    let (events, last) = kit.read(Position::START).await;
    let name = kit.processor.name();
    let kept = [events[1].clone()];
    let mut step = batch(name, Position::START, last, &kept);
    step.dead_letters = vec![letter(name, &events[0], "parked")];
    kit.processor.commit(step).await.expect("commit");
    kit.processor.reset().await.expect("reset");
    assert_eq!(kit.checkpoint().await, Position::START);
    assert!(kit.applied().await.is_empty());
    assert!(kit.dead_letters().await.is_empty());
}

/// The leader lock: with `exclusive`, a second lease is refused while the first is held and
/// granted once it is dropped; without, every runner leads (one process).
pub async fn the_leader_lock_is_handed_over<P: Processor>(kit: Tally<P>, exclusive: bool) {
    let store = kit.processor.store();
    let name = kit.processor.name();
    let first = store
        .lead(name)
        .await
        .expect("lead")
        .expect("the first lease");
    let second = store.lead(name).await.expect("lead");
    assert_eq!(
        second.is_none(),
        exclusive,
        "a second lease while the first is held"
    );
    drop(second);
    drop(first);
    let started = std::time::Instant::now();
    loop {
        if store.lead(name).await.expect("lead").is_some() {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "the lock was not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Through the runner, under `Skip`: a poison event and a failing one are parked (each once, with
/// its stream, version, type and kind), every other event is applied once, and the status counts
/// the dead letters.
pub async fn the_runner_parks_poison_events_and_goes_on<P: Processor>(kit: Tally<P>) {
    kit.append(
        "tally-1",
        vec![
            counted(false),
            raw(TallyEvent::EVENT_TYPES[0].name, r#"{"fail":"no"}"#),
            counted(false),
        ],
    )
    .await;
    kit.append("other-1", vec![raw("Whatever", "not even json")])
        .await;
    let head = kit
        .append("tally-2", vec![counted(true), counted(false)])
        .await;
    let Tally { processor, applied } = kit;
    let handle = processor
        .runner()
        .failure_policy(FailurePolicy::Skip)
        .batch_size(2)
        .spawn();
    handle.wait_for(head, PATIENCE).await.expect("caught up");
    let letters = handle.dead_letters().await.expect("dead letters");
    let parked: Vec<(Option<Position>, FailureKind)> = letters
        .iter()
        .map(|letter| (letter.position(), letter.failure.kind))
        .collect();
    assert_eq!(
        parked,
        [
            (Some(Position(2)), FailureKind::Decode),
            (Some(Position(5)), FailureKind::Handler)
        ]
    );
    let poison = letters[0].failure.event.as_ref().expect("an event");
    assert_eq!(
        (
            poison.stream.as_str(),
            poison.version,
            poison.event_type.as_deref()
        ),
        ("tally-1", Some(cqrs_core::Version(2)), Some("Counted"))
    );
    let status = handle.status().await;
    assert_eq!((status.dead_letters, status.lag), (2, 0), "{status:?}");
    let status = handle.shutdown().await;
    assert_eq!(status.checkpoint, head);
    let _ = applied;
}

/// Through the runner, under `Stop`: an event of a read stream whose type the processor does
/// not know stops it, with the event named; it is never passed over.
pub async fn an_unknown_type_is_a_failure_not_a_skip<P: Processor>(kit: Tally<P>) {
    kit.append("tally-1", vec![counted(false)]).await;
    kit.append("tally-1", vec![raw("Mystery", "{}")]).await;
    kit.append("tally-1", vec![counted(false)]).await;
    let Tally { processor, applied } = kit;
    let handle = processor
        .runner()
        .failure_policy(FailurePolicy::Stop)
        .spawn();
    let status = handle
        .wait_until(PATIENCE, |status| status.state == ProcessorState::Failed)
        .await
        .unwrap_or_else(|status| panic!("did not fail: {status:?}"));
    assert_eq!(status.checkpoint, Position(1), "stopped right before it");
    let failure = status.last_error.expect("the failure");
    assert_eq!(failure.kind, FailureKind::Decode);
    let event = failure.event.expect("the event");
    assert_eq!(
        (
            event.position,
            event.stream.as_str(),
            event.event_type.as_deref()
        ),
        (Position(2), "tally-1", Some("Mystery"))
    );
    assert!(failure.error.contains("Mystery"), "{}", failure.error);
    handle.shutdown().await;
    let _ = applied;
}

/// One test per processor check, each on a fresh kit from `$kit` (an `async` expression giving
/// a [`Tally`]); `exclusive` says whether the store's leader lock excludes a second runner.
#[macro_export]
macro_rules! processor_tests {
    ($kit:expr, exclusive = $exclusive:expr) => {
        $crate::__processor_tests!($kit;
            commit_moves_the_checkpoint_with_the_effects,
            commit_from_another_checkpoint_changes_nothing,
            a_failing_event_commits_what_comes_before_it,
            dead_letters_are_recorded_listed_and_discarded,
            a_retry_removes_the_dead_letter_only_when_it_applies,
            reset_starts_over,
            the_runner_parks_poison_events_and_goes_on,
            an_unknown_type_is_a_failure_not_a_skip,
        );
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_leader_lock_is_handed_over() {
            $crate::processors::the_leader_lock_is_handed_over($kit.await, $exclusive).await;
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __processor_tests {
    ($kit:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::processors::$check($kit.await).await;
            }
        )*
    };
}

fn instance(id: &str, position: u64, deadlines: Vec<Deadline>) -> InstanceRecord {
    InstanceRecord {
        instance: id.to_owned(),
        state: serde_json::json!({ "step": position, "note": "ünïcode \"quoted\"" }),
        position: Position(position),
        finished: false,
        deadlines,
    }
}

fn deadline(name: &str, due: SystemTime) -> Deadline {
    Deadline {
        name: name.to_owned(),
        due,
        id: format!("event-{name}/{name}"),
        correlation_id: Some(uuid::Uuid::from_u128(0x5eed)),
        causation_id: None,
        attempts: 1,
    }
}

fn saga_letter(saga: &str, position: u64) -> DeadLetter {
    DeadLetter::new(
        saga,
        Failure {
            kind: FailureKind::Command,
            event: Some(EventRef {
                position: Position(position),
                stream: "tally-9".to_owned(),
                version: Some(cqrs_core::Version(position)),
                event_type: Some("Counted".to_owned()),
                event_id: Some(EventId::new()),
            }),
            subject: None,
            attempts: 2,
            error: "refused".to_owned(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        },
    )
}

/// A saga commit stores the checkpoint, the instances and the dead letters together, and only
/// from the expected checkpoint.
pub async fn saga_commits_are_atomic_and_checked<St: SagaStore>(store: St) {
    let saga = "conformance_saga";
    assert_eq!(
        store.checkpoint(saga).await.expect("checkpoint"),
        Position::START
    );
    let commit = SagaCommit {
        expected: Some(Position::START),
        checkpoint: Some(Position(5)),
        instances: vec![instance("a", 3, Vec::new()), instance("b", 5, Vec::new())],
        dead_letters: vec![saga_letter(saga, 4)],
        retried: None,
    };
    store.commit(saga, commit.clone()).await.expect("commit");
    assert_eq!(
        store.checkpoint(saga).await.expect("checkpoint"),
        Position(5)
    );
    assert_eq!(
        store.instance(saga, "a").await.expect("instance"),
        Some(instance("a", 3, Vec::new()))
    );
    assert_eq!(
        store.dead_letters(saga).await.expect("letters"),
        [saga_letter_like(&commit)]
    );

    // From a stale checkpoint: nothing at all.
    let stale = SagaCommit {
        expected: Some(Position(3)),
        checkpoint: Some(Position(9)),
        instances: vec![instance("a", 9, Vec::new())],
        dead_letters: vec![saga_letter(saga, 8)],
        retried: Some("4".to_owned()),
    };
    let refused = store.commit(saga, stale).await;
    assert!(
        matches!(refused, Err(CommitError::CheckpointMoved { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store.checkpoint(saga).await.expect("checkpoint"),
        Position(5)
    );
    assert_eq!(
        store
            .instance(saga, "a")
            .await
            .expect("instance")
            .map(|record| record.position),
        Some(Position(3))
    );
    assert_eq!(store.dead_letters(saga).await.expect("letters").len(), 1);

    // A retry removes its dead letter; a commit without an expectation does not look at the
    // checkpoint (a deadline's).
    let retry = SagaCommit {
        expected: Some(Position(5)),
        instances: vec![instance("c", 4, Vec::new())],
        retried: Some("4".to_owned()),
        ..SagaCommit::default()
    };
    store.commit(saga, retry).await.expect("retry");
    assert!(store.dead_letters(saga).await.expect("letters").is_empty());
    assert_eq!(
        store.checkpoint(saga).await.expect("checkpoint"),
        Position(5)
    );
    let unchecked = SagaCommit {
        instances: vec![instance("a", 3, Vec::new())],
        ..SagaCommit::default()
    };
    store.commit(saga, unchecked).await.expect("unchecked");
    // Other sagas are untouched.
    assert_eq!(
        store.checkpoint("another_saga").await.expect("checkpoint"),
        Position::START
    );
    assert_eq!(
        store.instance("another_saga", "a").await.expect("instance"),
        None
    );
}

fn saga_letter_like(commit: &SagaCommit) -> DeadLetter {
    commit.dead_letters[0].clone()
}

/// Due deadlines come earliest first, finished instances have none, and the next one is known.
pub async fn saga_deadlines_fall_due_in_order<St: SagaStore>(store: St) {
    let saga = "conformance_deadlines";
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let later = base + Duration::from_millis(1500);
    let mut finished = instance("done", 1, vec![deadline("ignored", base)]);
    finished.finished = true;
    let commit = SagaCommit {
        instances: vec![
            instance(
                "x",
                2,
                vec![deadline("late", later), deadline("early", base)],
            ),
            instance(
                "y",
                3,
                vec![deadline("mid", base + Duration::from_micros(700_001))],
            ),
            finished,
        ],
        ..SagaCommit::default()
    };
    store.commit(saga, commit).await.expect("commit");
    assert_eq!(store.next_deadline(saga).await.expect("next"), Some(base));
    assert!(
        store
            .due_deadlines(saga, base - Duration::from_micros(1))
            .await
            .expect("due")
            .is_empty()
    );
    let due = store
        .due_deadlines(saga, base + Duration::from_secs(1))
        .await
        .expect("due");
    let names: Vec<(&str, &str)> = due
        .iter()
        .map(|(instance, deadline)| (instance.as_str(), deadline.name.as_str()))
        .collect();
    assert_eq!(names, [("x", "early"), ("y", "mid")]);
    assert_eq!(due[0].1, deadline("early", base), "a deadline round-trips");
    assert_eq!(
        store.next_deadline("no_such_saga").await.expect("next"),
        None
    );
}

/// Forgetting a saga removes its checkpoint, instances and dead letters, and nothing of others.
pub async fn forgetting_a_saga_removes_all_of_it<St: SagaStore>(store: St) {
    for saga in ["forgotten", "kept"] {
        let commit = SagaCommit {
            expected: Some(Position::START),
            checkpoint: Some(Position(7)),
            instances: vec![instance(
                "a",
                7,
                vec![deadline("d", SystemTime::UNIX_EPOCH)],
            )],
            dead_letters: vec![saga_letter(saga, 6)],
            retried: None,
        };
        store.commit(saga, commit).await.expect("commit");
    }
    store.forget("forgotten").await.expect("forget");
    assert_eq!(
        store.checkpoint("forgotten").await.expect("checkpoint"),
        Position::START
    );
    assert_eq!(
        store.instance("forgotten", "a").await.expect("instance"),
        None
    );
    assert!(
        store
            .dead_letters("forgotten")
            .await
            .expect("letters")
            .is_empty()
    );
    assert_eq!(store.next_deadline("forgotten").await.expect("next"), None);
    assert_eq!(
        store.checkpoint("kept").await.expect("checkpoint"),
        Position(7)
    );
    assert_eq!(store.dead_letters("kept").await.expect("letters").len(), 1);
    // A forgotten saga starts over cleanly.
    store
        .commit(
            "forgotten",
            SagaCommit {
                expected: Some(Position::START),
                checkpoint: Some(Position(1)),
                ..SagaCommit::default()
            },
        )
        .await
        .expect("commit after forget");
}

/// One test per saga store check, each on a fresh store from `$store` (an `async` expression).
#[macro_export]
macro_rules! saga_store_tests {
    ($store:expr) => {
        $crate::__saga_store_tests!($store;
            saga_commits_are_atomic_and_checked,
            saga_deadlines_fall_due_in_order,
            forgetting_a_saga_removes_all_of_it,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __saga_store_tests {
    ($store:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::processors::$check($store.await).await;
            }
        )*
    };
}

/// The tally processor as an in-memory projection: it records the position of every event it
/// applies, in a [`MemoryReadModel`](cqrs_core::projection::MemoryReadModel).
#[derive(Debug, Clone, Copy, Default)]
pub struct TallyProjection;

/// Why [`TallyProjection`] refuses an event.
#[derive(Debug, thiserror::Error)]
#[error("the tally refuses this event (fail: true)")]
pub struct TallyRefused;

impl cqrs_core::projection::Projection for TallyProjection {
    const NAME: &'static str = "tally_projection";
    const AGGREGATES: &'static [&'static str] = &[TALLY];
    type Event = TallyEvent;
    type ReadModel = Vec<Position>;
    type Error = TallyRefused;

    fn apply(
        &self,
        applied: &mut Vec<Position>,
        TallyEvent::Counted { fail }: TallyEvent,
        context: &cqrs_core::projection::EventContext<'_>,
    ) -> Result<(), TallyRefused> {
        if fail {
            return Err(TallyRefused);
        }
        applied.push(context.position);
        Ok(())
    }
}

/// A [`Tally`] kit over `events` with the in-memory read model.
pub fn memory_tally<S: EventStore>(
    events: S,
) -> Tally<
    cqrs_core::projection::Projector<
        TallyProjection,
        S,
        cqrs_core::projection::MemoryReadModel<Vec<Position>>,
    >,
> {
    let model = cqrs_core::projection::MemoryReadModel::new();
    Tally {
        processor: cqrs_core::projection::Projector::new(TallyProjection, events, model),
        applied: Box::new(|processor| {
            let applied = processor.model_store().read(Vec::clone);
            Box::pin(async move { applied })
        }),
    }
}
