//! The store conformance suite: the guarantees of [`EventStore`], checked against any store.
//!
//! Each check is an `async fn` that takes a fresh, empty store and panics with a message that
//! says what broke. A store's test file runs every check as its own test with
//! [`conformance_tests!`](crate::conformance_tests), or all of them in one test with [`run_all`]:
//!
//! ```ignore
//! cqrs_tests::conformance_tests!(async { cqrs_memstore::MemStore::new() });
//! ```
//!
//! The checks use raw [`NewEvent`]s with small JSON payloads, so no domain types are involved.
//! Besides the contract's words, they hold a store to what a user would take for granted:
//! payload bytes, schema versions (the whole `u32` range), headers and timestamps (to the
//! microsecond) come back exactly as written, and any `usize` limit or `u64` version is accepted.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cqrs_core::{
    AppendReceipt, CommandId, CommandRecord, EventData, EventId, EventStore, ExpectedVersion,
    InvalidCommandId, InvalidStreamId, MAX_COMMAND_ID_LEN, MAX_STREAM_ID_LEN, Metadata, NewEvent,
    Position, RecordedEvent, Snapshot, StoreError, StreamId, Version,
};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use uuid::Uuid;

/// How long a check waits for something that must happen before it fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long a check waits to see that something does not happen.
const QUIET: Duration = Duration::from_millis(100);

/// Runs every check, each against a store made by `new_store`.
///
/// Prefer [`conformance_tests!`](crate::conformance_tests), which makes one test per check, so that
/// a failure names the check.
pub async fn run_all<S, F, Fut>(new_store: F)
where
    S: EventStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    crate::__conformance_checks!(run new_store());
}

/// Expands to one `#[tokio::test]` (multi-threaded runtime, 4 workers) per conformance check, each
/// running against the store that `$new_store` (an expression of a future that yields a fresh,
/// empty store) produces.
///
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features. The tests are
/// named after the checks in [`conformance`](crate::conformance); put the invocation in a file or
/// module of its own.
///
/// ```ignore
/// cqrs_tests::conformance_tests!(async { cqrs_memstore::MemStore::new() });
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($new_store:expr) => {
        $crate::__conformance_checks!(tests $new_store);
    };
}

/// The list of checks, expanded by [`conformance_tests!`] and [`run_all`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_checks {
    ($mode:ident $new_store:expr) => {
        $crate::__conformance_expand!(
            $mode $new_store;
            expected_version_on_new_stream,
            expected_version_on_existing_stream,
            empty_append_checks_version_and_writes_nothing,
            multi_event_append_is_contiguous,
            events_round_trip_exactly,
            read_stream_from_version_with_limit,
            visit_stream_data_hands_what_visit_stream_does,
            a_turn_visits_stream_data,
            read_all_in_batches,
            head_is_last_position,
            wait_for_events_returns_at_once_when_events_exist,
            wait_for_events_wakes_on_append,
            wait_for_events_does_not_return_early,
            snapshots_save_load_and_replace,
            snapshot_of_another_schema_version_is_ignored,
            snapshot_is_not_replaced_by_an_older_one,
            duplicate_command_writes_nothing,
            command_ids_are_per_stream,
            mixed_command_ids_are_rejected,
            concurrent_appends_with_one_command_id_write_once,
            command_ids_are_validated,
            longest_command_id_round_trips,
            stream_ids_are_validated,
            concurrent_writers_on_shared_streams,
            concurrent_appends_to_different_streams,
            reader_follows_concurrent_writers,
            a_turn_keeps_other_writers_out,
            turns_are_taken_one_at_a_time,
            stores_hold_both_codecs
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_expand {
    (tests $new_store:expr; $($check:ident),+) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                $crate::conformance::$check($new_store.await).await;
            }
        )+
    };
    (run $new_store:expr; $($check:ident),+) => {
        $(
            $crate::conformance::$check($new_store.await).await;
        )+
    };
}

pub use crate::codec::stores_hold_both_codecs;

// ---------------------------------------------------------------------------------------------
// Helpers

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("the suite's stream ids are valid")
}

/// An event with the payload `{"n":n}`.
fn event(event_type: &'static str, n: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: Cow::Borrowed(event_type),
        schema_version: 1,
        payload: format!(r#"{{"n":{n}}}"#).as_str().into(),
        metadata: Metadata::default(),
    }
}

/// `count` events numbered from `first`.
fn events(count: u64, first: u64) -> Vec<NewEvent> {
    (first..first + count)
        .map(|n| event("Counted", n))
        .collect()
}

fn command(id: &str) -> CommandId {
    CommandId::new(id).expect("the suite's command ids are valid")
}

fn with_command(mut events: Vec<NewEvent>, command_id: &str) -> Vec<NewEvent> {
    let command_id = command(command_id);
    for event in &mut events {
        event.metadata.command_id = Some(command_id.clone());
    }
    events
}

fn ids(events: &[NewEvent]) -> Vec<EventId> {
    events.iter().map(|event| event.event_id).collect()
}

fn recorded_ids(events: &[RecordedEvent]) -> Vec<EventId> {
    events.iter().map(|event| event.event_id).collect()
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|event| event.version.0).collect()
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|event| event.position.0).collect()
}

async fn append<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendReceipt {
    match store.append(stream, expected, events).await {
        Ok(receipt) => receipt,
        Err(error) => panic!("append to `{stream}` expecting {expected} failed: {error}"),
    }
}

async fn read_stream<S: EventStore + ?Sized>(store: &S, stream: &StreamId) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, Version(1), 100_000)
        .await
        .unwrap_or_else(|error| panic!("read_stream of `{stream}` failed: {error}"))
}

/// The whole global log, read in batches of `batch`, checking the batch size.
async fn read_all_in<S: EventStore + ?Sized>(
    store: &S,
    after: Position,
    batch: usize,
) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = after;
    loop {
        let events = store
            .read_all(after, batch)
            .await
            .unwrap_or_else(|error| panic!("read_all after {after} failed: {error}"));
        assert!(
            events.len() <= batch,
            "read_all after {after} with limit {batch} returned {} events",
            events.len()
        );
        let Some(last) = events.last() else {
            return all;
        };
        after = last.position;
        all.extend(events);
    }
}

async fn read_all<S: EventStore + ?Sized>(store: &S) -> Vec<RecordedEvent> {
    read_all_in(store, Position::START, 1_000).await
}

async fn head<S: EventStore + ?Sized>(store: &S) -> Position {
    store
        .head()
        .await
        .unwrap_or_else(|error| panic!("head failed: {error}"))
}

/// What a store holds, to check that a refused append changed nothing.
#[derive(Debug, PartialEq)]
struct Contents {
    head: Position,
    all: Vec<RecordedEvent>,
}

async fn contents<S: EventStore + ?Sized>(store: &S) -> Contents {
    Contents {
        head: head(store).await,
        all: read_all(store).await,
    }
}

#[track_caller]
fn assert_conflict(
    result: Result<AppendReceipt, StoreError>,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: Version,
) {
    match result {
        Err(StoreError::Conflict {
            stream: conflict_stream,
            expected: conflict_expected,
            actual: conflict_actual,
        }) => {
            assert_eq!(&conflict_stream, stream, "the conflict names the stream");
            assert_eq!(
                conflict_expected, expected,
                "the conflict names the expected version"
            );
            assert_eq!(
                conflict_actual, actual,
                "the conflict names the actual version"
            );
            let message = StoreError::Conflict {
                stream: conflict_stream,
                expected,
                actual,
            }
            .to_string();
            assert!(
                message.contains(stream.as_str()),
                "the message `{message}` names the stream"
            );
        }
        other => panic!(
            "appending to `{stream}` at version {actual} expecting {expected} must conflict, got {other:?}"
        ),
    }
}

