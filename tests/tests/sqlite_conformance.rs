//! The store conformance suite against [`SqliteStore`](cqrs_sqlite::SqliteStore), a fresh file
//! per check, and what only a store shared through a file can show: dense positions under
//! writers that compete through SQLite's lock, and waiters woken by another store's commits.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use cqrs_core::{EventId, EventStore, ExpectedVersion, NewEvent, Position, StreamId, Version};
use cqrs_sqlite::{SqliteOptions, SqliteStore};
use cqrs_tests::scratch_database::{fresh_path, remove_database};

async fn fresh_store() -> SqliteStore {
    let store = SqliteStore::open_with(fresh_path("conformance"), SqliteOptions::default())
        .await
        .unwrap_or_else(|error| panic!("open: {error}"));
    let applied = store
        .migrate()
        .await
        .unwrap_or_else(|error| panic!("migrate: {error}"));
    assert_eq!(applied, [1, 2], "a new file gets every migration");
    store
}

cqrs_tests::conformance_tests!(fresh_store());

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: "Counted".into(),
        schema_version: 1,
        payload: format!(r#"{{"n":{n}}}"#).as_str().into(),
        metadata: Default::default(),
    }
}

const TASKS: usize = 8;
const APPENDS_PER_TASK: usize = 200;
const STREAMS: usize = 4;

/// Eight tasks × 200 appends to four shared streams, half through one store and half through a
/// second store opened on the same file (two writers that meet on SQLite's lock, as two
/// processes would). Each task reads its stream's version and appends at exactly it, reading
/// again after a conflict. Afterwards: every acknowledged event is in the log once, positions are
/// 1..=N with no hole, each stream's versions are 1..=n in log order, and each receipt's
/// positions hold its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_are_dense_under_writers_competing_through_the_file() {
    let path = fresh_path("dense");
    let first = SqliteStore::open(&path).await.expect("open");
    first.migrate().await.expect("migrate");
    let second = SqliteStore::open(&path).await.expect("open again");
    assert_eq!(
        second.migrate().await.expect("migrate again"),
        Vec::<u32>::new()
    );

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = if task % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.spawn(async move {
            let mut written = Vec::new();
            let mut conflicts = 0u64;
            for n in 0..APPENDS_PER_TASK {
                let stream = StreamId::new(format!("dense-{}", (task + n) % STREAMS))
                    .expect("valid stream id");
                let event = event((task * APPENDS_PER_TASK + n) as u64);
                let id = event.event_id;
                loop {
                    let version = store
                        .read_stream(&stream, Version(1), usize::MAX)
                        .await
                        .expect("read_stream")
                        .len() as u64;
                    match store
                        .append(
                            &stream,
                            ExpectedVersion::Exact(Version(version)),
                            vec![event.clone()],
                        )
                        .await
                    {
                        Ok(receipt) => {
                            written.push((stream.clone(), id, receipt));
                            break;
                        }
                        Err(cqrs_core::StoreError::Conflict { .. }) => conflicts += 1,
                        Err(error) => panic!("append failed: {error}"),
                    }
                }
            }
            (written, conflicts)
        });
    }
    let mut written = Vec::new();
    let mut conflicts = 0;
    while let Some(joined) = tasks.join_next().await {
        let (task_written, task_conflicts) = joined.expect("writer task");
        written.extend(task_written);
        conflicts += task_conflicts;
    }
    let elapsed = started.elapsed();
    let total = TASKS * APPENDS_PER_TASK;
    println!(
        "{TASKS} tasks x {APPENDS_PER_TASK} appends on {STREAMS} streams through two stores on one \
         file: {total} appends in {elapsed:?} ({:.0} appends/s), {conflicts} conflicts retried",
        total as f64 / elapsed.as_secs_f64()
    );

    for store in [&first, &second] {
        let mut all = Vec::new();
        let mut after = Position::START;
        loop {
            let batch = store.read_all(after, 333).await.expect("read_all");
            let Some(last) = batch.last() else { break };
            after = last.position;
            all.extend(batch);
        }
        assert_eq!(all.len(), total, "every acknowledged append is in the log");
        assert_eq!(
            all.iter().map(|event| event.position.0).collect::<Vec<_>>(),
            (1..=total as u64).collect::<Vec<_>>(),
            "positions are 1..=N with no hole"
        );
        let ids: HashSet<EventId> = all.iter().map(|event| event.event_id).collect();
        assert_eq!(ids.len(), total, "no event is stored twice");
        let mut versions: HashMap<&StreamId, Vec<u64>> = HashMap::new();
        for event in &all {
            versions
                .entry(&event.stream)
                .or_default()
                .push(event.version.0);
        }
        for (stream, versions) in versions {
            assert_eq!(
                versions,
                (1..=versions.len() as u64).collect::<Vec<_>>(),
                "the versions of `{stream}` are contiguous and in log order"
            );
        }
        for (stream, id, receipt) in &written {
            let position = receipt.position.expect("a written append has a position");
            let logged = &all[(position.0 - 1) as usize];
            assert_eq!((&logged.stream, logged.event_id), (stream, *id));
            assert_eq!(logged.version, receipt.version);
        }
        assert_eq!(store.head().await.expect("head"), Position(total as u64));
    }
    drop((first, second));
    remove_database(&path);
}

