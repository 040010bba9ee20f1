//! Fault injection: appends that fail on request, so that callers can test how they handle a
//! failing store.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The error an injected fault returns, inside [`StoreError::Backend`](cqrs_core::StoreError::Backend).
///
/// Tests can tell an injected failure from any other by downcasting the backend error's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InjectedFault {
    /// The append was refused before anything was checked or written
    /// (see [`MemStore::fail_next_appends`](crate::MemStore::fail_next_appends)).
    #[error("injected fault: the append failed before writing anything")]
    BeforeWrite,
    /// The append was written, then its acknowledgement was lost
    /// (see [`MemStore::fail_next_appends_after_writing`](crate::MemStore::fail_next_appends_after_writing)).
    #[error("injected fault: the append was written but its acknowledgement was lost")]
    AfterWrite,
}

/// How many of the next appends fail, and how.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    before_write: AtomicUsize,
    after_write: AtomicUsize,
}

impl Faults {
    pub(crate) fn set(&self, fault: InjectedFault, count: usize) {
        self.counter(fault).store(count, Ordering::Release);
    }

    /// Whether this append must fail with `fault`; counts it down if so.
    pub(crate) fn take(&self, fault: InjectedFault) -> bool {
        let counter = self.counter(fault);
        // The common case, no fault armed, costs one load and no write to a shared cache line.
        counter.load(Ordering::Acquire) != 0
            && counter
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                    count.checked_sub(1)
                })
                .is_ok()
    }

    fn counter(&self, fault: InjectedFault) -> &AtomicUsize {
        match fault {
            InjectedFault::BeforeWrite => &self.before_write,
            InjectedFault::AfterWrite => &self.after_write,
        }
    }
}
