//! The shop: carts, orders, payments and shipments, a checkout saga across them, a read model of
//! orders per customer, an undo done by a compensating event, and a cart as it was.
//!
//! ```text
//! cargo run --example shop                                   # in memory
//! cargo run --example shop -- --database-url postgres://...  # on PostgreSQL
//! DATABASE_URL=postgres://... cargo run --example shop       # the same
//! RUST_LOG=info cargo run --example shop  # one trace line per command, on stderr
//! ```
//!
//! On PostgreSQL the database may be empty (the schema is created) or hold earlier runs (each run
//! uses ids of its own). The domain is in `examples/src/shop/`.

use std::io::Write;
use std::process::ExitCode;

use cqrs_examples::{database, shop};
use cqrs_memstore::MemStore;

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
            shop::run(database::connect(&url).await?, &mut out).await?;
        }
        None => {
            writeln!(
                out,
                "In memory (pass --database-url or set DATABASE_URL for PostgreSQL)."
            )?;
            shop::run(MemStore::new(), &mut out).await?;
        }
    }
    Ok(())
}
