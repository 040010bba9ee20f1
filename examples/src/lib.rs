//! The domains and applications behind the runnable examples, shared with the tests and the
//! benchmark binary.
//!
//! - [`show`]: seat reservation for shows, where concurrent customers race for the last seats.
//! - [`payment`]: charging a card whose answer a test chooses.
//! - [`booking`]: a customer's booking and the checkout saga that reserves, charges and confirms.
//! - [`available_seats`]: the read model of seats per show.
//! - [`seat_reservation`]: the story of `cargo run --example seat_reservation`.
//! - [`shop`]: carts, orders, payments and shipments, the checkout saga across them, orders per
//!   customer, the story of `cargo run --example shop`, and the HTTP service of
//!   `cargo run --example shop_service`.
//! - [`replay`]: what a story's saga did when it caught up with earlier runs.
//! - [`database`]: a SQLite file by default, in memory with `--memory`, PostgreSQL with a URL.
//! - [`earlier_runs`]: what a store holds before a run, for the run's first line.
//! - [`latency`]: a database's round trip for the in-memory store, so races look as in production.
//! - [`traces`]: the framework's traces on stderr when `RUST_LOG` is set.
//!
//! Both stories are library functions taking any event store, so the tests run them too:
//!
//! ```
//! use cqrs_examples::seat_reservation;
//! use cqrs_memstore::MemStore;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), cqrs_examples::Error> {
//! let mut story = Vec::new();
//! let report = seat_reservation::run(MemStore::new(), &mut story).await?;
//! // `run` has checked the invariants; the report tells what happened.
//! assert!(report.shows[&report.premiere].reserved <= seat_reservation::PREMIERE_CAPACITY);
//! # Ok(())
//! # }
//! ```

pub mod available_seats;
pub mod booking;
pub mod database;
pub mod earlier_runs;
pub mod health;
pub mod latency;
pub mod payment;
pub mod replay;
pub mod seat_reservation;
pub mod shop;
pub mod show;
pub mod traces;

/// The error of the example applications: anything, boxed, with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// An invariant did not hold: the example found a bug in the framework (or in itself).
#[derive(Debug, thiserror::Error)]
#[error("invariant violated: {0}")]
pub struct InvariantViolated(pub String);
