//! HTTP for cqrs-core services on axum: commands answered with problem details, retried safely
//! with an `Idempotency-Key`, reads that see the caller's own writes, admin endpoints for the
//! processors, and a shutdown that drains them.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::extract::{Path, State};
//! use axum::routing::{get, post};
//! use axum::{Json, Router};
//! use cqrs_core::Repository;
//! use cqrs_core::processor::Processor as _;
//! use cqrs_core::projection::{MemoryReadModel, Projector};
//! use cqrs_examples::shop::order::{Order, OrderCommand};
//! use cqrs_examples::shop::orders_by_customer::{CustomerOrders, OrdersByCustomer};
//! use cqrs_http::{CaughtUp, CommandReceipt, IdempotencyKey, Problem, Processors, admin};
//! use cqrs_memstore::MemStore;
//!
//! #[derive(Clone, axum::extract::FromRef)]
//! struct App {
//!     orders: Repository<Order, MemStore>,
//!     read_model: MemoryReadModel<CustomerOrders>,
//!     processors: Processors,
//! }
//!
//! /// `POST /orders/{id}/cancel`: the receipt carries the `Consistency-Position` header.
//! async fn cancel(
//!     State(orders): State<Repository<Order, MemStore>>,
//!     Path(id): Path<String>,
//!     key: IdempotencyKey,
//!     Json(reason): Json<String>,
//! ) -> Result<CommandReceipt, Problem> {
//!     let command = OrderCommand::Cancel { order: id.clone(), reason };
//!     // `OrderError` lives in another crate, so its status is chosen here (all 409);
//!     // for your own error type, implement `DomainStatus` and write `?`.
//!     let outcome = orders
//!         .execute_with(&id, command, key.metadata())
//!         .await
//!         .map_err(|error| Problem::from_execute(error, |_| axum::http::StatusCode::CONFLICT))?;
//!     Ok(CommandReceipt::from(outcome))
//! }
//!
//! /// `GET /customers/{id}/orders`: waits until the projection covers the client's last write.
//! async fn orders_of(
//!     _: CaughtUp<OrdersByCustomer>,
//!     State(read_model): State<MemoryReadModel<CustomerOrders>>,
//!     Path(customer): Path<String>,
//! ) -> Json<Vec<String>> {
//!     let orders = read_model.read(|model| {
//!         model.orders_of(&customer).map(|orders| orders.keys().cloned().collect())
//!     });
//!     Json(orders.unwrap_or_default())
//! }
//!
//! # async fn main_() -> std::io::Result<()> {
//! let store = MemStore::new();
//! let read_model = MemoryReadModel::new();
//! let projection = Projector::new(OrdersByCustomer, store.clone(), read_model.clone())
//!     .runner()
//!     .spawn();
//! let processors = Processors::builder()
//!     .processor(projection)
//!     .wait_timeout(Duration::from_secs(2))
//!     .build();
//! let app = Router::new()
//!     .route("/orders/{id}/cancel", post(cancel))
//!     .route("/customers/{id}/orders", get(orders_of))
//!     .nest("/admin", admin::router(processors.clone()))
//!     .with_state(App { orders: Repository::new(store), read_model, processors: processors.clone() });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let shutdown = async { tokio::signal::ctrl_c().await.unwrap_or(()) };
//! let stopped = cqrs_http::serve_until(listener, app, processors, shutdown).await?;
//! println!("{} processors stopped", stopped.len());
//! # Ok(())
//! # }
//! ```
//!
//! The parts:
//!
//! - [`problem`]: [`Problem`], an RFC 9457 `application/problem+json` response, and the mapping
//!   of an [`ExecuteError`](cqrs_core::ExecuteError): refused command 422, or 409 as
//!   [`DomainStatus`] chooses; conflict after the retry budget 409; failing store 503; invalid
//!   id 400; an event that does not encode or a panicking `apply` 500.
//! - [`idempotency`]: [`IdempotencyKey`], the `Idempotency-Key` header as the command id the
//!   repository deduplicates by.
//! - [`consistency`]: [`CommandReceipt`] puts the command's position in the
//!   `Consistency-Position` header; [`ConsistencyPosition`] reads it back (or `?after=`), and
//!   [`CaughtUp`] waits for a projection to reach it (504 when it does not in time).
//! - [`processors`]: [`Processors`], the registry of the service's processor handles that the
//!   other parts reach them by.
//! - [`admin`]: status, health, dead letters and confirmed controls, as a router to nest.
//! - [`shutdown`]: [`serve_until`] a signal, then drain the processors.

pub mod admin;
pub mod consistency;
pub mod idempotency;
pub mod problem;
pub mod processors;
pub mod shutdown;

pub use crate::consistency::{
    CONSISTENCY_POSITION, CaughtUp, CommandReceipt, ConsistencyPosition, IDEMPOTENT_REPLAYED,
};
pub use crate::idempotency::{IDEMPOTENCY_KEY, IdempotencyKey};
pub use crate::problem::{DomainStatus, Problem};
pub use crate::processors::{Processors, ProcessorsBuilder};
pub use crate::shutdown::serve_until;
