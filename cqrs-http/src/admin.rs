//! Admin endpoints over the processors of a service: status, health, dead letters, and the
//! controls (rebuild, pause, resume, retry or discard a dead letter).
//!
//! [`router`] gives a router to nest under a prefix of your choice, behind whatever
//! authentication the service uses (this crate adds none):
//!
//! | call | answer |
//! | --- | --- |
//! | `GET /` | the status page (below) |
//! | `GET /metrics` | Prometheus text, when [`Admin::prometheus`] was given the exporter's render |
//! | `GET /status` | every processor's [`ProcessorStatus`] (name, state, checkpoint, head, lag, ...) |
//! | `GET /health` | the [`Health`] of [`Processors::health`]: 200 when healthy, 503 when not |
//! | `GET /processors/{name}/dead-letters` | the processor's dead letters, oldest first |
//! | `POST /processors/{name}/rebuild` | empties the read model and replays the log |
//! | `POST /processors/{name}/pause` | pauses after the batch in hand |
//! | `POST /processors/{name}/resume` | resumes a paused or failed processor |
//! | `POST /processors/{name}/reset?to=N` | moves the checkpoint forward to `N`, skipping the events in between |
//! | `POST /processors/{name}/dead-letters/{id}/retry` | handles the dead letter's event again |
//! | `POST /processors/{name}/dead-letters/{id}/discard` | drops the dead letter |
//!
//! `GET /` is a status page (HTML and a little JavaScript, no build step, nothing loaded from
//! elsewhere): every processor's state, checkpoint, lag and last error, the dead letters, and
//! pause, resume, rebuild, retry and discard buttons that ask before they act. It refreshes
//! itself every 2 seconds. Nested at `/admin`, it is at `/admin` (and the calls it makes are
//! relative to it).
//!
//! A `POST` changes what a processor does, so it must be confirmed: `?confirm=true`, or the JSON
//! body `{"confirm": true}`. Without it nothing happens and the answer is a 400 problem whose
//! `detail` says what the call would have done (and whose `effect` member says it alone, for a
//! client to show: "pause `orders` after the batch in hand, until it is resumed"). A dead
//! letter id with a `/` in it (a saga deadline's) is sent percent-encoded
//! (`deadline%2Forder-1%2Fpay`).
//!
//! A `POST` that a browser sends from a page of another origin is refused with 403 (by its
//! `Sec-Fetch-Site` header, or an `Origin` that is not the `Host`), so that another site a
//! signed-in operator visits cannot press the buttons. Clients that are not browsers (the
//! `cqrs-admin` CLI, `curl`) send neither header and are not affected.
//!
//! [`ProcessorStatus`]: cqrs_core::processor::ProcessorStatus
//! [`Health`]: cqrs_core::processor::Health

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cqrs_core::Position;
use cqrs_core::processor::{ControlError, ProcessorHandle};
use serde::{Deserialize, Serialize};

use crate::problem::{Problem, kinds};
use crate::processors::Processors;

/// The admin router over `processors`, to nest under a prefix:
/// `app.nest("/admin", admin::router(processors))`. It carries its own state, so it fits a
/// router of any state type. [`Admin`] configures more (Prometheus text at `/metrics`).
pub fn router<S: Clone + Send + Sync + 'static>(processors: Processors) -> Router<S> {
    Admin::new(processors).router()
}

/// What renders the metrics as Prometheus text.
type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The admin router, configured; [`router`](Admin::router) makes it.
///
/// ```no_run
/// # fn wiring(processors: cqrs_http::Processors, render: fn() -> String) {
/// use cqrs_http::admin::Admin;
///
/// // With `metrics-exporter-prometheus`: `let handle = PrometheusBuilder::new()
/// // .install_recorder()?;`, then `.prometheus(move || handle.render())`.
/// let admin: axum::Router = Admin::new(processors).prometheus(render).router();
/// # }
/// ```
pub struct Admin {
    processors: Processors,
    metrics: Option<Render>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("processors", &self.processors)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl Admin {
    /// The admin calls over `processors`, without `/metrics`.
    pub fn new(processors: Processors) -> Self {
        Admin {
            processors,
            metrics: None,
        }
    }

    /// Serves `GET /metrics` with what `render` returns, in Prometheus' text format: the render
    /// function of the exporter the service installed as its `metrics` recorder (with
    /// `metrics-exporter-prometheus`, `move || handle.render()`). Without it, `/metrics` is a 404
    /// problem that says so.
    #[must_use]
    pub fn prometheus(mut self, render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.metrics = Some(Arc::new(render));
        self
    }

    /// The router, to nest under a prefix.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let metrics = self.metrics;
        Router::new()
            .route("/", get(status_page))
            .route("/metrics", get(move || metrics_text(metrics.clone())))
            .route("/status", get(status))
            .route("/health", get(health))
            .route("/processors/{name}/dead-letters", get(dead_letters))
            .route("/processors/{name}/rebuild", post(rebuild))
            .route("/processors/{name}/pause", post(pause))
            .route("/processors/{name}/resume", post(resume))
            .route("/processors/{name}/reset", post(reset))
            .route(
                "/processors/{name}/dead-letters/{id}/retry",
                post(retry_dead_letter),
            )
            .route(
                "/processors/{name}/dead-letters/{id}/discard",
                post(discard_dead_letter),
            )
            .route_layer(middleware::from_fn(same_origin_only))
            .with_state(self.processors)
    }
}

