//! The seam that operators' tools use to look into a store: which streams it holds, which
//! processors keep their checkpoints in it, which schema migrations it has, and whether its
//! global log and streams are whole.
//!
//! A backend implements [`StoreAdmin`] next to its [`EventStore`](crate::EventStore) and
//! [`ProcessorStore`](crate::processor::ProcessorStore). The `cqrs-admin` command line tool is
//! written against it, and the conformance checks in the `cqrs-tests` package
//! (`cqrs_tests::admin`) check every implementation.
//!
//! The calls only read. They are meant for people and scripts, not for the hot path: a check
//! reads every row of the log once (on SQL backends as one query that compares each row with the
//! one before it, so nothing is held in memory but the problems found, at most `limit` of each
//! kind).
//!
//! ```
//! use cqrs_core::admin::{CheckReport, StreamQuery};
//! use cqrs_core::{Position, Version};
//!
//! let query = StreamQuery::all().category("show").limit(50);
//! assert_eq!(query.category.as_deref(), Some("show"));
//!
//! let report = CheckReport::empty(Position(3), 100);
//! assert!(report.is_clean());
//! # let _ = Version(1);
//! ```

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Position, Version};
use crate::store::StoreError;

/// How many problems of each kind [`StoreAdmin::check`] lists when the caller does not say.
pub const DEFAULT_CHECK_LIMIT: usize = 100;

/// How many streams [`StoreAdmin::streams`] returns when the caller does not say.
pub const DEFAULT_STREAM_LIMIT: usize = 1000;

/// Which streams [`StoreAdmin::streams`] lists: those of one category or all, in the order of
/// their ids, one page at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamQuery {
    /// Only streams of this category (the aggregate name, everything before the first `-` of
    /// the stream id); every stream when `None`.
    pub category: Option<String>,
    /// Only streams whose id sorts after this one (byte order): the last id of the previous
    /// page. From the first stream when `None`.
    pub after: Option<String>,
    /// At most this many streams.
    pub limit: usize,
}

impl StreamQuery {
    /// Every stream, the first [`DEFAULT_STREAM_LIMIT`] of them.
    pub fn all() -> Self {
        StreamQuery {
            category: None,
            after: None,
            limit: DEFAULT_STREAM_LIMIT,
        }
    }

    /// This query, for the streams of `category` only.
    #[must_use]
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// This query, for the streams after `stream` (the last one of the previous page).
    #[must_use]
    pub fn after(mut self, stream: impl Into<String>) -> Self {
        self.after = Some(stream.into());
        self
    }

    /// This query, for at most `limit` streams.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
}

impl Default for StreamQuery {
    fn default() -> Self {
        Self::all()
    }
}

/// One stream, as [`StoreAdmin::streams`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    /// The stream id, as stored.
    pub stream: String,
    /// Its version: the highest version stored.
    pub version: Version,
    /// How many events it holds (less than `version` when a row is missing).
    pub events: u64,
    /// The global position of its last numbered event; `None` when none of its events has a
    /// position yet (PostgreSQL numbers events just after their commit).
    pub last_position: Option<Position>,
}

/// One processor (projection or saga) whose checkpoint the store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorSummary {
    /// Its name.
    pub name: String,
    /// The position of the last event whose effects it committed.
    pub checkpoint: Position,
    /// How many dead letters it has.
    pub dead_letters: u64,
}

/// One schema migration the backend ships, and whether the store has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationState {
    /// Its number.
    pub version: u32,
    /// Its name.
    pub name: String,
    /// Whether the store records it as applied.
    pub applied: bool,
}

/// Positions missing from the global log: none of `from..=to` is stored, though a later
/// position is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionHole {
    /// The first missing position.
    pub from: Position,
    /// The last missing position.
    pub to: Position,
}

impl fmt::Display for PositionHole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from == self.to {
            write!(f, "position {} is missing", self.from)
        } else {
            write!(f, "positions {} to {} are missing", self.from, self.to)
        }
    }
}

/// A break in one stream's versions: `expected` is not stored, and the next stored version is
/// `found`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionBreak {
    /// The stream, as stored.
    pub stream: String,
    /// The first missing version.
    pub expected: Version,
    /// The version stored where `expected` should have been.
    pub found: Version,
}

impl fmt::Display for VersionBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream `{}` is missing version {}: the next stored version is {}",
            self.stream, self.expected, self.found
        )
    }
}

/// An event committed without a global position yet (PostgreSQL numbers events after their
/// commit). One that stays is an append whose writer died between its commit and the numbering:
/// readers of the log cannot see it until the next append numbers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnnumberedEvent {
    /// The stream, as stored.
    pub stream: String,
    /// Its version.
    pub version: Version,
}

impl fmt::Display for UnnumberedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version {} of stream `{}` is waiting for a position",
            self.version, self.stream
        )
    }
}

