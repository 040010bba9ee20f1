//! The `Idempotency-Key` header as a command id, so that a command sent twice has one effect.
//!
//! The repository records the command id with the events it writes, in the same atomic step;
//! a second command with the same id on the same aggregate writes nothing and returns the
//! first one's outcome (with `deduplicated` set). A client that retries after a timeout sends
//! the same key again and gets the same answer, whether or not the first request got through.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use cqrs_core::{CommandId, CommandMetadata};

use crate::problem::{Problem, kinds};

/// The header's name, `Idempotency-Key`.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The `Idempotency-Key` header of a request, checked as a [`CommandId`].
///
/// As an extractor it requires the header: a request without one, or with a key that is not
/// a valid command id (empty, longer than 256 bytes, not visible ASCII), is answered with a
/// 400 problem. Extract `Option<IdempotencyKey>` to make the header optional: a missing
/// header is `None`, an invalid one still 400.
///
/// The key may be sent bare (`Idempotency-Key: 8e03978e`) or as a quoted string
/// (`Idempotency-Key: "8e03978e"`, the form of the IETF draft); both give the same id.
///
/// ```
/// use axum::Json;
/// use cqrs_http::IdempotencyKey;
///
/// async fn place_order(key: IdempotencyKey, Json(order): Json<String>) -> String {
///     // repository.execute_with(&order, command, key.metadata()).await?
///     format!("{order} with command id {}", key.command_id())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub CommandId);

impl IdempotencyKey {
    /// The key as a command id.
    pub fn command_id(&self) -> &CommandId {
        &self.0
    }

    /// Command metadata carrying the key as its command id, for
    /// [`Repository::execute_with`](cqrs_core::Repository::execute_with).
    pub fn metadata(&self) -> CommandMetadata {
        CommandMetadata::with_command_id(self.0.clone())
    }

    /// The key of `parts`' header: `None` when there is none, a 400 problem when it is not a
    /// valid command id.
    fn from_parts(parts: &Parts) -> Result<Option<Self>, Problem> {
        let Some(value) = parts.headers.get(&IDEMPOTENCY_KEY) else {
            return Ok(None);
        };
        let text = value
            .to_str()
            .map_err(|_| invalid_key("the key must be visible ASCII"))?;
        let key = text
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or(text);
        let command_id = CommandId::new(key).map_err(invalid_key)?;
        Ok(Some(IdempotencyKey(command_id)))
    }
}

fn invalid_key(reason: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        kinds::INVALID_IDEMPOTENCY_KEY,
        "invalid Idempotency-Key header",
    )
    .detail(reason)
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        IdempotencyKey::from_parts(parts)?.ok_or_else(|| {
            invalid_key("this endpoint needs an Idempotency-Key header, so that a retry has no second effect")
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Problem> {
        IdempotencyKey::from_parts(parts)
    }
}