#[track_caller]
fn assert_duplicate(result: Result<AppendReceipt, StoreError>, earlier: &CommandRecord) {
    match result {
        Err(StoreError::DuplicateCommand { earlier: reported }) => {
            assert_eq!(
                &reported, earlier,
                "the duplicate reports the earlier record"
            )
        }
        other => panic!(
            "a second append of command `{}` to `{}` must be refused as a duplicate, got {other:?}",
            earlier.command_id, earlier.stream
        ),
    }
}

async fn wait_for<S: EventStore + ?Sized>(store: &S, after: Position) -> Position {
    match tokio::time::timeout(PATIENCE, store.wait_for_events(after)).await {
        Ok(Ok(head)) => head,
        Ok(Err(error)) => panic!("wait_for_events after {after} failed: {error}"),
        Err(_) => panic!("wait_for_events after {after} did not return within {PATIENCE:?}"),
    }
}

async fn join_all<T: 'static>(mut tasks: JoinSet<T>) -> Vec<T> {
    let mut results = Vec::new();
    while let Some(joined) = tokio::time::timeout(PATIENCE * 3, tasks.join_next())
        .await
        .unwrap_or_else(|_| panic!("tasks did not finish within {:?}", PATIENCE * 3))
    {
        match joined {
            Ok(result) => results.push(result),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    results
}

// ---------------------------------------------------------------------------------------------
// Expected versions

/// Every expected version against a stream that has no events; a refused append writes nothing.
pub async fn expected_version_on_new_stream<S: EventStore>(store: S) {
    for expected in [
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(Version(1)),
    ] {
        let new = stream("expected-new-refused");
        let before = contents(&store).await;
        let result = store.append(&new, expected, events(1, 0)).await;
        assert_conflict(result, &new, expected, Version::INITIAL);
        assert_eq!(
            contents(&store).await,
            before,
            "a refused append wrote nothing"
        );
        assert!(read_stream(&store, &new).await.is_empty());
    }

    for (name, expected) in [
        ("expected-new-any", ExpectedVersion::Any),
        ("expected-new-no-stream", ExpectedVersion::NoStream),
        (
            "expected-new-exact-0",
            ExpectedVersion::Exact(Version::INITIAL),
        ),
    ] {
        let new = stream(name);
        let written = events(2, 0);
        let written_ids = ids(&written);
        let receipt = append(&store, &new, expected, written).await;
        assert_eq!(
            receipt.first_version,
            Version(1),
            "{expected} on a new stream"
        );
        assert_eq!(receipt.version, Version(2), "{expected} on a new stream");
        let read = read_stream(&store, &new).await;
        assert_eq!(recorded_ids(&read), written_ids);
        assert_eq!(versions(&read), [1, 2]);
    }
    assert_eq!(head(&store).await, Position(6));
}

/// Every expected version against a stream that has events; a refused append writes nothing.
pub async fn expected_version_on_existing_stream<S: EventStore>(store: S) {
    let existing = stream("expected-existing");
    append(&store, &existing, ExpectedVersion::NoStream, events(2, 0)).await;

    let mut version = 2;
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(Version(4)),
    ] {
        let receipt = append(&store, &existing, expected, events(1, version)).await;
        version += 1;
        assert_eq!(receipt.first_version, Version(version), "{expected}");
        assert_eq!(receipt.version, Version(version), "{expected}");
    }
    assert_eq!(version, 5);

    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(Version::INITIAL),
        ExpectedVersion::Exact(Version(4)),
        ExpectedVersion::Exact(Version(6)),
        ExpectedVersion::Exact(Version(u64::MAX)),
    ] {
        let before = contents(&store).await;
        let result = store.append(&existing, expected, events(3, 100)).await;
        assert_conflict(result, &existing, expected, Version(5));
        assert_eq!(
            contents(&store).await,
            before,
            "a refused append wrote nothing"
        );
    }

    let read = read_stream(&store, &existing).await;
    assert_eq!(versions(&read), [1, 2, 3, 4, 5]);
    let receipt = append(
        &store,
        &existing,
        ExpectedVersion::Exact(Version(5)),
        events(1, 5),
    )
    .await;
    assert_eq!(receipt.version, Version(6));
}

