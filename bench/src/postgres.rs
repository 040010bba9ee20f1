//! The PostgreSQL benchmarks: `pg_exec_distinct` (1 and 8 tasks), `pg_exec_same` (8 tasks on one
//! show), `pg_exec_same_uncached` (32 tasks on one show, caches off), `pg_exec_uncached_8_64` and
//! `_256` (64 and 256 tasks over 8 shows, caches off), `pg_rehydrate` (a 100,000-event stream) and `pg_projection_catchup` (a projection into
//! a PostgreSQL table catching up on 200,000 events), against the server `CQRS_BENCH_PG_URL`
//! names. `scripts/bench-postgres` starts a throwaway server, runs `pgbench` as the physical
//! reference and then these.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::codec::Codec;
use cqrs_core::processor::Processor as _;
use cqrs_core::projection::EventContext;
use cqrs_core::{EventStore, ExecuteError, ExpectedVersion, Repository, StreamId};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowEvent};
use cqrs_postgres::{PostgresProjection, PostgresProjector, PostgresStore, Transaction};

use crate::stores::{self, run_id, scheduled};
use crate::{BenchResult, BoxError, per_second, report, show_history};

type Shows = Repository<Show, PostgresStore>;

/// The environment variable naming the server; the benchmarks are skipped without it.
const URL_VARIABLE: &str = "CQRS_BENCH_PG_URL";

async fn store(pool_size: usize) -> Result<Option<PostgresStore>, BoxError> {
    let Ok(url) = std::env::var(URL_VARIABLE) else {
        return Ok(None);
    };
    let store = PostgresStore::with_pool_size(&url, pool_size)?;
    store.migrate().await?;
    Ok(Some(store))
}

/// Runs the PostgreSQL benchmarks `wanted` selects, or says why they are skipped.
pub(crate) async fn run(wanted: impl Fn(&str) -> bool + Send) -> BenchResult {
    let names = [
        "pg_exec_distinct_1",
        "pg_exec_distinct_8",
        "pg_exec_same",
        "pg_exec_same_uncached",
        "pg_exec_uncached_8_64",
        "pg_exec_uncached_8_256",
        "pg_rehydrate",
        "pg_rehydrate_msgpack",
        "pg_rehydrate_codec_ceiling",
        "pg_projection_catchup",
    ];
    if !names.iter().any(|name| wanted(name)) {
        return Ok(());
    }
    if std::env::var_os(URL_VARIABLE).is_none() {
        eprintln!(
            "note: pg_* benchmarks skipped: set {URL_VARIABLE} (scripts/bench-postgres does)"
        );
        return Ok(());
    }
    if wanted("pg_exec_distinct_1") {
        if let Some(store) = store(3).await? {
            stores::exec_distinct("pg", store, 1, 4_000).await?;
        }
    }
    if wanted("pg_exec_distinct_8") {
        if let Some(store) = store(10).await? {
            stores::exec_distinct("pg", store, 8, 2_000).await?;
        }
    }
    if wanted("pg_exec_same") {
        if let Some(store) = store(10).await? {
            stores::exec_same("pg", store).await?;
        }
    }
    if wanted("pg_exec_same_uncached") {
        pg_exec_same_uncached().await?;
    }
    for tasks in [64, 256] {
        if wanted(&format!("pg_exec_uncached_8_{tasks}")) {
            pg_exec_uncached_8(tasks).await?;
        }
    }
    for codec in [Codec::Json, Codec::MessagePack] {
        if wanted(&stores::rehydrate_name("pg", codec)) {
            if let Some(store) = store(4).await? {
                stores::rehydrate("pg", store, codec).await?;
            }
        }
    }
    if wanted("pg_rehydrate_codec_ceiling") {
        if let Some(store) = store(4).await? {
            stores::codec_ceiling("pg", store).await?;
        }
    }
    if wanted("pg_projection_catchup") {
        pg_projection_catchup().await?;
    }
    Ok(())
}

/// `pg_exec_same_uncached`: 32 tasks reserving one seat each time on one show, through a repository
/// with its cache off (every command loads the show, as independent nodes do), with the default
/// retry policy; the show has room for every command.
async fn pg_exec_same_uncached() -> BenchResult {
    pg_exec_uncached("pg_exec_same_uncached", 32, 100, 1).await
}

