//! Schema evolution: stored events are never rewritten; old shapes are upcast when read.
//!
//! Each variant of a `#[derive(DomainEvent)]` enum has a schema version (`#[event(version = N)]`,
//! 1 by default) that new events are written with. When an event stored with an older version is
//! read, the upcasters declared on the variant turn its stored JSON, step by step, into the
//! current shape before it is decoded:
//!
//! ```
//! use cqrs_core::prelude::*;
//! use cqrs_core::upcast::{UpcastError, Value};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! pub enum ShowEvent {
//!     /// Version 1 was stored as `SeatsBooked { customer, seats }`.
//!     #[event(version = 2, alias = "SeatsBooked", upcast(from = 1, with = booking_from_customer))]
//!     SeatsReserved { booking: u64, seats: u32 },
//! }
//!
//! /// v1 -> v2: the customer number became the booking number.
//! fn booking_from_customer(mut payload: Value) -> Result<Value, UpcastError> {
//!     let fields = payload.as_object_mut().ok_or_else(|| UpcastError::new("not an object"))?;
//!     let customer = fields.remove("customer").ok_or_else(|| UpcastError::new("no `customer`"))?;
//!     fields.insert("booking".into(), customer);
//!     Ok(payload)
//! }
//!
//! let old = ShowEvent::decode("SeatsBooked", 1, br#"{"customer":7,"seats":2}"#)?;
//! assert_eq!(old, ShowEvent::SeatsReserved { booking: 7, seats: 2 });
//! # Ok::<(), cqrs_core::DecodeError>(())
//! ```
//!
//! The rules:
//! - An upcaster turns a payload of version `from` into version `from + 1`. A step without an
//!   upcaster passes the payload on unchanged: a version that only added fields with
//!   `#[serde(default)]` needs none.
//! - `alias = "OldName"` (repeatable) makes events stored under a former type name decode into the
//!   variant, so an event type can be renamed without touching stored data.
//! - Upcasters see the stored JSON, not a Rust type, so an old shape whose type no longer exists
//!   can still be read.
//! - Upcasting happens inside `DomainEvent::decode`, so every read path applies it: aggregate
//!   loads, projections, sagas, and any `read_all` consumer that decodes.
//! - An upcaster that fails gives [`DecodeError::Upcast`](crate::DecodeError::Upcast) naming the
//!   version it started from; the store's error adds the stream, version and event type.
//! - A payload written by newer code (a version above the current one) is
//!   [`DecodeError::UnsupportedSchemaVersion`](crate::DecodeError::UnsupportedSchemaVersion).

use std::fmt;

/// The stored JSON an upcaster works on.
pub use serde_json::Value;

/// An upcaster: turns a payload of one schema version into the next.
pub type Upcaster = fn(Value) -> Result<Value, UpcastError>;

/// Why an upcaster could not convert a payload.
#[derive(Debug)]
pub struct UpcastError(Box<dyn std::error::Error + Send + Sync>);

impl UpcastError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        UpcastError(message.into().into())
    }

    /// An error caused by `source`.
    pub fn from_source(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        UpcastError(Box::new(source))
    }
}

impl fmt::Display for UpcastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for UpcastError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<serde_json::Error> for UpcastError {
    fn from(error: serde_json::Error) -> Self {
        UpcastError::from_source(error)
    }
}
