//! The push-delivery decorators: ordering with a backlog, the single-task funnel, dependencies
//! (with their timeout), and the three combined.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_core::projection::decorators::{
    AppliedVersions, DeferredFailure, DeferredFailureReason, Delivery, DeliveryHandler,
    DeliveryHandlerExt, Handled, HandlerError, Ordered, WaitingDelivery,
};
use cqrs_core::{StreamId, Version};

const WAIT: Duration = Duration::from_secs(10);

/// Records what it applied, and fails if two deliveries are ever applied at once.
#[derive(Clone, Default)]
struct Recorder {
    applied: Arc<Mutex<Vec<(String, u64)>>>,
    busy: Arc<AtomicBool>,
    pause: Duration,
}

impl Recorder {
    fn applied(&self) -> Vec<(String, u64)> {
        self.applied.lock().expect("not poisoned").clone()
    }

    fn versions_of(&self, stream: &str) -> Vec<u64> {
        self.applied()
            .into_iter()
            .filter(|(applied, _)| applied == stream)
            .map(|(_, version)| version)
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("two deliveries were applied at the same time")]
struct Overlap;

#[async_trait]
impl DeliveryHandler<&'static str> for Recorder {
    async fn handle(&self, delivery: Delivery<&'static str>) -> Result<Handled, HandlerError> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(Overlap.into());
        }
        if !self.pause.is_zero() {
            tokio::time::sleep(self.pause).await;
        }
        self.applied
            .lock()
            .expect("not poisoned")
            .push((delivery.stream.to_string(), delivery.version.0));
        self.busy.store(false, Ordering::SeqCst);
        Ok(Handled::Applied)
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("valid")
}

fn delivery(name: &str, version: u64) -> Delivery<&'static str> {
    Delivery::new(stream(name), Version(version), "event")
}

async fn backlog(ordered: &Ordered<Recorder, &'static str>, name: &str) -> Vec<u64> {
    ordered
        .backlog(&stream(name))
        .await
        .into_iter()
        .map(|version| version.0)
        .collect()
}

#[tokio::test]
async fn ordering_applies_1_3_5_2_4_as_the_versions_come_due() {
    let recorder = Recorder::default();
    let ordered = recorder.clone().ordered(&AppliedVersions::new());
    let steps = [
        (1, Handled::Applied, vec![1], vec![]),
        (3, Handled::Backlogged, vec![1], vec![3]),
        (5, Handled::Backlogged, vec![1], vec![3, 5]),
        (2, Handled::Applied, vec![1, 2, 3], vec![5]),
        (4, Handled::Applied, vec![1, 2, 3, 4, 5], vec![]),
    ];
    for (version, handled, applied, waiting) in steps {
        let outcome = ordered
            .handle(delivery("widget-1", version))
            .await
            .expect("handles");
        assert_eq!(outcome, handled, "delivering {version}");
        assert_eq!(recorder.versions_of("widget-1"), applied, "after {version}");
        assert_eq!(
            backlog(&ordered, "widget-1").await,
            waiting,
            "after {version}"
        );
    }
    assert_eq!(ordered.versions().applied(&stream("widget-1")), Version(5));
}