/// `pg_exec_uncached_8_{tasks}`: `tasks` tasks x 20 commands round-robin over 8 shows, cache off:
/// the shape in which the issue measured 70 to 143 commands/s with a p99 of up to 43 s.
async fn pg_exec_uncached_8(tasks: u64) -> BenchResult {
    pg_exec_uncached(&format!("pg_exec_uncached_8_{tasks}"), tasks, 20, 8).await
}

/// `tasks` tasks, each sending `per_task` `reserve(1)` round-robin over `show_count` shows with
/// room for every command, through a repository with its cache off and the default retry policy.
/// Successes per second, conflicts that reached a caller (must be 0), attempts, the p99 latency,
/// and fairness: the fewest and most commands a task got through in the first half of the run
/// (when every task still competes).
async fn pg_exec_uncached(name: &str, tasks: u64, per_task: u64, show_count: u64) -> BenchResult {
    let Some(store) = store(16).await? else {
        return Ok(());
    };
    let shows: Shows = Repository::builder(store).cache(0).build();
    let run = run_id();
    let capacity = (tasks * per_task / show_count + 1) as u32;
    let mut names = Vec::new();
    for show in 0..show_count {
        names.push(scheduled(&shows, format!("uncached{run}-{show}"), capacity).await?);
    }
    let names = Arc::new(names);
    let total = tasks * per_task;
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (shows, names, done) = (shows.clone(), Arc::clone(&names), Arc::clone(&done));
        handles.push(tokio::spawn(async move {
            let mut figures = UncachedTask::default();
            for n in 0..per_task {
                let command = ShowCommand::ReserveSeats {
                    booking: BookingId(task * per_task + n),
                    seats: 1,
                };
                let show = &names[((task + n) % show_count) as usize];
                let sent = Instant::now();
                let result = shows.execute(show.as_str(), command).await;
                figures.latencies.push(sent.elapsed());
                match result {
                    Ok(outcome) => {
                        figures.attempts += u64::from(outcome.attempts);
                        figures.max_attempts = figures.max_attempts.max(outcome.attempts);
                        if done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total / 2 {
                            figures.early += 1;
                        }
                    }
                    Err(ExecuteError::Conflict { .. }) => figures.conflicts += 1,
                    Err(other) => return Err(other),
                }
            }
            Ok::<_, ExecuteError<cqrs_examples::show::ShowError>>(figures)
        }));
    }
    let mut all = UncachedTask::default();
    let mut early = Vec::new();
    for handle in handles {
        let figures = handle.await??;
        all.attempts += figures.attempts;
        all.max_attempts = all.max_attempts.max(figures.max_attempts);
        all.conflicts += figures.conflicts;
        all.latencies.extend(figures.latencies);
        early.push(figures.early);
    }
    let elapsed = started.elapsed();
    let successes = total - all.conflicts;
    all.latencies.sort_unstable();
    let p99 = all
        .latencies
        .get(all.latencies.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    report(name, per_second(successes, elapsed), "successes/s");
    report(
        &format!("{name}_conflicts"),
        all.conflicts as f64,
        "conflicts",
    );
    report(
        &format!("{name}_attempts"),
        all.attempts as f64 / successes.max(1) as f64,
        "attempts/command (mean)",
    );
    report(
        &format!("{name}_attempts_max"),
        f64::from(all.max_attempts),
        "attempts",
    );
    report(&format!("{name}_p99"), p99.as_secs_f64() * 1000.0, "ms");
    report(
        &format!("{name}_fairness_min"),
        early.iter().copied().min().unwrap_or(0) as f64,
        "commands of the first half, fewest per task",
    );
    report(
        &format!("{name}_fairness_max"),
        early.iter().copied().max().unwrap_or(0) as f64,
        "commands of the first half, most per task",
    );
    Ok(())
}

/// What one task of [`pg_exec_uncached`] measured.
#[derive(Default)]
struct UncachedTask {
    attempts: u64,
    max_attempts: u32,
    conflicts: u64,
    early: u64,
    latencies: Vec<Duration>,
}

/// Seats reserved per show in the table `bench_reserved_{run}`, written set-based: one upsert per
/// batch with the batch's changes summed per show.
struct ReservedSeats {
    upsert: String,
    truncate: String,
}

