//! The shop: carts, orders, payments and shipments, a checkout saga across them, a read model of
//! orders per customer, an undo done by a compensating event, and a cart as it was.
//!
//! ```text
//! cargo run --example shop                                   # in ./shop.db
//! cargo run --example shop -- --database x.db                # in x.db (or sqlite://x.db)
//! cargo run --example shop -- --memory                       # in memory, nothing kept
//! cargo run --example shop -- --database-url postgres://...  # on PostgreSQL
//! DATABASE_URL=postgres://... cargo run --example shop       # the same
//! RUST_LOG=info cargo run --example shop  # one trace line per command, on stderr
//! ```
//!
//! A SQLite file or a PostgreSQL database may be new (the schema is created) or hold earlier
//! runs, which the run continues with ids of its own; its first line says what it found. Delete
//! the file to start over. The domain is in `examples/src/shop/`.

use std::process::ExitCode;

use cqrs_examples::database::{Database, USAGE, UsageError};
use cqrs_examples::shop;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    cqrs_examples::traces::install_from_env();
    let database = match Database::from_args(std::env::args().skip(1), shop::story::DEFAULT_FILE) {
        Ok(database) => database,
        Err(UsageError::Help) => {
            println!("usage: cargo run --example shop -- [OPTIONS]\n{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    match shop::run_on(&database, &mut out).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
