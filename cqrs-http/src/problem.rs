//! Problem details (RFC 9457): every error this crate answers with, and the mapping of a
//! command's [`ExecuteError`] to a status code.
//!
//! A [`Problem`] is a status code and an `application/problem+json` body with the members
//! `type`, `title`, `status` and `detail`, plus extension members (`stream`, `attempts`, ...).
//! Handlers return `Result<_, Problem>` and use `?` on a repository call: a refused command
//! becomes 422 (or 409, as [`DomainStatus`] chooses), a conflict that outlasted the retry budget
//! 409, a failing store 503, an invalid aggregate id 400, an event that does not encode or an
//! `apply` that panicked 500.
//!
//! The `detail` of a client error (4xx) is the error's own message: it says what the client
//! can change. A server error (5xx) says only which part failed; its full message, which may
//! name hosts, tables or panic texts, goes to the log (`tracing`, target `cqrs_http`) and not to
//! the client.

use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cqrs_core::ExecuteError;
use serde_json::{Map, Value};

/// The `type` URIs of the problems this crate answers with.
pub mod kinds {
    /// The aggregate refused the command ([`ExecuteError::Domain`](cqrs_core::ExecuteError)).
    pub const DOMAIN: &str = "urn:cqrs:problem:command-refused";
    /// The stream kept changing until the retry budget ran out.
    pub const CONFLICT: &str = "urn:cqrs:problem:conflict";
    /// The event store failed or is unreachable.
    pub const STORE_UNAVAILABLE: &str = "urn:cqrs:problem:store-unavailable";
    /// The aggregate id does not make a valid stream id.
    pub const INVALID_ID: &str = "urn:cqrs:problem:invalid-id";
    /// The server could not carry out the command (an event did not encode, `apply` panicked).
    pub const INTERNAL: &str = "urn:cqrs:problem:internal";
    /// The `Idempotency-Key` header is missing or not a valid command id.
    pub const INVALID_IDEMPOTENCY_KEY: &str = "urn:cqrs:problem:invalid-idempotency-key";
    /// The `Consistency-Position` header or the `after` query parameter is not a position.
    pub const INVALID_POSITION: &str = "urn:cqrs:problem:invalid-position";
    /// A projection did not reach the position asked for in time.
    pub const NOT_CAUGHT_UP: &str = "urn:cqrs:problem:not-caught-up";
    /// A processor is not running (stopped, failed, or shut down with the server).
    pub const PROCESSOR_UNAVAILABLE: &str = "urn:cqrs:problem:processor-unavailable";
    /// No processor or dead letter of that name.
    pub const NOT_FOUND: &str = "urn:cqrs:problem:not-found";
    /// A mutating admin call came without `confirm`.
    pub const CONFIRMATION_REQUIRED: &str = "urn:cqrs:problem:confirmation-required";
    /// The processor refused an admin call in its current state.
    pub const REFUSED: &str = "urn:cqrs:problem:refused";
    /// The request body is not what the endpoint reads.
    pub const INVALID_BODY: &str = "urn:cqrs:problem:invalid-body";
    /// A browser sent an admin call from a page of another origin.
    pub const CROSS_SITE: &str = "urn:cqrs:problem:cross-site-request";
}

/// An error response: a status code and an RFC 9457 `application/problem+json` body.
///
/// ```
/// use axum::http::StatusCode;
/// use cqrs_http::Problem;
///
/// let problem = Problem::new(StatusCode::NOT_FOUND, "urn:example:no-such-order", "no such order")
///     .detail("order `o-7` was never placed")
///     .extension("order", "o-7");
/// assert_eq!(problem.status(), StatusCode::NOT_FOUND);
/// assert_eq!(problem.body()["order"], "o-7");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    status: StatusCode,
    body: Map<String, Value>,
}

impl Problem {
    /// A problem with this status, `type` URI and short `title` (the same for every occurrence of
    /// the type).
    pub fn new(status: StatusCode, problem_type: &str, title: &str) -> Self {
        let mut body = Map::new();
        body.insert("type".to_owned(), Value::from(problem_type));
        body.insert("title".to_owned(), Value::from(title));
        body.insert("status".to_owned(), Value::from(status.as_u16()));
        Problem { status, body }
    }

    /// Sets the `detail`: what happened this time, in words for the client.
    #[must_use]
    pub fn detail(mut self, detail: impl fmt::Display) -> Self {
        self.body
            .insert("detail".to_owned(), Value::from(detail.to_string()));
        self
    }

