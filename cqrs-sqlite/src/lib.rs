//! A durable embedded [`EventStore`] in one SQLite file: one writer thread per store batching
//! appends into `BEGIN IMMEDIATE` transactions, dense global positions by construction, WAL
//! readers that never wait for the writer, and waiters woken without busy polling.
//!
//! ```
//! use cqrs_core::{EventId, EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId};
//! use cqrs_sqlite::SqliteStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let path = std::env::temp_dir().join(format!("cqrs-sqlite-doc-{}.db", std::process::id()));
//! # let _ = std::fs::remove_file(&path);
//! let store = SqliteStore::open(&path).await?;
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
//! assert_eq!(receipt.position, Some(Position(1)));
//!
//! // A second writer that still believes the stream is new is refused.
//! assert!(store.append(&stream, ExpectedVersion::NoStream, vec![]).await.is_err());
//!
//! let events = store.read_all(Position::START, 100).await?;
//! assert_eq!(events[0].event_type, "Scheduled");
//! # drop(store);
//! # for suffix in ["", "-wal", "-shm"] {
//! #     let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
//! # }
//! # Ok(())
//! # }
//! ```
//!
//! # One writer
//!
//! SQLite lets one connection write to a file at a time. Rather than have every task open a
//! write transaction and sleep on the lock (the busy handler backs off up to 100 ms), each
//! [`SqliteStore`] (and its clones) owns one write connection on a thread of its own, fed by a
//! channel. The writer opens a `BEGIN IMMEDIATE` transaction with the first request and runs
//! the requests that arrive meanwhile in it (up to [`SqliteOptions::max_batch`]): one commit, one
//! WAL flush for the whole batch. Group commit: the tasks a transaction answered usually come
//! back with their next command a few microseconds later, so the writer waits for them (up to
//! [`SqliteOptions::batch_linger`], 200 µs by default) while it holds fewer requests than its
//! last transaction served plus those queued meanwhile; a lone task never waits.
//!
//! Each append is checked first: its command id looked up, then its stream's version against
//! the expected version (the writer remembers the versions it wrote, for as long as
//! `PRAGMA data_version` says that no other connection committed). Its events and command
//! record are then inserted, in a `SAVEPOINT` of its own when that takes more than one
//! statement. An append that is refused (a conflict, a duplicate command) or fails leaves
//! nothing behind, and the others of the batch are committed. Should SQLite roll the whole
//! transaction back by itself (a full disk), the batch fails as a whole and nothing runs outside
//! of it. `IMMEDIATE` takes the write lock before anything is read, so what the writer reads
//! cannot change before its commit (a deferred transaction that reads then writes would fail
//! with `SQLITE_BUSY` without waiting).
//!
//! Global positions are assigned under that lock as `max(position) + 1`: they are dense and in
//! commit order by construction, and an append rolled back leaves no hole. Another process (or
//! a second store opened on the same file) has a writer of its own; the two meet on SQLite's
//! lock. A writer tries for it every millisecond at most (SQLite's own busy handler sleeps up
//! to 100 ms between tries, and a process waiting on another that commits back to back could
//! starve), for up to [`SqliteOptions::busy_timeout`] (5 s by default), before it fails with
//! `SQLITE_BUSY`, nothing written.
//!
//! An append that is the only one of its store in flight waits for its answer without
//! sleeping, for up to [`SqliteOptions::ack_spin`] (500 µs by default), yielding to the other
//! tasks of its thread in between: on a virtual machine, waking a sleeping thread after each
//! commit costs about a fifth of a lone writer's throughput.
//!
//! Reads run on a small pool of read connections, on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]): in WAL mode a reader sees the last commit and never waits
//! for the writer, and the async runtime never blocks on SQLite.
//!
//! # Durability
//!
//! The file is in WAL mode (`journal_mode=WAL`). [`Synchronous::Full`], the default, flushes
//! each commit to the disk before any append of its batch returns: an acknowledged append
//! survives a power cut. [`Synchronous::Normal`] (see [`SqliteOptions::synchronous`]) flushes at
//! checkpoints only: a crash of the process loses nothing, a power cut may lose the last
//! acknowledged appends. Either way an append is all of its events or none.
//!
//! # Schema
//!
//! [`SqliteStore::migrate`] (or [`SqliteOptions::migrate_on_open`]) applies the migrations the
//! crate ships ([`migrate::MIGRATIONS`]), each once, in one transaction, recorded in
//! `cqrs_schema_migrations` with the SHA-256 of its SQL: a recorded migration whose shipped SQL
//! changed is refused ([`MigrationError::Edited`]). The tables are `cqrs_events` (the position is
//! the rowid; unique (stream, version)), `cqrs_commands` (primary key (stream, command id)) and
//! `cqrs_snapshots` (one row per stream), and for processors `cqrs_processors` (one checkpoint
//! per projection or saga), `cqrs_dead_letters` and `cqrs_saga_instances`. Payloads are blobs and headers JSON text, so both come
//! back exactly as written; UUIDs are 16-byte blobs; timestamps are microseconds since the epoch.
//! Every value travels as a bind parameter.
//!
//! # Waiting for events
//!
//! The writer publishes the new head on a [`tokio::sync::watch`] channel after each commit, so
//! waiters in the process wake without polling. Commits of other processes are noticed by one
//! thread per store that checks `PRAGMA data_version` every
//! [`SqliteOptions::change_check_interval`] (50 ms by default) while someone waits, and
//! publishes the head it then reads.
//!
//! # Errors
//!
//! A failure of SQLite is [`StoreError::Backend`] around a [`SqliteError`]: what the store was
//! doing, SQLite's message, its result code and extended code. A stored row that is not a valid
//! event (bad UUID, bad headers JSON, an invalid stream id) is a [`CorruptRow`] that names its
//! position, stream and version; [`read_log`](EventStore::read_log) hands such a row out as
//! [`LogEntry::Unreadable`](cqrs_core::LogEntry::Unreadable) at its place instead.
//!
//! # Telemetry
//!
//! Each append and each read (of a stream or of the global log) runs in a DEBUG span,
//! `store.append` or `store.read`, with `db.system.name = "sqlite"` and the fields that
//! [`cqrs_core::telemetry`] lists. Each write transaction records its number of appends in the
//! `cqrs_append_batch_size` histogram (label `store = "sqlite"`) and as `cqrs.batch.appends` on
//! the span of each of its appends. Each call of a processor store (a checkpoint read, a
//! projector's commit or reset, a saga store's commit, ...) runs in a DEBUG span
//! `store.processor` with `db.system.name`, `db.operation.name` and `cqrs.processor`.
//!
//! # Processors
//!
//! Projections and sagas run on cqrs-core's one [processor runner](cqrs_core::processor), with
//! their checkpoints, dead letters and saga instances in the same file (migration 2,
//! `processors`). [`SqliteStore`] is their [`ProcessorStore`](cqrs_core::processor::ProcessorStore)
//! (see [`processor`]); [`SqliteSagaStore`] keeps sagas (see [`saga`]); a [`SqliteProjector`]
//! runs a [`SqliteProjection`] whose `apply` changes tables of the file with SQL on the
//! writer's connection, in the transaction that moves its checkpoint (see [`projection`]): the
//! read model and the checkpoint commit together or not at all. Both commit through
//! [`SqliteStore::write`], which runs a closure on the writer in a savepoint of its own. A
//! projection's tables are made by its [`MIGRATIONS`](SqliteProjection::MIGRATIONS), applied
//! once each and checksummed by [`SqliteProjector::migrate`]. A file is served by one process,
//! so leader leases are unopposed.
//!
//! ```
//! use cqrs_core::processor::Processor as _;
//! use cqrs_core::projection::EventContext;
//! use cqrs_core::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
//! use cqrs_sqlite::migrate::Migration;
//! use cqrs_sqlite::rusqlite::{self, Connection};
//! use cqrs_sqlite::{SqliteProjection, SqliteProjector, SqliteStore};
//!
//! #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, cqrs_core::DomainEvent)]
//! enum ShowEvent {
//!     SeatsReserved { seats: u32 },
//! }
//!
//! /// Seats reserved per show, in `reserved_seats`.
//! struct ReservedSeats;
//!
//! impl SqliteProjection for ReservedSeats {
//!     const NAME: &'static str = "reserved_seats";
//!     const AGGREGATES: &'static [&'static str] = &["show"];
//!     // Applied once each by `SqliteProjector::migrate`, checksummed.
//!     const MIGRATIONS: &'static [Migration] = &[Migration {
//!         version: 1,
//!         name: "reserved_seats",
//!         sql: "CREATE TABLE reserved_seats (show TEXT PRIMARY KEY, seats INTEGER NOT NULL) STRICT",
//!     }];
//!     type Event = ShowEvent;
//!     type Error = rusqlite::Error;
//!
//!     fn apply(
//!         &self,
//!         connection: &Connection,
//!         ShowEvent::SeatsReserved { seats }: ShowEvent,
//!         context: &EventContext<'_>,
//!     ) -> Result<(), rusqlite::Error> {
//!         connection.execute(
//!             "INSERT INTO reserved_seats (show, seats) VALUES (?1, ?2) \
//!              ON CONFLICT (show) DO UPDATE SET seats = seats + excluded.seats",
//!             rusqlite::params![context.aggregate_id(), seats],
//!         )?;
//!         Ok(())
//!     }
//!
//!     fn reset(&self, connection: &Connection) -> Result<(), rusqlite::Error> {
//!         connection.execute_batch("DELETE FROM reserved_seats")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let path = std::env::temp_dir().join(format!("cqrs-sqlite-doc-proc-{}.db", std::process::id()));
//! # for suffix in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{suffix}", path.display())); }
//! let store = SqliteStore::open(&path).await?;
//! store.migrate().await?;
//!
//! let reserved = NewEvent::encode(&ShowEvent::SeatsReserved { seats: 2 }, Metadata::default())?;
//! let receipt = store
//!     .append(&StreamId::for_aggregate("show", 7)?, ExpectedVersion::Any, vec![reserved])
//!     .await?;
//!
//! let projector = SqliteProjector::new(ReservedSeats, store.clone());
//! projector.migrate().await?;
//! let projection = projector.runner().spawn();
//! // Read your own write: wait until the projection has committed the append's position.
//! let position = receipt.position.ok_or("no position")?;
//! projection.wait_for(position, std::time::Duration::from_secs(5)).await?;
//! let seats: i64 = store
//!     .write(|connection| {
//!         connection.query_row("SELECT seats FROM reserved_seats WHERE show = '7'", [], |row| row.get(0))
//!     })
//!     .await??;
//! assert_eq!(seats, 2);
//! projection.shutdown().await;
//! # drop(store);
//! # for suffix in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{suffix}", path.display())); }
//! # Ok(())
//! # }
//! ```
//!
//! # Administration
//!
//! [`SqliteStore`] is cqrs-core's [`StoreAdmin`](cqrs_core::admin::StoreAdmin) (see
//! [`admin`]): its streams, processors and migrations, and the check that positions are dense
//! and every stream's versions contiguous, for tools such as `cqrs-admin`.
//!
//! # Turns
//!
//! [`take_turn`](EventStore::take_turn) answers `None` (the default): the repository then
//! retries conflicts with backoff. Turns on SQLite are left for later.
#![doc(html_root_url = "https://docs.rs/cqrs-sqlite/0.1.0")]

