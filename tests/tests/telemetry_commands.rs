//! What a command tells the service: its `command.handle` span, its events, and the command
//! metrics, captured with a test subscriber and metrics-util's debugging recorder.

use cqrs_core::event::{Metadata, NewEvent};
use cqrs_core::telemetry::{self, COMMAND_SPAN};
use cqrs_core::{CommandId, CommandMetadata, ExecuteError, Repository, RetryPolicy};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowEvent};
use cqrs_memstore::MemStore;
use cqrs_tests::interposed::Interposed;
use cqrs_tests::telemetry::{Capture, CapturedEvent, CapturedSpan};
use tracing::Level;

const RETRY_MESSAGE: &str = "conflict: deciding again on the fresh state";

fn reserve(booking: u64, seats: u32) -> ShowCommand {
    ShowCommand::ReserveSeats {
        booking: BookingId(booking),
        seats,
    }
}

/// Another writer's reservation, written just before the repository's append.
fn competing(booking: u64) -> NewEvent {
    let event = ShowEvent::SeatsReserved {
        booking: BookingId(booking),
        seats: 1,
    };
    NewEvent::encode(&event, Metadata::default()).expect("encodes")
}

/// The one `command.handle` span whose command is `command`.
fn command_span(capture: &Capture, command: &str) -> CapturedSpan {
    let spans: Vec<CapturedSpan> = capture
        .spans_named(COMMAND_SPAN)
        .into_iter()
        .filter(|span| span.field("cqrs.command") == Some(command))
        .collect();
    assert_eq!(spans.len(), 1, "one span for {command}: {spans:#?}");
    spans.into_iter().next().expect("one span")
}

/// The events emitted in a `command.handle` span with message `message`.
fn command_events(capture: &Capture, message: &str) -> Vec<CapturedEvent> {
    capture
        .events_named(message)
        .into_iter()
        .filter(|event| event.span == Some(COMMAND_SPAN))
        .collect()
}

