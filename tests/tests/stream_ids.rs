//! One stream-id grammar: two aggregates can never share a stream. `order-line` is refused as an
//! aggregate name (at compile time by the derive, see `ui/aggregate/name_with_dash.rs`, and at
//! run time for a hand-written impl), so `order-line-5` is the order `line-5` for everyone:
//! the repository, projections' aggregate filters and sagas' routing.

use std::future::Future;

use cqrs_core::prelude::*;
use cqrs_core::projection::route_from;
use cqrs_core::{
    EventStore, ExecuteError, InvalidAggregateName, InvalidStreamId, LoadError, LogEntry, Position,
};
use cqrs_memstore::MemStore;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum OrderEvent {
    Placed,
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Debug, Default, Clone, Aggregate)]
#[aggregate(name = "order", event = OrderEvent, error = Never)]
struct Order {
    placed: bool,
}

#[command_handler]
impl Order {
    pub(crate) fn place(&self) -> OrderEvent {
        OrderEvent::Placed
    }
}

impl Order {
    fn apply(&mut self, event: OrderEvent) {
        match event {
            OrderEvent::Placed => self.placed = true,
        }
    }
}

/// An aggregate written without the derive, under a name the derive refuses.
#[derive(Debug, Default)]
struct OrderLine;

#[derive(Debug, Clone)]
enum OrderLineCommand {
    Add,
}

impl Aggregate for OrderLine {
    const NAME: &'static str = "order-line";
    type Event = OrderEvent;
    type Error = Never;

    fn apply(&mut self, _: OrderEvent) {}
}

impl CommandHandler for OrderLine {
    type Command = OrderLineCommand;
    type Services = ();

    fn handle<'a>(
        &'a self,
        command: OrderLineCommand,
        _: &'a (),
    ) -> impl Future<Output = Result<Vec<OrderEvent>, Never>> + Send + 'a {
        let OrderLineCommand::Add = command;
        std::future::ready(Ok(vec![OrderEvent::Placed]))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_name_with_the_separator_is_refused_before_anything_is_written() {
    let store = MemStore::new();
    let lines = Repository::<OrderLine, _>::new(store.clone());
    let refused = InvalidStreamId::AggregateName(InvalidAggregateName::Character {
        name: "order-line".into(),
        character: '-',
    });
    match lines.execute(5, OrderLineCommand::Add).await {
        Err(ExecuteError::InvalidStream(error)) => assert_eq!(error, refused),
        other => panic!("expected the name to be refused, got {other:?}"),
    }
    match lines.load(5).await {
        Err(LoadError::InvalidStream(error)) => assert_eq!(error, refused),
        other => panic!("expected the name to be refused, got {other:?}"),
    }
    assert_eq!(store.head().await.expect("head"), Position::START);

    // The stream the order line would have shared is the order `line-5`'s alone.
    let orders = Repository::<Order, _>::new(store.clone());
    let outcome = orders
        .execute("line-5", OrderCommand::Place)
        .await
        .expect("placed");
    assert_eq!(outcome.stream.as_str(), "order-line-5");
    assert_eq!(
        (outcome.stream.aggregate(), outcome.stream.aggregate_id()),
        ("order", "line-5")
    );
    assert!(orders.load("line-5").await.expect("loads").state.placed);

    // A processor that reads the orders' streams gets it; one that reads another aggregate's,
    // whose name merely starts the same way, does not: the log read passes over it.
    let read = store
        .read_log(Position::START, 10, &["order"])
        .await
        .expect("read");
    assert_eq!(read.last, Some(Position(1)));
    let recorded = match read.entries.as_slice() {
        [LogEntry::Event(recorded)] => recorded,
        other => panic!("expected the order's event, got {other:?}"),
    };
    let routed: OrderEvent = route_from(&["order"], recorded).expect("routes");
    assert_eq!(routed, OrderEvent::Placed);
    let passed_over = store
        .read_log(Position::START, 10, &["orde", "order_line"])
        .await
        .expect("read");
    assert!(passed_over.entries.is_empty(), "{:?}", passed_over.entries);
    assert_eq!(
        passed_over.last,
        Some(Position(1)),
        "it still moves past it"
    );
    // Routed for those aggregates anyway, it is not theirs: an unknown event, not a silent one.
    assert!(route_from::<OrderEvent>(&["orde", "order_line"], recorded).is_err());
    assert!(recorded.stream.is_of("order") && !recorded.stream.is_of("orde"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_aggregate_id_is_refused() {
    let store = MemStore::new();
    let orders = Repository::<Order, _>::new(store.clone());
    match orders.execute("", OrderCommand::Place).await {
        Err(ExecuteError::InvalidStream(InvalidStreamId::EmptyAggregateId { aggregate })) => {
            assert_eq!(aggregate, "order");
        }
        other => panic!("expected an empty id to be refused, got {other:?}"),
    }
    assert_eq!(store.head().await.expect("head"), Position::START);
}
