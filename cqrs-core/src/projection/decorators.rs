//! Decorators for read-model handlers fed by push delivery (a message bus) instead of the
//! ordered global log: events arrive out of order, from many threads at once, and before the
//! entities they depend on.
//!
//! Each problem has its own wrapper around a [`DeliveryHandler`], and they compose:
//!
//! - [`Ordered`]: every delivery carries its stream version; one that arrives early waits in a
//!   per-stream backlog until the versions before it are applied, and a version already applied
//!   (or already waiting) is dropped as a duplicate.
//! - [`Funnel`]: deliveries made from many tasks or threads are applied one at a time, in the
//!   order they arrived, on one task.
//! - [`Dependencies`]: a delivery that needs another entity at some version waits until that
//!   version has been applied, then proceeds.
//!
//! The order that works is dependencies, then funnel, then ordering: dependencies are checked
//! first (a delivery they release is re-sent from a new task, which the funnel then serialises),
//! and ordering runs on the funnel's single task. [`AppliedVersions`] is where [`Ordered`]
//! records what it applied and where [`Dependencies`] looks.
//!
//! ```
//! use cqrs_core::projection::decorators::{
//!     AppliedVersions, Delivery, DeliveryHandler, DeliveryHandlerExt, Handled, HandlerError,
//! };
//! use cqrs_core::{StreamId, Version};
//! use std::sync::{Arc, Mutex};
//!
//! /// Writes every applied event into a list.
//! struct Journal(Arc<Mutex<Vec<String>>>);
//!
//! #[async_trait::async_trait]
//! impl DeliveryHandler<String> for Journal {
//!     async fn handle(&self, delivery: Delivery<String>) -> Result<Handled, HandlerError> {
//!         self.0.lock().map_err(|_| "poisoned")?.push(delivery.event);
//!         Ok(Handled::Applied)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let journal = Arc::new(Mutex::new(Vec::new()));
//! let versions = AppliedVersions::new();
//! let handler = Journal(journal.clone())
//!     .ordered(&versions)
//!     .funnelled()
//!     .with_dependencies(&versions, |_: &Delivery<String>| Vec::new());
//!
//! let widget = StreamId::new("widget-1")?;
//! let second = Delivery::new(widget.clone(), Version(2), "renamed".to_owned());
//! let first = Delivery::new(widget.clone(), Version(1), "created".to_owned());
//! assert_eq!(handler.handle(second).await?, Handled::Backlogged);
//! assert_eq!(handler.handle(first).await?, Handled::Applied);
//! assert_eq!(*journal.lock().map_err(|_| "poisoned")?, ["created", "renamed"]);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::event::{StreamId, Version};

/// The error a [`DeliveryHandler`] returns: any error.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// One pushed event: the stream (entity) it belongs to, its version there, and the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<E> {
    /// The entity's stream.
    pub stream: StreamId,
    /// The event's version in that stream (1-based).
    pub version: Version,
    /// The event.
    pub event: E,
}

impl<E> Delivery<E> {
    /// A delivery of `event` at `version` of `stream`.
    pub fn new(stream: StreamId, version: Version, event: E) -> Self {
        Delivery {
            stream,
            version,
            event,
        }
    }
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handled {
    /// Applied (with whatever it released from a backlog).
    Applied,
    /// Arrived before an earlier version of its stream; waits in the backlog.
    Backlogged,
    /// Its version was already applied or is already waiting; dropped.
    Duplicate,
    /// Waits for an entity it depends on; it will be re-sent once that entity is applied.
    Deferred,
}

/// Something that applies pushed events to a read model: the user's handler, or a decorator
/// around one.
#[async_trait::async_trait]
pub trait DeliveryHandler<E>: Send + Sync + 'static {
    /// Applies `delivery` (or, for a decorator, decides when to).
    async fn handle(&self, delivery: Delivery<E>) -> Result<Handled, HandlerError>;
}

