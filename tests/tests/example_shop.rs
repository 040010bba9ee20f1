//! The shop example's story, run as the example runs it (not by spawning cargo), on the in-memory
//! store, twice on one store, twice on one SQLite file (the example's default), and on PostgreSQL; and its pieces with given / when / then: the
//! cart's compensating removal, the checkout saga's refund, the orders-per-customer read model.

use cqrs_core::EventStore;
use cqrs_core::prelude::*;
use cqrs_core::projection::testing::ProjectionTest;
use cqrs_core::saga::SagaCommand;
use cqrs_examples::database::{self, Database};
use cqrs_examples::earlier_runs::EarlierRuns;
use cqrs_examples::payment::Card;
use cqrs_examples::shop::cart::{Cart, CartCommand, CartError, CartEvent};
use cqrs_examples::shop::checkout::{Checkout, CheckoutInput};
use cqrs_examples::shop::order::{Order, OrderCommand, OrderEvent, OrderStatus};
use cqrs_examples::shop::orders_by_customer::OrdersByCustomer;
use cqrs_examples::shop::payment::{Payment, PaymentCommand, PaymentEvent};
use cqrs_examples::shop::shipment::{Shipment, ShipmentCommand, ShipmentError, ShipmentEvent};
use cqrs_examples::shop::{self, Address, Cents, Line, ShopReport};
use cqrs_memstore::MemStore;
use cqrs_postgres::testing::TestCluster;
use cqrs_tests::scratch_database::ScratchDatabase;

async fn run_on<S: EventStore + Clone>(store: S) -> (ShopReport, String) {
    let mut story = Vec::new();
    let report = shop::run(store, &mut story)
        .await
        .unwrap_or_else(|error| panic!("the story failed: {error}"));
    (report, String::from_utf8_lossy(&story).into_owned())
}

/// Runs the story as `cargo run --example shop` does on `database`.
async fn run_as_the_example(database: &Database) -> (EarlierRuns, ShopReport, String) {
    let mut story = Vec::new();
    let (found, report) = shop::run_on(database, &mut story)
        .await
        .unwrap_or_else(|error| panic!("the story failed: {error}"));
    (found, report, String::from_utf8_lossy(&story).into_owned())
}

fn first_line(story: &str) -> &str {
    story.lines().next().unwrap_or_default()
}

