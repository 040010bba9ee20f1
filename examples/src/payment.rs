//! Payments: a booking is charged on a card, and the card decides. The card is part of the
//! command, so a test chooses the outcome: one that pays, one that declines, one that never
//! answers.

use std::fmt;

use cqrs_core::prelude::*;

use crate::show::BookingId;

/// A payment card, as far as the example cares: how it will answer a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Card {
    /// Pays.
    Good,
    /// Declines every charge.
    Declining,
    /// Never answers: the charge stays pending until someone gives up on it.
    Silent,
}

/// Identifies the payment of one booking (one payment per booking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PaymentId(pub u64);

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<BookingId> for PaymentId {
    fn from(booking: BookingId) -> Self {
        PaymentId(booking.0)
    }
}

/// What happened to a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum PaymentEvent {
    /// The card paid.
    Charged {
        /// The booking paid for.
        booking: BookingId,
        /// Cents charged.
        amount: u64,
    },
    /// The card declined.
    Declined {
        /// The booking.
        booking: BookingId,
        /// The card issuer's reason.
        reason: String,
    },
    /// The card has not answered yet.
    Pending {
        /// The booking.
        booking: BookingId,
    },
    /// The money went back to the card.
    Refunded {
        /// The booking.
        booking: BookingId,
        /// Cents refunded.
        amount: u64,
    },
}

/// Why a payment refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The booking was already charged (or declined).
    #[error("the payment of {booking} was already attempted")]
    AlreadyAttempted {
        /// The booking.
        booking: BookingId,
    },
    /// Only a charged payment can be refunded.
    #[error("nothing to refund")]
    NothingToRefund,
}

/// The payment of one booking.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "payment", event = PaymentEvent, error = PaymentError)]
pub struct Payment {
    attempted: bool,
    charged: u64,
    refunded: bool,
}

#[command_handler]
impl Payment {
    /// Charges `amount` cents for `booking` on `card`.
    pub fn charge(
        &self,
        booking: BookingId,
        amount: u64,
        card: Card,
    ) -> Result<PaymentEvent, PaymentError> {
        if self.attempted {
            return Err(PaymentError::AlreadyAttempted { booking });
        }
        Ok(match card {
            Card::Good => PaymentEvent::Charged { booking, amount },
            Card::Declining => PaymentEvent::Declined {
                booking,
                reason: "insufficient funds".to_owned(),
            },
            Card::Silent => PaymentEvent::Pending { booking },
        })
    }

    /// Gives the money back.
    pub fn refund(&self, booking: BookingId) -> Result<PaymentEvent, PaymentError> {
        if self.charged == 0 || self.refunded {
            return Err(PaymentError::NothingToRefund);
        }
        Ok(PaymentEvent::Refunded {
            booking,
            amount: self.charged,
        })
    }
}

impl Payment {
    fn apply(&mut self, event: PaymentEvent) {
        match event {
            PaymentEvent::Charged { amount, .. } => {
                self.attempted = true;
                self.charged = amount;
            }
            PaymentEvent::Declined { .. } | PaymentEvent::Pending { .. } => self.attempted = true,
            PaymentEvent::Refunded { .. } => self.refunded = true,
        }
    }

    /// Cents charged (0 when not charged).
    pub fn charged(&self) -> u64 {
        self.charged
    }

    /// Whether the charge was refunded.
    pub fn refunded(&self) -> bool {
        self.refunded
    }
}
