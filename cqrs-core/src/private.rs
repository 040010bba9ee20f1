//! What generated code calls. Not part of the public API: no stability promise.
//!
//! The macros in `cqrs-derive` only ever name items through `::cqrs_core::__private::...` and
//! `::core::...`, so user code that shadows `Result`, `Vec` or `Option` cannot break them.

use std::fmt;
use std::marker::PhantomData;

pub use serde;
pub use serde_json;
pub use std::vec::Vec;
pub use tracing;

use crate::aggregate::Aggregate;
use crate::event::{DecodeError, DomainEvent, EncodeError, EventTypeInfo, Payload};

/// The SHA-256 of `bytes` in lowercase hexadecimal, for the stores' migration checksums.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::sha256::sha256_hex(bytes)
}

/// The hasher of the maps keyed by stream and command ids, in the repository's cache and in the
/// stores: rapidhash, seeded at random per map, costs a third of SipHash on ids like `show-1234`
/// (5.2 against 13.9 ns a lookup), and its seed keeps ids chosen by an attacker from colliding on
/// purpose.
pub type IdHasher = rapidhash::fast::RandomState;

/// The JSON serializer `#[derive(DomainEvent)]` writes a payload with.
pub type PayloadSerializer<'a> = serde_json::Serializer<&'a mut Vec<u8>>;

/// Encodes one event's fields with `write`, naming `event_type` in the error.
#[inline]
pub fn encode_event<F>(event_type: &'static str, write: F) -> Result<Payload, EncodeError>
where
    F: FnOnce(&mut PayloadSerializer<'_>) -> Result<(), serde_json::Error>,
{
    with_buffer(|bytes| {
        write(&mut serde_json::Serializer::new(bytes)).map_err(|source| EncodeError {
            event_type,
            source: Box::new(source),
        })
    })
}

/// Runs `encode` on a cleared buffer kept per thread and copies what it wrote once into the
/// payload's shared allocation. An event whose serialization encodes another event finds the
/// buffer taken and writes into a fresh one.
#[inline]
fn with_buffer(
    encode: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<Payload, EncodeError> {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let run = |bytes: &mut Vec<u8>| {
        bytes.clear();
        encode(bytes)?;
        Ok(Payload::from(bytes.as_slice()))
    };
    BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut bytes) => run(&mut bytes),
        Err(_) => run(&mut Vec::with_capacity(64)),
    })
}

/// The MessagePack serializer `#[derive(DomainEvent)]` with `codec = msgpack` writes a payload's
/// fields with.
#[cfg(feature = "msgpack")]
pub type MessagePackSerializer<'a> = crate::codec::message_pack::Serializer<'a>;

