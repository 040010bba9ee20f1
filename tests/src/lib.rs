//! Shared test code: the store conformance suite any `EventStore` plugs into, and store wrappers
//! that make races happen on every run.

pub mod conformance;
pub mod yielding;
