//! Seat reservation: a show has a capacity, customers reserve and cancel seats, and no request,
//! however concurrent, can reserve more seats than the show has.

use std::collections::HashMap;
use std::fmt;

use cqrs_core::prelude::*;
use cqrs_core::upcast::{UpcastError, Value};

/// Identifies one reservation (a customer's booking) within a show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BookingId(pub u64);

impl fmt::Display for BookingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "booking-{}", self.0)
    }
}

/// What happened to a show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum ShowEvent {
    /// The show was put on sale with this many seats.
    Scheduled {
        /// Seats on sale.
        capacity: u32,
    },
    /// A booking took seats.
    ///
    /// Version 1 was stored as `SeatsBooked { customer, seats }`, before a customer could hold
    /// more than one booking; [`booking_from_customer`] reads it as version 2.
    #[event(version = 2, alias = "SeatsBooked", upcast(from = 1, with = booking_from_customer))]
    SeatsReserved {
        /// The booking.
        booking: BookingId,
        /// Seats taken.
        seats: u32,
    },
    /// A booking gave its seats back.
    ReservationCancelled {
        /// The booking.
        booking: BookingId,
        /// Seats given back.
        seats: u32,
    },
}

/// Upcasts `SeatsReserved` (or `SeatsBooked`) version 1 to version 2: in version 1 each customer
/// had one booking, so the customer number becomes the booking number.
pub fn booking_from_customer(mut payload: Value) -> Result<Value, UpcastError> {
    let fields = payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("a version 1 reservation is a JSON object"))?;
    let customer = fields
        .remove("customer")
        .ok_or_else(|| UpcastError::new("a version 1 reservation has a `customer` field"))?;
    fields.insert("booking".to_owned(), customer);
    Ok(payload)
}

/// Why a show refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShowError {
    /// The show has not been scheduled yet.
    #[error("show is not scheduled")]
    NotScheduled,
    /// The show was scheduled already.
    #[error("show is already scheduled")]
    AlreadyScheduled,
    /// Fewer seats are left than requested.
    #[error("only {available} seats left, {requested} requested")]
    SoldOut {
        /// Seats requested.
        requested: u32,
        /// Seats still available.
        available: u32,
    },
    /// A reservation must take at least one seat.
    #[error("a reservation takes at least one seat")]
    NoSeats,
    /// No reservation with this booking id exists.
    #[error("no reservation for {booking}")]
    UnknownBooking {
        /// The booking asked for.
        booking: BookingId,
    },
}

/// A show: its capacity and who holds which seats.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "show", event = ShowEvent, error = ShowError)]
pub struct Show {
    scheduled: bool,
    capacity: u32,
    reserved: u32,
    bookings: HashMap<BookingId, u32>,
}

#[command_handler]
impl Show {
    /// Puts the show on sale with `capacity` seats.
    pub fn schedule(&self, capacity: u32) -> Result<ShowEvent, ShowError> {
        if self.scheduled {
            return Err(ShowError::AlreadyScheduled);
        }
        Ok(ShowEvent::Scheduled { capacity })
    }

    /// Reserves `seats` seats for `booking`. Reserving again for a booking that holds seats
    /// changes nothing.
    pub fn reserve_seats(
        &self,
        booking: BookingId,
        seats: u32,
    ) -> Result<Option<ShowEvent>, ShowError> {
        if !self.scheduled {
            return Err(ShowError::NotScheduled);
        }
        if seats == 0 {
            return Err(ShowError::NoSeats);
        }
        if self.bookings.contains_key(&booking) {
            return Ok(None);
        }
        let available = self.available();
        if seats > available {
            return Err(ShowError::SoldOut {
                requested: seats,
                available,
            });
        }
        Ok(Some(ShowEvent::SeatsReserved { booking, seats }))
    }

    /// Gives the seats of `booking` back.
    pub fn cancel_reservation(&self, booking: BookingId) -> Result<ShowEvent, ShowError> {
        match self.bookings.get(&booking) {
            Some(&seats) => Ok(ShowEvent::ReservationCancelled { booking, seats }),
            None => Err(ShowError::UnknownBooking { booking }),
        }
    }

    fn available(&self) -> u32 {
        self.capacity.saturating_sub(self.reserved)
    }
}

impl Show {
    fn apply(&mut self, event: ShowEvent) {
        match event {
            ShowEvent::Scheduled { capacity } => {
                self.scheduled = true;
                self.capacity = capacity;
            }
            ShowEvent::SeatsReserved { booking, seats } => {
                self.reserved = self.reserved.saturating_add(seats);
                self.bookings.insert(booking, seats);
            }
            ShowEvent::ReservationCancelled { booking, seats } => {
                self.reserved = self.reserved.saturating_sub(seats);
                self.bookings.remove(&booking);
            }
        }
    }

    /// Seats on sale.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Seats currently reserved.
    pub fn reserved(&self) -> u32 {
        self.reserved
    }

    /// Seats of each booking.
    pub fn bookings(&self) -> &HashMap<BookingId, u32> {
        &self.bookings
    }
}
