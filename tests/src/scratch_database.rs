//! A SQLite database file for one test: a unique name under the temp directory, removed with its
//! WAL and shared-memory files when dropped (also when the test fails).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A database path no other test of any process uses, empty at first, removed on drop.
#[derive(Debug)]
pub struct ScratchDatabase(PathBuf);

impl ScratchDatabase {
    /// A fresh path whose name starts with `name`.
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let file = format!("cqrs-tests-{name}-{}-{n}.db", std::process::id());
        let database = ScratchDatabase(std::env::temp_dir().join(file));
        database.remove();
        database
    }

    /// Where the database file is (it exists once a store has opened it).
    pub fn path(&self) -> &Path {
        &self.0
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        self.remove();
    }
}
