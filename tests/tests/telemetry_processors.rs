//! What the processor runtime tells a running service, in memory: a span per batch with its
//! checkpoints and counts, the events and dead letters counters, the lag and stall gauges, and
//! the events of a parked event, a retry, a store outage and its end, a stop under the policy,
//! state and leadership changes; a saga's parked deadline told as an event is. And every status
//! type serializes, for a status endpoint.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cqrs_core::event::{Metadata, NewEvent};
use cqrs_core::prelude::*;
use cqrs_core::processor::{
    AfterRetries, FailurePolicy, HealthCheck, Processor as _, ProcessorHandle, ProcessorState,
    ProcessorStatus, Reconnect,
};
use cqrs_core::projection::{EventContext, MemoryReadModel, Projection, Projector};
use cqrs_core::saga::{CommandBus, MemorySagaStore, SagaProcessor, SagaReport};
use cqrs_core::telemetry::{
    PROCESSOR_BATCH_SPAN, PROCESSOR_DEAD_LETTERS, PROCESSOR_EVENTS, PROCESSOR_LAG_EVENTS,
    PROCESSOR_LAG_SECONDS, PROCESSOR_RECONNECTS, PROCESSOR_STALLED_SECONDS,
};
use cqrs_core::{EventId, EventStore, ExpectedVersion, Position, RetryPolicy, StreamId};
use cqrs_memstore::MemStore;
use cqrs_tests::flaky::Flaky;
use cqrs_tests::meters::{Meter, MeterCommand, MeterEvent};
use cqrs_tests::telemetry::{Capture, CapturedEvent};
use tracing::Level;

const WAIT: Duration = Duration::from_secs(10);

/// The reading the projection refuses while told to.
const REFUSED_KWH: u64 = 13;

/// The processor's name: each test has its own, so that gauges (which outlive a capture) are
/// its own.
trait Named: Send + Sync + 'static {
    const NAME: &'static str;
}

/// Kilowatt-hours per meter; refuses a reading of [`REFUSED_KWH`] while `refuse` is set.
struct Usage<N> {
    refuse: Arc<AtomicBool>,
    name: PhantomData<fn() -> N>,
}

impl<N> Usage<N> {
    fn new() -> Self {
        Usage::refusing(&Arc::new(AtomicBool::new(false)))
    }

    fn refusing(refuse: &Arc<AtomicBool>) -> Self {
        Usage {
            refuse: Arc::clone(refuse),
            name: PhantomData,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("refused a reading of {0} kWh")]
struct Refused(u64);

impl<N: Named> Projection for Usage<N> {
    const NAME: &'static str = N::NAME;
    const AGGREGATES: &'static [&'static str] = &["meter"];
    type Event = MeterEvent;
    type ReadModel = BTreeMap<String, u64>;
    type Error = Refused;

    fn apply(
        &self,
        usage: &mut BTreeMap<String, u64>,
        MeterEvent::Read { kwh, .. }: MeterEvent,
        context: &EventContext<'_>,
    ) -> Result<(), Refused> {
        if kwh == REFUSED_KWH && self.refuse.load(Ordering::SeqCst) {
            return Err(Refused(kwh));
        }
        *usage.entry(context.aggregate_id().to_owned()).or_default() += kwh;
        Ok(())
    }
}

/// Records readings of `meter`; returns the position of the last.
async fn read(store: &MemStore, meter: &str, readings: &[u64]) -> Position {
    let meters = Repository::<Meter, _>::new(store.clone());
    for kwh in readings {
        meters
            .execute(
                meter,
                MeterCommand::Read {
                    kwh: *kwh,
                    bonus: false,
                },
            )
            .await
            .expect("reads");
    }
    store.head().await.expect("head")
}

async fn live(handle: &ProcessorHandle, at: Position) -> ProcessorStatus {
    handle
        .wait_until(WAIT, |status| {
            status.state == ProcessorState::Live && status.checkpoint == at
        })
        .await
        .unwrap_or_else(|status| panic!("not live at {at}: {status:?}"))
}

fn field<'a>(event: &'a CapturedEvent, name: &str) -> Option<&'a str> {
    event.fields.get(name).map(String::as_str)
}

