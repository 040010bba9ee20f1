//! The checkout saga: from a checked-out cart to a shipped order, or a cancelled one.
//!
//! It places the order, charges the card, marks the order paid, dispatches the parcel and marks
//! the order shipped. A declined card cancels the order. An address the carrier refuses is
//! compensated: the payment is refunded (a `Refunded` event, the charge stays in the history),
//! then the order is cancelled.

use cqrs_core::prelude::*;
use cqrs_core::saga::{HandlerError, Rejection};

use crate::payment::Card;
use crate::shop::cart::{Cart, CartEvent};
use crate::shop::order::{Order, OrderCommand, OrderEvent};
use crate::shop::payment::{Payment, PaymentCommand, PaymentEvent};
use crate::shop::shipment::{Shipment, ShipmentCommand, ShipmentError, ShipmentEvent};
use crate::shop::{Address, Cents};

/// Where a checkout stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Not started.
    #[default]
    New,
    /// Waiting for the order to be placed.
    Placing,
    /// Waiting for the card.
    Charging,
    /// Paid, waiting for the order to say so.
    MarkingPaid,
    /// Waiting for the carrier.
    Shipping,
    /// The carrier refused: waiting for the refund.
    Refunding,
    /// Waiting for the order to be shipped or cancelled.
    Closing,
}

/// The checkout of one order (the saga instance is keyed by the order id).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkout {
    order: String,
    total: Cents,
    card: Option<Card>,
    address: Option<Address>,
    stage: Stage,
}

#[saga(name = "shop_checkout")]
impl Checkout {
    /// A checked-out cart starts a checkout; a shipped or cancelled order ends it.
    fn route(input: &CheckoutInput) -> Route {
        match input {
            CheckoutInput::Cart(CartEvent::CheckedOut { order, .. }) => Route::start(order),
            CheckoutInput::Cart(_) => Route::Ignore,
            CheckoutInput::Order(
                OrderEvent::Shipped { order, .. } | OrderEvent::Cancelled { order, .. },
            ) => Route::stop(order),
            CheckoutInput::Order(
                OrderEvent::Placed { order, .. } | OrderEvent::Paid { order, .. },
            ) => Route::resume(order),
            CheckoutInput::Payment(
                PaymentEvent::Charged { order, .. }
                | PaymentEvent::Declined { order, .. }
                | PaymentEvent::Refunded { order, .. },
            ) => Route::resume(order),
            CheckoutInput::Shipment(ShipmentEvent::Dispatched { order, .. }) => {
                Route::resume(order)
            }
        }
    }

    #[on(Cart)]
    fn on_cart(&mut self, event: CartEvent, saga: &mut SagaContext) {
        if let CartEvent::CheckedOut {
            order,
            customer,
            lines,
            total,
            card,
            address,
        } = event
        {
            saga.send::<Order>(
                &order,
                OrderCommand::Place {
                    order: order.clone(),
                    customer,
                    lines,
                    total,
                },
            );
            *self = Checkout {
                order,
                total,
                card: Some(card),
                address: Some(address),
                stage: Stage::Placing,
            };
        }
    }

    #[on(Order)]
    fn on_order(&mut self, event: OrderEvent, saga: &mut SagaContext) {
        let order = self.order.clone();
        match (event, self.stage, self.card, &self.address) {
            (OrderEvent::Placed { total, .. }, Stage::Placing, Some(card), _) => {
                self.stage = Stage::Charging;
                let charge = PaymentCommand::Charge {
                    order: order.clone(),
                    amount: total,
                    card,
                };
                saga.send::<Payment>(order, charge);
            }
            (OrderEvent::Paid { .. }, Stage::MarkingPaid, _, Some(address)) => {
                self.stage = Stage::Shipping;
                let dispatch = ShipmentCommand::Dispatch {
                    order: order.clone(),
                    address: address.clone(),
                };
                saga.send::<Shipment>(order, dispatch);
            }
            _ => {}
        }
    }

    #[on(Payment)]
    fn on_payment(&mut self, event: PaymentEvent, saga: &mut SagaContext) {
        let order = self.order.clone();
        match (event, self.stage) {
            (PaymentEvent::Charged { amount, .. }, Stage::Charging) => {
                self.stage = Stage::MarkingPaid;
                let paid = OrderCommand::MarkPaid {
                    order: order.clone(),
                    amount,
                };
                saga.send::<Order>(order, paid);
            }
            (PaymentEvent::Declined { reason, .. }, Stage::Charging) => {
                self.close(saga, format!("payment declined: {reason}"));
            }
            (PaymentEvent::Refunded { amount, reason, .. }, Stage::Refunding) => {
                self.close(saga, format!("{reason}; {amount} refunded"));
            }
            _ => {}
        }
    }

    #[on(Shipment)]
    fn on_shipment(&mut self, event: ShipmentEvent, saga: &mut SagaContext) {
        let ShipmentEvent::Dispatched { tracking, .. } = event;
        if self.stage == Stage::Shipping {
            self.stage = Stage::Closing;
            let order = self.order.clone();
            let shipped = OrderCommand::MarkShipped {
                order: order.clone(),
                tracking,
            };
            saga.send::<Order>(order, shipped);
        }
    }

    /// The carrier refused the address: the money goes back before the order is cancelled.
    fn on_rejected(
        &mut self,
        rejection: Rejection,
        saga: &mut SagaContext,
    ) -> Result<(), HandlerError> {
        match rejection.of::<Shipment>() {
            Some((_, _, error @ ShipmentError::Undeliverable { .. })) => {
                self.stage = Stage::Refunding;
                let order = self.order.clone();
                let refund = PaymentCommand::Refund {
                    order: order.clone(),
                    reason: error.to_string(),
                };
                saga.send::<Payment>(order, refund);
                Ok(())
            }
            _ => Err(format!("unexpected refusal: {rejection:?}").into()),
        }
    }
}

impl Checkout {
    fn close(&mut self, saga: &mut SagaContext, reason: String) {
        self.stage = Stage::Closing;
        let order = self.order.clone();
        let cancel = OrderCommand::Cancel {
            order: order.clone(),
            reason,
        };
        saga.send::<Order>(order, cancel);
    }

    /// Where the checkout stands.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// What the order costs.
    pub fn total(&self) -> Cents {
        self.total
    }
}
