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

fn main() {}
