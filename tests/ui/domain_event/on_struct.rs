use cqrs_core::prelude::*;

#[derive(DomainEvent)]
struct Scheduled {
    capacity: u32,
}

fn main() {}
