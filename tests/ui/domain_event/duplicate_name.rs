use cqrs_core::prelude::*;

#[derive(DomainEvent)]
enum ShowEvent {
    SeatsReserved {
        seats: u32,
    },
    #[event(name = "SeatsReserved")]
    SeatsBooked {
        seats: u32,
    },
}

fn main() {}
