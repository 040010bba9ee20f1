//! The ordering proof for [`PostgresStore`]: writers whose transactions commit in a scrambled
//! order (some sleep before COMMIT) while a reader follows the global log; the reader sees every
//! event exactly once, none skipped, in one consistent order.
//!
//! A store that numbers events with a `bigserial` drawn at insert time fails this test: the
//! reader moves past the number of a transaction that is still sleeping, and never sees its
//! events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cqrs_core::{
    EventId, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent, StreamId,
    Version,
};
use cqrs_postgres::PostgresStore;
use cqrs_postgres::testing::TestCluster;
use tokio::task::JoinSet;

const WRITERS: u64 = 8;
const APPENDS: u64 = 40;

async fn fresh_store(pool_size: usize) -> PostgresStore {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster
        .create_database()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let store =
        PostgresStore::with_pool_size(&url, pool_size).unwrap_or_else(|error| panic!("{error}"));
    store.migrate().await.expect("migrate");
    store
}

fn event(writer: u64, append: u64, part: u64, of: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: "Ordered".into(),
        schema_version: 1,
        payload: format!(r#"{{"writer":{writer},"append":{append},"part":{part}}}"#)
            .as_str()
            .into(),
        metadata: Metadata {
            headers: BTreeMap::from([
                ("part".to_owned(), part.to_string()),
                ("of".to_owned(), of.to_string()),
            ]),
            ..Metadata::default()
        },
    }
}

fn header(event: &RecordedEvent, name: &str) -> u64 {
    event.metadata.headers[name]
        .parse()
        .expect("numeric header")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_never_skips_an_event_that_commits_late() {
    // One store: its appends queue up and go to the server in batches, one at a time.
    let store = fresh_store(WRITERS as usize + 4).await;
    scrambled_writers_and_a_reader(store.clone(), vec![store; WRITERS as usize]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_never_skips_an_event_that_commits_late_across_nodes() {
    // Two stores on one database, as two nodes would be, four writers each: their batches race
    // for the sequencer lock, and those that miss it commit unnumbered, in scrambled order.
    let reader = fresh_store(4).await;
    let url = reader.config().clone();
    let nodes: Vec<PostgresStore> = (0..2)
        .map(|_| PostgresStore::from_config(url.clone(), 4).expect("store"))
        .collect();
    let writers = (0..WRITERS as usize)
        .map(|writer| nodes[writer % nodes.len()].clone())
        .collect();
    scrambled_writers_and_a_reader(reader, writers).await;
}

/// Writer `n` appends through `writers[n]`; the reader follows the log through `store`.
async fn scrambled_writers_and_a_reader(store: PostgresStore, writers: Vec<PostgresStore>) {
    // About one append in three sleeps 5 to 60 ms between its insert and its COMMIT, so later
    // appends commit first all the time.
    let delayed = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    for writer in &writers {
        let delayed = Arc::clone(&delayed);
        let counter = Arc::clone(&counter);
        writer.set_sql_before_commit(Some(Arc::new(move |_stream: &StreamId| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let scrambled = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            (scrambled % 3 == 0).then(|| {
                delayed.fetch_add(1, Ordering::Relaxed);
                format!(
                    "SELECT pg_sleep({})",
                    0.005 + (scrambled % 12) as f64 * 0.005
                )
            })
        })));
    }

    let done = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let finished = Arc::clone(&finished);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = Position::START;
            loop {
                let batch = store.read_all(after, 5).await.expect("read_all");
                if batch.is_empty() {
                    if finished.load(Ordering::SeqCst) {
                        // Writers are done: one last read decides.
                        if store.read_all(after, 5).await.expect("read_all").is_empty() {
                            return seen;
                        }
                        continue;
                    }
                    tokio::select! {
                        head = store.wait_for_events(after) => {
                            assert!(head.expect("wait_for_events") > after);
                        }
                        () = done.notified() => {}
                    }
                    continue;
                }
                for event in batch {
                    assert!(event.position > after, "positions increase in read order");
                    after = event.position;
                    seen.push(event);
                }
            }
        })
    };

    let mut tasks = JoinSet::new();
    for (writer, store) in (0..WRITERS).zip(writers) {
        tasks.spawn(async move {
            let own = StreamId::new(format!("ordered-{writer}")).expect("valid");
            // Every writer also appends to one shared stream now and then.
            let shared = StreamId::new("ordered-shared").expect("valid");
            let mut written = Vec::new();
            // The writer's own stream at an exact version (a one-event append then goes as the
            // store's plain insert), the shared one at any version.
            let mut own_version = Version(0);
            for append in 0..APPENDS {
                let of = (writer + append) % 3 + 1;
                let batch: Vec<NewEvent> = (1..=of)
                    .map(|part| event(writer, append, part, of))
                    .collect();
                written.extend(batch.iter().map(|event| event.event_id));
                if append % 5 == 0 {
                    store
                        .append(&shared, ExpectedVersion::Any, batch)
                        .await
                        .expect("append");
                } else {
                    let receipt = store
                        .append(&own, ExpectedVersion::Exact(own_version), batch)
                        .await
                        .expect("append");
                    own_version = receipt.version;
                }
            }
            written
        });
    }
    let mut written = HashSet::new();
    while let Some(result) = tasks.join_next().await {
        written.extend(result.expect("writer"));
    }
    finished.store(true, Ordering::SeqCst);
    done.notify_one();
    let seen = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the reader finished")
        .expect("reader");

    assert!(
        delayed.load(Ordering::Relaxed) > 20,
        "commits were not scrambled"
    );
    let seen_ids: Vec<EventId> = seen.iter().map(|event| event.event_id).collect();
    let unique: HashSet<EventId> = seen_ids.iter().copied().collect();
    assert_eq!(unique.len(), seen_ids.len(), "an event was seen twice");
    let missed = written.difference(&unique).count();
    assert_eq!(
        missed, 0,
        "the reader skipped {missed} late-committed events"
    );
    assert_eq!(unique, written, "the reader saw exactly the written events");

    // One consistent order: dense positions, every append contiguous, every stream in version
    // order, and a second reader from the start sees the very same log.
    let positions: Vec<u64> = seen.iter().map(|event| event.position.0).collect();
    assert_eq!(positions, (1..=seen.len() as u64).collect::<Vec<_>>());
    let mut last_version: HashMap<&StreamId, Version> = HashMap::new();
    for (index, event) in seen.iter().enumerate() {
        let previous = last_version.insert(&event.stream, event.version);
        assert_eq!(
            previous.unwrap_or(Version(0)).next(),
            event.version,
            "`{}` is in version order in the log",
            event.stream
        );
        let part = header(event, "part");
        if part > 1 {
            assert_eq!(
                header(&seen[index - 1], "part") + 1,
                part,
                "an append was split"
            );
        }
    }
    let again = store
        .read_all(Position::START, usize::MAX)
        .await
        .expect("read_all");
    assert_eq!(again, seen, "a second reader sees the same log");
    assert_eq!(
        store.head().await.expect("head"),
        Position(seen.len() as u64)
    );
}

