//! `ProcessorStore::lead` on PostgreSQL: one lease per processor name across nodes (sagas and
//! projections alike), released when dropped, and lost when its connection is killed; the core
//! runner stands by and takes over through it.

use std::time::Duration;

use cqrs_core::prelude::*;
use cqrs_core::processor::{Lease, Processor as _, ProcessorStore};
use cqrs_core::projection::EventContext;
use cqrs_core::{EventStore, ExpectedVersion, Metadata, NewEvent, Position};
use cqrs_postgres::testing::TestCluster;
use cqrs_postgres::{
    LEADER_LOCK_CLASS, PostgresProjection, PostgresProjector, PostgresSagaStore, PostgresStore,
    Transaction,
};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A database, and a store (a node) on it.
async fn fresh_database() -> (String, PostgresStore) {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");
    let store = node(&url).await;
    (url, store)
}

/// Another node: its own pool and connections on the same database.
async fn node(url: &str) -> PostgresStore {
    let store = PostgresStore::with_pool_size(url, 4).expect("store");
    store.migrate().await.expect("migrate");
    store
}

async fn lead(store: &PostgresStore, name: &str) -> Option<Lease> {
    store.lead(name).await.expect("lead")
}

/// Waits until `store` gets the lease of `name`.
async fn lead_eventually(store: &PostgresStore, name: &str) -> Lease {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(lease) = lead(store, name).await {
                return lease;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the lock was released")
}

/// Ends the sessions holding the leader lock of `name`; returns how many there were.
async fn kill_lock_holder(store: &PostgresStore, name: &str) -> i64 {
    store
        .pool()
        .get()
        .await
        .expect("connection")
        .query_one(
            "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l \
             JOIN cqrs_projections p ON l.objid = p.lock_id::oid \
             WHERE p.name = $2 AND l.locktype = 'advisory' AND l.classid = $1::int4::oid \
             AND l.objsubid = 2 AND l.granted \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&LEADER_LOCK_CLASS, &name],
        )
        .await
        .expect("terminate")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lease_per_name_until_it_is_dropped() {
    let (url, first) = fresh_database().await;
    let second = node(&url).await;

    let held = lead(&first, "lease_a").await.expect("the first lease");
    assert!(lead(&second, "lease_a").await.is_none(), "another node");
    assert!(
        lead(&first, "lease_a").await.is_none(),
        "the same node, another attempt"
    );
    assert!(
        lead(&second, "lease_a").await.is_none(),
        "a standby tries again"
    );
    // Sagas share the namespace and the lock.
    let sagas = PostgresSagaStore::new(second.clone());
    assert!(sagas.lead("lease_a").await.expect("lead").is_none());
    // Another name has a lock of its own.
    let other = lead(&second, "lease_b").await.expect("another name");

    drop(held);
    let taken = lead_eventually(&second, "lease_a").await;
    assert!(lead(&first, "lease_a").await.is_none());
    drop((taken, other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_lost_when_its_connection_is_killed() {
    let (url, first) = fresh_database().await;
    let second = node(&url).await;
    let mut lease = lead(&first, "lease_c").await.expect("the lease");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), lease.lost())
            .await
            .is_err(),
        "not lost while held"
    );

    assert_eq!(kill_lock_holder(&second, "lease_c").await, 1);
    tokio::time::timeout(TIMEOUT, lease.lost())
        .await
        .expect("lost() resolves once the connection is gone");
    // Lost for good: it resolves again at once.
    tokio::time::timeout(Duration::from_secs(1), lease.lost())
        .await
        .expect("still lost");
    let _taken = lead_eventually(&second, "lease_c").await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum CounterEvent {
    Counted,
}

/// Counts events in `counted`, naming the node that applied each.
struct Counter {
    node: &'static str,
}

#[async_trait::async_trait]
impl PostgresProjection for Counter {
    const NAME: &'static str = "counter";
    const AGGREGATES: &'static [&'static str] = &["counter"];
    type Event = CounterEvent;
    type Error = tokio_postgres::Error;

    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        _event: CounterEvent,
        context: &EventContext<'_>,
    ) -> Result<(), Self::Error> {
        let position = context.position.0 as i64;
        transaction
            .execute(
                "INSERT INTO counted (position, node) VALUES ($1, $2)",
                &[&position, &self.node],
            )
            .await?;
        Ok(())
    }

    async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), Self::Error> {
        transaction.batch_execute("TRUNCATE counted").await
    }
}

async fn count(store: &PostgresStore, events: usize) -> Position {
    let stream = StreamId::new("counter-1").expect("stream id");
    let events = (0..events)
        .map(|_| NewEvent::encode(&CounterEvent::Counted, Metadata::default()))
        .collect::<Result<Vec<_>, _>>()
        .expect("encode");
    store
        .append(&stream, ExpectedVersion::Any, events)
        .await
        .expect("append")
        .position
        .expect("position")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_runner_stands_by_and_takes_over() {
    let (url, first) = fresh_database().await;
    let second = node(&url).await;
    first
        .pool()
        .get()
        .await
        .expect("connection")
        .batch_execute("CREATE TABLE counted (position bigint PRIMARY KEY, node text NOT NULL)")
        .await
        .expect("table");
    let head = count(&first, 10).await;

    let a = PostgresProjector::new(Counter { node: "a" }, first.clone())
        .runner()
        .leader_poll(Duration::from_millis(50))
        .spawn();
    a.wait_for(head, TIMEOUT).await.expect("a caught up");
    assert!(a.is_leader());
    let b = PostgresProjector::new(Counter { node: "b" }, second.clone())
        .runner()
        .leader_poll(Duration::from_millis(50))
        .spawn();
    // The standby follows the stored checkpoint.
    b.wait_for(head, TIMEOUT).await.expect("b follows");
    assert!(!b.is_leader());

    // The leader's lock connection dies: it stands by, and one of them leads again.
    assert_eq!(kill_lock_holder(&first, Counter::NAME).await, 1);
    let head = count(&first, 5).await;
    tokio::time::timeout(TIMEOUT, async {
        while !(a.is_leader() || b.is_leader()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a new leader");
    a.wait_for(head, TIMEOUT).await.expect("caught up");

    // The leader goes away: the other takes over from the checkpoint.
    let (leader, standby) = if a.is_leader() { (a, b) } else { (b, a) };
    leader.abort().await;
    let head = count(&second, 5).await;
    standby.wait_for(head, TIMEOUT).await.expect("took over");
    assert!(standby.is_leader());
    let client = second.pool().get().await.expect("connection");
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT position) FROM counted",
            &[],
        )
        .await
        .expect("count");
    let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (rows, distinct),
        (head.0 as i64, head.0 as i64),
        "each event once"
    );
    standby.shutdown().await;
}
