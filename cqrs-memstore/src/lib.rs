//! An in-memory event store with the guarantees of a durable one.
