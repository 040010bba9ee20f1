use cqrs_core::prelude::*;
use cqrs_core::upcast::{UpcastError, Value};

fn keep(payload: Value) -> Result<Value, UpcastError> {
    Ok(payload)
}

#[derive(DomainEvent)]
enum ShowEvent {
    #[event(version = 2, upcast(from = 2, with = keep))]
    Scheduled,
}

fn main() {}