/// The events of `processor` whose message is `message`.
fn told(capture: &Capture, message: &str, processor: &str) -> Vec<CapturedEvent> {
    capture
        .events_named(message)
        .into_iter()
        .filter(|event| field(event, "cqrs.processor") == Some(processor))
        .collect()
}

/// Waits until `done` holds, at most [`WAIT`]: a processor tells of a change of state once its
/// status is published, so a test that saw the status may be a moment ahead of the event.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn gauge(capture: &Capture, name: &str, processor: &str) -> f64 {
    let metrics = capture.metrics();
    metrics
        .gauge(name, &[("processor", processor)])
        .unwrap_or_else(|| panic!("no gauge {name}: {:?}", metrics.names()))
}

fn counter(capture: &Capture, name: &str, processor: &str) -> u64 {
    capture.metrics().counter(name, &[("processor", processor)])
}

struct Batches;
impl Named for Batches {
    const NAME: &'static str = "telemetry_batches";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_batch_is_a_span_with_its_checkpoints_and_counts_and_the_events_are_counted() {
    let capture = Capture::start();
    let name = Batches::NAME;
    let store = MemStore::new();
    read(&store, "1", &[1, 2, 3]).await;
    let head = read(&store, "2", &[4, 5]).await;
    let model = MemoryReadModel::new();
    let handle = Projector::new(Usage::<Batches>::new(), store.clone(), model.clone())
        .runner()
        .batch_size(2)
        .spawn();
    live(&handle, head).await;

    let spans: Vec<_> = capture
        .spans_named(PROCESSOR_BATCH_SPAN)
        .into_iter()
        .filter(|span| span.field("cqrs.processor") == Some(name))
        .collect();
    let batches: Vec<_> = spans
        .iter()
        .map(|span| {
            (
                span.field("cqrs.checkpoint.before"),
                span.field("cqrs.checkpoint.after"),
                span.field("cqrs.events"),
                span.field("cqrs.dead_letters"),
            )
        })
        .collect();
    assert_eq!(
        batches,
        [
            (Some("0"), Some("2"), Some("2"), Some("0")),
            (Some("2"), Some("4"), Some("2"), Some("0")),
            (Some("4"), Some("5"), Some("1"), Some("0")),
        ],
        "{spans:#?}"
    );
    assert!(spans.iter().all(|span| span.level == Level::INFO));
    assert_eq!(counter(&capture, PROCESSOR_EVENTS, name), 5);
    assert_eq!(counter(&capture, PROCESSOR_DEAD_LETTERS, name), 0);
    assert_eq!(gauge(&capture, PROCESSOR_LAG_EVENTS, name), 0.0);
    assert_eq!(gauge(&capture, PROCESSOR_LAG_SECONDS, name), 0.0);
    assert_eq!(gauge(&capture, PROCESSOR_STALLED_SECONDS, name), 0.0);

    // It said it leads, caught up, then went live.
    let leadership = told(&capture, "processor leadership changed", name);
    assert_eq!(leadership.len(), 1, "{leadership:#?}");
    assert_eq!(leadership[0].level, Level::INFO);
    assert_eq!(field(&leadership[0], "cqrs.leader"), Some("true"));
    let states = |capture: &Capture| -> Vec<(String, String)> {
        told(capture, "processor state changed", name)
            .into_iter()
            .inspect(|event| assert_eq!(event.level, Level::INFO))
            .map(|event| {
                (
                    event.fields["cqrs.state"].clone(),
                    event.fields["cqrs.checkpoint"].clone(),
                )
            })
            .collect()
    };
    eventually("told it is live", || states(&capture).len() >= 2).await;
    assert_eq!(
        states(&capture),
        [
            ("catching_up".to_owned(), "2".to_owned()),
            ("live".to_owned(), "5".to_owned())
        ]
    );