async fn metrics_text(render: Option<Render>) -> Response {
    match render {
        Some(render) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render(),
        )
            .into_response(),
        None => Problem::new(
            StatusCode::NOT_FOUND,
            kinds::NOT_FOUND,
            "no metrics exporter",
        )
        .detail(
            "this service serves no metrics here: build its admin router with \
                 `Admin::new(processors).prometheus(render)` to serve Prometheus text",
        )
        .into_response(),
    }
}

/// The status page.
const STATUS_PAGE: &str = include_str!("status_page.html");

async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Its own script and style only, calls to its own origin only, never in a frame
            // (another site cannot overlay the buttons).
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        ],
        STATUS_PAGE,
    )
        .into_response()
}

/// Refuses a mutating call that a browser sent from a page of another origin.
async fn same_origin_only(request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    match cross_site(request.headers()) {
        Some(origin) => {
            tracing::warn!(target: "cqrs_http", %origin, path = request.uri().path(), "refused an admin call from another origin");
            Problem::new(
                StatusCode::FORBIDDEN,
                kinds::CROSS_SITE,
                "cross-site request refused",
            )
            .detail(format_args!(
                "admin calls are only taken from the service's own pages; this one came from {origin}"
            ))
            .into_response()
        }
        None => next.run(request).await,
    }
}

/// Where a cross-site request came from, `None` for one from the same origin or from a client
/// that is not a browser.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            // `none`: typed in the address bar or opened from a bookmark.
            b"same-origin" | b"none" => None,
            other => Some(format!(
                "a {} page (Sec-Fetch-Site)",
                String::from_utf8_lossy(other)
            )),
        };
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, host)| host);
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    match (origin_host, host) {
        (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host) => None,
        _ => Some(format!(
            "origin {}",
            String::from_utf8_lossy(origin.as_bytes())
        )),
    }
}

async fn status(State(processors): State<Processors>) -> Response {
    Json(processors.statuses().await).into_response()
}

async fn health(State(processors): State<Processors>) -> Response {
    let health = processors.health();
    let status = if health.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

async fn dead_letters(
    State(processors): State<Processors>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let handle = processors.get(&name).await?;
    match handle.dead_letters().await {
        Ok(letters) => Ok(Json(letters).into_response()),
        Err(error) => {
            tracing::error!(target: "cqrs_http", processor = %name, %error, "listing dead letters failed");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kinds::STORE_UNAVAILABLE,
                "store unavailable",
            )
            .detail(format_args!(
                "the dead letters of `{name}` could not be read from its store"
            )))
        }
    }
}

/// The body of a mutating call.
#[derive(Debug, Deserialize)]
struct ConfirmBody {
    #[serde(default)]
    confirm: bool,
}

/// Whether the call is confirmed by `?confirm=true` or `{"confirm": true}`; a body that is not
/// that JSON is a 400 problem.
fn confirmed(query: Option<&str>, body: &Bytes) -> Result<bool, Problem> {
    let in_query = query
        .unwrap_or("")
        .split('&')
        .any(|pair| pair == "confirm=true");
    if in_query {
        return Ok(true);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    serde_json::from_slice::<ConfirmBody>(body)
        .map(|body| body.confirm)
        .map_err(|error| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                kinds::INVALID_BODY,
                "invalid request body",
            )
            .detail(format_args!(
                "the body must be the JSON object {{\"confirm\": true}}: {error}"
            ))
        })
}

/// What an admin call is about to do, and the request that asked for it.
struct Action<'a> {
    /// The call, as `rebuild`, `dead-letters/{id}/retry`.
    call: String,
    /// What it does, in words: "would" follows before it is confirmed.
    effect: String,
    processors: &'a Processors,
    name: &'a str,
}

impl Action<'_> {
    /// Checks that the processor exists and the call is confirmed, then runs `control` on the
    /// processor's handle and answers with its status afterwards.
    async fn run<T>(
        self,
        query: Option<&str>,
        body: &Bytes,
        control: impl AsyncFnOnce(&ProcessorHandle) -> Result<T, ControlError>,
    ) -> Result<Response, Problem> {
        let handle = self.processors.get(self.name).await?;
        if !confirmed(query, body)? {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                kinds::CONFIRMATION_REQUIRED,
                "confirmation required",
            )
            .detail(format_args!(
                "this call would {}; nothing was done. Repeat it with `?confirm=true` or the \
                 body {{\"confirm\": true}} to go ahead",
                self.effect
            ))
            .extension("processor", self.name)
            .extension("action", self.call.as_str())
            .extension("effect", self.effect.as_str()));
        }
        control(&handle)
            .await
            .map_err(|error| control_problem(self.name, &error))?;
        let status = handle.status().await;
        Ok(Json(Done {
            processor: self.name,
            action: &self.call,
            done: true,
            status,
        })
        .into_response())
    }
}