#[async_trait::async_trait]
impl<E: Send + 'static, H: DeliveryHandler<E> + ?Sized> DeliveryHandler<E> for Arc<H> {
    async fn handle(&self, delivery: Delivery<E>) -> Result<Handled, HandlerError> {
        (**self).handle(delivery).await
    }
}

/// The decorators as methods, so they read in the order they wrap:
/// `handler.ordered(&versions).funnelled().with_dependencies(&versions, needs)`.
pub trait DeliveryHandlerExt<E: Send + 'static>: DeliveryHandler<E> + Sized {
    /// Applies each stream's deliveries in version order; see [`Ordered`].
    fn ordered(self, versions: &AppliedVersions) -> Ordered<Self, E>
    where
        E: Clone,
    {
        Ordered::new(self, versions.clone())
    }

    /// Applies deliveries one at a time, in arrival order, on one task; see [`Funnel`].
    /// Must be called within a tokio runtime.
    fn funnelled(self) -> Funnel<E> {
        Funnel::new(self)
    }

    /// Holds back deliveries until the entities they need are applied; see [`Dependencies`].
    /// Must be used within a tokio runtime.
    fn with_dependencies<F>(self, versions: &AppliedVersions, needs: F) -> Dependencies<Self, E, F>
    where
        F: Fn(&Delivery<E>) -> Vec<(StreamId, Version)> + Send + Sync + 'static,
    {
        Dependencies::new(self, versions.clone(), needs)
    }
}

impl<E: Send + 'static, H: DeliveryHandler<E>> DeliveryHandlerExt<E> for H {}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only this module's short, non-panicking sections run under these locks, so a poisoned
    // lock still holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The version applied so far of every stream, shared by [`Ordered`] (which records) and
/// [`Dependencies`] (which waits). Cloning is cheap and shares the record.
///
/// A handler that is not wrapped in [`Ordered`] records its own progress with
/// [`record`](AppliedVersions::record).
#[derive(Clone, Default)]
pub struct AppliedVersions {
    inner: Arc<Mutex<VersionsInner>>,
}

#[derive(Default)]
struct VersionsInner {
    applied: HashMap<StreamId, Version>,
    waiting: HashMap<StreamId, Vec<Waiter>>,
    next_waiter: u64,
}

/// One registered wait: fired once its stream reaches `version`.
struct Waiter {
    id: u64,
    version: Version,
    sender: oneshot::Sender<()>,
}

impl AppliedVersions {
    /// No stream applied yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last version of `stream` applied ([`Version::INITIAL`] when none).
    pub fn applied(&self, stream: &StreamId) -> Version {
        lock(&self.inner)
            .applied
            .get(stream)
            .copied()
            .unwrap_or_default()
    }

    /// Records that `stream` has been applied up to `version` (a lower version changes
    /// nothing), and releases what waited for it.
    pub fn record(&self, stream: &StreamId, version: Version) {
        let mut inner = lock(&self.inner);
        let applied = inner.applied.entry(stream.clone()).or_default();
        *applied = (*applied).max(version);
        let applied = *applied;
        let released = match inner.waiting.get_mut(stream) {
            Some(waiting) => {
                let (ready, still): (Vec<_>, Vec<_>) = std::mem::take(waiting)
                    .into_iter()
                    .partition(|waiter| waiter.version <= applied);
                if still.is_empty() {
                    inner.waiting.remove(stream);
                } else {
                    *waiting = still;
                }
                ready
            }
            None => Vec::new(),
        };
        // Released outside the lock: a woken waiter may record versions itself.
        drop(inner);
        for waiter in released {
            let _ = waiter.sender.send(());
        }
    }

    /// Waits until `stream` has been applied up to `version`. Dropping the future (under a
    /// timeout, say) withdraws the wait.
    pub async fn wait_for(&self, stream: &StreamId, version: Version) {
        if let Some(mut registration) = self.register(stream, version) {
            registration.released().await;
        }
    }

