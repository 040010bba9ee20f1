//! Capturing what the framework emits, for tests that assert on it: every span (name, level,
//! fields, parent, whether it closed) and event through a `tracing` layer, and every metric
//! through `metrics-util`'s debugging recorder.
//!
//! Both are process-wide (`tracing`'s global subscriber, `metrics`' global recorder), so a test
//! takes a [`Capture`] first: it waits for any other capturing test of the binary to finish,
//! clears what earlier tests left, and reads what happened since it was taken.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let capture = cqrs_tests::telemetry::Capture::start();
//! tracing::info!(cqrs.attempts = 2_u64, "command handled");
//! metrics::counter!("cqrs_example_total", "aggregate" => "show").increment(3);
//!
//! let events = capture.events_named("command handled");
//! assert_eq!(events[0].fields["cqrs.attempts"], "2");
//! assert_eq!(capture.metrics().counter("cqrs_example_total", &[("aggregate", "show")]), 3);
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::registry::{AtomicStorage, Registry};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as the layer saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedSpan {
    /// The span's name, e.g. `command.handle`.
    pub name: &'static str,
    /// Its target (the module that made it).
    pub target: String,
    /// Its level.
    pub level: Level,
    /// Every field given a value, at creation or later, formatted (`Debug` for non-primitives,
    /// strings as they are).
    pub fields: BTreeMap<String, String>,
    /// The name of its parent span, when it has one.
    pub parent: Option<&'static str>,
    /// Whether it has closed.
    pub closed: bool,
    id: u64,
}

impl CapturedSpan {
    /// The value of `field`, when it was recorded.
    pub fn field(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

/// An event as the layer saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedEvent {
    /// Its message (the format string's output), empty when it has none.
    pub message: String,
    /// Its target.
    pub target: String,
    /// Its level.
    pub level: Level,
    /// Its fields other than the message.
    pub fields: BTreeMap<String, String>,
    /// The name of the span it was emitted in, when any.
    pub span: Option<&'static str>,
    /// That span's fields, as they were when the event was emitted.
    pub span_fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Recorded {
    spans: Vec<CapturedSpan>,
    events: Vec<CapturedEvent>,
}

struct Shared {
    recorded: Mutex<Recorded>,
    snapshotter: Snapshotter,
    gauges: Arc<Registry<Key, AtomicStorage>>,
    /// What the debugging recorder's snapshots gave since the capture started: a snapshot
    /// resets counters and drains histograms, so values are added up here.
    accumulated: Mutex<Accumulated>,
    /// One capturing test at a time.
    serial: Mutex<()>,
}

#[derive(Default)]
struct Accumulated {
    counters: BTreeMap<MetricId, u64>,
    histograms: BTreeMap<MetricId, Vec<f64>>,
}

type MetricId = (String, Vec<(String, String)>);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that failed while holding a lock leaves it poisoned; what it holds is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let debugging = DebuggingRecorder::new();
        let snapshotter = debugging.snapshotter();
        let gauges = Arc::new(Registry::atomic());
        let recorder = CaptureRecorder {
            debugging,
            gauges: Arc::clone(&gauges),
        };
        // Another test kit of this binary may have installed one; then nothing is captured and
        // the assertions say so.
        let _ = metrics::set_global_recorder(recorder);
        let subscriber = tracing_subscriber::registry().with(CaptureLayer);
        let _ = tracing::subscriber::set_global_default(subscriber);
        Shared {
            recorded: Mutex::new(Recorded::default()),
            snapshotter,
            gauges,
            accumulated: Mutex::new(Accumulated::default()),
            serial: Mutex::new(()),
        }
    })
}

/// The recorder installed: the debugging recorder for counters and histograms, and a registry
/// of its own for gauges, because the debugging recorder's snapshot resets a gauge to 0 and a
/// gauge that really went to 0 could then not be told from one read before.
struct CaptureRecorder {
    debugging: DebuggingRecorder,
    gauges: Arc<Registry<Key, AtomicStorage>>,
}

impl Recorder for CaptureRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.debugging.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.debugging.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.debugging.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.debugging.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        self.gauges
            .get_or_create_gauge(key, |gauge| Gauge::from_arc(Arc::clone(gauge)))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.debugging.register_histogram(key, metadata)
    }
}

/// The layer that records spans and events into [`Shared`].
struct CaptureLayer;

