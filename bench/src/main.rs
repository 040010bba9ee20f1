//! The benchmark binary: runs the seat-reservation domain against the stores and prints one
//! `name value unit` line per figure.
//!
//! Run with `cargo run --release -p cqrs-bench` (add a name, e.g. `mem_rehydrate`, to run only the
//! benchmarks whose names start with it). BENCHMARKS.md records the figures and the method.
//!
//! `CQRS_BENCH_TRACE=warn` (or `info`, or any `RUST_LOG`-style filter) installs a `tracing`
//! subscriber that formats every enabled event into a sink: what the framework's traces cost a
//! service that keeps them. Unset, no subscriber is installed.

use std::time::{Duration, Instant};

use cqrs_core::codec::Codec;
use cqrs_core::event::{Metadata, NewEvent};
use cqrs_core::prelude::{Deserialize, DomainEvent, Serialize};
use cqrs_core::{ExecuteError, Repository, RetryPolicy};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowEvent};
use cqrs_memstore::MemStore;

mod postgres;
mod projection;
mod sqlite;
mod stores;

type Shows = Repository<Show, MemStore>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BenchResult = Result<(), BoxError>;

fn report(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.2} {unit}");
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// Events `range` of the history every benchmark show gets, encoded as JSON: event 0 schedules
/// the show with `capacity` seats, event `n` reserves one seat for booking `n`.
fn show_history(
    range: std::ops::Range<u64>,
    capacity: u64,
) -> Result<Vec<NewEvent>, cqrs_core::EncodeError> {
    show_history_in(Codec::Json, range, capacity)
}

/// The show's events written with the MessagePack codec: the stored names, schema versions and
/// fields of [`ShowEvent`]'s, so that `Show` (whose enum decodes either codec) loads them as it
/// loads its own.
#[derive(Debug, Serialize, Deserialize, DomainEvent)]
#[domain_event(codec = msgpack)]
enum BinaryShowEvent {
    Scheduled {
        capacity: u32,
    },
    #[event(version = 2)]
    SeatsReserved {
        booking: BookingId,
        seats: u32,
    },
}

/// [`show_history`] in `codec`.
fn show_history_in(
    codec: Codec,
    range: std::ops::Range<u64>,
    capacity: u64,
) -> Result<Vec<NewEvent>, cqrs_core::EncodeError> {
    let capacity = capacity as u32;
    range
        .map(|n| match (codec, n) {
            (Codec::MessagePack, 0) => NewEvent::encode(
                &BinaryShowEvent::Scheduled { capacity },
                Metadata::default(),
            ),
            (Codec::MessagePack, n) => NewEvent::encode(
                &BinaryShowEvent::SeatsReserved {
                    booking: BookingId(n),
                    seats: 1,
                },
                Metadata::default(),
            ),
            (_, 0) => NewEvent::encode(&ShowEvent::Scheduled { capacity }, Metadata::default()),
            (_, n) => NewEvent::encode(
                &ShowEvent::SeatsReserved {
                    booking: BookingId(n),
                    seats: 1,
                },
                Metadata::default(),
            ),
        })
        .collect()
}

