//! What generated code calls. Not part of the public API: no stability promise.

pub use serde;
pub use serde_json;
