use cqrs_core::prelude::*;

#[derive(DomainEvent)]
enum ShowEvent {
    #[event(version = "x")]
    Scheduled,
}

fn main() {}
