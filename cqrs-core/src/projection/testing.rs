//! Given / then for projections: given these events in these streams, then the read model
//! equals this.
//!
//! The events are encoded and recorded as a store would (stream, version, position), then routed
//! and applied exactly as the runner does, so routing and decoding are tested too.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::convert::Infallible;
//!
//! use cqrs_core::prelude::*;
//! use cqrs_core::projection::{EventContext, Projection};
//! use cqrs_core::projection::testing::ProjectionTest;
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! pub enum ShowEvent {
//!     Scheduled { capacity: u32 },
//!     SeatsReserved { seats: u32 },
//! }
//!
//! struct AvailableSeats;
//!
//! impl Projection for AvailableSeats {
//!     const NAME: &'static str = "available_seats";
//!     const AGGREGATES: &'static [&'static str] = &["show"];
//!     type Event = ShowEvent;
//!     type ReadModel = BTreeMap<String, u32>;
//!     type Error = Infallible;
//!
//!     fn apply(
//!         &self,
//!         seats: &mut Self::ReadModel,
//!         event: ShowEvent,
//!         context: &EventContext<'_>,
//!     ) -> Result<(), Infallible> {
//!         let show = context.aggregate_id().to_owned();
//!         match event {
//!             ShowEvent::Scheduled { capacity } => {
//!                 seats.insert(show, capacity);
//!             }
//!             ShowEvent::SeatsReserved { seats: taken } => {
//!                 *seats.entry(show).or_default() -= taken;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! AvailableSeats
//!     .given("show-1", [ShowEvent::Scheduled { capacity: 10 }])
//!     .given("show-2", [ShowEvent::Scheduled { capacity: 5 }])
//!     .given("show-1", [ShowEvent::SeatsReserved { seats: 4 }])
//!     .then_expect(BTreeMap::from([("1".to_owned(), 6), ("2".to_owned(), 5)]));
//! ```

use std::collections::HashMap;
use std::fmt::Debug;

use super::Projection;
use super::projector::apply_recorded;
use crate::event::{DomainEvent, EventId, Metadata, Position, RecordedEvent, StreamId, Version};
use crate::processor::{EventRef, Failure};
use crate::testing::fail;

/// Starts a given / then test on a projection. Implemented for every projection whose read
/// model starts from `Default`.
pub trait ProjectionTest: Projection + Sized
where
    Self::ReadModel: Default,
{
    /// The read model after `events`, recorded in `stream` (e.g. `"show-1"`).
    #[track_caller]
    fn given<E: DomainEvent>(
        self,
        stream: &str,
        events: impl IntoIterator<Item = E>,
    ) -> GivenProjection<Self> {
        GivenProjection {
            projection: self,
            model: Self::ReadModel::default(),
            versions: HashMap::new(),
            position: Position::START,
            failures: Vec::new(),
        }
        .given(stream, events)
    }
}

impl<P: Projection> ProjectionTest for P where P::ReadModel: Default {}

/// A projection's read model after some events, waiting for more events or expectations.
pub struct GivenProjection<P: Projection> {
    projection: P,
    model: P::ReadModel,
    versions: HashMap<StreamId, Version>,
    position: Position,
    failures: Vec<Failure>,
}

impl<P: Projection> GivenProjection<P> {
    /// Then `events`, recorded in `stream`, after the events so far.
    ///
    /// Panics when `stream` is not a valid stream id or an event does not encode: the test
    /// itself is wrong then.
    #[track_caller]
    pub fn given<E: DomainEvent>(
        mut self,
        stream: &str,
        events: impl IntoIterator<Item = E>,
    ) -> Self {
        let stream = match StreamId::new(stream) {
            Ok(stream) => stream,
            Err(error) => panic!("`{stream}` is not a stream id: {error}"),
        };
        for event in events {
            let payload = match event.encode() {
                Ok(payload) => payload,
                Err(error) => panic!("the given event does not encode: {error}"),
            };
            let version = self.versions.entry(stream.clone()).or_default();
            *version = version.next();
            self.position = Position(self.position.0 + 1);
            let recorded = RecordedEvent {
                stream: stream.clone(),
                version: *version,
                position: self.position,
                event_id: EventId::new(),
                event_type: event.event_type().into(),
                schema_version: event.schema_version(),
                payload,
                metadata: Metadata::default(),
            };
            self.given_recorded(recorded);
        }
        self
    }

    /// Then this stored event, as it is (e.g. one with a payload that does not decode). An
    /// event of a stream the projection does not read ([`Projection::AGGREGATES`]) is passed
    /// over, as the runner's log read passes it over.
    pub fn given_recorded(&mut self, recorded: RecordedEvent) -> &mut Self {
        if !recorded.stream.is_of_any(P::AGGREGATES) {
            return self;
        }
        if let Err(failure) = apply_recorded(&self.projection, &mut self.model, &recorded) {
            self.failures
                .push(Failure::of_event(EventRef::of(&recorded), &failure, 1));
        }
        self
    }

    /// The read model so far, for assertions of your own.
    pub fn read_model(&self) -> &P::ReadModel {
        &self.model
    }

    /// The events that failed to decode or apply so far, with their errors.
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// Asserts that every event applied and the read model equals `expected`; on failure,
    /// panics with a line diff.
    #[track_caller]
    pub fn then_expect(self, expected: P::ReadModel)
    where
        P::ReadModel: Debug + PartialEq,
    {
        if let Some(failure) = self.failures.first() {
            panic!(
                "{} event(s) failed, the first: {failure}",
                self.failures.len()
            );
        }
        if self.model != expected {
            fail("read models differ", &expected, &self.model);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::{EventContext, ProjectionEvent};
    use crate::store::StoreError;

    /// Any event of a stream it reads.
    struct Seen;

    impl ProjectionEvent for Seen {
        fn route(_: &RecordedEvent) -> Result<Option<Self>, StoreError> {
            Ok(Some(Seen))
        }
    }

    /// Counts the events of `show` streams.
    struct ShowEvents;

    impl Projection for ShowEvents {
        const NAME: &'static str = "show_events";
        const AGGREGATES: &'static [&'static str] = &["show"];
        type Event = Seen;
        type ReadModel = u32;
        type Error = std::convert::Infallible;

        fn apply(&self, count: &mut u32, _: Seen, _: &EventContext<'_>) -> Result<(), Self::Error> {
            *count += 1;
            Ok(())
        }
    }

    fn recorded(stream: &str, position: u64) -> RecordedEvent {
        RecordedEvent {
            stream: StreamId::new(stream).expect("a stream id"),
            version: Version(1),
            position: Position(position),
            event_id: EventId::new(),
            event_type: "Anything".into(),
            schema_version: 1,
            payload: "{}".into(),
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn events_of_streams_it_does_not_read_are_passed_over_as_the_runner_does() {
        let mut given = GivenProjection {
            projection: ShowEvents,
            model: 0,
            versions: HashMap::new(),
            position: Position::START,
            failures: Vec::new(),
        };
        given
            .given_recorded(recorded("show-1", 1))
            .given_recorded(recorded("vendor-1", 2))
            .given_recorded(recorded("show-2", 3));
        assert_eq!(given.failures(), &[]);
        assert_eq!(*given.read_model(), 2);
    }
}
