//! The order: placed from a checked-out cart, then paid and shipped, or cancelled.

use cqrs_core::prelude::*;

use crate::shop::{Cents, Line};

/// What happened to an order. Every event names its order, so the checkout saga can route it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum OrderEvent {
    /// The order was placed.
    Placed {
        /// The order's id.
        order: String,
        /// The customer's id.
        customer: String,
        /// What was bought.
        lines: Vec<Line>,
        /// What it costs.
        total: Cents,
    },
    /// The money arrived.
    Paid {
        /// The order's id.
        order: String,
        /// The amount paid.
        amount: Cents,
    },
    /// The parcel left the warehouse.
    Shipped {
        /// The order's id.
        order: String,
        /// The carrier's tracking number.
        tracking: String,
    },
    /// The order will not be delivered; any money taken was given back first.
    Cancelled {
        /// The order's id.
        order: String,
        /// Why.
        reason: String,
    },
}

/// Why an order refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The order was placed already.
    #[error("the order was already placed")]
    AlreadyPlaced,
    /// The order was never placed.
    #[error("the order was never placed")]
    NotPlaced,
    /// The order is shipped or cancelled: nothing more happens to it.
    #[error("the order is already {0:?}")]
    Closed(OrderStatus),
    /// Only a paid order can be shipped.
    #[error("the order is not paid")]
    NotPaid,
}

/// Where an order stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Not placed.
    #[default]
    None,
    /// Placed, waiting for the money.
    Placed,
    /// Paid, waiting for the parcel to leave.
    Paid,
    /// On its way.
    Shipped,
    /// Cancelled.
    Cancelled,
}

/// An order.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "order", event = OrderEvent, error = OrderError)]
pub struct Order {
    status: OrderStatus,
    customer: String,
    total: Cents,
    reason: Option<String>,
}

#[command_handler]
impl Order {
    /// Places the order.
    pub fn place(
        &self,
        order: String,
        customer: String,
        lines: Vec<Line>,
        total: Cents,
    ) -> Result<OrderEvent, OrderError> {
        if self.status != OrderStatus::None {
            return Err(OrderError::AlreadyPlaced);
        }
        Ok(OrderEvent::Placed {
            order,
            customer,
            lines,
            total,
        })
    }

    /// Records the payment.
    pub fn mark_paid(&self, order: String, amount: Cents) -> Result<OrderEvent, OrderError> {
        self.check_open()?;
        Ok(OrderEvent::Paid { order, amount })
    }

    /// Records that the parcel left.
    pub fn mark_shipped(&self, order: String, tracking: String) -> Result<OrderEvent, OrderError> {
        self.check_open()?;
        if self.status != OrderStatus::Paid {
            return Err(OrderError::NotPaid);
        }
        Ok(OrderEvent::Shipped { order, tracking })
    }

    /// Cancels the order for `reason`.
    pub fn cancel(&self, order: String, reason: String) -> Result<OrderEvent, OrderError> {
        self.check_open()?;
        Ok(OrderEvent::Cancelled { order, reason })
    }

    /// Where the order stands.
    #[command(skip)]
    pub fn status(&self) -> OrderStatus {
        self.status
    }

    /// The customer's id.
    #[command(skip)]
    pub fn customer(&self) -> &str {
        &self.customer
    }

    /// What the order costs.
    #[command(skip)]
    pub fn total(&self) -> Cents {
        self.total
    }

    /// Why it was cancelled, when it was.
    #[command(skip)]
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl Order {
    fn check_open(&self) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::None => Err(OrderError::NotPlaced),
            OrderStatus::Placed | OrderStatus::Paid => Ok(()),
            status @ (OrderStatus::Shipped | OrderStatus::Cancelled) => {
                Err(OrderError::Closed(status))
            }
        }
    }

    fn apply(&mut self, event: OrderEvent) {
        match event {
            OrderEvent::Placed {
                customer, total, ..
            } => {
                self.status = OrderStatus::Placed;
                self.customer = customer;
                self.total = total;
            }
            OrderEvent::Paid { .. } => self.status = OrderStatus::Paid,
            OrderEvent::Shipped { .. } => self.status = OrderStatus::Shipped,
            OrderEvent::Cancelled { reason, .. } => {
                self.status = OrderStatus::Cancelled;
                self.reason = Some(reason);
            }
        }
    }
}
