//! The schema migrations the crate ships, applied in order by [`PostgresStore::migrate`].
//!
//! [`PostgresStore::migrate`]: crate::PostgresStore::migrate

use cqrs_core::StoreError;
use deadpool_postgres::Pool;

use crate::PoolOptions;

/// One shipped schema migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its number: migrations run in increasing order, each once.
    pub version: i32,
    /// A short name, recorded with the number.
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
}

/// Every migration, oldest first. A later schema change (a projection checkpoint table, say) is
/// a new entry at the end; a shipped entry is never edited.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_store",
        sql: include_str!("../migrations/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        name: "projections_and_sagas",
        sql: include_str!("../migrations/0002_projections_and_sagas.sql"),
    },
    Migration {
        version: 3,
        name: "append_batch",
        sql: include_str!("../migrations/0003_append_batch.sql"),
    },
    Migration {
        version: 4,
        name: "turns",
        sql: include_str!("../migrations/0004_turns.sql"),
    },
    Migration {
        version: 5,
        name: "processors",
        sql: include_str!("../migrations/0005_processors.sql"),
    },
];

/// The advisory lock that serializes concurrent `migrate` calls (from several nodes starting at
/// once), so that each migration runs exactly once.
const MIGRATION_LOCK: i64 = 7_305_271_043_612_851_202;

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
#[error("schema migration {version} (`{name}`) failed: {}", crate::error::Described(.source))]
pub struct MigrationError {
    /// The migration's number.
    pub version: i32,
    /// The migration's name.
    pub name: &'static str,
    /// What the server said.
    #[source]
    pub source: tokio_postgres::Error,
}

/// Applies the migrations of `MIGRATIONS` that the database has not recorded yet, each in its own
/// transaction together with its record.
pub(crate) async fn run(pool: &Pool, options: &PoolOptions) -> Result<Vec<i32>, StoreError> {
    let mut client = pool
        .get()
        .await
        .map_err(|error| crate::error::pool(error, options))?;
    // One transaction for everything: DDL is transactional in PostgreSQL, so a failed migration
    // leaves no trace, and the lock taken first makes concurrent callers run one after another.
    let transaction = client.transaction().await.map_err(crate::error::backend)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(crate::error::backend)?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS cqrs_schema_migrations (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(crate::error::backend)?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let wrap = |source| {
            StoreError::backend(MigrationError {
                version: migration.version,
                name: migration.name,
                source,
            })
        };
        let done = transaction
            .query_opt(
                "SELECT 1 FROM cqrs_schema_migrations WHERE version = $1",
                &[&migration.version],
            )
            .await
            .map_err(wrap)?
            .is_some();
        if done {
            continue;
        }
        transaction
            .batch_execute(migration.sql)
            .await
            .map_err(wrap)?;
        transaction
            .execute(
                "INSERT INTO cqrs_schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await
            .map_err(wrap)?;
        applied.push(migration.version);
    }
    transaction.commit().await.map_err(crate::error::backend)?;
    Ok(applied)
}
