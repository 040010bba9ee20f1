//! The admin router: status, health, dead letters, and confirmed controls, over HTTP.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use cqrs_core::projection::MemoryReadModel;
use cqrs_core::{EventStore as _, RetryPolicy};
use cqrs_http::problem::kinds;
use cqrs_memstore::MemStore;
use serde_json::json;

use common::{HttpClient, PROJECTION, Server, shop_service, spawn_projection};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_is_503_once_a_processor_has_stopped_and_200_while_it_is_paused() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(2),
    );
    let processors = service.processors.clone();
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);
    client.place("o-1", "ada").await;

    let health = client.get("/admin/health", &[]).await;
    assert_eq!(health.status, StatusCode::OK, "{:#}", health.body);
    assert_eq!(health.body["healthy"], true);
    assert_eq!(health.body["processors"][0]["status"]["name"], PROJECTION);

    let status = client.get("/admin/status", &[]).await;
    assert_eq!(status.status, StatusCode::OK);
    let first = &status.body[0];
    println!("status: {first:#}");
    assert_eq!(first["name"], PROJECTION);
    for field in ["checkpoint", "head", "lag"] {
        assert!(first[field].is_u64(), "{field} in {first:#}");
    }
    assert!(first["state"]["state"].is_string(), "{first:#}");

    // Paused counts as healthy: someone chose it.
    let paused = client
        .post(
            &format!("/admin/processors/{PROJECTION}/pause?confirm=true"),
            &[],
            json!(null),
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{:#}", paused.body);
    assert_eq!(paused.body["status"]["state"]["state"], "paused");
    let health = client.get("/admin/health", &[]).await;
    assert_eq!(health.status, StatusCode::OK, "{:#}", health.body);

    // Stopped does not.
    let handle = processors.remove(PROJECTION).await.expect("registered");
    let last = handle.shutdown().await;
    assert!(last.is_stopped());
    let health = client.get("/admin/health", &[]).await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:#}",
        health.body
    );
    assert_eq!(health.body["healthy"], false);
    assert_eq!(health.body["processors"][0]["reason"], "stopped");
    // It is no longer registered: the status lists nothing and its controls are 404.
    assert_eq!(client.get("/admin/status", &[]).await.body, json!([]));
    let resume = client
        .post(
            &format!("/admin/processors/{PROJECTION}/resume?confirm=true"),
            &[],
            json!(null),
        )
        .await;
    resume.problem(StatusCode::NOT_FOUND, kinds::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mutating_call_without_confirmation_is_400_and_changes_nothing() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(2),
    );
    let processors = service.processors.clone();
    let read_model = service.read_model.clone();
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);
    let position = client
        .place("o-1", "ada")
        .await
        .position()
        .expect("a position");
    processors
        .wait_for(PROJECTION, Some(cqrs_core::Position(position)))
        .await
        .expect("catches up");
    let before = read_model.snapshot();

    let rebuild = format!("/admin/processors/{PROJECTION}/rebuild");
    let answer = client.post(&rebuild, &[], json!(null)).await;
    let body = answer.problem(StatusCode::BAD_REQUEST, kinds::CONFIRMATION_REQUIRED);
    println!("{body:#}");
    let detail = body["detail"].as_str().expect("a detail");
    assert!(
        detail.contains("would empty the read model of `orders_by_customer`"),
        "{detail}"
    );
    assert_eq!(body["action"], "rebuild");
    assert_eq!(body["processor"], PROJECTION);
    let effect = body["effect"].as_str().expect("the effect alone");
    assert!(
        effect.starts_with("empty the read model of `orders_by_customer`"),
        "{effect}"
    );

    let declined = client
        .post(&rebuild, &[], json!({ "confirm": false }))
        .await;
    declined.problem(StatusCode::BAD_REQUEST, kinds::CONFIRMATION_REQUIRED);
    let misspelt = client
        .post(&format!("{rebuild}?confirm=yes"), &[], json!(null))
        .await;
    misspelt.problem(StatusCode::BAD_REQUEST, kinds::CONFIRMATION_REQUIRED);
    let garbled = client.post(&rebuild, &[], json!("confirm")).await;
    garbled.problem(StatusCode::BAD_REQUEST, kinds::INVALID_BODY);

    let pause = client
        .post(
            &format!("/admin/processors/{PROJECTION}/pause"),
            &[],
            json!(null),
        )
        .await;
    let body = pause.problem(StatusCode::BAD_REQUEST, kinds::CONFIRMATION_REQUIRED);
    assert!(
        body["detail"]
            .as_str()
            .expect("a detail")
            .contains("would pause")
    );
    let retry = client
        .post(
            &format!("/admin/processors/{PROJECTION}/dead-letters/7/retry"),
            &[],
            json!(null),
        )
        .await;
    retry.problem(StatusCode::BAD_REQUEST, kinds::CONFIRMATION_REQUIRED);

    // Nothing happened: still live, same checkpoint, same model.
    let status = client.get("/admin/status", &[]).await;
    assert_eq!(
        status.body[0]["state"]["state"], "live",
        "{:#}",
        status.body
    );
    assert_eq!(status.body[0]["checkpoint"], position);
    assert_eq!(read_model.snapshot(), before);

    // The other answers of the dead-letter calls.
    let letters = client
        .get(&format!("/admin/processors/{PROJECTION}/dead-letters"), &[])
        .await;
    assert_eq!((letters.status, letters.body), (StatusCode::OK, json!([])));
    let unknown = client
        .post(
            &format!("/admin/processors/{PROJECTION}/dead-letters/7/discard?confirm=true"),
            &[],
            json!(null),
        )
        .await;
    unknown.problem(StatusCode::NOT_FOUND, kinds::NOT_FOUND);
    let nobody = client
        .get("/admin/processors/nobody/dead-letters", &[])
        .await;
    nobody.problem(StatusCode::NOT_FOUND, kinds::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_while_commands_keep_arriving_ends_equal_to_a_fresh_rebuild() {
    const CLIENTS: usize = 4;
    const ORDERS_EACH: usize = 60;
    let store = MemStore::new();
    let service = shop_service(
        store.clone(),
        RetryPolicy::default(),
        Duration::from_secs(5),
    );
    let processors = service.processors.clone();
    let read_model = service.read_model.clone();
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);

    let done = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for writer in 0..CLIENTS {
        let client = client.clone();
        let done = Arc::clone(&done);
        writers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for n in 0..ORDERS_EACH {
                let order = format!("o-{writer}-{n}");
                let customer = format!("c-{}", n % 5);
                let placed = client
                    .post(
                        &format!("/orders/{order}"),
                        &[],
                        json!({ "customer": customer, "total": 100 + n }),
                    )
                    .await;
                if placed.status != StatusCode::OK {
                    failures.push(placed);
                } else if n % 2 == 0 {
                    let paid = client
                        .post(&format!("/orders/{order}/pay"), &[], json!(null))
                        .await;
                    if paid.status != StatusCode::OK {
                        failures.push(paid);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }

    // Rebuild twice while the writers are busy.
    let mut rebuilt_at = Vec::new();
    for threshold in [CLIENTS * ORDERS_EACH / 4, CLIENTS * ORDERS_EACH / 2] {
        while done.load(Ordering::SeqCst) < threshold {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        let rebuild = client
            .post(
                &format!("/admin/processors/{PROJECTION}/rebuild"),
                &[],
                json!({ "confirm": true }),
            )
            .await;
        assert_eq!(rebuild.status, StatusCode::OK, "{:#}", rebuild.body);
        assert_eq!(rebuild.body["done"], true);
        let head = store.head().await.expect("a head").0;
        println!(
            "rebuild accepted in {:?} at head {head}; state then: {}",
            started.elapsed(),
            rebuild.body["status"]["state"]["state"]
        );
        rebuilt_at.push(head);
    }
    for writer in writers {
        let failures = writer.await.expect("the writer ends");
        assert!(failures.is_empty(), "commands failed: {failures:#?}");
    }
    let head = store.head().await.expect("a head");
    let expected_events = CLIENTS * ORDERS_EACH + CLIENTS * ORDERS_EACH.div_ceil(2);
    assert_eq!(head.0 as usize, expected_events);
    assert!(
        rebuilt_at.iter().all(|&at| at > 0 && at < head.0),
        "the rebuilds ran while commands arrived: {rebuilt_at:?} of {head}"
    );

    processors
        .wait_for(PROJECTION, Some(head))
        .await
        .expect("the rebuilt projection catches up");
    let fresh = MemoryReadModel::new();
    let fresh_handle = spawn_projection(&store, &fresh);
    fresh_handle
        .wait_for(head, Duration::from_secs(10))
        .await
        .expect("a fresh projection catches up");
    let (rebuilt, _) = read_model.snapshot();
    let (expected, _) = fresh.snapshot();
    let orders: usize = rebuilt.customers.values().map(|orders| orders.len()).sum();
    println!("{expected_events} events, {orders} orders; rebuilds at {rebuilt_at:?}");
    assert_eq!(orders, CLIENTS * ORDERS_EACH);
    assert!(
        rebuilt == expected,
        "the rebuilt read model differs from a fresh one"
    );
    let status = client.get("/admin/status", &[]).await;
    assert_eq!(status.body[0]["checkpoint"], head.0, "{:#}", status.body);
    assert_eq!(status.body[0]["lag"], 0);
    fresh_handle.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_moves_the_checkpoint_forward_past_events_it_does_not_handle_and_never_back() {
    let service = shop_service(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(2),
    );
    let processors = service.processors.clone();
    let read_model = service.read_model.clone();
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);
    let reset = format!("/admin/processors/{PROJECTION}/reset");
    let first = client
        .place("o-1", "ada")
        .await
        .position()
        .expect("a position");
    processors
        .wait_for(PROJECTION, Some(cqrs_core::Position(first)))
        .await
        .expect("catches up");

    // Paused, so the next two orders wait; the first of them is then skipped.
    let paused = client
        .post(
            &format!("/admin/processors/{PROJECTION}/pause?confirm=true"),
            &[],
            json!(null),
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{:#}", paused.body);
    let skipped = client
        .place("o-2", "bob")
        .await
        .position()
        .expect("a position");
    let kept = client
        .place("o-3", "cyd")
        .await
        .position()
        .expect("a position");

    // Refused: no position, not a number, backwards, past the head, unconfirmed.
    let missing = client.post(&reset, &[], json!(null)).await;
    let body = missing.problem(StatusCode::BAD_REQUEST, kinds::INVALID_POSITION);
    assert!(
        body["detail"].as_str().expect("a detail").contains("?to=N"),
        "{body:#}"
    );
    let garbled = client
        .post(&format!("{reset}?to=two"), &[], json!(null))
        .await;
    garbled.problem(StatusCode::BAD_REQUEST, kinds::INVALID_POSITION);
    let back = client
        .post(&format!("{reset}?to=0&confirm=true"), &[], json!(null))
        .await;
    let body = back.problem(StatusCode::CONFLICT, kinds::REFUSED);
    println!("{body:#}");
    assert!(
        body["detail"].as_str().expect("a detail").contains("twice"),
        "{body:#}"
    );
    let beyond = client
        .post(
            &format!("{reset}?to={}&confirm=true", kept + 10),
            &[],
            json!(null),
        )
        .await;
    let body = beyond.problem(StatusCode::CONFLICT, kinds::REFUSED);
    assert!(
        body["detail"]
            .as_str()
            .expect("a detail")
            .contains("past the head"),
        "{body:#}"
    );
    let unconfirmed = client
        .post(&format!("{reset}?to={skipped}"), &[], json!(null))
        .await;
    let body = unconfirmed.problem(StatusCode::BAD_REQUEST, kinds::CONFIRMATION_REQUIRED);
    assert!(
        body["detail"]
            .as_str()
            .expect("a detail")
            .contains(&format!("forward to position {skipped}")),
        "{body:#}"
    );
    let status = client.get("/admin/status", &[]).await;
    assert_eq!(status.body[0]["checkpoint"], first, "{:#}", status.body);

    let done = client
        .post(
            &format!("{reset}?to={skipped}&confirm=true"),
            &[],
            json!(null),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{:#}", done.body);
    assert_eq!(
        done.body["status"]["checkpoint"], skipped,
        "{:#}",
        done.body
    );
    assert_eq!(
        done.body["status"]["state"]["state"], "paused",
        "{:#}",
        done.body
    );
    let resumed = client
        .post(
            &format!("/admin/processors/{PROJECTION}/resume?confirm=true"),
            &[],
            json!(null),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK, "{:#}", resumed.body);
    processors
        .wait_for(PROJECTION, Some(cqrs_core::Position(kept)))
        .await
        .expect("catches up");
    let customers = read_model.read(|model| {
        ["ada", "bob", "cyd"]
            .map(|customer| model.orders_of(customer).map_or(0, |orders| orders.len()))
    });
    assert_eq!(
        customers,
        [1, 0, 1],
        "the order at {skipped} was skipped, the others handled"
    );
    server.stop().await;
}
