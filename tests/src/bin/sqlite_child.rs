//! A child process for the SQLite fault tests (`tests/tests/sqlite_faults.rs`): it writes to a
//! database file the way an application would, and says on stdout, one flushed line at a time,
//! what the store acknowledged, so that the test can kill it at any moment and then compare the
//! file with what was acknowledged.
//!
//! ```text
//! sqlite_child append-big <db> <events>
//!     opens <db> (migrating), prints `ready <bytes in the WAL>`, appends one command of
//!     <events> events to the stream `big-1`, prints `done <position>` once acknowledged.
//! sqlite_child reserve <db> <show> <tasks> <per_task>
//!     opens <db> (migrating), prints `ready`, waits for a line on stdin, then reserves 1 to 3
//!     seats on <show> from <tasks> tasks, at most <per_task> commands each, until sold out.
//!     Prints `reserved <booking> <seats> <version> <microseconds>` per acknowledged reservation
//!     (the time from the call to the acknowledgement last), `error <text>` per command that
//!     failed otherwise, and finally `summary <reserved> <sold_out> <retries>`.
//! sqlite_child hammer <db> <tasks> <millis> <busy_timeout_millis>
//!     opens <db> (migrating) with that busy timeout, prints `ready`, waits for a line on stdin,
//!     then appends one event at a time from <tasks> tasks, each to streams of its own, for
//!     <millis> ms, and prints `summary <appends> <busy_failures> <other_failures>
//!     <longest_append_microseconds>`.
//! ```
//!
//! Bad arguments print this usage and exit with 2; a failure to open or append exits with 1.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_core::{
    EventId, EventStore, ExecuteError, ExpectedVersion, NewEvent, Repository, StreamId,
};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowError};
use cqrs_sqlite::{SqliteError, SqliteOptions, SqliteStore};

const USAGE: &str = "usage: sqlite_child append-big <db> <events>
       sqlite_child reserve <db> <show> <tasks> <per_task>
       sqlite_child hammer <db> <tasks> <millis> <busy_timeout_millis>";

/// The stream `append-big` writes.
const BIG_STREAM: (&str, u64) = ("big", 1);

enum Mode {
    AppendBig {
        path: PathBuf,
        events: usize,
    },
    Reserve {
        path: PathBuf,
        show: String,
        tasks: u64,
        per_task: u64,
    },
    Hammer {
        path: PathBuf,
        tasks: u64,
        run_for: Duration,
        busy_timeout: Duration,
    },
}

fn parse(args: &[String]) -> Option<Mode> {
    match args {
        [mode, path, events] if mode == "append-big" => Some(Mode::AppendBig {
            path: path.into(),
            events: events.parse().ok()?,
        }),
        [mode, path, show, tasks, per_task] if mode == "reserve" => Some(Mode::Reserve {
            path: path.into(),
            show: show.clone(),
            tasks: tasks.parse().ok()?,
            per_task: per_task.parse().ok()?,
        }),
        [mode, path, tasks, millis, busy_timeout] if mode == "hammer" => Some(Mode::Hammer {
            path: path.into(),
            tasks: tasks.parse().ok()?,
            run_for: Duration::from_millis(millis.parse().ok()?),
            busy_timeout: Duration::from_millis(busy_timeout.parse().ok()?),
        }),
        _ => None,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = parse(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sqlite_child: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match mode {
            Mode::AppendBig { path, events } => append_big(path, events).await,
            Mode::Reserve {
                path,
                show,
                tasks,
                per_task,
            } => reserve(path, show, tasks, per_task).await,
            Mode::Hammer {
                path,
                tasks,
                run_for,
                busy_timeout,
            } => hammer(path, tasks, run_for, busy_timeout).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sqlite_child: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one line and flushes it, so that a kill right after loses nothing the test should see.
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

async fn open(path: PathBuf, options: SqliteOptions) -> Result<SqliteStore, String> {
    let store = SqliteStore::open_with(&path, options)
        .await
        .map_err(|error| format!("open {}: {error}", path.display()))?;
    store
        .migrate()
        .await
        .map_err(|error| format!("migrate {}: {error}", path.display()))?;
    Ok(store)
}

async fn append_big(path: PathBuf, count: usize) -> Result<(), String> {
    let store = open(path, SqliteOptions::default()).await?;
    let stream = StreamId::for_aggregate(BIG_STREAM.0, BIG_STREAM.1).map_err(|e| e.to_string())?;
    // Built before `ready`, so that the time after it is the append's alone.
    let events: Vec<NewEvent> = (1..=count)
        .map(|n| NewEvent {
            event_id: EventId::new(),
            event_type: "Filled".into(),
            schema_version: 1,
            payload: format!(r#"{{"n":{n},"padding":"{}"}}"#, "x".repeat(200))
                .as_str()
                .into(),
            metadata: Default::default(),
        })
        .collect();
    // The WAL as the migration left it: what the test finds there beyond it after a kill was
    // written by the append's transaction, uncommitted.
    let wal_bytes = std::fs::metadata(format!("{}-wal", store.path().display()))
        .map_or(0, |metadata| metadata.len());
    say(&format!("ready {wal_bytes}"));
    let receipt = store
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .map_err(|error| format!("append: {error}"))?;
    let position = receipt.position.map_or(0, |position| position.0);
    say(&format!("done {position}"));
    Ok(())
}

/// Waits for the test's start signal on stdin, so that the children it lets go at once race.
fn wait_for_go() -> Result<(), String> {
    let mut go = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut go)
        .map_err(|error| format!("reading the start signal: {error}"))?;
    Ok(())
}

async fn hammer(
    path: PathBuf,
    tasks: u64,
    run_for: Duration,
    busy_timeout: Duration,
) -> Result<(), String> {
    let store = open(path, SqliteOptions::default().busy_timeout(busy_timeout)).await?;
    say("ready");
    wait_for_go()?;
    let started = Instant::now();
    let process = std::process::id();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let (mut appends, mut busy, mut other, mut longest) = (0_u64, 0_u64, 0_u64, 0_u128);
            while started.elapsed() < run_for {
                let stream = StreamId::new(format!("hammer-{process}x{task}x{}", appends % 50))
                    .map_err(|error| error.to_string())?;
                let event = NewEvent {
                    event_id: EventId::new(),
                    event_type: "Hammered".into(),
                    schema_version: 1,
                    payload: "{}".into(),
                    metadata: Default::default(),
                };
                let call = Instant::now();
                match store
                    .append(&stream, ExpectedVersion::Any, vec![event])
                    .await
                {
                    Ok(_) => appends += 1,
                    Err(cqrs_core::StoreError::Backend(error))
                        if error
                            .downcast_ref::<SqliteError>()
                            .is_some_and(SqliteError::is_busy) =>
                    {
                        busy += 1
                    }
                    Err(error) => {
                        other += 1;
                        say(&format!("error {error}"));
                    }
                }
                longest = longest.max(call.elapsed().as_micros());
            }
            Ok::<_, String>((appends, busy, other, longest))
        }));
    }
    let (mut appends, mut busy, mut other, mut longest) = (0, 0, 0, 0);
    for handle in handles {
        let (a, b, o, l) = handle.await.map_err(|error| error.to_string())??;
        appends += a;
        busy += b;
        other += o;
        longest = longest.max(l);
    }
    say(&format!("summary {appends} {busy} {other} {longest}"));
    Ok(())
}

