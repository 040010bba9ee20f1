//! The shop's story behind `cargo run --example shop`, as a library function so that the
//! example binary and the tests run the same thing.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use cqrs_core::processor::{FailurePolicy, Health, HealthCheck, Processor as _};

use crate::health::describe_health;
use cqrs_core::projection::{MemoryReadModel, Projector};
use cqrs_core::saga::{CommandBus, MemorySagaStore, SagaProcessor, SagaRunner};
use cqrs_core::{EventStore, Repository};

use crate::database::{self, Database};
use crate::earlier_runs::{self, EarlierRuns};
use crate::payment::Card;
use crate::replay::{self, Replay};
use crate::shop::cart::{Cart, CartCommand};
use crate::shop::checkout::Checkout;
use crate::shop::order::{Order, OrderStatus};
use crate::shop::orders_by_customer::{CustomerOrders, OrdersByCustomer};
use crate::shop::payment::Payment;
use crate::shop::shipment::Shipment;
use crate::shop::{Address, Cents, Line};
use crate::{Error, InvariantViolated};
use cqrs_memstore::MemStore;

const MUG: (&str, Cents) = ("mug", Cents(850));
const TEAPOT: (&str, Cents) = ("teapot", Cents(3_500));
const SAMPLER: (&str, Cents) = ("tea sampler", Cents(1_200));
const KETTLE: (&str, Cents) = ("kettle", Cents(4_900));
/// How long to wait for the read model to catch up before calling it broken.
const READ_MODEL_WAIT: Duration = Duration::from_secs(10);

/// How one order ended, from its aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderOutcome {
    /// Who ordered (the story's name for the customer).
    pub customer: &'static str,
    /// Where the order stands.
    pub status: OrderStatus,
    /// What it costs.
    pub total: Cents,
    /// Why it was cancelled, when it was.
    pub reason: Option<String>,
    /// The money the shop kept (charged and not refunded).
    pub kept: Cents,
    /// Whether the payment was refunded.
    pub refunded: bool,
    /// The tracking number, when shipped.
    pub tracking: Option<String>,
}

/// What a run did, for the tests (the invariants were checked already).
#[derive(Debug, Clone)]
pub struct ShopReport {
    /// The run's number: ids of this run end with it, so runs on one database never collide.
    pub run: u64,
    /// What the checkout saga did while catching up with earlier runs (nothing is sent twice).
    pub replayed: Replay,
    /// Customer ids by the story's names.
    pub customers: BTreeMap<&'static str, String>,
    /// The cart whose item was taken out again.
    pub cart: String,
    /// That cart as of the version before the removal.
    pub cart_before_removal: Vec<Line>,
    /// That cart now.
    pub cart_now: Vec<Line>,
    /// This run's orders, by order id.
    pub orders: BTreeMap<String, OrderOutcome>,
    /// The orders-per-customer read model after the run.
    pub read_model: CustomerOrders,
    /// Orders in the whole store, earlier runs' included, that were checked at the end: each
    /// shipped and paid or cancelled with its money back, each as the read model says.
    pub orders_in_store: usize,
    /// The processors' health at the end of the run.
    pub health: Health,
}

/// The shop: the repositories and the checkout saga, over one store.
struct Shop<S: EventStore + Clone> {
    carts: Repository<Cart, S>,
    orders: Repository<Order, S>,
    payments: Repository<Payment, S>,
    shipments: Repository<Shipment, S>,
    checkout: SagaRunner<Checkout, S, MemorySagaStore>,
    run: u64,
}

impl<S: EventStore + Clone> Shop<S> {
    fn open(store: &S, run: u64) -> Self {
        let carts = Repository::new(store.clone());
        let orders = Repository::new(store.clone());
        let payments = Repository::new(store.clone());
        // The shipment handler gets the carrier (`Carrier::default()`) as its services.
        let shipments = Repository::new(store.clone());
        let bus = CommandBus::new()
            .register(orders.clone())
            .register(payments.clone())
            .register(shipments.clone());
        // The saga's state lives in memory, so each run replays the log from the start. Over a
        // database that holds earlier runs this is still correct: every command the saga sends
        // carries an id derived from the triggering event, so the commands of earlier runs are
        // recognised by their repositories and not applied again (see `ShopReport::replayed`).
        let checkout = SagaProcessor::new(store.clone(), bus, MemorySagaStore::new())
            .runner()
            .failure_policy(FailurePolicy::Stop);
        Shop {
            carts,
            orders,
            payments,
            shipments,
            checkout,
            run,
        }
    }

