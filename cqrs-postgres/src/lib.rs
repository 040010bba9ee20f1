//! A PostgreSQL [`EventStore`]: optimistic concurrency from a unique (stream, version) key, a
//! gap-free global order that readers follow without ever skipping a late commit, and
//! LISTEN/NOTIFY to wake waiting readers.
//!
//! ```no_run
//! use cqrs_core::{EventId, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
//! use cqrs_postgres::PostgresStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::new("host=/var/run/postgresql user=app dbname=app")?;
//! store.migrate().await?;
//!
//! let stream = StreamId::for_aggregate("show", 42)?;
//! let scheduled = NewEvent {
//!     event_id: EventId::new(),
//!     event_type: "Scheduled".into(),
//!     schema_version: 1,
//!     payload: r#"{"capacity":100}"#.into(),
//!     metadata: Metadata::default(),
//! };
//! let receipt = store
//!     .append(&stream, ExpectedVersion::NoStream, vec![scheduled])
//!     .await?;
//! let events = store.read_all(cqrs_core::Position::START, 100).await?;
//! assert_eq!(events.last().map(|event| event.position), receipt.position);
//! # Ok(())
//! # }
//! ```
//!
//! # Schema
//!
//! [`PostgresStore::migrate`] applies the migrations the crate ships (see [`migrate::MIGRATIONS`]),
//! each once, recorded in `cqrs_schema_migrations`: the tables `cqrs_events` (primary key
//! (stream, version)), `cqrs_commands` (primary key (stream, command id)) and `cqrs_snapshots`
//! (one row per stream), and the functions `cqrs_append_batch_with_turns`, `cqrs_turn_free`,
//! `cqrs_sequence` and `cqrs_settle` (and `cqrs_append` and `cqrs_append_batch`, which this
//! version no longer calls, kept for nodes of earlier versions during a rollout); for
//! processors, `cqrs_projections` (one row per projection or saga: its checkpoint and the key
//! of its leader lock), `cqrs_dead_letters` and `cqrs_saga_instances`. A later table is one
//! more migration. Payloads are `bytea` and headers `json`
//! (not `jsonb`), so both come back exactly as written; timestamps keep microseconds. Every value
//! travels as a bind parameter: no stream id, type or header is ever part of SQL text.
//!
//! An append checks the command id, then the stream's version, then inserts the events and the
//! command record, all in one statement (one transaction). Appends that arrive while another is
//! on its way go together: each store sends one batch at a time, with every append waiting for it
//! (up to 48, one per stream), as one statement: one round trip, one transaction and one WAL flush
//! for the whole batch. A lone append at an exact version without a command id (what a
//! repository sends when nothing else is waiting) is a plain `INSERT ... SELECT`: the primary key
//! and the existence of the expected version check the version, with nothing read first. Every
//! statement is plain SQL (a PL/pgSQL function costs about as much again in server time as the
//! insert itself). When a statement meets a unique violation, or a lone append finds that its
//! expected version is not the stream's, nothing was written and the store sends the batch again
//! through `cqrs_append_batch_with_turns`, which inserts each append in a subtransaction of its own, so that
//! one append's failure leaves the others alone; after the server refused one append's data the
//! store sends each append again on its own. Two writers racing for the same version meet on the primary key; the loser's unique
//! violation is mapped to [`StoreError::DuplicateCommand`] when the winner applied the same
//! command id, to [`StoreError::Conflict`] with the version found otherwise, and retried when the
//! expectation (`Any`, `StreamExists`) still holds.
//!
//! # The global order
//!
//! The contract wants positions that are dense (1, 2, 3, ... with no hole, even when an append
//! rolls back) and that a reader can follow with `read_all(after)` without ever skipping an event
//! whose transaction commits late. A `bigserial` drawn at insert time gives neither: numbers are
//! drawn in insert order but become visible in commit order, so a reader that has seen 12 moves
//! past 11 for good if 11 commits later; and a rollback leaves a hole. commanded/eventstore takes
//! a row lock on one counter for the whole transaction, which is correct but makes every commit
//! (and its WAL flush) wait for the previous one: no group commit. Emmett and Marten keep the
//! sparse number and make readers wait (for `pg_snapshot_xmin`, or for gaps to fill); neither
//! gives dense positions, and the xmin wait is cluster-wide.
//!
//! This store numbers events *after* they commit, under one transaction-scoped advisory lock
//! (the sequencer lock), in increasing order from the head:
//!
//! * A batch that finds no committed event waiting for a number and gets the lock with
//!   `pg_try_advisory_xact_lock` (it never waits for it) numbers its events after the head, in
//!   its own transaction; the lock is released after its commit is visible. With one node this is always the case
//!   (the store sends one batch at a time): one transaction, one WAL flush per batch.
//! * A batch that finds the lock taken (another node's), or events waiting for a number, inserts
//!   its events unnumbered and commits without waiting for anyone, so its WAL flush joins the
//!   others' (group commit). Then each of its appends calls `cqrs_settle`, which waits for the
//!   lock and, with a snapshot taken after it got it, numbers every pending event at once
//!   (usually several batches) in the order of the ids their appends drew, unless another holder
//!   already did.
//!
//! Why a reader never skips: a number is only assigned by the lock holder, and the lock is
//! released only after its holder's commit is visible (PostgreSQL releases locks after a commit
//! becomes visible), so the numbers visible at any moment are exactly 1..=h, a prefix with no
//! hole. A batch's statement reads the head with the snapshot it took when it started, before
//! it got the lock: when another holder committed numbers in between, that head is behind, the
//! first number the batch writes is already taken by a committed row, and the unique index on
//! the position makes the statement fail before anything is written (the store then sends the
//! batch through `cqrs_append_batch_with_turns`, whose statements each take a fresh snapshot
//! after the lock).
//! So a number is never assigned twice nor below a number already visible, and reading
//! `position > after` in order reaches every event. An append's events are numbered together in
//! one statement, so a reader never sees part of one. Every stream stays in version order: a
//! batch numbers its own events only when no committed event waits for a number, and every
//! earlier version of a stream it appends to was committed when it read the version; pending
//! appends are numbered in the order of an id each drew after it read its stream's version.
//! Aborted appends (a whole batch, or an append that met a unique violation) never get a number,
//! so there are no holes.
//!
//! What it costs: the numbering transactions run one at a time, each holding the lock through
//! its commit; on one node they are the batches themselves, so numbering is free and batches grow
//! with the load. Across nodes, the other nodes' batches commit in parallel and are numbered in
//! batches; an append that does not hold the lock pays one more round trip, and the numbering one
//! more (shared) WAL flush. An appender that dies between its commit and `cqrs_settle` leaves its
//! events unnumbered (invisible to `read_all`) until the next append or the next fallback check of
//! a waiting reader numbers them.
//!
//! # No deadlocks
//!
//! Appends wait for each other in three ways only: an insert waits for another transaction's
//! uncommitted row of the same (stream, version) or command id; an insert of a stale version
//! waits for a transaction that is numbering that row (`cqrs_settle`); and numbering waits for
//! the sequencer lock. The first kind cannot form a cycle, since every batch inserts its appends
//! in stream order (events first, then command records). The second cannot either, since the
//! transactions that number pending rows insert nothing and wait for the sequencer lock before
//! they touch any row. Until version 4 of the schema, a batch that fell back to
//! `cqrs_append_batch` numbered other appends' pending rows and then inserted its own, which let
//! it and another node's stale writer each wait for the other ("deadlock detected", ShareLock on
//! transaction); it now numbers only its own events, and only when nothing is pending. Should
//! the server still roll a batch back as a deadlock victim or for a serialization failure
//! (SQLSTATE 40P01, 40001), nothing was written and the store sends it again, so neither reaches
//! a caller.
//!
//! # Turns on hot streams
//!
//! [`take_turn`](EventStore::take_turn) opens a transaction on a pooled connection and waits for
//! the stream's turn lock (a transaction-scoped advisory lock keyed by the stream) in exclusive
//! mode; the turn's reads and its one append run in that transaction, which commits with the
//! append. Every append statement first *tries* the same lock in shared mode: when a turn holds
//! it, the append writes nothing and waits until the turn is over, then is sent again (it then
//! usually meets a conflict and decides again). So nothing gets between a turn's read and its
//! append. A turn waits for its lock before it reads or writes anything, and the shared tries
//! never wait, so turns add no cycle. Each store lets at most one turn per stream (per group of
//! streams, by hash) wait on the server, so waiting turns hold few connections, and a turn needs
//! no connection but its own. The repository takes turns after repeated conflicts (see
//! [`RetryPolicy`](cqrs_core::RetryPolicy)).
//!
//! # Connections
//!
//! A call waits at most [`PoolOptions::wait_timeout`] for a pooled connection and at most
//! [`PoolOptions::connect_timeout`] for a new one, then fails with [`StoreError::Timeout`].
//! Every other failure is [`StoreError::Backend`] around a [`DatabaseError`], whose message is
//! the server's SQLSTATE, message, detail and hint, or the driver's cause.
//!
//! # Waiting for events
//!
//! Every numbering transaction sends `NOTIFY cqrs_events` with the new head. Each store opens one
//! listener connection on the first [`wait_for_events`](EventStore::wait_for_events) and feeds a
//! [`tokio::sync::watch`] channel, so waiters wake without polling; the listener reconnects after
//! a failure and then publishes the head it reads. As a safety net only (for the reconnection
//! window and the dead-appender case above), a waiter re-checks the head every
//! [`FALLBACK_CHECK`].
//!
//! # Telemetry
//!
//! Each append and each read (of a stream or of the global log) runs in a DEBUG span,
//! `store.append` or `store.read`, with `db.system.name = "postgresql"` and the fields that
//! [`cqrs_core::telemetry`] lists. An append's `cqrs.batch.appends` is the number of appends
//! its batch sent together (1 for a lone append), and each batch records that number once in the
//! `cqrs_append_batch_size` histogram (label `store = "postgres"`). A batch sent again after a
//! deadlock or a serialization failure, a batch whose appends go again one by one after the
//! server refused one's data, and an append sent again after a unique violation or a turn are
//! DEBUG events in the spans of the appends concerned. An append in a turn is not batched: its
//! span has no `cqrs.batch.appends`.
//!
//! # Projections and sagas
//!
//! Projections and sagas are *processors*, run by cqrs-core's one
//! [`ProcessorRunner`](cqrs_core::processor::ProcessorRunner); this crate keeps what they store.
//! [`PostgresStore`] is a [`ProcessorStore`](cqrs_core::processor::ProcessorStore): checkpoints,
//! dead letters and leader locks (see [`processor`]). [`PostgresProjector`] runs a
//! [`PostgresProjection`], whose read model is SQL tables changed in the transaction that moves
//! its checkpoint (see [`projection`]); [`PostgresSagaStore`] keeps saga instances (see
//! [`saga`]).
//!
//! * **Exactly once.** A batch commits in one transaction that locks the processor's checkpoint
//!   row, checks that it is where the runner expects, writes the batch's effects and dead
//!   letters and moves the checkpoint: a crash loses nothing and applies nothing twice, and a
//!   deposed leader's late commit is refused
//!   ([`CommitError::CheckpointMoved`](cqrs_core::processor::CommitError::CheckpointMoved)).
//! * **Errors.** An event that does not decode, or whose handler fails or panics, goes through
//!   the runner's [`FailurePolicy`](cqrs_core::processor::FailurePolicy) (stop, park as a dead
//!   letter, retry); a failure of the database (the connection lost, the server restarting, the
//!   pool exhausted) is not the event's, and the runner reconnects.
//!   [`read_log`](EventStore::read_log) hands a row that does not decode out as
//!   [`LogEntry::Unreadable`](cqrs_core::LogEntry::Unreadable) at its place, so that it is the
//!   failure of the processors that read its stream and of no other reader.
//! * **One runner per processor across nodes.**
//!   [`ProcessorStore::lead`](cqrs_core::processor::ProcessorStore::lead) takes a session-level
//!   advisory lock on a connection of its own: the runner leads while it holds it and stands by
//!   otherwise, following the stored checkpoint; when the leader's connection closes, another
//!   node takes over from the checkpoint.
//!
//! # Administration
//!
//! [`PostgresStore`] is cqrs-core's [`StoreAdmin`](cqrs_core::admin::StoreAdmin) (see
//! [`admin`]): its streams, processors and migrations, and the check that positions are dense,
//! every stream's versions contiguous and no committed event left waiting for a position, for
//! tools such as `cqrs-admin`.
//!
//! # Tasks and threads
//!
//! Each pooled connection is driven by a task of its own (tokio-postgres's connection task) on
//! the runtime the store is used on. Use the store, and a repository over it, from spawned tasks,
//! as a server's request handlers run: code driven by `Runtime::block_on` itself (the body of
//! `#[tokio::main]`) runs on the main thread, outside the runtime's workers, so every batch of
//! rows a query returns crosses from a worker to it. Loading a 100,000-event stream ran at 0.74
//! to 0.87 M events/s that way on a two-core machine, and at 1.2 to 1.3 M from a spawned task.
#![doc(html_root_url = "https://docs.rs/cqrs-postgres/0.1.0")]

