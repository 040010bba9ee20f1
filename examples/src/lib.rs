//! The domains behind the runnable examples, shared with the tests and the benchmark binary.
//!
//! - [`show`]: seat reservation for shows, where concurrent customers race for the last seats.

pub mod show;
