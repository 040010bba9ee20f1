//! The guide: how to build an event-sourced application with this framework, one chapter per
//! concept. Every code block in it is compiled and run as a test.

#[doc = include_str!("../guide/aggregates.md")]
pub mod aggregates {}

#[doc = include_str!("../guide/repository.md")]
pub mod repository {}

#[doc = include_str!("../guide/upcasting.md")]
pub mod upcasting {}

#[doc = include_str!("../guide/testing.md")]
pub mod testing {}
