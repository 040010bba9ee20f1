//! The multi-node proof: two OS processes, each with its own [`PostgresStore`] and
//! [`Repository`], reserve seats on the same shows in one database. No show is oversold, every
//! acknowledged reservation is stored, and every stream's versions are contiguous.
//!
//! The second process is this test binary itself, started again with `CQRS_MULTINODE_URL` set:
//! then the `worker` test runs the commands and prints one `ACK show booking seats` line per
//! acknowledged reservation.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};

use cqrs_core::{EventStore, ExecuteError, Repository, RetryPolicy, StreamId, Version};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowError, ShowEvent};
use cqrs_postgres::PostgresStore;
use cqrs_postgres::testing::TestCluster;

const SHOWS: u64 = 3;
const CAPACITY: u32 = 150;
const COMMANDS_PER_NODE: u64 = 240;
const TASKS_PER_NODE: u64 = 4;

/// Runs only inside a child process started by the test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker() {
    let (Ok(url), Ok(node)) = (
        std::env::var("CQRS_MULTINODE_URL"),
        std::env::var("CQRS_MULTINODE_NODE"),
    ) else {
        return;
    };
    let node: u64 = node.parse().expect("node number");
    let store = PostgresStore::new(&url).expect("store");
    let shows = Repository::<Show, _>::builder(store)
        .retry(RetryPolicy {
            max_attempts: 1_000,
            ..RetryPolicy::default()
        })
        .build();
    let mut tasks = Vec::new();
    for task in 0..TASKS_PER_NODE {
        let shows = shows.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in (task..COMMANDS_PER_NODE).step_by(TASKS_PER_NODE as usize) {
                let show = n % SHOWS;
                let booking = BookingId(node * 1_000_000 + n);
                let seats = (n % 2 + 1) as u32;
                match shows
                    .execute(show, ShowCommand::ReserveSeats { booking, seats })
                    .await
                {
                    Ok(_) => acknowledged.push((show, booking.0, seats)),
                    Err(ExecuteError::Domain(ShowError::SoldOut { .. })) => {}
                    Err(other) => panic!("node {node}: reserve failed: {other}"),
                }
            }
            acknowledged
        }));
    }
    for task in tasks {
        for (show, booking, seats) in task.await.expect("task") {
            println!("ACK {show} {booking} {seats}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_never_oversell_and_lose_no_acknowledged_reservation() {
    if std::env::var_os("CQRS_MULTINODE_URL").is_some() {
        return;
    }
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");
    let store = PostgresStore::new(&url).expect("store");
    store.migrate().await.expect("migrate");
    let shows = Repository::<Show, _>::new(store.clone());
    for show in 0..SHOWS {
        shows
            .execute(show, ShowCommand::Schedule { capacity: CAPACITY })
            .await
            .expect("schedule");
    }

    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (1..=2)
        .map(|node| {
            Command::new(&exe)
                .args(["--exact", "worker", "--nocapture", "--test-threads", "1"])
                .env("CQRS_MULTINODE_URL", &url)
                .env("CQRS_MULTINODE_NODE", node.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a node")
        })
        .collect();
    let mut acknowledged: HashMap<u64, HashMap<u64, u32>> = HashMap::new();
    for child in children {
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("task")
            .expect("node output");
        assert!(
            output.status.success(),
            "a node failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // The first line may follow the harness's `test worker ... ` on the same line.
            let Some(start) = line.find("ACK ") else {
                continue;
            };
            let rest = &line[start + 4..];
            let fields: Vec<u64> = rest
                .split_whitespace()
                .take(3)
                .map(|field| field.parse().expect("number"))
                .collect();
            let previous = acknowledged
                .entry(fields[0])
                .or_default()
                .insert(fields[1], fields[2] as u32);
            assert!(
                previous.is_none(),
                "booking {} acknowledged twice",
                fields[1]
            );
        }
    }

    let mut nodes_seen = HashSet::new();
    for show in 0..SHOWS {
        let stream = StreamId::for_aggregate("show", show).expect("valid");
        let events = store
            .read_stream(&stream, Version(1), usize::MAX)
            .await
            .expect("read");
        let versions: Vec<u64> = events.iter().map(|event| event.version.0).collect();
        assert_eq!(
            versions,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "versions of `{stream}` are contiguous"
        );
        let mut stored: HashMap<u64, u32> = HashMap::new();
        for event in &events {
            if let ShowEvent::SeatsReserved { booking, seats } =
                event.decode::<ShowEvent>().expect("decodes")
            {
                assert!(stored.insert(booking.0, seats).is_none(), "stored twice");
                nodes_seen.insert(booking.0 / 1_000_000);
            }
        }
        let acked = acknowledged.remove(&show).unwrap_or_default();
        assert_eq!(
            stored, acked,
            "`{stream}` stores exactly the acknowledged reservations"
        );
        let reserved: u32 = stored.values().sum();
        assert!(reserved <= CAPACITY, "`{stream}` oversold: {reserved}");
        // 240 commands of 1 or 2 seats on 3 shows of 150 seats: every show sells out.
        assert!(reserved >= CAPACITY - 1, "`{stream}` sold only {reserved}");
        let loaded = shows.load(show).await.expect("load");
        assert_eq!(loaded.state.reserved(), reserved);
    }
    assert_eq!(nodes_seen, HashSet::from([1, 2]), "both nodes wrote");
}