/// Encodes one event's fields as MessagePack with `write`, behind the codec's marker, naming
/// `event_type` in the error.
#[cfg(feature = "msgpack")]
#[inline]
pub fn encode_event_msgpack<F>(event_type: &'static str, write: F) -> Result<Payload, EncodeError>
where
    F: FnOnce(&mut MessagePackSerializer<'_>) -> Result<(), rmp_serde::encode::Error>,
{
    with_buffer(|bytes| {
        bytes.push(crate::codec::MESSAGE_PACK_MARKER);
        write(&mut crate::codec::message_pack::serializer(bytes)).map_err(|source| EncodeError {
            event_type,
            source: Box::new(source),
        })
    })
}

/// Fails the build of an event enum that asks for MessagePack when the `msgpack` feature is off.
#[cfg(not(feature = "msgpack"))]
#[macro_export]
#[doc(hidden)]
macro_rules! __cqrs_require_msgpack {
    () => {
        ::core::compile_error!(
            "`codec = msgpack` needs the `msgpack` feature of cqrs-core: write `cqrs-core = { ..., features = [\"msgpack\"] }` in Cargo.toml"
        );
    };
}

/// Fails the build of an event enum that asks for MessagePack when the `msgpack` feature is off.
#[cfg(feature = "msgpack")]
#[macro_export]
#[doc(hidden)]
macro_rules! __cqrs_require_msgpack {
    () => {};
}

pub use crate::__cqrs_require_msgpack as require_msgpack;

/// Decodes the fields of one event from its stored payload, in the codec the payload names.
#[inline]
pub fn decode_payload<'de, T: serde::Deserialize<'de>>(
    payload: &'de [u8],
) -> Result<T, DecodeError> {
    crate::codec::decode(payload)
}

/// Upcasts a payload stored with schema version `found` to `current` with the variant's
/// upcasters (`(from, upcaster)` pairs), then decodes it.
#[cold]
pub fn decode_upcast<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    found: u32,
    current: u32,
    upcasters: &[(u32, crate::upcast::Upcaster)],
) -> Result<T, DecodeError> {
    // Whatever the codec, the upcasters see the payload as JSON.
    let mut value = crate::codec::to_json(payload)?;
    for from_version in found..current {
        if let Some((_, upcaster)) = upcasters.iter().find(|(from, _)| *from == from_version) {
            value = upcaster(value).map_err(|source| DecodeError::Upcast {
                from_version,
                source,
            })?;
        }
    }
    serde_json::from_value(value).map_err(DecodeError::InvalidPayload)
}

/// Refuses a payload written by newer code than this one.
#[inline]
pub fn check_schema_version(found: u32, current: u32) -> Result<(), DecodeError> {
    if found > current {
        return Err(DecodeError::UnsupportedSchemaVersion { found, current });
    }
    Ok(())
}

/// The error for a stored name no variant answers to.
#[cold]
pub fn unknown_event_type(event_type: &str) -> DecodeError {
    DecodeError::UnknownEventType {
        event_type: event_type.to_owned(),
    }
}

/// The events of a handler that returned exactly one.
#[inline]
pub fn one<E>(event: E) -> Vec<E> {
    vec![event]
}

/// The events of a handler that returned one or none.
#[inline]
pub fn maybe<E>(event: Option<E>) -> Vec<E> {
    match event {
        Some(event) => vec![event],
        None => Vec::new(),
    }
}

/// Proves, at the user's return type, that a command handler returns its aggregate's event type
/// (`Expected` is `<A as Aggregate>::Event`). Implemented only for `Expected` itself.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the event type of `{A}`",
    label = "a command handler of `{A}` returns `{Expected}` here",
    note = "the event type of `{A}` is the one named in its `#[aggregate(event = ...)]`"
)]
pub trait EventOf<A, Expected>: Sized {
    /// The event itself.
    fn into_aggregate_event(self) -> Expected;
    /// The events themselves.
    fn into_aggregate_events(events: Vec<Self>) -> Vec<Expected>;
}

impl<A, T> EventOf<A, T> for T {
    #[inline]
    fn into_aggregate_event(self) -> T {
        self
    }

    #[inline]
    fn into_aggregate_events(events: Vec<Self>) -> Vec<T> {
        events
    }
}

/// Proves, at the user's return type, that a command handler returns its aggregate's error type
/// (`Expected` is `<A as Aggregate>::Error`). Implemented only for `Expected` itself.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the error type of `{A}`",
    label = "a command handler of `{A}` returns `{Expected}` here",
    note = "the error type of `{A}` is the one named in its `#[aggregate(error = ...)]`"
)]
pub trait ErrorOf<A, Expected> {
    /// The error itself.
    fn into_aggregate_error(self) -> Expected;
}

impl<A, T> ErrorOf<A, T> for T {
    #[inline]
    fn into_aggregate_error(self) -> T {
        self
    }
}

/// Finds the aggregate's inherent apply method, or fails to compile with a message that says to
/// write one.
///
/// `F` is what `Self::apply` resolves to inside the generated `Aggregate::apply`, `G` is
/// `<Self as Aggregate>::apply`. Inherent methods win over trait methods, so `F == G` exactly
/// when the aggregate has no inherent `apply`; method resolution on `&ApplyProbe` then picks
/// [`ResolveMissingApply`] (by value) over [`ResolveApply`] (one autoref further), which would
/// otherwise have made `Aggregate::apply` call itself forever.
pub struct ApplyProbe<A, F, G>(PhantomData<fn(&mut A)>, F, G);