fn assert_story(report: &ShopReport) {
    let run = report.run;
    let order = |n: u32| &report.orders[&format!("{run}-{n}")];

    // Ada's first order: shipped and paid, without the sampler she took out.
    assert_eq!(order(1).status, OrderStatus::Shipped);
    assert_eq!(order(1).kept, Cents(5_200));
    assert_eq!(order(1).tracking.as_deref(), Some(&*format!("TRK-{run}-1")));
    // Ben's card declined: cancelled, nothing taken.
    assert_eq!(order(2).status, OrderStatus::Cancelled);
    assert_eq!(order(2).kept, Cents(0));
    assert!(!order(2).refunded);
    // Cleo's address is refused: the charge is compensated by a refund, then the order cancelled.
    assert_eq!(order(3).status, OrderStatus::Cancelled);
    assert!(order(3).refunded);
    assert_eq!(order(3).kept, Cents(0));
    assert!(
        order(3)
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("35.00 refunded"))
    );
    assert_eq!(order(4).status, OrderStatus::Shipped);
    // The read model's processor is healthy at the end (live, nothing parked).
    assert!(report.health.healthy, "{:?}", report.health);
    assert_eq!(report.health.processors.len(), 1);

    // The cart as of the version before the removal still holds the sampler.
    let products =
        |lines: &[Line]| -> Vec<String> { lines.iter().map(|line| line.product.clone()).collect() };
    assert_eq!(
        products(&report.cart_before_removal),
        ["mug", "tea sampler", "teapot"]
    );
    assert_eq!(products(&report.cart_now), ["mug", "teapot"]);

    // The read model: Ada has two orders, each as the aggregates say.
    let ada = report
        .read_model
        .orders_of(&report.customers["Ada"])
        .expect("Ada's orders");
    assert_eq!(ada.len(), 2);
    for (id, outcome) in &report.orders {
        let summary = report
            .read_model
            .order(id)
            .expect("order in the read model");
        assert_eq!(
            (summary.status, summary.total),
            (outcome.status, outcome.total)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_story_ships_cancels_refunds_and_remembers_the_cart() {
    let (report, story) = run_on(MemStore::new()).await;
    assert_story(&report);
    assert!(story.contains("as of version 4 the cart held the sampler"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_store_replays_the_first_and_sends_nothing_twice() {
    let store = MemStore::new();
    let (first, _) = run_on(store.clone()).await;
    let (second, _) = run_on(store.clone()).await;
    assert_story(&second);
    assert!(second.run > first.run);
    assert!(second.replayed.deduplicated > 0, "{:?}", second.replayed);
    assert_eq!(second.replayed.commands, 0, "the replay wrote something");
    // The read model of the second run was rebuilt from the whole log: both runs' orders.
    assert!(
        second
            .read_model
            .orders_of(&first.customers["Ada"])
            .is_some()
    );
    let orders = Repository::<Order, _>::new(store);
    for (id, outcome) in &first.orders {
        let state = orders.load(id).await.expect("order").state;
        assert_eq!(state.status(), outcome.status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_a_sqlite_file_continues_the_first() {
    let file = ScratchDatabase::new("example-shop");
    let database = Database::Sqlite(file.path().to_owned());
    let place = format!("On SQLite ({})", file.path().display());

    let (found, first, story) = run_as_the_example(&database).await;
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(first_line(&story), format!("{place}: a new database."));
    assert_story(&first);
    assert_eq!(first.orders_in_store, 4);
    let wal = format!("{}-wal", file.path().display());
    assert!(
        !std::path::Path::new(&wal).exists(),
        "the run closed the store: the file alone holds what it wrote"
    );

    // What the first run left, read from the file by a store of its own, as a new process would.
    let store = database::open_sqlite(file.path()).await.expect("reopen");
    let left = store.head().await.expect("head");
    drop(store);

    let (found, second, story) = run_as_the_example(&database).await;
    // Four carts, each checked out into an order; the two shipped orders have a shipment (the
    // carrier refused Cleo's before one was made).
    let shipped = first
        .orders
        .values()
        .filter(|order| order.status == OrderStatus::Shipped)
        .count() as u64;
    assert_eq!(shipped, 2);
    let expected = EarlierRuns {
        aggregates: vec![("carts", 4), ("orders", 4), ("shipments", shipped)],
        events: left.0,
    };
    assert_eq!(found, expected);
    assert_eq!(
        first_line(&story),
        format!(
            "{place}: found 4 carts, 4 orders, 2 shipments, {} events from earlier runs.",
            left.0
        )
    );
    assert_story(&second);
    assert!(second.run > first.run, "each run has its own ids");
    assert_eq!(second.replayed.checkpoint, left);
    assert!(second.replayed.deduplicated > 0, "{:?}", second.replayed);
    assert_eq!(second.replayed.commands, 0, "the replay wrote something");
    // The end checks covered the first run's orders too.
    assert_eq!(second.orders_in_store, 8);

    let store = database::open_sqlite(file.path()).await.expect("reopen");
    let orders = Repository::<Order, _>::new(store);
    for (id, outcome) in &first.orders {
        let state = orders.load(id).await.expect("order").state;
        assert_eq!(state.status(), outcome.status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_story_runs_on_postgresql_from_an_empty_and_from_an_existing_database() {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");
    let store = cqrs_examples::database::connect(&url).await.expect("empty");
    let (first, _) = run_on(store).await;
    assert_story(&first);
    let store = cqrs_examples::database::connect(&url)
        .await
        .expect("existing");
    let (second, _) = run_on(store).await;
    assert_story(&second);
    assert_eq!(second.replayed.commands, 0, "the replay wrote something");
}

fn opened() -> CartEvent {
    CartEvent::Opened {
        customer: "ada".to_owned(),
    }
}

fn added(product: &str, quantity: u32, cents: u64) -> CartEvent {
    CartEvent::ItemAdded {
        product: product.to_owned(),
        quantity,
        unit_price: Cents(cents),
    }
}

#[test]
fn removing_an_item_is_an_event_that_undoes_its_additions() {
    Cart::given([opened(), added("mug", 1, 850), added("mug", 1, 850)])
        .when(CartCommand::RemoveItem {
            product: "mug".to_owned(),
        })
        .then_expect([CartEvent::ItemRemoved {
            product: "mug".to_owned(),
            quantity: 2,
        }]);
    Cart::given([opened()])
        .when(CartCommand::RemoveItem {
            product: "mug".to_owned(),
        })
        .then_expect_error(CartError::NotInCart {
            product: "mug".to_owned(),
        });
}

#[test]
fn an_emptied_cart_cannot_be_checked_out() {
    Cart::given([
        opened(),
        added("mug", 1, 850),
        CartEvent::ItemRemoved {
            product: "mug".to_owned(),
            quantity: 1,
        },
    ])
    .when(CartCommand::CheckOut {
        order: "1".to_owned(),
        card: Card::Good,
        address: Address::new("Utrecht", "NL"),
    })
    .then_expect_error(CartError::Empty);
}

#[test]
fn an_undeliverable_address_is_refunded_then_cancelled() {
    let order = "7".to_owned();
    let address = Address::new("McMurdo", "AQ");
    let checked_out = CartEvent::CheckedOut {
        order: order.clone(),
        customer: "cleo".to_owned(),
        lines: vec![Line {
            product: "teapot".to_owned(),
            quantity: 1,
            unit_price: Cents(3_500),
        }],
        total: Cents(3_500),
        card: Card::Good,
        address: address.clone(),
    };
    let refund = PaymentCommand::Refund {
        order: order.clone(),
        reason: "the carrier does not deliver to McMurdo (AQ)".to_owned(),
    };
    let history: [CheckoutInput; 4] = [
        checked_out.into(),
        OrderEvent::Placed {
            order: order.clone(),
            customer: "cleo".to_owned(),
            lines: Vec::new(),
            total: Cents(3_500),
        }
        .into(),
        PaymentEvent::Charged {
            order: order.clone(),
            amount: Cents(3_500),
        }
        .into(),
        OrderEvent::Paid {
            order: order.clone(),
            amount: Cents(3_500),
        }
        .into(),
    ];
    Checkout::given(history)
        .when_rejected::<Shipment>(
            &order,
            ShipmentCommand::Dispatch {
                order: order.clone(),
                address: address.clone(),
            },
            ShipmentError::Undeliverable { address },
        )
        .then_expect_commands([SagaCommand::to::<Payment>(&order, refund)])
        .and_then()
        .when(PaymentEvent::Refunded {
            order: order.clone(),
            amount: Cents(3_500),
            reason: "the carrier does not deliver to McMurdo (AQ)".to_owned(),
        })
        .then_expect_commands([SagaCommand::to::<Order>(
            &order,
            OrderCommand::Cancel {
                order: order.clone(),
                reason: "the carrier does not deliver to McMurdo (AQ); 35.00 refunded".to_owned(),
            },
        )]);
}

#[test]
fn a_dispatched_parcel_ships_the_order() {
    let order = "8".to_owned();
    let history: [CheckoutInput; 1] = [CartEvent::CheckedOut {
        order: order.clone(),
        customer: "ada".to_owned(),
        lines: Vec::new(),
        total: Cents(1_200),
        card: Card::Good,
        address: Address::new("Utrecht", "NL"),
    }
    .into()];
    Checkout::given(history)
        .and([
            CheckoutInput::from(OrderEvent::Placed {
                order: order.clone(),
                customer: "ada".to_owned(),
                lines: Vec::new(),
                total: Cents(1_200),
            }),
            PaymentEvent::Charged {
                order: order.clone(),
                amount: Cents(1_200),
            }
            .into(),
            OrderEvent::Paid {
                order: order.clone(),
                amount: Cents(1_200),
            }
            .into(),
        ])
        .when(ShipmentEvent::Dispatched {
            order: order.clone(),
            address: Address::new("Utrecht", "NL"),
            tracking: "TRK-8".to_owned(),
        })
        .then_expect_commands([SagaCommand::to::<Order>(
            &order,
            OrderCommand::MarkShipped {
                order: order.clone(),
                tracking: "TRK-8".to_owned(),
            },
        )]);
}

#[test]
fn the_read_model_follows_each_order_of_each_customer() {
    let placed = |order: &str, customer: &str| OrderEvent::Placed {
        order: order.to_owned(),
        customer: customer.to_owned(),
        lines: vec![Line {
            product: "mug".to_owned(),
            quantity: 2,
            unit_price: Cents(850),
        }],
        total: Cents(1_700),
    };
    let given = OrdersByCustomer
        .given("order-1", [placed("1", "ada")])
        .given("order-2", [placed("2", "ben")])
        .given(
            "order-1",
            [OrderEvent::Cancelled {
                order: "1".to_owned(),
                reason: "changed her mind".to_owned(),
            }],
        );
    let model = given.read_model();
    assert_eq!(
        model.order("1").map(|order| order.status),
        Some(OrderStatus::Cancelled)
    );
    assert_eq!(model.order("2").map(|order| order.items), Some(2));
    assert_eq!(model.orders_of("ben").map(|orders| orders.len()), Some(1));
}