#[cqrs_postgres::async_trait]
impl PostgresProjection for ReservedSeats {
    const NAME: &'static str = "bench_reserved_seats";
    const AGGREGATES: &'static [&'static str] = &["show"];
    type Event = ShowEvent;
    type Error = tokio_postgres::Error;

    async fn apply(
        &self,
        transaction: &Transaction<'_>,
        event: ShowEvent,
        context: &EventContext<'_>,
    ) -> Result<(), Self::Error> {
        self.apply_batch(transaction, vec![(event, *context)]).await
    }

    async fn apply_batch(
        &self,
        transaction: &Transaction<'_>,
        events: Vec<(ShowEvent, EventContext<'_>)>,
    ) -> Result<(), Self::Error> {
        let mut changes: HashMap<&str, (i64, i64)> = HashMap::new();
        for (event, context) in &events {
            let change = changes.entry(context.aggregate_id()).or_default();
            change.1 += 1;
            match event {
                ShowEvent::Scheduled { .. } => {}
                ShowEvent::SeatsReserved { seats, .. } => change.0 += i64::from(*seats),
                ShowEvent::ReservationCancelled { seats, .. } => change.0 -= i64::from(*seats),
            }
        }
        let (shows, (seats, counts)): (Vec<&str>, (Vec<i64>, Vec<i64>)) =
            changes.into_iter().unzip();
        let upsert = transaction.prepare_cached(&self.upsert).await?;
        transaction
            .execute(&upsert, &[&shows, &seats, &counts])
            .await?;
        Ok(())
    }

    async fn reset(&self, transaction: &Transaction<'_>) -> Result<(), Self::Error> {
        transaction.batch_execute(&self.truncate).await
    }
}

use cqrs_postgres::tokio_postgres;

/// `pg_projection_catchup`: 200 shows of 1,000 events each (scheduled, then 999 one-seat
/// reservations) in a fresh projection table; the time from starting the runner until its
/// checkpoint reaches the head, in batches of 5,000, read model and checkpoint in one
/// transaction per batch.
async fn pg_projection_catchup() -> BenchResult {
    const SHOWS: u64 = 200;
    const EVENTS_PER_SHOW: u64 = 1_000;
    let Some(store) = store(4).await? else {
        return Ok(());
    };
    let run = run_id();
    let mut head = cqrs_core::Position::START;
    for show in 0..SHOWS {
        let stream = StreamId::for_aggregate("show", format!("catchup{run}-{show}"))?;
        let events = show_history(0..EVENTS_PER_SHOW, EVENTS_PER_SHOW)?;
        let receipt = store
            .append(&stream, ExpectedVersion::NoStream, events)
            .await?;
        head = head.max(receipt.position.unwrap_or(head));
    }
    // A table of this run's own: the run id is a number, nothing from outside reaches the SQL.
    let table = format!("bench_reserved_{run}");
    store
        .pool()
        .get()
        .await?
        .batch_execute(&format!(
            "CREATE TABLE {table} (show text PRIMARY KEY, reserved bigint NOT NULL, \
             events bigint NOT NULL);
             DELETE FROM cqrs_projections WHERE name = 'bench_reserved_seats';"
        ))
        .await?;
    let projection = ReservedSeats {
        upsert: format!(
            "INSERT INTO {table} (show, reserved, events) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
             ON CONFLICT (show) DO UPDATE SET reserved = {table}.reserved + excluded.reserved, \
             events = {table}.events + excluded.events"
        ),
        truncate: format!("TRUNCATE {table}"),
    };
    // Every earlier event in the database (other benchmarks, earlier runs) is read too: the
    // figure counts the whole log from zero.
    let started = Instant::now();
    let handle = PostgresProjector::new(projection, store.clone())
        .runner()
        .batch_size(5_000)
        .spawn();
    handle.wait_for(head, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed();
    handle.shutdown().await;
    let client = store.pool().get().await?;
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(events), 0)::bigint FROM {table} \
                 WHERE show LIKE 'catchup{run}-%'"
            ),
            &[],
        )
        .await?;
    let (shows, events): (i64, i64) = (row.get(0), row.get(1));
    if shows as u64 != SHOWS || events as u64 != SHOWS * EVENTS_PER_SHOW {
        return Err(format!("projected {shows} shows, {events} events").into());
    }
    client.batch_execute(&format!("DROP TABLE {table}")).await?;
    report(
        "pg_projection_catchup",
        per_second(head.0, elapsed),
        "events/s",
    );
    Ok(())
}
