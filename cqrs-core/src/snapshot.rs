//! When and how the repository snapshots an aggregate's state.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aggregate::Aggregate;
use crate::event::Version;
use crate::store::Snapshot;

/// Snapshotting for one aggregate type: every how many events, and the state's encoding.
///
/// The encoding functions are captured when the policy is made, so only aggregates that
/// snapshot need to be `Serialize + DeserializeOwned`.
pub struct SnapshotPolicy<A> {
    every: u64,
    encode: fn(&A) -> Result<Vec<u8>, serde_json::Error>,
    decode: fn(&[u8]) -> Result<A, serde_json::Error>,
}

impl<A: Aggregate + Serialize + DeserializeOwned> SnapshotPolicy<A> {
    /// Snapshot the state once `every` events (0 means 1) have been written since the latest
    /// snapshot of the current schema version.
    pub fn every(every: u64) -> Self {
        SnapshotPolicy {
            every: every.max(1),
            encode: |state| serde_json::to_vec(state),
            decode: |bytes| serde_json::from_slice(bytes),
        }
    }
}

impl<A: Aggregate> SnapshotPolicy<A> {
    /// Whether a stream at `version`, whose latest snapshot covers `snapshot_version` (0 when
    /// there is none, or none of the current schema), calls for a new snapshot.
    pub(crate) fn is_due(&self, snapshot_version: Version, version: Version) -> bool {
        version.0.saturating_sub(snapshot_version.0) >= self.every
    }

    pub(crate) fn encode(
        &self,
        state: &A,
        version: Version,
    ) -> Result<Snapshot, serde_json::Error> {
        Ok(Snapshot {
            version,
            schema_version: A::SNAPSHOT_VERSION,
            payload: (self.encode)(state)?,
        })
    }

    /// The state in `snapshot`, or `None` when it cannot be read (it is then ignored and the
    /// state rebuilt from events).
    pub(crate) fn decode(&self, snapshot: &Snapshot) -> Option<A> {
        if snapshot.schema_version != A::SNAPSHOT_VERSION {
            return None;
        }
        (self.decode)(&snapshot.payload).ok()
    }
}

impl<A> Clone for SnapshotPolicy<A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A> Copy for SnapshotPolicy<A> {}

impl<A> std::fmt::Debug for SnapshotPolicy<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotPolicy")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}
