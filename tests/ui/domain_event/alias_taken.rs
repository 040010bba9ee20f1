use cqrs_core::prelude::*;

#[derive(DomainEvent)]
enum ShowEvent {
    Scheduled,
    #[event(alias = "Scheduled")]
    Rescheduled,
}

fn main() {}
