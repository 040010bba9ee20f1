//! The processors a service runs, shared by its handlers: waits for read-your-writes, the admin
//! endpoints, the health check and the shutdown at the end.
//!
//! A [`ProcessorHandle`] is owned (its [`shutdown`](ProcessorHandle::shutdown) takes it by
//! value), so the handles live in one registry that every handler reaches by the processor's
//! name, and [`Processors::shutdown`] takes them out and stops them when the server is done.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use cqrs_core::Position;
use cqrs_core::processor::{Health, HealthCheck, ProcessorHandle, ProcessorStatus, WaitError};
use tokio::sync::{RwLock, RwLockReadGuard};

use crate::problem::{Problem, kinds};

/// How long a read waits for a projection by default.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// The processors of a service, by name. Cloning is cheap; clones share the handles.
///
/// ```no_run
/// # async fn wiring(orders: cqrs_core::processor::ProcessorHandle) {
/// use std::time::Duration;
/// use cqrs_http::Processors;
///
/// let processors = Processors::builder()
///     .processor(orders)
///     .wait_timeout(Duration::from_secs(2))
///     .build();
/// # }
/// ```
#[derive(Clone)]
pub struct Processors {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` once shut down. Handlers hold the read lock while they use a handle (a wait for
    /// a position, an admin call), so that [`Processors::shutdown`] stops a processor only
    /// after the calls on it have ended; each of them is bounded (a wait by its timeout).
    handles: RwLock<Option<BTreeMap<&'static str, ProcessorHandle>>>,
    health: HealthCheck,
    wait_timeout: Duration,
}

impl std::fmt::Debug for Processors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processors")
            .field("wait_timeout", &self.inner.wait_timeout)
            .finish_non_exhaustive()
    }
}

/// Configures [`Processors`]; made by [`Processors::builder`].
#[derive(Debug, Default)]
pub struct ProcessorsBuilder {
    handles: Vec<ProcessorHandle>,
    health: HealthCheck,
    wait_timeout: Option<Duration>,
}

impl ProcessorsBuilder {
    /// Adds a running processor; its name is the one it is reached by.
    #[must_use]
    pub fn processor(mut self, handle: ProcessorHandle) -> Self {
        self.handles.push(handle);
        self
    }

    /// The health check to watch the processors with (default: [`HealthCheck::new`]); the
    /// processors added are watched by it too.
    #[must_use]
    pub fn health_check(mut self, health: HealthCheck) -> Self {
        self.health = health;
        self
    }

    /// How long a read waits for a projection to reach a position (default: 5 s).
    #[must_use]
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// The registry. A second processor of the same name replaces the first, which is shut
    /// down as when its handle is dropped.
    pub fn build(self) -> Processors {
        let mut health = self.health;
        let mut handles = BTreeMap::new();
        for handle in self.handles {
            health.watch(&handle);
            handles.insert(handle.name(), handle);
        }
        Processors {
            inner: Arc::new(Inner {
                handles: RwLock::new(Some(handles)),
                health,
                wait_timeout: self.wait_timeout.unwrap_or(DEFAULT_WAIT),
            }),
        }
    }
}

impl Processors {
    /// Starts configuring a registry.
    pub fn builder() -> ProcessorsBuilder {
        ProcessorsBuilder::default()
    }

    /// How long [`wait_for`](Processors::wait_for) waits.
    pub fn wait_timeout(&self) -> Duration {
        self.inner.wait_timeout
    }

    /// The names of the processors still registered.
    pub async fn names(&self) -> Vec<&'static str> {
        match &*self.inner.handles.read().await {
            Some(handles) => handles.keys().copied().collect(),
            None => Vec::new(),
        }
    }

    /// The status of every registered processor, by name.
    pub async fn statuses(&self) -> Vec<ProcessorStatus> {
        let handles = self.inner.handles.read().await;
        let mut statuses = Vec::new();
        for handle in handles.iter().flat_map(BTreeMap::values) {
            statuses.push(handle.status().await);
        }
        statuses
    }

    /// What the health check says now (it keeps watching a processor removed or shut down, which
    /// then counts as stopped).
    pub fn health(&self) -> Health {
        self.inner.health.check()
    }

    /// The handle of the processor `name`, held for as long as the guard lives: a 404 problem
    /// when there is none, 503 after shutdown.
    pub async fn get(&self, name: &str) -> Result<RwLockReadGuard<'_, ProcessorHandle>, Problem> {
        let handles = self.inner.handles.read().await;
        let closed = handles.is_none();
        RwLockReadGuard::try_map(handles, |handles| {
            handles.as_ref().and_then(|handles| handles.get(name))
        })
        .map_err(|_| {
            if closed {
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    kinds::PROCESSOR_UNAVAILABLE,
                    "processor not running",
                )
                .detail("the processors have been shut down")
            } else {
                Problem::new(StatusCode::NOT_FOUND, kinds::NOT_FOUND, "no such processor")
                    .detail(format_args!("there is no processor `{name}`"))
                    .extension("processor", name)
            }
        })
    }

    /// Waits until the processor `name` has reached `position` (read your own writes), at most
    /// the registry's [`wait_timeout`](Processors::wait_timeout); `None` returns at once.
    ///
    /// A processor that does not get there in time is a 504 problem, one that stopped or
    /// failed first a 503, an unknown name 404.
    pub async fn wait_for(
        &self,
        name: &str,
        position: Option<Position>,
    ) -> Result<Position, Problem> {
        self.wait_for_within(name, position, self.inner.wait_timeout)
            .await
    }

    /// [`wait_for`](Processors::wait_for) with its own timeout.
    pub async fn wait_for_within(
        &self,
        name: &str,
        position: Option<Position>,
        timeout: Duration,
    ) -> Result<Position, Problem> {
        let handle = self.get(name).await?;
        handle
            .wait_for(position, timeout)
            .await
            .map_err(wait_problem)
    }

    /// Takes the processor `name` out of the registry, to shut it down or move it elsewhere. The
    /// health check keeps watching it.
    pub async fn remove(&self, name: &str) -> Option<ProcessorHandle> {
        self.inner.handles.write().await.as_mut()?.remove(name)
    }

    /// Shuts every registered processor down, one after the other (each finishes the batch in
    /// hand and commits it), and returns their last statuses. Later calls on the registry
    /// answer 503; a second shutdown returns nothing.
    pub async fn shutdown(&self) -> Vec<ProcessorStatus> {
        let handles = self.inner.handles.write().await.take();
        let mut statuses = Vec::new();
        for handle in handles.into_iter().flat_map(BTreeMap::into_values) {
            statuses.push(handle.shutdown().await);
        }
        statuses
    }
}

/// The problem of a wait that ended without the position.
fn wait_problem(error: WaitError) -> Problem {
    match &error {
        WaitError::Timeout {
            processor,
            target,
            reached,
            ..
        } => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            kinds::NOT_CAUGHT_UP,
            "read model not caught up",
        )
        .detail(&error)
        .extension("processor", *processor)
        .extension("position", target.0)
        .extension("reached", reached.0),
        WaitError::Stopped {
            processor,
            target,
            reached,
            ..
        } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            kinds::PROCESSOR_UNAVAILABLE,
            "processor not running",
        )
        .detail(format_args!(
            "processor `{processor}` stopped at position {reached}, before {target}"
        ))
        .extension("processor", *processor)
        .extension("position", target.0)
        .extension("reached", reached.0),
        _ => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            kinds::PROCESSOR_UNAVAILABLE,
            "processor not running",
        )
        .detail(&error),
    }
}
