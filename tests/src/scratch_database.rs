//! SQLite database files for tests: a [`ScratchDatabase`] removed when dropped (also when the
//! test fails), or a [`fresh_path`] in this run's own directory, kept for a look after a failure.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

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
        remove_database(&self.0);
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The directory of this test process's database files (one per test binary run), made once.
/// Tests that drop a store without removing its file leave it there, so the directories of
/// earlier runs are removed on the way: those of processes that are gone (where `/proc` tells)
/// and any older than an hour.
pub fn test_directory() -> &'static Path {
    static DIRECTORY: OnceLock<PathBuf> = OnceLock::new();
    DIRECTORY.get_or_init(|| {
        let root = std::env::temp_dir();
        let proc_tells = Path::new("/proc/self").exists();
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(DIRECTORY_PREFIX) else {
                continue;
            };
            let gone = proc_tells && !Path::new("/proc").join(pid).exists();
            let old = entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
            if gone || old {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let directory = root.join(format!("{DIRECTORY_PREFIX}{}", std::process::id()));
        if let Err(error) = std::fs::create_dir_all(&directory) {
            panic!("create the test directory {}: {error}", directory.display());
        }
        directory
    })
}

const DIRECTORY_PREFIX: &str = "cqrs-sqlite-tests-";

/// A path in [`test_directory`] no other store of this run uses, its files removed first. It is
/// kept after the test (removed with the directory by a later run): a failing test's file can be
/// looked at.
pub fn fresh_path(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = test_directory().join(format!("{name}-{n}.db"));
    remove_database(&path);
    path
}

/// Removes a database file and its WAL and shared-memory files, whatever is left of them.
pub fn remove_database(path: &Path) {
    let _ = cqrs_sqlite::remove_database(path);
}