/// A batch's statement reads the head with the snapshot it started with, before it takes the
/// sequencer lock. Here that snapshot is held back on purpose (a repeatable-read transaction took
/// it before another append numbered its event): the statement gets the lock, reads a head that
/// is behind, and must fail on the position index with nothing written instead of handing out a
/// number twice. The store answers such a failure by sending the batch again through
/// `cqrs_append_batch`, which reads the head after the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_whose_snapshot_was_overtaken_writes_nothing() {
    use cqrs_postgres::testing::{APPEND_ONE_SQL, APPEND_SQL};
    use tokio_postgres::IsolationLevel;
    use tokio_postgres::error::SqlState;
    use tokio_postgres::types::ToSql;

    let store = fresh_store(4).await;
    let first = StreamId::new("overtaken-first").expect("valid");
    store
        .append(&first, ExpectedVersion::NoStream, vec![event(0, 0, 1, 1)])
        .await
        .expect("append");

    let stream = "overtaken-stale";
    let (id, kind, version, count) = (EventId::new().0, 1_i16, 0_i64, 1_i32);
    let (event_type, schema, payload) = ("Ordered", 1_i64, &b"{}"[..]);
    let (none_id, none_text, at, headers) = (
        None::<uuid::Uuid>,
        None::<&str>,
        std::time::SystemTime::now(),
        "{}",
    );
    let one: Vec<&(dyn ToSql + Sync)> = vec![
        &stream,
        &version,
        &id,
        &event_type,
        &schema,
        &payload,
        &none_id,
        &none_id,
        &none_text,
        &at,
        &headers,
    ];
    let (streams, kinds, versions, command_ids, counts) = (
        vec![stream],
        vec![kind],
        vec![version],
        vec![none_text],
        vec![count],
    );
    let (ids, types, schemas, payloads) = (vec![id], vec![event_type], vec![schema], vec![payload]);
    let (none_ids, none_texts, ats, all_headers) =
        (vec![none_id], vec![none_text], vec![at], vec![headers]);
    let batch: Vec<&(dyn ToSql + Sync)> = vec![
        &streams,
        &kinds,
        &versions,
        &command_ids,
        &counts,
        &ids,
        &types,
        &schemas,
        &payloads,
        &none_ids,
        &none_ids,
        &none_texts,
        &ats,
        &all_headers,
    ];

    for (round, (name, sql, params)) in [
        ("append_one.sql", APPEND_ONE_SQL, one),
        ("append.sql", APPEND_SQL, batch),
    ]
    .into_iter()
    .enumerate()
    {
        let mut stale = store.pool().get().await.expect("connection");
        let transaction = stale
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .start()
            .await
            .expect("begin");
        // The snapshot is taken here, at the transaction's first statement.
        transaction
            .query("SELECT count(*) FROM cqrs_events", &[])
            .await
            .expect("snapshot");
        let other = StreamId::new(format!("overtaken-other-{round}")).expect("valid");
        let receipt = store
            .append(&other, ExpectedVersion::NoStream, vec![event(1, 0, 1, 1)])
            .await
            .expect("append");
        assert_eq!(receipt.position, Some(Position(round as u64 + 2)));

        let error = transaction.query(sql, &params).await.expect_err(&format!(
            "{name} must not write under an overtaken snapshot"
        ));
        assert_eq!(
            error.code(),
            Some(&SqlState::UNIQUE_VIOLATION),
            "{name}: {error}"
        );
        let constraint = error.as_db_error().and_then(|error| error.constraint());
        assert_eq!(constraint, Some("cqrs_events_position"), "{name}");
    }

    // Nothing of the stale appends was written, and the log is dense.
    let log = store.read_all(Position::START, 10).await.expect("read_all");
    let streams: Vec<&str> = log.iter().map(|event| event.stream.as_str()).collect();
    assert_eq!(
        streams,
        ["overtaken-first", "overtaken-other-0", "overtaken-other-1"]
    );
    let positions: Vec<u64> = log.iter().map(|event| event.position.0).collect();
    assert_eq!(positions, [1, 2, 3]);
    let stale = StreamId::new(stream).expect("valid");
    let receipt = store
        .append(&stale, ExpectedVersion::NoStream, vec![event(2, 0, 1, 1)])
        .await
        .expect("the stream is still free");
    assert_eq!(receipt.position, Some(Position(4)));
}
