//! Read your own writes over HTTP: a command's response says the position its events reached,
//! the client sends it back with its next read, and the read waits until the projection it
//! reads has got there.
//!
//! The position travels in the `Consistency-Position` header both ways (a client that cannot
//! set headers may use the query parameter `?after=42` instead). [`CommandReceipt`] writes it
//! on the command's response, [`ConsistencyPosition`] reads it from a request, and [`CaughtUp`]
//! reads it and waits, answering 504 when the projection does not get there in time.

use std::marker::PhantomData;

use axum::Json;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cqrs_core::projection::Projection;
use cqrs_core::{ExecuteOutcome, Position};
use serde::Serialize;

use crate::problem::{Problem, kinds};
use crate::processors::Processors;

/// The header's name, `Consistency-Position`.
pub const CONSISTENCY_POSITION: HeaderName = HeaderName::from_static("consistency-position");

/// The header set on the response to a command whose id had already been applied:
/// `Idempotent-Replayed: true`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The position a request asks its read to reflect: the `Consistency-Position` header, or the
/// `after` query parameter; the later one when both are given, `None` when neither is.
///
/// A value that is not a whole number is answered with a 400 problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsistencyPosition(pub Option<Position>);

impl<S: Send + Sync> FromRequestParts<S> for ConsistencyPosition {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let header = match parts.headers.get(&CONSISTENCY_POSITION) {
            Some(value) => Some(parse_position(
                value.to_str().unwrap_or("\u{fffd}"),
                "the Consistency-Position header",
            )?),
            None => None,
        };
        let query = match query_after(parts.uri.query().unwrap_or("")) {
            Some(value) => Some(parse_position(value, "the `after` query parameter")?),
            None => None,
        };
        Ok(ConsistencyPosition(header.max(query)))
    }
}

/// The value of the first `after=` pair of a query string. Positions are digits, so there is
/// nothing to percent-decode in a valid one.
fn query_after(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("after="))
}

fn parse_position(text: &str, source: &str) -> Result<Position, Problem> {
    text.trim().parse::<u64>().map(Position).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            kinds::INVALID_POSITION,
            "invalid consistency position",
        )
        .detail(format_args!(
            "{source} must be a position (a whole number), not {text:?}"
        ))
    })
}

/// An extractor that waits until the projection `P` has reached the request's
/// [`ConsistencyPosition`], before the handler reads its model.
///
/// The state must give a [`Processors`] (`FromRef`) in which `P`'s processor is registered under
/// [`P::NAME`](Projection::NAME). A request without a position does not wait. The wait lasts at
/// most [`Processors::wait_timeout`]; then the request is answered with a 504 problem (503 when
/// the projection has stopped, 404 when it is not registered).
///
/// ```
/// use axum::extract::State;
/// use cqrs_examples::shop::orders_by_customer::OrdersByCustomer;
/// use cqrs_http::{CaughtUp, Processors};
///
/// async fn list_orders(
///     caught_up: CaughtUp<OrdersByCustomer>,
///     State(_processors): State<Processors>,
/// ) -> String {
///     format!("the read model covers position {}", caught_up.position)
/// }
///
/// let _: axum::Router<Processors> =
///     axum::Router::new().route("/orders", axum::routing::get(list_orders));
/// ```
pub struct CaughtUp<P> {
    /// The processor's checkpoint when the wait ended: at or after the position asked for (the
    /// checkpoint at once, when none was asked for).
    pub position: Position,
    projection: PhantomData<fn() -> P>,
}

impl<P> std::fmt::Debug for CaughtUp<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaughtUp")
            .field("position", &self.position)
            .finish()
    }
}

impl<S, P> FromRequestParts<S> for CaughtUp<P>
where
    S: Send + Sync,
    P: Projection,
    Processors: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let ConsistencyPosition(wanted) =
            ConsistencyPosition::from_request_parts(parts, state).await?;
        let processors = Processors::from_ref(state);
        let position = processors.wait_for(P::NAME, wanted).await?;
        Ok(CaughtUp {
            position,
            projection: PhantomData,
        })
    }
}

/// What a command did, as the response to it: a JSON body (`stream`, `version`, `position`,
/// `attempts`, `deduplicated`) and the `Consistency-Position` header when it wrote events (or
/// found them written by an earlier request with the same idempotency key, in which case
/// `Idempotent-Replayed: true` is set too).
///
/// ```
/// use cqrs_http::CommandReceipt;
/// # use cqrs_core::{ExecuteOutcome, Position, StreamId, Version};
/// # let outcome: ExecuteOutcome<()> = ExecuteOutcome {
/// #     stream: StreamId::new("order-1").unwrap(), version: Version(1), position: Some(Position(42)),
/// #     events: vec![()], attempts: 1, deduplicated: false, snapshot_error: None,
/// # };
/// let receipt = CommandReceipt::from(&outcome);
/// assert_eq!(receipt.headers()["consistency-position"], "42");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandReceipt {
    /// The aggregate's stream.
    pub stream: String,
    /// The stream's version after the command.
    pub version: u64,
    /// The global position of the last event written; `None` when the command wrote nothing.
    pub position: Option<Position>,
    /// How many times the command was decided (0 when it was found applied before).
    pub attempts: u32,
    /// Whether the command id had been applied before, so nothing was written now.
    pub deduplicated: bool,
}

impl<E> From<&ExecuteOutcome<E>> for CommandReceipt {
    fn from(outcome: &ExecuteOutcome<E>) -> Self {
        CommandReceipt {
            stream: outcome.stream.to_string(),
            version: outcome.version.0,
            position: outcome.position,
            attempts: outcome.attempts,
            deduplicated: outcome.deduplicated,
        }
    }
}

impl<E> From<ExecuteOutcome<E>> for CommandReceipt {
    fn from(outcome: ExecuteOutcome<E>) -> Self {
        CommandReceipt::from(&outcome)
    }
}

impl CommandReceipt {
    /// The headers the receipt sets, to put on a response with another body:
    /// `(receipt.headers(), Json(my_body))`.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(position) = self.position {
            headers.insert(CONSISTENCY_POSITION, HeaderValue::from(position.0));
        }
        if self.deduplicated {
            headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        headers
    }
}

impl IntoResponse for CommandReceipt {
    fn into_response(self) -> Response {
        (self.headers(), Json(self)).into_response()
    }
}
