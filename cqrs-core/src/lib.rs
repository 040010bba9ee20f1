//! The core of the framework: aggregates, the event store contract, and the repository that
//! loads, decides, appends with an expected version and retries conflicts on fresh state.
//!
//! An aggregate is a plain struct with `&self` command handler methods and one `apply` method;
//! the macros write the command enum, the dispatch and the trait impls.
//!
//! ```
//! use cqrs_core::prelude::*;
//! use cqrs_memstore::MemStore;
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! pub enum CounterEvent {
//!     Incremented { by: u32 },
//! }
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! pub enum CounterError {
//!     #[error("the counter would pass its limit of {limit}")]
//!     LimitReached { limit: u32 },
//! }
//!
//! #[derive(Debug, Default, Aggregate)]
//! #[aggregate(name = "counter", event = CounterEvent, error = CounterError)]
//! pub struct Counter {
//!     value: u32,
//! }
//!
//! #[command_handler]
//! impl Counter {
//!     /// Adds `by` to the counter, up to 10.
//!     pub fn increment(&self, by: u32) -> Result<CounterEvent, CounterError> {
//!         if self.value + by > 10 {
//!             return Err(CounterError::LimitReached { limit: 10 });
//!         }
//!         Ok(CounterEvent::Incremented { by })
//!     }
//! }
//!
//! impl Counter {
//!     fn apply(&mut self, event: CounterEvent) {
//!         match event {
//!             CounterEvent::Incremented { by } => self.value += by,
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let counters = Repository::<Counter, _>::new(MemStore::new());
//! let outcome = counters.execute("clicks", CounterCommand::Increment { by: 4 }).await?;
//! assert_eq!(outcome.version, Version(1));
//!
//! let refused = counters.execute("clicks", CounterCommand::Increment { by: 7 }).await;
//! assert!(matches!(refused, Err(ExecuteError::Domain(CounterError::LimitReached { limit: 10 }))));
//!
//! // Given / when / then, without a store.
//! Counter::given([CounterEvent::Incremented { by: 9 }])
//!     .when(CounterCommand::Increment { by: 2 })
//!     .then_expect_error(CounterError::LimitReached { limit: 10 });
//! # Ok(())
//! # }
//! ```
//!
//! Beyond one aggregate: [`saga`](mod@saga) for processes across aggregates, [`projection`] for read
//! models, both run by the one [`processor`] runtime (reconnecting, dead letters, health),
//! [`upcast`] for changing stored events, [`telemetry`] for the spans and metrics it emits. The
//! [`guide`] walks through all of it, one chapter per concept, with examples that run as tests.
#![doc(html_root_url = "https://docs.rs/cqrs-core/0.1.0")]

pub mod admin;
pub mod aggregate;
mod cache;
pub mod codec;
pub mod event;
pub mod guide;
mod id;
pub mod processor;
pub mod projection;
pub mod repository;
pub mod retry;
pub mod saga;
mod sha256;
pub mod snapshot;
pub mod store;
pub mod subscription;
pub mod telemetry;
pub mod testing;
pub mod upcast;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use crate::aggregate::{Aggregate, CommandHandler};
pub use crate::event::{
    CommandId, DecodeError, DomainEvent, EncodeError, EventData, EventId, EventTypeInfo,
    InvalidAggregateName, InvalidCommandId, InvalidStreamId, MAX_AGGREGATE_NAME_LEN,
    MAX_COMMAND_ID_LEN, MAX_STREAM_ID_LEN, Metadata, NewEvent, Payload, Position, RecordedEvent,
    StreamId, Version,
};
pub use crate::repository::{
    CommandMetadata, ExecuteError, ExecuteOutcome, LoadError, Loaded, Repository, RepositoryBuilder,
};
pub use crate::retry::RetryPolicy;
pub use crate::snapshot::SnapshotPolicy;
pub use crate::store::{
    AppendReceipt, CommandRecord, EventStore, ExpectedVersion, LogBatch, LogEntry, Snapshot,
    StoreError, StreamTurn, UnreadableEvent,
};

#[cfg(feature = "derive")]
pub use cqrs_derive::{Aggregate, DomainEvent, command_handler, saga};

/// What a domain crate needs, in one import: `use cqrs_core::prelude::*;`.
pub mod prelude {
    pub use crate::aggregate::{Aggregate, CommandHandler};
    pub use crate::event::{CommandId, DomainEvent, StreamId, Version};
    pub use crate::repository::{CommandMetadata, ExecuteError, Repository};
    pub use crate::saga::{Route, Saga, SagaCommand, SagaContext, SagaTest};
    pub use crate::testing::AggregateTest;
    #[cfg(feature = "derive")]
    pub use cqrs_derive::{Aggregate, DomainEvent, command_handler, saga};
    pub use serde::{Deserialize, Serialize};
}
