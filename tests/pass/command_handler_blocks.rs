//! `#[command_handler]` blocks that are not a second block for one aggregate: blocks for two
//! types of one name in different modules, and a block beside one its `#[cfg]` leaves out.

use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub enum ShowEvent {
    Scheduled,
}

#[derive(Debug, thiserror::Error)]
#[error("show error")]
pub struct ShowError;

mod stage {
    use super::*;

    #[derive(Default, Aggregate)]
    #[aggregate(name = "stage", event = ShowEvent, error = ShowError)]
    pub struct Show;

    impl Show {
        fn apply(&mut self, _event: ShowEvent) {}
    }

    #[command_handler]
    impl Show {
        pub fn schedule(&self) -> ShowEvent {
            ShowEvent::Scheduled
        }
    }
}

#[derive(Default, Aggregate)]
#[aggregate(name = "show", event = ShowEvent, error = ShowError)]
pub struct Show;

impl Show {
    fn apply(&mut self, _event: ShowEvent) {}
}

#[cfg(any())]
#[command_handler]
impl Show {
    pub fn schedule(&self) -> ShowEvent {
        ShowEvent::Scheduled
    }
}

#[command_handler]
impl Show {
    pub fn schedule(&self) -> ShowEvent {
        ShowEvent::Scheduled
    }
}

fn main() {
    let _ = ShowCommand::Schedule;
    let _ = stage::ShowCommand::Schedule;
}