fn show_labels(outcome: &str) -> [(&'static str, &str); 2] {
    [("aggregate", "show"), ("outcome", outcome)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_that_retries_twice_and_succeeds() {
    let capture = Capture::start();
    // Appends 2 and 3 (the reservation's first two attempts) each meet another writer's event.
    let store = Interposed::new(|call| matches!(call, 2 | 3).then(|| competing(100 + call as u64)));
    let shows = Repository::<Show, _>::builder(store.clone())
        .cache(0)
        .build();
    shows
        .execute("s1", ShowCommand::Schedule { capacity: 10 })
        .await
        .expect("schedules");
    let outcome = shows.execute("s1", reserve(1, 2)).await.expect("reserves");
    assert_eq!((outcome.attempts, outcome.version.0), (3, 4));

    let span = command_span(&capture, "ReserveSeats");
    println!("span: {span:#?}");
    assert_eq!(span.level, Level::INFO);
    assert_eq!(span.target, "cqrs_core::repository");
    assert!(span.closed, "the span ends with the command");
    assert_eq!(span.parent, None);
    for (field, value) in [
        ("cqrs.aggregate", "show"),
        ("cqrs.stream", "show-s1"),
        ("cqrs.command", "ReserveSeats"),
        ("cqrs.attempts", "3"),
        ("cqrs.outcome", "ok"),
        ("cqrs.version.before", "3"),
        ("cqrs.version.after", "4"),
        ("cqrs.position", "4"),
    ] {
        assert_eq!(span.field(field), Some(value), "{field} in {span:#?}");
    }
    assert_eq!(span.field("cqrs.command.id"), None, "no id was given");
    assert_eq!(span.field("otel.status_code"), None, "it succeeded");

    // The store's spans nest in the command's: a trace shows each attempt's append.
    let appends: Vec<CapturedSpan> = capture
        .spans_named(telemetry::APPEND_SPAN)
        .into_iter()
        .filter(|span| span.parent == Some(COMMAND_SPAN))
        .collect();
    let outcomes: Vec<Option<&str>> = appends
        .iter()
        .map(|span| span.field("cqrs.outcome"))
        .collect();
    assert_eq!(
        outcomes,
        [
            Some("ok"),
            Some("ok"),
            Some("conflict"),
            Some("ok"),
            Some("conflict"),
            Some("ok")
        ],
        "the schedule, then twice the other writer's append and the attempt it beat, then the \
         third attempt"
    );

    let retries = command_events(&capture, RETRY_MESSAGE);
    let seen: Vec<(Level, &str, &str, &str)> = retries
        .iter()
        .map(|event| {
            (
                event.level,
                event.fields["cqrs.attempts"].as_str(),
                event.fields["cqrs.expected"].as_str(),
                event.fields["cqrs.actual"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [(Level::DEBUG, "1", "1", "2"), (Level::DEBUG, "2", "2", "3")],
        "one event per retry, with the conflict's versions"
    );
    assert!(
        retries.iter().all(
            |event| event.span_fields.get("cqrs.stream").map(String::as_str) == Some("show-s1")
        ),
        "the retries are inside the command's span"
    );

    let handled = command_events(&capture, "command handled");
    assert_eq!(handled.len(), 2, "one line per command: {handled:#?}");
    let last = &handled[1];
    assert_eq!(last.level, Level::INFO);
    assert_eq!(last.fields["cqrs.attempts"], "3");
    assert_eq!(last.fields["cqrs.outcome"], "ok");
    assert_eq!(last.fields["cqrs.version.after"], "4");
    assert_eq!(last.span_fields["cqrs.command"], "ReserveSeats");

    let metrics = capture.metrics();
    println!("metrics: {:#?}", metrics.names());
    let durations = metrics.histogram(telemetry::COMMAND_DURATION, &show_labels("ok"));
    assert_eq!(durations.len(), 2, "both commands timed");
    assert!(
        durations
            .iter()
            .all(|seconds| *seconds > 0.0 && *seconds < 10.0)
    );
    let retried = [("aggregate", "show"), ("result", "retried")];
    assert_eq!(metrics.counter(telemetry::COMMAND_CONFLICTS, &retried), 2);
    let exhausted = [("aggregate", "show"), ("result", "exhausted")];
    assert_eq!(metrics.counter(telemetry::COMMAND_CONFLICTS, &exhausted), 0);
    let appended = [("aggregate", "show")];
    assert_eq!(
        metrics.counter(telemetry::EVENTS_APPENDED, &appended),
        2,
        "the schedule and the reservation; the other writer's events are not the repository's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_domain_error() {
    let capture = Capture::start();
    let shows = Repository::<Show, _>::new(MemStore::new());
    let error = shows
        .execute("s2", reserve(1, 1))
        .await
        .expect_err("not scheduled");
    assert!(matches!(error, ExecuteError::Domain(_)), "{error:?}");

    let span = command_span(&capture, "ReserveSeats");
    assert_eq!(span.field("cqrs.outcome"), Some("domain_error"));
    assert_eq!(span.field("cqrs.attempts"), Some("1"));
    assert_eq!(span.field("cqrs.version.before"), Some("0"));
    assert_eq!(
        span.field("cqrs.version.after"),
        None,
        "nothing was written"
    );
    assert_eq!(
        span.field("otel.status_code"),
        None,
        "a refusal is the domain's answer, not a failure of the service"
    );
    let refused = command_events(&capture, "command refused");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0].level, Level::INFO);
    assert_eq!(refused[0].fields["cqrs.outcome"], "domain_error");
    let domain = error.domain().map(ToString::to_string);
    assert_eq!(refused[0].fields.get("error"), domain.as_ref());

    let metrics = capture.metrics();
    let refusals = metrics.histogram(telemetry::COMMAND_DURATION, &show_labels("domain_error"));
    assert_eq!(refusals.len(), 1);
    assert!(
        metrics
            .histogram(telemetry::COMMAND_DURATION, &show_labels("ok"))
            .is_empty()
    );
    assert_eq!(
        metrics.counter(telemetry::EVENTS_APPENDED, &[("aggregate", "show")]),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deduplicated_command() {
    let capture = Capture::start();
    let shows = Repository::<Show, _>::new(MemStore::new());
    shows
        .execute("s3", ShowCommand::Schedule { capacity: 10 })
        .await
        .expect("schedules");
    let request = CommandId::new("request-42").expect("valid id");
    let mut metadata = CommandMetadata::with_command_id(request);
    metadata
        .headers
        .insert("authorization".to_owned(), "secret-token-value".to_owned());
    let first = shows
        .execute_with("s3", reserve(7, 2), metadata.clone())
        .await
        .expect("reserves");
    let again = shows
        .execute_with("s3", reserve(7, 2), metadata)
        .await
        .expect("answers again");
    assert!(!first.deduplicated && again.deduplicated);

    let spans: Vec<CapturedSpan> = capture
        .spans_named(COMMAND_SPAN)
        .into_iter()
        .filter(|span| span.field("cqrs.command.id") == Some("request-42"))
        .collect();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert_eq!(spans[0].field("cqrs.outcome"), Some("ok"));
    assert_eq!(spans[1].field("cqrs.outcome"), Some("deduplicated"));
    assert_eq!(
        spans[1].field("cqrs.attempts"),
        Some("0"),
        "found applied before anything was decided"
    );
    assert_eq!(spans[1].field("cqrs.version.after"), Some("2"));

    // Header values (and payloads) never reach a trace.
    for span in capture.spans() {
        assert!(
            span.fields.values().all(|value| !value.contains("secret")),
            "{span:#?}"
        );
    }
    for event in capture.events() {
        assert!(
            event.fields.values().all(|value| !value.contains("secret")),
            "{event:#?}"
        );
    }

    let metrics = capture.metrics();
    assert_eq!(
        metrics
            .histogram(telemetry::COMMAND_DURATION, &show_labels("deduplicated"))
            .len(),
        1
    );
    assert_eq!(
        metrics.counter(telemetry::EVENTS_APPENDED, &[("aggregate", "show")]),
        2,
        "the schedule and the first reservation; the answer again wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_exhausted_is_a_warning() {
    let capture = Capture::start();
    let store = Interposed::new(|call| (call > 1).then(|| competing(200 + call as u64)));
    let retry = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::NEVER
    };
    let shows = Repository::<Show, _>::builder(store).retry(retry).build();
    shows
        .execute("s4", ShowCommand::Schedule { capacity: 10 })
        .await
        .expect("schedules");
    let error = shows
        .execute("s4", reserve(1, 1))
        .await
        .expect_err("always contended");
    assert!(
        matches!(error, ExecuteError::Conflict { attempts: 2, .. }),
        "{error:?}"
    );

    let span = command_span(&capture, "ReserveSeats");
    assert_eq!(span.field("cqrs.outcome"), Some("conflict"));
    assert_eq!(span.field("cqrs.attempts"), Some("2"));
    assert_eq!(span.field("otel.status_code"), Some("ERROR"));
    let failed = command_events(&capture, "command failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].level, Level::WARN);
    assert_eq!(failed[0].fields["cqrs.outcome"], "conflict");
    assert_eq!(failed[0].fields["error"], error.to_string());

    let metrics = capture.metrics();
    let retried = [("aggregate", "show"), ("result", "retried")];
    let exhausted = [("aggregate", "show"), ("result", "exhausted")];
    assert_eq!(metrics.counter(telemetry::COMMAND_CONFLICTS, &retried), 1);
    assert_eq!(metrics.counter(telemetry::COMMAND_CONFLICTS, &exhausted), 1);
    assert_eq!(
        metrics
            .histogram(telemetry::COMMAND_DURATION, &show_labels("conflict"))
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_failure_is_a_warning_that_says_what_failed() {
    let capture = Capture::start();
    let store = MemStore::new();
    let shows = Repository::<Show, _>::new(store.clone());
    store.fail_next_appends(1);
    let error = shows
        .execute("s5", ShowCommand::Schedule { capacity: 3 })
        .await
        .expect_err("the store fails");
    assert!(matches!(error, ExecuteError::Store(_)), "{error:?}");

    let span = command_span(&capture, "Schedule");
    assert_eq!(span.field("cqrs.outcome"), Some("error"));
    assert_eq!(span.field("otel.status_code"), Some("ERROR"));
    let failed = command_events(&capture, "command failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].level, Level::WARN);
    assert!(
        failed[0].fields["error"].contains("injected fault"),
        "{failed:#?}"
    );
    let metrics = capture.metrics();
    assert_eq!(
        metrics
            .histogram(telemetry::COMMAND_DURATION, &show_labels("error"))
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_id_is_an_error_outcome() {
    let capture = Capture::start();
    let shows = Repository::<Show, _>::new(MemStore::new());
    let error = shows
        .execute("", ShowCommand::Schedule { capacity: 3 })
        .await
        .expect_err("an empty id makes no stream");
    assert!(matches!(error, ExecuteError::InvalidStream(_)), "{error:?}");
    let span = command_span(&capture, "Schedule");
    assert_eq!(span.field("cqrs.outcome"), Some("error"));
    assert_eq!(span.field("cqrs.attempts"), Some("0"));
    assert_eq!(span.field("cqrs.stream"), None);
}
