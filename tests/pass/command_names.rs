//! The generated `name()` of a command enum, and `CommandHandler::command_name`: the variant,
//! for every handler shape (no arguments, fields, services, async, a raw identifier, a cfg'd
//! handler).

use std::convert::Infallible;

use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum LampEvent {
    Switched { on: bool },
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "lamp", event = LampEvent, error = Infallible)]
struct Lamp {
    on: bool,
}

#[command_handler(services = u8)]
impl Lamp {
    pub fn toggle(&self) -> LampEvent {
        LampEvent::Switched { on: !self.on }
    }

    pub fn set_brightness(&self, level: u8, #[services] _limit: &u8) -> Vec<LampEvent> {
        vec![LampEvent::Switched { on: level > 0 }]
    }

    pub async fn switch_on_later(&self, after_seconds: u64) -> Option<LampEvent> {
        (after_seconds == 0).then_some(LampEvent::Switched { on: true })
    }

    pub fn r#move(&self) -> Option<LampEvent> {
        None
    }

    #[cfg(any())]
    pub fn never_compiled(&self) -> LampEvent {
        LampEvent::Switched { on: false }
    }
}

impl Lamp {
    fn apply(&mut self, event: LampEvent) {
        match event {
            LampEvent::Switched { on } => self.on = on,
        }
    }
}

fn main() {
    let commands = [
        (LampCommand::Toggle, "Toggle"),
        (LampCommand::SetBrightness { level: 3 }, "SetBrightness"),
        (LampCommand::SwitchOnLater { after_seconds: 1 }, "SwitchOnLater"),
        (LampCommand::Move, "Move"),
    ];
    for (command, name) in commands {
        assert_eq!(command.name(), name);
        assert_eq!(<Lamp as CommandHandler>::command_name(&command), name);
    }
}
