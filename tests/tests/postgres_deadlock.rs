//! No deadlock between appends: the cycle that four nodes on one database met, rebuilt step by
//! step, must end with the stale writer's unique violation and the other append written.
//!
//! The cycle (recorded from the server's report, PostgreSQL 15): a batch that fell back to
//! `cqrs_append_batch` took the sequencer lock and numbered the events other nodes had committed
//! unnumbered (an UPDATE of their rows, `b-1` here), then inserted its own `a-1`, and waited for
//! a node whose batch had inserted `a-1` first and was now inserting its stale `b-1`: a unique
//! check that has to wait for the UPDATE's transaction. Each waited for the other ("ShareLock on
//! transaction"). An inserting transaction no longer updates other appends' rows.

use std::time::Duration;

use cqrs_postgres::PostgresStore;
use cqrs_postgres::testing::TestCluster;
use tokio_postgres::error::SqlState;

/// A committed event, or one inserted in the caller's open transaction, without a position: what
/// a batch that did not hold the sequencer lock writes.
const INSERT_UNNUMBERED: &str = "INSERT INTO cqrs_events (stream, version, position, append_id, \
     event_id, event_type, schema_version, payload, occurred_at, headers) \
     VALUES ($1, 1, NULL, nextval('cqrs_append_ids'), gen_random_uuid(), 'Counted', 1, \
     '\\x7b7d', now(), '{}')";

/// One append of one event at version 1 of `a-1` through the function a store falls back to,
/// and through the one nodes of the previous version call (the same body, without turns).
const APPEND_ISOLATED: [&str; 2] = [
    "SELECT outcome FROM cqrs_append_batch_with_turns(ARRAY['a-1'], \
     ARRAY[3]::smallint[], ARRAY[0]::bigint[], ARRAY[NULL]::text[], ARRAY[1], \
     ARRAY[gen_random_uuid()], ARRAY['Counted'], ARRAY[1]::bigint[], ARRAY['\\x7b7d'::bytea], \
     ARRAY[NULL]::uuid[], ARRAY[NULL]::uuid[], ARRAY[NULL]::text[], ARRAY[now()], ARRAY['{}'], \
     true)",
    "SELECT outcome FROM cqrs_append_batch(ARRAY['a-1'], \
     ARRAY[3]::smallint[], ARRAY[0]::bigint[], ARRAY[NULL]::text[], ARRAY[1], \
     ARRAY[gen_random_uuid()], ARRAY['Counted'], ARRAY[1]::bigint[], ARRAY['\\x7b7d'::bytea], \
     ARRAY[NULL]::uuid[], ARRAY[NULL]::uuid[], ARRAY[NULL]::text[], ARRAY[now()], ARRAY['{}'])",
];

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connect: {error}"));
    tokio::spawn(connection);
    client
}

/// Waits until the backend `pid` waits for a lock.
async fn until_waiting(observer: &tokio_postgres::Client, pid: i32) {
    for _ in 0..200 {
        let row = observer
            .query_one(
                "SELECT coalesce(wait_event_type, '') FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .expect("pg_stat_activity");
        if row.get::<_, String>(0) == "Lock" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("backend {pid} never waited for a lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_that_numbers_pending_events_cannot_deadlock_with_a_stale_writer() {
    for statement in APPEND_ISOLATED {
        without_a_deadlock(statement).await;
    }
}

async fn without_a_deadlock(statement: &'static str) {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");
    let store = PostgresStore::new(&url).expect("store");
    store.migrate().await.expect("migrate");
    let observer = connect(&url).await;
    // Another node's append of `b-1`, committed, waiting for a number.
    observer
        .execute(INSERT_UNNUMBERED, &[&"b-1"])
        .await
        .expect("pending event");

    // A node's batch {a-1, b-1}: it has inserted `a-1` and will now insert its stale `b-1`.
    let stale = connect(&url).await;
    stale.batch_execute("BEGIN").await.expect("begin");
    stale
        .execute(INSERT_UNNUMBERED, &[&"a-1"])
        .await
        .expect("a-1");

    // The fallback of another batch appending `a-1`: it waits for the stale writer's `a-1`.
    let isolated = connect(&url).await;
    let isolated_pid: i32 = isolated
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let append = tokio::spawn(async move {
        let result = isolated.query_one(statement, &[]).await;
        result.map(|row| row.get::<_, i16>(0))
    });
    until_waiting(&observer, isolated_pid).await;

    let stale_result = stale.execute(INSERT_UNNUMBERED, &[&"b-1"]).await;
    let stale_code = stale_result
        .as_ref()
        .err()
        .and_then(|error| error.code())
        .cloned();
    println!("stale writer's b-1: {stale_result:?}");
    drop(stale_result);
    let _ = stale.batch_execute("ROLLBACK").await;
    let isolated_result = append.await.expect("task");
    println!("isolated append of a-1: {isolated_result:?}");
    let isolated_code = isolated_result
        .as_ref()
        .err()
        .and_then(|error| error.code())
        .cloned();
    assert_ne!(
        stale_code,
        Some(SqlState::T_R_DEADLOCK_DETECTED),
        "the stale writer met a deadlock"
    );
    assert_ne!(
        isolated_code,
        Some(SqlState::T_R_DEADLOCK_DETECTED),
        "the isolated append met a deadlock"
    );
    assert_eq!(
        stale_code,
        Some(SqlState::UNIQUE_VIOLATION),
        "the stale writer's b-1 exists"
    );
    assert_eq!(isolated_result.ok(), Some(0), "a-1 is written");
}
