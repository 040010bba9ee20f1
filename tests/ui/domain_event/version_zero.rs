use cqrs_core::prelude::*;

#[derive(DomainEvent)]
enum ShowEvent {
    #[event(version = 0)]
    Scheduled,
}

fn main() {}