impl<A, F, G> ApplyProbe<A, F, G> {
    /// Probes `resolved` against `trait_method`.
    #[inline]
    pub fn new(resolved: F, trait_method: G) -> Self {
        ApplyProbe(PhantomData, resolved, trait_method)
    }
}

/// Picked when the aggregate has no inherent apply method (see [`ApplyProbe`]).
pub trait ResolveMissingApply<A> {
    /// The method is missing.
    fn resolve(&self) -> MissingApply<A>;
}

impl<A, F> ResolveMissingApply<A> for ApplyProbe<A, F, F> {
    #[inline]
    fn resolve(&self) -> MissingApply<A> {
        MissingApply(PhantomData)
    }
}

/// Picked when the aggregate has an inherent apply method (see [`ApplyProbe`]).
pub trait ResolveApply<F> {
    /// The user's method.
    fn resolve(&self) -> InherentApply<F>;
}

impl<A, F: Copy, G> ResolveApply<F> for &ApplyProbe<A, F, G> {
    #[inline]
    fn resolve(&self) -> InherentApply<F> {
        InherentApply(self.1)
    }
}

/// The user's inherent apply method.
pub struct InherentApply<F>(F);

impl<F> InherentApply<F> {
    /// Calls it.
    #[inline]
    pub fn apply<A: Aggregate>(self, aggregate: &mut A, event: A::Event)
    where
        F: FnOnce(&mut A, A::Event),
    {
        (self.0)(aggregate, event);
    }
}

/// No inherent apply method: calling `apply` on this does not compile.
pub struct MissingApply<A>(PhantomData<fn(&mut A)>);

impl<A: Aggregate> MissingApply<A> {
    /// Fails to compile, naming the method to write.
    #[inline]
    pub fn apply(self, _: &mut A, _: A::Event)
    where
        A: HasNoApplyMethod,
    {
    }
}

/// Implemented by nothing: the bound that reports a missing apply method.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no `apply` method to fold its events into its state",
    label = "add `fn apply(&mut self, event: ...)` to an `impl {Self}` block",
    note = "write it as one `match` on the event, so that rustc checks every event is handled; `#[aggregate(apply = ...)]` names another method"
)]
pub trait HasNoApplyMethod {}

/// How the generated `Aggregate::fork` copies a state: `(&ForkProbe(state)).fork()` resolves to
/// [`ForkByClone`] (by value) when the aggregate implements `Clone`, and to [`ForkNone`] (one
/// autoref further) when it does not.
pub struct ForkProbe<'a, A>(pub &'a A);

/// Picked when the aggregate implements `Clone` (see [`ForkProbe`]).
pub trait ForkByClone<A> {
    /// A clone of the state.
    fn fork(&self) -> Option<A>;
}

impl<A: Clone> ForkByClone<A> for ForkProbe<'_, A> {
    #[inline]
    fn fork(&self) -> Option<A> {
        Some(self.0.clone())
    }
}

/// Picked when the aggregate does not implement `Clone` (see [`ForkProbe`]).
pub trait ForkNone<A> {
    /// No copy.
    fn fork(&self) -> Option<A>;
}

impl<A> ForkNone<A> for &ForkProbe<'_, A> {
    #[inline]
    fn fork(&self) -> Option<A> {
        None
    }
}

/// What every aggregate must be; checked at the user's type so a generic aggregate without the
/// bounds gets one error on its own generics.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an aggregate: it must be `Default + Send + Sync + 'static`",
    label = "`{Self}` is not `Default + Send + Sync + 'static`",
    note = "bound the type parameters, e.g. `struct Name<T: Default + Send + Sync + 'static>`, and derive or implement `Default`"
)]
pub trait AggregateBounds {}

#[diagnostic::do_not_recommend]
impl<T: Default + Send + Sync + 'static> AggregateBounds for T {}

/// Fails to compile unless `T` is `Default + Send + Sync + 'static`.
#[inline]
pub fn assert_aggregate_bounds<T: AggregateBounds>() {}

/// The event type of an aggregate whose `#[aggregate(...)]` is broken: lets the derive emit a
/// stand-in impl next to its error, so one mistake gives one message.
#[derive(Debug)]
pub enum UnknownEvent {}