    // Live, it handles a new event in one more batch, without saying it caught up and went
    // live again (it does so with every batch).
    let later = read(&store, "1", &[6]).await;
    handle.wait_for(later, WAIT).await.expect("handles it");
    live(&handle, later).await;
    assert_eq!(counter(&capture, PROCESSOR_EVENTS, name), 6);
    assert_eq!(states(&capture).len(), 2, "{:#?}", capture.events());
    let last = capture
        .spans_named(PROCESSOR_BATCH_SPAN)
        .into_iter()
        .rfind(|span| span.field("cqrs.processor") == Some(name))
        .expect("a span");
    assert_eq!(
        (
            last.field("cqrs.checkpoint.before"),
            last.field("cqrs.checkpoint.after"),
            last.field("cqrs.events"),
        ),
        (Some("5"), Some("6"), Some("1"))
    );

    // Paused, then shut down: announced, and the lead given up.
    handle.pause().await.expect("pauses");
    handle.shutdown().await;
    assert_eq!(
        states(&capture).last().map(|(state, _)| state.as_str()),
        Some("paused")
    );
    let leadership = told(&capture, "processor leadership changed", name);
    assert_eq!(
        leadership
            .last()
            .and_then(|event| field(event, "cqrs.leader")),
        Some("false")
    );
    for span in capture.spans_named(PROCESSOR_BATCH_SPAN) {
        assert!(span.closed, "{span:?}");
    }
}

struct Stuck;
impl Named for Stuck {
    const NAME: &'static str = "telemetry_stuck";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_processor_stuck_behind_a_failing_event_shows_its_lag_and_warns_of_each_retry() {
    let capture = Capture::start();
    let name = Stuck::NAME;
    let store = MemStore::new();
    let head = read(&store, "1", &[1, REFUSED_KWH, 2, 3]).await;
    let refuse = Arc::new(AtomicBool::new(true));
    let handle = Projector::new(
        Usage::<Stuck>::refusing(&refuse),
        store.clone(),
        MemoryReadModel::new(),
    )
    .runner()
    .failure_policy(FailurePolicy::Retry {
        policy: RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            deadline: None,
            turn_after: None,
        },
        then: AfterRetries::Stop,
    })
    .spawn();
    handle
        .wait_until(
            WAIT,
            |status| matches!(status.state, ProcessorState::Retrying { attempts } if attempts >= 5),
        )
        .await
        .unwrap_or_else(|status| panic!("not retrying: {status:?}"));

    // Behind by three events (the refused one and two after it), for a while now.
    assert_eq!(gauge(&capture, PROCESSOR_LAG_EVENTS, name), 3.0);
    assert!(gauge(&capture, PROCESSOR_LAG_SECONDS, name) > 0.0);
    // The stall grows as it tries again.
    let stall = capture
        .metrics()
        .gauge(PROCESSOR_STALLED_SECONDS, &[("processor", name)]);
    eventually("the stall grows past a second", || {
        gauge(&capture, PROCESSOR_STALLED_SECONDS, name) >= 1.0
    })
    .await;
    assert!(stall.is_some_and(|stall| stall < 1.0), "{stall:?}");
    assert_eq!(
        counter(&capture, PROCESSOR_EVENTS, name),
        1,
        "the one before"
    );

    let retries = told(&capture, "processor will retry a failing event", name);
    assert!(retries.len() >= 5, "{retries:#?}");
    for (attempt, retry) in retries.iter().enumerate() {
        assert_eq!(retry.level, Level::WARN);
        assert_eq!(field(retry, "cqrs.position"), Some("2"));
        assert_eq!(field(retry, "cqrs.stream"), Some("meter-1"));
        assert_eq!(field(retry, "cqrs.version"), Some("2"));
        assert_eq!(field(retry, "cqrs.event_type"), Some("Read"));
        assert_eq!(field(retry, "cqrs.failure"), Some("handler"));
        assert_eq!(
            field(retry, "cqrs.attempts"),
            Some((attempt + 1).to_string().as_str())
        );
        assert_eq!(field(retry, "error"), Some("refused a reading of 13 kWh"));
    }

    // Past it: caught up, nothing behind, nothing stalled.
    refuse.store(false, Ordering::SeqCst);
    live(&handle, head).await;
    assert_eq!(gauge(&capture, PROCESSOR_LAG_EVENTS, name), 0.0);
    assert_eq!(gauge(&capture, PROCESSOR_LAG_SECONDS, name), 0.0);
    assert_eq!(gauge(&capture, PROCESSOR_STALLED_SECONDS, name), 0.0);
    assert_eq!(counter(&capture, PROCESSOR_EVENTS, name), 4);
    handle.shutdown().await;
}

