//! The stores' DEBUG spans (`store.append`, `store.read`) and the PostgreSQL batch size
//! histogram, as `cqrs_core::telemetry` names them: names, levels, targets, every field and its
//! value, and batch figures that agree with each other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::telemetry::{APPEND_BATCH_SIZE, APPEND_SPAN, READ_SPAN};
use cqrs_core::{
    CommandId, EventId, EventStore, ExpectedVersion, Metadata, NewEvent, Position, StoreError,
    StreamId, Version,
};
use cqrs_memstore::MemStore;
use cqrs_postgres::PostgresStore;
use cqrs_postgres::testing::TestCluster;
use cqrs_tests::telemetry::{Capture, CapturedSpan};
use tracing::Level;

fn event(command_id: Option<&str>) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: "Counted".into(),
        schema_version: 1,
        payload: r#"{"secret":"payload"}"#.into(),
        metadata: Metadata {
            command_id: command_id.map(|id| CommandId::new(id).expect("valid command id")),
            headers: BTreeMap::from([("secret".to_owned(), "header value".to_owned())]),
            ..Metadata::default()
        },
    }
}

fn events(count: usize) -> Vec<NewEvent> {
    (0..count).map(|_| event(None)).collect()
}

fn stream(aggregate: &str, id: u64) -> StreamId {
    StreamId::for_aggregate(aggregate, id).expect("valid stream id")
}

async fn fresh_postgres() -> PostgresStore {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster
        .create_database()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let store = PostgresStore::with_pool_size(&url, 12).unwrap_or_else(|error| panic!("{error}"));
    store.migrate().await.expect("migrate");
    store
}

/// Checks what every store span has: level, target, closed, and no payload or header value.
fn assert_store_span(span: &CapturedSpan, system: &str) {
    assert_eq!(span.level, Level::DEBUG, "{span:?}");
    assert_eq!(span.target, "cqrs_core::telemetry::store", "{span:?}");
    assert!(span.closed, "{span:?}");
    assert_eq!(span.field("db.system.name"), Some(system), "{span:?}");
    for value in span.fields.values() {
        assert!(
            !value.contains("secret") && !value.contains("header value"),
            "a payload or header in {span:?}"
        );
    }
}

/// The fields of `span` that `expected` names, for one comparison that shows them all.
fn fields<'a>(span: &'a CapturedSpan, names: &[&'a str]) -> Vec<(&'a str, Option<&'a str>)> {
    names.iter().map(|name| (*name, span.field(name))).collect()
}

const APPEND_FIELDS: [&str; 8] = [
    "db.operation.name",
    "cqrs.stream",
    "cqrs.expected",
    "cqrs.events",
    "cqrs.version.after",
    "cqrs.position",
    "cqrs.outcome",
    "cqrs.batch.appends",
];

