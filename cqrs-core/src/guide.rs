//! The guide: how to build an event-sourced application with this framework, one chapter per
//! concept. Every code block in it is compiled and run as a test.
//!
//! 1. [Aggregates and the macros](aggregates): events, errors, state, command handlers.
//! 2. [The repository](repository): load, decide, append, retry; idempotency with command ids;
//!    snapshots; the cache of hot aggregates; past states.
//! 3. [Sagas](sagas): processes across aggregates, deadlines, compensation, never twice.
//! 4. [Projections](projections): read models, checkpoints, rebuilds, read your own writes, and
//!    the decorators for pushed deliveries.
//! 5. [The runtime](processors): one runner for projections and sagas; reconnecting, the
//!    failure policy, dead letters, the handle, leadership across nodes, health.
//! 6. [PostgreSQL](postgres): the durable store, its migrations, projections and sagas in
//!    PostgreSQL, and running several application nodes on one database.
//! 7. [Upcasting](upcasting): changing the shape of stored events, and their codec.
//! 8. [Testing](testing): given / when / then for aggregates, sagas and projections.
//! 9. [Running in production](production): traces, metrics, health, and what to alert on.
//! 10. [Running a service](service): commands and reads over HTTP with `cqrs-http`, shutdown,
//!     the admin page, and the `cqrs-admin` CLI.
//!
//! The runnable examples (`cargo run --example seat_reservation`, `cargo run --example shop`,
//! `cargo run --example shop_service`) put all of it together; their code is in the
//! repository's `examples/` directory.

#[doc = include_str!("../guide/aggregates.md")]
pub mod aggregates {}

#[doc = include_str!("../guide/repository.md")]
pub mod repository {}

#[doc = include_str!("../guide/sagas.md")]
pub mod sagas {}

#[doc = include_str!("../guide/projections.md")]
pub mod projections {}

#[doc = include_str!("../guide/processors.md")]
pub mod processors {}

#[doc = include_str!("../guide/postgres.md")]
pub mod postgres {}

#[doc = include_str!("../guide/upcasting.md")]
pub mod upcasting {}

#[doc = include_str!("../guide/testing.md")]
pub mod testing {}

#[doc = include_str!("../guide/production.md")]
pub mod production {}

#[doc = include_str!("../guide/service.md")]
pub mod service {}
