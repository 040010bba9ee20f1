use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled,
}

#[derive(Debug, thiserror::Error)]
#[error("show error")]
struct ShowError;

#[derive(Default, Aggregate)]
#[aggregate(name = "show", event = ShowEvent)]
struct Show;

fn main() {}
