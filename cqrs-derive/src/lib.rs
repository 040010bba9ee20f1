//! The macros that turn plain Rust into an event-sourced aggregate: `#[derive(Aggregate)]`,
//! `#[derive(DomainEvent)]` and `#[command_handler]`. Use them through `cqrs_core`, which
//! re-exports them (`use cqrs_core::prelude::*;`).
//!
//! ```
//! use cqrs_core::prelude::*;
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! pub enum ShowEvent {
//!     Scheduled { capacity: u32 },
//!     #[event(name = "SeatsReserved", version = 2)]
//!     SeatsReserved { booking: u64, seats: u32 },
//! }
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! pub enum ShowError {
//!     #[error("sold out")]
//!     SoldOut { requested: u32, available: u32 },
//! }
//!
//! #[derive(Debug, Default, Aggregate)]
//! #[aggregate(name = "show", event = ShowEvent, error = ShowError)]
//! pub struct Show {
//!     capacity: u32,
//!     reserved: u32,
//! }
//!
//! impl Show {
//!     // The apply side: one `match`, so rustc checks that every event is handled.
//!     fn apply(&mut self, event: ShowEvent) {
//!         match event {
//!             ShowEvent::Scheduled { capacity } => self.capacity = capacity,
//!             ShowEvent::SeatsReserved { seats, .. } => self.reserved += seats,
//!         }
//!     }
//! }
//!
//! #[command_handler]
//! impl Show {
//!     /// Puts the show on sale.
//!     pub fn schedule(&self, capacity: u32) -> ShowEvent {
//!         ShowEvent::Scheduled { capacity }
//!     }
//!
//!     /// Takes seats for a booking.
//!     pub fn reserve_seats(&self, booking: u64, seats: u32) -> Result<ShowEvent, ShowError> {
//!         let available = self.capacity - self.reserved;
//!         if seats > available {
//!             return Err(ShowError::SoldOut { requested: seats, available });
//!         }
//!         Ok(ShowEvent::SeatsReserved { booking, seats })
//!     }
//! }
//!
//! // Generated: `pub enum ShowCommand { Schedule { capacity: u32 }, ReserveSeats { booking: u64, seats: u32 } }`
//! let command = ShowCommand::ReserveSeats { booking: 7, seats: 2 };
//! # let _ = command;
//! ```
//!
//! # Which methods are command handlers
//!
//! In an `impl` block marked `#[command_handler]`:
//!
//! - every method with a visibility (`pub`, `pub(crate)`, `pub(super)`, ...) is a command handler;
//! - a private method (no visibility) is a helper and is left untouched;
//! - `#[command(skip)]` excludes a method with a visibility (a state query such as `is_full`).
//!
//! A handler takes `&self` (deciding never changes state: that is `apply`'s job), then its
//! arguments, each a plain `name: Type` with an owned type: they become the fields of the command
//! variant. One argument may be marked `#[services]` and typed `&Services` to receive what the
//! handler needs from outside. A handler returns `Result<E, Error>`, `Result<Vec<E>, Error>`,
//! `Result<Option<E>, Error>` (`None`: nothing to do), or `E`, `Vec<E>`, `Option<E>` when it
//! cannot fail, where `E` and `Error` are the aggregate's event and error types. Handlers may be
//! `async`.
//!
//! # How `apply` is wired
//!
//! `Aggregate::apply` calls an inherent method of the aggregate, `apply` unless
//! `#[aggregate(apply = other_name)]` says otherwise, with the signature
//! `fn apply(&mut self, event: Event)`. Write it as one `match` on the event: rustc then reports
//! an unhandled event variant (E0004) on that `match`. Forgetting the method is a compile error,
//! never a silent recursion into the trait method (see [`macro@Aggregate`]).
//!
//! # Debugging
//!
//! Set `CQRS_DERIVE_DEBUG=1` while building to print every expansion to stderr.

mod aggregate;
mod attr;
mod command_handler;
mod ctxt;
mod domain_event;
mod expansion_debug;
mod impl_block;
mod saga;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `cqrs_core::Aggregate` for a struct that holds an aggregate's state.
///
/// ```
/// # use cqrs_core::prelude::*;
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// # pub enum CounterEvent { Incremented { by: u32 } }
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("overflow")]
/// # pub struct CounterError;
/// #[derive(Debug, Default, Aggregate)]
/// #[aggregate(name = "counter", event = CounterEvent, error = CounterError, snapshot_version = 2)]
/// pub struct Counter {
///     value: u32,
/// }
///
/// impl Counter {
///     fn apply(&mut self, event: CounterEvent) {
///         match event {
///             CounterEvent::Incremented { by } => self.value += by,
///         }
///     }
/// }
///
/// assert_eq!(<Counter as Aggregate>::NAME, "counter");
/// assert_eq!(<Counter as Aggregate>::SNAPSHOT_VERSION, 2);
/// ```
///
/// # `#[aggregate(...)]`
///
/// - `name = "show"` (required): the aggregate's name, the prefix of its stream ids
///   (`show-42`): 1 to 64 bytes of ASCII letters, digits, `_` and `.`. A `-` would be taken for
///   the separator between name and id, so `order-line` is refused in favour of `order_line`.
/// - `event = ShowEvent` (required): its `#[derive(DomainEvent)]` enum.
/// - `error = ShowError` (required): the domain error its command handlers return.
/// - `snapshot_version = 2` (optional, default 1): the schema version of its snapshots; raise
///   it when the state's shape changes.
/// - `apply = on_event` (optional, default `apply`): the inherent method
///   `fn(&mut self, event: Event)` that `Aggregate::apply` calls.
///
/// An unknown or repeated key is an error on that key. The initial state is `Default::default()`.
/// A generic aggregate must be `Default + Send + Sync + 'static` for every parameter; without
/// those bounds the error points at the struct.
///
/// The generated `Aggregate::apply` calls the inherent method. Forgetting to write it is a compile
/// error on the struct ("`Show` has no `apply` method to fold its events into its state"), never
/// a call of `Aggregate::apply` into itself: the macro tells the inherent method apart from the
/// trait method at compile time.
#[proc_macro_derive(Aggregate, attributes(aggregate))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let expansion = aggregate::derive(&input);
    expansion_debug::print("#[derive(Aggregate)]", &input.ident, expansion).into()
}

