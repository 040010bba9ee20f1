//! Opening a connection to the store's file with the store's pragmas.

use std::path::Path;

use cqrs_core::StoreError;
use rusqlite::{Connection, OpenFlags};

use crate::error::{SqliteError, SqliteStoreError};
use crate::options::SqliteOptions;

/// What a connection is for: the writer creates the file and switches it to WAL; readers only
/// read (`query_only`), so that a stray write through them fails instead of competing with the
/// writer for the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Writer,
    Reader,
}

/// Opens `path` for `role` with `options`' pragmas.
pub(crate) fn open(
    path: &Path,
    options: &SqliteOptions,
    role: Role,
) -> Result<Connection, StoreError> {
    let failed = |operation| {
        move |error: rusqlite::Error| {
            StoreError::backend(SqliteStoreError::Open {
                path: path.to_owned(),
                source: SqliteError::new(operation, &error),
            })
        }
    };
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if role == Role::Writer {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let connection = Connection::open_with_flags(path, flags).map_err(failed("opening"))?;
    // First, so that the pragmas below wait for another process's lock as well.
    connection
        .busy_timeout(options.busy_timeout)
        .map_err(failed("setting busy_timeout"))?;
    if role == Role::Writer {
        let mode: String = connection
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(failed("setting journal_mode=WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::backend(SqliteStoreError::NotWal {
                path: path.to_owned(),
                mode,
            }));
        }
    }
    connection
        .execute_batch(&format!(
            "PRAGMA synchronous={}; PRAGMA query_only={};",
            options.synchronous.pragma(),
            if role == Role::Reader { "ON" } else { "OFF" }
        ))
        .map_err(failed("setting synchronous"))?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}
