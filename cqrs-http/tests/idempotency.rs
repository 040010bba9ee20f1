//! The `Idempotency-Key` header: a command sent twice with one key has one effect.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use cqrs_core::RetryPolicy;
use cqrs_http::problem::kinds;
use cqrs_memstore::MemStore;
use serde_json::json;

use common::{HttpClient, Server, shop_service};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_sent_twice_with_one_key_is_applied_once() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(2),
    );
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);
    let order = json!({ "customer": "ada", "total": 250 });
    let key = [("idempotency-key", "place-o-1-7f3a")];

    let first = client.post("/orders/o-1", &key, order.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{:#}", first.body);
    assert_eq!(first.body["deduplicated"], false);
    assert!(first.headers.get("idempotent-replayed").is_none());

    // The client never saw the answer and sends the request again.
    let second = client.post("/orders/o-1", &key, order.clone()).await;
    assert_eq!(second.status, StatusCode::OK, "{:#}", second.body);
    assert_eq!(second.body["deduplicated"], true);
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(second.position(), first.position());
    assert_eq!(second.body["version"], first.body["version"]);
    assert_eq!(common::log_length(&service.store).await, 1, "one effect");

    // The quoted form of the same key is the same key.
    let quoted = client
        .post(
            "/orders/o-1",
            &[("idempotency-key", "\"place-o-1-7f3a\"")],
            order.clone(),
        )
        .await;
    assert_eq!(quoted.body["deduplicated"], true, "{:#}", quoted.body);

    // Another key is another command: the order refuses to be placed twice.
    let other = client
        .post(
            "/orders/o-1",
            &[("idempotency-key", "place-o-1-other")],
            order,
        )
        .await;
    other.problem(StatusCode::CONFLICT, kinds::DOMAIN);
    assert_eq!(common::log_length(&service.store).await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_key_write_once() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(2),
    );
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);
    let mut sends = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        sends.push(tokio::spawn(async move {
            client
                .post(
                    "/orders/o-9",
                    &[("idempotency-key", "once")],
                    json!({ "customer": "ben", "total": 1 }),
                )
                .await
        }));
    }
    let mut positions = Vec::new();
    let mut replayed = 0;
    for send in sends {
        let answer = send.await.expect("the request task ends");
        assert_eq!(answer.status, StatusCode::OK, "{:#}", answer.body);
        replayed += usize::from(answer.body["deduplicated"] == true);
        positions.push(answer.position());
    }
    println!("8 concurrent sends of one key: {replayed} answered as replays");
    assert_eq!(replayed, 7);
    assert!(
        positions.windows(2).all(|pair| pair[0] == pair[1]),
        "{positions:?}"
    );
    assert_eq!(common::log_length(&service.store).await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_key_is_400_and_nothing_is_written() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(2),
    );
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);
    let order = json!({ "customer": "ada", "total": 250 });

    let long = "k".repeat(300);
    let answer = client
        .post("/orders/o-1", &[("idempotency-key", &long)], order.clone())
        .await;
    let body = answer.problem(StatusCode::BAD_REQUEST, kinds::INVALID_IDEMPOTENCY_KEY);
    assert_eq!(
        body["detail"],
        "command id is 300 bytes long, the limit is 256"
    );

    let empty = client
        .post("/orders/o-1", &[("idempotency-key", "\"\"")], order.clone())
        .await;
    let body = empty.problem(StatusCode::BAD_REQUEST, kinds::INVALID_IDEMPOTENCY_KEY);
    assert_eq!(body["detail"], "command id is empty");

    let not_ascii = client
        .post("/orders/o-1", &[("idempotency-key", "clé")], order)
        .await;
    not_ascii.problem(StatusCode::BAD_REQUEST, kinds::INVALID_IDEMPOTENCY_KEY);
    assert_eq!(common::log_length(&service.store).await, 0);
    server.stop().await;
}