/// Implements `cqrs_core::DomainEvent` for an enum with one variant per event.
///
/// ```
/// use cqrs_core::prelude::*;
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// pub enum ShowEvent {
///     Scheduled { capacity: u32 },
///     // Pins the stored name: renaming the variant later does not change stored data.
///     #[event(name = "SeatsReserved", version = 2)]
///     Reserved { booking: u64, seats: u32 },
///     Renamed(String),
///     Closed,
/// }
///
/// let event = ShowEvent::Reserved { booking: 7, seats: 2 };
/// assert_eq!(event.event_type(), "SeatsReserved");
/// assert_eq!(event.schema_version(), 2);
/// let payload = event.encode()?;
/// assert_eq!(payload.as_bytes(), br#"{"booking":7,"seats":2}"#);
/// assert_eq!(ShowEvent::decode("SeatsReserved", 2, payload.as_bytes())?, event);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Stored names and versions
///
/// A variant's stored name is its Rust name unless `#[event(name = "...")]` pins it; two
/// variants with the same stored name are an error. `#[event(version = N)]` (a positive integer,
/// default 1) is the schema version new events of that variant are written with.
///
/// # The payload
///
/// The payload is the JSON of the variant's fields only, never its name: a struct variant is an
/// object, a newtype variant its inner value, a tuple variant an array, a unit variant `null`.
/// The fields' `#[serde(...)]` attributes apply (`rename`, `default`, `with`, ...); attributes on
/// the enum or its variants (`rename_all`, `tag`, ...) shape only the enum's own `Serialize`, not
/// the stored payload.
///
/// `decode(event_type, schema_version, payload)` fails with `DecodeError::UnknownEventType` for
/// a name no variant has, `DecodeError::UnsupportedSchemaVersion` for a version newer than the
/// variant's, `DecodeError::Upcast` when an upcaster fails, and `DecodeError::InvalidPayload`
/// when the payload does not fit.
///
/// # Older versions and former names
///
/// - `#[event(alias = "OldName")]` (repeatable): events stored under a former name decode into
///   this variant. An alias may not be another variant's name or alias.
/// - `#[event(version = N, upcast(from = K, with = function))]` (repeatable, `K < N`, one per
///   `K`): a payload stored with version `K` is passed through
///   `function(serde_json::Value) -> Result<serde_json::Value, cqrs_core::upcast::UpcastError>`
///   on its way to version `K + 1`. A step without an upcaster passes the payload on unchanged
///   (enough for a version that only added `#[serde(default)]` fields). Payloads of the current
///   version never take this slower path. See `cqrs_core::upcast` for an example.
///
/// # The codec
///
/// `#[domain_event(codec = msgpack)]` on the enum writes new payloads as MessagePack (with the
/// `msgpack` feature of cqrs-core) instead of JSON (`codec = json`, the default). Every payload
/// records its codec, and decoding reads both whatever the enum's codec, so an enum can change
/// codec with events of the other already stored; upcasters see either as JSON. See
/// `cqrs_core::codec`.
///
/// The enum cannot be generic.
#[proc_macro_derive(DomainEvent, attributes(event, domain_event, serde))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let expansion = domain_event::derive(&input);
    expansion_debug::print("#[derive(DomainEvent)]", &input.ident, expansion).into()
}

