//! The shipment of an order: the carrier takes the parcel, or refuses an address it does not
//! serve. Which countries it serves is a service handed to the handler (`#[services]`), not a
//! global.

use cqrs_core::prelude::*;

use crate::shop::Address;

/// The carrier, as the shipment handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carrier {
    /// The ISO codes of the countries it delivers to.
    pub countries: Vec<String>,
}

impl Default for Carrier {
    /// A carrier of the Benelux, Germany and France.
    fn default() -> Self {
        Carrier {
            countries: ["NL", "BE", "LU", "DE", "FR"].map(str::to_owned).to_vec(),
        }
    }
}

/// What happened to a shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum ShipmentEvent {
    /// The carrier took the parcel.
    Dispatched {
        /// The order's id.
        order: String,
        /// Where it goes.
        address: Address,
        /// The tracking number.
        tracking: String,
    },
}

/// Why a shipment refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShipmentError {
    /// The carrier does not deliver there.
    #[error("the carrier does not deliver to {address}")]
    Undeliverable {
        /// The address refused.
        address: Address,
    },
    /// The parcel left already.
    #[error("the parcel was already dispatched")]
    AlreadyDispatched,
}

/// The shipment of one order (the aggregate id is the order id).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "shipment", event = ShipmentEvent, error = ShipmentError)]
pub struct Shipment {
    tracking: Option<String>,
}

#[command_handler]
impl Shipment {
    /// Hands the parcel of `order` to the carrier, for `address`.
    pub fn dispatch(
        &self,
        #[services] carrier: &Carrier,
        order: String,
        address: Address,
    ) -> Result<ShipmentEvent, ShipmentError> {
        if self.tracking.is_some() {
            return Err(ShipmentError::AlreadyDispatched);
        }
        if !carrier.countries.contains(&address.country) {
            return Err(ShipmentError::Undeliverable { address });
        }
        Ok(ShipmentEvent::Dispatched {
            tracking: format!("TRK-{order}"),
            order,
            address,
        })
    }

    /// The tracking number, once dispatched.
    #[command(skip)]
    pub fn tracking(&self) -> Option<&str> {
        self.tracking.as_deref()
    }
}

impl Shipment {
    fn apply(&mut self, event: ShipmentEvent) {
        match event {
            ShipmentEvent::Dispatched { tracking, .. } => self.tracking = Some(tracking),
        }
    }
}
