//! The repository: load, rehydrate, decide, append with an expected version, retry on conflict.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;
use uuid::Uuid;

use crate::aggregate::CommandHandler;
use crate::cache::AggregateCache;
use crate::event::{
    CommandId, EncodeError, InvalidAggregateName, InvalidStreamId, Metadata, NewEvent, Position,
    RecordedEvent, StreamId, Version,
};
use crate::retry::RetryPolicy;
use crate::snapshot::SnapshotPolicy;
use crate::store::{CommandRecord, EventStore, ExpectedVersion, StoreError, StreamTurn};

mod instruments;

use instruments::CommandMetrics;

/// An aggregate's state and the stream version it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state after applying every event up to `version`.
    pub state: A,
    /// The version of the last event applied (0 when none).
    pub version: Version,
}

/// A loaded aggregate and the version of the latest snapshot stored for it (0 when none).
struct Hydrated<A> {
    loaded: Loaded<A>,
    snapshot_version: Version,
    /// How many more commands keep a copy of the state while they append (see
    /// [`Aggregate::fork`](crate::Aggregate::fork)): set after a conflict, so that a contended
    /// stream catches up instead of loading again.
    contended: u32,
}

/// For how many commands after a conflict the repository keeps a copy of the state.
const CONTENDED_COMMANDS: u32 = 16;

/// What one command's attempts share: when it started (its retry budget runs from then), its
/// span, and the count of decisions made.
struct Attempts<'a> {
    started: Instant,
    span: &'a tracing::Span,
    count: &'a mut u32,
}

/// How many events the repository reads from a stream in one call.
const READ_BATCH: usize = 4096;

/// What the caller knows about a command beyond its fields: its id, and the process it belongs to.
///
/// Every event the command writes carries these in its [`Metadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandMetadata {
    /// The command's id. A command id already applied to the stream is not applied again: the
    /// earlier outcome is returned and nothing is written.
    pub command_id: Option<CommandId>,
    /// The business process this command belongs to. When `None`, a fresh id is made, shared by
    /// all events of this command.
    pub correlation_id: Option<Uuid>,
    /// The message (event or command) that caused this command.
    pub causation_id: Option<Uuid>,
    /// Free-form headers copied onto every event.
    pub headers: std::collections::BTreeMap<String, String>,
}

impl CommandMetadata {
    /// Metadata with only a command id, made and checked with [`CommandId::new`] where the id
    /// comes in: `CommandMetadata::with_command_id(CommandId::new(request_id)?)`.
    pub fn with_command_id(command_id: CommandId) -> Self {
        CommandMetadata {
            command_id: Some(command_id),
            ..Self::default()
        }
    }
}

/// What a successful [`Repository::execute`] did.
#[derive(Debug)]
pub struct ExecuteOutcome<E> {
    /// The aggregate's stream.
    pub stream: StreamId,
    /// The stream's version after the command: the version of its last event.
    pub version: Version,
    /// The global position of the last event written, `None` when nothing was written.
    /// Wait for a projection to reach it to read your own write.
    pub position: Option<Position>,
    /// The events the command wrote (the earlier ones, when `deduplicated`).
    pub events: Vec<E>,
    /// How many times the command was decided: 1, plus one for each conflict that made it decide
    /// again on fresher state. A command whose id was found applied before it was decided reports
    /// 0 (nothing was decided); one found applied by its append reports the attempts made.
    pub attempts: u32,
    /// Whether the command id had already been applied, so this outcome is the earlier one and
    /// nothing was written now.
    pub deduplicated: bool,
    /// Set when the events were written but the snapshot due after them could not be saved.
    /// The command still succeeded; the next snapshot will cover the state. (Boxed: it is rare,
    /// and an outcome small enough to move without a call to `memcpy` keeps every command
    /// cheaper.)
    pub snapshot_error: Option<Box<StoreError>>,
}

