//! A projection that refuses one customer's orders while told to: it parks dead letters on
//! demand, for the tests of the admin tools (the status page, the CLI) to retry or discard. It
//! can be slowed down, so that a rebuild takes long enough to be watched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cqrs_core::EventStore;
use cqrs_core::processor::{FailurePolicy, Processor as _, ProcessorHandle};
use cqrs_core::projection::{EventContext, MemoryReadModel, Projection, Projector};
use cqrs_examples::shop::order::OrderEvent;

/// The projection's name.
pub const COUNTED: &str = "orders_counted";

/// The customer whose orders [`Counted`] refuses while told to.
pub const REFUSED: &str = "mallory";

/// Why [`Counted`] refused an order.
#[derive(Debug, thiserror::Error)]
#[error("orders of customer `{0}` are refused until the fix is deployed")]
pub struct Refused(pub String);

/// Orders placed per customer; refuses [`REFUSED`]'s while `refuse` is set.
pub struct Counted {
    /// Whether [`REFUSED`]'s orders fail.
    pub refuse: Arc<AtomicBool>,
    /// How long applying one event takes (the thread sleeps): zero but for a slow read model.
    pub pace: Duration,
}

impl Projection for Counted {
    const NAME: &'static str = COUNTED;
    const AGGREGATES: &'static [&'static str] = &["order"];
    type Event = OrderEvent;
    type ReadModel = BTreeMap<String, u32>;
    type Error = Refused;

    fn apply(
        &self,
        counts: &mut BTreeMap<String, u32>,
        event: OrderEvent,
        _: &EventContext<'_>,
    ) -> Result<(), Refused> {
        if !self.pace.is_zero() {
            std::thread::sleep(self.pace);
        }
        if let OrderEvent::Placed { customer, .. } = event {
            if customer == REFUSED && self.refuse.load(Ordering::SeqCst) {
                return Err(Refused(customer));
            }
            *counts.entry(customer).or_default() += 1;
        }
        Ok(())
    }
}

/// Runs [`Counted`] over `store` into `counts`, parking what it refuses as dead letters
/// ([`FailurePolicy::Skip`]).
pub fn spawn_counted<S: EventStore + Clone>(
    store: &S,
    refuse: &Arc<AtomicBool>,
    counts: &MemoryReadModel<BTreeMap<String, u32>>,
) -> ProcessorHandle {
    spawn_paced(store, refuse, counts, Duration::ZERO)
}

/// [`spawn_counted`], taking `pace` over each event, in batches of 10 events (so that a
/// rebuild's progress shows batch by batch).
pub fn spawn_paced<S: EventStore + Clone>(
    store: &S,
    refuse: &Arc<AtomicBool>,
    counts: &MemoryReadModel<BTreeMap<String, u32>>,
    pace: Duration,
) -> ProcessorHandle {
    let projection = Counted {
        refuse: Arc::clone(refuse),
        pace,
    };
    let runner = Projector::new(projection, store.clone(), counts.clone())
        .runner()
        .failure_policy(FailurePolicy::Skip);
    if pace.is_zero() {
        runner.spawn()
    } else {
        runner.batch_size(10).spawn()
    }
}
