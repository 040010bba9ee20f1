//! What the HTTP tests share: a shop service over a real server on loopback, a real HTTP client,
//! and stores that misbehave on purpose.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use cqrs_core::event::NewEvent;
use cqrs_core::processor::{Processor as _, ProcessorHandle};
use cqrs_core::projection::{MemoryReadModel, Projector};
use cqrs_core::store::{AppendReceipt, CommandRecord, Snapshot};
use cqrs_core::{
    CommandId, EventStore, ExecuteError, ExpectedVersion, Position, RecordedEvent, Repository,
    RetryPolicy, StoreError, StreamId, Version,
};
use cqrs_examples::shop::order::{Order, OrderCommand, OrderError};
use cqrs_examples::shop::orders_by_customer::{CustomerOrders, OrdersByCustomer};
use cqrs_examples::shop::{Cents, Line};
use cqrs_http::{
    CaughtUp, CommandReceipt, DomainStatus, IdempotencyKey, Problem, Processors, admin,
};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The projection's name, as the admin routes spell it.
pub const PROJECTION: &str = "orders_by_customer";

/// The state of the test service.
#[derive(Clone)]
pub struct Shop<S: EventStore + Clone> {
    pub orders: Repository<Order, S>,
    pub read_model: MemoryReadModel<CustomerOrders>,
    pub processors: Processors,
}

impl<S: EventStore + Clone> FromRef<Shop<S>> for Repository<Order, S> {
    fn from_ref(shop: &Shop<S>) -> Self {
        shop.orders.clone()
    }
}

impl<S: EventStore + Clone> FromRef<Shop<S>> for MemoryReadModel<CustomerOrders> {
    fn from_ref(shop: &Shop<S>) -> Self {
        shop.read_model.clone()
    }
}

impl<S: EventStore + Clone> FromRef<Shop<S>> for Processors {
    fn from_ref(shop: &Shop<S>) -> Self {
        shop.processors.clone()
    }
}

/// The body of `POST /orders/{id}`.
#[derive(Debug, Deserialize)]
struct PlaceOrder {
    customer: String,
    total: u64,
}