pub mod admin;
mod batch;
mod error;
mod lease;
mod listener;
pub mod migrate;
pub mod processor;
pub mod projection;
mod read;
mod rows;
pub mod saga;
#[cfg(feature = "testing")]
pub mod testing;
mod turn;

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use cqrs_core::store::{StreamTurn, command_id_of};
use cqrs_core::telemetry::store as store_telemetry;
use cqrs_core::{
    AppendReceipt, CommandId, CommandRecord, EventData, EventStore, ExpectedVersion, LogBatch,
    NewEvent, Position, RecordedEvent, Snapshot, StoreError, StreamId, Version,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use uuid::Uuid;

pub use crate::error::DatabaseError;
use crate::listener::Listener;
pub use crate::migrate::MigrationError;
pub use crate::processor::{LEADER_LOCK_CLASS, ProcessorRecordError};
pub use crate::projection::{
    PostgresProjection, PostgresProjectionRunner, PostgresProjector, ProjectionResetError,
};
pub use crate::rows::CorruptRow;
pub use crate::saga::PostgresSagaStore;

/// The value of `db.system.name` on this store's spans (OpenTelemetry's name for PostgreSQL).
const SYSTEM: &str = "postgresql";
/// The value of the batch size histogram's `store` label.
const STORE_LABEL: &str = "postgres";
/// The attribute a [`PostgresProjection`] implementation is written under (its methods are
/// `async`), re-exported so that an application needs no dependency of its own.
pub use async_trait::async_trait;
/// The connection pool crate; [`Transaction`] and [`PostgresStore::pool`] come from it.
pub use deadpool_postgres;
/// The PostgreSQL driver: parameter and row types for a projection's SQL.
pub use tokio_postgres;

/// The transaction a [`PostgresProjection`] writes its read model in (the one its batch commits
/// in with the checkpoint). It dereferences to
/// [`tokio_postgres::Transaction`] and adds `prepare_cached`, so that a statement is prepared
/// once per pooled connection rather than once per event.
pub type Transaction<'a> = deadpool_postgres::Transaction<'a>;

/// How often a waiting reader re-checks the head even without a notification: a safety net for
/// the moments the listener connection is down, never the main wake-up path.
pub const FALLBACK_CHECK: Duration = Duration::from_secs(2);

/// The default number of pooled connections.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long a call waits for a pooled connection by default before it fails with
/// [`StoreError::Timeout`].
pub const DEFAULT_POOL_WAIT: Duration = Duration::from_secs(5);

/// How long opening a new connection may take by default before it fails with
/// [`StoreError::Timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection pool's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// The most connections the pool opens (at least 1).
    pub size: usize,
    /// How long a call waits for a connection when all of them are busy, before it fails with
    /// [`StoreError::Timeout`] (nothing written). `None` waits for ever: a pool held by stuck
    /// callers then hangs every other caller.
    pub wait_timeout: Option<Duration>,
    /// How long opening a new connection may take (a server that accepts the TCP connection and
    /// never answers). `None`: no limit.
    pub connect_timeout: Option<Duration>,
}

