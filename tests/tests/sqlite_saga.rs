//! The checkout saga end to end on SQLite (`cqrs_tests::checkout`): events in a
//! [`SqliteStore`], saga state, deadlines and checkpoint in a [`SqliteSagaStore`], in one file.
//! A restart is a new store on the same file: a new writer, new readers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use cqrs_core::StoreError;
use cqrs_core::saga::InstanceRecord;
use cqrs_sqlite::{SqliteSagaStore, SqliteStore};
use cqrs_tests::checkout::{self, Backend};
use cqrs_tests::scratch_database::{remove_database, test_directory};

/// A fresh database file, removed when the test is done.
struct SqliteFile(PathBuf);

impl SqliteFile {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = test_directory().join(format!(
            "checkout-{}.db",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        remove_database(&path);
        SqliteFile(path)
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        remove_database(&self.0);
    }
}

impl Backend for SqliteFile {
    type Store = SqliteStore;
    type Sagas = SqliteSagaStore;

    async fn open(&self) -> (SqliteStore, SqliteSagaStore) {
        let store = SqliteStore::open(&self.0).await.expect("store");
        store.migrate().await.expect("migrate");
        let sagas = SqliteSagaStore::new(store.clone());
        (store, sagas)
    }

    async fn instances(
        sagas: &SqliteSagaStore,
        saga: &str,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        sagas.instances(saga).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_confirms_paid_bookings_releases_declined_ones_and_a_replay_writes_nothing() {
    checkout::checkout_confirms_paid_bookings_releases_declined_ones_and_a_replay_writes_nothing(
        SqliteFile::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_deadline_is_stored_and_fires_once_after_a_restart() {
    checkout::the_payment_deadline_is_stored_and_fires_once_after_a_restart(SqliteFile::new())
        .await;
}
