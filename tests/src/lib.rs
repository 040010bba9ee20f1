//! Shared test code: the store conformance suite any `EventStore` plugs into.

pub mod conformance;