impl Default for PoolOptions {
    /// [`DEFAULT_POOL_SIZE`] connections, [`DEFAULT_POOL_WAIT`], [`DEFAULT_CONNECT_TIMEOUT`].
    fn default() -> Self {
        PoolOptions {
            size: DEFAULT_POOL_SIZE,
            wait_timeout: Some(DEFAULT_POOL_WAIT),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
        }
    }
}

/// How many turn gates a store has (see `Inner::turn_gates`).
const TURN_GATES: usize = 64;

const SETTLE: &str =
    "SELECT first_position, last_position FROM cqrs_settle($1::text, $2::bigint, $3::bigint)";

/// Errors of this crate's own making, carried inside [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The connection string could not be parsed.
    #[error("invalid PostgreSQL connection string: {0}")]
    InvalidConfig(#[source] tokio_postgres::Error),
    /// The connection pool could not be built.
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    /// The server answered an append with something this crate does not understand (a schema
    /// from another version of the crate).
    #[error("unexpected answer to an append: {0}")]
    UnexpectedAnswer(String),
}

/// The test hook of [`PostgresStore::set_sql_before_commit`]: the SQL to run before an append's
/// COMMIT, if any, for the stream appended to.
#[doc(hidden)]
pub type BeforeCommit = Arc<dyn Fn(&StreamId) -> Option<String> + Send + Sync>;

