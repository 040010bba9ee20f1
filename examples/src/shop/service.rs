//! The shop over HTTP, behind `cargo run --example shop_service`: the cart's and the order's
//! commands as `POST` routes, the orders-per-customer read model as `GET` routes that see the
//! caller's own writes, and the admin endpoints of `cqrs-http` under `/admin`.
//!
//! ```text
//! POST /carts/{cart}                   {"customer": "ada"}                                open
//! POST /carts/{cart}/items             {"product": "mug", "quantity": 2, "unit_price": 850}
//! POST /carts/{cart}/remove            {"product": "mug"}                                 take out
//! POST /carts/{cart}/checkout          {"card": "Good", "address": {"city": "Utrecht", "country": "NL"}}
//! POST /orders/{order}/cancel          {"reason": "changed my mind"}
//! GET  /carts/{cart}                   the cart, from its events
//! GET  /customers/{customer}/orders    the read model, after the Consistency-Position sent
//! GET  /orders/{order}                 the same, one order
//! GET  /admin/status, /admin/health, ... (cqrs_http::admin)
//! ```
//!
//! Every `POST` needs an `Idempotency-Key` header: it becomes the command id, so a retry with the
//! same key has no second effect and gets the first answer. Its response carries the
//! `Consistency-Position` header; a `GET` that sends it back waits until the read model has got
//! there (504 after [`READ_WAIT`]). Checking a cart out makes its order (the order id is the
//! cart id); the [`checkout`](crate::shop::checkout) saga then charges, ships or cancels it in
//! the background.
//!
//! [`ShopService::new`] builds the router and spawns the processors over any event store, so
//! the tests serve the same app in-process; [`serve`] runs it until a signal and drains it.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use axum::extract::{FromRef, FromRequest, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cqrs_core::processor::{FailurePolicy, Processor as _, ProcessorStatus};
use cqrs_core::projection::{MemoryReadModel, Projection as _, Projector};
use cqrs_core::saga::{CommandBus, MemorySagaStore, Saga as _, SagaProcessor};
use cqrs_core::{EventStore, LoadError};
use cqrs_core::{ExecuteError, Position, Repository};
use cqrs_http::problem::kinds;
use cqrs_http::{
    CONSISTENCY_POSITION, CaughtUp, CommandReceipt, DomainStatus, IdempotencyKey, Problem,
    Processors,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::payment::Card;
use crate::shop::cart::{Cart, CartCommand, CartError};
use crate::shop::checkout::Checkout;
use crate::shop::order::{Order, OrderCommand, OrderError, OrderStatus};
use crate::shop::orders_by_customer::{CustomerOrders, OrderSummary, OrdersByCustomer};
use crate::shop::payment::Payment;
use crate::shop::shipment::Shipment;
use crate::shop::{Address, Cents, Line};

/// How long a read waits for the read model to reach the client's position before it answers
/// 504, and how long a checkout waits for the saga to place its order.
pub const READ_WAIT: Duration = Duration::from_secs(5);

/// The SQLite file the service keeps its events in when no flag names another: not the story's
/// `shop.db`, whose end-of-run check wants every order settled, which a served order that is
/// still open would fail.
pub const DEFAULT_FILE: &str = "shop_service.db";

/// The address the service listens on when `SHOP_ADDR` does not say.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3000";

/// The environment variable that sets the address.
pub const ADDR_VAR: &str = "SHOP_ADDR";

/// The projection's name, as `/admin` lists it.
pub const READ_MODEL: &str = OrdersByCustomer::NAME;

/// The checkout saga's name, as `/admin` lists it.
pub const CHECKOUT: &str = Checkout::NAME;

// Which refusals are conflicts: RFC 9110 makes 409 "a conflict with the current state of the
// target resource" and 422 content that is understood but cannot be processed. Almost every
// refusal of the shop is about where the cart or the order stands (not open yet, checked out
// already, shipped): the same request can pass on another cart or later, so 409 tells the
// client to look at the resource again. Only a request that no state could accept (adding zero
// items) is 422. Payments and shipments are not served: only the saga sends them commands.

impl DomainStatus for CartError {
    fn status(&self) -> StatusCode {
        match self {
            CartError::NoQuantity => StatusCode::UNPROCESSABLE_ENTITY,
            CartError::AlreadyOpen
            | CartError::NotOpen
            | CartError::CheckedOut
            | CartError::NotInCart { .. }
            | CartError::Empty => StatusCode::CONFLICT,
        }
    }
}

impl DomainStatus for OrderError {
    fn status(&self) -> StatusCode {
        match self {
            OrderError::AlreadyPlaced
            | OrderError::NotPlaced
            | OrderError::Closed(_)
            | OrderError::NotPaid => StatusCode::CONFLICT,
        }
    }
}

/// The shop's HTTP service over the event store `S`: the router, and the registry of its running
/// processors (the orders-per-customer projection and the checkout saga), which
/// [`cqrs_http::serve_until`] drains at the end.
pub struct ShopService {
    /// The routes, admin included, with their state.
    pub router: Router,
    /// The running processors.
    pub processors: Processors,
}

impl ShopService {
    /// Spawns the processors over `store` (they catch up with what it holds) and builds the
    /// router. Must be called on a Tokio runtime.
    pub fn new<S: EventStore + Clone>(store: S) -> Self {
        let carts = Repository::<Cart, S>::new(store.clone());
        let orders = Repository::<Order, S>::new(store.clone());
        let bus = CommandBus::new()
            .register(orders.clone())
            .register(Repository::<Payment, S>::new(store.clone()))
            // The shipment handler gets the carrier (`Carrier::default()`) as its services.
            .register(Repository::<Shipment, S>::new(store.clone()));
        // As in the story, the saga's state lives in memory and is rebuilt from the log at each
        // start; the commands it sends again carry ids derived from their events, so their
        // repositories do not apply them twice. A handler that fails parks its event as a dead
        // letter (visible under /admin) rather than stopping every other checkout.
        let checkout =
            SagaProcessor::<Checkout, _, _>::new(store.clone(), bus, MemorySagaStore::new())
                .runner()
                .failure_policy(FailurePolicy::Skip)
                .spawn();
        let read_model = MemoryReadModel::<CustomerOrders>::new();
        let projection = Projector::new(OrdersByCustomer, store.clone(), read_model.clone())
            .runner()
            .spawn();
        let processors = Processors::builder()
            .processor(projection)
            .processor(checkout)
            .wait_timeout(READ_WAIT)
            .build();
        let state = Shop {
            store,
            carts,
            orders,
            read_model,
            processors: processors.clone(),
        };
        let router = Router::new()
            .route("/carts/{cart}", post(open::<S>).get(cart::<S>))
            .route("/carts/{cart}/items", post(add_item::<S>))
            .route("/carts/{cart}/remove", post(remove_item::<S>))
            .route("/carts/{cart}/checkout", post(check_out::<S>))
            .route("/orders/{order}/cancel", post(cancel::<S>))
            .route("/orders/{order}", get(order::<S>))
            .route("/customers/{customer}/orders", get(orders_of::<S>))
            .nest("/admin", cqrs_http::admin::router(processors.clone()))
            .with_state(state);
        ShopService { router, processors }
    }
}

/// Serves `service` on `listener` until `signal` completes, then finishes the requests in
/// flight and shuts the processors down; returns their last statuses.
pub async fn serve(
    service: ShopService,
    listener: TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Vec<ProcessorStatus>> {
    cqrs_http::serve_until(listener, service.router, service.processors, signal).await
}

/// What the handlers share.
#[derive(Clone)]
struct Shop<S: EventStore + Clone> {
    store: S,
    carts: Repository<Cart, S>,
    orders: Repository<Order, S>,
    read_model: MemoryReadModel<CustomerOrders>,
    processors: Processors,
}

/// `CaughtUp` finds the registry in the state this way.
impl<S: EventStore + Clone> FromRef<Shop<S>> for Processors {
    fn from_ref(shop: &Shop<S>) -> Self {
        shop.processors.clone()
    }
}

/// A JSON request body whose rejection (not JSON, no `content-type: application/json`, a
/// field missing) is a problem too, so that every error the service answers with is
/// `application/problem+json`.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(Problem::new(
                rejection.status(),
                kinds::INVALID_BODY,
                "invalid request body",
            )
            .detail(rejection.body_text())),
        }
    }
}