const READ_FIELDS: [&str; 5] = [
    "db.operation.name",
    "cqrs.stream",
    "cqrs.from",
    "cqrs.limit",
    "cqrs.events",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_appends_say_what_they_wrote_and_how_they_ended() {
    let capture = Capture::start();
    let store = MemStore::new();
    let (counter, other) = (stream("counter", 1), stream("counter", 2));

    store
        .append(&counter, ExpectedVersion::NoStream, events(2))
        .await
        .expect("first append");
    store
        .append(&other, ExpectedVersion::Any, events(1))
        .await
        .expect("other stream");
    store
        .append(
            &counter,
            ExpectedVersion::Exact(Version(2)),
            vec![event(Some("c-1"))],
        )
        .await
        .expect("at version 2");
    let conflict = store
        .append(&counter, ExpectedVersion::NoStream, events(1))
        .await;
    assert!(matches!(conflict, Err(StoreError::Conflict { .. })));
    let duplicate = store
        .append(
            &counter,
            ExpectedVersion::StreamExists,
            vec![event(Some("c-1"))],
        )
        .await;
    assert!(matches!(
        duplicate,
        Err(StoreError::DuplicateCommand { .. })
    ));

    let spans = capture.spans_named(APPEND_SPAN);
    for span in &spans {
        assert_store_span(span, "memory");
        assert_eq!(span.parent, None, "{span:?}");
    }
    let seen: Vec<_> = spans
        .iter()
        .map(|span| fields(span, &APPEND_FIELDS))
        .collect();
    let append = |stream: &'static str,
                  expected: &'static str,
                  events: &'static str,
                  after: Option<(&'static str, &'static str)>,
                  outcome: &'static str| {
        vec![
            ("db.operation.name", Some("append")),
            ("cqrs.stream", Some(stream)),
            ("cqrs.expected", Some(expected)),
            ("cqrs.events", Some(events)),
            ("cqrs.version.after", after.map(|(version, _)| version)),
            ("cqrs.position", after.map(|(_, position)| position)),
            ("cqrs.outcome", Some(outcome)),
            // The memory store does not batch.
            ("cqrs.batch.appends", None),
        ]
    };
    assert_eq!(
        seen,
        vec![
            append("counter-1", "no_stream", "2", Some(("2", "2")), "ok"),
            append("counter-2", "any", "1", Some(("1", "3")), "ok"),
            append("counter-1", "exact 2", "1", Some(("3", "4")), "ok"),
            append("counter-1", "no_stream", "1", None, "conflict"),
            append("counter-1", "stream_exists", "1", None, "duplicate_command"),
        ]
    );
    assert!(
        capture.metrics().names().is_empty(),
        "the memory store records no metric: {:?}",
        capture.metrics().names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_reads_say_what_they_read_and_run_inside_their_span() {
    let capture = Capture::start();
    let store = MemStore::new();
    let (counter, other) = (stream("counter", 1), stream("other", 1));
    store
        .append(&counter, ExpectedVersion::NoStream, events(3))
        .await
        .expect("append");
    store
        .append(&other, ExpectedVersion::NoStream, events(2))
        .await
        .expect("append");

    let read = store
        .read_stream(&counter, Version(2), 10)
        .await
        .expect("read_stream");
    assert_eq!(read.len(), 2);
    let mut inside = Vec::new();
    let visited = store
        .visit_stream(&counter, Version(1), 2, &mut |_| {
            inside.push(tracing::Span::current().metadata().map(|meta| meta.name()));
            Ok(())
        })
        .await
        .expect("visit_stream");
    assert_eq!(visited, 2);
    // The visitor runs inside the read's span: the store instruments the work, not only its end.
    assert_eq!(inside, vec![Some(READ_SPAN); 2]);
    let visited = store
        .visit_stream_data(&counter, Version(2), 5, &mut |_| {
            inside.push(tracing::Span::current().metadata().map(|meta| meta.name()));
            Ok(())
        })
        .await
        .expect("visit_stream_data");
    assert_eq!(visited, 2);
    assert_eq!(inside, vec![Some(READ_SPAN); 4]);
    let all = store.read_all(Position(1), 3).await.expect("read_all");
    assert_eq!(all.len(), 3);
    let log = store
        .read_log(Position(0), 100, &["other"])
        .await
        .expect("read_log");
    assert_eq!(log.entries.len(), 2);

    let spans = capture.spans_named(READ_SPAN);
    for span in &spans {
        assert_store_span(span, "memory");
    }
    let seen: Vec<_> = spans
        .iter()
        .map(|span| fields(span, &READ_FIELDS))
        .collect();
    assert_eq!(
        seen,
        vec![
            vec![
                ("db.operation.name", Some("read_stream")),
                ("cqrs.stream", Some("counter-1")),
                ("cqrs.from", None),
                ("cqrs.limit", Some("10")),
                ("cqrs.events", Some("2")),
            ],
            vec![
                ("db.operation.name", Some("visit_stream")),
                ("cqrs.stream", Some("counter-1")),
                ("cqrs.from", None),
                ("cqrs.limit", Some("2")),
                ("cqrs.events", Some("2")),
            ],
            vec![
                ("db.operation.name", Some("visit_stream_data")),
                ("cqrs.stream", Some("counter-1")),
                ("cqrs.from", None),
                ("cqrs.limit", Some("5")),
                ("cqrs.events", Some("2")),
            ],
            vec![
                ("db.operation.name", Some("read_all")),
                ("cqrs.stream", None),
                ("cqrs.from", Some("1")),
                ("cqrs.limit", Some("3")),
                ("cqrs.events", Some("3")),
            ],
            vec![
                ("db.operation.name", Some("read_log")),
                ("cqrs.stream", None),
                ("cqrs.from", Some("0")),
                ("cqrs.limit", Some("100")),
                ("cqrs.events", Some("2")),
            ],
        ]
    );
}

/// How many appends queue up behind a held one and go as one batch.
const QUEUED: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_appends_that_queue_up_go_in_one_batch_and_say_so() {
    let capture = Capture::start();
    let store = fresh_postgres().await;
    let gate = stream("gate", 1);
    // The first append sleeps before its COMMIT, so that the store's one batch in flight is
    // held while the others queue up behind it.
    let held = gate.clone();
    store.set_sql_before_commit(Some(Arc::new(move |stream: &StreamId| {
        (*stream == held).then(|| "SELECT pg_sleep(0.5)".to_owned())
    })));
    let first = {
        let (store, gate) = (store.clone(), gate.clone());
        tokio::spawn(async move {
            store
                .append(&gate, ExpectedVersion::NoStream, events(1))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let queued: Vec<_> = (0..QUEUED as u64)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(&stream("queued", n), ExpectedVersion::NoStream, events(2))
                    .await
            })
        })
        .collect();
    first.await.expect("task").expect("held append");
    for append in queued {
        append.await.expect("task").expect("queued append");
    }
    store.set_sql_before_commit(None);

    let spans = capture.spans_named(APPEND_SPAN);
    assert_eq!(spans.len(), QUEUED + 1, "{spans:#?}");
    let mut sizes = Vec::new();
    for span in &spans {
        assert_store_span(span, "postgresql");
        let gated = span.field("cqrs.stream") == Some(gate.as_str());
        let expected = [
            ("db.operation.name", Some("append")),
            ("cqrs.expected", Some("no_stream")),
            ("cqrs.events", Some(if gated { "1" } else { "2" })),
            ("cqrs.version.after", Some(if gated { "1" } else { "2" })),
            ("cqrs.outcome", Some("ok")),
        ];
        assert_eq!(fields(span, &expected.map(|(name, _)| name)), expected);
        let position: u64 = span
            .field("cqrs.position")
            .and_then(|position| position.parse().ok())
            .unwrap_or_else(|| panic!("a position in {span:?}"));
        assert!(
            (1..=(2 * QUEUED as u64 + 1)).contains(&position),
            "{span:?}"
        );
        let size: usize = span
            .field("cqrs.batch.appends")
            .and_then(|size| size.parse().ok())
            .unwrap_or_else(|| panic!("cqrs.batch.appends in {span:?}"));
        if gated {
            // Nothing was in flight: it went alone.
            assert_eq!(size, 1, "{span:?}");
        }
        sizes.push(size);
    }

    let samples = capture
        .metrics()
        .histogram(APPEND_BATCH_SIZE, &[("store", "postgres")]);
    println!(
        "{} appends went in {} batches of {:?} appends (each append's cqrs.batch.appends: {:?})",
        QUEUED + 1,
        samples.len(),
        samples,
        sizes
    );
    assert_eq!(
        samples.iter().sum::<f64>(),
        (QUEUED + 1) as f64,
        "one sample per batch, of its size: {samples:?}; metrics: {:?}",
        capture.metrics().names()
    );
    assert!(
        sizes.iter().any(|size| *size > 1),
        "the queued appends went in batches of more than one: {sizes:?}"
    );
    // A batch of k appends is one sample of k and k spans that say k.
    let mut by_size: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for size in &sizes {
        by_size.entry(*size).or_default().0 += 1;
    }
    for sample in &samples {
        by_size.entry(*sample as usize).or_default().1 += 1;
    }
    for (size, (spans, batches)) in by_size {
        assert_eq!(
            spans,
            size * batches,
            "{spans} spans say {size}, for {batches} batches of {size}: {sizes:?}, {samples:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_reads_and_refused_appends_say_what_they_did() {
    let capture = Capture::start();
    let store = fresh_postgres().await;
    let (counter, other) = (stream("counter", 1), stream("other", 1));
    store
        .append(&counter, ExpectedVersion::NoStream, events(3))
        .await
        .expect("append");
    store
        .append(&other, ExpectedVersion::NoStream, events(2))
        .await
        .expect("append");
    let conflict = store
        .append(&counter, ExpectedVersion::Exact(Version(1)), events(1))
        .await;
    assert!(matches!(
        conflict,
        Err(StoreError::Conflict {
            actual: Version(3),
            ..
        })
    ));

    let read = store
        .read_stream(&counter, Version(2), 10)
        .await
        .expect("read_stream");
    assert_eq!(read.len(), 2);
    let mut inside = Vec::new();
    let visited = store
        .visit_stream(&counter, Version(1), 10, &mut |_| {
            inside.push(tracing::Span::current().metadata().map(|meta| meta.name()));
            Ok(())
        })
        .await
        .expect("visit_stream");
    assert_eq!(visited, 3);
    assert_eq!(inside, vec![Some(READ_SPAN); 3]);
    let visited = store
        .visit_stream_data(&counter, Version(2), 5, &mut |_| {
            inside.push(tracing::Span::current().metadata().map(|meta| meta.name()));
            Ok(())
        })
        .await
        .expect("visit_stream_data");
    assert_eq!(visited, 2);
    assert_eq!(inside, vec![Some(READ_SPAN); 5]);
    let all = store.read_all(Position(2), 2).await.expect("read_all");
    assert_eq!(all.len(), 2);
    let log = store
        .read_log(Position(0), 100, &["counter"])
        .await
        .expect("read_log");
    assert_eq!(log.entries.len(), 3);

    let appends = capture.spans_named(APPEND_SPAN);
    for span in &appends {
        assert_store_span(span, "postgresql");
    }
    let seen: Vec<_> = appends
        .iter()
        .map(|span| fields(span, &APPEND_FIELDS))
        .collect();
    assert_eq!(
        seen[2],
        vec![
            ("db.operation.name", Some("append")),
            ("cqrs.stream", Some("counter-1")),
            ("cqrs.expected", Some("exact 1")),
            ("cqrs.events", Some("1")),
            ("cqrs.version.after", None),
            ("cqrs.position", None),
            ("cqrs.outcome", Some("conflict")),
            ("cqrs.batch.appends", Some("1")),
        ],
        "{seen:#?}"
    );

    // One span per read: read_stream does not open a visit_stream span of its own.
    let reads = capture.spans_named(READ_SPAN);
    for span in &reads {
        assert_store_span(span, "postgresql");
        assert_eq!(span.parent, None, "{span:?}");
    }
    let seen: Vec<_> = reads
        .iter()
        .map(|span| fields(span, &READ_FIELDS))
        .collect();
    assert_eq!(
        seen,
        vec![
            vec![
                ("db.operation.name", Some("read_stream")),
                ("cqrs.stream", Some("counter-1")),
                ("cqrs.from", None),
                ("cqrs.limit", Some("10")),
                ("cqrs.events", Some("2")),
            ],
            vec![
                ("db.operation.name", Some("visit_stream")),
                ("cqrs.stream", Some("counter-1")),
                ("cqrs.from", None),
                ("cqrs.limit", Some("10")),
                ("cqrs.events", Some("3")),
            ],
            vec![
                ("db.operation.name", Some("visit_stream_data")),
                ("cqrs.stream", Some("counter-1")),
                ("cqrs.from", None),
                ("cqrs.limit", Some("5")),
                ("cqrs.events", Some("2")),
            ],
            vec![
                ("db.operation.name", Some("read_all")),
                ("cqrs.stream", None),
                ("cqrs.from", Some("2")),
                ("cqrs.limit", Some("2")),
                ("cqrs.events", Some("2")),
            ],
            vec![
                ("db.operation.name", Some("read_log")),
                ("cqrs.stream", None),
                ("cqrs.from", Some("0")),
                ("cqrs.limit", Some("100")),
                ("cqrs.events", Some("3")),
            ],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_batch_split_after_refused_data_says_so_in_each_append() {
    let capture = Capture::start();
    let store = fresh_postgres().await;
    // As above: a held append, and three queued behind it in one batch, one of which carries a
    // text the server refuses (a NUL character), so that the batch goes again one by one.
    let gate = stream("gate", 1);
    let held = gate.clone();
    store.set_sql_before_commit(Some(Arc::new(move |stream: &StreamId| {
        (*stream == held).then(|| "SELECT pg_sleep(0.5)".to_owned())
    })));
    let first = {
        let (store, gate) = (store.clone(), gate.clone());
        tokio::spawn(async move {
            store
                .append(&gate, ExpectedVersion::NoStream, events(1))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let queued = ["good", "bad", "fine"].map(|aggregate| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut written = events(2);
            if aggregate == "bad" {
                written[1].event_type = "Bad\0Type".into();
            }
            store
                .append(&stream(aggregate, 1), ExpectedVersion::NoStream, written)
                .await
        })
    });
    first.await.expect("task").expect("held append");
    let [good, bad, fine] = queued;
    good.await.expect("task").expect("good");
    fine.await.expect("task").expect("fine");
    let bad = bad.await.expect("task").expect_err("refused");
    store.set_sql_before_commit(None);
    // The error still says what the server said.
    assert!(bad.to_string().contains("22021"), "{bad}");

    let spans = capture.spans_named(APPEND_SPAN);
    let outcomes: BTreeMap<_, _> = spans
        .iter()
        .map(|span| {
            assert_store_span(span, "postgresql");
            (
                span.field("cqrs.stream").unwrap_or_default(),
                (span.field("cqrs.outcome"), span.field("cqrs.batch.appends")),
            )
        })
        .collect();
    // Each went to the server alone in the end.
    assert_eq!(
        outcomes,
        BTreeMap::from([
            ("bad-1", (Some("error"), Some("1"))),
            ("fine-1", (Some("ok"), Some("1"))),
            ("gate-1", (Some("ok"), Some("1"))),
            ("good-1", (Some("ok"), Some("1"))),
        ])
    );
    let samples = capture
        .metrics()
        .histogram(APPEND_BATCH_SIZE, &[("store", "postgres")]);
    assert_eq!(samples, vec![1.0; 4], "the split batch is not counted");

    let split: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|event| event.message.contains("refused the data"))
        .collect();
    println!("{split:#?}");
    let mut streams: Vec<_> = split
        .iter()
        .map(|event| {
            assert_eq!(event.level, Level::DEBUG, "{event:?}");
            assert!(event.target.starts_with("cqrs_postgres"), "{event:?}");
            assert_eq!(event.span, Some(APPEND_SPAN), "{event:?}");
            assert_eq!(event.fields["cqrs.batch.appends"], "3", "{event:?}");
            assert_eq!(
                event.fields["db.response.status_code"], "22021",
                "{event:?}"
            );
            event.span_fields["cqrs.stream"].clone()
        })
        .collect();
    streams.sort();
    assert_eq!(streams, ["bad-1", "fine-1", "good-1"]);
}