    /// A new cart for `customer`, filled with `items`; returns its id (also the order's id).
    async fn fill_cart(
        &self,
        number: u32,
        customer: &str,
        items: &[((&str, Cents), u32)],
    ) -> Result<String, Error> {
        let cart = format!("{}-{number}", self.run);
        let open = CartCommand::Open {
            customer: customer.to_owned(),
        };
        self.carts.execute(&cart, open).await?;
        for ((product, unit_price), quantity) in items {
            let add = CartCommand::AddItem {
                product: (*product).to_owned(),
                quantity: *quantity,
                unit_price: *unit_price,
            };
            self.carts.execute(&cart, add).await?;
        }
        Ok(cart)
    }

    /// Checks the cart out; the saga takes the order as far as it goes.
    async fn check_out(
        &self,
        cart: &str,
        customer: &'static str,
        card: Card,
        address: Address,
    ) -> Result<OrderOutcome, Error> {
        let check_out = CartCommand::CheckOut {
            order: cart.to_owned(),
            card,
            address,
        };
        self.carts.execute(cart, check_out).await?;
        self.checkout.catch_up().await?;
        self.outcome(cart, customer).await
    }

    async fn outcome(&self, order: &str, customer: &'static str) -> Result<OrderOutcome, Error> {
        let state = self.orders.load(order).await?.state;
        let payment = self.payments.load(order).await?.state;
        let shipment = self.shipments.load(order).await?.state;
        Ok(OrderOutcome {
            customer,
            status: state.status(),
            total: state.total(),
            reason: state.reason().map(str::to_owned),
            kept: payment.kept(),
            refunded: payment.refunded(),
            tracking: shipment.tracking().map(str::to_owned),
        })
    }
}

/// The SQLite file the example keeps its events in when no flag names another, in the working
/// directory.
pub const DEFAULT_FILE: &str = "shop.db";

/// The aggregates a run's first line counts, by name and plural.
pub const AGGREGATES: [(&str, &str); 3] = [
    ("cart", "carts"),
    ("order", "orders"),
    ("shipment", "shipments"),
];

/// Runs the story on `database` as `cargo run --example shop` does: its first line says where
/// the events go and what earlier runs left there ([`earlier_runs::introduce`]), then [`run`]
/// continues from there. Returns what the store held before, and the report.
pub async fn run_on<W: Write>(
    database: &Database,
    out: &mut W,
) -> Result<(EarlierRuns, ShopReport), Error> {
    match database {
        Database::Sqlite(path) => {
            let store = database::open_sqlite(path).await?;
            let found = earlier_runs::introduce(&store, database, &AGGREGATES, out).await?;
            let report = run(store.clone(), out).await?;
            // The file alone holds the run now: SQLite's `-wal` and `-shm` files are gone.
            store.close().await?;
            Ok((found, report))
        }
        Database::Memory => {
            let store = MemStore::new();
            let found = earlier_runs::introduce(&store, database, &AGGREGATES, out).await?;
            Ok((found, run(store, out).await?))
        }
        Database::Postgres(url) => {
            let store = database::connect(url).await?;
            let found = earlier_runs::introduce(&store, database, &AGGREGATES, out).await?;
            Ok((found, run(store, out).await?))
        }
    }
}

