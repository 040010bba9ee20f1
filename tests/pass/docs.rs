//! Doc comments on handlers are carried onto the command variants; the generated enum is fully
//! documented, so it passes `deny(missing_docs)`.

#![deny(missing_docs)]

use cqrs_core::prelude::*;

/// Events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub enum LampEvent {
    /// On.
    SwitchedOn,
}

/// Errors.
#[derive(Debug, thiserror::Error)]
#[error("broken")]
pub struct Broken;

/// A lamp.
#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "lamp", event = LampEvent, error = Broken)]
pub struct Lamp;

impl Lamp {
    fn apply(&mut self, _event: LampEvent) {}
}

#[command_handler]
impl Lamp {
    /// Switches the lamp on.
    ///
    /// Twice is fine.
    pub fn switch_on(&self, brightness: u8) -> LampEvent {
        let _ = brightness;
        LampEvent::SwitchedOn
    }

    /// Not a command.
    #[command(skip)]
    pub fn is_lamp(&self) -> bool {
        true
    }
}

fn main() {
    let _ = LampCommand::SwitchOn { brightness: 3 };
}
