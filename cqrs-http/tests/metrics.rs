//! `GET /metrics` of the admin router: Prometheus text from the exporter the service installed,
//! with the framework's command and processor metrics in it; a 404 problem without one.

mod common;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use cqrs_core::{EventStore as _, RetryPolicy, telemetry};
use cqrs_http::admin::Admin;
use cqrs_http::problem::kinds;
use cqrs_memstore::MemStore;
use metrics_exporter_prometheus::PrometheusBuilder;

use common::{HttpClient, PROJECTION, Server, shop_service};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_prometheus_text_from_the_installed_exporter() {
    // Installed first, as a service's `main` does: repositories and runners take their metric
    // handles when they are built.
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
    telemetry::describe_metrics();

    let store = MemStore::new();
    let service = shop_service(
        store.clone(),
        RetryPolicy::default(),
        Duration::from_secs(2),
    );
    let processors = service.processors.clone();
    let shop = Server::start(service.router).await;
    let client = HttpClient::new(shop.addr);
    for order in ["o-1", "o-2", "o-3"] {
        client.place(order, "ada").await;
    }
    let head = store.head().await.expect("head");
    processors
        .wait_for(PROJECTION, Some(head))
        .await
        .expect("caught up");

    let ops = Server::start(
        Router::new().nest(
            "/ops",
            Admin::new(processors.clone())
                .prometheus(move || handle.render())
                .router(),
        ),
    )
    .await;
    let answer = HttpClient::new(ops.addr).get("/ops/metrics", &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .content_type()
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        answer.content_type()
    );
    let text = answer.body.as_str().expect("text").to_owned();
    println!("{text}");
    let sample = |name: &str| {
        text.lines()
            .find(|line| {
                line.starts_with(name) && line.contains(&format!("processor=\"{PROJECTION}\""))
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok())
    };
    assert_eq!(
        sample(telemetry::PROCESSOR_EVENTS),
        Some(3.0),
        "three orders handled"
    );
    assert_eq!(sample(telemetry::PROCESSOR_LAG_EVENTS), Some(0.0));
    assert!(
        text.contains(&format!("# TYPE {} histogram", telemetry::COMMAND_DURATION))
            || text.contains(&format!("# TYPE {} summary", telemetry::COMMAND_DURATION)),
        "the command durations are there"
    );

    // The service's own admin router was built without an exporter.
    let without = client.get("/admin/metrics", &[]).await;
    let body = without.problem(StatusCode::NOT_FOUND, kinds::NOT_FOUND);
    assert!(
        body["detail"]
            .as_str()
            .expect("a detail")
            .contains(".prometheus("),
        "{body:#}"
    );
    ops.stop().await;
    shop.stop().await;
    processors.shutdown().await;
}