/// Appending no events checks the expected version and writes nothing.
pub async fn empty_append_checks_version_and_writes_nothing<S: EventStore>(store: S) {
    let new = stream("empty-new");
    let empty_at = |version: u64| AppendReceipt {
        first_version: Version(version + 1),
        version: Version(version),
        first_position: None,
        position: None,
    };
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(Version::INITIAL),
    ] {
        let receipt = append(&store, &new, expected, Vec::new()).await;
        assert_eq!(receipt, empty_at(0), "empty append expecting {expected}");
    }
    for expected in [
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(Version(3)),
    ] {
        let result = store.append(&new, expected, Vec::new()).await;
        assert_conflict(result, &new, expected, Version::INITIAL);
    }
    assert_eq!(head(&store).await, Position::START);
    assert!(read_all(&store).await.is_empty());

    let existing = stream("empty-existing");
    append(&store, &existing, ExpectedVersion::NoStream, events(2, 0)).await;
    let before = contents(&store).await;
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(Version(2)),
    ] {
        let receipt = append(&store, &existing, expected, Vec::new()).await;
        assert_eq!(receipt, empty_at(2), "empty append expecting {expected}");
    }
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(Version(1)),
    ] {
        let result = store.append(&existing, expected, Vec::new()).await;
        assert_conflict(result, &existing, expected, Version(2));
    }
    assert_eq!(
        contents(&store).await,
        before,
        "an empty append wrote nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Appends and reads

/// A multi-event append is contiguous in its stream and in the global log, and its receipt says so.
pub async fn multi_event_append_is_contiguous<S: EventStore>(store: S) {
    let other = stream("contiguous-other");
    let main = stream("contiguous-main");
    let first = append(&store, &other, ExpectedVersion::NoStream, events(1, 0)).await;
    assert_eq!(
        first,
        AppendReceipt {
            first_version: Version(1),
            version: Version(1),
            first_position: Some(Position(1)),
            position: Some(Position(1)),
        }
    );

    let written = events(3, 10);
    let written_ids = ids(&written);
    let receipt = append(&store, &main, ExpectedVersion::NoStream, written).await;
    assert_eq!(
        receipt,
        AppendReceipt {
            first_version: Version(1),
            version: Version(3),
            first_position: Some(Position(2)),
            position: Some(Position(4)),
        }
    );

    let receipt = append(
        &store,
        &main,
        ExpectedVersion::Exact(Version(3)),
        events(4, 20),
    )
    .await;
    assert_eq!(
        receipt,
        AppendReceipt {
            first_version: Version(4),
            version: Version(7),
            first_position: Some(Position(5)),
            position: Some(Position(8)),
        }
    );

    let read = read_stream(&store, &main).await;
    assert_eq!(versions(&read), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(positions(&read), [2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(recorded_ids(&read[..3]), written_ids);
    assert!(read.iter().all(|event| event.stream == main));
    let all = read_all(&store).await;
    assert_eq!(positions(&all), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(head(&store).await, Position(8));
}

/// Ids, types, schema versions, payload bytes and every metadata field come back as written.
pub async fn events_round_trip_exactly<S: EventStore>(store: S) {
    let round_trip = stream("round-trip-ünïcødé-🎭");
    // Microseconds: the precision every store keeps (PostgreSQL's timestamptz).
    let timestamp = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    let full_metadata = Metadata {
        correlation_id: Some(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)),
        causation_id: Some(Uuid::from_u128(0xfedc_ba98_7654_3210_fedc_ba98_7654_3210)),
        command_id: Some(command("command/round-trip")),
        timestamp,
        headers: BTreeMap::from([
            ("tenant".to_owned(), "t-1".to_owned()),
            ("user".to_owned(), "zoë 🎭".to_owned()),
            ("empty".to_owned(), String::new()),
        ]),
    };
    let first_append = vec![
        NewEvent {
            event_id: EventId::new(),
            event_type: Cow::Borrowed("SeatReserved"),
            schema_version: 1,
            payload: r#"{"seat":"A1","price":12.5}"#.into(),
            metadata: full_metadata.clone(),
        },
        NewEvent {
            event_id: EventId::new(),
            event_type: Cow::Owned("PriceChanged".to_owned()),
            schema_version: u32::MAX,
            // Bytes, not a JSON value: key order and spacing are kept.
            payload: r#"{ "b" : 1, "a" : [2, 3], "name": "Zoë 🎭" }"#.into(),
            metadata: Metadata {
                headers: BTreeMap::new(),
                ..full_metadata.clone()
            },
        },
    ];
    let second_append = vec![NewEvent {
        event_id: EventId::new(),
        event_type: Cow::Borrowed("SeatReleased"),
        schema_version: 0,
        payload: "{}".into(),
        metadata: Metadata {
            correlation_id: None,
            causation_id: None,
            command_id: None,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(86_400),
            headers: BTreeMap::from([("only".to_owned(), "one".to_owned())]),
        },
    }];

    let mut expected = Vec::new();
    let mut position = 0;
    for (written, expected_version) in [
        (first_append, ExpectedVersion::NoStream),
        (second_append, ExpectedVersion::Exact(Version(2))),
    ] {
        let receipt = append(&store, &round_trip, expected_version, written.clone()).await;
        for (offset, event) in (0..).zip(written) {
            position += 1;
            expected.push(RecordedEvent {
                stream: round_trip.clone(),
                version: Version(receipt.first_version.0 + offset),
                position: Position(position),
                event_id: event.event_id,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: event.payload,
                metadata: event.metadata,
            });
        }
    }

    assert_eq!(
        read_stream(&store, &round_trip).await,
        expected,
        "read_stream"
    );
    assert_eq!(read_all(&store).await, expected, "read_all");
}

/// `read_stream` from the first, a middle and a past-the-end version, with limits.
pub async fn read_stream_from_version_with_limit<S: EventStore>(store: S) {
    let main = stream("read-stream-main");
    let other = stream("read-stream-other");
    append(&store, &main, ExpectedVersion::NoStream, events(2, 1)).await;
    append(&store, &other, ExpectedVersion::NoStream, events(1, 1)).await;
    append(
        &store,
        &main,
        ExpectedVersion::Exact(Version(2)),
        events(3, 3),
    )
    .await;
    let all_ids = recorded_ids(&read_stream(&store, &main).await);

    let read = |from: u64, limit: usize| {
        let store = &store;
        let main = &main;
        async move {
            store
                .read_stream(main, Version(from), limit)
                .await
                .unwrap_or_else(|error| panic!("read_stream from {from} failed: {error}"))
        }
    };

    let everything = read(1, 100).await;
    assert_eq!(versions(&everything), [1, 2, 3, 4, 5]);
    assert_eq!(positions(&everything), [1, 2, 4, 5, 6]);
    assert!(everything.iter().all(|event| event.stream == main));
    assert_eq!(recorded_ids(&everything), all_ids);
    assert_eq!(
        everything
            .iter()
            .map(|event| event.payload.as_bytes().to_vec())
            .collect::<Vec<_>>(),
        (1..=5)
            .map(|n| format!(r#"{{"n":{n}}}"#).into_bytes())
            .collect::<Vec<_>>()
    );

    let cases: [(u64, usize, &[u64]); 12] = [
        (0, 100, &[1, 2, 3, 4, 5]),
        (1, usize::MAX, &[1, 2, 3, 4, 5]),
        (3, 100, &[3, 4, 5]),
        (5, 100, &[5]),
        (6, 100, &[]),
        (1_000, 100, &[]),
        (u64::MAX, 100, &[]),
        (2, 2, &[2, 3]),
        (1, 1, &[1]),
        (4, 10, &[4, 5]),
        (1, 0, &[]),
        (3, 0, &[]),
    ];
    for (from, limit, expected) in cases {
        assert_eq!(
            versions(&read(from, limit).await),
            expected,
            "read_stream from {from} with limit {limit}"
        );
    }

    let unknown = stream("read-stream-unknown");
    assert!(
        store
            .read_stream(&unknown, Version(1), 100)
            .await
            .expect("read_stream of an unknown stream")
            .is_empty()
    );
}

/// What a reader that only decodes sees of an event: version, type, schema version, payload.
type Decodable = (u64, String, u32, Vec<u8>);

fn decodable(event: EventData<'_>) -> Decodable {
    (
        event.version.0,
        event.event_type.to_owned(),
        event.schema_version,
        event.payload.to_vec(),
    )
}

/// The error a visitor of the suite stops a read with.
#[derive(Debug, thiserror::Error)]
#[error("the visitor stopped the read")]
struct VisitorStopped;

fn is_visitor_stopped(error: &StoreError) -> bool {
    matches!(error, StoreError::Backend(source) if source.is::<VisitorStopped>())
}

/// A stream of several event types and schema versions (the whole `u32` range), with full
/// metadata, interleaved in the log with another stream's events: its six events as a reader
/// that only decodes should see them.
async fn mixed_stream<S: EventStore + ?Sized>(store: &S, mixed: &StreamId) -> Vec<Decodable> {
    let metadata = Metadata {
        correlation_id: Some(Uuid::from_u128(7)),
        causation_id: Some(Uuid::from_u128(8)),
        command_id: None,
        timestamp: SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
        headers: BTreeMap::from([("tenant".to_owned(), "t-1".to_owned())]),
    };
    let kinds: [(&'static str, u32, &str); 6] = [
        ("Opened", 1, r#"{"name":"Zoë 🎭"}"#),
        ("Renamed", 2, r#"{ "b" : 1, "a" : [2, 3] }"#),
        ("Renamed", 1, r#"{"old":"shape"}"#),
        ("Closed", 0, "{}"),
        ("Reopened", u32::MAX, r#"{"n":5}"#),
        ("Opened", 3, r#"{"n":6}"#),
    ];
    let other = stream("lean-other");
    let mut expected = Vec::new();
    for (index, pair) in (0u64..).zip(kinds.chunks(2)) {
        let batch: Vec<NewEvent> = pair
            .iter()
            .map(|(event_type, schema_version, payload)| NewEvent {
                event_id: EventId::new(),
                event_type: Cow::Borrowed(*event_type),
                schema_version: *schema_version,
                payload: (*payload).into(),
                metadata: Metadata {
                    command_id: Some(command(&format!("lean-{index}"))),
                    ..metadata.clone()
                },
            })
            .collect();
        let receipt = append(store, mixed, ExpectedVersion::Any, batch).await;
        for (offset, (event_type, schema_version, payload)) in (0..).zip(pair) {
            expected.push((
                receipt.first_version.0 + offset,
                (*event_type).to_owned(),
                *schema_version,
                payload.as_bytes().to_vec(),
            ));
        }
        append(store, &other, ExpectedVersion::Any, events(1, index)).await;
    }
    expected
}

/// What `visit_stream_data` hands over from `from`, at most `limit`, and its count.
async fn visit_data<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    from: u64,
    limit: usize,
) -> (usize, Vec<Decodable>) {
    let mut seen = Vec::new();
    let visited = store
        .visit_stream_data(stream, Version(from), limit, &mut |event| {
            assert_eq!(event.stream, stream, "visit_stream_data names the stream");
            seen.push(decodable(event));
            Ok(())
        })
        .await
        .expect("visit_stream_data");
    (visited, seen)
}

/// `visit_stream_data` hands over the same events as `visit_stream`, in the same order (version,
/// type, schema version and payload alike), from `from` and at most `limit` of them, returns how
/// many it handed over, and stops at the visitor's first error and returns it.
pub async fn visit_stream_data_hands_what_visit_stream_does<S: EventStore>(store: S) {
    let mixed = stream("lean-1");
    let expected = mixed_stream(&store, &mixed).await;
    let mut full = Vec::new();
    let visited = store
        .visit_stream(&mixed, Version(1), usize::MAX, &mut |event| {
            full.push(decodable(event.data()));
            Ok(())
        })
        .await
        .expect("visit_stream");
    assert_eq!((visited, &full), (6, &expected), "visit_stream");
    assert_eq!(
        visit_data(&store, &mixed, 1, usize::MAX).await,
        (6, expected.clone()),
        "visit_stream_data of the whole stream"
    );
    for (from, limit) in [
        (1, 3),
        (3, 2),
        (4, 100),
        (6, 1),
        (2, 0),
        (7, 10),
        (u64::MAX, 5),
    ] {
        let start = usize::try_from(from - 1).unwrap_or(usize::MAX).min(6);
        let part: Vec<Decodable> = expected[start..].iter().take(limit).cloned().collect();
        assert_eq!(
            visit_data(&store, &mixed, from, limit).await,
            (part.len(), part),
            "visit_stream_data from {from}, at most {limit}"
        );
    }
    assert_eq!(
        visit_data(&store, &stream("lean-none"), 1, 10).await,
        (0, Vec::new()),
        "a stream with no events"
    );

    let mut calls = 0;
    let stopped = store
        .visit_stream_data(&mixed, Version(2), 10, &mut |event| {
            calls += 1;
            if event.version == Version(3) {
                return Err(StoreError::backend(VisitorStopped));
            }
            Ok(())
        })
        .await;
    match stopped {
        Err(error) if is_visitor_stopped(&error) => {}
        other => panic!("visit_stream_data returned {other:?}, not the visitor's error"),
    }
    assert_eq!(
        calls, 2,
        "visit_stream_data went on after the visitor's error"
    );
}

/// A turn's `visit_stream_data` hands over what the store's does, honours `from` and `limit`,
/// and stops at the visitor's error; the turn's append still goes through afterwards.
pub async fn a_turn_visits_stream_data<S: EventStore>(store: S) {
    let mixed = stream("lean-turn-1");
    let expected = mixed_stream(&store, &mixed).await;
    let Some(mut turn) = store.take_turn(&mixed).await.expect("take_turn") else {
        return;
    };
    let mut seen = Vec::new();
    let visited = turn
        .visit_stream_data(Version(1), usize::MAX, &mut |event| {
            assert_eq!(event.stream, &mixed, "a turn's visit names its stream");
            seen.push(decodable(event));
            Ok(())
        })
        .await
        .expect("the turn reads");
    assert_eq!((visited, &seen), (6, &expected), "the whole stream");
    seen.clear();
    let visited = turn
        .visit_stream_data(Version(2), 3, &mut |event| {
            seen.push(decodable(event));
            Ok(())
        })
        .await
        .expect("the turn reads");
    assert_eq!(
        (visited, &seen[..]),
        (3, &expected[1..4]),
        "from 2, at most 3"
    );
    let mut calls = 0;
    let stopped = turn
        .visit_stream_data(Version(1), 10, &mut |_| {
            calls += 1;
            Err(StoreError::backend(VisitorStopped))
        })
        .await;
    match stopped {
        Err(error) if is_visitor_stopped(&error) => {}
        other => panic!("a turn's visit_stream_data returned {other:?}, not the visitor's error"),
    }
    assert_eq!(calls, 1, "a turn's visit went on after the visitor's error");
    let receipt = turn
        .append(ExpectedVersion::Exact(Version(6)), events(1, 60))
        .await
        .expect("the turn's append after its reads");
    assert_eq!(receipt.version, Version(7));
}

/// `read_all` in batches of 1, 3 and more reads every event exactly once, in order.
pub async fn read_all_in_batches<S: EventStore>(store: S) {
    let streams = [
        stream("batches-a"),
        stream("batches-b"),
        stream("batches-c"),
    ];
    let mut written = Vec::new();
    for i in 0..10_u64 {
        let target = &streams[(i % 3) as usize];
        let batch = events(i % 4 + 1, i * 10);
        written.extend(ids(&batch));
        append(&store, target, ExpectedVersion::Any, batch).await;
    }
    let total = written.len() as u64;
    assert_eq!(total, 23);

    for batch in [1, 3, 7, 1_000, usize::MAX] {
        let all = read_all_in(&store, Position::START, batch).await;
        assert_eq!(
            recorded_ids(&all),
            written,
            "read_all in batches of {batch}"
        );
        assert_eq!(
            positions(&all),
            (1..=total).collect::<Vec<_>>(),
            "positions read in batches of {batch}"
        );
    }

    let middle = store
        .read_all(Position(3), 2)
        .await
        .expect("read_all from the middle");
    assert_eq!(positions(&middle), [4, 5]);
    let rest = read_all_in(&store, Position(20), 3).await;
    assert_eq!(positions(&rest), [21, 22, 23]);
    for after in [total, total + 1, u64::MAX] {
        assert!(
            store
                .read_all(Position(after), 10)
                .await
                .expect("read_all past the head")
                .is_empty(),
            "read_all after {after}"
        );
    }
    assert!(
        store
            .read_all(Position::START, 0)
            .await
            .expect("read_all with limit 0")
            .is_empty()
    );
}

/// `head` is the position of the last event, unchanged by appends that write nothing.
pub async fn head_is_last_position<S: EventStore>(store: S) {
    assert_eq!(head(&store).await, Position::START);
    let first = stream("head-a");
    let second = stream("head-b");
    let receipt = append(&store, &first, ExpectedVersion::NoStream, events(3, 0)).await;
    assert_eq!(receipt.position, Some(Position(3)));
    assert_eq!(head(&store).await, Position(3));

    let _ = store
        .append(&first, ExpectedVersion::NoStream, events(2, 0))
        .await;
    append(&store, &second, ExpectedVersion::Any, Vec::new()).await;
    let _ = store
        .append(
            &second,
            ExpectedVersion::Any,
            vec![
                with_command(events(1, 0), "head-x").remove(0),
                with_command(events(1, 0), "head-y").remove(0),
            ],
        )
        .await;
    assert_eq!(
        head(&store).await,
        Position(3),
        "refused appends moved the head"
    );

    let receipt = append(&store, &second, ExpectedVersion::Any, events(1, 0)).await;
    assert_eq!(receipt.position, Some(Position(4)));
    assert_eq!(head(&store).await, Position(4));
}

// ---------------------------------------------------------------------------------------------
// Waiting for events

/// `wait_for_events` returns at once when the log already holds events after `after`.
pub async fn wait_for_events_returns_at_once_when_events_exist<S: EventStore>(store: S) {
    let waited = stream("wait-at-once");
    append(&store, &waited, ExpectedVersion::NoStream, events(3, 0)).await;
    for after in [0, 1, 2] {
        let head = tokio::time::timeout(QUIET * 10, store.wait_for_events(Position(after)))
            .await
            .unwrap_or_else(|_| panic!("wait_for_events after {after} with 3 events waited"))
            .expect("wait_for_events");
        assert_eq!(head, Position(3), "wait_for_events after {after}");
    }
}

/// A task waiting on an empty store wakes when another task appends, and so do several waiters.
pub async fn wait_for_events_wakes_on_append<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let waited = stream("wait-wakes");

    let mut waiters = JoinSet::new();
    for _ in 0..3 {
        let store = Arc::clone(&store);
        waiters.spawn(async move { wait_for(&*store, Position::START).await });
    }
    tokio::time::sleep(QUIET / 2).await;
    assert_eq!(waiters.len(), 3);
    assert!(
        waiters.try_join_next().is_none(),
        "a waiter returned before any event was appended"
    );

    let writer = {
        let store = Arc::clone(&store);
        let waited = waited.clone();
        tokio::spawn(async move {
            append(&*store, &waited, ExpectedVersion::NoStream, events(2, 0)).await
        })
    };
    let receipt = writer.await.expect("writer task");
    assert_eq!(receipt.position, Some(Position(2)));
    for head in join_all(waiters).await {
        assert_eq!(head, Position(2), "a woken waiter reports the head");
    }

    // A waiter after the current head wakes on the next append.
    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { wait_for(&*store, Position(2)).await })
    };
    tokio::time::sleep(QUIET / 2).await;
    assert!(
        !waiter.is_finished(),
        "a waiter after the head returned early"
    );
    append(
        &*store,
        &waited,
        ExpectedVersion::Exact(Version(2)),
        events(1, 2),
    )
    .await;
    assert_eq!(waiter.await.expect("waiter task"), Position(3));
}

/// `wait_for_events` does not return while nothing is appended after `after`, even when appends
/// that write nothing (refused or empty) happen meanwhile.
pub async fn wait_for_events_does_not_return_early<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let waited = stream("wait-quiet");
    append(&*store, &waited, ExpectedVersion::NoStream, events(2, 0)).await;

    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            tokio::time::timeout(QUIET * 2, store.wait_for_events(Position(2))).await
        })
    };
    let refused = store
        .append(&waited, ExpectedVersion::NoStream, events(1, 0))
        .await;
    assert!(matches!(refused, Err(StoreError::Conflict { .. })));
    append(&*store, &waited, ExpectedVersion::Any, Vec::new()).await;
    let result = waiter.await.expect("waiter task");
    assert!(
        result.is_err(),
        "wait_for_events after the head returned {result:?} although nothing was written"
    );

    // Events that are not after `after` do not end the wait either.
    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            tokio::time::timeout(QUIET * 2, store.wait_for_events(Position(10))).await
        })
    };
    append(&*store, &waited, ExpectedVersion::Any, events(1, 2)).await;
    let result = waiter.await.expect("waiter task");
    assert!(
        result.is_err(),
        "wait_for_events after 10 returned {result:?} with the head at 3"
    );
}

// ---------------------------------------------------------------------------------------------
// Snapshots

fn snapshot(version: u64, schema_version: u32, payload: &str) -> Snapshot {
    Snapshot {
        version: Version(version),
        schema_version,
        payload: payload.as_bytes().to_vec(),
    }
}

async fn load<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    schema_version: u32,
) -> Option<Snapshot> {
    store
        .load_snapshot(stream, schema_version)
        .await
        .unwrap_or_else(|error| panic!("load_snapshot of `{stream}` failed: {error}"))
}

