use cqrs_core::prelude::*;

#[derive(DomainEvent)]
enum ShowEvent<T> {
    Scheduled(T),
}

fn main() {}
