use cqrs_core::prelude::*;

#[derive(DomainEvent)]
enum ShowEvent {
    #[event(title = "Scheduled")]
    Scheduled,
}

fn main() {}
