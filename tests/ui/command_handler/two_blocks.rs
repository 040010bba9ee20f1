use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled,
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
#[error("show error")]
struct ShowError;

#[derive(Default, Aggregate)]
#[aggregate(name = "show", event = ShowEvent, error = ShowError)]
struct Show;

impl Show {
    fn apply(&mut self, _event: ShowEvent) {}
}

#[command_handler]
impl Show {
    pub fn schedule(&self) -> ShowEvent {
        ShowEvent::Scheduled
    }
}

#[command_handler]
impl Show {
    pub fn cancel(&self) -> ShowEvent {
        ShowEvent::Cancelled
    }
}

fn main() {}
