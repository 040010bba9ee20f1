//! Noticing what other processes wrote: one thread per store checks `PRAGMA data_version` on a
//! short interval, while someone waits for events, and publishes the new head.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use cqrs_core::Position;
use rusqlite::Connection;
use tokio::sync::watch;

use crate::connection::{self, Role};
use crate::options::SqliteOptions;

/// Starts the change watcher of a store; it ends within one interval of the store's last clone
/// being dropped (`alive` no longer upgrades) or of `closed` being set, closing its connection.
/// A watcher that cannot open its connection or thread ends at once (`None`): waiters are then
/// woken by this store's own writes only.
pub(crate) fn start(
    path: PathBuf,
    options: &SqliteOptions,
    head: Arc<watch::Sender<Position>>,
    alive: Weak<()>,
    closed: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    let interval = options.change_check_interval;
    let connection = connection::open(&path, options, Role::Reader).ok()?;
    let spawned = std::thread::Builder::new()
        .name("cqrs-sqlite-changes".into())
        .spawn(move || {
            let mut seen = data_version(&connection);
            while alive.upgrade().is_some() && !closed.load(Ordering::Acquire) {
                std::thread::sleep(interval);
                // Nobody waits: nothing to check. `seen` stays as it was, so a change made
                // meanwhile is noticed at the first check after someone starts waiting.
                if head.receiver_count() == 0 {
                    continue;
                }
                let now = data_version(&connection);
                if now == seen {
                    continue;
                }
                seen = now;
                if let Some(found) = read_head(&connection) {
                    head.send_if_modified(|published| {
                        if found <= *published {
                            return false;
                        }
                        *published = found;
                        true
                    });
                }
            }
        });
    // Without the thread, waiters still wake on this store's own writes.
    spawned.ok()
}

/// The connection's `data_version`: it changes when another connection commits to the file.
fn data_version(connection: &Connection) -> Option<i64> {
    connection
        .query_row("PRAGMA data_version", [], |row| row.get(0))
        .ok()
}

fn read_head(connection: &Connection) -> Option<Position> {
    connection
        .query_row(
            "SELECT coalesce(max(position), 0) FROM cqrs_events",
            [],
            |row| row.get::<_, i64>(0),
        )
        .ok()
        .and_then(|head| u64::try_from(head).ok())
        .map(Position)
}