/// A task waiting on one store wakes when a second store on the same file appends: the second
/// store's writer does not feed the first one's watch channel, so only the first store's
/// `data_version` check can wake it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_when_another_store_on_the_file_appends() {
    let path = fresh_path("wake");
    let waiting = SqliteStore::open(&path).await.expect("open");
    waiting.migrate().await.expect("migrate");
    let other = SqliteStore::open(&path).await.expect("open again");
    let stream = StreamId::new("wake-1").expect("valid stream id");

    let waiter = {
        let waiting = waiting.clone();
        tokio::spawn(async move {
            let head = waiting.wait_for_events(Position::START).await;
            (head, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter returned before any append"
    );

    let appended = Instant::now();
    let receipt = other
        .append(&stream, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .expect("append through the other store");
    let (head, woken) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter wakes within 5 s")
        .expect("waiter task");
    assert_eq!(head.expect("wait_for_events"), Position(2));
    assert_eq!(receipt.position, Some(Position(2)));
    let latency = woken.duration_since(appended);
    println!("woken {latency:?} after another store's append (check interval 50 ms)");
    assert!(
        latency < Duration::from_secs(1),
        "woken only after {latency:?}"
    );
    drop((waiting, other));
    remove_database(&path);
}

/// How many appends queue up behind a writer that waits for the file's lock.
const QUEUED: usize = 8;

/// While another connection holds the file's write lock (as another process's transaction
/// would), the store's writer waits in `BEGIN IMMEDIATE` with the first append; the appends that
/// queue up meanwhile join that transaction once it has the lock, and their spans and the batch
/// size histogram say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_that_queue_up_behind_a_busy_writer_go_in_one_transaction() {
    use cqrs_core::telemetry::{APPEND_BATCH_SIZE, APPEND_SPAN};

    let capture = cqrs_tests::telemetry::Capture::start();
    let path = fresh_path("batch");
    let store = SqliteStore::open(&path).await.expect("open");
    store.migrate().await.expect("migrate");
    let blocker = rusqlite::Connection::open(&path).expect("open a second connection");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("hold the write lock");

    let first = {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = StreamId::new("held-1").expect("valid stream id");
            store
                .append(&stream, ExpectedVersion::NoStream, vec![event(0)])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let queued: Vec<_> = (0..QUEUED as u64)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = StreamId::new(format!("queued-{n}")).expect("valid stream id");
                store
                    .append(&stream, ExpectedVersion::NoStream, vec![event(n)])
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_finished(), "the writer waits for the lock");
    blocker.execute_batch("COMMIT").expect("release the lock");

    let first = first.await.expect("task").expect("the held append");
    assert_eq!(first.position, Some(Position(1)));
    let mut positions = Vec::new();
    for append in queued {
        let receipt = append.await.expect("task").expect("a queued append");
        positions.extend(receipt.position.map(|position| position.0));
    }
    positions.sort_unstable();
    assert_eq!(positions, (2..=QUEUED as u64 + 1).collect::<Vec<_>>());

    let spans = capture.spans_named(APPEND_SPAN);
    let batch_of = |prefix: &str| -> Vec<Option<String>> {
        spans
            .iter()
            .filter(|span| {
                span.field("cqrs.stream")
                    .is_some_and(|stream| stream.starts_with(prefix))
            })
            .map(|span| span.field("cqrs.batch.appends").map(str::to_owned))
            .collect()
    };
    let sizes: Vec<usize> = batch_of("held-")
        .into_iter()
        .chain(batch_of("queued-"))
        .map(|size| {
            size.and_then(|size| size.parse().ok())
                .expect("cqrs.batch.appends on every append span")
        })
        .collect();
    let samples = capture
        .metrics()
        .histogram(APPEND_BATCH_SIZE, &[("store", "sqlite")]);
    println!(
        "1 append waited for the lock, {QUEUED} queued behind it; the batch sizes of all {}: \
         {sizes:?}; \
         batch sizes recorded meanwhile (other tests' included): {samples:?}",
        QUEUED + 1
    );
    // All of them normally; a task that a loaded machine started late may miss the batch.
    let largest = sizes.iter().copied().max().unwrap_or_default();
    assert!(
        largest > QUEUED / 2,
        "the queued appends joined the held one's transaction: {sizes:?}"
    );
    assert!(samples.contains(&(largest as f64)), "{samples:?}");
    drop(store);
    remove_database(&path);
}

/// Two stores on one file take turns on one stream. Each store's writer remembers the versions
/// it wrote, and must notice the other's commits (SQLite's `data_version`): an append at the
/// version the other store made succeeds, one at the version this store last wrote is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_store_on_a_file_sees_the_versions_the_other_one_wrote() {
    let path = fresh_path("turns");
    let first = SqliteStore::open(&path).await.expect("open");
    first.migrate().await.expect("migrate");
    let second = SqliteStore::open(&path).await.expect("open again");
    let stream = StreamId::new("turns-1").expect("valid stream id");
    let append = |store: &SqliteStore, expected| {
        let (store, stream) = (store.clone(), stream.clone());
        async move { store.append(&stream, expected, vec![event(0)]).await }
    };

    let receipt = append(&first, ExpectedVersion::NoStream)
        .await
        .expect("first turn");
    assert_eq!(receipt.version, Version(1));
    let receipt = append(&second, ExpectedVersion::Exact(Version(1)))
        .await
        .expect("second turn");
    assert_eq!(receipt.version, Version(2));
    let receipt = append(&first, ExpectedVersion::Exact(Version(2)))
        .await
        .expect("the first store sees the second one's event");
    assert_eq!(
        (receipt.version, receipt.position),
        (Version(3), Some(Position(3)))
    );
    match append(&second, ExpectedVersion::Exact(Version(2))).await {
        Err(cqrs_core::StoreError::Conflict { actual, .. }) => assert_eq!(actual, Version(3)),
        other => panic!("the second store's last version is stale: {other:?}"),
    }
    let receipt = append(&second, ExpectedVersion::Exact(Version(3)))
        .await
        .expect("the second store sees the first one's event");
    assert_eq!(
        (receipt.version, receipt.position),
        (Version(4), Some(Position(4)))
    );
    drop((first, second));
    remove_database(&path);
}

/// Group commit: after a transaction of three appends, the writer keeps the next one open for
/// the three writers it expects back, up to the linger; it commits as soon as they are there. A
/// writer that went away costs one linger, after which a lone append is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_writer_waits_for_the_writers_it_expects_back_and_no_longer() {
    const LINGER: Duration = Duration::from_secs(3);
    let path = fresh_path("linger");
    let store = SqliteStore::open_with(&path, SqliteOptions::default().batch_linger(LINGER))
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    let append = |n: u64| {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = StreamId::new(format!("linger-{n}")).expect("valid stream id");
            store
                .append(&stream, ExpectedVersion::NoStream, vec![event(n)])
                .await
        })
    };
    type Appending =
        tokio::task::JoinHandle<Result<cqrs_core::AppendReceipt, cqrs_core::StoreError>>;
    let position = |task: Appending| async move {
        let receipt: cqrs_core::AppendReceipt = task.await.expect("task").expect("append");
        receipt.position.expect("a position").0
    };

    // Three appends queue up behind another connection's lock: one transaction, estimate 3.
    let blocker = rusqlite::Connection::open(&path).expect("open a second connection");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("hold the lock");
    let queued: Vec<_> = (0..3).map(append).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    blocker.execute_batch("COMMIT").expect("release the lock");
    for task in queued {
        position(task).await;
    }

    // One arrives: the writer waits for two more, and commits when they come.
    let started = Instant::now();
    let lone = append(3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!lone.is_finished(), "the writer waits for the others");
    let (second, third) = (append(4), append(5));
    let mut positions = vec![
        position(lone).await,
        position(second).await,
        position(third).await,
    ];
    let together = started.elapsed();
    positions.sort_unstable();
    assert_eq!(positions, [4, 5, 6]);
    assert!(
        together < LINGER,
        "committed once all three came: {together:?}"
    );

    // Only one comes back: it waits out the linger once...
    let started = Instant::now();
    position(append(6)).await;
    let waited = started.elapsed();
    assert!(waited >= LINGER / 2, "{waited:?}");
    // ...and the next lone append is served without waiting.
    let started = Instant::now();
    position(append(7)).await;
    let alone = started.elapsed();
    println!(
        "three together after {together:?}; a lone writer after a batch of three waited \
         {waited:?}, the next one {alone:?} (linger {LINGER:?})"
    );
    assert!(alone < LINGER / 2, "{alone:?}");
    drop(store);
    remove_database(&path);
}