    /// Adds an extension member. The standard members (`type`, `title`, `status`, `detail`,
    /// `instance`) cannot be replaced this way; such a key is ignored.
    #[must_use]
    pub fn extension(mut self, key: &str, value: impl Into<Value>) -> Self {
        if !matches!(key, "type" | "title" | "status" | "detail" | "instance") {
            self.body.insert(key.to_owned(), value.into());
        }
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    /// The `type` URI.
    pub fn problem_type(&self) -> &str {
        self.body.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// The problem of a failed command, with the status of a domain error chosen by `status_of`.
    ///
    /// This is the conversion `?` uses through [`DomainStatus`]; call it directly for an error
    /// type you cannot implement [`DomainStatus`] for (one from another crate), or to choose
    /// the status per endpoint:
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// use cqrs_core::ExecuteError;
    /// use cqrs_http::Problem;
    ///
    /// let error: ExecuteError<String> = ExecuteError::Domain("seat 12A is taken".to_owned());
    /// let problem = Problem::from_execute(error, |_| StatusCode::CONFLICT);
    /// assert_eq!(problem.status(), StatusCode::CONFLICT);
    /// assert_eq!(problem.body()["detail"], "seat 12A is taken");
    /// ```
    pub fn from_execute<E: fmt::Display>(
        error: ExecuteError<E>,
        status_of: impl FnOnce(&E) -> StatusCode,
    ) -> Self {
        match error {
            ExecuteError::Domain(error) => {
                Problem::new(status_of(&error), kinds::DOMAIN, "command refused").detail(error)
            }
            ExecuteError::Conflict {
                ref stream,
                attempts,
                ..
            } => Problem::new(
                StatusCode::CONFLICT,
                kinds::CONFLICT,
                "the aggregate kept changing",
            )
            .detail(&error)
            .extension("stream", stream.as_str())
            .extension("attempts", attempts),
            ExecuteError::InvalidStream(error) => {
                Problem::new(StatusCode::BAD_REQUEST, kinds::INVALID_ID, "invalid id").detail(error)
            }
            ExecuteError::Store(error) => {
                tracing::error!(target: "cqrs_http", %error, "command failed: the event store failed");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    kinds::STORE_UNAVAILABLE,
                    "event store unavailable",
                )
                .detail("the event store could not carry out the command; nothing was written")
            }
            ExecuteError::Apply(panicked) => {
                tracing::error!(target: "cqrs_http", error = %panicked, "command failed: apply panicked");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    kinds::INTERNAL,
                    "command failed",
                )
                .detail(format_args!(
                    "the aggregate could not apply an event; nothing was written to `{}`",
                    panicked.stream
                ))
                .extension("stream", panicked.stream.as_str())
            }
            ExecuteError::Encode(error) => {
                tracing::error!(target: "cqrs_http", %error, "command failed: an event did not encode");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    kinds::INTERNAL,
                    "command failed",
                )
                .detail("an event could not be encoded; nothing was written")
            }
            // `ExecuteError` is non-exhaustive: a kind added later is a server error until this
            // crate maps it.
            other => {
                tracing::error!(target: "cqrs_http", error = %other, "command failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    kinds::INTERNAL,
                    "command failed",
                )
                .detail("the command failed; nothing was written")
            }
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = self.body.get("title").and_then(Value::as_str).unwrap_or("");
        write!(f, "{} {title}", self.status.as_u16())?;
        if let Some(detail) = self.body.get("detail").and_then(Value::as_str) {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        // A map of strings and numbers always serializes; the fallback keeps the status anyway.
        let body = serde_json::to_vec(&self.body).unwrap_or_default();
        (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body,
        )
            .into_response()
    }
}

/// Which status a refused command answers with, for a domain error type.
///
/// The default is `422 Unprocessable Content`: the request was understood and the aggregate
/// said no. Return `409 Conflict` for refusals that are about the aggregate's current state and
/// may pass later or after a reload (an order already shipped, a seat already taken):
///
/// ```
/// use axum::http::StatusCode;
/// use cqrs_http::DomainStatus;
///
/// #[derive(Debug, thiserror::Error)]
/// enum SeatError {
///     #[error("seat {0} is taken")]
///     Taken(String),
///     #[error("seat {0} does not exist")]
///     Unknown(String),
/// }
///
/// impl DomainStatus for SeatError {
///     fn status(&self) -> StatusCode {
///         match self {
///             SeatError::Taken(_) => StatusCode::CONFLICT,
///             SeatError::Unknown(_) => StatusCode::UNPROCESSABLE_ENTITY,
///         }
///     }
/// }
/// ```
///
/// `impl DomainStatus for MyError {}` keeps 422 for every variant. With it, `?` turns an
/// `ExecuteError<MyError>` into a [`Problem`]. For an error type of another crate, which cannot
/// implement this trait here, use [`Problem::from_execute`] with a closure.
pub trait DomainStatus: fmt::Display {
    /// The status of this refusal (default: 422).
    fn status(&self) -> StatusCode {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

impl<E: DomainStatus> From<ExecuteError<E>> for Problem {
    fn from(error: ExecuteError<E>) -> Self {
        Problem::from_execute(error, DomainStatus::status)
    }
}