pub mod admin;
mod change;
mod connection;
mod error;
pub mod migrate;
mod options;
pub mod processor;
pub mod projection;
mod read;
mod rows;
pub mod saga;
#[cfg(test)]
mod scratch;
mod store;
mod writer;

pub use crate::error::{SqliteError, SqliteStoreError};
pub use crate::migrate::MigrationError;
pub use crate::options::{
    DEFAULT_ACK_SPIN, DEFAULT_BATCH_LINGER, DEFAULT_BUSY_TIMEOUT, DEFAULT_CHANGE_CHECK_INTERVAL,
    DEFAULT_MAX_BATCH, DEFAULT_READ_CONNECTIONS, SqliteOptions, Synchronous,
};
pub use crate::projection::{
    ProjectionResetError, SqliteProjection, SqliteProjectionRunner, SqliteProjector,
};
pub use crate::rows::CorruptRow;
pub use crate::saga::SqliteSagaStore;
pub use crate::store::SqliteStore;

/// Removes the database file at `path` with SQLite's `-wal` and `-shm` files beside it (those
/// that exist): the way to start over. No store may have the file open; one that has keeps
/// writing to files no longer in the directory.
pub fn remove_database(path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
    let path = path.as_ref();
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    Ok(())
}
/// The SQLite binding whose [`Connection`](rusqlite::Connection) a [`SqliteProjection`] and
/// [`SqliteStore::write`] get.
pub use rusqlite;

