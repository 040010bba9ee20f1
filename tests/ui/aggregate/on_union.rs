use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled,
}

#[derive(Debug, thiserror::Error)]
#[error("show error")]
struct ShowError;

#[derive(Aggregate)]
#[aggregate(name = "show", event = ShowEvent, error = ShowError)]
union Show {
    seats: u32,
}

fn main() {}