/// Runs the shop's story on `store`, writing it to `out`, and checks that every order ended
/// shipped and paid or cancelled with the money back, that the cart's past state shows what the
/// compensating event undid, and that the read model equals the orders.
///
/// `store` may be empty or hold earlier runs: ids are made unique per run, and the saga's replay
/// of earlier runs sends nothing twice.
pub async fn run<S, W>(store: S, out: &mut W) -> Result<ShopReport, Error>
where
    S: EventStore + Clone,
    W: Write,
{
    // The log's length makes a run number that no earlier run on this store used.
    let run = store.head().await?.0 + 1;
    let shop = Shop::open(&store, run);
    let orders_by_customer = MemoryReadModel::<CustomerOrders>::new();
    let read_model = Projector::new(OrdersByCustomer, store.clone(), orders_by_customer.clone())
        .runner()
        .spawn();
    // What a readiness probe asks: is every processor live or catching up?
    let health = HealthCheck::new().with(&read_model);

    let replayed = replay::catch_up(&shop.checkout).await?;
    if replayed.events > 0 {
        writeln!(out, "{replayed}\n")?;
    }
    writeln!(out, "Run {run}: the tea shop opens.\n")?;
    let customers: BTreeMap<&'static str, String> = ["Ada", "Ben", "Cleo"]
        .into_iter()
        .map(|name| (name, format!("{}-{run}", name.to_lowercase())))
        .collect();
    let id = |name: &str| customers.get(name).cloned().unwrap_or_default();
    let mut orders = BTreeMap::new();

    // Ada changes her mind about the sampler: the undo is an event of its own.
    let cart = shop
        .fill_cart(1, &id("Ada"), &[(MUG, 2), (TEAPOT, 1), (SAMPLER, 1)])
        .await?;
    let full = shop.carts.load(&cart).await?;
    let remove = CartCommand::RemoveItem {
        product: SAMPLER.0.to_owned(),
    };
    shop.carts.execute(&cart, remove).await?;
    let before_removal = shop.carts.load_at(&cart, full.version).await?;
    let now = shop.carts.load(&cart).await?;
    writeln!(
        out,
        "Ada fills her cart with {} ({}), then takes the sampler out again.",
        describe(&before_removal.state.lines()),
        before_removal.state.total()
    )?;
    writeln!(
        out,
        "  The removal is a compensating event, so the past stays queryable: as of version {} \
         the cart held the sampler; now, at version {}, it holds {} ({}).",
        before_removal.version,
        now.version,
        describe(&now.state.lines()),
        now.state.total()
    )?;
    let outcome = shop
        .check_out(&cart, "Ada", Card::Good, Address::new("Utrecht", "NL"))
        .await?;
    writeln!(out, "Ada checks out order {cart}: {}.", verdict(&outcome))?;
    orders.insert(cart.clone(), outcome);

    let order = shop.fill_cart(2, &id("Ben"), &[(KETTLE, 1)]).await?;
    let outcome = shop
        .check_out(&order, "Ben", Card::Declining, Address::new("Lyon", "FR"))
        .await?;
    writeln!(
        out,
        "Ben checks out order {order}, a kettle: {}.",
        verdict(&outcome)
    )?;
    orders.insert(order, outcome);

    let order = shop.fill_cart(3, &id("Cleo"), &[(TEAPOT, 1)]).await?;
    let outcome = shop
        .check_out(&order, "Cleo", Card::Good, Address::new("McMurdo", "AQ"))
        .await?;
    writeln!(
        out,
        "Cleo checks out order {order}, a teapot for Antarctica: {}.",
        verdict(&outcome)
    )?;
    orders.insert(order, outcome);

    let order = shop.fill_cart(4, &id("Ada"), &[(SAMPLER, 1)]).await?;
    let outcome = shop
        .check_out(&order, "Ada", Card::Good, Address::new("Utrecht", "NL"))
        .await?;
    writeln!(
        out,
        "Ada orders the sampler after all, order {order}: {}.",
        verdict(&outcome)
    )?;
    orders.insert(order, outcome);

    read_model
        .wait_for(store.head().await?, READ_MODEL_WAIT)
        .await?;
    let model = orders_by_customer.read(Clone::clone);
    writeln!(out, "\nOrders per customer (read model):")?;
    for (name, customer) in &customers {
        let listed: Vec<String> = model
            .orders_of(customer)
            .into_iter()
            .flatten()
            .map(|(order, summary)| {
                format!(
                    "{order} {} {}",
                    format!("{:?}", summary.status).to_lowercase(),
                    summary.total
                )
            })
            .collect();
        writeln!(out, "  {name:<5} {}", listed.join(", "))?;
    }

    let mut report = ShopReport {
        run,
        replayed,
        customers,
        cart,
        cart_before_removal: before_removal.state.lines(),
        cart_now: now.state.lines(),
        orders,
        read_model: model,
        orders_in_store: 0,
        health: Health::default(),
    };
    check_invariants(&report)?;
    report.orders_in_store = check_store(&shop, &report.read_model).await?;
    writeln!(
        out,
        "\nChecked: every order is shipped and paid, or cancelled with its money back; the \
         cart's past still holds what was removed; the read model equals the orders (all {} \
         in the store).",
        report.orders_in_store
    )?;
    let health = health.check();
    writeln!(out, "{}", describe_health(&health))?;
    report.health = health;
    read_model.shutdown().await;
    Ok(report)
}