/// A span's index in [`Recorded::spans`], kept in its extensions.
struct Index(usize);

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let parent = ctx
            .span_scope(id)
            .and_then(|mut scope| scope.nth(1))
            .map(|parent| parent.name());
        let metadata = attrs.metadata();
        let mut recorded = lock(&shared().recorded);
        recorded.spans.push(CapturedSpan {
            name: metadata.name(),
            target: metadata.target().to_owned(),
            level: *metadata.level(),
            fields: fields.values,
            parent,
            closed: false,
            id: id.into_u64(),
        });
        let index = recorded.spans.len() - 1;
        drop(recorded);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Index(index));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(index) = span.extensions().get::<Index>().map(|index| index.0) else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut recorded = lock(&shared().recorded);
        if let Some(span) = recorded
            .spans
            .get_mut(index)
            .filter(|s| s.id == id.into_u64())
        {
            span.fields.extend(fields.values);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.values.remove("message").unwrap_or_default();
        let span = ctx.event_span(event);
        let index = span
            .as_ref()
            .and_then(|span| span.extensions().get::<Index>().map(|index| index.0));
        let metadata = event.metadata();
        let mut recorded = lock(&shared().recorded);
        let span_fields = index
            .and_then(|index| recorded.spans.get(index))
            .map(|span| span.fields.clone())
            .unwrap_or_default();
        recorded.events.push(CapturedEvent {
            message,
            target: metadata.target().to_owned(),
            level: *metadata.level(),
            fields: fields.values,
            span: span.map(|span| span.name()),
            span_fields,
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(index) = span.extensions().get::<Index>().map(|index| index.0) else {
            return;
        };
        let mut recorded = lock(&shared().recorded);
        if let Some(span) = recorded
            .spans
            .get_mut(index)
            .filter(|s| s.id == id.into_u64())
        {
            span.closed = true;
        }
    }
}

#[derive(Default)]
struct Fields {
    values: BTreeMap<String, String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.values
            .insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.values
            .insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// A test's view of what was emitted since it started capturing. Holds the binary's capture
/// lock until dropped.
pub struct Capture {
    _serial: MutexGuard<'static, ()>,
}

impl Capture {
    /// Installs the capturing subscriber and recorder (once per process), waits for other
    /// capturing tests to finish, and forgets what they emitted.
    pub fn start() -> Self {
        let shared = shared();
        let serial = lock(&shared.serial);
        *lock(&shared.recorded) = Recorded::default();
        // Resets counters and drains histograms; gauges keep their value (a processor's lag is
        // what it is), so they are read as they stand.
        drop(shared.snapshotter.snapshot());
        *lock(&shared.accumulated) = Accumulated::default();
        Capture { _serial: serial }
    }

    /// Every span created since the capture started, in creation order.
    pub fn spans(&self) -> Vec<CapturedSpan> {
        lock(&shared().recorded).spans.clone()
    }

    /// The spans named `name`.
    pub fn spans_named(&self, name: &str) -> Vec<CapturedSpan> {
        self.spans()
            .into_iter()
            .filter(|span| span.name == name)
            .collect()
    }

    /// Every event emitted since the capture started, in order.
    pub fn events(&self) -> Vec<CapturedEvent> {
        lock(&shared().recorded).events.clone()
    }

    /// The events whose message is `message`.
    pub fn events_named(&self, message: &str) -> Vec<CapturedEvent> {
        self.events()
            .into_iter()
            .filter(|event| event.message == message)
            .collect()
    }

    /// The metrics recorded since the capture started: counters added up, histogram samples,
    /// and gauges as they stand now.
    pub fn metrics(&self) -> Metrics {
        let shared = shared();
        let mut accumulated = lock(&shared.accumulated);
        for (key, _, _, value) in shared.snapshotter.snapshot().into_vec() {
            let id = metric_id(key.key());
            match value {
                DebugValue::Counter(value) => {
                    *accumulated.counters.entry(id).or_default() += value;
                }
                DebugValue::Histogram(values) => accumulated
                    .histograms
                    .entry(id)
                    .or_default()
                    .extend(values.into_iter().map(|value| value.into_inner())),
                DebugValue::Gauge(_) => {}
            }
        }
        let mut gauges = BTreeMap::new();
        shared.gauges.visit_gauges(|key, gauge| {
            let bits = gauge.load(std::sync::atomic::Ordering::SeqCst);
            gauges.insert(metric_id(key), f64::from_bits(bits));
        });
        Metrics {
            counters: accumulated.counters.clone(),
            histograms: accumulated.histograms.clone(),
            gauges,
        }
    }
}

fn metric_id(key: &Key) -> MetricId {
    let mut labels: Vec<(String, String)> = key
        .labels()
        .map(|label| (label.key().to_owned(), label.value().to_owned()))
        .collect();
    labels.sort();
    (key.name().to_owned(), labels)
}

fn wanted(name: &str, labels: &[(&str, &str)]) -> MetricId {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    labels.sort();
    (name.to_owned(), labels)
}

/// Metrics read by [`Capture::metrics`]. A metric is named with all its labels.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    counters: BTreeMap<MetricId, u64>,
    histograms: BTreeMap<MetricId, Vec<f64>>,
    gauges: BTreeMap<MetricId, f64>,
}

impl Metrics {
    /// A counter's increments since the capture started (0 when it never moved).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters
            .get(&wanted(name, labels))
            .copied()
            .unwrap_or(0)
    }

    /// A histogram's samples since the capture started.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.histograms
            .get(&wanted(name, labels))
            .cloned()
            .unwrap_or_default()
    }

    /// A gauge's value now, when it was ever set.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.gauges.get(&wanted(name, labels)).copied()
    }

    /// Every metric name with its labels, for a failing assertion's message.
    pub fn names(&self) -> Vec<String> {
        let counters = self.counters.keys().map(|id| format!("counter {id:?}"));
        let histograms = self.histograms.keys().map(|id| format!("histogram {id:?}"));
        let gauges = self.gauges.keys().map(|id| format!("gauge {id:?}"));
        counters.chain(histograms).chain(gauges).collect()
    }
}