/// What [`StoreAdmin::check`] found: the size of the log, and every problem, at most `limit` of
/// each kind (a `*_truncated` flag says there were more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The highest position stored.
    pub head: Position,
    /// How many events the store holds.
    pub events: u64,
    /// How many streams the store holds.
    pub streams: u64,
    /// The most problems of each kind listed.
    pub limit: usize,
    /// Positions missing below the head, lowest first.
    pub position_holes: Vec<PositionHole>,
    /// Whether there were more holes than `limit`.
    pub position_holes_truncated: bool,
    /// Breaks in streams' versions (every stream must hold 1..=n), by stream then version.
    pub version_breaks: Vec<VersionBreak>,
    /// Whether there were more breaks than `limit`.
    pub version_breaks_truncated: bool,
    /// Events without a position (PostgreSQL only), by stream then version.
    pub unnumbered: Vec<UnnumberedEvent>,
    /// Whether there were more unnumbered events than `limit`.
    pub unnumbered_truncated: bool,
}

impl CheckReport {
    /// The report on a store with no problem, `head` its highest position, listing up to `limit`
    /// problems of each kind. Counts are zero: set them.
    pub fn empty(head: Position, limit: usize) -> Self {
        CheckReport {
            head,
            events: 0,
            streams: 0,
            limit,
            position_holes: Vec::new(),
            position_holes_truncated: false,
            version_breaks: Vec::new(),
            version_breaks_truncated: false,
            unnumbered: Vec::new(),
            unnumbered_truncated: false,
        }
    }

    /// Whether the check found nothing wrong (also when it was asked to list no problem).
    pub fn is_clean(&self) -> bool {
        self.position_holes.is_empty()
            && self.version_breaks.is_empty()
            && self.unnumbered.is_empty()
            && !self.position_holes_truncated
            && !self.version_breaks_truncated
            && !self.unnumbered_truncated
    }

    /// Every problem found, one sentence each (holes, then breaks, then unnumbered events).
    pub fn problems(&self) -> Vec<String> {
        let holes = self.position_holes.iter().map(ToString::to_string);
        let breaks = self.version_breaks.iter().map(ToString::to_string);
        let unnumbered = self.unnumbered.iter().map(ToString::to_string);
        holes.chain(breaks).chain(unnumbered).collect()
    }
}

/// Keeps the first `limit` of `found` and says whether there were more: callers fetch
/// `limit + 1` rows and hand them all over.
pub fn cap<T>(mut found: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let truncated = found.len() > limit;
    found.truncate(limit);
    (found, truncated)
}

/// What an operator's tool asks of a store. The calls only read; see the [module](self) docs.
///
/// Every implementation passes the checks in `cqrs_tests::admin`.
#[async_trait::async_trait]
pub trait StoreAdmin: Send + Sync + 'static {
    /// The streams `query` asks for, in the byte order of their ids.
    async fn streams(&self, query: &StreamQuery) -> Result<Vec<StreamSummary>, StoreError>;

    /// The processors whose checkpoints the store keeps, by name. A store that keeps none (the
    /// in-memory store, whose processors keep their state beside it) lists none.
    async fn processors(&self) -> Result<Vec<ProcessorSummary>, StoreError>;

    /// The schema migrations the backend ships, oldest first, and which of them the store has.
    /// Empty for a store without a schema.
    async fn migrations(&self) -> Result<Vec<MigrationState>, StoreError>;

    /// Checks that the global positions are dense (1..=head, no hole), that every stream holds
    /// the versions 1..=n, and that no committed event waits for a position; lists at most
    /// `limit` problems of each kind.
    async fn check(&self, limit: usize) -> Result<CheckReport, StoreError>;
}

macro_rules! forward_store_admin {
    ($($pointer:ty),*) => {$(
        #[async_trait::async_trait]
        impl<S: StoreAdmin + ?Sized> StoreAdmin for $pointer {
            async fn streams(&self, query: &StreamQuery) -> Result<Vec<StreamSummary>, StoreError> {
                (**self).streams(query).await
            }

            async fn processors(&self) -> Result<Vec<ProcessorSummary>, StoreError> {
                (**self).processors().await
            }

            async fn migrations(&self) -> Result<Vec<MigrationState>, StoreError> {
                (**self).migrations().await
            }

            async fn check(&self, limit: usize) -> Result<CheckReport, StoreError> {
                (**self).check(limit).await
            }
        }
    )*};
}

forward_store_admin!(Arc<S>, Box<S>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_named_in_plain_sentences() {
        let mut report = CheckReport::empty(Position(9), 10);
        report.position_holes.push(PositionHole {
            from: Position(4),
            to: Position(4),
        });
        report.position_holes.push(PositionHole {
            from: Position(6),
            to: Position(7),
        });
        report.version_breaks.push(VersionBreak {
            stream: "show-1".into(),
            expected: Version(2),
            found: Version(3),
        });
        assert!(!report.is_clean());
        assert_eq!(
            report.problems(),
            [
                "position 4 is missing",
                "positions 6 to 7 are missing",
                "stream `show-1` is missing version 2: the next stored version is 3",
            ]
        );
    }

    #[test]
    fn cap_keeps_the_limit_and_says_there_were_more() {
        assert_eq!(cap(vec![1, 2, 3], 2), (vec![1, 2], true));
        assert_eq!(cap(vec![1, 2], 2), (vec![1, 2], false));
    }
}
