//! The write path under real contention: many independent writers on one hot show with every
//! cache off (each command loads the show, as separate nodes do), and four nodes on one
//! PostgreSQL database racing over eight shows. No conflict, deadlock or other error reaches a
//! caller, nothing is oversold, every acknowledged command is stored once, positions stay dense.
//! Each test prints its figures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use cqrs_core::{EventStore, ExecuteError, Position, Repository, StreamId, Version};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowError, ShowEvent};
use cqrs_memstore::MemStore;
use cqrs_postgres::PostgresStore;
use cqrs_postgres::testing::TestCluster;

const HOT_TASKS: u64 = 32;
const HOT_COMMANDS_PER_TASK: u64 = 50;
const HOT_CAPACITY: u32 = 100;
const HOT_RUNS: u64 = 20;

/// What one run on a hot show measured.
#[derive(Debug, Default)]
struct HotRun {
    reserved: u64,
    sold_out: u64,
    conflicts: u64,
    /// Every other error, as text.
    errors: Vec<String>,
    attempts: Vec<u32>,
    latencies: Vec<Duration>,
    /// Seats won per task.
    per_task: Vec<u64>,
    elapsed: Duration,
}

impl HotRun {
    fn report(&self, label: &str, run: u64) {
        let attempts: u64 = self.attempts.iter().map(|&a| u64::from(a)).sum();
        let mut latencies = self.latencies.clone();
        latencies.sort();
        let p99 = latencies
            .get(latencies.len().saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or_default();
        println!(
            "{label} run {run}: {} reserved, {} sold out, {} conflicts, {} other errors in \
             {:?}; attempts mean {:.2} max {}; p99 {p99:?}; seats per task min {} max {}",
            self.reserved,
            self.sold_out,
            self.conflicts,
            self.errors.len(),
            self.elapsed,
            attempts as f64 / self.attempts.len().max(1) as f64,
            self.attempts.iter().max().copied().unwrap_or(0),
            self.per_task.iter().min().copied().unwrap_or(0),
            self.per_task.iter().max().copied().unwrap_or(0),
        );
    }
}

/// 32 tasks x 50 `reserve(1)` on one show of 100 seats, through a repository with its cache off.
async fn hot_show_run<S: EventStore + Clone>(store: S, show: &str) -> HotRun {
    let shows = Repository::<Show, _>::builder(store).cache(0).build();
    shows
        .execute(
            show,
            ShowCommand::Schedule {
                capacity: HOT_CAPACITY,
            },
        )
        .await
        .expect("schedule");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..HOT_TASKS {
        let shows = shows.clone();
        let show = show.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut run = HotRun::default();
            let mut won = 0;
            for n in 0..HOT_COMMANDS_PER_TASK {
                let booking = BookingId(task * 1_000 + n);
                let sent = Instant::now();
                let result = shows
                    .execute(&show, ShowCommand::ReserveSeats { booking, seats: 1 })
                    .await;
                run.latencies.push(sent.elapsed());
                match result {
                    Ok(outcome) => {
                        run.attempts.push(outcome.attempts);
                        run.reserved += 1;
                        won += 1;
                    }
                    Err(ExecuteError::Domain(ShowError::SoldOut { .. })) => run.sold_out += 1,
                    Err(ExecuteError::Conflict { .. }) => run.conflicts += 1,
                    Err(other) => run.errors.push(other.to_string()),
                }
            }
            run.per_task.push(won);
            run
        }));
    }
    let mut total = HotRun::default();
    for task in tasks {
        let run = task.await.expect("task");
        total.reserved += run.reserved;
        total.sold_out += run.sold_out;
        total.conflicts += run.conflicts;
        total.errors.extend(run.errors);
        total.attempts.extend(run.attempts);
        total.latencies.extend(run.latencies);
        total.per_task.extend(run.per_task);
    }
    total.elapsed = started.elapsed();
    let loaded = shows.load(show).await.expect("load");
    assert_eq!(loaded.state.reserved(), HOT_CAPACITY, "seats stored");
    assert_eq!(loaded.version, Version(u64::from(HOT_CAPACITY) + 1));
    total
}

