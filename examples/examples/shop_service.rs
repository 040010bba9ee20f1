//! The shop served over HTTP: carts and orders as `POST` routes with an `Idempotency-Key`, the
//! orders per customer as `GET` routes that see the caller's own writes (`Consistency-Position`),
//! and the admin endpoints under `/admin`. Ctrl-C or SIGTERM stops it: it finishes the requests
//! in flight, drains the processors, closes the store, and says so.
//!
//! ```text
//! cargo run --example shop_service                                # in ./shop_service.db
//! SHOP_ADDR=0.0.0.0:8080 cargo run --example shop_service         # another address
//! cargo run --example shop_service -- --database x.db             # in x.db (or sqlite://x.db)
//! cargo run --example shop_service -- --memory                    # in memory, nothing kept
//! DATABASE_URL=postgres://... cargo run --example shop_service    # on PostgreSQL
//! RUST_LOG=info cargo run --example shop_service   # one trace line per command, on stderr
//! ```
//!
//! The routes are listed in `cqrs_examples::shop::service`; it prints a few `curl` calls to
//! start with.

use std::process::ExitCode;

use cqrs_core::EventStore;
use cqrs_examples::Error;
use cqrs_examples::database::{self, Database, USAGE, UsageError};
use cqrs_examples::earlier_runs;
use cqrs_examples::shop::service::{self, ShopService};
use cqrs_examples::shop::story::AGGREGATES;
use cqrs_memstore::MemStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    cqrs_examples::traces::install_from_env();
    let database = match Database::from_args(std::env::args().skip(1), service::DEFAULT_FILE) {
        Ok(database) => database,
        Err(UsageError::Help) => {
            println!(
                "usage: [{}=ADDR] cargo run --example shop_service -- [OPTIONS]\n{USAGE}\n  \
                 {:<21} the address to listen on (default {})",
                service::ADDR_VAR,
                service::ADDR_VAR,
                service::DEFAULT_ADDR
            );
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let addr = std::env::var(service::ADDR_VAR)
        .ok()
        .filter(|addr| !addr.is_empty())
        .unwrap_or_else(|| service::DEFAULT_ADDR.to_owned());
    match run(&database, &addr).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(database: &Database, addr: &str) -> Result<(), Error> {
    let listener = TcpListener::bind(addr).await.map_err(|error| {
        format!(
            "cannot listen on {addr} (set {}): {error}",
            service::ADDR_VAR
        )
    })?;
    match database {
        Database::Sqlite(path) => {
            let store = database::open_sqlite(path).await?;
            serve(store.clone(), database, listener).await?;
            // Every request and processor is done with the store: the file alone holds the
            // events now, SQLite's `-wal` and `-shm` files are gone.
            store.close().await?;
            println!("Closed {}: the file holds everything.", path.display());
        }
        Database::Memory => serve(MemStore::new(), database, listener).await?,
        Database::Postgres(url) => serve(database::connect(url).await?, database, listener).await?,
    }
    Ok(())
}

/// Serves the shop on `store` until Ctrl-C or SIGTERM, then drains it.
async fn serve<S: EventStore + Clone>(
    store: S,
    database: &Database,
    listener: TcpListener,
) -> Result<(), Error> {
    let mut out = std::io::stdout();
    earlier_runs::introduce(&store, database, &AGGREGATES, &mut out).await?;
    let service = ShopService::new(store);
    let base = format!("http://{}", listener.local_addr()?);
    print_banner(&base);

    let (stopped_by, signal_name) = oneshot::channel();
    let signal = async move {
        let name = shutdown_signal().await;
        let _ = stopped_by.send(name);
    };
    let statuses = service::serve(service, listener, signal).await?;
    let name = signal_name.await.unwrap_or("the shutdown signal");
    let drained: Vec<String> = statuses
        .iter()
        .map(|status| {
            format!(
                "{} {:?} at position {} of {}",
                status.name, status.state, status.checkpoint, status.head
            )
        })
        .collect();
    println!(
        "\n{name}: stopped taking connections, finished the requests in flight, and drained the \
         processors ({}).",
        drained.join("; ")
    );
    Ok(())
}

fn print_banner(base: &str) {
    let json = "-H 'content-type: application/json'";
    println!("The shop is open on {base}");
    println!("Admin page: {base}/admin (JSON: {base}/admin/status, {base}/admin/health)");
    println!("\nTry (a retry with the same Idempotency-Key has no second effect):");
    println!(
        "  curl -i -X POST {base}/carts/cart-1 {json} -H 'Idempotency-Key: open-cart-1' \
         -d '{{\"customer\":\"ada\"}}'"
    );
    println!(
        "  curl -i -X POST {base}/carts/cart-1/items {json} -H 'Idempotency-Key: mug-cart-1' \
         -d '{{\"product\":\"mug\",\"quantity\":2,\"unit_price\":850}}'"
    );
    println!(
        "  curl -i -X POST {base}/carts/cart-1/checkout {json} -H 'Idempotency-Key: \
         checkout-cart-1' -d '{{\"card\":\"Good\",\"address\":{{\"city\":\"Utrecht\",\
         \"country\":\"NL\"}}}}'"
    );
    println!(
        "then read your write, with the Consistency-Position the checkout answered:\n  \
         curl -i {base}/customers/ada/orders -H 'Consistency-Position: N'"
    );
    println!("\nCtrl-C (or SIGTERM) stops the shop.");
}

/// Waits for Ctrl-C, or SIGTERM on Unix; returns its name.
async fn shutdown_signal() -> &'static str {
    let interrupt = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            // No handler could be installed: only SIGTERM (or nothing) stops the shop then.
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
                "SIGTERM"
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<&'static str>();
    tokio::select! {
        name = interrupt => name,
        name = terminate => name,
    }
}
