//! Every failure of a command, answered over HTTP with its status and a problem body.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use cqrs_core::RetryPolicy;
use cqrs_http::problem::kinds;
use cqrs_memstore::MemStore;
use serde_json::json;

use common::{AlwaysConflicts, HttpClient, Server, shop_service};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_command_is_422_or_409_as_the_domain_chooses() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(2),
    );
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);

    // Paying an order never placed: unprocessable.
    let answer = client.post("/orders/o-1/pay", &[], json!(null)).await;
    let body = answer.problem(StatusCode::UNPROCESSABLE_ENTITY, kinds::DOMAIN);
    assert_eq!(body["detail"], "the order was never placed");

    // Placing it twice: a conflict with its state, as the shop's closure says.
    client.place("o-1", "ada").await;
    let again = client
        .post(
            "/orders/o-1",
            &[],
            json!({ "customer": "ada", "total": 250 }),
        )
        .await;
    let body = again.problem(StatusCode::CONFLICT, kinds::DOMAIN);
    assert_eq!(body["detail"], "the order was already placed");

    // A domain error type with `DomainStatus`, through `?`.
    let taken = client.post("/seats/12A", &[], json!(null)).await;
    assert_eq!(
        taken.problem(StatusCode::CONFLICT, kinds::DOMAIN)["detail"],
        "seat 12A is taken"
    );
    let unknown = client.post("/seats/x99", &[], json!(null)).await;
    assert_eq!(
        unknown.problem(StatusCode::UNPROCESSABLE_ENTITY, kinds::DOMAIN)["detail"],
        "seat x99 does not exist"
    );
    server.stop().await;
    assert_eq!(common::log_length(&service.store).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflict_that_outlasts_the_retry_budget_is_409_with_the_stream_and_attempts() {
    let store = AlwaysConflicts::default();
    let retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        deadline: None,
        turn_after: None,
    };
    let service = shop_service(store.clone(), retry, Duration::from_secs(2));
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);

    let answer = client
        .post(
            "/orders/o-1",
            &[],
            json!({ "customer": "ada", "total": 250 }),
        )
        .await;
    let body = answer.problem(StatusCode::CONFLICT, kinds::CONFLICT);
    println!("{body:#}");
    assert_eq!(body["stream"], "order-o-1");
    assert_eq!(body["attempts"], 3);
    assert_eq!(store.appends(), 3, "one append per attempt, no more");
    let detail = body["detail"].as_str().expect("a detail");
    assert!(detail.contains("gave up after 3 attempts"), "{detail}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_store_is_503_and_its_message_stays_on_the_server() {
    let store = MemStore::new();
    let service = shop_service(store.clone(), RetryPolicy::NEVER, Duration::from_secs(2));
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);

    store.fail_next_appends(1);
    let answer = client
        .post(
            "/orders/o-1",
            &[],
            json!({ "customer": "ada", "total": 250 }),
        )
        .await;
    let body = answer.problem(StatusCode::SERVICE_UNAVAILABLE, kinds::STORE_UNAVAILABLE);
    assert_eq!(
        body["detail"],
        "the event store could not carry out the command; nothing was written"
    );
    let text = body.to_string();
    assert!(
        !text.contains("inject"),
        "the backend's message leaked: {text}"
    );
    assert_eq!(common::log_length(&store).await, 0);

    // The fault was one append: the same request now goes through.
    client.place("o-1", "ada").await;
    assert_eq!(common::log_length(&store).await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_id_that_makes_no_stream_id_is_400() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(2),
    );
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);

    let long = "a".repeat(300);
    let answer = client
        .post(
            &format!("/orders/{long}"),
            &[],
            json!({ "customer": "ada", "total": 1 }),
        )
        .await;
    let body = answer.problem(StatusCode::BAD_REQUEST, kinds::INVALID_ID);
    let detail = body["detail"].as_str().expect("a detail");
    assert!(detail.contains("the limit is 256"), "{detail}");
    // A percent-encoded control character is decoded into the id, and refused.
    let answer = client
        .post(
            "/orders/o%0A1",
            &[],
            json!({ "customer": "ada", "total": 1 }),
        )
        .await;
    answer.problem(StatusCode::BAD_REQUEST, kinds::INVALID_ID);
    server.stop().await;
    assert_eq!(common::log_length(&service.store).await, 0);
}
