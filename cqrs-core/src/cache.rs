//! A bounded cache of hot aggregates, so a busy aggregate is not rebuilt for every command.
//!
//! A cached state is only a starting point: the append's expected version refuses any decision
//! taken on a stale state (another node may have written meanwhile), and the repository confirms
//! a refusal or a no-op decided on a cached state against the stream before returning it. The
//! cache can therefore never change a command's outcome.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Mutex as AsyncMutex;

use crate::__private::IdHasher as Hasher;
use crate::event::{InvalidStreamId, StreamId};

/// One cached aggregate. The async mutex is held for a whole execute, so commands for one
/// aggregate in this process take turns instead of conflicting with each other.
pub(crate) type Slot<T> = Arc<AsyncMutex<Option<T>>>;

struct Entry<A> {
    slot: Slot<A>,
    last_used: Cell<u64>,
}

struct Entries<A> {
    map: HashMap<StreamId, Entry<A>, Hasher>,
    clock: u64,
}

pub(crate) struct AggregateCache<A> {
    capacity: usize,
    entries: Mutex<Entries<A>>,
}

impl<A> AggregateCache<A> {
    pub(crate) fn new(capacity: usize) -> Self {
        AggregateCache {
            capacity: capacity.max(1),
            entries: Mutex::new(Entries {
                map: HashMap::default(),
                clock: 0,
            }),
        }
    }

    /// The stream named `name` and its slot, created empty when the stream is not cached. A
    /// cached stream's id is shared, not made again, and not validated again: it equals an id
    /// that was. A name that is not cached is validated before anything is stored for it.
    pub(crate) fn slot(&self, name: &str) -> Result<(StreamId, Slot<A>), InvalidStreamId> {
        // Every statement below leaves the map consistent, so a poisoned lock is still usable.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.clock += 1;
        let now = entries.clock;
        if let Some((stream, entry)) = entries.map.get_key_value(name) {
            entry.last_used.set(now);
            return Ok((stream.clone(), entry.slot.clone()));
        }
        let stream = StreamId::new(name)?;
        if entries.map.len() >= self.capacity {
            self.evict(&mut entries.map);
        }
        let slot = Slot::default();
        entries.map.insert(
            stream.clone(),
            Entry {
                slot: slot.clone(),
                last_used: Cell::new(now),
            },
        );
        Ok((stream, slot))
    }

    /// Drops the least recently used eighth of the idle entries, so that eviction costs O(1)
    /// per insert on average. Entries in use by a running command are kept.
    fn evict(&self, map: &mut HashMap<StreamId, Entry<A>, Hasher>) {
        let mut idle: Vec<(u64, StreamId)> = map
            .iter()
            .filter(|(_, entry)| Arc::strong_count(&entry.slot) == 1)
            .map(|(stream, entry)| (entry.last_used.get(), stream.clone()))
            .collect();
        let count = (self.capacity / 8).max(1).min(idle.len());
        if count == 0 {
            return;
        }
        if count < idle.len() {
            idle.select_nth_unstable(count - 1);
        }
        for (_, stream) in &idle[..count] {
            map.remove(stream);
        }
    }

    /// Forgets `stream`.
    pub(crate) fn remove(&self, stream: &StreamId) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.map.remove(stream.as_str());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: usize) -> StreamId {
        StreamId::for_aggregate("test", n).expect("valid id")
    }

    #[test]
    fn stays_within_capacity() {
        let cache = AggregateCache::<u32>::new(64);
        for n in 0..1000 {
            let _ = cache.slot(stream(n).as_str()).expect("valid id");
            assert!(cache.len() <= 64);
        }
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let cache = AggregateCache::<u32>::new(16);
        for n in 0..16 {
            let _ = cache.slot(stream(n).as_str()).expect("valid id");
        }
        // Touch 0..8 so that 8..16 are the oldest.
        for n in 0..8 {
            let _ = cache.slot(stream(n).as_str()).expect("valid id");
        }
        let _ = cache.slot(stream(100).as_str()).expect("valid id");
        let entries = cache.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for n in 0..8 {
            assert!(
                entries.map.contains_key(stream(n).as_str()),
                "recently used {n} was evicted"
            );
        }
        assert!(
            !entries.map.contains_key(stream(8).as_str()),
            "oldest entry was kept"
        );
    }

    #[test]
    fn refuses_an_invalid_name_and_keeps_nothing_for_it() {
        let cache = AggregateCache::<u32>::new(16);
        let too_long = format!("show-{}", "9".repeat(crate::event::MAX_STREAM_ID_LEN));
        for name in ["show-line\nbreak", too_long.as_str()] {
            assert!(cache.slot(name).is_err(), "{name:?} was accepted");
        }
        assert_eq!(cache.len(), 0);
        // A valid name that is cached is found again without being made anew.
        let (first, _) = cache.slot("show-1").expect("valid id");
        let (again, _) = cache.slot("show-1").expect("valid id");
        assert!(std::ptr::eq(first.as_str(), again.as_str()));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn keeps_slots_in_use() {
        let cache = AggregateCache::<u32>::new(2);
        let held = cache.slot(stream(0).as_str()).expect("valid id");
        for n in 1..50 {
            let _ = cache.slot(stream(n).as_str()).expect("valid id");
        }
        assert!(
            Arc::ptr_eq(
                &held.1,
                &cache.slot(stream(0).as_str()).expect("valid id").1
            ),
            "a slot in use was evicted"
        );
    }
}
