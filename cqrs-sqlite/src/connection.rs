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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::options::Synchronous;
    use crate::scratch::ScratchFile;

    fn pragma(connection: &Connection, name: &str) -> String {
        connection
            .query_row(&format!("PRAGMA {name}"), [], |row| {
                row.get::<_, rusqlite::types::Value>(0)
            })
            .map(|value| match value {
                rusqlite::types::Value::Integer(number) => number.to_string(),
                rusqlite::types::Value::Text(text) => text,
                other => format!("{other:?}"),
            })
            .expect("pragma")
    }

    #[test]
    fn the_writer_gets_wal_full_sync_and_the_busy_timeout_by_default() {
        let file = ScratchFile::new("pragmas-default");
        let writer =
            open(file.path(), &SqliteOptions::default(), Role::Writer).expect("open writer");
        assert_eq!(pragma(&writer, "journal_mode"), "wal");
        // 2 is FULL.
        assert_eq!(pragma(&writer, "synchronous"), "2");
        assert_eq!(pragma(&writer, "busy_timeout"), "5000");
        assert_eq!(pragma(&writer, "query_only"), "0");
    }

    #[test]
    fn normal_sync_and_another_busy_timeout_are_applied_and_readers_only_read() {
        let file = ScratchFile::new("pragmas-normal");
        let options = SqliteOptions::default()
            .synchronous(Synchronous::Normal)
            .busy_timeout(Duration::from_millis(1_250));
        let _writer = open(file.path(), &options, Role::Writer).expect("open writer");
        let reader = open(file.path(), &options, Role::Reader).expect("open reader");
        // 1 is NORMAL.
        assert_eq!(pragma(&reader, "synchronous"), "1");
        assert_eq!(pragma(&reader, "busy_timeout"), "1250");
        assert_eq!(pragma(&reader, "journal_mode"), "wal");
        let refused = reader
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .expect_err("a reader cannot write");
        let message = crate::error::SqliteError::new("writing", &refused).to_string();
        assert!(
            message.contains("readonly") || message.contains("read-only"),
            "{message}"
        );
    }

    #[test]
    fn a_reader_does_not_create_a_missing_file() {
        let file = ScratchFile::new("pragmas-missing");
        let error = open(file.path(), &SqliteOptions::default(), Role::Reader)
            .expect_err("no file to read");
        let message = error.to_string();
        assert!(
            message.contains("cannot open the SQLite database"),
            "{message}"
        );
        assert!(message.contains("SQLITE_CANTOPEN"), "{message}");
        assert!(!file.path().exists());
    }
}
