//! Serving until a shutdown signal, then draining: the server stops taking connections and
//! finishes the requests in flight, and only then are the processors shut down, so that no
//! request waits on a projection that is already gone.

use std::future::Future;

use axum::Router;
use cqrs_core::processor::ProcessorStatus;
use tokio::net::TcpListener;

use crate::processors::Processors;

/// Serves `router` on `listener` until `signal` completes, waits for the requests in flight,
/// then shuts every processor of `processors` down (each commits the batch in hand) and returns
/// their last statuses.
///
/// The signal is any future: `tokio::signal::ctrl_c()` mapped to `()`, a SIGTERM stream, or a
/// oneshot receiver in a test. An error is the listener's; the processors are shut down then
/// too.
pub async fn serve_until(
    listener: TcpListener,
    router: Router,
    processors: Processors,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Vec<ProcessorStatus>> {
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(signal)
        .await;
    let statuses = processors.shutdown().await;
    served.map(|()| statuses)
}
