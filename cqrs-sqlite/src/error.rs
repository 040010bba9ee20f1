//! What SQLite said, carried inside [`StoreError::Backend`] so that a failure is never an opaque
//! "db error", and the failures of this crate's own making.

use std::fmt;
use std::path::PathBuf;

use cqrs_core::StoreError;

/// A failure of SQLite (or of the `rusqlite` binding around it), with what the store was doing,
/// SQLite's extended result code and its message: `appending: SQLite said "database is locked"
/// (SQLITE_BUSY, extended code 5)`.
///
/// It keeps the code and the message, not the binding's error, so that one failure of a write
/// transaction can be handed to every append of its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteError {
    /// What the store was doing (`opening`, `appending`, `reading a stream`, ...).
    pub operation: &'static str,
    /// SQLite's extended result code, when SQLite itself failed.
    pub extended_code: Option<i32>,
    /// SQLite's primary result code, by name (`SQLITE_BUSY`), when SQLite itself failed.
    pub code_name: Option<&'static str>,
    /// SQLite's message, or the binding's when the failure was not SQLite's.
    pub message: String,
}

impl SqliteError {
    /// Wraps `error`, met while doing `operation`.
    pub fn new(operation: &'static str, error: &rusqlite::Error) -> Self {
        match error {
            rusqlite::Error::SqliteFailure(failure, message) => SqliteError {
                operation,
                extended_code: Some(failure.extended_code),
                code_name: Some(code_name(failure.code)),
                message: message
                    .clone()
                    .unwrap_or_else(|| rusqlite::ffi::code_to_str(failure.extended_code).into()),
            },
            other => SqliteError {
                operation,
                extended_code: None,
                code_name: None,
                message: other.to_string(),
            },
        }
    }

    /// A failure the store noticed itself while doing `operation`, with no SQLite code.
    pub(crate) fn noticed(operation: &'static str, message: String) -> Self {
        SqliteError {
            operation,
            extended_code: None,
            code_name: None,
            message,
        }
    }

    /// Whether SQLite answered that another connection held the lock for longer than the busy
    /// timeout (`SQLITE_BUSY`): nothing was written and the call may be retried.
    pub fn is_busy(&self) -> bool {
        self.extended_code
            .is_some_and(|code| code & 0xff == rusqlite::ffi::SQLITE_BUSY)
    }
}

impl fmt::Display for SqliteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code_name, self.extended_code) {
            (Some(name), Some(code)) => write!(
                f,
                "{}: SQLite said {:?} ({name}, extended code {code})",
                self.operation, self.message
            ),
            _ => write!(f, "{}: {}", self.operation, self.message),
        }
    }
}

impl std::error::Error for SqliteError {}

fn code_name(code: rusqlite::ErrorCode) -> &'static str {
    use rusqlite::ErrorCode::*;
    match code {
        InternalMalfunction => "SQLITE_INTERNAL",
        PermissionDenied => "SQLITE_PERM",
        OperationAborted => "SQLITE_ABORT",
        DatabaseBusy => "SQLITE_BUSY",
        DatabaseLocked => "SQLITE_LOCKED",
        OutOfMemory => "SQLITE_NOMEM",
        ReadOnly => "SQLITE_READONLY",
        OperationInterrupted => "SQLITE_INTERRUPT",
        SystemIoFailure => "SQLITE_IOERR",
        DatabaseCorrupt => "SQLITE_CORRUPT",
        NotFound => "SQLITE_NOTFOUND",
        DiskFull => "SQLITE_FULL",
        CannotOpen => "SQLITE_CANTOPEN",
        FileLockingProtocolFailed => "SQLITE_PROTOCOL",
        SchemaChanged => "SQLITE_SCHEMA",
        TooBig => "SQLITE_TOOBIG",
        ConstraintViolation => "SQLITE_CONSTRAINT",
        TypeMismatch => "SQLITE_MISMATCH",
        ApiMisuse => "SQLITE_MISUSE",
        NoLargeFileSupport => "SQLITE_NOLFS",
        AuthorizationForStatementDenied => "SQLITE_AUTH",
        ParameterOutOfRange => "SQLITE_RANGE",
        NotADatabase => "SQLITE_NOTADB",
        _ => "SQLITE_ERROR",
    }
}

/// A binding error met while doing `operation`, as a store error that says what SQLite said.
pub(crate) fn backend(operation: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::backend(SqliteError::new(operation, &error))
}

/// Failures of this crate's own making, carried inside [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteStoreError {
    /// The database file could not be opened.
    #[error("cannot open the SQLite database `{}`: {source}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: SqliteError,
    },
    /// The file could not be put in WAL mode (a database on a file system without shared
    /// memory, or an in-memory database).
    #[error(
        "the SQLite database `{}` answered journal mode `{mode}` to `PRAGMA journal_mode=WAL`",
        .path.display()
    )]
    NotWal {
        /// The file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The store's writer thread is gone (it could not be started, or it panicked): nothing
    /// more can be written through this store.
    #[error("the SQLite store's writer thread for `{}` has stopped", .path.display())]
    WriterStopped {
        /// The file.
        path: PathBuf,
    },
    /// A blocking read task could not finish (its runtime is shutting down, or it panicked).
    #[error("a blocking SQLite read did not finish: {0}")]
    ReadTask(String),
    /// Work run on the writer's connection (a processor's batch) panicked: what it wrote was
    /// rolled back.
    #[error("work on the SQLite writer panicked and was rolled back: {0}")]
    WorkPanicked(String),
    /// A processor's stored record (checkpoint, dead letter, saga instance) does not read back
    /// (edited by hand, written by something else than this crate), or cannot be written.
    #[error("{what} of processor `{processor}` {reason}")]
    ProcessorRecord {
        /// The processor.
        processor: String,
        /// Which record: `the checkpoint`, `dead letter \`12\``, `instance \`order-7\``.
        what: String,
        /// What is wrong with it: `does not decode: ...`, `cannot be encoded: ...`.
        reason: String,
    },
}

/// A [`SqliteStoreError::ProcessorRecord`] as a store error.
pub(crate) fn record_error(
    processor: &str,
    what: impl Into<String>,
    reason: impl Into<String>,
) -> StoreError {
    StoreError::backend(SqliteStoreError::ProcessorRecord {
        processor: processor.to_owned(),
        what: what.into(),
        reason: reason.into(),
    })
}