/// The body of `POST /carts/{cart}`.
#[derive(Debug, Deserialize)]
struct OpenCart {
    customer: String,
}

/// The body of `POST /carts/{cart}/items`.
#[derive(Debug, Deserialize)]
struct AddItem {
    product: String,
    quantity: u32,
    /// In cents.
    unit_price: Cents,
}

/// The body of `POST /carts/{cart}/remove`.
#[derive(Debug, Deserialize)]
struct RemoveItem {
    product: String,
}

/// The body of `POST /carts/{cart}/checkout`.
#[derive(Debug, Deserialize)]
struct CheckOut {
    card: Card,
    address: Address,
}

/// The body of `POST /orders/{order}/cancel`.
#[derive(Debug, Deserialize)]
struct Cancel {
    reason: String,
}

async fn open<S: EventStore + Clone>(
    State(shop): State<Shop<S>>,
    Path(cart): Path<String>,
    key: IdempotencyKey,
    Body(body): Body<OpenCart>,
) -> Result<CommandReceipt, Problem> {
    let command = CartCommand::Open {
        customer: body.customer,
    };
    let outcome = shop
        .carts
        .execute_with(&cart, command, key.metadata())
        .await?;
    Ok(CommandReceipt::from(outcome))
}

async fn add_item<S: EventStore + Clone>(
    State(shop): State<Shop<S>>,
    Path(cart): Path<String>,
    key: IdempotencyKey,
    Body(body): Body<AddItem>,
) -> Result<CommandReceipt, Problem> {
    let command = CartCommand::AddItem {
        product: body.product,
        quantity: body.quantity,
        unit_price: body.unit_price,
    };
    let outcome = shop
        .carts
        .execute_with(&cart, command, key.metadata())
        .await?;
    Ok(CommandReceipt::from(outcome))
}