#[cfg(doc)]
use cqrs_core::{EventStore, StoreError};

#[cfg(test)]
mod tests {
    use crate::connection::{self, Role};
    use crate::options::SqliteOptions;
    use crate::scratch::ScratchFile;

    #[test]
    fn remove_database_removes_the_file_with_its_wal_and_shared_memory_and_nothing_else() {
        let file = ScratchFile::new("remove");
        let connection = connection::open(file.path(), &SqliteOptions::default(), Role::Writer)
            .expect("open writer");
        connection
            .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .expect("write");
        let with = |suffix: &str| {
            let mut path = file.path().as_os_str().to_owned();
            path.push(suffix);
            std::path::PathBuf::from(path)
        };
        let neighbour = with(".backup");
        std::fs::write(&neighbour, b"keep").expect("a file beside it");
        // Open, so that SQLite does not remove the WAL itself on closing.
        assert!(with("-wal").exists() && with("-shm").exists());
        crate::remove_database(file.path()).expect("remove");
        drop(connection);
        for suffix in ["", "-wal", "-shm"] {
            assert!(!with(suffix).exists(), "{suffix}");
        }
        assert!(neighbour.exists(), "only the database's own files go");
        crate::remove_database(file.path()).expect("nothing left to remove is fine");
        std::fs::remove_file(neighbour).expect("clean up");
    }
}
