use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled { capacity: u32 },
    SeatsReserved { seats: u32 },
}

#[derive(Debug, thiserror::Error)]
#[error("show error")]
struct ShowError;

#[derive(Default, Aggregate)]
#[aggregate(name = "show", event = ShowEvent, error = ShowError)]
struct Show {
    capacity: u32,
}

impl Show {
    fn apply(&mut self, event: ShowEvent) {
        match event {
            ShowEvent::Scheduled { capacity } => self.capacity = capacity,
        }
    }
}

fn main() {}
