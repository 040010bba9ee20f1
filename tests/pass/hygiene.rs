//! The generated code names everything by absolute path: shadowing the prelude changes nothing
//! (serde's test_gen.rs).

#![allow(dead_code, non_camel_case_types, clippy::all)]

use cqrs_core::{Aggregate, CommandHandler, DomainEvent, command_handler};

struct Result;
struct Ok;
struct Err;
struct Option;
struct Some;
struct None;
struct Vec;
struct String;
struct Box;
struct Default;
struct Send;
struct Sync;
struct Future;
struct PhantomData;
struct serde;
struct core;
type u32 = bool;
fn vec() {}
mod std {}

#[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize, DomainEvent)]
enum Event {
    Unit,
    Newtype(::std::string::String),
    Tuple(u8, ::std::vec::Vec<u8>),
    Struct { value: ::std::option::Option<u8> },
}

#[derive(Debug, thiserror::Error)]
#[error("error")]
struct Error;

#[derive(::core::default::Default, Aggregate)]
#[aggregate(name = "hygiene", event = Event, error = Error, snapshot_version = 2)]
struct State;

impl State {
    fn apply(&mut self, _event: Event) {}
}

struct Services;

#[command_handler]
impl State {
    pub fn one(&self, value: u8) -> ::core::result::Result<Event, Error> {
        ::core::result::Result::Ok(Event::Tuple(value, ::std::vec::Vec::new()))
    }

    pub fn many(&self) -> ::core::result::Result<::std::vec::Vec<Event>, Error> {
        ::core::result::Result::Err(Error)
    }

    pub fn maybe(&self) -> ::core::result::Result<::core::option::Option<Event>, Error> {
        ::core::result::Result::Ok(::core::option::Option::None)
    }

    pub async fn with_services(&self, #[services] services: &Services) -> Event {
        let _ = services;
        Event::Unit
    }
}

fn assert_impls<A: Aggregate + CommandHandler, E: DomainEvent>() {}

fn main() {
    assert_impls::<State, Event>();
}
