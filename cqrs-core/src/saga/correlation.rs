//! Reading a whole business process back by its correlation id.

use uuid::Uuid;

use crate::event::{Position, RecordedEvent};
use crate::store::{EventStore, StoreError};

/// How many events [`read_process`] reads per call.
const SCAN_BATCH: usize = 1024;

/// Every event of the process `correlation_id`, in global order: the events of the command that
/// started it and of every command a saga sent because of them.
///
/// It scans the whole global log, which is fine for tests, tools and small stores; a store with
/// an index on correlation ids can answer faster.
pub async fn read_process<S: EventStore + ?Sized>(
    store: &S,
    correlation_id: Uuid,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut process = Vec::new();
    let mut after = Position::START;
    loop {
        let batch = store.read_all(after, SCAN_BATCH).await?;
        let Some(last) = batch.last() else {
            return Ok(process);
        };
        after = last.position;
        process.extend(
            batch
                .into_iter()
                .filter(|event| event.metadata.correlation_id == Some(correlation_id)),
        );
    }
}
