//! Seat reservation: shows with a capacity, a checkout saga that confirms a paid booking or gives
//! the seats back when the card declines or the payment deadline passes, a read model of the
//! seats per show, and a crowd racing for the last seats. It ends by checking that no show is
//! oversold and that the read model equals the shows, and exits non-zero if not.
//!
//! ```text
//! cargo run --example seat_reservation                       # in ./seat_reservation.db
//! cargo run --example seat_reservation -- --database x.db    # in x.db (or sqlite://x.db)
//! cargo run --example seat_reservation -- --memory           # in memory, nothing kept
//! cargo run --example seat_reservation -- --database-url postgres://...  # on PostgreSQL
//! DATABASE_URL=postgres://... cargo run --example seat_reservation       # the same
//! RUST_LOG=info cargo run --example seat_reservation  # one trace line per command, on stderr
//! ```
//!
//! A SQLite file or a PostgreSQL database may be new (the schema is created) or hold earlier
//! runs, which the run continues with ids of its own; its first line says what it found. Delete
//! the file to start over. The story is `cqrs_examples::seat_reservation::run_on`.

use std::process::ExitCode;

use cqrs_examples::database::{Database, USAGE, UsageError};
use cqrs_examples::seat_reservation;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    cqrs_examples::traces::install_from_env();
    let database =
        match Database::from_args(std::env::args().skip(1), seat_reservation::DEFAULT_FILE) {
            Ok(database) => database,
            Err(UsageError::Help) => {
                println!("usage: cargo run --example seat_reservation -- [OPTIONS]\n{USAGE}");
                return ExitCode::SUCCESS;
            }
            Err(error) => {
                eprintln!("error: {error}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
    let mut out = std::io::stdout().lock();
    match seat_reservation::run_on(&database, &mut out).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