    /// `None` when `stream` is at `version` already; otherwise a registration fired once it is.
    /// One lock covers the check and the registration, so a `record` cannot slip in between.
    fn register(&self, stream: &StreamId, version: Version) -> Option<Registration> {
        let mut inner = lock(&self.inner);
        if inner.applied.get(stream).copied().unwrap_or_default() >= version {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        let id = inner.next_waiter;
        inner.next_waiter = id.wrapping_add(1);
        inner
            .waiting
            .entry(stream.clone())
            .or_default()
            .push(Waiter {
                id,
                version,
                sender,
            });
        Some(Registration {
            versions: self.clone(),
            stream: stream.clone(),
            id,
            receiver,
        })
    }
}

/// A wait registered in [`AppliedVersions`]. Dropping it withdraws the wait, so one given up
/// on (timed out, or its task cancelled) does not stay in the table.
struct Registration {
    versions: AppliedVersions,
    stream: StreamId,
    id: u64,
    receiver: oneshot::Receiver<()>,
}

impl Registration {
    /// Waits until the version is recorded.
    async fn released(&mut self) {
        // The sender is only dropped unsent by `withdraw`, which needs `self`, or with the
        // table, which `self.versions` keeps alive: an error cannot happen here.
        let _ = (&mut self.receiver).await;
    }

    /// Removes the wait from the table; `false` when it was no longer there because `record`
    /// had released it.
    fn withdraw(&self) -> bool {
        let mut inner = lock(&self.versions.inner);
        let Some(waiting) = inner.waiting.get_mut(&self.stream) else {
            return false;
        };
        let Some(position) = waiting.iter().position(|waiter| waiter.id == self.id) else {
            return false;
        };
        waiting.swap_remove(position);
        if waiting.is_empty() {
            inner.waiting.remove(&self.stream);
        }
        true
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.withdraw();
    }
}

impl fmt::Debug for AppliedVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(lock(&self.inner).applied.iter())
            .finish()
    }
}

/// Applies each stream's deliveries in version order, whatever order they arrive in.
///
/// A delivery of the next version is applied at once, and then every backlogged version that
/// follows it; a later one waits in the stream's backlog; one at or below the applied version,
/// or already in the backlog, is a duplicate and dropped. With versions 1, 3, 5, 2, 4: 1 is
/// applied, 3 and 5 wait, 2 is applied and releases 3, 4 is applied and releases 5.
///
/// A delivery the inner handler fails on is not recorded as applied: it (or a redelivery)
/// can be tried again. A backlogged one that fails goes back into the backlog, which is why
/// events must be `Clone`.
pub struct Ordered<H, E> {
    inner: H,
    versions: AppliedVersions,
    // Held across the inner handler's `.await` on purpose: applying versions in order needs one
    // applier at a time. Behind a `Funnel` there is no contention for it.
    backlogs: tokio::sync::Mutex<HashMap<StreamId, BTreeMap<Version, Delivery<E>>>>,
}