/// A PostgreSQL event store.
///
/// Clones share one connection pool and one listener connection. Call
/// [`migrate`](PostgresStore::migrate) once before use.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    pool_options: PoolOptions,
    /// One gate per group of streams (by hash), so that a store has at most one turn per stream
    /// waiting on the server: a turn holds a connection while it waits.
    turn_gates: Vec<Arc<tokio::sync::Mutex<()>>>,
    config: tokio_postgres::Config,
    listener: Listener,
    before_commit: RwLock<Option<BeforeCommit>>,
    queue: batch::Queue,
    /// Lock connections kept between a standby node's attempts to lead.
    standby: lease::Standby,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PostgresStore")
            .field("pool_size", &status.size)
            .field("pool_max_size", &status.max_size)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// A store on the database `url` names (a `postgresql://` URL or `key=value` pairs, as
    /// [`tokio_postgres::Config`] parses them), with [`DEFAULT_POOL_SIZE`] connections. Connects
    /// lazily: nothing is opened until the first call.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Self::with_pool_size(url, DEFAULT_POOL_SIZE)
    }

    /// Like [`new`](PostgresStore::new), with at most `pool_size` pooled connections.
    pub fn with_pool_size(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|error| StoreError::backend(PostgresError::InvalidConfig(error)))?;
        Self::from_config(config, pool_size)
    }

    /// A store on the database `config` describes, with at most `pool_size` pooled connections
    /// and the other [`PoolOptions`] at their defaults.
    pub fn from_config(
        config: tokio_postgres::Config,
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        Self::with_options(
            config,
            PoolOptions {
                size: pool_size,
                ..PoolOptions::default()
            },
        )
    }

    /// A store on the database `config` describes, with the pool `options`.
    pub fn with_options(
        config: tokio_postgres::Config,
        options: PoolOptions,
    ) -> Result<Self, StoreError> {
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let options = PoolOptions {
            size: options.size.max(1),
            ..options
        };
        let pool = Pool::builder(manager)
            .max_size(options.size)
            .wait_timeout(options.wait_timeout)
            .create_timeout(options.connect_timeout)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|error| StoreError::backend(PostgresError::Pool(error.to_string())))?;
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                pool_options: options,
                turn_gates: (0..TURN_GATES)
                    .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                    .collect(),
                config: config.clone(),
                listener: Listener::new(config),
                before_commit: RwLock::new(None),
                queue: batch::Queue::default(),
                standby: lease::Standby::default(),
            }),
        })
    }

    /// The pool's settings.
    pub fn pool_options(&self) -> PoolOptions {
        self.inner.pool_options
    }

    /// Applies the schema migrations this crate ships that the database lacks, and returns the
    /// numbers of those it applied. Safe to call from several nodes at once, and on every start.
    pub async fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        migrate::run(&self.inner.pool, &self.inner.pool_options).await
    }

    /// The connection pool, for the application's own queries.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The connection settings, for connections that must not come from the pool (a
    /// processor's leader lock lives on one of its own).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.inner.config
    }

    /// Test hook: before committing each append, run the SQL `hook` returns for its stream (for
    /// example `SELECT pg_sleep(0.05)` to make commits finish out of order). The append then runs
    /// in an explicit transaction instead of one statement.
    #[doc(hidden)]
    pub fn set_sql_before_commit(&self, hook: Option<BeforeCommit>) {
        let mut slot = self
            .inner
            .before_commit
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = hook;
    }

    fn before_commit(&self) -> Option<BeforeCommit> {
        self.inner
            .before_commit
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The rows of up to `limit` numbered events after `after`, in position order: what
    /// `read_all` and `read_log` decode (one prepared statement serves both).
    async fn log_rows(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        // Beyond every position a `bigint` holds: nothing after it.
        let Ok(after) = i64::try_from(after.0) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {} FROM cqrs_events WHERE position > $1 ORDER BY position LIMIT $2",
                rows::EVENT_COLUMNS
            ))
            .await
            .map_err(crate::error::backend)?;
        client
            .query(&statement, &[&after, &limit])
            .await
            .map_err(crate::error::backend)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        loop {
            let client = self
                .inner
                .pool
                .get()
                .await
                .map_err(|error| crate::error::pool(error, &self.inner.pool_options))?;
            if !client.is_closed() {
                return Ok(client);
            }
            drop(deadpool_postgres::Object::take(client));
        }
    }

    /// The stream's current version, read on its own (after a failed append).
    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT coalesce(max(version), 0) FROM cqrs_events WHERE stream = $1")
            .await
            .map_err(crate::error::backend)?;
        let row = client
            .query_one(&statement, &[&stream.as_str()])
            .await
            .map_err(crate::error::backend)?;
        rows::version(row.try_get(0).map_err(crate::error::backend)?, stream)
    }

    /// The positions of `stream`'s committed events `first..=last`, numbering them first if they
    /// are still pending.
    async fn settle(
        &self,
        stream: &StreamId,
        first: Version,
        last: Version,
    ) -> Result<(Position, Position), StoreError> {
        let client = self.client().await?;
        settle_on(&client, stream, first, last).await
    }

    /// The command record of `command_id` on `stream` without settling positions.
    async fn command_versions(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
    ) -> Result<Option<(Version, Version)>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT first_version, version FROM cqrs_commands \
                 WHERE stream = $1 AND command_id = $2",
            )
            .await
            .map_err(crate::error::backend)?;
        let Some(row) = client
            .query_opt(&statement, &[&stream.as_str(), &command_id.as_str()])
            .await
            .map_err(crate::error::backend)?
        else {
            return Ok(None);
        };
        Ok(Some((
            rows::version(row.try_get(0).map_err(crate::error::backend)?, stream)?,
            rows::version(row.try_get(1).map_err(crate::error::backend)?, stream)?,
        )))
    }

    async fn record(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
        first_version: Version,
        version: Version,
    ) -> Result<CommandRecord, StoreError> {
        let (_, position) = self.settle(stream, first_version, version).await?;
        Ok(CommandRecord {
            command_id: command_id.clone(),
            stream: stream.clone(),
            first_version,
            version,
            position,
        })
    }

    /// What a unique violation met by an append means: the command was applied already, or the
    /// expected version no longer holds (`None`: it still holds, send the append again).
    async fn refusal_after_unique_violation(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        command_id: Option<&CommandId>,
    ) -> Result<Option<StoreError>, StoreError> {
        if let Some(command_id) = command_id {
            if let Some((first, last)) = self.command_versions(stream, command_id).await? {
                let earlier = self.record(stream, command_id, first, last).await?;
                return Ok(Some(StoreError::DuplicateCommand { earlier }));
            }
        }
        let actual = self.stream_version(stream).await?;
        Ok((!expected.matches(actual)).then(|| StoreError::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        }))
    }

    /// The receipt of an append the server answered (outcome 0), or the error its answer says,
    /// settling its positions when it was written unnumbered: on `settle_client` when given (a
    /// turn's own connection), on a pooled one otherwise.
    async fn receipt(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        command_id: Option<&CommandId>,
        answer: rows::AppendAnswer,
        empty: bool,
        settle_client: Option<&deadpool_postgres::ClientWrapper>,
    ) -> Result<AppendReceipt, StoreError> {
        match answer.outcome {
            0 => {}
            1 => {
                return Err(StoreError::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual: answer.actual_version,
                });
            }
            2 => {
                let Some(command_id) = command_id else {
                    return Err(StoreError::backend(PostgresError::UnexpectedAnswer(
                        "duplicate command without a command id".into(),
                    )));
                };
                let earlier = self
                    .record(
                        stream,
                        command_id,
                        answer.first_version,
                        answer.last_version,
                    )
                    .await?;
                return Err(StoreError::DuplicateCommand { earlier });
            }
            other => {
                return Err(StoreError::backend(PostgresError::UnexpectedAnswer(
                    format!("outcome {other}"),
                )));
            }
        }
        if empty {
            return Ok(AppendReceipt {
                first_version: answer.first_version,
                version: answer.last_version,
                first_position: None,
                position: None,
            });
        }
        let (first, last) = (answer.first_version, answer.last_version);
        let (first_position, position) = match (answer.positions, settle_client) {
            (Some(positions), _) => positions,
            (None, Some(client)) => settle_on(client, stream, first, last).await?,
            (None, None) => self.settle(stream, first, last).await?,
        };
        Ok(AppendReceipt {
            first_version: answer.first_version,
            version: answer.last_version,
            first_position: Some(first_position),
            position: Some(position),
        })
    }

    /// Waits until no writer holds a turn on `stream` (its turn lock is free in shared mode).
    async fn wait_for_turn(&self, stream: &StreamId) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(turn::WAIT_FOR_TURN)
            .await
            .map_err(crate::error::backend)?;
        client
            .execute(&statement, &[&stream.as_str()])
            .await
            .map_err(crate::error::backend)?;
        Ok(())
    }

    /// [`EventStore::append`]'s work, inside `span`, which its batches record their size on.
    async fn append_now(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        span: &tracing::Span,
    ) -> Result<AppendReceipt, StoreError> {
        let command_id = command_id_of(&events)?.cloned();
        let columns = Arc::new(Columns::new(&events)?);
        let argument = ExpectedArgument::from(expected);
        loop {
            let answer = loop {
                if let Some(answer) = self
                    .try_append(stream, argument, command_id.as_ref(), &columns, span)
                    .await?
                {
                    break answer;
                }
                // Another writer committed the same version (or command id) first.
                if let Some(refused) = self
                    .refusal_after_unique_violation(stream, expected, command_id.as_ref())
                    .await?
                {
                    return Err(refused);
                }
                // The expectation still holds (`Any`, `StreamExists`, or the winner rolled back):
                // try again on top of the new version.
                tracing::debug!(
                    "another writer appended to the stream first and the expected version still \
                     holds: sending the append again"
                );
                tokio::task::yield_now().await;
            };
            if answer.outcome == OUTCOME_IN_TURN {
                // Nothing was written: another writer holds a turn on the stream. Should the
                // wait fail (its connection dropped), nothing was written either: the append is
                // sent again, and meets a lasting failure itself.
                tracing::debug!(
                    "another writer holds a turn on the stream: waiting for it, then sending the \
                     append again"
                );
                if self.wait_for_turn(stream).await.is_err() {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            return self
                .receipt(
                    stream,
                    expected,
                    command_id.as_ref(),
                    answer,
                    events.is_empty(),
                    None,
                )
                .await;
        }
    }

    /// [`EventStore::visit_stream`]'s work, outside any span: `read_stream` runs it in its own.
    async fn visit_stream_now(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        let client = self.client().await?;
        read::visit_stream_on(
            &client,
            stream,
            from,
            limit,
            &mut read::Envelopes::new(visit),
        )
        .await
    }

    /// [`EventStore::visit_stream_data`]'s work, outside its span.
    async fn visit_stream_data_now(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        let client = self.client().await?;
        read::visit_stream_on(&client, stream, from, limit, &mut read::Data::new(visit)).await
    }

    /// Runs one attempt of an append, in the store's next batch. `Ok(None)` means a unique
    /// violation: another writer got there first, and the caller works out what that means.
    async fn try_append(
        &self,
        stream: &StreamId,
        expected: ExpectedArgument,
        command_id: Option<&CommandId>,
        columns: &Arc<Columns>,
        span: &tracing::Span,
    ) -> Result<Option<rows::AppendAnswer>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = batch::Request {
            stream: stream.clone(),
            expected,
            command_id: command_id.cloned(),
            columns: Arc::clone(columns),
            span: span.clone(),
            reply,
        };
        batch::submit(self, request, answer).await
    }
}

