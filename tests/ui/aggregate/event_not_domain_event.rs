use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled,
}

#[derive(Debug, thiserror::Error)]
#[error("show error")]
struct ShowError;

#[derive(Default, Aggregate)]
#[aggregate(name = "show", event = String, error = ShowError)]
struct Show;

impl Show {
    fn apply(&mut self, _event: String) {}
}

fn main() {}