/// A shop's domain status: placing an order twice is a conflict with its state, anything else
/// it refuses is unprocessable. (`OrderError` is another crate's type, so the choice is a
/// closure here; `DomainStatus` is tested on a local type.)
fn order_status(error: &OrderError) -> StatusCode {
    match error {
        OrderError::AlreadyPlaced => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

async fn place<S: EventStore + Clone>(
    State(orders): State<Repository<Order, S>>,
    Path(id): Path<String>,
    key: Option<IdempotencyKey>,
    Json(body): Json<PlaceOrder>,
) -> Result<CommandReceipt, Problem> {
    let command = OrderCommand::Place {
        order: id.clone(),
        customer: body.customer,
        lines: vec![Line {
            product: "tea".to_owned(),
            quantity: 1,
            unit_price: Cents(body.total),
        }],
        total: Cents(body.total),
    };
    let metadata = key.map(|key| key.metadata()).unwrap_or_default();
    let outcome = orders
        .execute_with(&id, command, metadata)
        .await
        .map_err(|error| Problem::from_execute(error, order_status))?;
    Ok(CommandReceipt::from(outcome))
}

async fn pay<S: EventStore + Clone>(
    State(orders): State<Repository<Order, S>>,
    Path(id): Path<String>,
) -> Result<CommandReceipt, Problem> {
    let command = OrderCommand::MarkPaid {
        order: id.clone(),
        amount: Cents(1),
    };
    let outcome = orders
        .execute(&id, command)
        .await
        .map_err(|error| Problem::from_execute(error, order_status))?;
    Ok(CommandReceipt::from(outcome))
}

/// `GET /customers/{id}/orders`: the customer's order ids, once the projection covers the
/// position the client asked for.
async fn orders_of(
    caught_up: CaughtUp<OrdersByCustomer>,
    State(read_model): State<MemoryReadModel<CustomerOrders>>,
    Path(customer): Path<String>,
) -> Json<Value> {
    let orders: Vec<String> = read_model.read(|model| {
        model
            .orders_of(&customer)
            .map(|orders| orders.keys().cloned().collect())
            .unwrap_or_default()
    });
    Json(serde_json::json!({ "orders": orders, "position": caught_up.position }))
}

/// A domain error of this crate, to try [`DomainStatus`] with.
#[derive(Debug, thiserror::Error)]
pub enum SeatError {
    /// Taken by someone else.
    #[error("seat {0} is taken")]
    Taken(String),
    /// No such seat.
    #[error("seat {0} does not exist")]
    Unknown(String),
}

impl DomainStatus for SeatError {
    fn status(&self) -> StatusCode {
        match self {
            SeatError::Taken(_) => StatusCode::CONFLICT,
            SeatError::Unknown(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// `POST /seats/{seat}`: refuses with a [`SeatError`] through `?`.
async fn reserve_seat(Path(seat): Path<String>) -> Result<StatusCode, Problem> {
    let refusal: Result<(), ExecuteError<SeatError>> =
        Err(ExecuteError::Domain(if seat.starts_with('x') {
            SeatError::Unknown(seat)
        } else {
            SeatError::Taken(seat)
        }));
    refusal?;
    Ok(StatusCode::NO_CONTENT)
}

/// The shop service's router over `store`, its read model, the projection's runner (in the
/// registry) and the registry.
pub struct ShopService<S: EventStore + Clone> {
    pub router: Router,
    pub read_model: MemoryReadModel<CustomerOrders>,
    pub processors: Processors,
    pub store: S,
}

/// Spawns the orders-by-customer projection over `store`.
pub fn spawn_projection<S: EventStore + Clone>(
    store: &S,
    read_model: &MemoryReadModel<CustomerOrders>,
) -> ProcessorHandle {
    Projector::new(OrdersByCustomer, store.clone(), read_model.clone())
        .runner()
        .spawn()
}

/// The service with `retry` as the repository's policy and reads waiting at most `wait`.
pub fn shop_service<S: EventStore + Clone>(
    store: S,
    retry: RetryPolicy,
    wait: Duration,
) -> ShopService<S> {
    shop_service_with(store, retry, wait, Vec::new())
}

/// [`shop_service`] running `others` beside its projection.
pub fn shop_service_with<S: EventStore + Clone>(
    store: S,
    retry: RetryPolicy,
    wait: Duration,
    others: Vec<ProcessorHandle>,
) -> ShopService<S> {
    let read_model = MemoryReadModel::new();
    let processors = others
        .into_iter()
        .fold(Processors::builder(), |builder, other| {
            builder.processor(other)
        })
        .processor(spawn_projection(&store, &read_model))
        .wait_timeout(wait)
        .build();
    let orders = Repository::<Order, S>::builder(store.clone())
        .retry(retry)
        .build();
    let router = Router::new()
        .route("/orders/{id}", post(place::<S>))
        .route("/orders/{id}/pay", post(pay::<S>))
        .route("/customers/{id}/orders", get(orders_of))
        .route("/seats/{seat}", post(reserve_seat))
        .nest("/admin", admin::router(processors.clone()))
        .with_state(Shop {
            orders,
            read_model: read_model.clone(),
            processors: processors.clone(),
        });
    ShopService {
        router,
        read_model,
        processors,
        store,
    }
}

/// A server on 127.0.0.1 at a port the system chose, until it is dropped or stopped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Serves `router`.
    pub async fn start(router: Router) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops taking connections and waits for the requests in flight.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends").expect("server ran");
        }
    }
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The `Consistency-Position` header, as a number.
    pub fn position(&self) -> Option<u64> {
        self.headers
            .get("consistency-position")
            .map(|value| value.to_str().expect("ascii").parse().expect("a number"))
    }

    /// The content type.
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .map(|value| value.to_str().expect("ascii"))
            .unwrap_or("")
    }

    /// Asserts that the answer is a problem of this status and type, and returns its body.
    pub fn problem(&self, status: StatusCode, problem_type: &str) -> &Value {
        assert_eq!(self.status, status, "{:#}", self.body);
        assert_eq!(self.content_type(), "application/problem+json");
        assert_eq!(self.body["type"], problem_type, "{:#}", self.body);
        assert_eq!(self.body["status"], status.as_u16());
        assert!(self.body["title"].is_string(), "{:#}", self.body);
        assert!(self.body["detail"].is_string(), "{:#}", self.body);
        &self.body
    }
}

/// A real HTTP/1 client for one server.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl HttpClient {
    /// A client of the server at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    /// Sends a request with `headers` and a JSON `body` (none when `Value::Null`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let bytes = if body.is_null() {
            Bytes::new()
        } else {
            request = request.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(&body).expect("serializes"))
        };
        let request = request.body(Full::new(bytes)).expect("a valid request");
        let response = self
            .client
            .request(request)
            .await
            .expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("reads the body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `GET path` with `headers`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, path, headers, Value::Null).await
    }

    /// `POST path` with `headers` and a JSON body.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Answer {
        self.send(Method::POST, path, headers, body).await
    }

    /// Places order `order` for `customer` and asserts it worked.
    pub async fn place(&self, order: &str, customer: &str) -> Answer {
        let answer = self
            .post(
                &format!("/orders/{order}"),
                &[],
                serde_json::json!({ "customer": customer, "total": 250 }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:#}", answer.body);
        answer
    }
}

/// A store every append of which meets a concurrent writer: the conflict never goes away.
#[derive(Clone, Default)]
pub struct AlwaysConflicts {
    inner: cqrs_memstore::MemStore,
    appends: Arc<AtomicU32>,
}

impl AlwaysConflicts {
    /// How many appends were tried.
    pub fn appends(&self) -> u32 {
        self.appends.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EventStore for AlwaysConflicts {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        _events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError> {
        let call = self.appends.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Conflict {
            stream: stream.clone(),
            expected,
            actual: Version(u64::from(call) + 1),
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from, limit).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }

    async fn wait_for_events(&self, after: Position) -> Result<Position, StoreError> {
        self.inner.wait_for_events(after).await
    }

    async fn save_snapshot(&self, stream: &StreamId, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(stream, snapshot).await
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(stream, schema_version).await
    }

    async fn command_record(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError> {
        self.inner.command_record(stream, command_id).await
    }
}

/// Every event in `store`'s log.
pub async fn log_length<S: EventStore>(store: &S) -> usize {
    store
        .read_all(Position::START, usize::MAX)
        .await
        .expect("reads the log")
        .len()
}