impl<H, E> Ordered<H, E> {
    /// Orders deliveries for `inner`, recording applied versions in `versions`.
    pub fn new(inner: H, versions: AppliedVersions) -> Self {
        Ordered {
            inner,
            versions,
            backlogs: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The versions of `stream` waiting in the backlog, in order.
    pub async fn backlog(&self, stream: &StreamId) -> Vec<Version> {
        self.backlogs
            .lock()
            .await
            .get(stream)
            .map(|backlog| backlog.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The versions applied so far.
    pub fn versions(&self) -> &AppliedVersions {
        &self.versions
    }
}

#[async_trait::async_trait]
impl<E: Clone + Send + 'static, H: DeliveryHandler<E>> DeliveryHandler<E> for Ordered<H, E> {
    async fn handle(&self, delivery: Delivery<E>) -> Result<Handled, HandlerError> {
        let mut backlogs = self.backlogs.lock().await;
        let stream = delivery.stream.clone();
        let applied = self.versions.applied(&stream);
        if delivery.version <= applied {
            return Ok(Handled::Duplicate);
        }
        if delivery.version > applied.next() {
            let backlog = backlogs.entry(stream).or_default();
            if backlog.contains_key(&delivery.version) {
                return Ok(Handled::Duplicate);
            }
            backlog.insert(delivery.version, delivery);
            return Ok(Handled::Backlogged);
        }
        let version = delivery.version;
        self.inner.handle(delivery).await?;
        self.versions.record(&stream, version);
        // Apply what waited for this version, as long as the next one is there.
        while let Some(backlog) = backlogs.get_mut(&stream) {
            let next = self.versions.applied(&stream).next();
            let Some(waiting) = backlog.remove(&next) else {
                break;
            };
            if backlog.is_empty() {
                backlogs.remove(&stream);
            }
            self.inner.handle(waiting.clone()).await.inspect_err(|_| {
                // Back into the backlog: the next delivery of this stream tries it again.
                backlogs
                    .entry(stream.clone())
                    .or_default()
                    .insert(next, waiting);
            })?;
            self.versions.record(&stream, next);
        }
        Ok(Handled::Applied)
    }
}

type Envelope<E> = (Delivery<E>, oneshot::Sender<Result<Handled, HandlerError>>);

/// Applies deliveries one at a time, in the order they arrive, on one task: callers on many
/// threads send into a queue and wait for their delivery's outcome.
///
/// The task ends when the funnel is dropped, after the deliveries already queued.
pub struct Funnel<E> {
    queue: mpsc::Sender<Envelope<E>>,
}

/// How many deliveries may wait in a funnel's queue before senders wait for room.
const FUNNEL_CAPACITY: usize = 1024;

impl<E: Send + 'static> Funnel<E> {
    /// Starts the task that applies deliveries through `inner`. Must be called within a tokio
    /// runtime.
    pub fn new(inner: impl DeliveryHandler<E>) -> Self {
        let (queue, mut arrivals) = mpsc::channel::<Envelope<E>>(FUNNEL_CAPACITY);
        tokio::spawn(async move {
            while let Some((delivery, reply)) = arrivals.recv().await {
                // The sender may have stopped waiting; the delivery was applied all the same.
                let _ = reply.send(inner.handle(delivery).await);
            }
        });
        Funnel { queue }
    }
}

/// The funnel's task is gone (its handler panicked); the delivery was not applied.
#[derive(Debug, thiserror::Error)]
#[error("the funnel's task has stopped; the delivery was not applied")]
pub struct FunnelClosed;

#[async_trait::async_trait]
impl<E: Send + 'static> DeliveryHandler<E> for Funnel<E> {
    async fn handle(&self, delivery: Delivery<E>) -> Result<Handled, HandlerError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((delivery, reply))
            .await
            .map_err(|_| FunnelClosed)?;
        outcome.await.map_err(|_| FunnelClosed)?
    }
}

/// A delivery that [`Dependencies`] held back and that failed once released.
#[derive(Debug, Clone)]
pub struct DeferredFailure {
    /// The delivery's stream.
    pub stream: StreamId,
    /// The delivery's version.
    pub version: Version,
    /// What the inner handler said.
    pub error: Arc<dyn std::error::Error + Send + Sync>,
}

/// Holds back a delivery until the entities it needs have been applied, then passes it on.
///
/// `needs` tells, for a delivery, which streams must be applied up to which versions first
/// (e.g. "widget-1 v2 needs thingy-7 v1"). A delivery whose needs are met goes straight to the
/// inner handler; another is answered [`Handled::Deferred`] and re-sent from a new task once
/// [`AppliedVersions`] records the version it waits for. A released delivery that then fails
/// is kept in [`failures`](Dependencies::failures), never dropped unseen.
pub struct Dependencies<H, E, F> {
    shared: Arc<DependencyState<H, F>>,
    _event: std::marker::PhantomData<fn(E)>,
}

struct DependencyState<H, F> {
    inner: H,
    versions: AppliedVersions,
    needs: F,
    failures: Mutex<Vec<DeferredFailure>>,
}

