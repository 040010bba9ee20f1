//! Which database a `--database` value names, and opening it as the store the commands use.

use std::path::{Path, PathBuf};

use cqrs_core::admin::{MigrationState, StoreAdmin};
use cqrs_core::processor::ProcessorStore;
use cqrs_core::{EventStore, StoreError};
use cqrs_postgres::{DatabaseError, PostgresStore};
use cqrs_sqlite::SqliteStore;

use crate::error::AdminError;

/// What a `--database` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database: a URL or `key=value` pairs, as tokio-postgres parses them. It may
    /// hold a password: never printed.
    Postgres(String),
}

impl Target {
    /// Reads a `--database` value: `sqlite://PATH`, `sqlite:PATH` or a path ending in `.db`
    /// for SQLite; `postgres://...`, `postgresql://...` or `key=value` pairs for PostgreSQL.
    pub(crate) fn parse(value: &str) -> Result<Self, AdminError> {
        if let Some(path) = value
            .strip_prefix("sqlite://")
            .or_else(|| value.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(AdminError::Unreachable(
                    "`sqlite://` names no file: write sqlite://PATH".to_owned(),
                ));
            }
            return Ok(Target::Sqlite(PathBuf::from(path)));
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(Target::Postgres(value.to_owned()));
        }
        if !value.contains("://") && value.ends_with(".db") {
            return Ok(Target::Sqlite(PathBuf::from(value)));
        }
        if !value.contains("://") && value.contains('=') {
            return Ok(Target::Postgres(value.to_owned()));
        }
        Err(AdminError::Unreachable(
            "cannot tell which database the --database value names: write sqlite://PATH, a \
             path ending in .db, postgres://... or PostgreSQL key=value pairs"
                .to_owned(),
        ))
    }
}

/// An open store of either backend.
pub(crate) enum Database {
    /// A SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PostgresStore),
}

impl Database {
    /// Opens `target`. A SQLite file must exist unless `create` says it may be made; a
    /// PostgreSQL server must answer.
    pub(crate) async fn open(target: &Target, create: bool) -> Result<Self, AdminError> {
        match target {
            Target::Sqlite(path) => {
                if !create && !path.exists() {
                    return Err(AdminError::Unreachable(format!(
                        "there is no SQLite database at `{}`",
                        path.display()
                    )));
                }
                let store = SqliteStore::open(path)
                    .await
                    .map_err(|error| AdminError::Unreachable(error.to_string()))?;
                Ok(Database::Sqlite(store))
            }
            Target::Postgres(url) => {
                let store = PostgresStore::with_pool_size(url, 2)
                    .map_err(|error| AdminError::Unreachable(error.to_string()))?;
                reach(&store).await?;
                Ok(Database::Postgres(store))
            }
        }
    }

    /// The store's events.
    pub(crate) fn events(&self) -> &dyn EventStore {
        match self {
            Database::Sqlite(store) => store,
            Database::Postgres(store) => store,
        }
    }

    /// The store's admin seam.
    pub(crate) fn admin(&self) -> &dyn StoreAdmin {
        match self {
            Database::Sqlite(store) => store,
            Database::Postgres(store) => store,
        }
    }

    /// The store's processor records.
    pub(crate) fn processors(&self) -> &dyn ProcessorStore {
        match self {
            Database::Sqlite(store) => store,
            Database::Postgres(store) => store,
        }
    }

    /// Applies the migrations the database lacks; returns the numbers of those applied.
    pub(crate) async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        match self {
            Database::Sqlite(store) => store.migrate().await,
            Database::Postgres(store) => Ok(store
                .migrate()
                .await?
                .into_iter()
                .filter_map(|version| u32::try_from(version).ok())
                .collect()),
        }
    }

    /// Closes the store (SQLite moves its WAL into the file).
    pub(crate) async fn close(self) -> Result<(), StoreError> {
        match self {
            Database::Sqlite(store) => store.close().await,
            Database::Postgres(_) => Ok(()),
        }
    }
}

/// The migrations a SQLite file that does not exist yet lacks: all of them.
pub(crate) fn sqlite_migrations_of_a_new_file() -> Vec<MigrationState> {
    cqrs_sqlite::migrate::MIGRATIONS
        .iter()
        .map(|migration| MigrationState {
            version: migration.version,
            name: migration.name.to_owned(),
            applied: false,
        })
        .collect()
}

/// Whether `target` is a SQLite file that does not exist.
pub(crate) fn is_missing_file(target: &Target) -> bool {
    matches!(target, Target::Sqlite(path) if !Path::new(path).exists())
}

/// Takes a connection and runs `SELECT 1`, so that a server that cannot be reached is said
/// so at once, with what the server or the driver said.
async fn reach(store: &PostgresStore) -> Result<(), AdminError> {
    use cqrs_postgres::deadpool_postgres::PoolError;
    let client = store.pool().get().await.map_err(|error| {
        AdminError::Unreachable(match error {
            PoolError::Backend(error) => DatabaseError::from(error).to_string(),
            PoolError::Timeout(_) => "the server did not answer in time".to_owned(),
            other => other.to_string(),
        })
    })?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|error| AdminError::Unreachable(DatabaseError::from(error).to_string()))?;
    Ok(())
}
