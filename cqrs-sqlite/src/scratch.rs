//! Throwaway database files for the unit tests, removed with their WAL and shared-memory files
//! when dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) struct ScratchFile(PathBuf);

impl ScratchFile {
    pub(crate) fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "cqrs-sqlite-unit-{}-{name}-{n}.db",
            std::process::id()
        ));
        let file = ScratchFile(path);
        file.remove();
        file
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    fn remove(&self) {
        let _ = crate::remove_database(&self.0);
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        self.remove();
    }
}
