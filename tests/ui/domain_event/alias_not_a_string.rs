use cqrs_core::prelude::*;

#[derive(DomainEvent)]
enum ShowEvent {
    #[event(alias = SeatsBooked)]
    SeatsReserved,
}

fn main() {}
