//! The PostgreSQL benchmarks: `pg_exec_distinct` (1 and 8 tasks), `pg_exec_same` (8 tasks on one
//! show) and `pg_rehydrate` (a 100,000-event stream), against the server `CQRS_BENCH_PG_URL`
//! names. `scripts/bench-postgres` starts a throwaway server, runs `pgbench` as the physical
//! reference and then these.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cqrs_core::event::{Metadata, NewEvent};
use cqrs_core::{EventStore, ExecuteError, ExpectedVersion, Repository, RetryPolicy, StreamId};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowEvent};
use cqrs_postgres::PostgresStore;

use crate::{BenchResult, per_second, report};

type Shows = Repository<Show, PostgresStore>;

/// The environment variable naming the server; the benchmarks are skipped without it.
const URL_VARIABLE: &str = "CQRS_BENCH_PG_URL";

/// A prefix that keeps this run's shows apart from earlier runs' in the same database.
fn run_id() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros())
        .unwrap_or(0)
}

async fn store(pool_size: usize) -> Result<Option<PostgresStore>, Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var(URL_VARIABLE) else {
        return Ok(None);
    };
    let store = PostgresStore::with_pool_size(&url, pool_size)?;
    store.migrate().await?;
    Ok(Some(store))
}

/// Runs the PostgreSQL benchmarks `wanted` selects, or says why they are skipped.
pub(crate) async fn run(wanted: impl Fn(&str) -> bool) -> BenchResult {
    let names = ["pg_exec_distinct", "pg_exec_same", "pg_rehydrate"];
    if !names.iter().any(|name| wanted(name)) {
        return Ok(());
    }
    if std::env::var_os(URL_VARIABLE).is_none() {
        eprintln!(
            "note: pg_* benchmarks skipped: set {URL_VARIABLE} (scripts/bench-postgres does)"
        );
        return Ok(());
    }
    if wanted("pg_exec_distinct") {
        pg_exec_distinct(1, 4_000).await?;
        pg_exec_distinct(8, 2_000).await?;
    }
    if wanted("pg_exec_same") {
        pg_exec_same().await?;
    }
    if wanted("pg_rehydrate") {
        pg_rehydrate().await?;
    }
    Ok(())
}

/// `pg_exec_distinct_{tasks}`: reserve(1) commands from `tasks` concurrent tasks, each on its own
/// 100 shows round-robin (cached repository: one append per command).
async fn pg_exec_distinct(tasks: u64, per_task: u64) -> BenchResult {
    const SHOWS_PER_TASK: u64 = 100;
    let Some(store) = store(tasks as usize + 2).await? else {
        return Ok(());
    };
    let run = run_id();
    let shows: Shows = Repository::builder(store)
        .cache((tasks * SHOWS_PER_TASK * 2) as usize)
        .build();
    for show in 0..tasks * SHOWS_PER_TASK {
        shows
            .execute(
                format!("d{run}-{show}"),
                ShowCommand::Schedule {
                    capacity: per_task as u32,
                },
            )
            .await?;
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let shows = shows.clone();
        handles.push(tokio::spawn(async move {
            for n in 0..per_task {
                let show = task * SHOWS_PER_TASK + n % SHOWS_PER_TASK;
                let command = ShowCommand::ReserveSeats {
                    booking: BookingId(n),
                    seats: 1,
                };
                shows.execute(format!("d{run}-{show}"), command).await?;
            }
            Ok::<(), ExecuteError<cqrs_examples::show::ShowError>>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    report(
        &format!("pg_exec_distinct_{tasks}"),
        per_second(tasks * per_task, started.elapsed()),
        "cmds/s",
    );
    Ok(())
}

/// `pg_exec_same`: 8 tasks reserving one seat each time on one show with room for all of them.
async fn pg_exec_same() -> BenchResult {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 500;
    let Some(store) = store(TASKS as usize + 2).await? else {
        return Ok(());
    };
    let show = format!("same{}", run_id());
    let shows: Shows = Repository::builder(store)
        .retry(RetryPolicy {
            max_attempts: 1_000,
            ..RetryPolicy::default()
        })
        .build();
    shows
        .execute(
            &show,
            ShowCommand::Schedule {
                capacity: (TASKS * PER_TASK) as u32,
            },
        )
        .await?;
    let show = Arc::new(show);
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let shows = shows.clone();
        let show = Arc::clone(&show);
        handles.push(tokio::spawn(async move {
            let (mut successes, mut retries, mut failures) = (0_u64, 0_u64, 0_u64);
            for n in 0..PER_TASK {
                let command = ShowCommand::ReserveSeats {
                    booking: BookingId(task * PER_TASK + n),
                    seats: 1,
                };
                match shows.execute(show.as_str(), command).await {
                    Ok(outcome) => {
                        successes += 1;
                        retries += u64::from(outcome.attempts.saturating_sub(1));
                    }
                    Err(_) => failures += 1,
                }
            }
            (successes, retries, failures)
        }));
    }
    let (mut successes, mut retries, mut failures) = (0, 0, 0);
    for handle in handles {
        let (s, r, f) = handle.await?;
        successes += s;
        retries += r;
        failures += f;
    }
    let elapsed = started.elapsed();
    report(
        "pg_exec_same",
        per_second(successes, elapsed),
        "successes/s",
    );
    report("pg_exec_same_retries", retries as f64, "retries");
    report("pg_exec_same_failures", failures as f64, "failures");
    report(
        "pg_exec_same_success_rate",
        100.0 * successes as f64 / (TASKS * PER_TASK) as f64,
        "%",
    );
    Ok(())
}

/// `pg_rehydrate`: cold load of a 100,000-event show (best of five loads, no cache, no snapshot).
async fn pg_rehydrate() -> BenchResult {
    const EVENTS: u64 = 100_000;
    const BATCH: u64 = 1_000;
    let Some(store) = store(4).await? else {
        return Ok(());
    };
    let show = format!("rehydrate{}", run_id());
    let stream = StreamId::for_aggregate("show", &show)?;
    let mut written = 0;
    while written < EVENTS {
        let events = (written..written + BATCH)
            .map(|n| {
                let event = if n == 0 {
                    ShowEvent::Scheduled {
                        capacity: EVENTS as u32,
                    }
                } else {
                    ShowEvent::SeatsReserved {
                        booking: BookingId(n),
                        seats: 1,
                    }
                };
                NewEvent::encode(&event, Metadata::default())
            })
            .collect::<Result<Vec<_>, _>>()?;
        store.append(&stream, ExpectedVersion::Any, events).await?;
        written += BATCH;
    }
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let shows: Shows = Repository::builder(store.clone()).cache(0).build();
        let started = Instant::now();
        let loaded = shows.load(&show).await?;
        best = best.min(started.elapsed());
        if u64::from(loaded.state.reserved()) != EVENTS - 1 {
            return Err(format!("rehydrated {} seats", loaded.state.reserved()).into());
        }
    }
    report("pg_rehydrate", per_second(EVENTS, best), "events/s");
    Ok(())
}
