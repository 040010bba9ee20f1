//! The conformance checks of cqrs-core's admin seam ([`StoreAdmin`]): what every store lists
//! and finds, run against each backend by its test file (`tests/tests/admin_*.rs`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! cqrs_tests::admin::a_clean_store_checks_clean(cqrs_memstore::MemStore::new()).await;
//! # }
//! ```

use std::future::Future;

use cqrs_core::admin::{PositionHole, StoreAdmin, StreamQuery, StreamSummary, VersionBreak};
use cqrs_core::{
    EventId, EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId, Version,
};

/// One event of `event_type` with a small JSON payload.
pub fn sample_event(event_type: &'static str, n: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: event_type.into(),
        schema_version: 1,
        payload: format!(r#"{{"n":{n}}}"#).as_str().into(),
        metadata: Metadata::default(),
    }
}

/// The streams [`write_sample`] writes, with their versions and last positions, in id order.
pub fn sample_streams() -> Vec<StreamSummary> {
    let summary = |stream: &str, version, last| StreamSummary {
        stream: stream.to_owned(),
        version: Version(version),
        events: version,
        last_position: Some(Position(last)),
    };
    vec![
        summary("order-1", 2, 7),
        summary("show-1", 3, 5),
        summary("show-2", 2, 6),
    ]
}

/// Writes seven events to an empty store, one append each, interleaving three streams:
/// positions 1 to 5 go to `show-1`, `show-2`, `show-1`, `order-1`, `show-1`, then 6 to `show-2`
/// and 7 to `order-1`. Returns every event written, as (stream, version, position, type).
pub async fn write_sample<S: EventStore + ?Sized>(
    store: &S,
) -> Vec<(String, Version, Position, &'static str)> {
    let appends: [(&str, &'static str); 7] = [
        ("show-1", "Scheduled"),
        ("show-2", "Scheduled"),
        ("show-1", "SeatsReserved"),
        ("order-1", "Placed"),
        ("show-1", "SeatsReserved"),
        ("show-2", "SeatsReserved"),
        ("order-1", "Paid"),
    ];
    let mut written = Vec::new();
    for (n, (stream, event_type)) in appends.into_iter().enumerate() {
        let id = StreamId::new(stream).unwrap_or_else(|error| panic!("{error}"));
        let receipt = store
            .append(
                &id,
                ExpectedVersion::Any,
                vec![sample_event(event_type, n as u64)],
            )
            .await
            .unwrap_or_else(|error| panic!("append to {stream}: {error}"));
        let position = receipt
            .position
            .unwrap_or_else(|| panic!("the append to {stream} has no position"));
        written.push((stream.to_owned(), receipt.version, position, event_type));
    }
    written
}

/// An empty store and the sample store check clean, with the counts of what they hold.
pub async fn a_clean_store_checks_clean<S: EventStore + StoreAdmin>(store: S) {
    let empty = store
        .check(10)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(empty.is_clean(), "{:?}", empty.problems());
    assert_eq!(
        (empty.head, empty.events, empty.streams),
        (Position(0), 0, 0)
    );

    write_sample(&store).await;
    let report = store
        .check(10)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(report.is_clean(), "{:?}", report.problems());
    assert_eq!(
        (report.head, report.events, report.streams),
        (Position(7), 7, 3)
    );
    assert_eq!(report.limit, 10);
}

/// Streams are listed in id order with their versions and last positions, by category, and in
/// pages.
pub async fn streams_are_listed_by_category_and_in_pages<S: EventStore + StoreAdmin>(store: S) {
    let list = |query: StreamQuery| {
        let store = &store;
        async move {
            store
                .streams(&query)
                .await
                .unwrap_or_else(|error| panic!("{error}"))
        }
    };
    assert_eq!(list(StreamQuery::all()).await, []);
    write_sample(&store).await;
    let all = sample_streams();
    assert_eq!(list(StreamQuery::all()).await, all);
    assert_eq!(list(StreamQuery::all().category("show")).await, all[1..]);
    assert_eq!(list(StreamQuery::all().category("order")).await, all[..1]);
    // A prefix of a category is not the category.
    assert_eq!(list(StreamQuery::all().category("sho")).await, []);
    assert_eq!(list(StreamQuery::all().category("show-1")).await, []);
    // Pages: the first, then the ones after the last id seen.
    assert_eq!(list(StreamQuery::all().limit(2)).await, all[..2]);
    assert_eq!(list(StreamQuery::all().after("show-1")).await, all[2..]);
    assert_eq!(
        list(StreamQuery::all().category("show").after("show-1").limit(5)).await,
        all[2..]
    );
}

/// After the event at version 2 of `show-1` (position 3) is deleted behind the store's back by
/// `delete(stream, version)`, the check names the missing position and the stream's break, and
/// says it left problems out when asked to list none.
pub async fn a_deleted_event_is_found_and_named<S, F, Fut>(store: S, delete: F)
where
    S: EventStore + StoreAdmin,
    F: FnOnce(String, Version) -> Fut,
    Fut: Future<Output = ()>,
{
    write_sample(&store).await;
    delete("show-1".to_owned(), Version(2)).await;
    let report = store
        .check(10)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(!report.is_clean());
    assert_eq!(
        report.position_holes,
        [PositionHole {
            from: Position(3),
            to: Position(3)
        }]
    );
    assert_eq!(
        report.version_breaks,
        [VersionBreak {
            stream: "show-1".to_owned(),
            expected: Version(2),
            found: Version(3),
        }]
    );
    assert!(report.unnumbered.is_empty());
    assert_eq!(
        report.problems(),
        [
            "position 3 is missing",
            "stream `show-1` is missing version 2: the next stored version is 3",
        ]
    );
    assert_eq!(
        (report.head, report.events, report.streams),
        (Position(7), 6, 3)
    );

    let capped = store
        .check(0)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(capped.position_holes.is_empty() && capped.version_breaks.is_empty());
    assert!(capped.position_holes_truncated && capped.version_breaks_truncated);
    assert!(!capped.is_clean());
}

/// A store on a new database lists every shipped migration as not applied, and as applied once
/// `migrate` (the backend's own call) has run; it knows of no processor yet.
pub async fn migrations_are_listed_as_applied<S, Fut>(store: &S, migrate: Fut)
where
    S: StoreAdmin,
    Fut: Future<Output = ()>,
{
    let before = store
        .migrations()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(!before.is_empty() && before.iter().all(|migration| !migration.applied));
    migrate.await;
    let after = store
        .migrations()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(after.iter().all(|migration| migration.applied), "{after:?}");
    assert!(
        store
            .processors()
            .await
            .unwrap_or_else(|error| panic!("{error}"))
            .is_empty()
    );
}