/// The positions of `stream`'s committed events `first..=last`, numbering them first if they
/// are still pending, on `client` (outside any transaction).
async fn settle_on(
    client: &deadpool_postgres::ClientWrapper,
    stream: &StreamId,
    first: Version,
    last: Version,
) -> Result<(Position, Position), StoreError> {
    let statement = client
        .prepare_cached(SETTLE)
        .await
        .map_err(crate::error::backend)?;
    let (first_version, last_version) = (rows::to_i64(first.0), rows::to_i64(last.0));
    let row = client
        .query_one(
            &statement,
            &[&stream.as_str(), &first_version, &last_version],
        )
        .await
        .map_err(crate::error::backend)?;
    let first: Option<i64> = row.try_get(0).map_err(crate::error::backend)?;
    let last: Option<i64> = row.try_get(1).map_err(crate::error::backend)?;
    match (first, last) {
        (Some(first), Some(last)) => Ok((
            rows::position(first, stream)?,
            rows::position(last, stream)?,
        )),
        _ => Err(StoreError::backend(PostgresError::UnexpectedAnswer(
            format!("no positions for versions {first_version}..={last_version} of `{stream}`"),
        ))),
    }
}

/// The outcome of an append that found another writer's turn on its stream: nothing written.
const OUTCOME_IN_TURN: i16 = 4;