struct Parking;
impl Named for Parking {
    const NAME: &'static str = "telemetry_parking";
}

/// A `Read` whose payload does not decode, and says something no event may repeat.
fn poison() -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: "Read".into(),
        schema_version: 1,
        payload: r#"{"secret":"do-not-log"}"#.into(),
        metadata: Metadata::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_event_is_a_warning_naming_it_and_a_dead_letter_counted() {
    let capture = Capture::start();
    let name = Parking::NAME;
    let store = MemStore::new();
    read(&store, "1", &[1, 2]).await;
    let meter = StreamId::for_aggregate("meter", "1").expect("valid");
    let receipt = store
        .append(&meter, ExpectedVersion::Exact(Version(2)), vec![poison()])
        .await
        .expect("appends");
    assert_eq!(receipt.position, Some(Position(3)));
    let head = read(&store, "2", &[4, 5]).await;

    let handle = Projector::new(
        Usage::<Parking>::new(),
        store.clone(),
        MemoryReadModel::new(),
    )
    .runner()
    .failure_policy(FailurePolicy::Skip)
    .spawn();
    assert_eq!(live(&handle, head).await.dead_letters, 1);

    let parked = told(&capture, "processor parked an event as a dead letter", name);
    assert_eq!(parked.len(), 1, "{:#?}", capture.events());
    let warning = &parked[0];
    assert_eq!(warning.level, Level::WARN);
    let fields: Vec<_> = [
        "cqrs.position",
        "cqrs.stream",
        "cqrs.version",
        "cqrs.event_type",
        "cqrs.failure",
        "cqrs.attempts",
        "cqrs.dead_letter",
    ]
    .iter()
    .map(|name| field(warning, name))
    .collect();
    assert_eq!(
        fields,
        [
            Some("3"),
            Some("meter-1"),
            Some("3"),
            Some("Read"),
            Some("decode"),
            Some("1"),
            Some("3")
        ],
        "{warning:#?}"
    );
    assert!(
        field(warning, "error").is_some_and(|error| !error.is_empty()),
        "{warning:#?}"
    );
    // Told inside the batch that recorded it.
    assert_eq!(warning.span, Some(PROCESSOR_BATCH_SPAN));
    assert_eq!(
        warning
            .span_fields
            .get("cqrs.dead_letters")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(counter(&capture, PROCESSOR_DEAD_LETTERS, name), 1);
    assert_eq!(counter(&capture, PROCESSOR_EVENTS, name), 4, "the others");
    let spans = capture.spans_named(PROCESSOR_BATCH_SPAN);
    let letters: u64 = spans
        .iter()
        .filter(|span| span.field("cqrs.processor") == Some(name))
        .filter_map(|span| span.field("cqrs.dead_letters")?.parse::<u64>().ok())
        .sum();
    assert_eq!(letters, 1, "{spans:#?}");
    // Never a payload.
    for event in capture.events() {
        assert!(
            event
                .fields
                .values()
                .all(|value| !value.contains("do-not-log")),
            "{event:#?}"
        );
    }
    handle.shutdown().await;
}

struct Outages;
impl Named for Outages {
    const NAME: &'static str = "telemetry_outages";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_is_one_warning_one_reconnect_counted_and_news_of_its_end() {
    let capture = Capture::start();
    let name = Outages::NAME;
    let store = MemStore::new();
    let head = read(&store, "1", &[1, 2]).await;
    let flaky = Flaky::new(store.clone(), false);
    let handle = Projector::new(
        Usage::<Outages>::new(),
        flaky.clone(),
        MemoryReadModel::new(),
    )
    .runner()
    .reconnect(Reconnect {
        base_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(10),
    })
    .spawn();
    live(&handle, head).await;
    assert_eq!(counter(&capture, PROCESSOR_RECONNECTS, name), 0);

    flaky.set_down(true);
    let later = read(&store, "2", &[3, 4]).await;
    handle
        .wait_until(WAIT, |status| {
            matches!(status.state, ProcessorState::Reconnecting { attempts, .. } if attempts >= 4)
        })
        .await
        .unwrap_or_else(|status| panic!("not reconnecting: {status:?}"));
    assert!(
        told(&capture, "processor store is back", name).is_empty(),
        "not back yet"
    );
    flaky.set_down(false);
    live(&handle, later).await;

    // One outage: one warning with the store's error, one reconnect; the later attempts are
    // DEBUG; then one INFO when it is back.
    let failed = told(&capture, "processor store failed, reconnecting", name);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].level, Level::WARN);
    assert_eq!(field(&failed[0], "cqrs.attempts"), Some("1"));
    assert!(
        field(&failed[0], "error").is_some_and(|error| error.contains("injected outage")),
        "{failed:#?}"
    );
    let again = told(&capture, "processor store still failing", name);
    assert!(again.len() >= 3, "{again:#?}");
    assert!(again.iter().all(|event| event.level == Level::DEBUG));
    assert_eq!(counter(&capture, PROCESSOR_RECONNECTS, name), 1);
    let back = told(&capture, "processor store is back", name);
    assert_eq!(back.len(), 1, "{back:#?}");
    assert_eq!(back[0].level, Level::INFO);
    let events = capture.events();
    let order = |message: &str| {
        events
            .iter()
            .position(|event| {
                event.message == message && field(event, "cqrs.processor") == Some(name)
            })
            .unwrap_or_else(|| panic!("no {message:?}"))
    };
    assert!(order("processor store failed, reconnecting") < order("processor store is back"));
    assert_eq!(
        counter(&capture, PROCESSOR_EVENTS, name),
        4,
        "every event once"
    );
    handle.shutdown().await;
}

