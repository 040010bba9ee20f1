//! A small domain for the runtime's fault tests: meters whose readings earn bonus credits, a
//! ledger per meter, and the saga that credits it, routing by the event's stream.

use std::convert::Infallible;

use cqrs_core::prelude::*;
use cqrs_core::projection::EventContext;

/// What a meter records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub enum MeterEvent {
    /// A reading; every tenth earns a bonus.
    Read {
        /// The consumption read.
        kwh: u64,
        /// Whether the reading earns a bonus credit.
        bonus: bool,
    },
}

/// A meter.
#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "meter", event = MeterEvent, error = Infallible)]
pub struct Meter;

impl Meter {
    fn apply(&mut self, _: MeterEvent) {}
}

#[command_handler]
impl Meter {
    /// Records a reading.
    pub fn read(&self, kwh: u64, bonus: bool) -> MeterEvent {
        MeterEvent::Read { kwh, bonus }
    }
}

/// What a meter's ledger records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub enum LedgerEvent {
    /// A bonus credited for a reading.
    Credited {
        /// The id of the reading's event.
        source: String,
    },
}

/// A meter's ledger of bonus credits.
#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "ledger", event = LedgerEvent, error = Infallible)]
pub struct Ledger;

impl Ledger {
    fn apply(&mut self, _: LedgerEvent) {}
}

#[command_handler]
impl Ledger {
    /// Credits a bonus for the reading `source`.
    pub fn credit(&self, source: String) -> LedgerEvent {
        LedgerEvent::Credited { source }
    }
}

/// Credits the meter's ledger for every bonus reading; routes by the stream, not the payload.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Bonus {
    credited: u64,
}

#[saga(name = "bonus")]
impl Bonus {
    fn route(input: &BonusInput, event: &EventContext<'_>) -> Route {
        match input {
            BonusInput::Meter(MeterEvent::Read { bonus: true, .. }) => {
                Route::start(event.aggregate_id())
            }
            BonusInput::Meter(_) => Route::Ignore,
        }
    }

    #[on(Meter)]
    fn on_meter(&mut self, _: MeterEvent, saga: &mut SagaContext) {
        let Some((meter, source)) = saga
            .event()
            .map(|event| (event.aggregate_id().to_owned(), event.event_id.to_string()))
        else {
            return;
        };
        self.credited += 1;
        saga.send::<Ledger>(meter, LedgerCommand::Credit { source });
    }
}
