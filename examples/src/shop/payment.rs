//! The payment of an order: charged on a card (whose answer the story chooses, see
//! [`Card`]), and refunded when the order cannot be delivered. A refund is a compensating
//! event: the charge stays in the history, and the refund says the money went back.

use cqrs_core::prelude::*;

use crate::payment::Card;
use crate::shop::Cents;

/// What happened to an order's payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum PaymentEvent {
    /// The card paid.
    Charged {
        /// The order's id.
        order: String,
        /// The amount charged.
        amount: Cents,
    },
    /// The card did not pay.
    Declined {
        /// The order's id.
        order: String,
        /// The issuer's reason.
        reason: String,
    },
    /// The money went back to the card.
    Refunded {
        /// The order's id.
        order: String,
        /// The amount refunded.
        amount: Cents,
        /// Why.
        reason: String,
    },
}

/// Why a payment refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The order was charged (or declined) already.
    #[error("the payment was already attempted")]
    AlreadyAttempted,
    /// Only a charged, not yet refunded payment can be refunded.
    #[error("nothing to refund")]
    NothingToRefund,
}

/// The payment of one order (the aggregate id is the order id).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "shop_payment", event = PaymentEvent, error = PaymentError)]
pub struct Payment {
    attempted: bool,
    charged: Cents,
    refunded: bool,
}

#[command_handler]
impl Payment {
    /// Charges `amount` on `card` for `order`.
    pub fn charge(
        &self,
        order: String,
        amount: Cents,
        card: Card,
    ) -> Result<PaymentEvent, PaymentError> {
        if self.attempted {
            return Err(PaymentError::AlreadyAttempted);
        }
        Ok(match card {
            Card::Good => PaymentEvent::Charged { order, amount },
            Card::Declining => PaymentEvent::Declined {
                order,
                reason: "insufficient funds".to_owned(),
            },
            // The shop does not wait for a bank that does not answer.
            Card::Silent => PaymentEvent::Declined {
                order,
                reason: "the bank did not answer".to_owned(),
            },
        })
    }

    /// Gives the money back.
    pub fn refund(&self, order: String, reason: String) -> Result<PaymentEvent, PaymentError> {
        if self.charged == Cents(0) || self.refunded {
            return Err(PaymentError::NothingToRefund);
        }
        Ok(PaymentEvent::Refunded {
            order,
            amount: self.charged,
            reason,
        })
    }

    /// The amount charged and not refunded.
    #[command(skip)]
    pub fn kept(&self) -> Cents {
        if self.refunded {
            Cents(0)
        } else {
            self.charged
        }
    }

    /// Whether the payment was refunded.
    #[command(skip)]
    pub fn refunded(&self) -> bool {
        self.refunded
    }
}

impl Payment {
    fn apply(&mut self, event: PaymentEvent) {
        match event {
            PaymentEvent::Charged { amount, .. } => {
                self.attempted = true;
                self.charged = amount;
            }
            PaymentEvent::Declined { .. } => self.attempted = true,
            PaymentEvent::Refunded { .. } => self.refunded = true,
        }
    }
}
