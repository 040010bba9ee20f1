//! Seat reservation: shows with a capacity, a checkout saga that confirms a paid booking or gives
//! the seats back when the card declines or the payment deadline passes, a read model of the
//! seats per show, and a crowd racing for the last seats. It ends by checking that no show is
//! oversold and that the read model equals the shows, and exits non-zero if not.
//!
//! ```text
//! cargo run --example seat_reservation                                   # in memory
//! cargo run --example seat_reservation -- --database-url postgres://...  # on PostgreSQL
//! DATABASE_URL=postgres://... cargo run --example seat_reservation       # the same
//! RUST_LOG=info cargo run --example seat_reservation  # one trace line per command, on stderr
//! ```
//!
//! On PostgreSQL the database may be empty (the schema is created) or hold earlier runs (each run
//! uses ids of its own). The story is `cqrs_examples::seat_reservation::run`.

use std::io::Write;
use std::process::ExitCode;

use std::time::Duration;

use cqrs_examples::latency::RoundTrip;
use cqrs_examples::{database, seat_reservation};
use cqrs_memstore::MemStore;

/// About what a read or an append takes against a database on the local network.
const ROUND_TRIP: Duration = Duration::from_millis(1);

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    cqrs_examples::traces::install_from_env();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), cqrs_examples::Error> {
    let mut out = std::io::stdout().lock();
    match database::database_url(std::env::args().skip(1))? {
        Some(url) => {
            writeln!(out, "On PostgreSQL.")?;
            seat_reservation::run(database::connect(&url).await?, &mut out).await?;
        }
        None => {
            writeln!(
                out,
                "In memory (pass --database-url or set DATABASE_URL for PostgreSQL)."
            )?;
            // Without a network between them, in-memory customers hardly ever overlap: give each
            // read and append a database's round trip, so the race looks as it does in production.
            let store = RoundTrip::new(MemStore::new(), ROUND_TRIP);
            seat_reservation::run(store, &mut out).await?;
        }
    }
    Ok(())
}