/// Why [`Repository::execute`] did not succeed. Nothing was written in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The aggregate refused the command. Never retried.
    #[error("command refused: {0}")]
    Domain(E),
    /// Every attempt met a concurrent write to the stream, until the attempts or the time
    /// budget of the [`RetryPolicy`] ran out.
    #[error(
        "stream `{stream}` kept changing: gave up after {attempts} attempts in {elapsed:?} \
         (last expected version {expected}, found {actual})"
    )]
    Conflict {
        /// The aggregate's stream.
        stream: StreamId,
        /// The version the last attempt decided on and expected.
        expected: Version,
        /// The version the store found instead.
        actual: Version,
        /// How many times the command was decided.
        attempts: u32,
        /// How long the command had run, from the call (the time budget counts from there too).
        elapsed: Duration,
    },
    /// The aggregate's `apply` panicked on an event the handler decided. Nothing was written.
    #[error(transparent)]
    Apply(#[from] ApplyPanicked),
    /// The aggregate id does not make a valid stream id.
    #[error(transparent)]
    InvalidStream(#[from] InvalidStreamId),
    /// An event the handler returned could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The store failed, or a stored event could not be decoded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E> ExecuteError<E> {
    /// The domain error, when the aggregate refused the command.
    pub fn domain(&self) -> Option<&E> {
        match self {
            ExecuteError::Domain(error) => Some(error),
            _ => None,
        }
    }
}

/// An aggregate's `apply` panicked. `apply` must not fail; when it does, the repository turns the
/// panic into this error instead of unwinding through the caller, and writes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyPanicked {
    /// The aggregate's Rust type name.
    pub aggregate: &'static str,
    /// The stream.
    pub stream: StreamId,
    /// The version of the event (the version it would have had, when it was not written).
    pub version: Version,
    /// The event's type name.
    pub event_type: String,
    /// Whether the event is stored (met while loading) or was only decided (nothing written).
    pub stored: bool,
    /// The panic's message.
    pub message: String,
}