fn check_hot_run(run: &HotRun) {
    assert_eq!(run.conflicts, 0, "a conflict reached a caller");
    assert!(run.errors.is_empty(), "errors: {:?}", run.errors);
    assert_eq!(run.reserved, u64::from(HOT_CAPACITY));
    assert_eq!(
        run.sold_out,
        HOT_TASKS * HOT_COMMANDS_PER_TASK - u64::from(HOT_CAPACITY)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_show_in_memory_with_caches_off_never_surfaces_a_conflict() {
    // A store that yields inside every call, so that the writers really interleave.
    let store = MemStore::yielding();
    for run in 1..=HOT_RUNS {
        let result = hot_show_run(store.clone(), &format!("hot{run}")).await;
        result.report("memory", run);
        check_hot_run(&result);
    }
}

async fn fresh_url() -> String {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    cluster
        .create_database()
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_show_on_postgres_with_caches_off_never_surfaces_a_conflict() {
    let store = PostgresStore::new(&fresh_url().await).expect("store");
    store.migrate().await.expect("migrate");
    for run in 1..=HOT_RUNS {
        let result = hot_show_run(store.clone(), &format!("hot{run}")).await;
        result.report("postgres", run);
        check_hot_run(&result);
    }
}

const NODES: u64 = 4;
const NODE_POOL: usize = 4;
const NODE_TASKS: u64 = 256;
const NODE_COMMANDS_PER_TASK: u64 = 40;
const NODE_SHOWS: u64 = 8;
const NODE_CAPACITY: u32 = 1_000;
const NODE_RUNS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_nodes_on_one_database_never_deadlock_or_fail() {
    for run in 1..=NODE_RUNS {
        let url = fresh_url().await;
        let nodes: Vec<PostgresStore> = (0..NODES)
            .map(|_| PostgresStore::with_pool_size(&url, NODE_POOL).expect("store"))
            .collect();
        nodes[0].migrate().await.expect("migrate");
        // Each node has its own repository, with its cache on: the nodes race each other, a
        // node's own tasks take turns on its cached shows.
        let repositories: Vec<Repository<Show, PostgresStore>> =
            nodes.iter().cloned().map(Repository::new).collect();
        for show in 0..NODE_SHOWS {
            repositories[0]
                .execute(
                    show,
                    ShowCommand::Schedule {
                        capacity: NODE_CAPACITY,
                    },
                )
                .await
                .expect("schedule");
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for task in 0..NODE_TASKS {
            let shows = repositories[(task % NODES) as usize].clone();
            tasks.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut sold_out = 0u64;
                let mut errors = Vec::new();
                for n in 0..NODE_COMMANDS_PER_TASK {
                    let show = (task + n) % NODE_SHOWS;
                    let booking = BookingId(task * 1_000 + n);
                    match shows
                        .execute(show, ShowCommand::ReserveSeats { booking, seats: 1 })
                        .await
                    {
                        Ok(outcome) => acknowledged.push((outcome.stream, booking)),
                        Err(ExecuteError::Domain(ShowError::SoldOut { .. })) => sold_out += 1,
                        Err(other) => errors.push(other.to_string()),
                    }
                }
                (acknowledged, sold_out, errors)
            }));
        }
        let mut acknowledged: HashMap<StreamId, Vec<BookingId>> = HashMap::new();
        let (mut sold_out, mut errors) = (0, Vec::new());
        for task in tasks {
            let (acks, refused, failed) = task.await.expect("task");
            for (stream, booking) in acks {
                acknowledged.entry(stream).or_default().push(booking);
            }
            sold_out += refused;
            errors.extend(failed);
        }
        let elapsed = started.elapsed();
        let acks: usize = acknowledged.values().map(Vec::len).sum();
        println!(
            "four nodes, run {run}: {acks} reserved, {sold_out} sold out, {} errors in {elapsed:?} \
             ({:.0} commands/s)",
            errors.len(),
            (NODE_TASKS * NODE_COMMANDS_PER_TASK) as f64 / elapsed.as_secs_f64()
        );
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for error in &errors {
            *kinds.entry(error.as_str()).or_default() += 1;
        }
        assert!(errors.is_empty(), "errors: {kinds:?}");
        assert_eq!(
            acks as u64 + sold_out,
            NODE_TASKS * NODE_COMMANDS_PER_TASK,
            "every command was answered"
        );

        // What is stored: no show oversold, every acknowledged booking stored exactly once.
        let store = &nodes[0];
        let mut stored_total = 0;
        for show in 0..NODE_SHOWS {
            let stream = StreamId::for_aggregate("show", show).expect("stream");
            let events = store
                .read_stream(&stream, Version(1), usize::MAX)
                .await
                .expect("read");
            let mut bookings = HashSet::new();
            let mut seats = 0;
            for (index, event) in events.iter().enumerate() {
                assert_eq!(event.version, Version(index as u64 + 1), "contiguous");
                if let ShowEvent::SeatsReserved { booking, seats: n } =
                    event.decode::<ShowEvent>().expect("decode")
                {
                    assert!(bookings.insert(booking), "booking {booking:?} stored twice");
                    seats += n;
                }
            }
            assert!(seats <= NODE_CAPACITY, "show {show} oversold: {seats}");
            let acked: HashSet<BookingId> = acknowledged
                .get(&stream)
                .map(|acks| acks.iter().copied().collect())
                .unwrap_or_default();
            assert_eq!(acked, bookings, "show {show}: stored = acknowledged");
            stored_total += events.len();
        }
        // Positions dense: 1..=N, with nothing between shows' events left out.
        let all = store
            .read_all(Position::START, usize::MAX)
            .await
            .expect("read all");
        assert_eq!(all.len(), stored_total);
        for (index, event) in all.iter().enumerate() {
            assert_eq!(
                event.position,
                Position(index as u64 + 1),
                "dense positions"
            );
        }
    }
}

/// Connections killed while they hold or wait for turns (and while appends hold the turn lock in
/// shared mode): no writer hangs, the server releases every lock of a killed connection, every
/// acknowledged reservation is stored once, and the store goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_survive_connections_killed_in_their_turns() {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 40;
    let url = fresh_url().await;
    let store = PostgresStore::new(&url).expect("store");
    store.migrate().await.expect("migrate");
    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .build();
    shows
        .execute("killed", ShowCommand::Schedule { capacity: 10_000 })
        .await
        .expect("schedule");
    let (killer, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let killing = {
        let running = std::sync::Arc::clone(&running);
        tokio::spawn(async move {
            let mut killed = 0u64;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let rows = killer
                    .query(
                        // This test's database only: the other tests share the cluster.
                        "SELECT pg_terminate_backend(pid) FROM pg_locks \
                         WHERE locktype = 'advisory' AND classid = 1668444787 \
                           AND database = (SELECT oid FROM pg_database \
                                            WHERE datname = current_database()) \
                           AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .await
                    .expect("terminate");
                killed += rows.len() as u64;
            }
            killed
        })
    };
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let shows = shows.clone();
        tasks.push(tokio::spawn(async move {
            let (mut acknowledged, mut errors) = (Vec::new(), Vec::new());
            for n in 0..PER_TASK {
                let booking = BookingId(task * 1_000 + n);
                match shows
                    .execute("killed", ShowCommand::ReserveSeats { booking, seats: 1 })
                    .await
                {
                    Ok(_) => acknowledged.push(booking),
                    Err(error) => errors.push(error.to_string()),
                }
            }
            (acknowledged, errors)
        }));
    }
    let mut acknowledged = HashSet::new();
    let mut errors = Vec::new();
    for task in tasks {
        let (acks, failed) = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("a writer hung")
            .expect("task");
        acknowledged.extend(acks);
        errors.extend(failed);
    }
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    let killed = killing.await.expect("killer");
    println!(
        "killed {killed} connections holding or waiting for turn locks: {} reserved, {} errors",
        acknowledged.len(),
        errors.len()
    );
    let kinds: HashSet<&str> = errors.iter().map(String::as_str).collect();
    println!("what the killed writers were told: {kinds:?}");
    for error in &errors {
        // What a killed connection says; never a conflict, a deadlock or a hang.
        assert!(
            error.ends_with("connection closed") || error.contains("FATAL 57P01"),
            "unexpected error: {error}"
        );
    }
    assert!(killed > 0, "the test killed no connection");

    // Every acknowledged reservation is stored once; the stream is contiguous; the store goes on.
    let stream = StreamId::for_aggregate("show", "killed").expect("stream");
    let events = store
        .read_stream(&stream, Version(1), usize::MAX)
        .await
        .expect("read");
    let mut stored = HashSet::new();
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.version, Version(index as u64 + 1), "contiguous");
        if let ShowEvent::SeatsReserved { booking, .. } = event.decode().expect("decode") {
            assert!(stored.insert(booking), "{booking:?} stored twice");
        }
    }
    assert!(
        acknowledged.is_subset(&stored),
        "an acknowledged reservation is missing"
    );
    let after = tokio::time::timeout(
        Duration::from_secs(10),
        shows.execute(
            "killed",
            ShowCommand::ReserveSeats {
                booking: BookingId(999_999),
                seats: 1,
            },
        ),
    )
    .await
    .expect("no turn lock was left behind")
    .expect("the store goes on");
    assert_eq!(after.version, Version(events.len() as u64 + 1));
}
