//! The kill -9 proof for projections on PostgreSQL: a runner in another OS process, applying a
//! long log in batches, is killed with SIGKILL in the middle (twice), then restarted; the read
//! model equals what the log says and what a rebuild from zero gives, and no event was applied
//! twice (every applied event inserts a row keyed by its position).
//!
//! The runner process is this test binary itself, started again with `CQRS_PROJECTION_KILL_URL`
//! set: then the `worker` test runs the projection until it is killed.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cqrs_core::event::Metadata;
use cqrs_core::processor::Processor as _;
use cqrs_core::projection::EventContext;
use cqrs_core::{EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use cqrs_examples::show::{BookingId, ShowEvent};
use cqrs_postgres::testing::TestCluster;
use cqrs_postgres::{
    PostgresProjection, PostgresProjectionRunner, PostgresProjector, PostgresStore, Transaction,
};

const SHOWS: u64 = 10;
const RESERVATIONS: u64 = 30_000;
const TIMEOUT: Duration = Duration::from_secs(40);

/// Seats reserved per show; one row per applied event, keyed by its position.
struct Seats;

#[async_trait::async_trait]
impl PostgresProjection for Seats {
    const NAME: &'static str = "seats";
    const AGGREGATES: &'static [&'static str] = &["show"];
    type Event = ShowEvent;
    type Error = tokio_postgres::Error;

    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        event: ShowEvent,
        context: &EventContext<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        let position = context.position.0 as i64;
        let log = transaction
            .prepare_cached("INSERT INTO applied (position) VALUES ($1)")
            .await?;
        transaction.execute(&log, &[&position]).await?;
        let seats: i64 = match event {
            ShowEvent::Scheduled { .. } => 0,
            ShowEvent::SeatsReserved { seats, .. } => seats.into(),
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
        Ok(())
    }

    async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        transaction.batch_execute("TRUNCATE seats, applied").await
    }
}

fn runner(store: PostgresStore) -> PostgresProjectionRunner<Seats> {
    PostgresProjector::new(Seats, store)
        .runner()
        .batch_size(1_000)
        .leader_poll(Duration::from_millis(50))
}

/// Runs only inside a child process started by the test below, until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker() {
    let Ok(url) = std::env::var("CQRS_PROJECTION_KILL_URL") else {
        return;
    };
    let store = PostgresStore::with_pool_size(&url, 2).expect("store");
    let projection = runner(store).spawn();
    let mut status = projection.status_updates();
    // Never returns on its own: the parent kills this process. A failure ends it, visibly: a
    // processor stopped at a failing event waits for a person, so that ends it too.
    let stopped = status
        .wait_for(|status| status.is_stopped() || status.is_failed())
        .await;
    panic!(
        "the runner stopped: {:?}",
        stopped.map(|status| status.clone())
    );
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

async fn count(store: &PostgresStore, sql: &str) -> i64 {
    let client = store.pool().get().await.expect("connection");
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

async fn checkpoint(store: &PostgresStore) -> u64 {
    count(
        store,
        "SELECT coalesce(max(position), 0) FROM cqrs_projections WHERE name = 'seats'",
    )
    .await as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_killed_mid_batch_resumes_to_the_model_a_rebuild_gives() {
    if std::env::var_os("CQRS_PROJECTION_KILL_URL").is_some() {
        return;
    }
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");
    let store = PostgresStore::with_pool_size(&url, 4).expect("store");
    store.migrate().await.expect("migrate");
    store
        .pool()
        .get()
        .await
        .expect("connection")
        .batch_execute(
            "CREATE TABLE seats (show text PRIMARY KEY, reserved bigint NOT NULL, \
                 events bigint NOT NULL);
             CREATE TABLE applied (position bigint PRIMARY KEY);",
        )
        .await
        .expect("read model tables");

    // The log, and the read model it implies.
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut head = Position::START;
    for show in 0..SHOWS {
        let stream = StreamId::for_aggregate("show", show).expect("stream");
        let mut events = vec![ShowEvent::Scheduled {
            capacity: 1_000_000,
        }];
        events.extend(
            (0..RESERVATIONS / SHOWS).map(|booking| ShowEvent::SeatsReserved {
                booking: BookingId(booking),
                seats: 1 + (booking % 4) as u32,
            }),
        );
        let reserved: i64 = events
            .iter()
            .map(|event| match event {
                ShowEvent::SeatsReserved { seats, .. } => i64::from(*seats),
                _ => 0,
            })
            .sum();
        expected.insert(show.to_string(), (reserved, events.len() as i64));
        let events = events
            .iter()
            .map(|event| NewEvent::encode(event, Metadata::default()))
            .collect::<Result<Vec<_>, _>>()
            .expect("encode");
        let receipt = store
            .append(&stream, ExpectedVersion::NoStream, events)
            .await
            .expect("append");
        head = head.max(receipt.position.expect("position"));
    }

    // Two runner processes, each killed with SIGKILL once it has made some progress.
    let exe = std::env::current_exe().expect("test binary");
    let mut killed_at = Vec::new();
    for round in 1..=2_u64 {
        let from = checkpoint(&store).await;
        let mut child = Command::new(&exe)
            .args(["--exact", "worker", "--nocapture", "--test-threads", "1"])
            .env("CQRS_PROJECTION_KILL_URL", &url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a runner process");
        let started = Instant::now();
        let target = from + 4_000;
        loop {
            if let Some(status) = child.try_wait().expect("child status") {
                panic!("the runner process ended on its own ({status}) in round {round}");
            }
            if checkpoint(&store).await >= target {
                break;
            }
            assert!(started.elapsed() < TIMEOUT, "no progress in round {round}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Kill while a batch transaction is open (it is almost all the time: per-event SQL, a
        // short commit), so that the kill lands between the projection's SQL and its commit.
        let open = loop {
            let open = count(
                &store,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND xact_start IS NOT NULL AND pid <> pg_backend_pid()",
            )
            .await;
            if open > 0 || started.elapsed() > TIMEOUT {
                break open;
            }
        };
        assert!(open > 0, "a batch was in flight when the runner was killed");
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaped");
        assert!(!status.success(), "killed, not exited");
        let at = checkpoint(&store).await;
        eprintln!("round {round}: killed at checkpoint {at} of {head} ({open} open transactions)");
        assert!(at < head.0, "killed before the end of the log");
        // What survived is exactly what the checkpoint says: the open batch left nothing.
        assert_eq!(
            count(&store, "SELECT count(*) FROM applied").await as u64,
            at
        );
        killed_at.push(at);
    }
    assert!(
        killed_at[1] > killed_at[0],
        "the second runner resumed: {killed_at:?}"
    );

    // Restarted here: it resumes from the checkpoint and finishes.
    let projection = runner(store.clone()).spawn();
    projection.wait_for(head, TIMEOUT).await.expect("caught up");
    assert_eq!(
        count(&store, "SELECT count(*) FROM applied").await as u64,
        head.0
    );
    let resumed = read_model(&store).await;
    assert_eq!(resumed, expected);

    // A rebuild from zero gives the same tables.
    projection.rebuild().await.expect("rebuild");
    projection.wait_for(head, TIMEOUT).await.expect("rebuilt");
    assert_eq!(read_model(&store).await, resumed);
    assert_eq!(
        count(&store, "SELECT count(*) FROM applied").await as u64,
        head.0
    );
    projection.shutdown().await;
}