impl<H, E, F> Dependencies<H, E, F>
where
    E: Send + 'static,
    H: DeliveryHandler<E>,
    F: Fn(&Delivery<E>) -> Vec<(StreamId, Version)> + Send + Sync + 'static,
{
    /// Holds deliveries for `inner` until what `needs` names is applied in `versions`.
    pub fn new(inner: H, versions: AppliedVersions, needs: F) -> Self {
        Dependencies {
            shared: Arc::new(DependencyState {
                inner,
                versions,
                needs,
                failures: Mutex::new(Vec::new()),
            }),
            _event: std::marker::PhantomData,
        }
    }

    /// Released deliveries that the inner handler then failed on.
    pub fn failures(&self) -> Vec<DeferredFailure> {
        lock(&self.shared.failures).clone()
    }

    fn deliver(
        shared: Arc<DependencyState<H, F>>,
        delivery: Delivery<E>,
    ) -> Pin<Box<dyn Future<Output = Result<Handled, HandlerError>> + Send>> {
        // Boxed because a released delivery is delivered again by this same function, from a
        // task it spawns: the future type would otherwise contain itself.
        Box::pin(async move {
            let unmet = (shared.needs)(&delivery)
                .into_iter()
                .find_map(|(stream, version)| shared.versions.register(&stream, version));
            let Some(mut registration) = unmet else {
                return shared.inner.handle(delivery).await;
            };
            tokio::spawn(async move {
                registration.released().await;
                drop(registration);
                let (stream, version) = (delivery.stream.clone(), delivery.version);
                // Delivered again from the top: it may need more than the version released.
                if let Err(error) = Self::deliver(shared.clone(), delivery).await {
                    lock(&shared.failures).push(DeferredFailure {
                        stream,
                        version,
                        error: Arc::from(error),
                    });
                }
            });
            Ok(Handled::Deferred)
        })
    }
}

#[async_trait::async_trait]
impl<H, E, F> DeliveryHandler<E> for Dependencies<H, E, F>
where
    E: Send + 'static,
    H: DeliveryHandler<E>,
    F: Fn(&Delivery<E>) -> Vec<(StreamId, Version)> + Send + Sync + 'static,
{
    async fn handle(&self, delivery: Delivery<E>) -> Result<Handled, HandlerError> {
        Self::deliver(self.shared.clone(), delivery).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stream(name: &str) -> StreamId {
        StreamId::new(name).expect("valid")
    }

    /// How many waits the table holds, and for how many streams.
    fn registered(versions: &AppliedVersions) -> (usize, usize) {
        let inner = lock(&versions.inner);
        let waits = inner.waiting.values().map(Vec::len).sum();
        (waits, inner.waiting.len())
    }

    #[test]
    fn a_released_or_dropped_registration_leaves_nothing_behind() {
        let versions = AppliedVersions::new();
        let thingy = stream("thingy-1");
        let first = versions.register(&thingy, Version(1));
        let second = versions.register(&thingy, Version(2));
        assert!(first.is_some() && second.is_some());
        assert_eq!(registered(&versions), (2, 1));

        versions.record(&thingy, Version(1));
        assert_eq!(registered(&versions), (1, 1), "version 1 released");
        drop(first);
        assert_eq!(
            registered(&versions),
            (1, 1),
            "dropping a released one is harmless"
        );
        drop(second);
        assert_eq!(registered(&versions), (0, 0), "a dropped wait is withdrawn");
        assert!(
            versions.register(&thingy, Version(1)).is_none(),
            "met already"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_wait_for_is_withdrawn() {
        let versions = AppliedVersions::new();
        let waited = tokio::time::timeout(
            Duration::from_millis(10),
            versions.wait_for(&stream("thingy-1"), Version(1)),
        )
        .await;
        assert!(waited.is_err(), "nothing recorded thingy-1");
        assert_eq!(registered(&versions), (0, 0));
    }
}
