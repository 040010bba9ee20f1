//! What can go wrong, and the exit code each failure ends the process with.

use cqrs_core::StoreError;

use crate::service::Refusal;

/// The process's exit codes (see the crate docs and `--help`).
pub(crate) mod exit {
    /// Success.
    pub(crate) const OK: u8 = 0;
    /// `check` found problems.
    pub(crate) const PROBLEMS: u8 = 1;
    /// A usage error.
    pub(crate) const USAGE: u8 = 2;
    /// The database could not be reached or opened, or the service could not be reached.
    pub(crate) const UNREACHABLE: u8 = 3;
    /// Any other failure.
    pub(crate) const FAILED: u8 = 4;
}

/// A failure of one run of the tool.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// No `--database` and no `DATABASE_URL`.
    #[error("no database given: pass --database URL or set DATABASE_URL")]
    NoDatabase,
    /// The argument cannot be used (an invalid stream id).
    #[error("{0}")]
    Usage(String),
    /// The database could not be opened or reached.
    #[error("cannot open the database: {0}")]
    Unreachable(String),
    /// A control or the live status was asked for without `--service`.
    #[error(
        "this needs the running service: pass --service URL (the address its admin router is \
         nested at, such as http://127.0.0.1:3000/admin) or set CQRS_ADMIN_SERVICE"
    )]
    NoService,
    /// The service could not be reached, or did not answer in time.
    #[error("cannot reach the service at {address}: {detail}")]
    ServiceUnreachable {
        /// The admin router's address.
        address: String,
        /// What failed.
        detail: String,
    },
    /// The service refused the call; its own words.
    #[error("the service refused: {0}")]
    Refused(Refusal),
    /// The service answered something the tool cannot read.
    #[error("{call}: {detail}")]
    ServiceAnswer {
        /// The call, as `GET http://.../status`.
        call: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// A rebuild the tool waited for ended in another state than live.
    #[error("the rebuild of `{processor}` did not finish: the processor is {state}{reason}")]
    RebuildStopped {
        /// The processor.
        processor: String,
        /// Its state.
        state: String,
        /// `: ` and its last error, when it has one.
        reason: String,
    },
    /// The store failed while serving a command.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The task that ran the command failed (it panicked).
    #[error("the command did not finish: {0}")]
    Task(String),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl AdminError {
    /// The exit code this failure ends the process with.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            AdminError::NoDatabase | AdminError::NoService | AdminError::Usage(_) => exit::USAGE,
            AdminError::Unreachable(_) | AdminError::ServiceUnreachable { .. } => exit::UNREACHABLE,
            AdminError::Refused(_)
            | AdminError::ServiceAnswer { .. }
            | AdminError::RebuildStopped { .. }
            | AdminError::Store(_)
            | AdminError::Task(_)
            | AdminError::Output(_) => exit::FAILED,
        }
    }
}
