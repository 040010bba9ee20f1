//! `PostgresStore::read_log`: rows of other aggregates are passed over, a row that does not
//! decode is an `Unreadable` entry at its place for the readers of its aggregate only, and
//! `last` covers the filtered rows so that a reader moves past them.

use cqrs_core::prelude::*;
use cqrs_core::{EventStore, ExpectedVersion, LogEntry, Metadata, NewEvent, Position};
use cqrs_postgres::PostgresStore;
use cqrs_postgres::testing::TestCluster;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled { capacity: u32 },
    SeatsReserved { seats: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum OrderEvent {
    Placed { total: u64 },
}

async fn fresh_store() -> PostgresStore {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");
    let store = PostgresStore::with_pool_size(&url, 4).expect("store");
    store.migrate().await.expect("migrate");
    store
}

async fn append<E: DomainEvent>(store: &PostgresStore, stream: &str, events: &[E]) -> Position {
    let stream = StreamId::new(stream).expect("stream id");
    let events = events
        .iter()
        .map(|event| NewEvent::encode(event, Metadata::default()))
        .collect::<Result<Vec<_>, _>>()
        .expect("encode");
    store
        .append(&stream, ExpectedVersion::Any, events)
        .await
        .expect("append")
        .position
        .expect("a position")
}

async fn execute(store: &PostgresStore, sql: &str) -> u64 {
    store
        .pool()
        .get()
        .await
        .expect("connection")
        .execute(sql, &[])
        .await
        .expect(sql)
}

fn streams(entries: &[LogEntry]) -> Vec<(u64, String)> {
    entries
        .iter()
        .map(|entry| match entry {
            LogEntry::Event(event) => (event.position.0, event.stream.to_string()),
            LogEntry::Unreadable(row) => (row.position.0, format!("unreadable {}", row.stream)),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_aggregates_are_passed_over_and_last_covers_them() {
    let store = fresh_store().await;
    append(&store, "show-1", &[ShowEvent::Scheduled { capacity: 10 }]).await;
    append(&store, "order-1", &[OrderEvent::Placed { total: 5 }]).await;
    append(&store, "order-2", &[OrderEvent::Placed { total: 7 }]).await;
    let head = append(&store, "show-1", &[ShowEvent::SeatsReserved { seats: 2 }]).await;
    assert_eq!(head, Position(4));

    let shows = store
        .read_log(Position::START, 100, &["show"])
        .await
        .expect("read");
    assert_eq!(
        streams(&shows.entries),
        [(1, "show-1".to_owned()), (4, "show-1".to_owned())]
    );
    assert_eq!(shows.last, Some(head));

    let everything = store
        .read_log(Position::START, 100, &[])
        .await
        .expect("read");
    assert_eq!(everything.entries.len(), 4);
    let all = store
        .read_all(Position::START, 100)
        .await
        .expect("read_all");
    let logged: Vec<_> = everything
        .entries
        .iter()
        .map(|entry| match entry {
            LogEntry::Event(event) => event.clone(),
            LogEntry::Unreadable(row) => panic!("unexpected {row}"),
        })
        .collect();
    assert_eq!(logged, all, "read_log(&[]) reads what read_all reads");

    // A read whose positions are all of other aggregates still moves the reader on.
    let orders = store
        .read_log(Position(1), 2, &["show"])
        .await
        .expect("read");
    assert!(orders.entries.is_empty());
    assert_eq!(orders.last, Some(Position(3)));

    let none = store.read_log(head, 100, &["show"]).await.expect("read");
    assert!(none.entries.is_empty());
    assert_eq!(none.last, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_is_unreadable_for_its_readers_only() {
    let store = fresh_store().await;
    append(&store, "show-1", &[ShowEvent::Scheduled { capacity: 10 }]).await;
    append(&store, "show-bad", &[ShowEvent::Scheduled { capacity: 3 }]).await;
    append(&store, "order-1", &[OrderEvent::Placed { total: 5 }]).await;
    append(&store, "show-1", &[ShowEvent::SeatsReserved { seats: 2 }]).await;
    let head = append(&store, "order-1", &[OrderEvent::Placed { total: 6 }]).await;
    // Headers that are JSON but not a map: the row cannot be an event.
    let changed = execute(
        &store,
        "UPDATE cqrs_events SET headers = '[1]' WHERE stream = 'show-bad' AND version = 1",
    )
    .await;
    assert_eq!(changed, 1);

    let shows = store
        .read_log(Position::START, 100, &["show"])
        .await
        .expect("read");
    assert_eq!(
        streams(&shows.entries),
        [
            (1, "show-1".to_owned()),
            (2, "unreadable show-bad".to_owned()),
            (4, "show-1".to_owned())
        ]
    );
    assert_eq!(shows.last, Some(head));
    let Some(LogEntry::Unreadable(row)) = shows.entries.get(1) else {
        panic!("no unreadable entry: {:?}", shows.entries);
    };
    assert_eq!(row.position, Position(2));
    assert_eq!(row.stream, "show-bad");
    assert_eq!(row.version, Some(Version(1)));
    assert_eq!(row.event_type.as_deref(), Some("Scheduled"));
    assert!(row.reason.contains("headers"), "{}", row.reason);
    assert!(row.to_string().contains("show-bad"), "{row}");

    // Every reader of the whole log sees it at its place too.
    let everything = store
        .read_log(Position::START, 100, &[])
        .await
        .expect("read");
    assert_eq!(everything.entries.len(), 5);
    assert!(matches!(
        everything.entries.get(1),
        Some(LogEntry::Unreadable(_))
    ));

    // A reader of another aggregate never sees it, and is not stopped by it.
    let orders = store
        .read_log(Position::START, 100, &["order"])
        .await
        .expect("read");
    assert_eq!(
        streams(&orders.entries),
        [(3, "order-1".to_owned()), (5, "order-1".to_owned())]
    );
    assert_eq!(orders.last, Some(head));

    // read_all keeps failing on the corrupt row, naming it.
    let error = store
        .read_all(Position::START, 100)
        .await
        .expect_err("read_all fails on a corrupt row");
    assert!(error.to_string().contains("show-bad"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stream_ids_and_command_ids_are_unreadable_with_what_could_be_read() {
    let store = fresh_store().await;
    append(&store, "show-1", &[ShowEvent::Scheduled { capacity: 10 }]).await;
    append(&store, "show-2", &[ShowEvent::Scheduled { capacity: 20 }]).await;
    let head = append(&store, "order-1", &[OrderEvent::Placed { total: 5 }]).await;
    // A stored stream id that is not a valid `StreamId` (a control character), and a command id
    // that is not a valid `CommandId` (empty).
    execute(
        &store,
        "UPDATE cqrs_events SET stream = 'show-1' || chr(10) WHERE stream = 'show-1'",
    )
    .await;
    execute(
        &store,
        "UPDATE cqrs_events SET command_id = '' WHERE stream = 'show-2'",
    )
    .await;

    let shows = store
        .read_log(Position::START, 100, &["show"])
        .await
        .expect("read");
    assert_eq!(shows.last, Some(head));
    let rows: Vec<_> = shows
        .entries
        .iter()
        .map(|entry| match entry {
            LogEntry::Unreadable(row) => row.clone(),
            LogEntry::Event(event) => panic!("{event:?} should not read"),
        })
        .collect();
    assert_eq!(rows.len(), 2);
    let (bad_stream, bad_command) = (&rows[0], &rows[1]);
    assert_eq!(bad_stream.stream, "show-1\n");
    assert_eq!(bad_stream.version, Some(Version(1)));
    assert!(
        bad_stream.reason.contains("control character"),
        "{}",
        bad_stream.reason
    );
    assert_eq!(bad_command.stream, "show-2");
    assert_eq!(bad_command.event_type.as_deref(), Some("Scheduled"));
    assert!(
        bad_command.reason.contains("command id"),
        "{}",
        bad_command.reason
    );

    let orders = store
        .read_log(Position::START, 100, &["order"])
        .await
        .expect("read");
    assert_eq!(streams(&orders.entries), [(3, "order-1".to_owned())]);
}
