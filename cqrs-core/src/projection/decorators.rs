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
//!   version has been applied, then proceeds; one still waiting after a timeout is given up on
//!   and recorded.
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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

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

    /// Holds back deliveries until the entities they need are applied, for at most 30 seconds
    /// unless [`timeout`](Dependencies::timeout) says otherwise; see [`Dependencies`]. Must be
    /// used within a tokio runtime.
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

/// A delivery that [`Dependencies`] held back and did not apply: it timed out waiting, or the
/// inner handler failed on it once released.
#[derive(Debug, Clone)]
pub struct DeferredFailure {
    /// The delivery's stream.
    pub stream: StreamId,
    /// The delivery's version.
    pub version: Version,
    /// Why it was not applied.
    pub reason: DeferredFailureReason,
}

/// Why a delivery held back by [`Dependencies`] was not applied.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DeferredFailureReason {
    /// Its needs were not all met within the [timeout](Dependencies::timeout): it was given up
    /// on and never reached the inner handler.
    TimedOut {
        /// The stream it was still waiting for.
        needed_stream: StreamId,
        /// The version of `needed_stream` it was waiting for.
        needed_version: Version,
        /// How long it had been held when it was given up on.
        waited: Duration,
    },
    /// Its needs were met, and the inner handler returned this error.
    Failed {
        /// What the inner handler said.
        error: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl fmt::Display for DeferredFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (stream, version) = (&self.stream, self.version);
        match &self.reason {
            DeferredFailureReason::TimedOut {
                needed_stream,
                needed_version,
                waited,
            } => write!(
                f,
                "version {version} of stream `{stream}` was given up on after waiting {waited:?} \
                 for version {needed_version} of stream `{needed_stream}`"
            ),
            DeferredFailureReason::Failed { error } => write!(
                f,
                "version {version} of stream `{stream}` failed once released: {error}"
            ),
        }
    }
}

/// A delivery that [`Dependencies`] is holding back, as [`waiting`](Dependencies::waiting)
/// lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingDelivery {
    /// The delivery's stream.
    pub stream: StreamId,
    /// The delivery's version.
    pub version: Version,
    /// The stream it waits for now (the first of its needs not yet met).
    pub needed_stream: StreamId,
    /// The version of `needed_stream` it waits for.
    pub needed_version: Version,
    /// When it was first held back; it is given up on at `since` plus the timeout.
    pub since: Instant,
}

/// How long [`Dependencies`] holds a delivery unless told otherwise.
const DEFAULT_DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(30);

/// Holds back a delivery until the entities it needs have been applied, then passes it on; gives
/// up on one whose needs are not met within a timeout.
///
/// `needs` tells, for a delivery, which streams must be applied up to which versions first
/// (e.g. "widget-1 v2 needs thingy-7 v1"). A delivery whose needs are met goes straight to the
/// inner handler; another is answered [`Handled::Deferred`] and listed in
/// [`waiting`](Dependencies::waiting), and a task waits for [`AppliedVersions`] to record what
/// it needs, checks its needs again, and passes it on once all are met.
///
/// A held delivery whose needs are not all met within the [timeout](Dependencies::timeout)
/// (30 seconds unless set; counted from when it was first held back) is dropped without
/// reaching the inner handler, and its wait is withdrawn from [`AppliedVersions`]. It is
/// recorded in [`failures`](Dependencies::failures) as
/// [`TimedOut`](DeferredFailureReason::TimedOut), with what it was still waiting for, as is a
/// released delivery that the inner handler then fails on
/// ([`Failed`](DeferredFailureReason::Failed)): nothing is dropped unseen. The record keeps the
/// stream and version, not the event; redelivering it is up to the source.
pub struct Dependencies<H, E, F> {
    shared: Arc<DependencyState<H, F>>,
    timeout: Duration,
    _event: std::marker::PhantomData<fn(E)>,
}

struct DependencyState<H, F> {
    inner: H,
    versions: AppliedVersions,
    needs: F,
    // One lock for both, so a delivery given up on leaves `waiting` and enters `failures` in
    // one step: a reader never sees it in neither or in both.
    ledger: Mutex<DependencyLedger>,
}

#[derive(Default)]
struct DependencyLedger {
    next_hold: u64,
    // Keyed by a counter, so listed in the order they were held back.
    waiting: BTreeMap<u64, WaitingDelivery>,
    failures: Vec<DeferredFailure>,
}

/// The first need of a delivery not met yet, and the wait registered for it.
struct UnmetNeed {
    stream: StreamId,
    version: Version,
    registration: Registration,
}

impl<H, F> DependencyState<H, F> {
    fn first_unmet<E>(&self, delivery: &Delivery<E>) -> Option<UnmetNeed>
    where
        F: Fn(&Delivery<E>) -> Vec<(StreamId, Version)>,
    {
        (self.needs)(delivery)
            .into_iter()
            .find_map(|(stream, version)| {
                let registration = self.versions.register(&stream, version)?;
                Some(UnmetNeed {
                    stream,
                    version,
                    registration,
                })
            })
    }
}

