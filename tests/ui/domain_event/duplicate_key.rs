use cqrs_core::prelude::*;

#[derive(DomainEvent)]
enum ShowEvent {
    #[event(version = 2, version = 3)]
    Scheduled,
}

fn main() {}
