//! The benchmarks every durable store runs the same way, named `{prefix}_...` (`pg`, `sqlite`):
//! commands on distinct shows from 1 and 8 tasks, 8 tasks on one show, and a cold load of a
//! 100,000-event stream.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cqrs_core::{
    DomainEvent, EventStore, ExecuteError, ExpectedVersion, Repository, RetryPolicy, StreamId,
};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowEvent};

use crate::{BenchResult, BoxError, per_second, report, show_history_in};
use cqrs_core::codec::Codec;

/// A prefix that keeps this run's shows apart from earlier runs' in the same database.
pub(crate) fn run_id() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros())
        .unwrap_or(0)
}

/// `{prefix}_exec_distinct_{tasks}`: reserve(1) commands from `tasks` concurrent tasks, each on its own
/// 100 shows round-robin (cached repository: one append per command).
pub(crate) async fn exec_distinct<S: EventStore + Clone>(
    prefix: &str,
    store: S,
    tasks: u64,
    per_task: u64,
) -> BenchResult {
    const SHOWS_PER_TASK: u64 = 100;
    let run = run_id();
    let shows: Repository<Show, S> = Repository::builder(store)
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
        &format!("{prefix}_exec_distinct_{tasks}"),
        per_second(tasks * per_task, started.elapsed()),
        "cmds/s",
    );
    Ok(())
}

/// Schedules the show `id` with `capacity` seats, for the tasks that then race on it.
pub(crate) async fn scheduled<S: EventStore>(
    shows: &Repository<Show, S>,
    id: String,
    capacity: u32,
) -> Result<Arc<String>, BoxError> {
    shows
        .execute(&id, ShowCommand::Schedule { capacity })
        .await?;
    Ok(Arc::new(id))
}

/// `{prefix}_exec_same`: 8 tasks reserving one seat each time on one show with room for all of them.
pub(crate) async fn exec_same<S: EventStore + Clone>(prefix: &str, store: S) -> BenchResult {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 500;
    let show = format!("same{}", run_id());
    let shows: Repository<Show, S> = Repository::builder(store)
        .retry(RetryPolicy {
            max_attempts: 1_000,
            ..RetryPolicy::default()
        })
        .build();
    let show = scheduled(&shows, show, (TASKS * PER_TASK) as u32).await?;
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
        &format!("{prefix}_exec_same"),
        per_second(successes, elapsed),
        "successes/s",
    );
    report(
        &format!("{prefix}_exec_same_retries"),
        retries as f64,
        "retries",
    );
    report(
        &format!("{prefix}_exec_same_failures"),
        failures as f64,
        "failures",
    );
    report(
        &format!("{prefix}_exec_same_success_rate"),
        100.0 * successes as f64 / (TASKS * PER_TASK) as f64,
        "%",
    );
    Ok(())
}

/// The name of [`rehydrate`]'s figure: `{prefix}_rehydrate` for JSON payloads,
/// `{prefix}_rehydrate_msgpack` for MessagePack ones.
pub(crate) fn rehydrate_name(prefix: &str, codec: Codec) -> String {
    match codec {
        Codec::Json => format!("{prefix}_rehydrate"),
        _ => format!("{prefix}_rehydrate_{codec}"),
    }
}

/// Events in the show [`rehydrate`] loads.
pub(crate) const REHYDRATE_EVENTS: u64 = 100_000;

/// `{prefix}_rehydrate[_msgpack]`: cold load of a 100,000-event show whose payloads are in
/// `codec` (best of five loads, no cache, no snapshot).
pub(crate) async fn rehydrate<S: EventStore + Clone>(
    prefix: &str,
    store: S,
    codec: Codec,
) -> BenchResult {
    let best = best_cold_load(store, codec).await?;
    report(
        &rehydrate_name(prefix, codec),
        per_second(REHYDRATE_EVENTS, best),
        "events/s",
    );
    Ok(())
}

/// The best of five cold loads of a [`REHYDRATE_EVENTS`]-event show written to `store` in
/// `codec`.
pub(crate) async fn best_cold_load<S: EventStore + Clone>(
    store: S,
    codec: Codec,
) -> Result<Duration, BoxError> {
    let show = write_show(&store, codec).await?;
    let mut best = Duration::MAX;
    for _ in 0..5 {
        best = best.min(cold_load(&store, &show).await?);
    }
    Ok(best)
}

/// Writes a [`REHYDRATE_EVENTS`]-event show to `store` in `codec`; returns its id.
pub(crate) async fn write_show<S: EventStore>(store: &S, codec: Codec) -> Result<String, BoxError> {
    const BATCH: u64 = 1_000;
    let show = format!("rehydrate{}", run_id());
    let stream = StreamId::for_aggregate("show", &show)?;
    let mut written = 0;
    while written < REHYDRATE_EVENTS {
        let events = show_history_in(codec, written..written + BATCH, REHYDRATE_EVENTS)?;
        store.append(&stream, ExpectedVersion::Any, events).await?;
        written += BATCH;
    }
    Ok(show)
}

/// How long one cold load of `show` (written by [`write_show`]) takes: no cache, no snapshot.
pub(crate) async fn cold_load<S: EventStore + Clone>(
    store: &S,
    show: &str,
) -> Result<Duration, BoxError> {
    let shows: Repository<Show, S> = Repository::builder(store.clone()).cache(0).build();
    let started = Instant::now();
    let loaded = shows.load(show).await?;
    let took = started.elapsed();
    if u64::from(loaded.state.reserved()) != REHYDRATE_EVENTS - 1 {
        return Err(format!("rehydrated {} seats", loaded.state.reserved()).into());
    }
    Ok(took)
}

/// Decodes the [`rehydrate`] show's events in `codec` from a list of them, with nothing else
/// around (no store, no apply): the best of five, and the events.
pub(crate) fn decode_alone(codec: Codec) -> Result<(Duration, Vec<ShowEvent>), BoxError> {
    let events = show_history_in(codec, 0..REHYDRATE_EVENTS, REHYDRATE_EVENTS)?;
    let mut best = Duration::MAX;
    let mut decoded = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        decoded = events
            .iter()
            .map(|event| {
                ShowEvent::decode(
                    &event.event_type,
                    event.schema_version,
                    event.payload.as_bytes(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        best = best.min(started.elapsed());
    }
    Ok((best, decoded))
}

/// `{prefix}_rehydrate_codec_ceiling`: the ratio to [`rehydrate`]'s JSON load that a codec which
/// decoded in no time at all would reach on `store`, the JSON load less its decoding alone: the
/// most any binary codec can give that load.
pub(crate) async fn codec_ceiling<S: EventStore + Clone>(prefix: &str, store: S) -> BenchResult {
    let (decode, _) = decode_alone(Codec::Json)?;
    let load = best_cold_load(store, Codec::Json).await?;
    report(
        &format!("{prefix}_rehydrate_codec_ceiling"),
        ceiling(load, decode),
        "x the JSON load",
    );
    Ok(())
}

/// `load` over `load` less `decode`.
pub(crate) fn ceiling(load: Duration, decode: Duration) -> f64 {
    load.as_secs_f64() / load.saturating_sub(decode).as_secs_f64()
}
