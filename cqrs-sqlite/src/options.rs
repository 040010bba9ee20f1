//! How a store opens its file: durability, waiting for other processes, batching, connections.

use std::time::Duration;

/// How hard SQLite works to make a commit survive a power cut (`PRAGMA synchronous`).
///
/// In WAL mode both keep the database consistent after a crash of the process or of the machine:
/// no commit is ever torn. They differ in what a power cut may lose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// `FULL`, the default: every commit is flushed to the disk (an `fsync` of the WAL) before
    /// the append returns, so an acknowledged append survives a power cut.
    #[default]
    Full,
    /// `NORMAL`: the WAL is flushed at checkpoints only. A crash of the process loses nothing;
    /// a power cut or an OS crash may lose the last acknowledged appends (never part of one).
    /// Faster when every append is its own transaction.
    Normal,
}

impl Synchronous {
    /// The value of `PRAGMA synchronous`.
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// The default [`SqliteOptions::busy_timeout`].
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The default [`SqliteOptions::change_check_interval`].
pub const DEFAULT_CHANGE_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// The default [`SqliteOptions::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 64;

/// The default [`SqliteOptions::batch_linger`]: short beside a commit's `fsync`.
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_micros(200);

/// The default [`SqliteOptions::ack_spin`]: longer than most commits with `synchronous=FULL`.
pub const DEFAULT_ACK_SPIN: Duration = Duration::from_micros(500);

/// The default [`SqliteOptions::read_connections`].
pub const DEFAULT_READ_CONNECTIONS: usize = 4;

/// The settings of a [`SqliteStore`](crate::SqliteStore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Durability of each commit; [`Synchronous::Full`] by default.
    pub synchronous: Synchronous,
    /// How long a connection waits for another process's writer (or checkpoint) to release the
    /// lock before it fails with `SQLITE_BUSY` (`PRAGMA busy_timeout`); [`DEFAULT_BUSY_TIMEOUT`].
    pub busy_timeout: Duration,
    /// How often the store checks whether another process (or another store on the same file)
    /// wrote, to wake its [`wait_for_events`](cqrs_core::EventStore::wait_for_events) callers;
    /// checked only while someone waits. [`DEFAULT_CHANGE_CHECK_INTERVAL`].
    pub change_check_interval: Duration,
    /// The most requests the writer takes into one transaction; [`DEFAULT_MAX_BATCH`].
    pub max_batch: usize,
    /// How long the writer waits for the writers it just answered to send their next request,
    /// so that they share the next transaction (group commit, as PostgreSQL's `commit_delay`);
    /// [`DEFAULT_BATCH_LINGER`]. It waits only while fewer requests are queued than its last
    /// transaction served: a lone writer never waits. `Duration::ZERO` never waits.
    pub batch_linger: Duration,
    /// How long a lone append (the only one of the store in flight) looks for its answer
    /// without sleeping before it sleeps until answered; [`DEFAULT_ACK_SPIN`]. It yields to
    /// the other tasks of its thread in between, but keeps a core busy for up to this long per
    /// commit: `Duration::ZERO` always sleeps (less CPU, about a third more latency per commit
    /// on a virtual machine).
    pub ack_spin: Duration,
    /// How many idle read connections the store keeps; [`DEFAULT_READ_CONNECTIONS`]. More
    /// concurrent reads open more connections, closed when they are done.
    pub read_connections: usize,
    /// Whether [`SqliteStore::open_with`](crate::SqliteStore::open_with) applies the shipped
    /// migrations; off by default ([`SqliteStore::migrate`](crate::SqliteStore::migrate) does it
    /// on request).
    pub migrate_on_open: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            change_check_interval: DEFAULT_CHANGE_CHECK_INTERVAL,
            max_batch: DEFAULT_MAX_BATCH,
            batch_linger: DEFAULT_BATCH_LINGER,
            ack_spin: DEFAULT_ACK_SPIN,
            read_connections: DEFAULT_READ_CONNECTIONS,
            migrate_on_open: false,
        }
    }
}

impl SqliteOptions {
    /// These options with `synchronous`.
    #[must_use]
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// These options with `busy_timeout`.
    #[must_use]
    pub fn busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }

    /// These options with `change_check_interval`.
    #[must_use]
    pub fn change_check_interval(mut self, interval: Duration) -> Self {
        self.change_check_interval = interval;
        self
    }

    /// These options with `batch_linger`.
    #[must_use]
    pub fn batch_linger(mut self, linger: Duration) -> Self {
        self.batch_linger = linger;
        self
    }

    /// These options with `ack_spin`.
    #[must_use]
    pub fn ack_spin(mut self, spin: Duration) -> Self {
        self.ack_spin = spin;
        self
    }

    /// These options with `max_batch` (at least 1).
    #[must_use]
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// These options with `read_connections` idle read connections kept.
    #[must_use]
    pub fn read_connections(mut self, read_connections: usize) -> Self {
        self.read_connections = read_connections;
        self
    }

    /// These options, migrating on open or not.
    #[must_use]
    pub fn migrate_on_open(mut self, migrate_on_open: bool) -> Self {
        self.migrate_on_open = migrate_on_open;
        self
    }
}