/// `mem_rehydrate_parts_*`: where a cold in-memory load of the [`stores::rehydrate`] show spends
/// its time, per event and per codec: the load itself (one store per codec, loads of the two
/// taking turns, best of seven each, so that neither codec runs on the heap the other left),
/// decoding the payloads alone ([`stores::decode_alone`]), applying the decoded events alone
/// (`Show::apply`, the domain's own work, best of five), and the rest of the load (reading the
/// store, the version checks, memory). `mem_rehydrate_codec_ceiling` is the ratio to the JSON load
/// a codec that decoded in no time at all would reach: the most any binary codec can give this
/// load.
async fn mem_rehydrate_parts() -> BenchResult {
    use cqrs_core::Aggregate as _;
    const EVENTS: u64 = stores::REHYDRATE_EVENTS;
    let nanos_per_event = |elapsed: Duration| elapsed.as_secs_f64() * 1e9 / EVENTS as f64;
    let codecs = [Codec::Json, Codec::MessagePack];
    let mut shows = Vec::new();
    for codec in codecs {
        let store = MemStore::new();
        let show = stores::write_show(&store, codec).await?;
        shows.push((store, show));
    }
    let mut loads = [Duration::MAX; 2];
    for _ in 0..7 {
        for ((store, show), best) in shows.iter().zip(&mut loads) {
            *best = (*best).min(stores::cold_load(store, show).await?);
        }
    }
    let mut decoded = Vec::new();
    let mut decodes = Vec::new();
    for codec in codecs {
        let (decode, events) = stores::decode_alone(codec)?;
        decoded = events;
        decodes.push(decode);
    }
    let mut apply = Duration::MAX;
    for _ in 0..5 {
        let events = decoded.clone();
        let started = Instant::now();
        let mut show = Show::default();
        for event in events {
            show.apply(event);
        }
        apply = apply.min(started.elapsed());
        if u64::from(show.reserved()) != EVENTS - 1 {
            return Err(format!("applied {} seats", show.reserved()).into());
        }
    }
    report(
        "mem_rehydrate_parts_apply",
        nanos_per_event(apply),
        "ns/event",
    );
    for ((codec, load), decode) in codecs.iter().zip(loads).zip(&decodes) {
        let name = stores::rehydrate_name("mem", *codec).replace("rehydrate", "rehydrate_parts");
        report(&format!("{name}_load"), nanos_per_event(load), "ns/event");
        report(
            &format!("{name}_decode"),
            nanos_per_event(*decode),
            "ns/event",
        );
        report(
            &format!("{name}_rest"),
            nanos_per_event(load.saturating_sub(*decode + apply)),
            "ns/event",
        );
    }
    report(
        "mem_rehydrate_parts_msgpack_gain",
        loads[0].as_secs_f64() / loads[1].as_secs_f64(),
        "x the JSON load",
    );
    report(
        "mem_rehydrate_codec_ceiling",
        stores::ceiling(loads[0], decodes[0]),
        "x the JSON load",
    );
    Ok(())
}

/// `mem_exec_distinct`: reserve(1) round-robin over 10,000 scheduled shows, from one task.
async fn mem_exec_distinct() -> BenchResult {
    const SHOWS: u64 = 10_000;
    const ROUNDS: u64 = 100;
    let shows: Shows = Repository::builder(MemStore::new())
        .cache(2 * SHOWS as usize)
        .build();
    for show in 0..SHOWS {
        shows
            .execute(
                show,
                ShowCommand::Schedule {
                    capacity: ROUNDS as u32,
                },
            )
            .await?;
    }
    let started = Instant::now();
    for round in 0..ROUNDS {
        for show in 0..SHOWS {
            let command = ShowCommand::ReserveSeats {
                booking: BookingId(round),
                seats: 1,
            };
            shows.execute(show, command).await?;
        }
    }
    report(
        "mem_exec_distinct",
        per_second(SHOWS * ROUNDS, started.elapsed()),
        "cmds/s",
    );
    Ok(())
}

/// `mem_exec_hot`: 10,000 sequential commands on one show; the first and last 100 timed apart.
async fn mem_exec_hot() -> BenchResult {
    const COMMANDS: u64 = 10_000;
    let shows: Shows = Repository::new(MemStore::new());
    shows
        .execute(
            0,
            ShowCommand::Schedule {
                capacity: COMMANDS as u32,
            },
        )
        .await?;
    let mut first_100 = Duration::ZERO;
    let mut last_100 = Duration::ZERO;
    let started = Instant::now();
    for booking in 0..COMMANDS {
        let command_started = Instant::now();
        shows
            .execute(
                0,
                ShowCommand::ReserveSeats {
                    booking: BookingId(booking),
                    seats: 1,
                },
            )
            .await?;
        let took = command_started.elapsed();
        if booking < 100 {
            first_100 += took;
        } else if booking >= COMMANDS - 100 {
            last_100 += took;
        }
    }
    report(
        "mem_exec_hot",
        per_second(COMMANDS, started.elapsed()),
        "cmds/s",
    );
    report("mem_exec_hot_first100", first_100.as_secs_f64() * 1e6, "us");
    report("mem_exec_hot_last100", last_100.as_secs_f64() * 1e6, "us");
    report(
        "mem_exec_hot_last100_over_first100",
        last_100.as_secs_f64() / first_100.as_secs_f64(),
        "ratio",
    );
    Ok(())
}

