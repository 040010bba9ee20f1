//! Sagas (process managers): events in, commands out, never twice.
//!
//! A saga follows the global log, routes each event it reacts to (from one or several aggregate
//! types) to one of its instances by an id taken from the event, and lets that instance update its
//! state and send commands to aggregates, through the [`CommandBus`]. Aggregates never handle each
//! other's events: a business process that spans several of them is a saga.
//!
//! A saga is a [processor](crate::processor): the one
//! [`ProcessorRunner`](crate::processor::ProcessorRunner) runs it, reconnects when a store
//! fails, applies the failure policy, parks dead letters and fires deadlines; its
//! [`ProcessorHandle`](crate::processor::ProcessorHandle) tells its status. Routes and
//! handlers see where the event was recorded ([`EventContext`], [`SagaContext::event`]), so an
//! event need not carry its own aggregate id.
//!
//! Nothing is sent twice. Every command carries a command id derived from the saga, its instance
//! and the triggering event (`"{saga}/{instance}/{event id}/{n}"`), so a redelivered or replayed
//! event reaches a repository that already applied that id and writes nothing. Each instance also
//! stores the position of the last event it handled, committed together with its state and the
//! saga's checkpoint, so moving the checkpoint back does not even dispatch again.
//!
//! ```
//! use std::time::Duration;
//! use cqrs_core::prelude::*;
//! use cqrs_core::processor::Processor as _;
//! use cqrs_core::saga::{CommandBus, MemorySagaStore, Route, SagaContext, SagaProcessor};
//! use cqrs_memstore::MemStore;
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! pub enum OrderEvent {
//!     Placed { order: u64 },
//!     Shipped,
//! }
//!
//! #[derive(Debug, Default, Aggregate)]
//! #[aggregate(name = "order", event = OrderEvent, error = std::convert::Infallible)]
//! pub struct Order;
//!
//! impl Order {
//!     fn apply(&mut self, _: OrderEvent) {}
//! }
//!
//! #[command_handler]
//! impl Order {
//!     /// Places the order.
//!     pub fn place(&self, order: u64) -> OrderEvent {
//!         OrderEvent::Placed { order }
//!     }
//!     /// Ships it.
//!     pub fn ship(&self) -> OrderEvent {
//!         OrderEvent::Shipped
//!     }
//! }
//!
//! /// Ships every order as soon as it is placed.
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! pub struct Shipping {
//!     shipped: bool,
//! }
//!
//! #[saga(name = "shipping")]
//! impl Shipping {
//!     fn route(input: &ShippingInput) -> Route {
//!         match input {
//!             ShippingInput::Order(OrderEvent::Placed { order }) => Route::start(order),
//!             ShippingInput::Order(OrderEvent::Shipped) => Route::Ignore,
//!         }
//!     }
//!
//!     #[on(Order)]
//!     fn on_order(&mut self, event: OrderEvent, saga: &mut SagaContext) {
//!         if let OrderEvent::Placed { order } = event {
//!             saga.send::<Order>(order, OrderCommand::Ship);
//!             saga.complete();
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemStore::new();
//! let orders = Repository::<Order, _>::new(store.clone());
//! let bus = CommandBus::new().register(orders.clone());
//! let shipping = SagaProcessor::<Shipping, _, _>::new(store.clone(), bus, MemorySagaStore::new())
//!     .runner()
//!     .spawn();
//!
//! let placed = orders.execute(7, OrderCommand::Place { order: 7 }).await?;
//! shipping.wait_for(placed.position, Duration::from_secs(5)).await?;
//! assert_eq!(orders.load(7).await?.version, Version(2)); // placed, then shipped
//!
//! // Given / when / then, without a store.
//! Shipping::given::<OrderEvent>([])
//!     .when(OrderEvent::Placed { order: 7 })
//!     .then_expect_commands([SagaCommand::to::<Order>(7, OrderCommand::Ship)]);
//! # Ok(())
//! # }
//! # use cqrs_core::saga::{SagaCommand, SagaTest};
//! ```

mod bus;
mod clock;
mod command_id;
mod context;
mod correlation;
mod processor;
mod store;
pub mod testing;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::event::RecordedEvent;
use crate::projection::EventContext;
use crate::store::StoreError;

pub use self::bus::{CommandBus, DispatchError};
pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::context::{HandlerError, Rejection, SagaCommand, SagaContext};
pub use self::correlation::read_process;
pub use self::processor::{
    SAGA_HEADER, SAGA_INSTANCE_HEADER, SagaProcessor, SagaReport, SagaRunner,
};
pub use self::store::{
    Deadline, InjectedCommitFault, InstanceEncodeError, InstanceRecord, MemorySagaStore,
    SagaCommit, SagaStore,
};
pub use self::testing::SagaTest;

/// Which saga instance an event goes to, and what it does to it.
///
/// Like Commanded's `interested?` or Axon's association property: the id comes from the event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Handle the event in the instance with this id, creating it if it does not exist yet.
    Start(String),
    /// Handle the event in the instance with this id if it exists; otherwise ignore the event.
    Continue(String),
    /// Like `Continue`, and then the instance is complete: later events for it are ignored,
    /// except a [`Route::Start`], which starts the instance afresh from the `Default` state.
    Stop(String),
    /// The saga does not react to this event.
    Ignore,
}

impl Route {
    /// [`Route::Start`] with `id`.
    pub fn start(id: impl fmt::Display) -> Self {
        Route::Start(id.to_string())
    }

    /// [`Route::Continue`] with `id`.
    pub fn resume(id: impl fmt::Display) -> Self {
        Route::Continue(id.to_string())
    }

    /// [`Route::Stop`] with `id`.
    pub fn stop(id: impl fmt::Display) -> Self {
        Route::Stop(id.to_string())
    }

    /// The instance id, unless the event is ignored.
    pub fn instance(&self) -> Option<&str> {
        match self {
            Route::Start(id) | Route::Continue(id) | Route::Stop(id) => Some(id),
            Route::Ignore => None,
        }
    }
}

/// A saga (process manager): reacts to events from one or several aggregate types and sends
/// commands to aggregates.
///
/// Implement it with `#[saga(name = "...")]` on the `impl` block that holds a `route` function
/// and one `#[on(Aggregate)]` handler per aggregate type it listens to (see the
/// [module docs](mod@crate::saga)). The state is the `Default` value when an instance starts and is
/// stored as JSON between events.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a saga",
    label = "this type does not implement `Saga`",
    note = "add `#[saga(name = \"...\")]` to the `impl {Self}` block that holds its `route` function and `#[on(Aggregate)]` handlers"
)]
pub trait Saga: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The saga's stable name: the key of its checkpoint and instances, and the first part of
    /// the command ids it sends. Renaming it starts the saga over.
    const NAME: &'static str;

    /// The aggregate types it listens to (one per `#[on(Aggregate)]` handler): the runner reads
    /// only their streams, and every event of them must decode into [`Saga::Input`].
    const AGGREGATES: &'static [&'static str];

    /// What the saga reacts to: one variant per aggregate type it listens to.
    type Input: fmt::Debug + Send;

    /// The input in `event`, or `None` when the saga does not listen to its aggregate type.
    fn decode(event: &RecordedEvent) -> Result<Option<Self::Input>, StoreError>;

    /// Which instance `input` goes to; `event` tells where it was recorded (stream, aggregate id,
    /// version, position, metadata), so the id need not be copied into every payload.
    fn route(input: &Self::Input, event: &EventContext<'_>) -> Route;

    /// Reacts to `input`: updates the state, sends commands, schedules deadlines.
    fn handle(&mut self, input: Self::Input, saga: &mut SagaContext) -> Result<(), HandlerError>;

    /// Reacts to a command this instance sent that its aggregate refused with a domain error
    /// (compensation). By default a refusal is a failure, handled by the runner's
    /// [`FailurePolicy`](crate::processor::FailurePolicy).
    fn on_rejected(
        &mut self,
        rejection: Rejection,
        saga: &mut SagaContext,
    ) -> Result<(), HandlerError> {
        let _ = saga;
        Err(format!(
            "saga `{}` does not handle refusals (add `fn on_rejected`): {rejection:?}",
            Self::NAME
        )
        .into())
    }

    /// Reacts to the deadline `name` this instance scheduled. By default a deadline is a failure,
    /// handled by the runner's [`FailurePolicy`](crate::processor::FailurePolicy).
    fn on_deadline(&mut self, name: &str, saga: &mut SagaContext) -> Result<(), HandlerError> {
        let _ = saga;
        Err(format!(
            "saga `{}` does not handle deadlines (add `fn on_deadline`): `{name}` is due",
            Self::NAME
        )
        .into())
    }
}