/// The expected version kinds of the append statements.
const KIND_ANY: i16 = 0;
const KIND_NO_STREAM: i16 = 1;
const KIND_STREAM_EXISTS: i16 = 2;
const KIND_EXACT: i16 = 3;

/// The expected version as the append statements take it.
#[derive(Clone, Copy)]
struct ExpectedArgument {
    kind: i16,
    version: i64,
}

impl From<ExpectedVersion> for ExpectedArgument {
    fn from(expected: ExpectedVersion) -> Self {
        match expected {
            ExpectedVersion::Any => ExpectedArgument {
                kind: KIND_ANY,
                version: 0,
            },
            ExpectedVersion::NoStream => ExpectedArgument {
                kind: KIND_NO_STREAM,
                version: 0,
            },
            ExpectedVersion::StreamExists => ExpectedArgument {
                kind: KIND_STREAM_EXISTS,
                version: 0,
            },
            // No stream reaches a version beyond i64::MAX: -1 never matches, and the server
            // still answers with the actual version.
            ExpectedVersion::Exact(version) => ExpectedArgument {
                kind: KIND_EXACT,
                version: i64::try_from(version.0).unwrap_or(-1),
            },
        }
    }
}

/// An append's events, one array per column.
struct Columns {
    event_ids: Vec<Uuid>,
    event_types: Vec<String>,
    schema_versions: Vec<i64>,
    payloads: Vec<Vec<u8>>,
    correlation_ids: Vec<Option<Uuid>>,
    causation_ids: Vec<Option<Uuid>>,
    command_ids: Vec<Option<String>>,
    occurred_at: Vec<SystemTime>,
    headers: Vec<String>,
}