/// The answer to a carried out admin call.
#[derive(Serialize)]
struct Done<'a> {
    processor: &'a str,
    action: &'a str,
    done: bool,
    status: cqrs_core::processor::ProcessorStatus,
}

async fn rebuild(
    State(processors): State<Processors>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, Problem> {
    let action = Action {
        call: "rebuild".to_owned(),
        effect: format!(
            "empty the read model of `{name}`, drop its dead letters and replay the log from the start"
        ),
        processors: &processors,
        name: &name,
    };
    action
        .run(query.as_deref(), &body, async |handle| {
            handle.rebuild().await
        })
        .await
}

async fn pause(
    State(processors): State<Processors>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, Problem> {
    let action = Action {
        call: "pause".to_owned(),
        effect: format!("pause `{name}` after the batch in hand, until it is resumed"),
        processors: &processors,
        name: &name,
    };
    action
        .run(query.as_deref(), &body, async |handle| handle.pause().await)
        .await
}

async fn resume(
    State(processors): State<Processors>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, Problem> {
    let action = Action {
        call: "resume".to_owned(),
        effect: format!("resume `{name}`, trying a failed event again"),
        processors: &processors,
        name: &name,
    };
    action
        .run(query.as_deref(), &body, async |handle| {
            handle.resume().await
        })
        .await
}

async fn reset(
    State(processors): State<Processors>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, Problem> {
    let to = reset_position(query.as_deref())?;
    let action = Action {
        call: format!("reset?to={to}"),
        effect: format!(
            "move the checkpoint of `{name}` forward to position {to}, without handling the \
             events before it"
        ),
        processors: &processors,
        name: &name,
    };
    action
        .run(query.as_deref(), &body, async |handle| {
            handle.skip_to(Position(to)).await
        })
        .await
}

/// The position of `?to=N`: a 400 problem when it is missing or not a number.
fn reset_position(query: Option<&str>) -> Result<u64, Problem> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("to="));
    let invalid = |detail: String| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            kinds::INVALID_POSITION,
            "invalid position",
        )
        .detail(detail)
    };
    match value {
        None => Err(invalid(
            "say where the checkpoint goes with `?to=N`, N a position of the log".to_owned(),
        )),
        Some(value) => value.parse().map_err(|error| {
            invalid(format!(
                "`to={value}` is not a position (a number of 0 or more): {error}"
            ))
        }),
    }
}

async fn retry_dead_letter(
    State(processors): State<Processors>,
    Path((name, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, Problem> {
    let action = Action {
        call: format!("dead-letters/{id}/retry"),
        effect: format!("handle the event of dead letter `{id}` of `{name}` again"),
        processors: &processors,
        name: &name,
    };
    action
        .run(query.as_deref(), &body, async |handle| {
            handle.retry_dead_letter(&id).await
        })
        .await
}

async fn discard_dead_letter(
    State(processors): State<Processors>,
    Path((name, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, Problem> {
    let action = Action {
        call: format!("dead-letters/{id}/discard"),
        effect: format!("drop dead letter `{id}` of `{name}` without handling its event"),
        processors: &processors,
        name: &name,
    };
    action
        .run(query.as_deref(), &body, async |handle| {
            match handle.discard_dead_letter(&id).await? {
                true => Ok(()),
                false => Err(ControlError::UnknownDeadLetter {
                    processor: handle.name(),
                    id: id.clone(),
                }),
            }
        })
        .await
}

/// The problem of a refused control.
fn control_problem(name: &str, error: &ControlError) -> Problem {
    let (status, kind, title) = match error {
        ControlError::NotRunning { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            kinds::PROCESSOR_UNAVAILABLE,
            "processor not running",
        ),
        ControlError::UnknownDeadLetter { .. } => (
            StatusCode::NOT_FOUND,
            kinds::NOT_FOUND,
            "no such dead letter",
        ),
        ControlError::WouldReplay { .. } | ControlError::BeyondHead { .. } => {
            (StatusCode::CONFLICT, kinds::REFUSED, "refused")
        }
        ControlError::EventGone { .. } => (StatusCode::GONE, kinds::REFUSED, "event gone"),
        ControlError::Failed(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            kinds::REFUSED,
            "handling failed again",
        ),
        ControlError::Store(store) => {
            tracing::error!(target: "cqrs_http", processor = %name, error = %store, "admin call failed");
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kinds::STORE_UNAVAILABLE,
                "store unavailable",
            )
            .detail(format_args!(
                "the store of `{name}` failed; nothing was changed"
            ))
            .extension("processor", name);
        }
        // Not the leader, cannot be rebuilt, not an event, and kinds added later: the processor
        // refuses in its current state.
        _ => (StatusCode::CONFLICT, kinds::REFUSED, "refused"),
    };
    Problem::new(status, kind, title)
        .detail(error)
        .extension("processor", name)
}
