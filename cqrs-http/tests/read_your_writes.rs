//! Read your own writes: a command's position comes back in `Consistency-Position`, and a read
//! that sends it waits for the projection, or answers 504 when it does not get there in time.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use cqrs_core::RetryPolicy;
use cqrs_http::problem::kinds;
use cqrs_memstore::MemStore;
use serde_json::json;

use common::{HttpClient, PROJECTION, Server, shop_service};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_with_the_commands_position_sees_the_write() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(5),
    );
    let processors = service.processors.clone();
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);

    // Held back, so that a read that did not wait would miss the write.
    processors
        .get(PROJECTION)
        .await
        .expect("registered")
        .pause()
        .await
        .expect("pauses");
    let placed = client.place("o-1", "ada").await;
    let position = placed.position().expect("the command wrote an event");
    assert_eq!(placed.body["position"], position);

    let without = client.get("/customers/ada/orders", &[]).await;
    assert_eq!(without.status, StatusCode::OK);
    assert_eq!(
        without.body["orders"],
        json!([]),
        "the projection is paused"
    );

    let resumer = {
        let processors = processors.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let handle = processors.get(PROJECTION).await.expect("registered");
            handle.resume().await.expect("resumes");
        })
    };
    let started = Instant::now();
    let header = position.to_string();
    let read = client
        .get(
            "/customers/ada/orders",
            &[("consistency-position", &header)],
        )
        .await;
    let waited = started.elapsed();
    println!("the read waited {waited:?} for position {position}");
    assert_eq!(read.status, StatusCode::OK, "{:#}", read.body);
    assert_eq!(read.body["orders"], json!(["o-1"]));
    assert!(read.body["position"].as_u64().expect("a position") >= position);
    assert!(
        waited >= Duration::from_millis(150),
        "it did not wait: {waited:?}"
    );
    resumer.await.expect("the resumer ends");

    // The query parameter works the same.
    let second = client.place("o-2", "ada").await;
    let after = second.position().expect("a position");
    let read = client
        .get(&format!("/customers/ada/orders?after={after}"), &[])
        .await;
    assert_eq!(
        read.body["orders"],
        json!(["o-1", "o-2"]),
        "{:#}",
        read.body
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_waiting_for_a_paused_projection_times_out_with_504() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_millis(300),
    );
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);

    let paused = client
        .post(
            &format!("/admin/processors/{PROJECTION}/pause?confirm=true"),
            &[],
            json!(null),
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{:#}", paused.body);
    let position = client
        .place("o-1", "ada")
        .await
        .position()
        .expect("a position");

    let started = Instant::now();
    let header = position.to_string();
    let read = client
        .get(
            "/customers/ada/orders",
            &[("consistency-position", &header)],
        )
        .await;
    let waited = started.elapsed();
    let body = read.problem(StatusCode::GATEWAY_TIMEOUT, kinds::NOT_CAUGHT_UP);
    println!("gave up after {waited:?}: {body:#}");
    assert_eq!(body["processor"], PROJECTION);
    assert_eq!(body["position"], position);
    assert!(body["reached"].as_u64().expect("reached") < position);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    let resumed = client
        .post(
            &format!("/admin/processors/{PROJECTION}/resume"),
            &[],
            json!({ "confirm": true }),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK, "{:#}", resumed.body);
    let read = client
        .get(
            "/customers/ada/orders",
            &[("consistency-position", &header)],
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{:#}", read.body);
    assert_eq!(read.body["orders"], json!(["o-1"]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_position_that_is_not_a_number_is_400() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(1),
    );
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);

    let read = client
        .get("/customers/ada/orders", &[("consistency-position", "soon")])
        .await;
    read.problem(StatusCode::BAD_REQUEST, kinds::INVALID_POSITION);
    let read = client.get("/customers/ada/orders?after=-1", &[]).await;
    read.problem(StatusCode::BAD_REQUEST, kinds::INVALID_POSITION);
    server.stop().await;
}
