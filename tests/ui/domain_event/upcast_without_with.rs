use cqrs_core::prelude::*;

#[derive(DomainEvent)]
enum ShowEvent {
    #[event(version = 2, upcast(from = 1))]
    Scheduled,
}

fn main() {}
