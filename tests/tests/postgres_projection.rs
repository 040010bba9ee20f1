//! Projections on PostgreSQL: the read model's SQL and the checkpoint commit in one transaction,
//! failure policies roll a failing event back (stopping at it, or parking it as a dead letter), a
//! rebuild starts from zero, and of two nodes running the same projection only the leader applies;
//! when it dies, the other takes over from the checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cqrs_core::event::Metadata;
use cqrs_core::processor::{
    FailureKind, FailurePolicy, Processor as _, ProcessorHandle, ProcessorState,
    ProcessorStore as _,
};
use cqrs_core::projection::EventContext;
use cqrs_core::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use cqrs_examples::show::{BookingId, ShowEvent};
use cqrs_postgres::testing::TestCluster;
use cqrs_postgres::{
    LEADER_LOCK_CLASS, PostgresProjection, PostgresProjectionRunner, PostgresProjector,
    PostgresStore, Transaction,
};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Seats reserved per show, and one row per applied event naming the node that applied it (its
/// primary key makes a double apply fail loudly).
struct Seats {
    node: &'static str,
    applied: Arc<AtomicU64>,
    /// The booking whose reservation fails (after the projection already wrote something).
    fail_on: Option<u64>,
}

impl Seats {
    fn on(node: &'static str) -> Self {
        Seats {
            node,
            applied: Arc::new(AtomicU64::new(0)),
            fail_on: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SeatsError {
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
    #[error("booking {0} is refused")]
    Refused(u64),
}

#[async_trait::async_trait]
impl PostgresProjection for Seats {
    const NAME: &'static str = "seats";
    const AGGREGATES: &'static [&'static str] = &["show"];
    type Event = ShowEvent;
    type Error = SeatsError;

    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        event: ShowEvent,
        context: &EventContext<'_>,
    ) -> Result<(), SeatsError> {
        let position = context.position.0 as i64;
        let log = transaction
            .prepare_cached("INSERT INTO applied (position, node) VALUES ($1, $2)")
            .await?;
        transaction.execute(&log, &[&position, &self.node]).await?;
        let seats: i64 = match event {
            ShowEvent::Scheduled { .. } => 0,
            ShowEvent::SeatsReserved { booking, seats } => {
                if self.fail_on == Some(booking.0) {
                    return Err(SeatsError::Refused(booking.0));
                }
                seats.into()
            }
            ShowEvent::ReservationCancelled { seats, .. } => -i64::from(seats),
        };
        let upsert = transaction
            .prepare_cached(
                "INSERT INTO seats (show, reserved, events) VALUES ($1, $2, 1) \
                 ON CONFLICT (show) DO UPDATE \
                 SET reserved = seats.reserved + $2, events = seats.events + 1",
            )
            .await?;
        transaction
            .execute(&upsert, &[&context.aggregate_id(), &seats])
            .await?;
        self.applied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), SeatsError> {
        transaction.batch_execute("TRUNCATE seats, applied").await?;
        Ok(())
    }
}

async fn fresh_store() -> PostgresStore {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");
    node(&url.parse().expect("the cluster's url parses")).await
}

/// Another node: its own store, pool and connections, on the same database.
async fn node(config: &tokio_postgres::Config) -> PostgresStore {
    let store = PostgresStore::from_config(config.clone(), 4).expect("store");
    store.migrate().await.expect("migrate");
    store
        .pool()
        .get()
        .await
        .expect("connection")
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS seats (show text PRIMARY KEY, reserved bigint NOT NULL, \
                 events bigint NOT NULL);
             CREATE TABLE IF NOT EXISTS applied (position bigint PRIMARY KEY, node text NOT NULL);",
        )
        .await
        .expect("read model tables");
    store
}

/// Appends `reservations` one-seat reservations (booking numbers `first..`) spread over `shows`
/// shows, scheduling a show on first use; returns the last position.
async fn write(store: &PostgresStore, shows: u64, first: u64, reservations: u64) -> Position {
    let mut last = Position::START;
    for show in 0..shows {
        let stream = StreamId::for_aggregate("show", show).expect("stream");
        let mut events = Vec::new();
        if store
            .read_stream(&stream, cqrs_core::Version(1), 1)
            .await
            .expect("read")
            .is_empty()
        {
            events.push(ShowEvent::Scheduled {
                capacity: 1_000_000,
            });
        }
        for booking in (first..first + reservations).filter(|booking| booking % shows == show) {
            events.push(ShowEvent::SeatsReserved {
                booking: BookingId(booking),
                seats: 1 + (booking % 3) as u32,
            });
        }
        let events = events
            .iter()
            .map(|event| NewEvent::encode(event, Metadata::default()))
            .collect::<Result<Vec<_>, _>>()
            .expect("encode");
        let receipt = store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .expect("append");
        last = last.max(receipt.position.unwrap_or(Position::START));
    }
    last
}

/// The read model as it should be: computed from the log, skipping the bookings in `refused`.
async fn expected(store: &PostgresStore, refused: &[u64]) -> BTreeMap<String, (i64, i64)> {
    let mut seats = BTreeMap::new();
    for recorded in store
        .read_all(Position::START, usize::MAX)
        .await
        .expect("log")
    {
        let event: ShowEvent = recorded.decode().expect("decodes");
        let show = recorded.stream.as_str()["show-".len()..].to_owned();
        let change = match event {
            ShowEvent::Scheduled { .. } => 0,
            ShowEvent::SeatsReserved { booking, .. } if refused.contains(&booking.0) => continue,
            ShowEvent::SeatsReserved { seats, .. } => i64::from(seats),
            ShowEvent::ReservationCancelled { seats, .. } => -i64::from(seats),
        };
        let entry = seats.entry(show).or_insert((0, 0));
        entry.0 += change;
        entry.1 += 1;
    }
    seats
}

async fn read_model(store: &PostgresStore) -> BTreeMap<String, (i64, i64)> {
    let client = store.pool().get().await.expect("connection");
    client
        .query("SELECT show, reserved, events FROM seats", &[])
        .await
        .expect("read model")
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect()
}

async fn applied_by(store: &PostgresStore) -> BTreeMap<String, i64> {
    let client = store.pool().get().await.expect("connection");
    client
        .query("SELECT node, count(*) FROM applied GROUP BY node", &[])
        .await
        .expect("applied")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

async fn stored_checkpoint(store: &PostgresStore) -> Position {
    let client = store.pool().get().await.expect("connection");
    let position: i64 = client
        .query_one(
            "SELECT position FROM cqrs_projections WHERE name = 'seats'",
            &[],
        )
        .await
        .expect("checkpoint")
        .get(0);
    Position(position as u64)
}

/// A runner of `seats` on `store` that tries to lead every 50 ms.
fn runner(seats: Seats, store: &PostgresStore) -> PostgresProjectionRunner<Seats> {
    PostgresProjector::new(seats, store.clone())
        .runner()
        .leader_poll(Duration::from_millis(50))
}

async fn wait_until_leader(handle: &ProcessorHandle) {
    handle
        .wait_until(TIMEOUT, |status| status.leader)
        .await
        .expect("became the leader in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_model_and_checkpoint_commit_together_and_a_rebuild_gives_the_same_model() {
    let store = fresh_store().await;
    let head = write(&store, 7, 0, 2_000).await;
    let seats = Seats::on("a");
    let applied = Arc::clone(&seats.applied);
    let projection = runner(seats, &store).batch_size(300).spawn();
    projection.wait_for(head, TIMEOUT).await.expect("caught up");
    assert_eq!(stored_checkpoint(&store).await, head);
    let model = read_model(&store).await;
    assert_eq!(model, expected(&store, &[]).await);
    assert_eq!(applied.load(Ordering::Relaxed), head.0);

    // Live: new events are applied as they come.
    let head = write(&store, 7, 2_000, 100).await;
    projection.wait_for(head, TIMEOUT).await.expect("live");
    assert_eq!(read_model(&store).await, expected(&store, &[]).await);

    // Rebuild: emptied and moved to zero together, then replayed to the same model.
    projection.rebuild().await.expect("rebuild");
    projection.wait_for(head, TIMEOUT).await.expect("rebuilt");
    assert_eq!(read_model(&store).await, expected(&store, &[]).await);
    assert_eq!(applied.load(Ordering::Relaxed), 2 * head.0);
    let status = projection.shutdown().await;
    assert_eq!(status.state, ProcessorState::Stopped);
    assert_eq!(status.checkpoint, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_event_is_rolled_back_and_stops_or_is_skipped() {
    let store = fresh_store().await;
    let head = write(&store, 3, 0, 600).await;
    let refused = 250;
    let refused_position = store
        .read_all(Position::START, usize::MAX)
        .await
        .expect("log")
        .into_iter()
        .find(|recorded| {
            matches!(
                recorded.decode::<ShowEvent>(),
                Ok(ShowEvent::SeatsReserved { booking, .. }) if booking.0 == refused
            )
        })
        .expect("the refused booking is in the log")
        .position;

    // Stop: everything before the failing event is committed, nothing of it or after it.
    let refusing = || Seats {
        fail_on: Some(refused),
        ..Seats::on("a")
    };
    let projection = runner(refusing(), &store)
        .batch_size(200)
        .failure_policy(FailurePolicy::Stop)
        .spawn();
    let stopped = projection.wait_for(head, TIMEOUT).await;
    assert!(stopped.is_err(), "stopped before the head");
    let status = projection.status().await;
    assert_eq!(status.state, ProcessorState::Failed);
    assert_eq!(status.checkpoint.0, refused_position.0 - 1);
    let failure = status.last_error.expect("the failure is visible");
    assert_eq!(failure.kind, FailureKind::Handler);
    assert_eq!(
        failure.event.map(|event| event.position),
        Some(refused_position)
    );
    assert_eq!(stored_checkpoint(&store).await.0, refused_position.0 - 1);
    let applied: i64 = store
        .pool()
        .get()
        .await
        .expect("connection")
        .query_one("SELECT count(*) FROM applied", &[])
        .await
        .expect("count")
        .get(0);
    // The failing event's first INSERT was rolled back with it.
    assert_eq!(applied as u64, refused_position.0 - 1);
    // Stopped, it waits for a person rather than ending: resuming tries the event again, which
    // fails again at the same place.
    projection.resume().await.expect("resume");
    let failed_again = projection
        .wait_until(TIMEOUT, |status| status.is_failed())
        .await
        .expect("failed again");
    assert_eq!(failed_again.checkpoint.0, refused_position.0 - 1);
    assert_eq!(stored_checkpoint(&store).await.0, refused_position.0 - 1);
    drop(projection);

    // Skip: a new runner resumes at the failing event, skips it (its writes rolled back) and
    // applies the rest.
    let projection = runner(refusing(), &store)
        .batch_size(200)
        .failure_policy(FailurePolicy::Skip)
        .spawn();
    projection.wait_for(head, TIMEOUT).await.expect("caught up");
    let status = projection.shutdown().await;
    assert_eq!(status.dead_letters, 1);
    // The skipped event is parked as a dead letter, stored with the checkpoint that passed it.
    let letters = store.dead_letters(Seats::NAME).await.expect("dead letters");
    assert_eq!(
        letters
            .iter()
            .map(|letter| (letter.position(), letter.failure.kind))
            .collect::<Vec<_>>(),
        [(Some(refused_position), FailureKind::Handler)]
    );
    assert_eq!(read_model(&store).await, expected(&store, &[refused]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_nodes_only_the_leader_applies_and_the_other_takes_over_when_it_dies() {
    let first = fresh_store().await;
    let second = node(first.config()).await;
    write(&first, 5, 0, 500).await;

    let a = runner(Seats::on("a"), &first).batch_size(100).spawn();
    wait_until_leader(&a).await;
    let b_seats = Seats::on("b");
    let b_applied = Arc::clone(&b_seats.applied);
    let b = runner(b_seats, &second).batch_size(100).spawn();
    let head = write(&first, 5, 500, 500).await;
    a.wait_for(head, TIMEOUT).await.expect("a caught up");
    // The standby follows the stored checkpoint, so reading your writes works on it too.
    b.wait_for(head, TIMEOUT)
        .await
        .expect("b sees the checkpoint");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.is_leader());
    assert!(!b.is_leader(), "only one leader");
    assert_eq!(
        b_applied.load(Ordering::Relaxed),
        0,
        "the standby applied nothing"
    );

    // The leader dies (its task and connections go away, as when its process ends).
    a.abort().await;
    let head = write(&first, 5, 1_000, 700).await;
    wait_until_leader(&b).await;
    b.wait_for(head, TIMEOUT).await.expect("b took over");
    assert!(b_applied.load(Ordering::Relaxed) >= 700);
    let by_node = applied_by(&second).await;
    assert_eq!(by_node.values().sum::<i64>() as u64, head.0, "{by_node:?}");
    assert!(by_node.get("b").copied().unwrap_or(0) > 0);
    assert_eq!(read_model(&second).await, expected(&second, &[]).await);

    // And the model equals a rebuild from zero.
    let before = read_model(&second).await;
    b.rebuild().await.expect("rebuild");
    b.wait_for(head, TIMEOUT).await.expect("rebuilt");
    assert_eq!(read_model(&second).await, before);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_lock_connection_is_terminated_stands_down_and_the_projection_goes_on() {
    let first = fresh_store().await;
    let second = node(first.config()).await;
    let head = write(&first, 5, 0, 500).await;

    let a = runner(Seats::on("a"), &first).batch_size(100).spawn();
    wait_until_leader(&a).await;
    let b = runner(Seats::on("b"), &second).batch_size(100).spawn();
    a.wait_for(head, TIMEOUT).await.expect("a caught up");
    assert!(!b.is_leader());

    // The server ends the session that holds the leader lock.
    let terminated: i64 = first
        .pool()
        .get()
        .await
        .expect("connection")
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
             WHERE locktype = 'advisory' AND classid = $1::int4::oid AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&LEADER_LOCK_CLASS],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(terminated, 1, "exactly one session held the lock");
    a.wait_until(TIMEOUT, |status| !status.leader)
        .await
        .expect("a noticed it lost the lock");

    // Someone leads again (whichever node got there first) and goes on from the checkpoint.
    let head = write(&first, 5, 500, 700).await;
    tokio::time::timeout(TIMEOUT, async {
        while !(a.is_leader() || b.is_leader()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a new leader");
    assert!(!(a.is_leader() && b.is_leader()), "never two leaders");
    let leader = if a.is_leader() { &a } else { &b };
    leader.wait_for(head, TIMEOUT).await.expect("caught up");
    let by_node = applied_by(&first).await;
    assert_eq!(by_node.values().sum::<i64>() as u64, head.0, "{by_node:?}");
    assert_eq!(read_model(&first).await, expected(&first, &[]).await);
    a.shutdown().await;
    b.shutdown().await;
}
