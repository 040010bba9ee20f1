//! `PostgresSagaStore` on the processor seam: commits checked against the expected checkpoint
//! (kept in `cqrs_projections` with every processor's), dead letters with the commit, `forget`;
//! and migration 0005 moving the saga checkpoints of earlier versions.

use std::time::{Duration, SystemTime};

use cqrs_core::Position;
use cqrs_core::processor::{
    CommitError, DeadLetter, EventFailure, EventRef, Failure, FailureKind, ProcessorStore,
};
use cqrs_core::saga::{Deadline, InstanceRecord, SagaCommit, SagaStore};
use cqrs_postgres::testing::TestCluster;
use cqrs_postgres::{PostgresSagaStore, PostgresStore};

async fn fresh_url() -> String {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    cluster.create_database().await.expect("database")
}

async fn fresh_sagas() -> PostgresSagaStore {
    let store = PostgresStore::with_pool_size(&fresh_url().await, 4).expect("store");
    store.migrate().await.expect("migrate");
    PostgresSagaStore::new(store)
}

fn instance(id: &str, position: u64, due: Option<SystemTime>) -> InstanceRecord {
    InstanceRecord {
        instance: id.to_owned(),
        state: serde_json::json!({ "step": position }),
        position: Position(position),
        finished: false,
        deadlines: due
            .into_iter()
            .map(|due| Deadline {
                name: "timeout".to_owned(),
                due,
                id: format!("{id}/timeout"),
                correlation_id: None,
                causation_id: None,
                attempts: 0,
            })
            .collect(),
    }
}

