//! The available-seats read model: capacity and reserved seats per show, kept up to date from
//! the global log by a [`Projector`](cqrs_core::projection::Projector).
//!
//! Screens that list shows read this instead of loading every show aggregate.

use std::collections::BTreeMap;
use std::convert::Infallible;

use cqrs_core::projection::{EventContext, Projection};

use crate::show::ShowEvent;

/// The seats of one show, as the read model knows them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShowSeats {
    /// Seats on sale.
    pub capacity: u32,
    /// Seats reserved.
    pub reserved: u32,
}

impl ShowSeats {
    /// Seats still on sale.
    pub fn available(&self) -> u32 {
        self.capacity.saturating_sub(self.reserved)
    }
}

/// Seats per show, keyed by show id.
pub type SeatsByShow = BTreeMap<String, ShowSeats>;

/// The projection that keeps [`SeatsByShow`].
#[derive(Debug, Default, Clone, Copy)]
pub struct AvailableSeats;

impl Projection for AvailableSeats {
    const NAME: &'static str = "available_seats";
    const AGGREGATES: &'static [&'static str] = &["show"];
    type Event = ShowEvent;
    type ReadModel = SeatsByShow;
    type Error = Infallible;

    fn apply(
        &self,
        shows: &mut SeatsByShow,
        event: ShowEvent,
        context: &EventContext<'_>,
    ) -> Result<(), Infallible> {
        let show = shows.entry(context.aggregate_id().to_owned()).or_default();
        // The same arithmetic as the aggregate, so the two can be compared seat for seat.
        match event {
            ShowEvent::Scheduled { capacity } => show.capacity = capacity,
            ShowEvent::SeatsReserved { seats, .. } => {
                show.reserved = show.reserved.saturating_add(seats);
            }
            ShowEvent::ReservationCancelled { seats, .. } => {
                show.reserved = show.reserved.saturating_sub(seats);
            }
        }
        Ok(())
    }
}
