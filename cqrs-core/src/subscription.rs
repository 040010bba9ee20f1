//! Following the global log from a position: batches in order, and waiting without polling once
//! caught up. Projections and sagas are built on it.

use crate::event::{Position, RecordedEvent};
use crate::store::{EventStore, StoreError};

/// A reader of the global log that remembers where it is.
///
/// Each batch starts right after the last event of the previous one, so a follower never skips
/// an event nor sees one twice. Where to resume after a restart is the caller's business: save
/// [`position`](LogFollower::position) with the effects of the events read up to it, and start the
/// next follower from there.
///
/// ```
/// use cqrs_core::subscription::LogFollower;
/// use cqrs_core::{EventId, EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId};
/// use cqrs_memstore::MemStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemStore::new();
/// let stream = StreamId::new("show-1")?;
/// let event = NewEvent {
///     event_id: EventId::new(),
///     event_type: "Scheduled".into(),
///     schema_version: 1,
///     payload: r#"{"capacity":10}"#.into(),
///     metadata: Metadata::default(),
/// };
/// store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
///
/// let mut follower = LogFollower::new(store, Position::START, 100);
/// let batch = follower.next_batch().await?; // waits when there is nothing new
/// assert_eq!(batch.len(), 1);
/// assert_eq!(follower.position(), Position(1));
/// assert!(follower.poll_batch().await?.is_empty()); // never waits
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LogFollower<S> {
    store: S,
    position: Position,
    batch_size: usize,
}

impl<S: EventStore> LogFollower<S> {
    /// A follower that reads the events after `after`, `batch_size` at a time (at least 1).
    pub fn new(store: S, after: Position, batch_size: usize) -> Self {
        LogFollower {
            store,
            position: after,
            batch_size: batch_size.max(1),
        }
    }

    /// The position of the last event handed out ([`Position::START`] before any).
    pub fn position(&self) -> Position {
        self.position
    }

    /// Moves the follower, e.g. back to [`Position::START`] to replay the whole log.
    pub fn seek(&mut self, after: Position) {
        self.position = after;
    }

    /// The store it reads.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The next events, possibly none; never waits for new ones.
    pub async fn poll_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        let batch = self.store.read_all(self.position, self.batch_size).await?;
        if let Some(last) = batch.last() {
            self.position = last.position;
        }
        Ok(batch)
    }

    /// The next events; when the follower is caught up, waits (without polling) until there are.
    /// Never returns an empty batch.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        loop {
            let batch = self.poll_batch().await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            self.store.wait_for_events(self.position).await?;
        }
    }
}