fn check_invariants(report: &ShopReport) -> Result<(), InvariantViolated> {
    for (order, outcome) in &report.orders {
        let consistent = match outcome.status {
            OrderStatus::Shipped => outcome.kept == outcome.total && outcome.tracking.is_some(),
            OrderStatus::Cancelled => outcome.kept == Cents(0) && outcome.tracking.is_none(),
            OrderStatus::None | OrderStatus::Placed | OrderStatus::Paid => false,
        };
        if !consistent {
            return Err(InvariantViolated(format!(
                "order {order} ended as {outcome:?}"
            )));
        }
        let projected = report.read_model.order(order);
        if projected.map(|summary| (summary.status, summary.total))
            != Some((outcome.status, outcome.total))
        {
            return Err(InvariantViolated(format!(
                "the read model says {projected:?} for order {order}, the order says {outcome:?}"
            )));
        }
    }
    let has_sampler = |lines: &[Line]| lines.iter().any(|line| line.product == SAMPLER.0);
    if !has_sampler(&report.cart_before_removal) || has_sampler(&report.cart_now) {
        return Err(InvariantViolated(format!(
            "cart {} before the removal: {:?}, now: {:?}",
            report.cart, report.cart_before_removal, report.cart_now
        )));
    }
    Ok(())
}

/// Over a store that holds earlier runs, their orders too: every order the read model (rebuilt
/// from the whole log by this run) lists is settled as [`check_invariants`] requires and equals
/// its aggregate. Returns how many orders it checked.
async fn check_store<S: EventStore + Clone>(
    shop: &Shop<S>,
    model: &CustomerOrders,
) -> Result<usize, Error> {
    let mut checked = 0;
    for (order, summary) in model.customers.values().flatten() {
        let state = shop.orders.load(order).await?.state;
        let kept = shop.payments.load(order).await?.state.kept();
        let settled = match state.status() {
            OrderStatus::Shipped => kept == state.total(),
            OrderStatus::Cancelled => kept == Cents(0),
            OrderStatus::None | OrderStatus::Placed | OrderStatus::Paid => false,
        };
        if !settled || (summary.status, summary.total) != (state.status(), state.total()) {
            return Err(InvariantViolated(format!(
                "order {order}: the order is {:?} for {}, {kept} kept; the read model says \
                 {summary:?}",
                state.status(),
                state.total()
            ))
            .into());
        }
        checked += 1;
    }
    Ok(checked)
}

/// "2 mug, 1 teapot".
fn describe(lines: &[Line]) -> String {
    let items: Vec<String> = lines
        .iter()
        .map(|line| format!("{} {}", line.quantity, line.product))
        .collect();
    items.join(", ")
}

fn verdict(order: &OrderOutcome) -> String {
    match (order.status, &order.reason, &order.tracking) {
        (OrderStatus::Shipped, _, Some(tracking)) => {
            format!("paid {}, shipped ({tracking})", order.kept)
        }
        (OrderStatus::Cancelled, Some(reason), _) => format!("cancelled ({reason})"),
        (status, _, _) => format!("{status:?}").to_lowercase(),
    }
}
