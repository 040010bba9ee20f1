use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled,
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

struct Prices;
struct Clock;

#[command_handler]
impl Show {
    pub fn schedule(&self, #[services] prices: &Prices) -> ShowEvent {
        let _ = prices;
        ShowEvent::Scheduled
    }

    pub fn reschedule(&self, #[services] clock: &Clock) -> ShowEvent {
        let _ = clock;
        ShowEvent::Scheduled
    }
}

fn main() {}
