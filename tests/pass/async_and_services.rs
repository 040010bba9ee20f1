//! Async handlers, a `#[services]` argument, and the attribute's `command =` / `services =`.

use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Priced { cents: u64 },
}

#[derive(Debug, thiserror::Error)]
#[error("no price")]
struct NoPrice;

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "show", event = ShowEvent, error = NoPrice)]
struct Show;

impl Show {
    fn apply(&mut self, event: ShowEvent) {
        match event {
            ShowEvent::Priced { .. } => {}
        }
    }
}

struct PriceList {
    cents: u64,
}

#[command_handler]
impl Show {
    pub async fn price(
        &self,
        #[services] prices: &PriceList,
        seats: u32,
    ) -> Result<ShowEvent, NoPrice> {
        std::future::ready(()).await;
        Ok(ShowEvent::Priced {
            cents: prices.cents * u64::from(seats),
        })
    }

    pub fn reprice(&self, #[services] prices: &PriceList) -> ShowEvent {
        ShowEvent::Priced {
            cents: prices.cents,
        }
    }

    // An argument named like the generated code's own locals does not confuse it.
    pub async fn odd_names(&self, command: u64, services: u64, outcome: u64) -> ShowEvent {
        ShowEvent::Priced {
            cents: command + services + outcome,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum GateEvent {
    Opened,
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "gate", event = GateEvent, error = NoPrice)]
struct Gate;

impl Gate {
    fn apply(&mut self, _event: GateEvent) {}
}

struct Clock;

#[command_handler(command = GateOrder, services = Clock)]
impl Gate {
    pub fn open(&self) -> GateEvent {
        GateEvent::Opened
    }
}

fn assert_handler<A: CommandHandler<Command = C, Services = S>, C, S>() {}

fn main() {
    assert_handler::<Show, ShowCommand, PriceList>();
    assert_handler::<Gate, GateOrder, Clock>();
    let _ = ShowCommand::Price { seats: 2 };
    let _ = ShowCommand::Reprice;
    let _ = ShowCommand::OddNames {
        command: 1,
        services: 2,
        outcome: 3,
    };
}