struct Stopping;
impl Named for Stopping {
    const NAME: &'static str = "telemetry_stopping";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_processor_the_policy_stops_says_so_at_error_and_its_stall_keeps_growing() {
    let capture = Capture::start();
    let name = Stopping::NAME;
    let store = MemStore::new();
    let head = read(&store, "1", &[1, 2, REFUSED_KWH, 3]).await;
    let refuse = Arc::new(AtomicBool::new(true));
    let handle = Projector::new(
        Usage::<Stopping>::refusing(&refuse),
        store.clone(),
        MemoryReadModel::new(),
    )
    .runner()
    .failure_policy(FailurePolicy::Stop)
    .spawn();
    handle
        .wait_until(WAIT, |status| status.state == ProcessorState::Failed)
        .await
        .unwrap_or_else(|status| panic!("not failed: {status:?}"));

    let stopped = told(&capture, "processor stopped by its failure policy", name);
    assert_eq!(stopped.len(), 1, "{:#?}", capture.events());
    let error = &stopped[0];
    assert_eq!(error.level, Level::ERROR);
    let fields: Vec<_> = [
        "cqrs.position",
        "cqrs.stream",
        "cqrs.version",
        "cqrs.event_type",
        "cqrs.failure",
        "cqrs.attempts",
        "error",
    ]
    .iter()
    .map(|name| field(error, name))
    .collect();
    assert_eq!(
        fields,
        [
            Some("3"),
            Some("meter-1"),
            Some("3"),
            Some("Read"),
            Some("handler"),
            Some("1"),
            Some("refused a reading of 13 kWh")
        ],
        "{error:#?}"
    );
    assert!(told(&capture, "processor will retry a failing event", name).is_empty());

