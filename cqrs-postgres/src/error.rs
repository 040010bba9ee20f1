//! What the driver and the server said, carried inside [`StoreError::Backend`] so that its
//! message is never an opaque "db error".

use std::fmt;

use cqrs_core::StoreError;
use tokio_postgres::error::SqlState;

use crate::PoolOptions;

/// An error of the PostgreSQL driver, or of the server it talked to, shown with the server's
/// SQLSTATE, message, detail and hint (`ERROR 40P01: deadlock detected; DETAIL: ...`), or with
/// the driver's own cause (`error connecting to server: Connection refused (os error 111)`).
///
/// The driver's error is its [`source`](std::error::Error::source); [`code`](Self::code) gives
/// the SQLSTATE to match on.
#[derive(Debug)]
pub struct DatabaseError {
    error: tokio_postgres::Error,
}

impl DatabaseError {
    /// The SQLSTATE the server answered with, when the server answered.
    pub fn code(&self) -> Option<&SqlState> {
        self.error.code()
    }

    /// The driver's error.
    pub fn driver(&self) -> &tokio_postgres::Error {
        &self.error
    }
}

impl From<tokio_postgres::Error> for DatabaseError {
    fn from(error: tokio_postgres::Error) -> Self {
        DatabaseError { error }
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Described(&self.error), f)
    }
}

/// A driver error displayed with what the server said (see [`DatabaseError`]).
pub(crate) struct Described<'a>(pub(crate) &'a tokio_postgres::Error);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = self.0;
        if let Some(db) = error.as_db_error() {
            write!(
                f,
                "the server said {} {}: {}",
                db.severity(),
                db.code().code(),
                db.message()
            )?;
            if let Some(detail) = db.detail() {
                write!(f, "; DETAIL: {}", one_line(detail))?;
            }
            if let Some(hint) = db.hint() {
                write!(f, "; HINT: {}", one_line(hint))?;
            }
            return Ok(());
        }
        // The driver's kind ("error connecting to server"), then every cause below it.
        write!(f, "{error}")?;
        let mut cause = std::error::Error::source(error);
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

/// A driver or server error as a store error that says what the server said.
pub(crate) fn backend(error: tokio_postgres::Error) -> StoreError {
    StoreError::backend(DatabaseError::from(error))
}

/// A failure to get a pooled connection: a typed timeout when every connection stayed busy (or
/// connecting took too long), the server's answer when connecting failed.
pub(crate) fn pool(error: deadpool_postgres::PoolError, options: &PoolOptions) -> StoreError {
    use deadpool_postgres::{PoolError, TimeoutType};
    let (wait, connect) = (options.wait_timeout, options.connect_timeout);
    match error {
        PoolError::Timeout(TimeoutType::Wait) => StoreError::Timeout {
            what: format!("a pooled connection: all {} stayed busy", options.size),
            waited: wait.unwrap_or_default(),
        },
        PoolError::Timeout(TimeoutType::Create) => StoreError::Timeout {
            what: "a new connection to the server".to_owned(),
            waited: connect.unwrap_or_default(),
        },
        PoolError::Timeout(TimeoutType::Recycle) => StoreError::Timeout {
            what: "a pooled connection to be checked".to_owned(),
            waited: wait.unwrap_or_default(),
        },
        PoolError::Backend(error) => backend(error),
        other => StoreError::backend(crate::PostgresError::Pool(other.to_string())),
    }
}

/// Whether the server rolled the statement's transaction back for a reason that a new attempt
/// does not meet again (a deadlock victim, a serialization failure): nothing was written, and
/// the append can be sent again.
pub(crate) fn is_transient(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(is_transient_code)
}

/// Whether `code` is one of [`is_transient`]'s.
pub(crate) fn is_transient_code(code: &SqlState) -> bool {
    matches!(
        *code,
        SqlState::T_R_DEADLOCK_DETECTED | SqlState::T_R_SERIALIZATION_FAILURE
    )
}
