//! The domains behind the runnable examples, shared with the tests and the benchmark binary.
//!
//! - [`show`]: seat reservation for shows, where concurrent customers race for the last seats.
//! - [`payment`]: charging a card whose answer a test chooses.
//! - [`booking`]: a customer's booking and the checkout saga that reserves, charges and confirms.

pub mod booking;
pub mod payment;
pub mod show;
