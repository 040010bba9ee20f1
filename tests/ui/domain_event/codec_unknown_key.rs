use cqrs_core::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
#[domain_event(encoding = msgpack)]
enum ShowEvent {
    Scheduled { capacity: u32 },
}

fn main() {}