/// Another connection holds the write lock for a second, as a long transaction of another
/// process would: the waiting append commits right after the lock is released, not a polling
/// interval later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_waiting_for_another_process_commits_soon_after_the_lock_is_free() {
    const HELD: Duration = Duration::from_millis(1_050);
    let path = fresh_path("lock-free");
    let store = SqliteStore::open(&path).await.expect("open");
    store.migrate().await.expect("migrate");
    let holder = std::thread::spawn({
        let path = path.clone();
        move || {
            let blocker = rusqlite::Connection::open(&path).expect("open a second connection");
            blocker
                .execute_batch("BEGIN IMMEDIATE")
                .expect("hold the lock");
            std::thread::sleep(HELD);
            blocker.execute_batch("COMMIT").expect("release the lock");
            Instant::now()
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stream = StreamId::new("waiting-1").expect("valid stream id");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("the append waits for the lock and commits");
    let committed = Instant::now();
    let released = holder.join().expect("holder thread");
    let late = committed.saturating_duration_since(released);
    println!("the lock held {HELD:?}: the waiting append committed {late:?} after its release");
    assert!(late < Duration::from_millis(60), "{late:?}");
    drop(store);
    remove_database(&path);
}

/// `close` leaves the database file alone holding everything: the WAL moved into it and
/// removed, a copy of the file without its WAL reads every event. The store's clones fail
/// afterwards, and the file opens again with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_moves_the_wal_into_the_file_and_stops_every_clone() {
    let path = fresh_path("close");
    let store = SqliteStore::open(&path).await.expect("open");
    store.migrate().await.expect("migrate");
    let stream = StreamId::new("closed-1").expect("valid stream id");
    for n in 0..100 {
        store
            .append(&stream, ExpectedVersion::Any, vec![event(n)])
            .await
            .expect("append");
    }
    // A waiter makes the change watcher read the file too.
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for_events(Position(1_000)).await })
    };
    // Until it waits, with its read done (a read in flight keeps the file open past `close`).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let clone = store.clone();
    let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
    assert!(wal.exists(), "the appends went to the WAL");
    store.close().await.expect("close");
    assert!(!wal.exists(), "the WAL is gone");
    assert!(
        !std::path::PathBuf::from(format!("{}-shm", path.display())).exists(),
        "the shared-memory file is gone"
    );

    let copy = fresh_path("close-copy");
    std::fs::copy(&path, &copy).expect("copy the file alone");
    let counted: i64 = rusqlite::Connection::open(&copy)
        .expect("open the copy")
        .query_row("SELECT count(*) FROM cqrs_events", [], |row| row.get(0))
        .expect("count");
    assert_eq!(counted, 100, "the file alone holds every event");
    remove_database(&copy);

    let refused = clone
        .append(&stream, ExpectedVersion::Any, vec![event(100)])
        .await
        .expect_err("the writer is closed");
    assert!(refused.to_string().contains("writer"), "{refused}");
    waiting.abort();
    drop(clone);

    let reopened = SqliteStore::open(&path).await.expect("open again");
    assert_eq!(reopened.head().await.expect("head"), Position(100));
    drop(reopened);
    remove_database(&path);
}