async fn reserve(path: PathBuf, show: String, tasks: u64, per_task: u64) -> Result<(), String> {
    let store = open(path, SqliteOptions::default()).await?;
    let shows: Repository<Show, SqliteStore> = Repository::new(store);
    say("ready");
    wait_for_go()?;

    // Unique across the children that run at once: their process ids differ.
    let first_booking = u64::from(std::process::id()) << 32;
    let reserved = Arc::new(AtomicU64::new(0));
    let sold_out = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    // What the tasks last learned of the seats left, so that a task asks for no more than that.
    let available = Arc::new(Mutex::new(u32::MAX));
    let mut handles = Vec::new();
    for task in 0..tasks {
        let shows = shows.clone();
        let show = show.clone();
        let (reserved, sold_out, retries, available) = (
            Arc::clone(&reserved),
            Arc::clone(&sold_out),
            Arc::clone(&retries),
            Arc::clone(&available),
        );
        handles.push(tokio::spawn(async move {
            for n in 0..per_task {
                let booking = BookingId(first_booking + (task << 16) + n);
                let wanted = u32::try_from(booking.0 % 3).unwrap_or(0) + 1;
                let left = *available
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                let seats = wanted.min(left);
                if seats == 0 {
                    break;
                }
                let started = Instant::now();
                match shows
                    .execute(show.as_str(), ShowCommand::ReserveSeats { booking, seats })
                    .await
                {
                    Ok(outcome) => {
                        reserved.fetch_add(1, Ordering::Relaxed);
                        retries.fetch_add(
                            u64::from(outcome.attempts.saturating_sub(1)),
                            Ordering::Relaxed,
                        );
                        say(&format!(
                            "reserved {} {seats} {} {}",
                            booking.0,
                            outcome.version.0,
                            started.elapsed().as_micros()
                        ));
                    }
                    Err(ExecuteError::Domain(ShowError::SoldOut { available: now, .. })) => {
                        sold_out.fetch_add(1, Ordering::Relaxed);
                        *available
                            .lock()
                            .unwrap_or_else(|poison| poison.into_inner()) = now;
                        if now == 0 {
                            break;
                        }
                    }
                    Err(error) => say(&format!("error {error}")),
                }
            }
        }));
    }
    for handle in handles {
        handle
            .await
            .map_err(|error| format!("a task failed: {error}"))?;
    }
    say(&format!(
        "summary {} {} {}",
        reserved.load(Ordering::Relaxed),
        sold_out.load(Ordering::Relaxed),
        retries.load(Ordering::Relaxed),
    ));
    Ok(())
}
