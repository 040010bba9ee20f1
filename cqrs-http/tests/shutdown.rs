//! `serve_until`: serve until a signal, finish the requests in flight, then drain the processors.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use cqrs_core::processor::ProcessorState;
use cqrs_core::{Position, RetryPolicy};
use cqrs_http::problem::kinds;
use cqrs_memstore::MemStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use common::{HttpClient, PROJECTION, shop_service};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_processors_are_shut_down_after_the_server_stops() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(2),
    );
    let processors = service.processors.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(cqrs_http::serve_until(
        listener,
        service.router,
        processors.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let client = HttpClient::new(addr);
    let position = client
        .place("o-1", "ada")
        .await
        .position()
        .expect("a position");
    let read = client
        .get(
            "/customers/ada/orders",
            &[("consistency-position", &position.to_string())],
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(processors.names().await, vec![PROJECTION]);

    stop.send(()).expect("the server listens for the signal");
    let statuses = serving
        .await
        .expect("the server task ends")
        .expect("the server ran");
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].name, PROJECTION);
    assert_eq!(statuses[0].state, ProcessorState::Stopped);
    assert_eq!(statuses[0].checkpoint, Position(position));

    // The registry is closed: a late caller learns the processors are gone.
    assert!(processors.names().await.is_empty());
    let late = processors
        .wait_for(PROJECTION, Some(Position(position)))
        .await
        .expect_err("shut down");
    assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(late.problem_type(), kinds::PROCESSOR_UNAVAILABLE);
    assert!(
        processors.shutdown().await.is_empty(),
        "a second shutdown has nothing to stop"
    );
}
