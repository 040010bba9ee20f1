//! The schema migrations the crate ships, applied in order by
//! [`SqliteStore::migrate`](crate::SqliteStore::migrate), each once, recorded with a checksum of
//! its SQL; and the same for the migrations of a user's read model
//! ([`SqliteStore::migrate_read_model`](crate::SqliteStore::migrate_read_model),
//! [`SqliteProjection::MIGRATIONS`](crate::SqliteProjection::MIGRATIONS)).

use std::time::SystemTime;

use cqrs_core::StoreError;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::SqliteError;

/// One schema migration: one the crate ships, or one of a user's read model.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number: migrations run in increasing order, each once.
    pub version: u32,
    /// A short name, recorded with the number.
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
}

/// Every migration, oldest first. A later schema change is a new entry at the end; a shipped
/// entry is never edited (its checksum would no longer match the one recorded).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_store",
        sql: include_str!("../migrations/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        name: "processors",
        sql: include_str!("../migrations/0002_processors.sql"),
    },
];

/// Why the migrations could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// SQLite refused a migration of a read model; nothing of it was applied.
    #[error("read model migration {version} (`{name}`) of `{owner}` failed: {source}")]
    ReadModelFailed {
        /// Whose read model: a projection's name.
        owner: String,
        /// The migration's number.
        version: u32,
        /// The migration's name.
        name: &'static str,
        /// What SQLite said.
        #[source]
        source: SqliteError,
    },
    /// The database records a read model migration of this owner and number with other SQL:
    /// the migration was edited after it was applied.
    #[error(
        "read model migration {version} (`{name}`) of `{owner}` was applied with checksum \
         {recorded}, but its SQL now has checksum {shipped}: an applied migration must never \
         change; add a new one"
    )]
    ReadModelEdited {
        /// Whose read model: a projection's name.
        owner: String,
        /// The migration's number.
        version: u32,
        /// The migration's name.
        name: &'static str,
        /// The checksum the database recorded.
        recorded: String,
        /// The checksum of the SQL given now.
        shipped: String,
    },
    /// SQLite refused a migration (or the bookkeeping around it); nothing of it was applied.
    #[error("schema migration {version} (`{name}`) failed: {source}")]
    Failed {
        /// The migration's number.
        version: u32,
        /// The migration's name.
        name: &'static str,
        /// What SQLite said.
        #[source]
        source: SqliteError,
    },
    /// The database records a migration of this number with other SQL than the one shipped:
    /// the shipped file was edited, or the database was made by another version of the crate.
    #[error(
        "schema migration {version} (`{name}`) was applied with checksum {recorded}, but the \
         shipped SQL has checksum {shipped}: a shipped migration must never change; add a new one"
    )]
    Edited {
        /// The migration's number.
        version: u32,
        /// The migration's name.
        name: &'static str,
        /// The checksum the database recorded.
        recorded: String,
        /// The checksum of the shipped SQL.
        shipped: String,
    },
}

/// The SHA-256 of `sql`, in hex.
pub(crate) fn checksum(sql: &str) -> String {
    cqrs_core::__private::sha256_hex(sql.as_bytes())
}

pub(crate) fn now_micros() -> i64 {
    crate::rows::micros(SystemTime::now())
}

/// Applies the migrations of [`MIGRATIONS`] the database has not recorded, in one `BEGIN
/// IMMEDIATE` transaction (DDL is transactional in SQLite: a failure leaves no trace, and another
/// process migrating at the same time waits for the lock, then finds them applied). Returns the
/// numbers of those it applied.
pub(crate) fn run(connection: &mut Connection) -> Result<Vec<u32>, StoreError> {
    let bookkeeping = |error: rusqlite::Error| {
        StoreError::backend(MigrationError::Failed {
            version: 0,
            name: "cqrs_schema_migrations",
            source: SqliteError::new("recording migrations", &error),
        })
    };
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(bookkeeping)?;
    transaction
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS cqrs_schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT    NOT NULL,
                 checksum   TEXT    NOT NULL,
                 applied_at INTEGER NOT NULL
             ) STRICT",
        )
        .map_err(bookkeeping)?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let failed = |error: rusqlite::Error| {
            StoreError::backend(MigrationError::Failed {
                version: migration.version,
                name: migration.name,
                source: SqliteError::new("migrating", &error),
            })
        };
        let shipped = checksum(migration.sql);
        let recorded: Option<String> = transaction
            .query_row(
                "SELECT checksum FROM cqrs_schema_migrations WHERE version = ?1",
                [migration.version],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed)?;
        match recorded {
            Some(recorded) if recorded == shipped => continue,
            Some(recorded) => {
                return Err(StoreError::backend(MigrationError::Edited {
                    version: migration.version,
                    name: migration.name,
                    recorded,
                    shipped,
                }));
            }
            None => {}
        }
        transaction.execute_batch(migration.sql).map_err(failed)?;
        transaction
            .execute(
                "INSERT INTO cqrs_schema_migrations (version, name, checksum, applied_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![migration.version, migration.name, shipped, now_micros()],
            )
            .map_err(failed)?;
        applied.push(migration.version);
    }
    transaction.commit().map_err(bookkeeping)?;
    Ok(applied)
}

/// Applies the migrations of `owner`'s read model that the database has not recorded, in
/// order, on the writer's `connection` (inside its transaction: all of them or none). Returns the
/// numbers of those it applied.
pub(crate) fn run_read_model(
    connection: &Connection,
    owner: &str,
    migrations: &[Migration],
) -> Result<Vec<u32>, StoreError> {
    let mut sorted: Vec<&Migration> = migrations.iter().collect();
    sorted.sort_by_key(|migration| migration.version);
    let mut applied = Vec::new();
    for migration in sorted {
        let failed = |error: rusqlite::Error| {
            StoreError::backend(MigrationError::ReadModelFailed {
                owner: owner.to_owned(),
                version: migration.version,
                name: migration.name,
                source: SqliteError::new("migrating a read model", &error),
            })
        };
        let shipped = checksum(migration.sql);
        let recorded: Option<String> = connection
            .query_row(
                "SELECT checksum FROM cqrs_read_model_migrations WHERE owner = ?1 AND version = ?2",
                rusqlite::params![owner, migration.version],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed)?;
        match recorded {
            Some(recorded) if recorded == shipped => continue,
            Some(recorded) => {
                return Err(StoreError::backend(MigrationError::ReadModelEdited {
                    owner: owner.to_owned(),
                    version: migration.version,
                    name: migration.name,
                    recorded,
                    shipped,
                }));
            }
            None => {}
        }
        connection.execute_batch(migration.sql).map_err(failed)?;
        connection
            .execute(
                "INSERT INTO cqrs_read_model_migrations \
                 (owner, version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    owner,
                    migration.version,
                    migration.name,
                    shipped,
                    now_micros()
                ],
            )
            .map_err(failed)?;
        applied.push(migration.version);
    }
    Ok(applied)
}
