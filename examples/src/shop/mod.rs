//! A small shop: a customer fills a [`cart`], checks it out, and the [`checkout`] saga places the
//! [`order`], charges the [`payment`] and dispatches the [`shipment`], or cancels the order
//! (refunding the payment when the carrier cannot deliver). [`orders_by_customer`] is the read
//! model of orders per customer, [`story`] is `cargo run --example shop`, and [`service`] serves
//! it all over HTTP (`cargo run --example shop_service`).
//!
//! ```text
//! Cart: CheckedOut ──> Order: Place ──> Placed ──> Payment: Charge
//!                                                  ├─ Declined ──> Order: Cancel
//!                                                  └─ Charged  ──> Order: MarkPaid ──> Paid ──> Shipment: Dispatch
//!                                                                  ├─ Dispatched   ──> Order: MarkShipped
//!                                                                  └─ refused      ──> Payment: Refund ──> Refunded ──> Order: Cancel
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod cart;
pub mod checkout;
pub mod order;
pub mod orders_by_customer;
pub mod payment;
pub mod service;
pub mod shipment;
pub mod story;

pub use self::story::{ShopReport, run, run_on};

/// An amount of money in cents, shown as `12.50`.
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cents(pub u64);

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl std::ops::Add for Cents {
    type Output = Cents;

    fn add(self, other: Cents) -> Cents {
        Cents(self.0.saturating_add(other.0))
    }
}

impl std::iter::Sum for Cents {
    fn sum<I: Iterator<Item = Cents>>(amounts: I) -> Cents {
        amounts.fold(Cents(0), |total, amount| total + amount)
    }
}

/// One line of a cart or an order: so many of one product at one price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The product.
    pub product: String,
    /// How many.
    pub quantity: u32,
    /// The price of one.
    pub unit_price: Cents,
}

impl Line {
    /// Quantity times unit price.
    pub fn total(&self) -> Cents {
        Cents(self.unit_price.0.saturating_mul(u64::from(self.quantity)))
    }
}

/// Where a parcel goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The city.
    pub city: String,
    /// The ISO country code.
    pub country: String,
}

impl Address {
    /// An address in `city`, `country`.
    pub fn new(city: &str, country: &str) -> Self {
        Address {
            city: city.to_owned(),
            country: country.to_owned(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.city, self.country)
    }
}
