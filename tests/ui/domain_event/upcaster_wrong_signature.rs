use cqrs_core::prelude::*;

fn keep(payload: String) -> String {
    payload
}

#[derive(DomainEvent)]
enum ShowEvent {
    #[event(version = 2, upcast(from = 1, with = keep))]
    Scheduled,
}

fn main() {}