    // Nothing else publishes its status while it waits for a person: the gauges are set again
    // all the same, and the stall grows.
    assert_eq!(gauge(&capture, PROCESSOR_LAG_EVENTS, name), 2.0);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stalled = gauge(&capture, PROCESSOR_STALLED_SECONDS, name);
    assert!(stalled >= 1.0, "stalled for {stalled} s");

    refuse.store(false, Ordering::SeqCst);
    handle.resume().await.expect("resumes");
    live(&handle, head).await;
    assert_eq!(gauge(&capture, PROCESSOR_STALLED_SECONDS, name), 0.0);
    handle.shutdown().await;
}

struct Reported;
impl Named for Reported {
    const NAME: &'static str = "telemetry_reported";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_status_type_serializes_for_a_status_endpoint() {
    let _capture = Capture::start();
    let store = MemStore::new();
    let head = read(&store, "1", &[1, 2]).await;

    let caught_up = Projector::new(
        Usage::<Reported>::new(),
        store.clone(),
        MemoryReadModel::new(),
    )
    .runner()
    .catch_up()
    .await
    .expect("catches up");
    let json = serde_json::to_value(caught_up).expect("serializes");
    assert_eq!(json["checkpoint"], head.0);
    assert_eq!(json["events"], 2);
    assert_eq!(json["dead_letters"], 0);

    let report = SagaReport {
        handled: 3,
        commands: 2,
        ..SagaReport::default()
    };
    let json = serde_json::to_value(report).expect("serializes");
    assert_eq!(json["handled"], 3);
    assert_eq!(json["commands"], 2);

    let handle = Projector::new(
        Usage::<Reported>::new(),
        store.clone(),
        MemoryReadModel::new(),
    )
    .runner()
    .spawn();
    let status = live(&handle, head).await;
    let json = serde_json::to_value(&status).expect("serializes");
    assert_eq!(json["state"]["state"], "live");
    let health = HealthCheck::new().with(&handle).check();
    let json = serde_json::to_value(&health).expect("serializes");
    assert_eq!(json["healthy"], true);
    let json = serde_json::to_value(&health.processors[0]).expect("serializes");
    assert_eq!(json["status"]["name"], Reported::NAME);
    handle.shutdown().await;
}

/// Reminds each meter at once of a deadline it has no handler for: every deadline fails.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Overdue;

#[saga(name = "telemetry_overdue")]
impl Overdue {
    fn route(input: &OverdueInput, event: &EventContext<'_>) -> Route {
        match input {
            OverdueInput::Meter(_) => Route::start(event.aggregate_id()),
        }
    }

    #[on(Meter)]
    fn on_meter(&mut self, _: MeterEvent, saga: &mut SagaContext) {
        saga.schedule("reminder", Duration::ZERO);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_deadline_parked_is_told_and_counted_as_an_event_is() {
    let capture = Capture::start();
    let name = "telemetry_overdue";
    let store = MemStore::new();
    read(&store, "7", &[1]).await;
    let handle = SagaProcessor::<Overdue, _, _>::new(
        store.clone(),
        CommandBus::new(),
        MemorySagaStore::new(),
    )
    .runner()
    .failure_policy(FailurePolicy::Skip)
    .spawn();
    eventually("the deadline is parked", || {
        !told(&capture, "processor parked an event as a dead letter", name).is_empty()
    })
    .await;

    let parked = told(&capture, "processor parked an event as a dead letter", name);
    assert_eq!(parked.len(), 1, "{parked:#?}");
    let warning = &parked[0];
    assert_eq!(warning.level, Level::WARN);
    let subject = field(warning, "cqrs.subject").expect("names the deadline");
    assert!(
        subject.starts_with("deadline/7/") && subject.ends_with("/reminder"),
        "{subject}"
    );
    assert_eq!(field(warning, "cqrs.dead_letter"), Some(subject));
    assert_eq!(field(warning, "cqrs.position"), None, "not an event");
    assert_eq!(field(warning, "cqrs.failure"), Some("handler"));
    assert_eq!(counter(&capture, PROCESSOR_DEAD_LETTERS, name), 1);
    assert_eq!(handle.dead_letters().await.expect("readable").len(), 1);
    handle.shutdown().await;
}
