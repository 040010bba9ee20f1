//! The orders-per-customer read model: what a "my orders" page shows, kept up to date from the
//! order events by a [`Projector`](cqrs_core::projection::Projector).

use std::collections::BTreeMap;

use cqrs_core::projection::{EventContext, Projection};

use crate::shop::Cents;
use crate::shop::order::{OrderEvent, OrderStatus};

/// One order, as the read model knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSummary {
    /// Where it stands.
    pub status: OrderStatus,
    /// What it costs.
    pub total: Cents,
    /// Items ordered.
    pub items: u32,
}

/// Orders per customer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CustomerOrders {
    /// Customer id -> order id -> summary.
    pub customers: BTreeMap<String, BTreeMap<String, OrderSummary>>,
    /// Order id -> customer id: later events name only the order.
    owners: BTreeMap<String, String>,
}

impl CustomerOrders {
    /// The orders of `customer`, by order id.
    pub fn orders_of(&self, customer: &str) -> Option<&BTreeMap<String, OrderSummary>> {
        self.customers.get(customer)
    }

    /// The summary of `order`.
    pub fn order(&self, order: &str) -> Option<&OrderSummary> {
        let customer = self.owners.get(order)?;
        self.customers.get(customer)?.get(order)
    }
}

/// The projection that keeps [`CustomerOrders`].
#[derive(Debug, Default, Clone, Copy)]
pub struct OrdersByCustomer;

/// An order event for an order the read model never saw placed: the log is corrupt, or the
/// projection reads from the wrong place.
#[derive(Debug, thiserror::Error)]
#[error("order `{0}` was never placed")]
pub struct UnknownOrder(String);

impl Projection for OrdersByCustomer {
    const NAME: &'static str = "orders_by_customer";
    const AGGREGATES: &'static [&'static str] = &["order"];
    type Event = OrderEvent;
    type ReadModel = CustomerOrders;
    type Error = UnknownOrder;

    fn apply(
        &self,
        model: &mut CustomerOrders,
        event: OrderEvent,
        _: &EventContext<'_>,
    ) -> Result<(), UnknownOrder> {
        let (order, status) = match event {
            OrderEvent::Placed {
                order,
                customer,
                lines,
                total,
            } => {
                let summary = OrderSummary {
                    status: OrderStatus::Placed,
                    total,
                    items: lines.iter().map(|line| line.quantity).sum(),
                };
                model
                    .customers
                    .entry(customer.clone())
                    .or_default()
                    .insert(order.clone(), summary);
                model.owners.insert(order, customer);
                return Ok(());
            }
            OrderEvent::Paid { order, .. } => (order, OrderStatus::Paid),
            OrderEvent::Shipped { order, .. } => (order, OrderStatus::Shipped),
            OrderEvent::Cancelled { order, .. } => (order, OrderStatus::Cancelled),
        };
        // Checked before anything changes, so a failed event leaves the model as it was.
        let summary = model
            .owners
            .get(&order)
            .and_then(|customer| model.customers.get_mut(customer))
            .and_then(|orders| orders.get_mut(&order))
            .ok_or(UnknownOrder(order))?;
        summary.status = status;
        Ok(())
    }
}
