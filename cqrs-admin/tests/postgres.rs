//! The `cqrs-admin` binary against fresh databases of a throwaway PostgreSQL cluster, written
//! through [`PostgresStore`]; the database is named by `DATABASE_URL`.

mod invocation;

use cqrs_core::admin::StoreAdmin as _;
use cqrs_core::{EventStore as _, ExpectedVersion, StreamId};
use cqrs_postgres::PostgresStore;
use cqrs_postgres::testing::TestCluster;
use invocation::{CHECKPOINT, Database, Follower, PROCESSOR, admin};

async fn fresh_database() -> (String, PostgresStore) {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster
        .create_database()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let store = PostgresStore::with_pool_size(&url, 2).unwrap_or_else(|error| panic!("{error}"));
    (url, store)
}

/// A migrated database holding the sample events, [`PROCESSOR`]'s checkpoint and its dead
/// letter.
async fn sample_database() -> (Database, PostgresStore) {
    let (url, store) = fresh_database().await;
    store
        .migrate()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    cqrs_tests::admin::write_sample(&store).await;
    let letter = invocation::dead_letter();
    let record = serde_json::to_string(&letter).unwrap_or_else(|error| panic!("{error}"));
    let client = store
        .pool()
        .get()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let checkpoint = CHECKPOINT as i64;
    client
        .execute(
            "INSERT INTO cqrs_projections (name, position) VALUES ($1, $2)",
            &[&PROCESSOR, &checkpoint],
        )
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    client
        .execute(
            "INSERT INTO cqrs_dead_letters (processor, id, position, record) \
             VALUES ($1, $2, 3, $3::text::json)",
            &[&PROCESSOR, &letter.id, &record],
        )
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    (Database::Env(url), store)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_listing_matches_what_was_written() {
    let (database, _store) = sample_database().await;
    tokio::task::spawn_blocking(move || {
        invocation::every_listing_matches_what_was_written(&database)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_finds_a_row_deleted_on_purpose() {
    let (database, store) = sample_database().await;
    let database = tokio::task::spawn_blocking(move || {
        admin(&database, &["check"]).expect(0);
        database
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    let client = store
        .pool()
        .get()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let deleted = client
        .execute(
            "DELETE FROM cqrs_events WHERE stream = 'show-1' AND version = 2",
            &[],
        )
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(deleted, 1);
    tokio::task::spawn_blocking(move || invocation::check_names_the_deleted_row(&database))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_changes_nothing_without_yes() {
    let (url, store) = fresh_database().await;
    let database = Database::Env(url);
    let (database, run) = tokio::task::spawn_blocking(move || {
        let run = admin(&database, &["migrate", "--json"]).expect(0).json();
        (database, run)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(run["applied"], serde_json::json!([]));
    let pending = run["pending"].as_array().map_or(0, Vec::len);
    assert_eq!(pending, cqrs_postgres::migrate::MIGRATIONS.len(), "{run}");
    let states = store
        .migrations()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(states.iter().all(|state| !state.applied), "{states:?}");

    let applied = tokio::task::spawn_blocking(move || {
        admin(&database, &["migrate", "--yes", "--json"])
            .expect(0)
            .json()
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        applied["applied"].as_array().map_or(0, Vec::len),
        cqrs_postgres::migrate::MIGRATIONS.len()
    );
    let states = store
        .migrations()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(states.iter().all(|state| state.applied), "{states:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_exits_3_and_a_missing_schema_exits_4() {
    let (url, _store) = fresh_database().await;
    tokio::task::spawn_blocking(move || {
        let refused = Database::Flag("postgres://nobody@127.0.0.1:1/app".into());
        let run = admin(&refused, &["streams"]).expect(3);
        assert!(run.stderr.contains("Connection refused"), "{run:?}");
        let unparsable = Database::Flag("host=/tmp port=notanumber".into());
        admin(&unparsable, &["streams"]).expect(3);
        // The server answers, but the database was never migrated: the server's words come out.
        let run = admin(&Database::Env(url), &["streams"]).expect(4);
        assert!(run.stderr.contains("cqrs_events"), "{run:?}");
        assert!(run.stderr.contains("does not exist"), "{run:?}");
        assert!(
            !run.stderr.contains("password"),
            "the connection string is not printed: {run:?}"
        );
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_follow_prints_new_events_and_stops_on_ctrl_c() {
    let (database, store) = sample_database().await;
    let follower = tokio::task::spawn_blocking(move || {
        let follower = Follower::start(&database, &["--after", "5", "--category", "show"]);
        assert_eq!(follower.next_position(), 6);
        follower
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));

    // Events written while it waits come out, those of other categories left out.
    for (stream, position) in [("order-2", 8), ("show-3", 9)] {
        let id = StreamId::new(stream).unwrap_or_else(|error| panic!("{error}"));
        let receipt = store
            .append(
                &id,
                ExpectedVersion::NoStream,
                vec![cqrs_tests::admin::sample_event("Scheduled", position)],
            )
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(receipt.position.map(|position| position.0), Some(position));
    }
    let (position, (code, stderr)) = tokio::task::spawn_blocking(move || {
        let position = follower.next_position();
        (position, follower.interrupt())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(position, 9);
    assert_eq!(code, Some(0), "{stderr}");
}