impl Columns {
    fn new(events: &[NewEvent]) -> Result<Self, StoreError> {
        let mut columns = Columns {
            event_ids: Vec::with_capacity(events.len()),
            event_types: Vec::with_capacity(events.len()),
            schema_versions: Vec::with_capacity(events.len()),
            payloads: Vec::with_capacity(events.len()),
            correlation_ids: Vec::with_capacity(events.len()),
            causation_ids: Vec::with_capacity(events.len()),
            command_ids: Vec::with_capacity(events.len()),
            occurred_at: Vec::with_capacity(events.len()),
            headers: Vec::with_capacity(events.len()),
        };
        for event in events {
            columns.event_ids.push(event.event_id.0);
            columns.event_types.push(event.event_type.to_string());
            columns
                .schema_versions
                .push(i64::from(event.schema_version));
            columns.payloads.push(event.payload.as_bytes().to_vec());
            columns.correlation_ids.push(event.metadata.correlation_id);
            columns.causation_ids.push(event.metadata.causation_id);
            columns
                .command_ids
                .push(event.metadata.command_id.as_ref().map(|id| id.to_string()));
            columns.occurred_at.push(event.metadata.timestamp);
            columns
                .headers
                .push(serde_json::to_string(&event.metadata.headers).map_err(StoreError::backend)?);
        }
        Ok(columns)
    }
}