/// Generates the command enum and `cqrs_core::CommandHandler` from the command handler methods
/// of an inherent `impl` block.
///
/// ```
/// # use cqrs_core::prelude::*;
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// # pub enum ShowEvent { Scheduled { capacity: u32 }, Priced { cents: u64 } }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # pub enum ShowError { #[error("not scheduled")] NotScheduled }
/// # #[derive(Debug, Default, Aggregate)]
/// # #[aggregate(name = "show", event = ShowEvent, error = ShowError)]
/// # pub struct Show { capacity: u32 }
/// # impl Show { fn apply(&mut self, event: ShowEvent) { if let ShowEvent::Scheduled { capacity } = event { self.capacity = capacity } } }
/// pub struct PriceList {
///     cents_per_seat: u64,
/// }
///
/// #[command_handler]
/// impl Show {
///     /// Puts the show on sale.
///     pub fn schedule(&self, capacity: u32) -> Result<ShowEvent, ShowError> {
///         Ok(ShowEvent::Scheduled { capacity })
///     }
///
///     /// Prices seats with the services' price list.
///     pub async fn price(&self, #[services] prices: &PriceList, seats: u32) -> Result<Option<ShowEvent>, ShowError> {
///         if seats == 0 {
///             return Ok(None); // nothing to record
///         }
///         Ok(Some(ShowEvent::Priced { cents: prices.cents_per_seat * u64::from(seats) }))
///     }
///
///     /// A state query, not a command.
///     #[command(skip)]
///     pub fn is_scheduled(&self) -> bool {
///         self.capacity > 0
///     }
///
///     // Private: a helper, left untouched.
///     fn helper(&self) {}
/// }
///
/// // Generated:
/// // pub enum ShowCommand { Schedule { capacity: u32 }, Price { seats: u32 } }
/// // impl CommandHandler for Show { type Command = ShowCommand; type Services = PriceList; ... }
/// let _ = ShowCommand::Price { seats: 2 };
/// ```
///
/// # Arguments
///
/// `#[command_handler(command = Name, services = Type)]`, both optional: the command enum's
/// name (default: the aggregate's name followed by `Command`) and the services type (default:
/// the type behind the handlers' `#[services]` arguments, or `()` when none has one).
///
/// # The command enum
///
/// It is `pub`, because the attribute cannot see the aggregate's visibility, and derives
/// `Debug`, `Clone`, `PartialEq`, `Serialize` and `Deserialize`, so every argument type must
/// too. A handler `reserve_seats(&self, booking: u64, seats: u32)` gives the variant
/// `ReserveSeats { booking: u64, seats: u32 }` (a unit variant when there are no arguments),
/// with the method's doc comments. Two methods that give the same variant are an error. The
/// enum is not generic: arguments cannot use the impl's type parameters.
///
/// The rules for which methods are handlers, their receiver, arguments and return types are in
/// the [crate docs](crate). Put `#[command_handler]` on one impl block per aggregate: a second
/// block for the same type in the same module is refused, with an error that names the methods
/// to move into the first one.
#[proc_macro_attribute]
pub fn command_handler(args: TokenStream, input: TokenStream) -> TokenStream {
    let expansion = command_handler::attribute(args.into(), input.into());
    expansion_debug::print("#[command_handler]", &"impl", expansion).into()
}

/// Makes an impl block a saga (process manager): `#[saga(name = "checkout")]`.
///
/// The impl block holds `fn route(input: &CheckoutInput) -> Route`, which says which instance each
/// event goes to, and one method per aggregate type the saga listens to, marked with the aggregate:
/// `#[on(Show)] fn on_show(&mut self, event: ShowEvent, saga: &mut SagaContext)`. Optional
/// `fn on_deadline(&mut self, name: &str, saga: &mut SagaContext)` and
/// `fn on_rejected(&mut self, rejection: Rejection, saga: &mut SagaContext)` handle deadlines and
/// commands the target aggregate refused. Handlers return `()` or `Result<(), E>`.
///
/// Generates `pub enum CheckoutInput { Show(ShowEvent), ... }` (one variant per handler, named after
/// the aggregate; `#[saga(input = Name)]` renames it), `From` each event type, and
/// `cqrs_core::saga::Saga`. See `cqrs_core::saga` for an example.
#[proc_macro_attribute]
pub fn saga(args: TokenStream, input: TokenStream) -> TokenStream {
    let expansion = saga::attribute(args.into(), input.into());
    expansion_debug::print("#[saga]", &"impl", expansion).into()
}
