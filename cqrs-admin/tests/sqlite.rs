//! The `cqrs-admin` binary against SQLite files written through [`SqliteStore`].

mod invocation;

use cqrs_core::admin::StoreAdmin as _;
use cqrs_core::{EventStore as _, ExpectedVersion, StreamId};
use cqrs_sqlite::SqliteStore;
use cqrs_sqlite::rusqlite::params;
use cqrs_tests::scratch_database::ScratchDatabase;
use invocation::{CHECKPOINT, Database, Follower, PROCESSOR, admin};

/// A migrated file holding the sample events, [`PROCESSOR`]'s checkpoint and its dead letter.
async fn sample_file(name: &str) -> (ScratchDatabase, SqliteStore) {
    let file = ScratchDatabase::new(name);
    let store = SqliteStore::open(file.path())
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    store
        .migrate()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    cqrs_tests::admin::write_sample(&store).await;
    let letter = invocation::dead_letter();
    let record = serde_json::to_string(&letter).unwrap_or_else(|error| panic!("{error}"));
    store
        .write(move |connection| {
            connection.execute(
                "INSERT INTO cqrs_processors (name, position, updated_at) VALUES (?1, ?2, 0)",
                params![PROCESSOR, CHECKPOINT as i64],
            )?;
            connection.execute(
                "INSERT INTO cqrs_dead_letters (processor, id, position, record, parked_at) \
                 VALUES (?1, ?2, 3, ?3, 0)",
                params![PROCESSOR, letter.id, record],
            )
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"))
        .unwrap_or_else(|error| panic!("{error}"));
    (file, store)
}

fn flag(file: &ScratchDatabase) -> Database {
    Database::Flag(format!("sqlite://{}", file.path().display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_listing_matches_what_was_written() {
    let (file, _store) = sample_file("admin-cli-listing").await;
    invocation::every_listing_matches_what_was_written(&flag(&file));
    // A plain path ending in `.db` names the same file.
    let plain = Database::Flag(file.path().display().to_string());
    let streams = admin(&plain, &["streams", "--json"]).expect(0);
    assert_eq!(streams.json_lines().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_finds_a_row_deleted_on_purpose() {
    let (file, store) = sample_file("admin-cli-hole").await;
    let database = flag(&file);
    admin(&database, &["check"]).expect(0);
    let deleted = store
        .write(|connection| {
            connection.execute(
                "DELETE FROM cqrs_events WHERE stream = 'show-1' AND version = 2",
                [],
            )
        })
        .await
        .unwrap_or_else(|error| panic!("{error}"))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(deleted, 1);
    invocation::check_names_the_deleted_row(&database);
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_changes_nothing_without_yes() {
    // A file that does not exist is not made.
    let missing = ScratchDatabase::new("admin-cli-missing");
    let run = admin(&flag(&missing), &["migrate", "--json"])
        .expect(0)
        .json();
    assert_eq!(run["pending"].as_array().map(Vec::len), Some(2), "{run}");
    assert_eq!(run["applied"], serde_json::json!([]));
    assert!(!missing.path().exists());

    // A file without the schema keeps lacking it.
    let file = ScratchDatabase::new("admin-cli-migrate");
    let store = SqliteStore::open(file.path())
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let text = admin(&flag(&file), &["migrate"]).expect(0);
    assert!(text.stdout.contains("run again with --yes"), "{text:?}");
    let states = store
        .migrations()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(states.iter().all(|state| !state.applied), "{states:?}");

    let applied = admin(&flag(&file), &["migrate", "--yes", "--json"])
        .expect(0)
        .json();
    assert_eq!(applied["applied"], serde_json::json!([1, 2]));
    let states = store
        .migrations()
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(states.iter().all(|state| state.applied), "{states:?}");
}

#[test]
fn bad_database_values_exit_3_and_bad_usage_exits_2() {
    let missing = ScratchDatabase::new("admin-cli-nofile");
    let run = admin(&flag(&missing), &["streams"]).expect(3);
    assert!(
        run.stderr.contains("there is no SQLite database"),
        "{run:?}"
    );
    assert!(!missing.path().exists());
    let run = admin(&Database::Flag("mysql://localhost/app".into()), &["check"]).expect(3);
    assert!(run.stderr.contains("cannot tell which database"), "{run:?}");
    let run = admin(
        &Database::Flag("sqlite:///nonexistent-dir/x/app.db".into()),
        &["check"],
    );
    run.expect(3);

    let file = ScratchDatabase::new("admin-cli-usage");
    admin(&flag(&file), &["streams", "--bogus"]).expect(2);
    admin(&flag(&file), &["no-such-command"]).expect(2);
    admin(&flag(&file), &["tail", "--after", "minus-one"]).expect(2);
    let run = admin(&Database::Env(String::new()), &["streams"]).expect(2);
    assert!(run.stderr.contains("no database given"), "{run:?}");
    admin(&flag(&file), &["stream", ""]).expect(2);
    let help = admin(&flag(&file), &["--help"]).expect(0);
    assert!(help.stdout.contains("Exit codes:"), "{help:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_follow_prints_new_events_and_stops_on_ctrl_c() {
    let (file, store) = sample_file("admin-cli-follow").await;
    let follower = Follower::start(&flag(&file), &["--after", "5"]);
    assert_eq!((follower.next_position(), follower.next_position()), (6, 7));

    // An event written while it waits comes out.
    let stream = StreamId::new("show-3").unwrap_or_else(|error| panic!("{error}"));
    let event = cqrs_tests::admin::sample_event("Scheduled", 8);
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let (position, (code, stderr)) = tokio::task::spawn_blocking(move || {
        let position = follower.next_position();
        (position, follower.interrupt())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(position, 8);
    assert_eq!(code, Some(0), "{stderr}");
}