impl DomainEvent for UnknownEvent {
    const EVENT_TYPES: &'static [EventTypeInfo] = &[];

    fn event_type(&self) -> &'static str {
        match *self {}
    }

    fn schema_version(&self) -> u32 {
        match *self {}
    }

    fn encode(&self) -> Result<Payload, EncodeError> {
        match *self {}
    }

    fn decode(event_type: &str, _: u32, _: &[u8]) -> Result<Self, DecodeError> {
        Err(unknown_event_type(event_type))
    }
}

/// The error type of an aggregate whose `#[aggregate(...)]` is broken (see [`UnknownEvent`]).
#[derive(Debug)]
pub enum UnknownError {}

impl fmt::Display for UnknownError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl std::error::Error for UnknownError {}

// --- saga ---

/// Whether `event` belongs to a stream of the aggregate `A` (`{A::NAME}-{id}`): how a saga's
/// generated `decode` picks the event type to decode it as.
#[inline]
pub fn saga_listens_to<A: Aggregate>(event: &crate::event::RecordedEvent) -> bool {
    event.stream.is_of(A::NAME)
}

/// Proves, at the user's type, that a saga handler marked `#[on(A)]` takes `A`'s event type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the event type of `{A}`",
    label = "a handler marked `#[on({A})]` takes `{Expected}` here",
    note = "the event type of `{A}` is the one named in its `#[aggregate(event = ...)]`"
)]
pub trait SagaEventOf<A, Expected> {}

impl<A, T> SagaEventOf<A, T> for T {}

/// Fails to compile unless `E` is the event type of `A`.
#[inline]
pub fn assert_saga_event<A: Aggregate, E: SagaEventOf<A, A::Event>>() {}

/// What every saga must be; checked at the user's type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a saga: it must be `Default + Serialize + Deserialize + Send + Sync + 'static`",
    label = "`{Self}` is not `Default + Serialize + DeserializeOwned + Send + Sync + 'static`",
    note = "add `#[derive(Default, Serialize, Deserialize)]` to `{Self}`: its state is stored as JSON between events"
)]
pub trait SagaBounds {}

#[diagnostic::do_not_recommend]
impl<T: Default + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> SagaBounds
    for T
{
}

/// Fails to compile unless `T` can be a saga's state.
#[inline]
pub fn assert_saga_bounds<T: SagaBounds>() {}

/// What a saga handler may return: `()` or `Result<(), E>` with an error convertible to
/// [`HandlerError`](crate::saga::HandlerError).
#[diagnostic::on_unimplemented(
    message = "a saga handler returns `()` or `Result<(), E>`, not `{Self}`",
    label = "this handler returns `{Self}`",
    note = "return nothing, or `Result<(), E>` where `E` converts into `Box<dyn Error + Send + Sync>`"
)]
pub trait SagaHandlerResult {
    /// The result as the runner sees it.
    fn into_handler_result(self) -> Result<(), crate::saga::HandlerError>;
}

impl SagaHandlerResult for () {
    #[inline]
    fn into_handler_result(self) -> Result<(), crate::saga::HandlerError> {
        Ok(())
    }
}

impl<E: Into<crate::saga::HandlerError>> SagaHandlerResult for Result<(), E> {
    #[inline]
    fn into_handler_result(self) -> Result<(), crate::saga::HandlerError> {
        self.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::encode_event;

    /// A value whose serialization encodes another payload, as a nested event would.
    struct Nested;

    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let inner = encode_event("Inner", |serializer| 7u32.serialize(serializer))
                .map_err(serde::ser::Error::custom)?;
            let inner = std::str::from_utf8(inner.as_bytes()).map_err(serde::ser::Error::custom)?;
            serializer.serialize_str(inner)
        }
    }

    #[test]
    fn an_event_that_encodes_another_while_encoding_gets_its_own_buffer() {
        let outer =
            encode_event("Outer", |serializer| Nested.serialize(serializer)).expect("encodes");
        assert_eq!(outer.as_bytes(), br#""7""#);
        let again = encode_event("Again", |serializer| "x".serialize(serializer)).expect("encodes");
        assert_eq!(again.as_bytes(), br#""x""#);
    }
}
