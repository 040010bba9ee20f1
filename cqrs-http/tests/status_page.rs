//! The admin router's status page in a real browser: headless Chromium opens it on a running
//! service, the test reads what it shows (processor names, lag, a dead letter) and clicks retry
//! on the dead letter behind the page's confirmation, then checks the store. The page's
//! screenshot is kept under `target/test-artifacts/`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use cqrs_core::projection::MemoryReadModel;
use cqrs_core::{EventStore, RetryPolicy};
use cqrs_http::problem::kinds;
use cqrs_memstore::MemStore;
use cqrs_tests::browser::{Browser, artifact};
use cqrs_tests::refusing::{COUNTED, REFUSED, spawn_counted};
use serde_json::json;

use common::{HttpClient, PROJECTION, Server, shop_service_with};

/// What the browser saw.
#[derive(Debug)]
struct Seen {
    names: Vec<String>,
    lags: Vec<String>,
    states: Vec<String>,
    letter_id: String,
    letter_error: String,
    question: String,
    message: String,
    letters_after: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_status_page_shows_lag_and_a_dead_letter_and_retries_it_behind_a_confirmation() {
    let store = MemStore::new();
    let refuse = Arc::new(AtomicBool::new(true));
    let counts = MemoryReadModel::new();
    let counted = spawn_counted(&store, &refuse, &counts);
    let service = shop_service_with(
        store.clone(),
        RetryPolicy::default(),
        Duration::from_secs(5),
        vec![counted],
    );
    let processors = service.processors.clone();
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);
    let customers = ["ada", REFUSED, "bob", "ada"];
    for (number, customer) in customers.iter().enumerate() {
        client.place(&format!("o-{number}"), customer).await;
    }
    let head = store.head().await.expect("head");
    for name in [COUNTED, PROJECTION] {
        processors
            .wait_for(name, Some(head))
            .await
            .expect("caught up");
    }
    // One processor paused behind the head, so that the page has a lag to show.
    let paused = client
        .post(
            &format!("/admin/processors/{PROJECTION}/pause?confirm=true"),
            &[],
            json!(null),
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{:#}", paused.body);
    client.place("o-late", "cyd").await;
    let head = store.head().await.expect("head");
    processors
        .wait_for(COUNTED, Some(head))
        .await
        .expect("caught up");
    let parked = processors
        .get(COUNTED)
        .await
        .expect("registered")
        .dead_letters()
        .await
        .expect("dead letters");
    assert_eq!(parked.len(), 1, "{parked:?}");
    let parked_id = parked[0].id.clone();

    // The page, as a browser gets it.
    let page = client.get("/admin", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.content_type().starts_with("text/html"),
        "{}",
        page.content_type()
    );

    let url = format!("http://{}/admin", server.addr);
    let shot = artifact("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let fixed = Arc::clone(&refuse);
    let seen = tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || {
            let browser = Browser::start().unwrap_or_else(|error| panic!("{error}"));
            browser.open(&url).expect("open the status page");
            let wait = Duration::from_secs(10);
            let letter_id = browser
                .wait_for_text(".dead-letter .id", wait, |text| !text.is_empty())
                .expect("the dead letter is shown");
            // The paused processor's row comes first; its lag shows once its runner saw the
            // head move.
            browser
                .wait_for_text("#processors .lag", wait, |text| text == "1")
                .expect("the lag is shown");
            let names = browser.texts("#processors .name").expect("names");
            let lags = browser.texts("#processors .lag").expect("lags");
            let states = browser.texts("#processors .state").expect("states");
            let letter_error = browser.text(".dead-letter .error").expect("its error");
            browser.screenshot(&shot).expect("screenshot");

            // The fix is deployed; the operator retries the dead letter.
            fixed.store(false, Ordering::SeqCst);
            browser
                .click(".dead-letter button.retry")
                .expect("click retry");
            let question = browser.alert_text().expect("a confirmation is asked");
            browser.accept_alert().expect("confirm");
            let message = browser
                .wait_for_text("#message", wait, |text| !text.is_empty())
                .expect("the page says how it went");
            let letters_after = browser
                .wait_for_text("#dead-letters", wait, |text| text == "none")
                .expect("the dead letter is gone from the page");
            Seen {
                names,
                lags,
                states,
                letter_id,
                letter_error,
                question,
                message,
                letters_after,
            }
        }
    })
    .await
    .expect("browser task");
    println!("{seen:#?}");
    assert_eq!(seen.names, [PROJECTION, COUNTED], "in name order");
    assert_eq!(seen.lags, ["1", "0"]);
    assert_eq!(seen.states, ["paused", "live"]);
    assert_eq!(seen.letter_id, parked_id);
    assert!(
        seen.letter_error.contains("`mallory` are refused"),
        "{}",
        seen.letter_error
    );
    assert!(
        seen.question
            .contains(&format!("retry dead letter {parked_id} of {COUNTED}")),
        "{}",
        seen.question
    );
    assert!(seen.message.starts_with("Done"), "{}", seen.message);
    assert_eq!(seen.letters_after, "none");

    // The store: no dead letter left, and mallory's order counted once.
    let handle = processors.get(COUNTED).await.expect("registered");
    assert_eq!(handle.dead_letters().await.expect("dead letters"), []);
    assert_eq!(handle.status().await.dead_letters, 0);
    drop(handle);
    let counted = counts.read(|counts| counts.clone());
    assert_eq!(
        counted,
        BTreeMap::from([
            ("ada".to_owned(), 2),
            ("bob".to_owned(), 1),
            ("cyd".to_owned(), 1),
            (REFUSED.to_owned(), 1)
        ])
    );
    let png = std::fs::read(&shot).expect("screenshot kept");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    println!("screenshot: {} ({} bytes)", shot.display(), png.len());
    server.stop().await;
    processors.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_is_served_with_a_strict_policy_and_calls_from_other_origins_are_refused() {
    let service = shop_service_with(
        MemStore::new(),
        RetryPolicy::default(),
        Duration::from_secs(2),
        Vec::new(),
    );
    let server = Server::start(service.router).await;
    let client = HttpClient::new(server.addr);
    let page = client.get("/admin", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    let policy = page
        .headers
        .get("content-security-policy")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");

    let pause = format!("/admin/processors/{PROJECTION}/pause?confirm=true");
    let from_elsewhere = client
        .post(&pause, &[("origin", "http://evil.example")], json!(null))
        .await;
    let body = from_elsewhere.problem(StatusCode::FORBIDDEN, kinds::CROSS_SITE);
    assert!(
        body["detail"]
            .as_str()
            .expect("a detail")
            .contains("evil.example"),
        "{body:#}"
    );
    let cross_site = client
        .post(&pause, &[("sec-fetch-site", "cross-site")], json!(null))
        .await;
    cross_site.problem(StatusCode::FORBIDDEN, kinds::CROSS_SITE);
    let status = client.get("/admin/status", &[]).await;
    assert_eq!(
        status.body[0]["state"]["state"], "live",
        "{:#}",
        status.body
    );

    // The page's own calls, and clients that are not browsers, go through.
    let own = format!("http://{}", server.addr);
    let same_origin = client
        .post(&pause, &[("origin", own.as_str())], json!(null))
        .await;
    assert_eq!(same_origin.status, StatusCode::OK, "{:#}", same_origin.body);
    let resume = format!("/admin/processors/{PROJECTION}/resume?confirm=true");
    let fetched = client
        .post(&resume, &[("sec-fetch-site", "same-origin")], json!(null))
        .await;
    assert_eq!(fetched.status, StatusCode::OK, "{:#}", fetched.body);
    let plain = client.post(&pause, &[], json!(null)).await;
    assert_eq!(plain.status, StatusCode::OK, "{:#}", plain.body);
    server.stop().await;
    service.processors.shutdown().await;
}
