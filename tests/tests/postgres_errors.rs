//! Typed errors of [`PostgresStore`]: conflicts say what they found, hostile stream ids and
//! headers are data and never SQL, a corrupt stored payload is a decode error, a stored command
//! id that breaks the rule is a [`CorruptRow`](cqrs_postgres::CorruptRow) (for every read but the
//! lean one, which does not read it), and a backend failure is [`StoreError::Backend`] with
//! nothing half-written.

use std::collections::BTreeMap;
use std::sync::Arc;

use cqrs_core::{
    CommandId, EventId, EventStore, ExecuteError, ExpectedVersion, LoadError, Metadata, NewEvent,
    Position, Repository, StoreError, StreamId, Version,
};
use cqrs_examples::show::{BookingId, Show, ShowCommand};
use cqrs_postgres::PostgresStore;
use cqrs_postgres::testing::TestCluster;

async fn fresh_store() -> (PostgresStore, String) {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster
        .create_database()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let store = PostgresStore::with_pool_size(&url, 4).unwrap_or_else(|error| panic!("{error}"));
    store.migrate().await.expect("migrate");
    (store, url)
}

/// One seat for `booking`.
fn reserve(booking: u64) -> ShowCommand {
    ShowCommand::ReserveSeats {
        booking: BookingId(booking),
        seats: 1,
    }
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: "Counted".into(),
        schema_version: 1,
        payload: format!(r#"{{"n":{n}}}"#).as_str().into(),
        metadata: Metadata::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_are_idempotent() {
    let (store, _) = fresh_store().await;
    assert_eq!(store.migrate().await.expect("again"), Vec::<i32>::new());
    let (first, second) = tokio::join!(store.migrate(), store.migrate());
    assert!(first.is_ok() && second.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_one_version_get_a_conflict_with_the_actual_version() {
    let (store, _) = fresh_store().await;
    let stream = StreamId::new("conflict-1").expect("valid");
    let attempts = (0..6).map(|n| {
        let store = store.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            store
                .append(&stream, ExpectedVersion::NoStream, vec![event(n), event(n)])
                .await
        })
    });
    let mut winners = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(receipt) => {
                winners += 1;
                assert_eq!(receipt.version, Version(2));
            }
            Err(StoreError::Conflict {
                stream: conflicted,
                expected,
                actual,
            }) => {
                assert_eq!(conflicted, stream);
                assert_eq!(expected, ExpectedVersion::NoStream);
                assert_eq!(actual, Version(2));
            }
            Err(other) => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(store.head().await.expect("head"), Position(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_stream_ids_and_headers_are_data_not_sql() {
    let (store, _) = fresh_store().await;
    let hostile = "show-'); DROP TABLE cqrs_events; --";
    let stream = StreamId::new(hostile).expect("valid: only control characters are refused");
    let mut written = event(1);
    written.event_type = "Type'; DELETE FROM cqrs_commands; --".into();
    written.metadata.headers = BTreeMap::from([
        (
            "q'uote".to_owned(),
            "\"; DROP TABLE cqrs_snapshots; --".to_owned(),
        ),
        ("back\\slash".to_owned(), "$1 $$ \\x00".to_owned()),
    ]);
    store
        .append(&stream, ExpectedVersion::NoStream, vec![written.clone()])
        .await
        .expect("append");
    let read = store
        .read_stream(&stream, Version(1), 10)
        .await
        .expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].stream.as_str(), hostile);
    assert_eq!(read[0].event_type, written.event_type);
    assert_eq!(read[0].metadata.headers, written.metadata.headers);
    // Control characters never make a stream id, so they cannot reach the server at all.
    assert!(StreamId::new("show-\0").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stored_command_id_that_breaks_the_rule_is_a_corrupt_row() {
    let (store, url) = fresh_store().await;
    let stream = StreamId::new("corrupt-command").expect("valid stream id");
    let command_id = CommandId::new("request-1").expect("valid command id");
    let events = (0..2)
        .map(|n| {
            let mut event = event(n);
            event.metadata.command_id = Some(command_id.clone());
            event
        })
        .collect();
    store
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .expect("append");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let too_long = "x".repeat(300);
    for stored in ["line\nbreak", "", too_long.as_str()] {
        client
            .execute(
                "UPDATE cqrs_events SET command_id = $1 WHERE stream = $2 AND version = 2",
                &[&stored, &stream.as_str()],
            )
            .await
            .expect("corrupt the command id");
        let corrupt = |result: Result<usize, StoreError>| match result {
            Err(StoreError::Backend(source)) => {
                let row = source
                    .downcast_ref::<cqrs_postgres::CorruptRow>()
                    .unwrap_or_else(|| panic!("expected a corrupt row, got {source}"));
                assert_eq!(row.stream, "corrupt-command");
                assert!(row.reason.contains("command id"), "{}", row.reason);
            }
            other => panic!("{stored:?} read back as {other:?}"),
        };
        corrupt(
            store
                .read_stream(&stream, Version(1), 10)
                .await
                .map(|events| events.len()),
        );
        corrupt(
            store
                .read_all(Position::START, 10)
                .await
                .map(|events| events.len()),
        );
        corrupt(
            store
                .visit_stream(&stream, Version(1), 10, &mut |_| Ok(()))
                .await,
        );
        // A reader that only decodes never reads the command id: the row does not stop it.
        let mut payloads = Vec::new();
        let visited = store
            .visit_stream_data(&stream, Version(1), 10, &mut |event| {
                payloads.push(event.payload.to_vec());
                Ok(())
            })
            .await
            .expect("the lean read ignores the metadata");
        assert_eq!(
            (visited, payloads),
            (2, vec![br#"{"n":0}"#.to_vec(), br#"{"n":1}"#.to_vec()])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_stored_payload_is_a_decode_error_not_a_panic() {
    let (store, url) = fresh_store().await;
    let shows = Repository::<Show, _>::new(store.clone());
    shows
        .execute("corrupt", ShowCommand::Schedule { capacity: 10 })
        .await
        .expect("schedule");
    shows
        .execute(
            "corrupt",
            ShowCommand::ReserveSeats {
                booking: BookingId(1),
                seats: 2,
            },
        )
        .await
        .expect("reserve");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE cqrs_events SET payload = $1 WHERE stream = $2 AND version = 2",
            &[
                &b"{\"booking\": \"not a number\"".as_slice(),
                &"show-corrupt",
            ],
        )
        .await
        .expect("corrupt the payload");

    let fresh = Repository::<Show, _>::new(store.clone());
    match fresh.load("corrupt").await {
        Err(LoadError::Store(StoreError::Decode {
            stream, version, ..
        })) => {
            assert_eq!(stream.as_str(), "show-corrupt");
            assert_eq!(version, Version(2));
        }
        other => panic!("expected a decode error, got {:?}", other.map(|_| ())),
    }
    let executed = fresh.execute("corrupt", reserve(2)).await;
    assert!(
        matches!(
            executed,
            Err(ExecuteError::Store(StoreError::Decode { .. }))
        ),
        "{executed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_killed_before_commit_is_a_backend_error_and_writes_nothing() {
    let (store, _) = fresh_store().await;
    let stream = StreamId::new("killed-1").expect("valid");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .expect("first append");
    store.set_sql_before_commit(Some(Arc::new(|_: &StreamId| {
        Some("SELECT pg_terminate_backend(pg_backend_pid())".to_owned())
    })));
    let error = store
        .append(
            &stream,
            ExpectedVersion::Exact(Version(1)),
            vec![event(2), event(3)],
        )
        .await
        .expect_err("the connection died before COMMIT");
    assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
    store.set_sql_before_commit(None);

    // Nothing of it was written; the store carries on with fresh connections.
    let read = store
        .read_stream(&stream, Version(1), 10)
        .await
        .expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(store.head().await.expect("head"), Position(1));
    let receipt = store
        .append(&stream, ExpectedVersion::Exact(Version(1)), vec![event(2)])
        .await
        .expect("append after the failure");
    assert_eq!(receipt.position, Some(Position(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_server_is_a_backend_error() {
    // A cluster of its own, stopped in the middle of the test.
    let cluster = tokio::task::spawn_blocking(TestCluster::start)
        .await
        .expect("task")
        .unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");
    let store = PostgresStore::new(&url).expect("store");
    store.migrate().await.expect("migrate");
    let stream = StreamId::new("stopped-1").expect("valid");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .expect("append");
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .expect("stop");
    for result in [
        store
            .append(&stream, ExpectedVersion::Exact(Version(1)), vec![event(2)])
            .await
            .map(|_| ()),
        store.read_all(Position::START, 10).await.map(|_| ()),
        store.head().await.map(|_| ()),
    ] {
        assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_the_server_refuses_fails_alone_in_its_batch() {
    let (store, _) = fresh_store().await;
    // The first append sleeps before its COMMIT; the three queued behind it go to the server in
    // one batch, where one of them carries a text the server refuses (a NUL character).
    store.set_sql_before_commit(Some(Arc::new(|stream: &StreamId| {
        (stream.as_str() == "slow").then(|| "SELECT pg_sleep(0.3)".to_owned())
    })));
    let slow = {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = StreamId::new("slow").expect("valid");
            store
                .append(&stream, ExpectedVersion::NoStream, vec![event(0)])
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let appends = ["good-1", "bad", "good-2"].map(|name| {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = StreamId::new(name).expect("valid");
            let mut written = event(1);
            if name == "bad" {
                written.event_type = "Bad\0Type".into();
            }
            store
                .append(&stream, ExpectedVersion::NoStream, vec![written, event(2)])
                .await
        })
    });
    slow.await.expect("task").expect("the slow append");
    let [good_1, bad, good_2] = appends;
    let good_1 = good_1.await.expect("task").expect("good-1");
    let good_2 = good_2.await.expect("task").expect("good-2");
    let bad = bad.await.expect("task");
    assert!(matches!(bad, Err(StoreError::Backend(_))), "{bad:?}");
    store.set_sql_before_commit(None);

    // The good ones are written whole and numbered densely after the slow one; nothing of the
    // refused one is.
    let mut positions = [good_1, good_2].map(|receipt| {
        assert_eq!(receipt.version, Version(2));
        (receipt.first_position, receipt.position)
    });
    positions.sort();
    assert_eq!(
        positions,
        [
            (Some(Position(2)), Some(Position(3))),
            (Some(Position(4)), Some(Position(5)))
        ]
    );
    let log = store.read_all(Position::START, 10).await.expect("read_all");
    assert_eq!(
        log.iter().map(|event| event.position).collect::<Vec<_>>(),
        (1..=5).map(Position).collect::<Vec<_>>()
    );
    assert!(log.iter().all(|event| event.stream.as_str() != "bad"));
    assert_eq!(store.head().await.expect("head"), Position(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_queued_behind_a_caller_that_gives_up_are_still_sent() {
    let (store, _) = fresh_store().await;
    // The first append finds nothing in flight and is sent by its caller's own task; it sleeps
    // before its COMMIT, and its caller stops waiting (the future is dropped) while two more
    // appends queue up behind it. Those must still be sent, and the store must go on working.
    store.set_sql_before_commit(Some(Arc::new(|stream: &StreamId| {
        (stream.as_str() == "impatient").then(|| "SELECT pg_sleep(0.3)".to_owned())
    })));
    let impatient = {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = StreamId::new("impatient").expect("valid");
            tokio::time::timeout(
                std::time::Duration::from_millis(150),
                store.append(&stream, ExpectedVersion::NoStream, vec![event(0)]),
            )
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let queued = ["queued-1", "queued-2"].map(|name| {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = StreamId::new(name).expect("valid");
            store
                .append(&stream, ExpectedVersion::NoStream, vec![event(1)])
                .await
        })
    });
    assert!(
        impatient.await.expect("task").is_err(),
        "the impatient caller gave up before its append was answered"
    );
    for append in queued {
        let receipt = tokio::time::timeout(std::time::Duration::from_secs(10), append)
            .await
            .expect("an append queued behind a caller that gave up is still sent")
            .expect("task")
            .expect("append");
        assert_eq!(receipt.version, Version(1));
    }
    store.set_sql_before_commit(None);
    let after = StreamId::new("after").expect("valid");
    store
        .append(&after, ExpectedVersion::NoStream, vec![event(2)])
        .await
        .expect("the store goes on appending");
    // Whatever became of the abandoned append, the log is dense.
    let log = store.read_all(Position::START, 10).await.expect("read_all");
    let positions: Vec<u64> = log.iter().map(|event| event.position.0).collect();
    assert_eq!(positions, (1..=log.len() as u64).collect::<Vec<_>>());
    assert!(log.len() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exhausted_pool_ends_in_a_typed_timeout_not_a_hang() {
    let (_, url) = fresh_store().await;
    let config: tokio_postgres::Config = url.parse().expect("url");
    let wait = std::time::Duration::from_millis(300);
    let store = PostgresStore::with_options(
        config,
        cqrs_postgres::PoolOptions {
            size: 2,
            wait_timeout: Some(wait),
            ..cqrs_postgres::PoolOptions::default()
        },
    )
    .expect("store");
    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .build();
    shows
        .execute("pool", ShowCommand::Schedule { capacity: 10 })
        .await
        .expect("schedule");
    // Every pooled connection held by someone else (a stuck caller, a long report).
    let held = [
        store.pool().get().await.expect("first"),
        store.pool().get().await.expect("second"),
    ];
    let started = std::time::Instant::now();
    let reserve = reserve(1);
    let executed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        shows.execute("pool", reserve.clone()),
    )
    .await
    .expect("execute must not hang");
    let loaded = tokio::time::timeout(std::time::Duration::from_secs(10), shows.load("pool"))
        .await
        .expect("load must not hang");
    println!(
        "with the pool exhausted, after {:?}: {executed:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            &executed,
            Err(ExecuteError::Store(StoreError::Timeout { waited, .. })) if *waited == wait
        ),
        "{executed:?}"
    );
    let message = executed.map(|_| ()).expect_err("timed out").to_string();
    assert!(message.contains("all 2 stayed busy"), "{message}");
    assert!(
        matches!(loaded, Err(LoadError::Store(StoreError::Timeout { .. }))),
        "{loaded:?}"
    );
    drop(held);
    // Nothing was written; with the connections back, the same command goes through.
    let outcome = shows.execute("pool", reserve).await.expect("reserve");
    assert_eq!(outcome.version, Version(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backend_errors_say_what_the_server_said() {
    let (store, url) = fresh_store().await;
    // A wrong password: the server's SQLSTATE and message, never the password.
    let wrong = PostgresStore::new(&format!("{url} password='not-the-password'")).expect("store");
    let error = wrong
        .append(
            &StreamId::new("auth-1").expect("valid"),
            ExpectedVersion::Any,
            vec![event(1)],
        )
        .await
        .expect_err("refused");
    let message = error.to_string();
    println!("wrong password: {message}");
    assert!(matches!(error, StoreError::Backend(_)), "{error:?}");
    assert!(message.contains("28P01"), "{message}");
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(!message.contains("not-the-password"), "{message}");
    let source = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<cqrs_postgres::DatabaseError>())
        .expect("the driver's error is in the chain");
    assert_eq!(source.code().map(|code| code.code()), Some("28P01"));

    // Data the server refuses (a NUL byte in a text column): its SQLSTATE and message.
    let mut bad = event(2);
    bad.event_type = "Bad\u{0}Type".into();
    let error = store
        .append(
            &StreamId::new("nul-1").expect("valid"),
            ExpectedVersion::Any,
            vec![bad],
        )
        .await
        .expect_err("refused");
    let message = error.to_string();
    println!("NUL byte: {message}");
    assert!(message.contains("22021"), "{message}");
    assert!(message.contains("invalid byte sequence"), "{message}");

    // No server at all: the driver's cause, down to the operating system's.
    let nowhere =
        PostgresStore::new("host=/nonexistent-cqrs-socket-dir user=app dbname=app").expect("store");
    let error = nowhere.head().await.expect_err("no server");
    let message = error.to_string();
    println!("no server: {message}");
    assert!(message.contains("error connecting to server"), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_with_a_deleted_row_does_not_load() {
    let (store, url) = fresh_store().await;
    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .build();
    shows
        .execute("holed", ShowCommand::Schedule { capacity: 10 })
        .await
        .expect("schedule");
    for booking in 1..=4 {
        shows
            .execute("holed", reserve(booking))
            .await
            .expect("reserve");
    }
    // Someone deletes version 3 by hand.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let deleted = client
        .execute(
            "DELETE FROM cqrs_events WHERE stream = 'show-holed' AND version = 3",
            &[],
        )
        .await
        .expect("delete");
    assert_eq!(deleted, 1);

    let loaded = shows.load("holed").await;
    println!("load of a stream with a hole: {loaded:?}");
    assert!(
        matches!(
            &loaded,
            Err(LoadError::Store(StoreError::MissingVersion { stream, missing, found }))
                if stream.as_str() == "show-holed" && *missing == Version(3) && *found == Version(4)
        ),
        "{loaded:?}"
    );
    let executed = shows.execute("holed", reserve(9)).await;
    assert!(
        matches!(
            executed,
            Err(ExecuteError::Store(StoreError::MissingVersion { .. }))
        ),
        "{executed:?}"
    );
    // Nothing was written on top of the hole.
    let stream = StreamId::new("show-holed").expect("valid");
    let versions: Vec<u64> = store
        .read_stream(&stream, Version(1), 100)
        .await
        .expect("read")
        .iter()
        .map(|event| event.version.0)
        .collect();
    assert_eq!(versions, vec![1, 2, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadlock_victim_or_serialization_failure_is_sent_again_not_returned() {
    let (store, _) = fresh_store().await;
    for (code, name) in [("40P01", "victim-1"), ("40001", "serialization-1")] {
        // The first two tries of the append are rolled back by the server with `code`, as a
        // deadlock victim or a serialization failure is.
        let failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = Arc::clone(&failures);
        store.set_sql_before_commit(Some(Arc::new(move |_: &StreamId| {
            (counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2).then(|| {
                format!("DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{code}'; END $$")
            })
        })));
        let stream = StreamId::new(name).expect("valid");
        let receipt = store
            .append(&stream, ExpectedVersion::NoStream, vec![event(1)])
            .await
            .unwrap_or_else(|error| panic!("{code} reached the caller: {error}"));
        store.set_sql_before_commit(None);
        assert_eq!(receipt.version, Version(1));
        assert!(failures.load(std::sync::atomic::Ordering::SeqCst) >= 3);
        let stored = store
            .read_stream(&stream, Version(1), 10)
            .await
            .expect("read");
        assert_eq!(stored.len(), 1, "{code}: written once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_the_previous_version_never_gets_an_answer_it_does_not_know() {
    let (store, url) = fresh_store().await;
    let stream = StreamId::new("rollout-1").expect("valid");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .expect("append");
    let turn = store
        .take_turn(&stream)
        .await
        .expect("take_turn")
        .expect("PostgreSQL has turns");
    // What a node still on the previous version sends after a unique violation: the function
    // of migration 3, by its old signature. It knows outcomes 0 to 3; a turn (outcome 4) is not
    // among them, so for it the function does not check turns.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let outcome: i16 = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.query_one(
            "SELECT outcome FROM cqrs_append_batch(ARRAY['rollout-1'], ARRAY[0]::smallint[], \
             ARRAY[0]::bigint[], ARRAY[NULL]::text[], ARRAY[1], ARRAY[gen_random_uuid()], \
             ARRAY['Counted'], ARRAY[1]::bigint[], ARRAY['\\x7b7d'::bytea], \
             ARRAY[NULL]::uuid[], ARRAY[NULL]::uuid[], ARRAY[NULL]::text[], ARRAY[now()], \
             ARRAY['{}'])",
            &[],
        ),
    )
    .await
    .expect("the old function does not wait for turns")
    .expect("old function")
    .get(0);
    assert_eq!(outcome, 0, "written, as the previous version expects");
    // The turn then meets the old node's write as a conflict, never as a lost update.
    let turned = turn
        .append(ExpectedVersion::Exact(Version(1)), vec![event(2)])
        .await;
    assert!(
        matches!(turned, Err(StoreError::Conflict { actual, .. }) if actual == Version(2)),
        "{turned:?}"
    );
}

/// A stream whose last events were committed unnumbered (their appender not yet through
/// `cqrs_settle`) reads to its end: the lean read numbers them as the full one does, and both
/// hand over the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lean_read_numbers_a_pending_tail_as_the_full_read_does() {
    let (store, url) = fresh_store().await;
    let stream = StreamId::new("pending-tail").expect("valid stream id");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .expect("append");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let insert_pending = |version: i64| {
        let client = &client;
        let stream = stream.as_str();
        async move {
            client
                .execute(
                    "INSERT INTO cqrs_events (stream, version, position, append_id, event_id, \
                     event_type, schema_version, payload, occurred_at, headers) \
                     VALUES ($1, $2::bigint, NULL, nextval('cqrs_append_ids'), gen_random_uuid(), \
                     'Late', 2, convert_to('{\"n\":' || $2::text || '}', 'UTF8'), now(), '{}')",
                    &[&stream, &version],
                )
                .await
                .expect("an unnumbered row")
        }
    };
    insert_pending(3).await;
    let mut lean = Vec::new();
    let visited = store
        .visit_stream_data(&stream, Version(2), 10, &mut |event| {
            lean.push((
                event.version.0,
                event.event_type.to_owned(),
                event.payload.to_vec(),
            ));
            Ok(())
        })
        .await
        .expect("visit_stream_data");
    assert_eq!(visited, 2);
    assert_eq!(
        lean,
        vec![
            (2, "Counted".to_owned(), br#"{"n":2}"#.to_vec()),
            (3, "Late".to_owned(), br#"{"n":3}"#.to_vec()),
        ]
    );
    assert_eq!(store.head().await.expect("head"), Position(3), "numbered");

    insert_pending(4).await;
    let mut full = Vec::new();
    store
        .visit_stream(&stream, Version(2), 10, &mut |event| {
            full.push((
                event.version.0,
                event.event_type.to_string(),
                event.payload.as_bytes().to_vec(),
            ));
            Ok(())
        })
        .await
        .expect("visit_stream");
    let mut again = Vec::new();
    store
        .visit_stream_data(&stream, Version(2), 10, &mut |event| {
            again.push((
                event.version.0,
                event.event_type.to_owned(),
                event.payload.to_vec(),
            ));
            Ok(())
        })
        .await
        .expect("visit_stream_data");
    assert_eq!(full.len(), 3);
    assert_eq!(again, full, "the lean read hands what the full one does");
}