impl<H, E, F> Dependencies<H, E, F>
where
    E: Send + 'static,
    H: DeliveryHandler<E>,
    F: Fn(&Delivery<E>) -> Vec<(StreamId, Version)> + Send + Sync + 'static,
{
    /// Holds deliveries for `inner` until what `needs` names is applied in `versions`, for at
    /// most 30 seconds (see [`timeout`](Dependencies::timeout)).
    pub fn new(inner: H, versions: AppliedVersions, needs: F) -> Self {
        Dependencies {
            shared: Arc::new(DependencyState {
                inner,
                versions,
                needs,
                ledger: Mutex::new(DependencyLedger::default()),
            }),
            timeout: DEFAULT_DEPENDENCY_TIMEOUT,
            _event: std::marker::PhantomData,
        }
    }

    /// Gives up on a held delivery whose needs are not met `timeout` after it was held back
    /// (default 30 seconds). Applies to deliveries held from then on. A timeout too long to
    /// add to the current time (such as [`Duration::MAX`]) means never giving up.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Held deliveries that were not applied: given up on after the timeout, or failed by the
    /// inner handler once released. Oldest first.
    pub fn failures(&self) -> Vec<DeferredFailure> {
        lock(&self.shared.ledger).failures.clone()
    }

    /// The deliveries held back now, in the order they were held back, each with what it
    /// waits for.
    pub fn waiting(&self) -> Vec<WaitingDelivery> {
        lock(&self.shared.ledger)
            .waiting
            .values()
            .cloned()
            .collect()
    }

    /// Waits for `delivery`'s needs, listed in the ledger as `hold`, then passes it on; or gives
    /// up at `deadline`.
    async fn hold(
        shared: Arc<DependencyState<H, F>>,
        delivery: Delivery<E>,
        hold: u64,
        mut need: UnmetNeed,
        since: tokio::time::Instant,
        deadline: Option<tokio::time::Instant>,
    ) {
        loop {
            let released = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, need.registration.released())
                    .await
                    .is_ok(),
                None => {
                    need.registration.released().await;
                    true
                }
            };
            // `record` may have released it between the time-out and now; withdrawing tells.
            if !released && need.registration.withdraw() {
                let mut ledger = lock(&shared.ledger);
                ledger.waiting.remove(&hold);
                ledger.failures.push(DeferredFailure {
                    stream: delivery.stream,
                    version: delivery.version,
                    reason: DeferredFailureReason::TimedOut {
                        needed_stream: need.stream,
                        needed_version: need.version,
                        waited: since.elapsed(),
                    },
                });
                return;
            }
            // Checked again from the top: it may need more than the version released.
            match shared.first_unmet(&delivery) {
                Some(next) => {
                    if let Some(waiting) = lock(&shared.ledger).waiting.get_mut(&hold) {
                        waiting.needed_stream = next.stream.clone();
                        waiting.needed_version = next.version;
                    }
                    need = next;
                }
                None => break,
            }
        }
        lock(&shared.ledger).waiting.remove(&hold);
        let (stream, version) = (delivery.stream.clone(), delivery.version);
        if let Err(error) = shared.inner.handle(delivery).await {
            lock(&shared.ledger).failures.push(DeferredFailure {
                stream,
                version,
                reason: DeferredFailureReason::Failed {
                    error: Arc::from(error),
                },
            });
        }
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
        let Some(need) = self.shared.first_unmet(&delivery) else {
            return self.shared.inner.handle(delivery).await;
        };
        let since = tokio::time::Instant::now();
        let deadline = since.checked_add(self.timeout);
        let hold = {
            let mut ledger = lock(&self.shared.ledger);
            let hold = ledger.next_hold;
            ledger.next_hold = hold.wrapping_add(1);
            ledger.waiting.insert(
                hold,
                WaitingDelivery {
                    stream: delivery.stream.clone(),
                    version: delivery.version,
                    needed_stream: need.stream.clone(),
                    needed_version: need.version,
                    since: since.into_std(),
                },
            );
            hold
        };
        tokio::spawn(Self::hold(
            self.shared.clone(),
            delivery,
            hold,
            need,
            since,
            deadline,
        ));
        Ok(Handled::Deferred)
    }
}

#[cfg(test)]
mod tests {
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

    struct Accept;

    #[async_trait::async_trait]
    impl DeliveryHandler<()> for Accept {
        async fn handle(&self, _: Delivery<()>) -> Result<Handled, HandlerError> {
            Ok(Handled::Applied)
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_delivery_given_up_on_withdraws_its_wait() {
        let versions = AppliedVersions::new();
        let thingy = stream("thingy-1");
        let needs = move |_: &Delivery<()>| vec![(thingy.clone(), Version(1))];
        let handler = Accept
            .with_dependencies(&versions, needs)
            .timeout(Duration::from_millis(20));
        let outcome = handler
            .handle(Delivery::new(stream("widget-1"), Version(1), ()))
            .await
            .expect("handles");
        assert_eq!(outcome, Handled::Deferred);
        assert_eq!(registered(&versions), (1, 1));

        tokio::time::timeout(Duration::from_secs(10), async {
            while handler.failures().is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("given up on in time");
        assert_eq!(registered(&versions), (0, 0));
    }
}
