//! Every supported handler return shape.

use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum DoorEvent {
    Opened,
    Closed,
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("jammed")]
struct Jammed;

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "door", event = DoorEvent, error = Jammed)]
struct Door {
    open: bool,
}

impl Door {
    fn apply(&mut self, event: DoorEvent) {
        match event {
            DoorEvent::Opened => self.open = true,
            DoorEvent::Closed => self.open = false,
        }
    }
}

#[command_handler]
impl Door {
    pub fn open(&self) -> Result<DoorEvent, Jammed> {
        Ok(DoorEvent::Opened)
    }

    pub fn cycle(&self) -> Result<Vec<DoorEvent>, Jammed> {
        Ok(vec![DoorEvent::Opened, DoorEvent::Closed])
    }

    pub fn close(&self) -> Result<Option<DoorEvent>, Jammed> {
        Ok(self.open.then_some(DoorEvent::Closed))
    }

    pub fn slam(&self) -> DoorEvent {
        DoorEvent::Closed
    }

    pub fn flap(&self, times: u8) -> Vec<DoorEvent> {
        (0..times).map(|_| DoorEvent::Opened).collect()
    }

    pub fn nudge(&self) -> Option<DoorEvent> {
        None
    }

    pub fn fully_qualified(
        &self,
    ) -> ::core::result::Result<<Self as Aggregate>::Event, <Self as Aggregate>::Error> {
        Err(Jammed)
    }
}

fn main() {
    let _: [DoorCommand; 7] = [
        DoorCommand::Open,
        DoorCommand::Cycle,
        DoorCommand::Close,
        DoorCommand::Slam,
        DoorCommand::Flap { times: 2 },
        DoorCommand::Nudge,
        DoorCommand::FullyQualified,
    ];
}
