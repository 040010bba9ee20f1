//! The shopping cart: items go in and out until the customer checks out. Taking an item out is
//! a compensating event (`ItemRemoved`), not an erasure: the cart's history keeps what was there,
//! and [`Repository::load_at`](cqrs_core::Repository::load_at) shows the cart as it was.

use std::collections::BTreeMap;

use cqrs_core::prelude::*;

use crate::payment::Card;
use crate::shop::{Address, Cents, Line};

/// What happened to a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum CartEvent {
    /// A customer started shopping.
    Opened {
        /// The customer's id.
        customer: String,
    },
    /// Items went in.
    ItemAdded {
        /// The product.
        product: String,
        /// How many.
        quantity: u32,
        /// The price of one.
        unit_price: Cents,
    },
    /// A product came out again, all of it: undoes its `ItemAdded` events.
    ItemRemoved {
        /// The product.
        product: String,
        /// How many came out.
        quantity: u32,
    },
    /// The customer checked out: the cart becomes an order.
    CheckedOut {
        /// The order's id.
        order: String,
        /// The customer's id.
        customer: String,
        /// What was bought.
        lines: Vec<Line>,
        /// What it costs.
        total: Cents,
        /// The card to charge.
        card: Card,
        /// Where to ship.
        address: Address,
    },
}

/// Why a cart refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    /// The cart was opened already.
    #[error("the cart is already open")]
    AlreadyOpen,
    /// The cart was never opened.
    #[error("the cart is not open")]
    NotOpen,
    /// The cart was checked out and can no longer change.
    #[error("the cart was checked out")]
    CheckedOut,
    /// At least one item must go in.
    #[error("add at least one item")]
    NoQuantity,
    /// The product is not in the cart.
    #[error("{product} is not in the cart")]
    NotInCart {
        /// The product asked for.
        product: String,
    },
    /// An empty cart cannot be checked out.
    #[error("the cart is empty")]
    Empty,
}

/// A customer's cart.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "cart", event = CartEvent, error = CartError)]
pub struct Cart {
    customer: Option<String>,
    lines: BTreeMap<String, Line>,
    checked_out: bool,
}

#[command_handler]
impl Cart {
    /// Opens the cart for `customer`.
    pub fn open(&self, customer: String) -> Result<CartEvent, CartError> {
        if self.customer.is_some() {
            return Err(CartError::AlreadyOpen);
        }
        Ok(CartEvent::Opened { customer })
    }

    /// Puts `quantity` of `product` in, at `unit_price` each.
    pub fn add_item(
        &self,
        product: String,
        quantity: u32,
        unit_price: Cents,
    ) -> Result<CartEvent, CartError> {
        self.check_open()?;
        if quantity == 0 {
            return Err(CartError::NoQuantity);
        }
        Ok(CartEvent::ItemAdded {
            product,
            quantity,
            unit_price,
        })
    }

    /// Takes every `product` out again.
    pub fn remove_item(&self, product: String) -> Result<CartEvent, CartError> {
        self.check_open()?;
        match self.lines.get(&product) {
            Some(line) => Ok(CartEvent::ItemRemoved {
                quantity: line.quantity,
                product,
            }),
            None => Err(CartError::NotInCart { product }),
        }
    }

    /// Turns the cart into the order `order`, to be paid with `card` and shipped to `address`.
    pub fn check_out(
        &self,
        order: String,
        card: Card,
        address: Address,
    ) -> Result<CartEvent, CartError> {
        self.check_open()?;
        let (Some(customer), false) = (&self.customer, self.lines.is_empty()) else {
            return Err(CartError::Empty);
        };
        Ok(CartEvent::CheckedOut {
            order,
            customer: customer.clone(),
            lines: self.lines(),
            total: self.total(),
            card,
            address,
        })
    }

    /// What is in the cart, by product.
    #[command(skip)]
    pub fn lines(&self) -> Vec<Line> {
        self.lines.values().cloned().collect()
    }

    /// What the cart costs.
    #[command(skip)]
    pub fn total(&self) -> Cents {
        self.lines.values().map(Line::total).sum()
    }
}

impl Cart {
    fn check_open(&self) -> Result<(), CartError> {
        match (&self.customer, self.checked_out) {
            (None, _) => Err(CartError::NotOpen),
            (Some(_), true) => Err(CartError::CheckedOut),
            (Some(_), false) => Ok(()),
        }
    }

    fn apply(&mut self, event: CartEvent) {
        match event {
            CartEvent::Opened { customer } => self.customer = Some(customer),
            CartEvent::ItemAdded {
                product,
                quantity,
                unit_price,
            } => {
                let line = self.lines.entry(product.clone()).or_insert(Line {
                    product,
                    quantity: 0,
                    unit_price,
                });
                line.quantity = line.quantity.saturating_add(quantity);
                line.unit_price = unit_price;
            }
            CartEvent::ItemRemoved { product, .. } => {
                self.lines.remove(&product);
            }
            CartEvent::CheckedOut { .. } => self.checked_out = true,
        }
    }
}