/// `mem_contention`: 8 tasks reserving seats on one show at once.
async fn mem_contention(name: &str, cache: usize, per_task: u64) -> BenchResult {
    const TASKS: u64 = 8;
    let retry = RetryPolicy {
        max_attempts: 100,
        ..RetryPolicy::default()
    };
    let shows: Shows = Repository::builder(MemStore::new())
        .cache(cache)
        .retry(retry)
        .build();
    shows
        .execute(
            0,
            ShowCommand::Schedule {
                capacity: (TASKS * per_task) as u32,
            },
        )
        .await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let shows = shows.clone();
        tasks.push(tokio::spawn(async move {
            let (mut successes, mut retries, mut conflicts) = (0u64, 0u64, 0u64);
            for n in 0..per_task {
                let booking = BookingId(task * per_task + n);
                match shows
                    .execute(0, ShowCommand::ReserveSeats { booking, seats: 1 })
                    .await
                {
                    Ok(outcome) => {
                        successes += 1;
                        retries += u64::from(outcome.attempts - 1);
                    }
                    Err(ExecuteError::Conflict { .. }) => conflicts += 1,
                    Err(other) => return Err(other.to_string()),
                }
            }
            Ok((successes, retries, conflicts))
        }));
    }
    let (mut successes, mut retries, mut conflicts) = (0, 0, 0);
    for task in tasks {
        let (s, r, c) = task.await??;
        successes += s;
        retries += r;
        conflicts += c;
    }
    let elapsed = started.elapsed();
    report(name, per_second(successes, elapsed), "successes/s");
    report(&format!("{name}_retries"), retries as f64, "retries");
    report(
        &format!("{name}_conflicts_surfaced"),
        conflicts as f64,
        "conflicts",
    );
    report(
        &format!("{name}_success_rate"),
        100.0 * successes as f64 / (TASKS * per_task) as f64,
        "%",
    );
    Ok(())
}

/// Installs the subscriber `CQRS_BENCH_TRACE` asks for: lines formatted as a service would
/// print them, written to a sink. Says which filter it installed.
fn install_trace_sink() -> Result<Option<String>, BoxError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let Some(directives) = std::env::var("CQRS_BENCH_TRACE")
        .ok()
        .filter(|value| !value.trim().is_empty())
    else {
        return Ok(None);
    };
    let filter = EnvFilter::builder().parse(&directives)?;
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_ansi(false)
        .with_filter(filter);
    tracing_subscriber::registry().with(lines).try_init()?;
    Ok(Some(directives))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> BenchResult {
    if let Some(filter) = install_trace_sink()? {
        eprintln!("traces: {filter}, formatted into a sink");
    }
    let filter = std::env::args().nth(1).unwrap_or_default();
    // A figure runs when its name starts with the filter: `mem` runs every in-memory figure,
    // `mem_rehydrate` both codecs, `mem_rehydrate_msgpack` that one alone.
    let wanted = move |name: &str| name.starts_with(&filter);
    if wanted("mem_exec_distinct") {
        mem_exec_distinct().await?;
    }
    if wanted("mem_exec_hot") {
        mem_exec_hot().await?;
    }
    for codec in [Codec::Json, Codec::MessagePack] {
        if wanted(&stores::rehydrate_name("mem", codec)) {
            stores::rehydrate("mem", MemStore::new(), codec).await?;
        }
    }
    if wanted("mem_rehydrate_parts") || wanted("mem_rehydrate_codec_ceiling") {
        mem_rehydrate_parts().await?;
    }
    if wanted("mem_projection_catchup") {
        projection::mem_projection_catchup().await?;
    }
    if wanted("mem_contention") || wanted("mem_contention_uncached") {
        // The default repository: its cache lets commands for one aggregate take turns.
        mem_contention("mem_contention", 1024, 2_000).await?;
        // No cache: every command loads the show and races the others; losers retry.
        mem_contention("mem_contention_uncached", 0, 250).await?;
    }
    sqlite::run(&wanted).await?;
    // The PostgreSQL benchmarks run in a spawned task, on a worker thread, as a service's request
    // handlers do. Run by `block_on` itself (the body of this function), the measured code would
    // sit on the main thread while the connections' tasks run on the workers, and every batch of
    // rows a query returns would cross threads: pg_rehydrate measured 0.74-0.87 M events/s that
    // way against 1.23-1.31 M from a spawned task.
    tokio::spawn(postgres::run(wanted)).await?
}
