//! Projections: read models kept up to date from the global log, with their checkpoint committed
//! together with every change, so that a crash never loses nor double-applies an event.
//!
//! A projection is a plain type that says which events it reads ([`Projection::Event`]), which
//! read model it updates ([`Projection::ReadModel`], keyed however you like) and how one event
//! changes it ([`Projection::apply`]). A [`Projector`] is the projection as a
//! [processor](crate::processor): run by the one
//! [`ProcessorRunner`](crate::processor::ProcessorRunner), it follows the log from the
//! projection's checkpoint, applies the events in batches and commits each batch with its
//! checkpoint (and the events it parked) through a [`ProjectionStore`] (the in-memory one is
//! [`MemoryReadModel`]); then it tails the log without polling. The
//! [`ProcessorHandle`](crate::processor::ProcessorHandle) it returns tells the status, waits
//! for the position a command wrote (read your own writes), rebuilds, pauses and shuts down.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use cqrs_core::prelude::*;
//! use cqrs_core::processor::Processor as _;
//! use cqrs_core::projection::{EventContext, MemoryReadModel, Projection, Projector};
//! use cqrs_memstore::MemStore;
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! pub enum ShowEvent {
//!     Scheduled { capacity: u32 },
//!     SeatsReserved { seats: u32 },
//! }
//!
//! /// Seats still on sale, per show id.
//! struct AvailableSeats;
//!
//! impl Projection for AvailableSeats {
//!     const NAME: &'static str = "available_seats";
//!     // Every event of a `show-...` stream must decode; other streams are not read.
//!     const AGGREGATES: &'static [&'static str] = &["show"];
//!     type Event = ShowEvent;
//!     type ReadModel = BTreeMap<String, u32>;
//!     type Error = Infallible;
//!
//!     fn apply(
//!         &self,
//!         seats: &mut Self::ReadModel,
//!         event: ShowEvent,
//!         context: &EventContext<'_>,
//!     ) -> Result<(), Infallible> {
//!         let show = context.aggregate_id().to_owned();
//!         match event {
//!             ShowEvent::Scheduled { capacity } => {
//!                 seats.insert(show, capacity);
//!             }
//!             ShowEvent::SeatsReserved { seats: taken } => {
//!                 *seats.entry(show).or_default() -= taken;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemStore::new();
//! let read_model = MemoryReadModel::new();
//! let projection = Projector::new(AvailableSeats, store.clone(), read_model.clone())
//!     .runner()
//!     .spawn();
//!
//! let stream = StreamId::for_aggregate("show", "42")?;
//! let events = [ShowEvent::Scheduled { capacity: 10 }, ShowEvent::SeatsReserved { seats: 3 }]
//!     .iter()
//!     .map(|event| cqrs_core::NewEvent::encode(event, Default::default()))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let receipt = store.append(&stream, cqrs_core::ExpectedVersion::NoStream, events).await?;
//!
//! // Read your own write: wait until the projection has applied what the append wrote.
//! projection.wait_for(receipt.position, Duration::from_secs(5)).await?;
//! assert_eq!(read_model.read(|seats| seats.get("42").copied()), Some(7));
//!
//! let status = projection.shutdown().await;
//! assert_eq!(status.lag, 0);
//! # Ok(())
//! # }
//! # use cqrs_core::EventStore;
//! ```
//!
//! Events from several aggregate types go into one enum that implements [`ProjectionEvent`] by
//! routing on the stream's aggregate name; see [`ProjectionEvent`] for a product list fed by
//! vendor and product events.
//!
//! For handlers fed by a message bus instead of the log, [`decorators`] has the three classic
//! wrappers: ordering by per-stream version, funnelling onto one task, and waiting for
//! dependencies. [`testing`] has given / then for projections.

use std::ops::Deref;

use crate::event::{DecodeError, DomainEvent, RecordedEvent, StreamId};
use crate::store::StoreError;

mod checkpoint;
pub mod decorators;
mod memory;
mod projector;
pub mod testing;

pub use self::checkpoint::{Applied, ProjectionCommit, ProjectionStore};
pub use self::memory::MemoryReadModel;
pub use self::projector::{ProjectionRunner, Projector};

/// A read model and how events change it.
///
/// The runner reads the streams of [`Projection::AGGREGATES`] from the global log; each of
/// their events is decoded through [`Projection::Event`]'s routing and passed to
/// [`apply`](Projection::apply), one at a time, in log order. Events of other streams only move
/// the checkpoint. An event of a listed stream that does not decode (an unknown type included)
/// is that event's failure, under the runner's
/// [`FailurePolicy`](crate::processor::FailurePolicy): never passed over silently.
///
/// `apply` must be deterministic and must not reach outside the read model: a rebuild replays
/// the same events into a fresh model and has to arrive at the same state. An `apply` that
/// returns an error (or panics) must leave the model as it found it, so that retrying or
/// skipping the event starts from a clean state; check first, then change.
///
/// See the [module documentation](self) for a complete example.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a projection",
    label = "this type does not implement `Projection`",
    note = "implement `cqrs_core::projection::Projection` for it: a name, the events it reads, its read model and `apply`"
)]
pub trait Projection: Send + Sync + 'static {
    /// The projection's stable name. Checkpoints are stored under it, and the status shows it.
    const NAME: &'static str;

    /// The aggregate types whose streams this projection reads (the part of the stream id before
    /// the first `-`, e.g. `"show"` for `show-42`); `&[]` reads every stream.
    ///
    /// Events of other streams are passed over before they are decoded, and every event of a
    /// listed stream must route to [`Projection::Event`]: one that does not (an unknown event
    /// type) is a decode failure that goes through the runner's failure policy.
    const AGGREGATES: &'static [&'static str];

    /// The events this projection reads: a [`DomainEvent`] enum, or an enum of several of them
    /// (see [`ProjectionEvent`]).
    type Event: ProjectionEvent;

    /// The read model: any type, keyed however the queries want it.
    type ReadModel: Send + Sync + 'static;

    /// Why [`apply`](Projection::apply) can fail; [`std::convert::Infallible`] when it cannot.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Changes `model` for one event. `context` tells where the event was recorded (stream,
    /// aggregate id, version, position, metadata).
    fn apply(
        &self,
        model: &mut Self::ReadModel,
        event: Self::Event,
        context: &EventContext<'_>,
    ) -> Result<(), Self::Error>;
}