async fn remove_item<S: EventStore + Clone>(
    State(shop): State<Shop<S>>,
    Path(cart): Path<String>,
    key: IdempotencyKey,
    Body(body): Body<RemoveItem>,
) -> Result<CommandReceipt, Problem> {
    let command = CartCommand::RemoveItem {
        product: body.product,
    };
    let outcome = shop
        .carts
        .execute_with(&cart, command, key.metadata())
        .await?;
    Ok(CommandReceipt::from(outcome))
}

/// Checks the cart out, then waits (at most [`READ_WAIT`]) for the checkout saga to handle it,
/// so that the order is placed when the client gets the answer.
///
/// The order's events are written by the saga, not by this command, so the cart event's
/// position alone would let a read of the orders come back without the order. The
/// `Consistency-Position` header is therefore the log's head once the saga has placed the
/// order: at or after the `Placed` event (the body still tells the cart's own event). If the
/// saga does not get there in time the checkout still happened, and the header is the cart
/// event's position.
async fn check_out<S: EventStore + Clone>(
    State(shop): State<Shop<S>>,
    Path(cart): Path<String>,
    key: IdempotencyKey,
    Body(body): Body<CheckOut>,
) -> Result<Response, Problem> {
    let command = CartCommand::CheckOut {
        order: cart.clone(),
        card: body.card,
        address: body.address,
    };
    let outcome = shop
        .carts
        .execute_with(&cart, command, key.metadata())
        .await?;
    let receipt = CommandReceipt::from(outcome);
    let mut headers = receipt.headers();
    match shop.processors.wait_for(CHECKOUT, receipt.position).await {
        Ok(_) => match shop.store.head().await {
            Ok(head) if Some(head) > receipt.position => {
                headers.insert(CONSISTENCY_POSITION, HeaderValue::from(head.0));
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "checkout: the head could not be read"),
        },
        Err(problem) => {
            tracing::warn!(%problem, cart, "checkout: the saga has not placed the order yet");
        }
    }
    Ok((headers, Json(receipt)).into_response())
}