#[async_trait::async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendReceipt, StoreError> {
        let span = store_telemetry::append_span(SYSTEM, stream, expected, events.len());
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.append_now(stream, expected, events, &span).await
        });
        store_telemetry::record_append(&span, &result);
        result
    }

    async fn take_turn(
        &self,
        stream: &StreamId,
    ) -> Result<Option<Box<dyn StreamTurn>>, StoreError> {
        Ok(Some(Box::new(
            turn::PostgresTurn::take(self, stream).await?,
        )))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let span = store_telemetry::stream_read_span(SYSTEM, "read_stream", stream, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            let mut events = Vec::new();
            self.visit_stream_now(stream, from, limit, &mut |event| {
                events.push(event.clone());
                Ok(())
            })
            .await?;
            Ok(events)
        });
        store_telemetry::record_read(&span, &result, Vec::len);
        result
    }

    async fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(&'e RecordedEvent) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        let span = store_telemetry::stream_read_span(SYSTEM, "visit_stream", stream, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.visit_stream_now(stream, from, limit, visit).await
        });
        store_telemetry::record_read(&span, &result, |visited| *visited);
        result
    }

    async fn visit_stream_data(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
        visit: &mut (dyn for<'e> FnMut(EventData<'e>) -> Result<(), StoreError> + Send),
    ) -> Result<usize, StoreError> {
        let span = store_telemetry::stream_read_span(SYSTEM, "visit_stream_data", stream, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            self.visit_stream_data_now(stream, from, limit, visit).await
        });
        store_telemetry::record_read(&span, &result, |visited| *visited);
        result
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let span = store_telemetry::log_read_span(SYSTEM, "read_all", after, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            let rows = self.log_rows(after, limit).await?;
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                // `position > $1` never matches an unnumbered event.
                if let Some(event) = rows::recorded_event(row)? {
                    events.push(event);
                }
            }
            Ok(events)
        });
        store_telemetry::record_read(&span, &result, Vec::len);
        result
    }

    async fn read_log(
        &self,
        after: Position,
        limit: usize,
        aggregates: &[&str],
    ) -> Result<LogBatch, StoreError> {
        let span = store_telemetry::log_read_span(SYSTEM, "read_log", after, limit);
        let result = cqrs_core::telemetry::in_span!(&span, {
            let rows = self.log_rows(after, limit).await?;
            let last = rows.last().map(rows::log_position).transpose()?;
            let mut entries = Vec::with_capacity(rows.len());
            for row in &rows {
                if let Some(entry) = rows::log_entry(row, aggregates)? {
                    entries.push(entry);
                }
            }
            Ok(LogBatch { entries, last })
        });
        store_telemetry::record_read(&span, &result, |batch: &LogBatch| batch.entries.len());
        result
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT coalesce(max(position), 0) FROM cqrs_events WHERE position IS NOT NULL",
            )
            .await
            .map_err(crate::error::backend)?;
        let row = client
            .query_one(&statement, &[])
            .await
            .map_err(crate::error::backend)?;
        rows::head(row.try_get(0).map_err(crate::error::backend)?)
    }

    async fn wait_for_events(&self, after: Position) -> Result<Position, StoreError> {
        // Listen first, read the head second: a commit in between is either in the head read or
        // in a notification that arrives after it.
        let mut receiver = self.inner.listener.subscribe().await?;
        let head = self.head().await?;
        if head > after {
            return Ok(head);
        }
        loop {
            let notified = tokio::time::timeout(FALLBACK_CHECK, async {
                receiver.wait_for(|head| *head > after).await.map(|_| ())
            })
            .await;
            match notified {
                Ok(Ok(())) => {}
                Ok(Err(closed)) => {
                    // The listener task ended (its runtime shut down): listen again.
                    let _ = closed;
                    receiver = self.inner.listener.subscribe().await?;
                }
                Err(_elapsed) => {
                    // The safety net: number whatever a dead appender left pending.
                    let client = self.client().await?;
                    client
                        .execute("SELECT cqrs_sequence_pending()", &[])
                        .await
                        .map_err(crate::error::backend)?;
                }
            }
            let head = self.head().await?;
            if head > after {
                return Ok(head);
            }
        }
    }

    async fn save_snapshot(&self, stream: &StreamId, snapshot: Snapshot) -> Result<(), StoreError> {
        let client = self.client().await?;
        // A slow snapshotter must not replace a newer snapshot of the same schema version.
        let statement = client
            .prepare_cached(
                "INSERT INTO cqrs_snapshots AS s (stream, version, schema_version, payload) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (stream) DO UPDATE SET version = excluded.version, \
                 schema_version = excluded.schema_version, payload = excluded.payload, \
                 saved_at = now() \
                 WHERE NOT (s.schema_version = excluded.schema_version \
                            AND s.version > excluded.version)",
            )
            .await
            .map_err(crate::error::backend)?;
        let version = rows::to_i64(snapshot.version.0);
        let schema_version = i64::from(snapshot.schema_version);
        client
            .execute(
                &statement,
                &[
                    &stream.as_str(),
                    &version,
                    &schema_version,
                    &snapshot.payload.as_slice(),
                ],
            )
            .await
            .map_err(crate::error::backend)?;
        Ok(())
    }

    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT version, payload FROM cqrs_snapshots \
                 WHERE stream = $1 AND schema_version = $2",
            )
            .await
            .map_err(crate::error::backend)?;
        let Some(row) = client
            .query_opt(&statement, &[&stream.as_str(), &i64::from(schema_version)])
            .await
            .map_err(crate::error::backend)?
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            version: rows::version(row.try_get(0).map_err(crate::error::backend)?, stream)?,
            schema_version,
            payload: row.try_get(1).map_err(crate::error::backend)?,
        }))
    }

    async fn command_record(
        &self,
        stream: &StreamId,
        command_id: &CommandId,
    ) -> Result<Option<CommandRecord>, StoreError> {
        match self.command_versions(stream, command_id).await? {
            None => Ok(None),
            Some((first, last)) => Ok(Some(self.record(stream, command_id, first, last).await?)),
        }
    }
}
