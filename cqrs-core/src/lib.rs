//! The core of the framework: aggregates, the event store contract and the repository that
//! loads, decides, appends and retries.
//!
//! An aggregate is a plain struct with `&self` command handler methods and one `apply` method;
//! the macros write the command enum and the plumbing.
//!
//! ```
//! # // The seat-reservation domain, written as a user writes it.
//! ```
#![doc(html_root_url = "https://docs.rs/cqrs-core/0.1.0")]

pub mod aggregate;
pub mod event;
mod id;
pub mod store;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use crate::aggregate::{Aggregate, CommandHandler};
pub use crate::event::{
    CommandId, DecodeError, DomainEvent, EncodeError, EventId, EventTypeInfo, InvalidStreamId,
    MAX_STREAM_ID_LEN, Metadata, NewEvent, Payload, Position, RecordedEvent, StreamId, Version,
};
pub use crate::store::{
    AppendReceipt, CommandRecord, EventStore, ExpectedVersion, Snapshot, StoreError,
};

#[cfg(feature = "derive")]
pub use cqrs_derive::{Aggregate, DomainEvent, command_handler};

/// What a domain crate needs, in one import: `use cqrs_core::prelude::*;`.
pub mod prelude {
    pub use crate::aggregate::{Aggregate, CommandHandler};
    pub use crate::event::{DomainEvent, StreamId, Version};
    #[cfg(feature = "derive")]
    pub use cqrs_derive::{Aggregate, DomainEvent, command_handler};
    pub use serde::{Deserialize, Serialize};
}
