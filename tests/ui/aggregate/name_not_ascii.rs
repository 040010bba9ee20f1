use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum OrderLineEvent {
    Added,
}

#[derive(Debug, thiserror::Error)]
#[error("order line error")]
struct OrderLineError;

#[derive(Default, Aggregate)]
#[aggregate(name = "bühne", event = OrderLineEvent, error = OrderLineError)]
struct OrderLine;

impl OrderLine {
    fn apply(&mut self, _event: OrderLineEvent) {}
}

fn main() {}
