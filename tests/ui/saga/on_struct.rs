use cqrs_core::prelude::*;

#[saga(name = "checkout")]
struct Checkout;

fn main() {}