async fn cancel<S: EventStore + Clone>(
    State(shop): State<Shop<S>>,
    Path(order): Path<String>,
    key: IdempotencyKey,
    Body(body): Body<Cancel>,
) -> Result<CommandReceipt, Problem> {
    let command = OrderCommand::Cancel {
        order: order.clone(),
        reason: body.reason,
    };
    let outcome = shop
        .orders
        .execute_with(&order, command, key.metadata())
        .await?;
    Ok(CommandReceipt::from(outcome))
}

/// A cart, as `GET /carts/{cart}` shows it.
#[derive(Debug, Serialize)]
struct CartView {
    lines: Vec<Line>,
    /// In cents.
    total: Cents,
    /// The cart's version: how many events it has.
    version: u64,
}

/// `GET /carts/{cart}`: the cart from its own events, so it is always up to date; a cart never
/// opened is empty at version 0.
async fn cart<S: EventStore + Clone>(
    State(shop): State<Shop<S>>,
    Path(cart): Path<String>,
) -> Result<Json<CartView>, Problem> {
    let loaded = shop.carts.load(&cart).await.map_err(load_problem)?;
    Ok(Json(CartView {
        lines: loaded.state.lines(),
        total: loaded.state.total(),
        version: loaded.version.0,
    }))
}

/// One order, as the read model shows it.
#[derive(Debug, Serialize)]
struct OrderView {
    status: OrderStatus,
    /// In cents.
    total: Cents,
    items: u32,
}

impl From<&OrderSummary> for OrderView {
    fn from(summary: &OrderSummary) -> Self {
        OrderView {
            status: summary.status,
            total: summary.total,
            items: summary.items,
        }
    }
}

/// The answer of `GET /customers/{customer}/orders`.
#[derive(Debug, Serialize)]
struct CustomerOrdersView {
    customer: String,
    orders: BTreeMap<String, OrderView>,
    /// The read model's position when it was read: at or after the one asked for.
    position: Position,
}

/// `GET /customers/{customer}/orders`: once the read model covers the client's position.
async fn orders_of<S: EventStore + Clone>(
    caught_up: CaughtUp<OrdersByCustomer>,
    State(shop): State<Shop<S>>,
    Path(customer): Path<String>,
) -> Json<CustomerOrdersView> {
    let orders = shop.read_model.read(|model| {
        model
            .orders_of(&customer)
            .into_iter()
            .flatten()
            .map(|(order, summary)| (order.clone(), OrderView::from(summary)))
            .collect()
    });
    Json(CustomerOrdersView {
        customer,
        orders,
        position: caught_up.position,
    })
}

/// `GET /orders/{order}`: once the read model covers the client's position; 404 when it does
/// not know the order.
async fn order<S: EventStore + Clone>(
    caught_up: CaughtUp<OrdersByCustomer>,
    State(shop): State<Shop<S>>,
    Path(order): Path<String>,
) -> Result<Json<OrderView>, Problem> {
    shop.read_model
        .read(|model| model.order(&order).map(OrderView::from))
        .map(Json)
        .ok_or_else(|| {
            Problem::new(StatusCode::NOT_FOUND, kinds::NOT_FOUND, "no such order")
                .detail(format_args!(
                    "order `{order}` is not in the read model at position {}",
                    caught_up.position
                ))
                .extension("order", order.as_str())
                .extension("position", caught_up.position.0)
        })
}

/// A load that failed is answered as a command failing the same way would be (400 for an
/// invalid id, 503 for the store, 500 for a panicking `apply`).
fn load_problem(error: LoadError) -> Problem {
    Problem::from(ExecuteError::<CartError>::from(error))
}