async fn save<S: EventStore + ?Sized>(store: &S, stream: &StreamId, snapshot: Snapshot) {
    store
        .save_snapshot(stream, snapshot)
        .await
        .unwrap_or_else(|error| panic!("save_snapshot of `{stream}` failed: {error}"));
}

/// A snapshot is saved and loaded per stream, and a newer one replaces it.
pub async fn snapshots_save_load_and_replace<S: EventStore>(store: S) {
    let first = stream("snapshot-a");
    let second = stream("snapshot-b");
    assert_eq!(load(&store, &first, 1).await, None, "unknown stream");

    append(&store, &first, ExpectedVersion::NoStream, events(5, 0)).await;
    assert_eq!(
        load(&store, &first, 1).await,
        None,
        "stream without snapshot"
    );

    let saved = snapshot(3, 1, r#"{"seats":["A1","A2"]}"#);
    save(&store, &first, saved.clone()).await;
    assert_eq!(load(&store, &first, 1).await, Some(saved));
    assert_eq!(load(&store, &second, 1).await, None, "another stream");

    let newer = snapshot(5, 1, r#"{"seats":["A1","A2","B7"]}"#);
    save(&store, &first, newer.clone()).await;
    assert_eq!(load(&store, &first, 1).await, Some(newer.clone()));

    let binary = Snapshot {
        version: Version(9),
        schema_version: 1,
        payload: vec![0, 159, 146, 150, 255],
    };
    save(&store, &second, binary.clone()).await;
    assert_eq!(load(&store, &second, 1).await, Some(binary));
    assert_eq!(load(&store, &first, 1).await, Some(newer));
}

/// A snapshot of another schema version is never handed out.
pub async fn snapshot_of_another_schema_version_is_ignored<S: EventStore>(store: S) {
    let snapshotted = stream("snapshot-schema");
    let old_schema = snapshot(4, 1, r#"{"old":true}"#);
    save(&store, &snapshotted, old_schema.clone()).await;
    assert_eq!(load(&store, &snapshotted, 2).await, None);
    assert_eq!(load(&store, &snapshotted, 0).await, None);
    assert_eq!(
        load(&store, &snapshotted, 1).await,
        Some(old_schema.clone())
    );

    let new_schema = snapshot(6, 2, r#"{"new":true}"#);
    save(&store, &snapshotted, new_schema.clone()).await;
    assert_eq!(load(&store, &snapshotted, 2).await, Some(new_schema));
    // A store may keep one snapshot per stream or one per schema version, but schema 1 reads
    // never see the schema 2 state.
    let old = load(&store, &snapshotted, 1).await;
    assert!(
        old.is_none() || old == Some(old_schema),
        "loading schema 1 after saving schema 2 returned {old:?}"
    );
}

/// A snapshot covering fewer events does not replace one of the same schema covering more.
pub async fn snapshot_is_not_replaced_by_an_older_one<S: EventStore>(store: S) {
    let snapshotted = stream("snapshot-older");
    let newer = snapshot(8, 1, r#"{"at":8}"#);
    save(&store, &snapshotted, newer.clone()).await;
    save(&store, &snapshotted, snapshot(5, 1, r#"{"at":5}"#)).await;
    assert_eq!(load(&store, &snapshotted, 1).await, Some(newer));

    let same_version = snapshot(8, 1, r#"{"at":8,"again":true}"#);
    save(&store, &snapshotted, same_version.clone()).await;
    assert_eq!(
        load(&store, &snapshotted, 1).await,
        Some(same_version),
        "a snapshot of the same version replaces the earlier one"
    );
}

// ---------------------------------------------------------------------------------------------
// Command ids

async fn record<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    command_id: &str,
) -> Option<CommandRecord> {
    store
        .command_record(stream, &command(command_id))
        .await
        .unwrap_or_else(|error| panic!("command_record of `{stream}` failed: {error}"))
}

/// A command id already applied to a stream is refused whatever the expected version, and the
/// refusal writes nothing.
pub async fn duplicate_command_writes_nothing<S: EventStore>(store: S) {
    let commanded = stream("command-duplicate");
    append(
        &store,
        &stream("command-before"),
        ExpectedVersion::Any,
        events(1, 0),
    )
    .await;
    let receipt = append(
        &store,
        &commanded,
        ExpectedVersion::NoStream,
        with_command(events(2, 0), "command-1"),
    )
    .await;
    let earlier = CommandRecord {
        command_id: command("command-1"),
        stream: commanded.clone(),
        first_version: Version(1),
        version: Version(2),
        position: Position(3),
    };
    assert_eq!(receipt.position, Some(Position(3)));
    assert_eq!(
        record(&store, &commanded, "command-1").await,
        Some(earlier.clone())
    );

    let before = contents(&store).await;
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(Version(2)),
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(Version(9)),
    ] {
        let result = store
            .append(
                &commanded,
                expected,
                with_command(events(3, 10), "command-1"),
            )
            .await;
        assert_duplicate(result, &earlier);
        assert_eq!(contents(&store).await, before, "a duplicate wrote nothing");
    }

    let receipt = append(
        &store,
        &commanded,
        ExpectedVersion::Exact(Version(2)),
        with_command(events(1, 2), "command-2"),
    )
    .await;
    assert_eq!(receipt.version, Version(3));
    assert_eq!(
        record(&store, &commanded, "command-2").await,
        Some(CommandRecord {
            command_id: command("command-2"),
            stream: commanded.clone(),
            first_version: Version(3),
            version: Version(3),
            position: Position(4),
        })
    );
    assert_eq!(record(&store, &commanded, "command-1").await, Some(earlier));
    assert_eq!(record(&store, &commanded, "command-unknown").await, None);
    assert_eq!(
        record(&store, &stream("command-nowhere"), "command-1").await,
        None
    );

    // Events without a command id are not deduplicated.
    append(&store, &commanded, ExpectedVersion::Any, events(1, 3)).await;
    append(&store, &commanded, ExpectedVersion::Any, events(1, 4)).await;
    assert_eq!(
        versions(&read_stream(&store, &commanded).await),
        [1, 2, 3, 4, 5]
    );
}

/// The same command id on two streams is two independent applications.
pub async fn command_ids_are_per_stream<S: EventStore>(store: S) {
    let first = stream("command-stream-a");
    let second = stream("command-stream-b");
    append(
        &store,
        &first,
        ExpectedVersion::NoStream,
        with_command(events(2, 0), "shared"),
    )
    .await;
    assert_eq!(record(&store, &second, "shared").await, None);
    let receipt = append(
        &store,
        &second,
        ExpectedVersion::NoStream,
        with_command(events(1, 0), "shared"),
    )
    .await;
    assert_eq!(receipt.version, Version(1));
    assert_eq!(
        record(&store, &first, "shared").await,
        Some(CommandRecord {
            command_id: command("shared"),
            stream: first.clone(),
            first_version: Version(1),
            version: Version(2),
            position: Position(2),
        })
    );
    assert_eq!(
        record(&store, &second, "shared").await,
        Some(CommandRecord {
            command_id: command("shared"),
            stream: second.clone(),
            first_version: Version(1),
            version: Version(1),
            position: Position(3),
        })
    );
}

/// The events of one append with different command ids are refused; nothing is written.
pub async fn mixed_command_ids_are_rejected<S: EventStore>(store: S) {
    let mixed = stream("command-mixed");
    let with = |command_id: Option<&str>| {
        let mut event = event("Mixed", 0);
        event.metadata.command_id = command_id.map(command);
        event
    };
    let cases = [(Some("a"), Some("b")), (None, Some("a")), (Some("a"), None)];
    for (first, other) in cases {
        let result = store
            .append(
                &mixed,
                ExpectedVersion::Any,
                vec![with(first), with(first), with(other)],
            )
            .await;
        match result {
            Err(StoreError::MixedCommandIds {
                first: reported_first,
                other: reported_other,
            }) => {
                assert_eq!(reported_first, first.map(command));
                assert_eq!(reported_other, other.map(command));
            }
            other_result => {
                panic!("command ids {first:?} and {other:?} in one append gave {other_result:?}")
            }
        }
    }
    assert_eq!(head(&store).await, Position::START);
    assert!(read_stream(&store, &mixed).await.is_empty());
    assert_eq!(record(&store, &mixed, "a").await, None);
    assert_eq!(record(&store, &mixed, "b").await, None);

    let receipt = append(
        &store,
        &mixed,
        ExpectedVersion::NoStream,
        vec![with(Some("a")), with(Some("a"))],
    )
    .await;
    assert_eq!(receipt.version, Version(2));
}

/// Of several concurrent appends carrying one command id, exactly one is written.
pub async fn concurrent_appends_with_one_command_id_write_once<S: EventStore>(store: S) {
    const TASKS: usize = 8;
    let store = Arc::new(store);
    let raced = stream("command-race");
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        let raced = raced.clone();
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            let written = with_command(events(2, 0), "raced");
            let written_ids = ids(&written);
            barrier.wait().await;
            let result = store.append(&raced, ExpectedVersion::Any, written).await;
            (written_ids, result)
        });
    }
    let results = join_all(tasks).await;

    let mut winners = Vec::new();
    let mut duplicates = Vec::new();
    for (written_ids, result) in results {
        match result {
            Ok(receipt) => winners.push((written_ids, receipt)),
            Err(StoreError::DuplicateCommand { earlier }) => duplicates.push(earlier),
            Err(error) => panic!("a concurrent append with a command id failed: {error}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one append is written");
    assert_eq!(duplicates.len(), TASKS - 1);
    let (winner_ids, receipt) = winners.remove(0);
    let earlier = CommandRecord {
        command_id: command("raced"),
        stream: raced.clone(),
        first_version: Version(1),
        version: Version(2),
        position: receipt.position.expect("a written append has a position"),
    };
    assert!(duplicates.iter().all(|reported| reported == &earlier));
    let read = read_stream(&*store, &raced).await;
    assert_eq!(recorded_ids(&read), winner_ids);
    assert_eq!(head(&*store).await, Position(2));
}

/// Command ids that no store could keep alike (empty, longer than [`MAX_COMMAND_ID_LEN`] bytes,
/// with a control character) cannot be made, so they never reach a store.
pub async fn command_ids_are_validated<S: EventStore>(store: S) {
    assert_eq!(CommandId::new(""), Err(InvalidCommandId::Empty));
    assert_eq!(
        CommandId::new("x".repeat(MAX_COMMAND_ID_LEN + 1)),
        Err(InvalidCommandId::TooLong {
            len: MAX_COMMAND_ID_LEN + 1,
            max: MAX_COMMAND_ID_LEN,
        })
    );
    // The limit is in bytes: 128 two-byte characters and one more byte are 257.
    assert_eq!(
        CommandId::new(format!("{}x", "é".repeat(MAX_COMMAND_ID_LEN / 2))),
        Err(InvalidCommandId::TooLong {
            len: MAX_COMMAND_ID_LEN + 1,
            max: MAX_COMMAND_ID_LEN,
        })
    );
    for (id, character, index) in [
        ("request\0", '\0', 7),
        ("\0", '\0', 0),
        ("request\n42", '\n', 7),
        ("tab\there", '\t', 3),
        ("é\u{7f}", '\u{7f}', 2),
    ] {
        assert_eq!(
            CommandId::new(id),
            Err(InvalidCommandId::ControlCharacter { character, index }),
            "{id:?}"
        );
        assert_eq!(
            CommandId::try_from(id.to_owned()),
            Err(InvalidCommandId::ControlCharacter { character, index }),
            "{id:?}"
        );
    }

    // A valid id with a space and characters from any script is kept as it is.
    let commanded = stream("command-valid");
    append(
        &store,
        &commanded,
        ExpectedVersion::NoStream,
        with_command(events(1, 0), "request 42 für 🎭"),
    )
    .await;
    let read = read_stream(&store, &commanded).await;
    assert_eq!(
        read[0].metadata.command_id,
        Some(command("request 42 für 🎭"))
    );
}

/// A command id of exactly [`MAX_COMMAND_ID_LEN`] bytes, with multi-byte characters and a space,
/// is stored, read back, recorded and found, and deduplicates its retry.
pub async fn longest_command_id_round_trips<S: EventStore>(store: S) {
    // 5 + 250 + 1 bytes.
    let longest = format!("🎭 {}x", "é".repeat(125));
    assert_eq!(longest.len(), MAX_COMMAND_ID_LEN);
    let longest = command(&longest);
    let commanded = stream("command-longest");
    let written = with_command(events(2, 0), longest.as_str());
    let written_ids = ids(&written);
    let receipt = append(&store, &commanded, ExpectedVersion::NoStream, written).await;

    let read = read_stream(&store, &commanded).await;
    assert_eq!(recorded_ids(&read), written_ids);
    for event in read.iter().chain(&read_all(&store).await) {
        assert_eq!(
            event.metadata.command_id.as_ref(),
            Some(&longest),
            "the command id comes back byte for byte"
        );
    }
    let earlier = CommandRecord {
        command_id: longest.clone(),
        stream: commanded.clone(),
        first_version: Version(1),
        version: Version(2),
        position: receipt.position.expect("a written append has a position"),
    };
    let found = store
        .command_record(&commanded, &longest)
        .await
        .unwrap_or_else(|error| panic!("command_record of `{commanded}` failed: {error}"));
    assert_eq!(found, Some(earlier.clone()));

    let before = contents(&store).await;
    let retry = store
        .append(
            &commanded,
            ExpectedVersion::Any,
            with_command(events(1, 2), longest.as_str()),
        )
        .await;
    assert_duplicate(retry, &earlier);
    assert_eq!(contents(&store).await, before, "a duplicate wrote nothing");
}

// ---------------------------------------------------------------------------------------------
// Stream ids

/// Invalid stream ids are refused with a typed error; the longest valid id, and ids in any
/// script, are stored and read back.
pub async fn stream_ids_are_validated<S: EventStore>(store: S) {
    assert_eq!(StreamId::new(""), Err(InvalidStreamId::Empty));
    let too_long = "x".repeat(MAX_STREAM_ID_LEN + 1);
    assert_eq!(
        StreamId::new(&too_long),
        Err(InvalidStreamId::TooLong {
            len: MAX_STREAM_ID_LEN + 1,
            max: MAX_STREAM_ID_LEN,
        })
    );
    assert_eq!(
        StreamId::for_aggregate("show", "9".repeat(MAX_STREAM_ID_LEN)),
        Err(InvalidStreamId::TooLong {
            len: MAX_STREAM_ID_LEN + 5,
            max: MAX_STREAM_ID_LEN,
        })
    );
    for (id, character, index) in [
        ("show-\n1", '\n', 5),
        ("show\0", '\0', 4),
        ("tab\there", '\t', 3),
        ("é\u{7f}", '\u{7f}', 2),
    ] {
        assert_eq!(
            StreamId::new(id),
            Err(InvalidStreamId::ControlCharacter { character, index }),
            "{id:?}"
        );
    }
    assert_eq!(
        StreamId::for_aggregate("show", "4\r2"),
        Err(InvalidStreamId::ControlCharacter {
            character: '\r',
            index: 6
        })
    );
    let error = StoreError::from(InvalidStreamId::Empty);
    assert!(matches!(
        error,
        StoreError::InvalidStream(InvalidStreamId::Empty)
    ));

    // Two-byte characters up to the limit in bytes.
    let longest = stream(&"é".repeat(MAX_STREAM_ID_LEN / 2));
    assert_eq!(longest.as_str().len(), MAX_STREAM_ID_LEN);
    let unicode = stream("show-🎭-ünïcødé-42");
    for stored in [&longest, &unicode] {
        append(&store, stored, ExpectedVersion::NoStream, events(1, 0)).await;
        let read = read_stream(&store, stored).await;
        assert_eq!(read.len(), 1);
        assert_eq!(&read[0].stream, stored);
    }
    let all = read_all(&store).await;
    assert_eq!(
        all.iter().map(|event| &event.stream).collect::<Vec<_>>(),
        [&longest, &unicode]
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrency

/// One successful append, as its writer saw it.
struct Written {
    stream: StreamId,
    receipt: AppendReceipt,
    event_ids: Vec<EventId>,
}

/// Checks a store after concurrent writers: every append contiguous and in place in its stream
/// and in the global log, the log contiguous, and the global order consistent with every stream's.
async fn check_history<S: EventStore + ?Sized>(store: &S, written: &[Written]) {
    let all = read_all_in(store, Position::START, 997).await;
    let total: usize = written.iter().map(|append| append.event_ids.len()).sum();
    assert_eq!(all.len(), total, "events in the global log");
    assert_eq!(
        positions(&all),
        (1..=total as u64).collect::<Vec<_>>(),
        "global positions are contiguous"
    );
    let unique: HashSet<EventId> = all.iter().map(|event| event.event_id).collect();
    assert_eq!(unique.len(), total, "no event is stored twice");

    let mut by_stream: HashMap<&StreamId, Vec<&Written>> = HashMap::new();
    for append in written {
        by_stream.entry(&append.stream).or_default().push(append);
        let count = append.event_ids.len() as u64;
        let first = append
            .receipt
            .first_position
            .expect("a written append has positions");
        let last = append
            .receipt
            .position
            .expect("a written append has positions");
        assert_eq!(
            last.0 - first.0 + 1,
            count,
            "positions of one append are contiguous"
        );
        assert_eq!(
            append.receipt.version.0 - append.receipt.first_version.0 + 1,
            count
        );
        let logged = &all[(first.0 - 1) as usize..last.0 as usize];
        assert_eq!(
            recorded_ids(logged),
            append.event_ids,
            "the log holds an append's events at its receipt's positions"
        );
        assert!(logged.iter().all(|event| event.stream == append.stream));
        assert_eq!(
            versions(logged),
            (append.receipt.first_version.0..=append.receipt.version.0).collect::<Vec<_>>()
        );
    }

    for (stream, appends) in by_stream {
        let read = read_stream(store, stream).await;
        let count: usize = appends.iter().map(|append| append.event_ids.len()).sum();
        assert_eq!(
            versions(&read),
            (1..=count as u64).collect::<Vec<_>>(),
            "versions of `{stream}` are contiguous from 1, none lost or duplicated"
        );
        for append in appends {
            let range =
                (append.receipt.first_version.0 - 1) as usize..append.receipt.version.0 as usize;
            assert_eq!(recorded_ids(&read[range]), append.event_ids);
        }
        let in_log: Vec<u64> = all
            .iter()
            .filter(|event| &event.stream == stream)
            .map(|event| event.version.0)
            .collect();
        assert_eq!(
            in_log,
            (1..=count as u64).collect::<Vec<_>>(),
            "the global log holds `{stream}` in version order"
        );
    }
}

/// While a turn on a stream is held ([`EventStore::take_turn`]), another writer's append to it
/// waits, then goes on (and meets the turn's write); other streams are not held up; the turn reads
/// and appends, and a dropped turn ends. A store without turns (`None`) passes.
pub async fn a_turn_keeps_other_writers_out<S: EventStore>(store: S) {
    let hot = stream("turn-1");
    let other = stream("turn-2");
    append(&store, &hot, ExpectedVersion::NoStream, events(2, 0)).await;
    let Some(mut turn) = store.take_turn(&hot).await.expect("take_turn") else {
        return;
    };
    assert_eq!(turn.stream(), &hot);
    let store = Arc::new(store);
    let blocked = {
        let (store, hot) = (Arc::clone(&store), hot.clone());
        tokio::spawn(async move {
            store
                .append(&hot, ExpectedVersion::Exact(Version(2)), events(1, 10))
                .await
        })
    };
    tokio::time::sleep(QUIET).await;
    assert!(
        !blocked.is_finished(),
        "an append got into a stream while a turn held it"
    );
    // Another stream is not held up by the turn.
    tokio::time::timeout(
        PATIENCE,
        append(&*store, &other, ExpectedVersion::NoStream, events(1, 20)),
    )
    .await
    .expect("an append to another stream waited for the turn");

    let mut seen = Vec::new();
    let visited = turn
        .visit_stream(Version(1), 100, &mut |event| {
            seen.push(event.version.0);
            Ok(())
        })
        .await
        .expect("the turn reads");
    assert_eq!((visited, seen), (2, vec![1, 2]));
    let receipt = turn
        .append(ExpectedVersion::Exact(Version(2)), events(1, 30))
        .await
        .expect("the turn's append cannot lose");
    assert_eq!(receipt.version, Version(3));

    let waited = tokio::time::timeout(PATIENCE, blocked)
        .await
        .expect("the waiting append went on once the turn ended")
        .expect("task");
    assert_conflict(waited, &hot, ExpectedVersion::Exact(Version(2)), Version(3));
    assert_eq!(versions(&read_stream(&*store, &hot).await), vec![1, 2, 3]);

    // A turn dropped without an append ends too.
    let dropped = store.take_turn(&hot).await.expect("take_turn");
    drop(dropped);
    tokio::time::timeout(
        PATIENCE,
        append(
            &*store,
            &hot,
            ExpectedVersion::Exact(Version(3)),
            events(1, 40),
        ),
    )
    .await
    .expect("an append waited for a turn that was dropped");
}

/// Turns on one stream are held one at a time, in the order they were asked for; a writer that
/// holds one never loses its append.
pub async fn turns_are_taken_one_at_a_time<S: EventStore>(store: S) {
    const WRITERS: u64 = 8;
    let hot = stream("turns-1");
    let store = Arc::new(store);
    if store.take_turn(&hot).await.expect("take_turn").is_none() {
        return;
    }
    let mut tasks = JoinSet::new();
    for writer in 0..WRITERS {
        let (store, hot) = (Arc::clone(&store), hot.clone());
        tasks.spawn(async move {
            let mut turn = store.take_turn(&hot).await.expect("take_turn")?;
            let mut version = Version::INITIAL;
            turn.visit_stream(Version(1), 1_000, &mut |event| {
                version = event.version;
                Ok(())
            })
            .await
            .expect("the turn reads");
            tokio::task::yield_now().await;
            let receipt = turn
                .append(ExpectedVersion::Exact(version), events(1, writer))
                .await
                .expect("a turn's append cannot lose");
            Some(receipt.version)
        });
    }
    let mut written: Vec<u64> = join_all(tasks)
        .await
        .into_iter()
        .map(|version| version.expect("turns").0)
        .collect();
    written.sort_unstable();
    assert_eq!(written, (1..=WRITERS).collect::<Vec<_>>());
}

/// Many tasks append to a few shared streams with `Exact` versions, retrying on conflict:
/// nothing is lost, duplicated or reordered.
pub async fn concurrent_writers_on_shared_streams<S: EventStore>(store: S) {
    const TASKS: u64 = 8;
    const APPENDS: u64 = 200;
    const MAX_ATTEMPTS: usize = 100_000;
    let store = Arc::new(store);
    let streams: Arc<[StreamId]> =
        Arc::from([stream("shared-a"), stream("shared-b"), stream("shared-c")]);
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let streams = Arc::clone(&streams);
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            let mut known = vec![Version::INITIAL; streams.len()];
            let mut written = Vec::new();
            barrier.wait().await;
            for i in 0..APPENDS {
                let index = ((task + i) % streams.len() as u64) as usize;
                let target = &streams[index];
                let batch = events((task * 7 + i) % 3 + 1, i);
                let event_ids = ids(&batch);
                let mut attempts = 0;
                let receipt = loop {
                    attempts += 1;
                    assert!(attempts <= MAX_ATTEMPTS, "task {task} made no progress");
                    let expected = ExpectedVersion::Exact(known[index]);
                    match store.append(target, expected, batch.clone()).await {
                        Ok(receipt) => break receipt,
                        Err(StoreError::Conflict { actual, .. }) => {
                            assert_ne!(
                                actual, known[index],
                                "a conflict reports the actual version"
                            );
                            known[index] = actual;
                            tokio::task::yield_now().await;
                        }
                        Err(error) => panic!("append failed: {error}"),
                    }
                };
                assert_eq!(receipt.first_version, known[index].next());
                known[index] = receipt.version;
                written.push(Written {
                    stream: target.clone(),
                    receipt,
                    event_ids,
                });
            }
            written
        });
    }
    let written: Vec<Written> = join_all(tasks).await.into_iter().flatten().collect();
    assert_eq!(written.len() as u64, TASKS * APPENDS);
    check_history(&*store, &written).await;
}

/// Concurrent appends to different streams all succeed at the version they expect.
pub async fn concurrent_appends_to_different_streams<S: EventStore>(store: S) {
    const TASKS: u64 = 16;
    const APPENDS: u64 = 100;
    let store = Arc::new(store);
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            let own = stream(&format!("distinct-{task}"));
            let mut version = Version::INITIAL;
            let mut written = Vec::new();
            barrier.wait().await;
            for i in 0..APPENDS {
                let batch = events(i % 2 + 1, i);
                let event_ids = ids(&batch);
                let receipt = append(&*store, &own, ExpectedVersion::Exact(version), batch).await;
                version = receipt.version;
                written.push(Written {
                    stream: own.clone(),
                    receipt,
                    event_ids,
                });
            }
            written
        });
    }
    let written: Vec<Written> = join_all(tasks).await.into_iter().flatten().collect();
    assert_eq!(written.len() as u64, TASKS * APPENDS);
    check_history(&*store, &written).await;
}

fn header(event: &RecordedEvent, name: &str) -> u64 {
    event
        .metadata
        .headers
        .get(name)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("event at {} has no header `{name}`", event.position))
}

