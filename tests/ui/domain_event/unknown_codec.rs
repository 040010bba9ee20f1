use cqrs_core::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
#[domain_event(codec = protobuf)]
enum ShowEvent {
    Scheduled { capacity: u32 },
}

fn main() {}