/// A row whose metadata the full read refuses (headers that are not a JSON object, as a hand
/// edit could leave them) fails `visit_stream`, but not a reader that only decodes: the lean
/// read never selects the headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lean_read_does_not_read_the_metadata() {
    let path = fresh_path("lean");
    let store = SqliteStore::open(&path).await.expect("open");
    store.migrate().await.expect("migrate");
    let stream = StreamId::new("lean-1").expect("valid stream id");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event(0), event(1)])
        .await
        .expect("append");
    rusqlite::Connection::open(&path)
        .expect("open a second connection")
        .execute(
            "UPDATE cqrs_events SET headers = '[1, 2]' WHERE stream = 'lean-1' AND version = 2",
            [],
        )
        .expect("corrupt the headers");
    let full = store
        .visit_stream(&stream, Version(1), 10, &mut |_| Ok(()))
        .await;
    match full {
        Err(cqrs_core::StoreError::Backend(source)) => {
            let row = source
                .downcast_ref::<cqrs_sqlite::CorruptRow>()
                .unwrap_or_else(|| panic!("expected a corrupt row, got {source}"));
            assert!(row.reason.contains("headers"), "{}", row.reason);
        }
        other => panic!("the full read of corrupt headers gave {other:?}"),
    }
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
    store.close().await.expect("close");
    remove_database(&path);
}
