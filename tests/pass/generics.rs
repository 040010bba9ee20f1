//! A generic aggregate with the bounds an aggregate needs.

use std::marker::PhantomData;

use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum CounterEvent {
    Added { by: u32 },
}

#[derive(Debug, thiserror::Error)]
#[error("overflow")]
struct Overflow;

trait Unit: Default + Send + Sync + 'static {
    const NAME: &'static str;
}

#[derive(Default)]
struct Meters;

impl Unit for Meters {
    const NAME: &'static str = "m";
}

#[derive(Default, Aggregate)]
#[aggregate(name = "counter", event = CounterEvent, error = Overflow)]
struct Counter<U: Unit>
where
    U: Default,
{
    total: u32,
    unit: PhantomData<U>,
}

impl<U: Unit> Counter<U> {
    fn apply(&mut self, event: CounterEvent) {
        match event {
            CounterEvent::Added { by } => self.total += by,
        }
    }
}

#[command_handler]
impl<U: Unit> Counter<U> {
    pub fn add(&self, by: u32) -> Result<CounterEvent, Overflow> {
        self.total.checked_add(by).ok_or(Overflow)?;
        let _ = U::NAME;
        Ok(CounterEvent::Added { by })
    }
}

fn main() {
    assert_eq!(<Counter<Meters> as Aggregate>::NAME, "counter");
    let mut counter = Counter::<Meters>::default();
    Aggregate::apply(&mut counter, CounterEvent::Added { by: 2 });
    assert_eq!(counter.total, 2);
    let _ = CounterCommand::Add { by: 1 };
}