impl fmt::Display for ApplyPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}::apply` panicked on event `{}` at version {} of stream `{}`",
            self.aggregate, self.event_type, self.version, self.stream
        )?;
        if !self.stored {
            f.write_str(" (decided, nothing written)")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ApplyPanicked {}

/// Why [`Repository::load`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The aggregate id does not make a valid stream id.
    #[error(transparent)]
    InvalidStream(#[from] InvalidStreamId),
    /// The store failed, or a stored event could not be decoded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The aggregate's `apply` panicked on a stored event.
    #[error(transparent)]
    Apply(#[from] ApplyPanicked),
}

impl<E> From<LoadError> for ExecuteError<E> {
    fn from(error: LoadError) -> Self {
        match error {
            LoadError::InvalidStream(error) => ExecuteError::InvalidStream(error),
            LoadError::Store(error) => ExecuteError::Store(error),
            LoadError::Apply(error) => ExecuteError::Apply(error),
        }
    }
}

/// Why reading events into a state stopped: the store's error, or a panicking `apply`.
enum ReadError {
    Store(StoreError),
    Apply(ApplyPanicked),
}

impl From<StoreError> for ReadError {
    fn from(error: StoreError) -> Self {
        ReadError::Store(error)
    }
}

impl From<ReadError> for LoadError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Store(error) => LoadError::Store(error),
            ReadError::Apply(error) => LoadError::Apply(error),
        }
    }
}

impl<E> From<ReadError> for ExecuteError<E> {
    fn from(error: ReadError) -> Self {
        LoadError::from(error).into()
    }
}

/// The text of a caught panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Configures a [`Repository`]; made by [`Repository::builder`].
pub struct RepositoryBuilder<A: CommandHandler, S> {
    store: S,
    services: Option<A::Services>,
    retry: RetryPolicy,
    snapshots: Option<SnapshotPolicy<A>>,
    cache_capacity: usize,
}

impl<A: CommandHandler, S: EventStore> RepositoryBuilder<A, S> {
    /// The services handed to every command handler.
    pub fn services(mut self, services: A::Services) -> Self {
        self.services = Some(services);
        self
    }

    /// How conflicts are retried (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Snapshot the state every `every` events (default: never).
    pub fn snapshot_every(mut self, every: u64) -> Self
    where
        A: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.snapshots = Some(SnapshotPolicy::every(every));
        self
    }

    /// Keep up to `capacity` aggregates in memory between commands (default: 1024; 0 disables).
    pub fn cache(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The repository. Needs services unless `A::Services` has a default.
    pub fn build(mut self) -> Repository<A, S>
    where
        A::Services: Default,
    {
        let services = self.services.take().unwrap_or_default();
        self.finish(services)
    }

    /// The repository, with the services given to [`RepositoryBuilder::services`] or these.
    pub fn build_with(mut self, services: A::Services) -> Repository<A, S> {
        let services = self.services.take().unwrap_or(services);
        self.finish(services)
    }

    fn finish(self, services: A::Services) -> Repository<A, S> {
        Repository {
            inner: Arc::new(Inner {
                store: self.store,
                services,
                retry: self.retry,
                snapshots: self.snapshots,
                cache: (self.cache_capacity > 0).then(|| AggregateCache::new(self.cache_capacity)),
                metrics: CommandMetrics::new(A::NAME),
                name: crate::event::validate_aggregate_name(A::NAME),
            }),
        }
    }
}

/// Loads aggregates, decides commands and appends their events with an expected version.
///
/// [`execute`](Repository::execute) loads the aggregate (latest snapshot, then only the later
/// events), decides, applies the decision to the state, and appends with `Exact(version)`. When
/// another writer got there first, it decides again on the fresh state: at once after the first
/// conflict, in an exclusive turn on the stream after the next ones (see [`RetryPolicy`]), until
/// the policy's attempts or time budget run out. Domain errors return at once. Two writers can
/// never both win: the store refuses the second append.
///
/// Cloning is cheap; clones share the store, the cache and the services.
pub struct Repository<A: CommandHandler, S> {
    inner: Arc<Inner<A, S>>,
}

struct Inner<A: CommandHandler, S> {
    store: S,
    services: A::Services,
    retry: RetryPolicy,
    snapshots: Option<SnapshotPolicy<A>>,
    cache: Option<AggregateCache<Hydrated<A>>>,
    metrics: CommandMetrics,
    /// Whether `A::NAME` makes stream ids, checked once.
    name: Result<(), InvalidAggregateName>,
}

impl<A: CommandHandler, S> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Repository {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<A: CommandHandler, S> fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &A::NAME)
            .field("retry", &self.inner.retry)
            .field("snapshots", &self.inner.snapshots)
            .field("cache", &self.inner.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl<A, S> Repository<A, S>
where
    A: CommandHandler,
    A::Event: Clone,
    S: EventStore,
{
    /// A repository with the default options: retries per [`RetryPolicy::default`], a cache of
    /// 1024 aggregates, no snapshots.
    pub fn new(store: S) -> Self
    where
        A::Services: Default,
    {
        Self::builder(store).build()
    }

    /// Starts configuring a repository over `store`.
    pub fn builder(store: S) -> RepositoryBuilder<A, S> {
        RepositoryBuilder {
            store,
            services: None,
            retry: RetryPolicy::default(),
            snapshots: None,
            cache_capacity: 1024,
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The stream of the aggregate with this id.
    pub fn stream_id(&self, id: impl fmt::Display) -> Result<StreamId, InvalidStreamId> {
        StreamId::for_aggregate(A::NAME, id)
    }

    /// Decides `command` on the aggregate `id` and appends its events. See [`Repository`].
    pub async fn execute(
        &self,
        id: impl fmt::Display,
        command: A::Command,
    ) -> Result<ExecuteOutcome<A::Event>, ExecuteError<A::Error>> {
        self.execute_with(id, command, CommandMetadata::default())
            .await
    }

    /// [`execute`](Repository::execute) with a command id, correlation and causation ids and
    /// headers.
    ///
    /// Runs in a `command.handle` span and records the command metrics (see
    /// [`telemetry`](crate::telemetry)).
    pub async fn execute_with(
        &self,
        id: impl fmt::Display,
        command: A::Command,
        metadata: CommandMetadata,
    ) -> Result<ExecuteOutcome<A::Event>, ExecuteError<A::Error>> {
        let started = Instant::now();
        let span = instruments::command_span::<A>(&command, &metadata);
        let mut attempts = 0;
        // Without a subscriber the command runs as it would uninstrumented, its future built
        // in place: a wrapper would move the whole future once more for nothing.
        let run = Attempts {
            started,
            span: &span,
            count: &mut attempts,
        };
        let result = if span.is_disabled() {
            self.run_command(id, command, metadata, run).await
        } else {
            let running = self.run_command(id, command, metadata, run);
            Box::pin(running).instrument(span.clone()).await
        };
        instruments::finished(&self.inner.metrics, &span, started, attempts, &result);
        result
    }

    /// [`execute_with`](Repository::execute_with) inside its span; `run.count` counts the
    /// decisions made.
    async fn run_command(
        &self,
        id: impl fmt::Display,
        command: A::Command,
        metadata: CommandMetadata,
        run: Attempts<'_>,
    ) -> Result<ExecuteOutcome<A::Event>, ExecuteError<A::Error>> {
        if let Err(invalid) = &self.inner.name {
            return Err(ExecuteError::InvalidStream(invalid.clone().into()));
        }
        // A cached aggregate's stream id is reused rather than made again for every command.
        let (stream, slot) = match &self.inner.cache {
            Some(cache) => {
                let (stream, slot) =
                    StreamId::with_aggregate_name(A::NAME, id, |name| cache.slot(name))?;
                (stream, Some(slot))
            }
            None => (self.stream_id(id)?, None),
        };
        instruments::stream(run.span, &stream);
        if let Some(command_id) = &metadata.command_id {
            if let Some(record) = self.inner.store.command_record(&stream, command_id).await? {
                return self.earlier_outcome(record, 0).await;
            }
        }
        let Some(slot) = slot else {
            let mut hydrated = Some(self.hydrate(&stream).await?);
            return self
                .decide_and_append(&stream, &mut hydrated, command, metadata, true, run)
                .await;
        };
        // Held across the store calls on purpose: commands for one aggregate in this process take
        // turns on its cached state instead of racing each other into conflicts.
        let mut cached = slot.lock().await;
        // A cached state is decided on without reading the stream first: if another node wrote
        // meanwhile, the append's expected version refuses the decision, and a refusal or no-op
        // decided on it is confirmed against the stream before it is returned.
        let fresh = cached.is_none();
        if fresh {
            *cached = Some(self.hydrate(&stream).await?);
        }
        // Whatever happens, the slot keeps a state that holds exactly the events read or written
        // so far, or none (the next command loads afresh).
        self.decide_and_append(&stream, &mut cached, command, metadata, fresh, run)
            .await
    }

    /// The current state of the aggregate `id` (the default state at version 0 when it has no
    /// events).
    pub async fn load(&self, id: impl fmt::Display) -> Result<Loaded<A>, LoadError> {
        let stream = self.stream_id(id)?;
        self.load_stream(&stream).await
    }

    /// The state of the aggregate `id` as it was at `version`: after its first `version` events.
    /// A version past the end gives the current state.
    pub async fn load_at(
        &self,
        id: impl fmt::Display,
        version: Version,
    ) -> Result<Loaded<A>, LoadError> {
        let stream = self.stream_id(id)?;
        let mut hydrated = self.snapshot_state(&stream, Some(version)).await?;
        self.read_into(&stream, None, &mut hydrated.loaded, Some(version))
            .await?;
        Ok(hydrated.loaded)
    }

    /// Drops the aggregate `id` from the cache, if it is there.
    pub fn evict(&self, id: impl fmt::Display) -> Result<(), InvalidStreamId> {
        let stream = self.stream_id(id)?;
        if let Some(cache) = &self.inner.cache {
            cache.remove(&stream);
        }
        Ok(())
    }

    async fn load_stream(&self, stream: &StreamId) -> Result<Loaded<A>, LoadError> {
        Ok(self.hydrate(stream).await?.loaded)
    }

    /// The current state: the latest usable snapshot, then the events after it.
    async fn hydrate(&self, stream: &StreamId) -> Result<Hydrated<A>, LoadError> {
        let mut hydrated = self.snapshot_state(stream, None).await?;
        self.read_into(stream, None, &mut hydrated.loaded, None)
            .await?;
        Ok(hydrated)
    }

    /// The latest usable snapshot (at or before `at_most`), or the initial state.
    ///
    /// A snapshot of another schema version, or one that no longer decodes, counts as none, so
    /// the policy writes a fresh one once enough events have been applied.
    async fn snapshot_state(
        &self,
        stream: &StreamId,
        at_most: Option<Version>,
    ) -> Result<Hydrated<A>, StoreError> {
        let initial = Hydrated {
            loaded: Loaded {
                state: A::default(),
                version: Version::INITIAL,
            },
            snapshot_version: Version::INITIAL,
            contended: 0,
        };
        let Some(policy) = &self.inner.snapshots else {
            return Ok(initial);
        };
        let Some(snapshot) = self
            .inner
            .store
            .load_snapshot(stream, A::SNAPSHOT_VERSION)
            .await?
        else {
            return Ok(initial);
        };
        if at_most.is_some_and(|limit| snapshot.version > limit) {
            return Ok(initial);
        }
        // A snapshot that no longer decodes is ignored: the events are the truth.
        Ok(policy.decode(&snapshot).map_or(initial, |state| Hydrated {
            loaded: Loaded {
                state,
                version: snapshot.version,
            },
            snapshot_version: snapshot.version,
            contended: 0,
        }))
    }

    /// Applies the events after `loaded.version` (up to `until`, when given), read from the store
    /// or, when one is held, through the turn. Every event must carry the next version: a stream
    /// with a hole is refused, not folded without the missing event. A panicking `apply` stops
    /// the read with [`ApplyPanicked`]; `loaded` then holds a state that must be thrown away.
    async fn read_into(
        &self,
        stream: &StreamId,
        mut turn: Option<&mut Box<dyn StreamTurn>>,
        loaded: &mut Loaded<A>,
        until: Option<Version>,
    ) -> Result<(), ReadError> {
        loop {
            let remaining = until.map_or(usize::MAX, |until| {
                usize::try_from(until.0.saturating_sub(loaded.version.0)).unwrap_or(usize::MAX)
            });
            if remaining == 0 {
                return Ok(());
            }
            let limit = remaining.min(READ_BATCH);
            let from = loaded.version.next();
            let mut panicked = None;
            let mut apply = |recorded: crate::event::EventData<'_>| {
                let expected = loaded.version.next();
                if recorded.version != expected {
                    return Err(StoreError::MissingVersion {
                        stream: stream.clone(),
                        missing: expected,
                        found: recorded.version,
                    });
                }
                let event = recorded.decode::<A::Event>()?;
                let state = &mut loaded.state;
                if let Err(payload) =
                    std::panic::catch_unwind(AssertUnwindSafe(|| state.apply(event)))
                {
                    panicked = Some(ApplyPanicked {
                        aggregate: std::any::type_name::<A>(),
                        stream: stream.clone(),
                        version: recorded.version,
                        event_type: recorded.event_type.to_owned(),
                        stored: true,
                        message: panic_message(&*payload),
                    });
                    // Stops the read; replaced by `panicked` below.
                    return Err(StoreError::backend("apply panicked"));
                }
                loaded.version = recorded.version;
                Ok(())
            };
            let read = match turn.as_deref_mut() {
                Some(turn) => turn.visit_stream_data(from, limit, &mut apply).await,
                None => {
                    self.inner
                        .store
                        .visit_stream_data(stream, from, limit, &mut apply)
                        .await
                }
            };
            if let Some(panicked) = panicked {
                return Err(ReadError::Apply(panicked));
            }
            if read? < limit {
                return Ok(());
            }
        }
    }

    /// Applies decided events to the state, turning a panic into [`ApplyPanicked`] (the state is
    /// then unusable and must be thrown away).
    fn apply_decided(
        stream: &StreamId,
        loaded: &mut Loaded<A>,
        events: &[A::Event],
        new_events: &[NewEvent],
    ) -> Result<(), ApplyPanicked> {
        for (offset, (event, new_event)) in events.iter().zip(new_events).enumerate() {
            let state = &mut loaded.state;
            let event = event.clone();
            if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| state.apply(event)))
            {
                return Err(ApplyPanicked {
                    aggregate: std::any::type_name::<A>(),
                    stream: stream.clone(),
                    version: Version(loaded.version.0 + 1 + offset as u64),
                    event_type: new_event.event_type.to_string(),
                    stored: false,
                    message: panic_message(&*payload),
                });
            }
        }
        Ok(())
    }

    /// Decides `command` on the state in `slot` and appends the events, retrying conflicts as
    /// [`RetryPolicy`] describes. `fresh` says whether the state was just read from the store;
    /// when it was not (a cached state), a domain error or a no-op is only returned once a
    /// catch-up read has found nothing new.
    ///
    /// The decided events are applied to the state before they are appended, so an `apply` that
    /// panics on them writes nothing. A state that holds events the store did not take (the
    /// append failed) goes back to the copy kept on a contended stream
    /// ([`Aggregate::fork`](crate::Aggregate::fork)), or is thrown away like one a panic left
    /// half-changed: `slot` is then left empty, or loaded again before the next attempt.
    async fn decide_and_append(
        &self,
        stream: &StreamId,
        slot: &mut Option<Hydrated<A>>,
        command: A::Command,
        metadata: CommandMetadata,
        mut fresh: bool,
        run: Attempts<'_>,
    ) -> Result<ExecuteOutcome<A::Event>, ExecuteError<A::Error>> {
        let inner = &*self.inner;
        let policy = inner.retry;
        let Attempts {
            started,
            span,
            count: attempt,
        } = run;
        let deadline = policy.deadline.map(|budget| started + budget);
        let correlation_id = metadata
            .correlation_id
            .unwrap_or_else(crate::id::random_uuid);
        let max_attempts = policy.max_attempts.max(1);
        let turn_after = policy.turn_after.map(|after| after.max(1));
        let mut turn: Option<Box<dyn StreamTurn>> = None;
        let mut store_has_turns = true;
        let mut conflicts = 0;
        loop {
            let Some(hydrated) = slot.as_mut() else {
                *slot = Some(self.hydrate(stream).await?);
                fresh = true;
                continue;
            };
            let loaded = &mut hydrated.loaded;
            *attempt += 1;
            instruments::deciding(span, loaded.version);
            let decision = loaded.state.handle(command.clone(), &inner.services).await;
            let refused_or_no_op = decision.as_ref().map_or(true, Vec::is_empty);
            if refused_or_no_op && !fresh {
                fresh = true;
                let seen = loaded.version;
                if let Err(error) = self.read_into(stream, turn.as_mut(), loaded, None).await {
                    *slot = None;
                    return Err(error.into());
                }
                if loaded.version != seen {
                    *attempt -= 1;
                    continue;
                }
            }
            if refused_or_no_op {
                if let Some(command_id) = &metadata.command_id {
                    // The id was not applied when it was checked before the wait for the cached
                    // state, but a concurrent request with the same id (a client's retry) may
                    // have written meanwhile, and this decision is made on its events: its
                    // outcome is this one's, as when the id is found before deciding.
                    if let Some(record) = inner.store.command_record(stream, command_id).await? {
                        return self.earlier_outcome(record, *attempt).await;
                    }
                }
            }
            let events = decision.map_err(ExecuteError::Domain)?;
            if events.is_empty() {
                return Ok(ExecuteOutcome {
                    stream: stream.clone(),
                    version: loaded.version,
                    position: None,
                    events,
                    attempts: *attempt,
                    deduplicated: false,
                    snapshot_error: None,
                });
            }
            let event_metadata = Metadata {
                correlation_id: Some(correlation_id),
                causation_id: metadata.causation_id,
                command_id: metadata.command_id.clone(),
                timestamp: std::time::SystemTime::now(),
                headers: metadata.headers.clone(),
            };
            let new_events = events
                .iter()
                .map(|event| NewEvent::encode(event, event_metadata.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            let expected_version = loaded.version;
            // On a contended stream, the state before the decision, to go back to on a conflict.
            let before = if conflicts > 0 || hydrated.contended > 0 {
                loaded.state.fork()
            } else {
                None
            };
            if let Err(panicked) = Self::apply_decided(stream, loaded, &events, &new_events) {
                *slot = None;
                return Err(ExecuteError::Apply(panicked));
            }
            let expected = ExpectedVersion::Exact(expected_version);
            let appended = match turn.take() {
                Some(turn) => turn.append(expected, new_events).await,
                None => inner.store.append(stream, expected, new_events).await,
            };
            let receipt = match appended {
                Ok(receipt) => receipt,
                Err(error) => {
                    // The state holds events the store did not take: back to the copy, or
                    // thrown away.
                    match before {
                        Some(state) => {
                            loaded.state = state;
                            hydrated.contended = CONTENDED_COMMANDS;
                        }
                        None => *slot = None,
                    }
                    match error {
                        StoreError::Conflict { actual, .. } => {
                            conflicts += 1;
                            let out_of_time = deadline.is_some_and(|end| Instant::now() >= end);
                            if *attempt >= max_attempts || out_of_time {
                                return Err(ExecuteError::Conflict {
                                    stream: stream.clone(),
                                    expected: expected_version,
                                    actual,
                                    attempts: *attempt,
                                    elapsed: started.elapsed(),
                                });
                            }
                            instruments::retrying(
                                &inner.metrics,
                                *attempt,
                                expected_version,
                                actual,
                            );
                            let reloaded = slot.is_none();
                            if reloaded {
                                // Loaded before a turn is waited for, so that the turn only
                                // catches up on what was written meanwhile.
                                let mut hydrated = self.hydrate(stream).await?;
                                hydrated.contended = CONTENDED_COMMANDS;
                                *slot = Some(hydrated);
                            }
                            let wants_turn = turn_after.is_some_and(|after| conflicts >= after);
                            if wants_turn && store_has_turns {
                                match self.take_turn(stream, deadline).await {
                                    Ok(Some(taken)) => turn = Some(taken),
                                    Ok(None) => store_has_turns = false,
                                    // Nothing was written while waiting: the next attempt runs
                                    // without a turn, and meets the failure again if it lasts.
                                    Err(_) => {}
                                }
                            }
                            if turn.is_none() && conflicts > 1 {
                                let mut delay = policy.delay_after(conflicts - 1);
                                if let Some(end) = deadline {
                                    delay =
                                        delay.min(end.saturating_duration_since(Instant::now()));
                                }
                                tokio::time::sleep(delay).await;
                            } else if turn.is_none() {
                                // The first conflict is retried at once.
                                tokio::task::yield_now().await;
                            }
                            // What was written since the copy, or since the load when a turn
                            // or a backoff came in between.
                            let waited = turn.is_some() || conflicts > 1;
                            if let Some(hydrated) = slot.as_mut().filter(|_| !reloaded || waited) {
                                let read = self
                                    .read_into(stream, turn.as_mut(), &mut hydrated.loaded, None)
                                    .await;
                                if let Err(error) = read {
                                    *slot = None;
                                    return Err(error.into());
                                }
                            }
                            fresh = true;
                            continue;
                        }
                        StoreError::DuplicateCommand { earlier } => {
                            return self.earlier_outcome(earlier, *attempt).await;
                        }
                        error => return Err(ExecuteError::Store(error)),
                    }
                }
            };
            hydrated.contended = hydrated.contended.saturating_sub(1);
            loaded.version = receipt.version;
            let snapshot_error = self.snapshot_if_due(stream, hydrated).await.map(Box::new);
            return Ok(ExecuteOutcome {
                stream: stream.clone(),
                version: receipt.version,
                position: receipt.position,
                events,
                attempts: *attempt,
                deduplicated: false,
                snapshot_error,
            });
        }
    }

    /// Waits for a turn on `stream`, no longer than the deadline allows. `None` when the store
    /// has no turns, or when the deadline passed first (the next attempt then runs without one).
    async fn take_turn(
        &self,
        stream: &StreamId,
        deadline: Option<Instant>,
    ) -> Result<Option<Box<dyn StreamTurn>>, StoreError> {
        let taking = self.inner.store.take_turn(stream);
        match deadline {
            None => taking.await,
            Some(end) => {
                let end = tokio::time::Instant::from_std(end);
                match tokio::time::timeout_at(end, taking).await {
                    Ok(turn) => turn,
                    Err(_elapsed) => Ok(None),
                }
            }
        }
    }

    /// Saves a snapshot when the policy's number of events has passed since the last one.
    async fn snapshot_if_due(
        &self,
        stream: &StreamId,
        hydrated: &mut Hydrated<A>,
    ) -> Option<StoreError> {
        let policy = self.inner.snapshots.as_ref()?;
        let loaded = &hydrated.loaded;
        if !policy.is_due(hydrated.snapshot_version, loaded.version) {
            return None;
        }
        let snapshot = match policy.encode(&loaded.state, loaded.version) {
            Ok(snapshot) => snapshot,
            Err(error) => return Some(StoreError::backend(error)),
        };
        let version = snapshot.version;
        match self.inner.store.save_snapshot(stream, snapshot).await {
            Ok(()) => {
                hydrated.snapshot_version = version;
                None
            }
            Err(error) => Some(error),
        }
    }

    /// The outcome of the earlier application of a command id, read back from the stream.
    async fn earlier_outcome(
        &self,
        record: CommandRecord,
        attempts: u32,
    ) -> Result<ExecuteOutcome<A::Event>, ExecuteError<A::Error>> {
        let count = record.version.0.saturating_sub(record.first_version.0) + 1;
        let limit = usize::try_from(count).unwrap_or(usize::MAX);
        let recorded = self
            .inner
            .store
            .read_stream(&record.stream, record.first_version, limit)
            .await?;
        let events = recorded
            .iter()
            .map(RecordedEvent::decode::<A::Event>)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ExecuteOutcome {
            stream: record.stream,
            version: record.version,
            position: Some(record.position),
            events,
            attempts,
            deduplicated: true,
            snapshot_error: None,
        })
    }
}