/// The events a projection reads, and how a stored event is recognised as one of them.
///
/// Every [`DomainEvent`] enum is one: an event whose stored type name is one of the enum's
/// ([`DomainEvent::EVENT_TYPES`]) is decoded, others are not the enum's (`Ok(None)`), which for
/// an event of a stream the projection reads is an unknown event type. For a projection fed by
/// several aggregate types, write an enum with one variant per aggregate and route on the
/// stream's aggregate name:
///
/// ```
/// use cqrs_core::prelude::*;
/// use cqrs_core::projection::{aggregate_of, ProjectionEvent};
/// use cqrs_core::{RecordedEvent, StoreError};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// pub enum VendorEvent {
///     Registered { name: String },
///     Blocked,
/// }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// pub enum ProductEvent {
///     Listed { vendor: String, title: String },
///     Renamed { title: String },
/// }
///
/// /// What the product list reads.
/// pub enum CatalogEvent {
///     Vendor(VendorEvent),
///     Product(ProductEvent),
/// }
///
/// impl ProjectionEvent for CatalogEvent {
///     fn route(event: &RecordedEvent) -> Result<Option<Self>, StoreError> {
///         Ok(match aggregate_of(&event.stream) {
///             "vendor" => Some(CatalogEvent::Vendor(event.decode()?)),
///             "product" => Some(CatalogEvent::Product(event.decode()?)),
///             _ => None,
///         })
///     }
/// }
/// ```
///
/// Decoding goes through [`RecordedEvent::decode`], so schema upcasting applies here as on every
/// other read path, and a payload that does not decode is a typed error that names the stream,
/// version and type; the runner hands it to its failure policy.
pub trait ProjectionEvent: Sized + Send + 'static {
    /// The event `event` is to this projection: `Ok(None)` for an event that is not one of its
    /// events (an unknown type, for a stream it reads), an error for one that does not decode.
    fn route(event: &RecordedEvent) -> Result<Option<Self>, StoreError>;
}

impl<E: DomainEvent> ProjectionEvent for E {
    fn route(event: &RecordedEvent) -> Result<Option<Self>, StoreError> {
        if E::recognizes(&event.event_type) {
            event.decode().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The aggregate name of a stream: [`StreamId::aggregate`], the part of its id before the first
/// `-` (`"show"` for `show-42`).
pub fn aggregate_of(stream: &StreamId) -> &str {
    stream.aggregate()
}

/// The aggregate id of a stream: [`StreamId::aggregate_id`], the part of its id after the first
/// `-` (`"42"` for `show-42`).
pub fn aggregate_id_of(stream: &StreamId) -> &str {
    stream.aggregate_id()
}

/// Where an event handed to [`Projection::apply`] was recorded. Dereferences to the
/// [`RecordedEvent`] (stream, version, position, event id, metadata).
#[derive(Debug, Clone, Copy)]
pub struct EventContext<'a> {
    recorded: &'a RecordedEvent,
}

impl<'a> EventContext<'a> {
    /// The context of `recorded`.
    pub fn new(recorded: &'a RecordedEvent) -> Self {
        EventContext { recorded }
    }

    /// The aggregate type of the event's stream (`"show"` for `show-42`).
    pub fn aggregate(&self) -> &'a str {
        self.recorded.stream.aggregate()
    }

    /// The aggregate id of the event's stream (`"42"` for `show-42`).
    pub fn aggregate_id(&self) -> &'a str {
        self.recorded.stream.aggregate_id()
    }

    /// The stored event.
    pub fn recorded(&self) -> &'a RecordedEvent {
        self.recorded
    }
}

impl Deref for EventContext<'_> {
    type Target = RecordedEvent;

    fn deref(&self) -> &RecordedEvent {
        self.recorded
    }
}

/// Decodes `recorded`, an event of one of the streams of `aggregates` (every stream when it is
/// empty), into `E`: an event `E` does not recognize is an unknown event type, named with its
/// stream, version and type. Processors on other stores decode with it, as
/// [`Projection::AGGREGATES`] documents.
pub fn route_from<E: ProjectionEvent>(
    aggregates: &[&str],
    recorded: &RecordedEvent,
) -> Result<E, StoreError> {
    if !recorded.stream.is_of_any(aggregates) {
        return Err(unknown_event_type(recorded));
    }
    decode_read(recorded)
}

/// Decodes `recorded`, an event of a stream the processor reads (the runner has checked), into
/// `E`: one `E` does not recognize is an unknown event type.
pub(crate) fn decode_read<E: ProjectionEvent>(recorded: &RecordedEvent) -> Result<E, StoreError> {
    E::route(recorded)?.ok_or_else(|| unknown_event_type(recorded))
}

fn unknown_event_type(recorded: &RecordedEvent) -> StoreError {
    StoreError::Decode {
        stream: recorded.stream.clone(),
        version: recorded.version,
        event_type: recorded.event_type.to_string(),
        source: DecodeError::UnknownEventType {
            event_type: recorded.event_type.to_string(),
        },
    }
}