/// A reader following the global log while writers append sees every event exactly once, in
/// order, and never part of an append.
pub async fn reader_follows_concurrent_writers<S: EventStore>(store: S) {
    const WRITERS: u64 = 4;
    const APPENDS: u64 = 150;
    const BATCH: usize = 7;
    let store = Arc::new(store);
    let count = |writer: u64, i: u64| (writer + i) % 4 + 1;
    let total: u64 = (0..WRITERS)
        .flat_map(|writer| (0..APPENDS).map(move |i| count(writer, i)))
        .sum();

    let reader = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = Position::START;
            while (seen.len() as u64) < total {
                let batch = store.read_all(after, BATCH).await.expect("read_all");
                if batch.is_empty() {
                    let head = wait_for(&*store, after).await;
                    assert!(
                        head > after,
                        "wait_for_events after {after} returned {head}"
                    );
                    continue;
                }
                assert!(batch.len() <= BATCH);
                if batch.len() < BATCH {
                    // A short batch reached the head: it must end on the last event of an append.
                    let last = batch.last().expect("non-empty batch");
                    assert_eq!(
                        header(last, "part"),
                        header(last, "of"),
                        "a reader saw part of an append ending at {}",
                        last.position
                    );
                }
                for event in batch {
                    assert_eq!(
                        event.position.0,
                        after.0 + 1,
                        "the reader skipped or repeated"
                    );
                    after = event.position;
                    let part = header(&event, "part");
                    if part > 1 {
                        let previous = seen.last().expect("a later part follows an earlier one");
                        assert_eq!(
                            (header(previous, "writer"), header(previous, "append")),
                            (header(&event, "writer"), header(&event, "append")),
                            "an append's events are contiguous in the log"
                        );
                        assert_eq!(header(previous, "part") + 1, part);
                    }
                    seen.push(event);
                }
            }
            seen
        })
    };

    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            let own = stream(&format!("follow-{writer}"));
            let mut written = Vec::new();
            for i in 0..APPENDS {
                let of = count(writer, i);
                let mut batch = events(of, i);
                for (part, event) in (1..).zip(&mut batch) {
                    event.metadata.headers = BTreeMap::from([
                        ("writer".to_owned(), writer.to_string()),
                        ("append".to_owned(), i.to_string()),
                        ("part".to_owned(), u64::to_string(&part)),
                        ("of".to_owned(), of.to_string()),
                    ]);
                }
                written.extend(ids(&batch));
                append(&*store, &own, ExpectedVersion::Any, batch).await;
                if i % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            written
        });
    }
    let written: HashSet<EventId> = join_all(writers).await.into_iter().flatten().collect();
    let seen = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("the reader caught up")
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
    assert_eq!(seen.len() as u64, total);
    let seen_ids: HashSet<EventId> = seen.iter().map(|event| event.event_id).collect();
    assert_eq!(
        seen_ids, written,
        "the reader saw every written event exactly once"
    );
    assert_eq!(head(&*store).await, Position(total));
}