#[tokio::test]
async fn ordering_drops_duplicates_of_applied_and_backlogged_versions() {
    let recorder = Recorder::default();
    let ordered = recorder.clone().ordered(&AppliedVersions::new());
    let mut outcomes = Vec::new();
    for version in [1, 1, 3, 3, 2, 2, 3, 1] {
        outcomes.push(
            ordered
                .handle(delivery("widget-1", version))
                .await
                .expect("handles"),
        );
    }
    use Handled::{Applied, Backlogged, Duplicate};
    assert_eq!(
        outcomes,
        [
            Applied, Duplicate, Backlogged, Duplicate, Applied, Duplicate, Duplicate, Duplicate
        ]
    );
    assert_eq!(recorder.versions_of("widget-1"), [1, 2, 3]);
    // Streams are ordered independently.
    assert_eq!(
        ordered
            .handle(delivery("widget-2", 2))
            .await
            .expect("handles"),
        Backlogged
    );
    assert_eq!(backlog(&ordered, "widget-2").await, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_funnel_applies_deliveries_from_many_threads_one_at_a_time_in_arrival_order() {
    let recorder = Recorder {
        pause: Duration::from_micros(50),
        ..Recorder::default()
    };
    let funnel = Arc::new(recorder.clone().funnelled());
    let senders: Vec<_> = (0..8)
        .map(|sender| {
            let funnel = funnel.clone();
            tokio::spawn(async move {
                let name = format!("widget-{sender}");
                for version in 1..=25 {
                    funnel
                        .handle(delivery(&name, version))
                        .await
                        .expect("applied without overlap");
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("sender finished");
    }
    assert_eq!(recorder.applied().len(), 8 * 25);
    for sender in 0..8 {
        assert_eq!(
            recorder.versions_of(&format!("widget-{sender}")),
            (1..=25).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_funnel_concurrent_deliveries_overlap() {
    // The control experiment for the test above: the recorder does notice overlaps.
    let recorder = Recorder {
        pause: Duration::from_millis(5),
        ..Recorder::default()
    };
    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let recorder = recorder.clone();
            tokio::spawn(async move { recorder.handle(delivery("widget-1", n)).await })
        })
        .collect();
    let mut overlaps = 0;
    for task in tasks {
        if task.await.expect("joined").is_err() {
            overlaps += 1;
        }
    }
    assert!(overlaps > 0);
}

/// "widget-N" at version 2 needs "thingy-N" at version 1.
fn widget_needs_thingy(delivery: &Delivery<&'static str>) -> Vec<(StreamId, Version)> {
    let name = delivery.stream.as_str();
    match name.strip_prefix("widget-") {
        Some(id) if delivery.version == Version(2) => {
            vec![(stream(&format!("thingy-{id}")), Version(1))]
        }
        _ => Vec::new(),
    }
}

async fn eventually(mut check: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("happens in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_satisfied_later_releases_the_waiting_delivery() {
    let recorder = Recorder::default();
    let versions = AppliedVersions::new();
    let handler = recorder
        .clone()
        .ordered(&versions)
        .with_dependencies(&versions, widget_needs_thingy);

    let outcome = handler
        .handle(delivery("widget-1", 1))
        .await
        .expect("handles");
    assert_eq!(outcome, Handled::Applied);
    let outcome = handler
        .handle(delivery("widget-1", 2))
        .await
        .expect("handles");
    assert_eq!(outcome, Handled::Deferred);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(recorder.versions_of("widget-1"), [1], "waits for thingy-1");

    let outcome = handler
        .handle(delivery("thingy-1", 1))
        .await
        .expect("handles");
    assert_eq!(outcome, Handled::Applied);
    eventually(|| recorder.versions_of("widget-1") == [1, 2]).await;
    assert_eq!(
        recorder.applied(),
        [
            ("widget-1".to_owned(), 1),
            ("thingy-1".to_owned(), 1),
            ("widget-1".to_owned(), 2)
        ]
    );
    assert!(handler.failures().is_empty());

    // A dependency already met does not wait.
    let outcome = handler
        .handle(delivery("widget-2", 1))
        .await
        .expect("handles");
    assert_eq!(outcome, Handled::Applied);
    handler
        .handle(delivery("thingy-2", 1))
        .await
        .expect("handles");
    let outcome = handler
        .handle(delivery("widget-2", 2))
        .await
        .expect("handles");
    assert_eq!(outcome, Handled::Applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dependencies_then_funnel_then_ordering_handle_a_shuffled_concurrent_stream() {
    let recorder = Recorder {
        pause: Duration::from_micros(20),
        ..Recorder::default()
    };
    let versions = AppliedVersions::new();
    let handler = Arc::new(
        recorder
            .clone()
            .ordered(&versions)
            .funnelled()
            .with_dependencies(&versions, widget_needs_thingy),
    );

    // Every widget's versions arrive shuffled, from its own task, with duplicates; each widget's
    // version 2 needs its thingy, whose versions arrive (shuffled too) from other tasks.
    let mut tasks = Vec::new();
    for id in 0..6u64 {
        let widget = [3, 1, 5, 2, 2, 4, 1, 6];
        let thingy = [2, 1];
        for (name, order) in [
            (format!("widget-{id}"), &widget[..]),
            (format!("thingy-{id}"), &thingy[..]),
        ] {
            let handler = handler.clone();
            let order = order.to_vec();
            tasks.push(tokio::spawn(async move {
                for version in order {
                    handler
                        .handle(delivery(&name, version))
                        .await
                        .expect("no overlap, no error");
                    tokio::task::yield_now().await;
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("task finished");
    }
    eventually(|| recorder.applied().len() == 6 * (6 + 2)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        recorder.applied().len(),
        6 * (6 + 2),
        "no duplicate was applied"
    );

    let applied = recorder.applied();
    for id in 0..6 {
        let widget = format!("widget-{id}");
        let thingy = format!("thingy-{id}");
        assert_eq!(recorder.versions_of(&widget), [1, 2, 3, 4, 5, 6]);
        assert_eq!(recorder.versions_of(&thingy), [1, 2]);
        let at = |name: &str, version: u64| {
            applied
                .iter()
                .position(|(applied, v)| applied == name && *v == version)
                .expect("applied")
        };
        assert!(
            at(&thingy, 1) < at(&widget, 2),
            "widget-{id} v2 waited for its thingy"
        );
    }
    assert!(handler.failures().is_empty());
}

/// What `waiting()` says, without the instant.
fn waits(waiting: &[WaitingDelivery]) -> Vec<(String, u64, String, u64)> {
    waiting
        .iter()
        .map(|held| {
            (
                held.stream.to_string(),
                held.version.0,
                held.needed_stream.to_string(),
                held.needed_version.0,
            )
        })
        .collect()
}

/// The stream, version, awaited stream and version and wait of a timed-out record.
fn timed_out(failure: &DeferredFailure) -> Option<(String, u64, String, u64, Duration)> {
    match &failure.reason {
        DeferredFailureReason::TimedOut {
            needed_stream,
            needed_version,
            waited,
        } => Some((
            failure.stream.to_string(),
            failure.version.0,
            needed_stream.to_string(),
            needed_version.0,
            *waited,
        )),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_never_arrives_is_listed_as_waiting_then_given_up_on() {
    const TIMEOUT: Duration = Duration::from_millis(100);
    let recorder = Recorder::default();
    let versions = AppliedVersions::new();
    let handler = recorder
        .clone()
        .ordered(&versions)
        .with_dependencies(&versions, widget_needs_thingy)
        .timeout(TIMEOUT);
    handler
        .handle(delivery("widget-1", 1))
        .await
        .expect("handles");

    let before = Instant::now();
    let outcome = handler
        .handle(delivery("widget-1", 2))
        .await
        .expect("handles");
    assert_eq!(outcome, Handled::Deferred);
    let waiting = handler.waiting();
    assert_eq!(
        waits(&waiting),
        [("widget-1".to_owned(), 2, "thingy-1".to_owned(), 1)]
    );
    assert!(before <= waiting[0].since && waiting[0].since <= Instant::now());
    assert!(handler.failures().is_empty(), "not given up on yet");

    eventually(|| !handler.failures().is_empty()).await;
    assert!(before.elapsed() >= TIMEOUT, "held for the whole timeout");
    assert!(handler.waiting().is_empty(), "no longer waiting");
    let failures = handler.failures();
    assert_eq!(failures.len(), 1);
    let (stream, version, needed_stream, needed_version, waited) =
        timed_out(&failures[0]).expect("timed out, not failed");
    assert_eq!(
        (
            stream.as_str(),
            version,
            needed_stream.as_str(),
            needed_version
        ),
        ("widget-1", 2, "thingy-1", 1)
    );
    assert!(waited >= TIMEOUT, "waited {waited:?}");
    assert!(
        failures[0].to_string().contains("thingy-1"),
        "{}",
        failures[0]
    );
    assert_eq!(recorder.versions_of("widget-1"), [1], "never applied");

    // Given up on means gone: the dependency arriving late does not bring it back.
    handler
        .handle(delivery("thingy-1", 1))
        .await
        .expect("handles");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(recorder.versions_of("widget-1"), [1]);
    assert_eq!(handler.failures().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_arrives_before_the_timeout_is_applied_and_not_recorded() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let recorder = Recorder::default();
    let versions = AppliedVersions::new();
    let handler = recorder
        .clone()
        .ordered(&versions)
        .with_dependencies(&versions, widget_needs_thingy)
        .timeout(TIMEOUT);
    handler
        .handle(delivery("widget-1", 1))
        .await
        .expect("handles");
    let held = Instant::now();
    let outcome = handler
        .handle(delivery("widget-1", 2))
        .await
        .expect("handles");
    assert_eq!(outcome, Handled::Deferred);
    assert_eq!(handler.waiting().len(), 1);

    tokio::time::sleep(Duration::from_millis(20)).await;
    handler
        .handle(delivery("thingy-1", 1))
        .await
        .expect("handles");
    eventually(|| recorder.versions_of("widget-1") == [1, 2]).await;
    assert!(handler.waiting().is_empty());

    // Past the time it would have been given up at: released means released.
    tokio::time::sleep((TIMEOUT + Duration::from_millis(100)).saturating_sub(held.elapsed())).await;
    assert!(handler.failures().is_empty(), "{:?}", handler.failures());
    assert_eq!(recorder.versions_of("widget-1"), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_needing_two_entities_waits_for_each_and_reports_the_one_missing() {
    const TIMEOUT: Duration = Duration::from_millis(150);
    let recorder = Recorder::default();
    let versions = AppliedVersions::new();
    let both = |delivery: &Delivery<&'static str>| {
        if delivery.stream.as_str() == "order-1" {
            vec![
                (stream("customer-1"), Version(1)),
                (stream("product-1"), Version(1)),
            ]
        } else {
            Vec::new()
        }
    };
    let handler = recorder
        .clone()
        .ordered(&versions)
        .with_dependencies(&versions, both)
        .timeout(TIMEOUT);
    let held = Instant::now();
    let outcome = handler
        .handle(delivery("order-1", 1))
        .await
        .expect("handles");
    assert_eq!(outcome, Handled::Deferred);
    assert_eq!(
        waits(&handler.waiting()),
        [("order-1".to_owned(), 1, "customer-1".to_owned(), 1)]
    );
    let since = handler.waiting()[0].since;

    handler
        .handle(delivery("customer-1", 1))
        .await
        .expect("handles");
    eventually(|| {
        waits(&handler.waiting()) == [("order-1".to_owned(), 1, "product-1".to_owned(), 1)]
    })
    .await;
    assert_eq!(handler.waiting()[0].since, since, "still held since then");

    // The timeout counts from when it was first held, not from its second wait.
    eventually(|| !handler.failures().is_empty()).await;
    let elapsed = held.elapsed();
    assert!(elapsed >= TIMEOUT);
    let (stream, version, needed_stream, needed_version, waited) =
        timed_out(&handler.failures()[0]).expect("timed out");
    assert_eq!(
        (
            stream.as_str(),
            version,
            needed_stream.as_str(),
            needed_version
        ),
        ("order-1", 1, "product-1", 1)
    );
    assert!(waited >= TIMEOUT && waited <= elapsed, "waited {waited:?}");
    assert!(handler.waiting().is_empty());
    assert!(recorder.versions_of("order-1").is_empty());
}

/// Fails every delivery.
struct Refuse;

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

#[async_trait]
impl DeliveryHandler<&'static str> for Refuse {
    async fn handle(&self, _: Delivery<&'static str>) -> Result<Handled, HandlerError> {
        Err(Refused.into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_delivery_that_fails_is_recorded_as_failed() {
    let versions = AppliedVersions::new();
    let handler = Refuse.with_dependencies(&versions, widget_needs_thingy);
    let outcome = handler
        .handle(delivery("widget-1", 2))
        .await
        .expect("deferred, not handled yet");
    assert_eq!(outcome, Handled::Deferred);
    versions.record(&stream("thingy-1"), Version(1));
    eventually(|| !handler.failures().is_empty()).await;
    let failures = handler.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        (failures[0].stream.as_str(), failures[0].version),
        ("widget-1", Version(2))
    );
    assert!(
        matches!(&failures[0].reason, DeferredFailureReason::Failed { error } if error.to_string() == "refused"),
        "{:?}",
        failures[0]
    );
    assert!(handler.waiting().is_empty());
}