fn parked(position: u64) -> DeadLetter {
    let event = EventRef {
        position: Position(position),
        stream: "order-1".to_owned(),
        version: None,
        event_type: Some("Placed".to_owned()),
        event_id: None,
    };
    let failure = EventFailure::new(FailureKind::Command, "the payment service said no");
    DeadLetter::new("checkout", Failure::of_event(event, &failure, 3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_checked_against_the_expected_checkpoint() {
    let sagas = fresh_sagas().await;
    let letter = parked(4);
    sagas
        .commit(
            "checkout",
            SagaCommit {
                expected: Some(Position::START),
                checkpoint: Some(Position(5)),
                instances: vec![instance("a", 3, None), instance("b", 5, None)],
                dead_letters: vec![letter.clone()],
                retried: None,
            },
        )
        .await
        .expect("commit");
    assert_eq!(
        sagas.checkpoint("checkout").await.expect("checkpoint"),
        Position(5)
    );
    assert_eq!(
        sagas.instance("checkout", "b").await.expect("instance"),
        Some(instance("b", 5, None))
    );
    assert_eq!(
        sagas.dead_letters("checkout").await.expect("dead letters"),
        vec![letter.clone()]
    );

    // A second runner's stale commit writes nothing.
    let error = sagas
        .commit(
            "checkout",
            SagaCommit {
                expected: Some(Position::START),
                checkpoint: Some(Position(9)),
                instances: vec![instance("b", 9, None)],
                dead_letters: vec![parked(7)],
                retried: Some(letter.id.clone()),
            },
        )
        .await
        .expect_err("the checkpoint moved");
    assert!(
        matches!(
            error,
            CommitError::CheckpointMoved {
                processor: "checkout",
                expected: Position(0),
                actual: Position(5)
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        sagas.instance("checkout", "b").await.expect("instance"),
        Some(instance("b", 5, None))
    );
    assert_eq!(
        sagas
            .dead_letters("checkout")
            .await
            .expect("dead letters")
            .len(),
        1
    );

    // A deadline's commit does not depend on the checkpoint; a retry removes its dead letter.
    let due = SystemTime::now() - Duration::from_secs(1);
    sagas
        .commit(
            "checkout",
            SagaCommit {
                instances: vec![instance("a", 3, Some(due))],
                retried: Some(letter.id.clone()),
                ..SagaCommit::default()
            },
        )
        .await
        .expect("commit");
    assert!(
        sagas
            .dead_letters("checkout")
            .await
            .expect("dead letters")
            .is_empty()
    );
    assert_eq!(
        sagas.checkpoint("checkout").await.expect("checkpoint"),
        Position(5)
    );
    let due_now = sagas
        .due_deadlines("checkout", SystemTime::now())
        .await
        .expect("due");
    assert_eq!(due_now.len(), 1);
    assert_eq!(due_now[0].0, "a");
    assert_eq!(
        sagas.next_deadline("checkout").await.expect("next"),
        Some(due_now[0].1.due)
    );

    // Processor names are one namespace: the checkpoint is the one the store reads.
    assert_eq!(
        sagas.instances("checkout").await.expect("instances").len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_drops_checkpoint_instances_and_dead_letters() {
    let sagas = fresh_sagas().await;
    sagas
        .commit(
            "refunds",
            SagaCommit {
                expected: Some(Position::START),
                checkpoint: Some(Position(3)),
                instances: vec![instance("x", 3, Some(SystemTime::now()))],
                dead_letters: vec![parked(2)],
                retried: None,
            },
        )
        .await
        .expect("commit");
    let lease = sagas.lead("refunds").await.expect("lead").expect("a lease");

    sagas.forget("refunds").await.expect("forget");
    assert_eq!(
        sagas.checkpoint("refunds").await.expect("checkpoint"),
        Position::START
    );
    assert!(
        sagas
            .instance("refunds", "x")
            .await
            .expect("instance")
            .is_none()
    );
    assert!(
        sagas
            .dead_letters("refunds")
            .await
            .expect("dead letters")
            .is_empty()
    );
    assert!(
        sagas
            .next_deadline("refunds")
            .await
            .expect("next")
            .is_none()
    );
    // The leader lock is still the one held: nobody else may lead meanwhile.
    assert!(sagas.lead("refunds").await.expect("lead").is_none());
    drop(lease);

    sagas
        .set_checkpoint("refunds", Position(8))
        .await
        .expect("set");
    assert_eq!(
        sagas.checkpoint("refunds").await.expect("checkpoint"),
        Position(8)
    );
}

/// Applies the shipped migrations up to `last` by hand, as an earlier version of the crate did.
async fn migrate_up_to(url: &str, last: i32) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE cqrs_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .expect("migrations table");
    for migration in cqrs_postgres::migrate::MIGRATIONS
        .iter()
        .filter(|migration| migration.version <= last)
    {
        client
            .batch_execute(migration.sql)
            .await
            .expect("migration");
        client
            .execute(
                "INSERT INTO cqrs_schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await
            .expect("record");
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_5_moves_saga_checkpoints_and_refuses_a_shared_name() {
    let url = fresh_url().await;
    let client = migrate_up_to(&url, 4).await;
    client
        .batch_execute(
            "INSERT INTO cqrs_saga_checkpoints (saga, position) VALUES ('checkout', 42);
             INSERT INTO cqrs_projections (name, position) VALUES ('seats', 7);",
        )
        .await
        .expect("earlier checkpoints");
    let store = PostgresStore::with_pool_size(&url, 2).expect("store");
    assert_eq!(store.migrate().await.expect("migrate"), vec![5]);
    let sagas = PostgresSagaStore::new(store.clone());
    assert_eq!(
        sagas.checkpoint("checkout").await.expect("checkpoint"),
        Position(42)
    );
    assert_eq!(
        store.checkpoint("seats").await.expect("checkpoint"),
        Position(7)
    );

    let url = fresh_url().await;
    let client = migrate_up_to(&url, 4).await;
    client
        .batch_execute(
            "INSERT INTO cqrs_saga_checkpoints (saga, position) VALUES ('orders', 42);
             INSERT INTO cqrs_projections (name, position) VALUES ('orders', 7);",
        )
        .await
        .expect("earlier checkpoints");
    let store = PostgresStore::with_pool_size(&url, 2).expect("store");
    let error = store.migrate().await.expect_err("a shared name");
    let message = error.to_string();
    assert!(message.contains("migration 5"), "{message}");
    assert!(message.contains("\"orders\""), "{message}");
    assert!(message.contains("rename one"), "{message}");
    // Nothing of it was applied.
    let applied: i64 = client
        .query_one(
            "SELECT count(*) FROM cqrs_schema_migrations WHERE version = 5",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(applied, 0);
}
