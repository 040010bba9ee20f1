//! Booking seats with payment: the customer's booking, and the checkout saga that reserves the
//! seats on the show, charges the card, and confirms the booking, or releases the seats when the
//! show is sold out, the card declines, or the payment does not arrive in time.
//!
//! ```text
//! Booking: Requested ──> Show: ReserveSeats ──> SeatsReserved ──> Payment: Charge
//!                             │ SoldOut                            ├─ Charged  ──> Booking: Confirm
//!                             └──> Booking: Fail                   ├─ Declined ──> Show: CancelReservation, Booking: Fail
//!                                                                  └─ (15 minutes, nothing) ──> the same
//! ```

use std::time::Duration;

use cqrs_core::prelude::*;
use cqrs_core::saga::{HandlerError, Rejection};

use crate::payment::{Card, Payment, PaymentCommand, PaymentEvent, PaymentId};
use crate::show::{BookingId, Show, ShowCommand, ShowError, ShowEvent};

/// What happened to a customer's booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum BookingEvent {
    /// The customer asked for seats and gave a card.
    Requested {
        /// The booking.
        booking: BookingId,
        /// The show's id.
        show: String,
        /// Seats asked for.
        seats: u32,
        /// Cents to charge.
        amount: u64,
        /// The card to charge.
        card: Card,
    },
    /// The seats are reserved and paid for.
    Confirmed {
        /// The booking.
        booking: BookingId,
    },
    /// The booking failed; its seats, if any were reserved, are released.
    Failed {
        /// The booking.
        booking: BookingId,
        /// Why.
        reason: String,
    },
}

/// Why a booking refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    /// The booking was requested already.
    #[error("the booking was already requested")]
    AlreadyRequested,
    /// The booking was never requested.
    #[error("the booking was never requested")]
    NotRequested,
    /// The booking is already confirmed or failed.
    #[error("the booking is already decided")]
    AlreadyDecided,
}

/// Where a booking stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BookingStatus {
    /// Not requested.
    #[default]
    None,
    /// Requested, waiting for seats and payment.
    Pending,
    /// Paid and confirmed.
    Confirmed,
    /// Failed.
    Failed,
}

/// A customer's booking.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "booking", event = BookingEvent, error = BookingError)]
pub struct Booking {
    status: BookingStatus,
    reason: Option<String>,
}

#[command_handler]
impl Booking {
    /// Asks for `seats` seats of `show` for `amount` cents, paid with `card`.
    pub fn request(
        &self,
        booking: BookingId,
        show: String,
        seats: u32,
        amount: u64,
        card: Card,
    ) -> Result<BookingEvent, BookingError> {
        if self.status != BookingStatus::None {
            return Err(BookingError::AlreadyRequested);
        }
        Ok(BookingEvent::Requested {
            booking,
            show,
            seats,
            amount,
            card,
        })
    }

    /// Confirms the booking: seats reserved, payment received.
    pub fn confirm(&self, booking: BookingId) -> Result<BookingEvent, BookingError> {
        self.check_pending()?;
        Ok(BookingEvent::Confirmed { booking })
    }

    /// Fails the booking for `reason`.
    pub fn fail(&self, booking: BookingId, reason: String) -> Result<BookingEvent, BookingError> {
        self.check_pending()?;
        Ok(BookingEvent::Failed { booking, reason })
    }

    #[command(skip)]
    /// Where the booking stands.
    pub fn status(&self) -> BookingStatus {
        self.status
    }

    #[command(skip)]
    /// Why it failed, when it did.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

impl Booking {
    fn check_pending(&self) -> Result<(), BookingError> {
        match self.status {
            BookingStatus::None => Err(BookingError::NotRequested),
            BookingStatus::Pending => Ok(()),
            BookingStatus::Confirmed | BookingStatus::Failed => Err(BookingError::AlreadyDecided),
        }
    }

    fn apply(&mut self, event: BookingEvent) {
        match event {
            BookingEvent::Requested { .. } => self.status = BookingStatus::Pending,
            BookingEvent::Confirmed { .. } => self.status = BookingStatus::Confirmed,
            BookingEvent::Failed { reason, .. } => {
                self.status = BookingStatus::Failed;
                self.reason = Some(reason);
            }
        }
    }
}

/// How long the checkout waits for the payment once the booking is requested.
pub const PAYMENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The name of the checkout's payment deadline.
pub const PAYMENT_DEADLINE: &str = "payment";

/// Where a checkout stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Not started.
    #[default]
    New,
    /// Waiting for the show to reserve the seats.
    Reserving,
    /// Seats reserved, waiting for the payment.
    Paying,
    /// Paid, waiting for the booking to confirm.
    Confirming,
    /// Failed: seats released (if any were reserved), booking failing.
    Failing,
}

/// The checkout process of one booking (the saga instance is keyed by the booking id).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkout {
    booking: Option<BookingId>,
    show: String,
    seats: u32,
    amount: u64,
    card: Option<Card>,
    stage: Stage,
}

#[saga(name = "checkout")]
impl Checkout {
    /// Each event goes to the checkout of its booking; a request starts one, a decision ends it.
    fn route(input: &CheckoutInput) -> Route {
        match input {
            CheckoutInput::Booking(BookingEvent::Requested { booking, .. }) => {
                Route::start(booking.0)
            }
            CheckoutInput::Booking(
                BookingEvent::Confirmed { booking } | BookingEvent::Failed { booking, .. },
            ) => Route::stop(booking.0),
            CheckoutInput::Show(
                ShowEvent::SeatsReserved { booking, .. }
                | ShowEvent::ReservationCancelled { booking, .. },
            ) => Route::resume(booking.0),
            CheckoutInput::Show(ShowEvent::Scheduled { .. }) => Route::Ignore,
            CheckoutInput::Payment(
                PaymentEvent::Charged { booking, .. }
                | PaymentEvent::Declined { booking, .. }
                | PaymentEvent::Pending { booking }
                | PaymentEvent::Refunded { booking, .. },
            ) => Route::resume(booking.0),
        }
    }

    #[on(Booking)]
    fn on_booking(&mut self, event: BookingEvent, saga: &mut SagaContext) {
        if let BookingEvent::Requested {
            booking,
            show,
            seats,
            amount,
            card,
        } = event
        {
            saga.send::<Show>(&show, ShowCommand::ReserveSeats { booking, seats });
            saga.schedule(PAYMENT_DEADLINE, PAYMENT_TIMEOUT);
            *self = Checkout {
                booking: Some(booking),
                show,
                seats,
                amount,
                card: Some(card),
                stage: Stage::Reserving,
            };
        }
    }

    #[on(Show)]
    fn on_show(&mut self, event: ShowEvent, saga: &mut SagaContext) {
        let (ShowEvent::SeatsReserved { booking, .. }, Stage::Reserving, Some(card)) =
            (event, self.stage, self.card)
        else {
            return;
        };
        self.stage = Stage::Paying;
        let amount = self.amount;
        saga.send::<Payment>(
            PaymentId::from(booking),
            PaymentCommand::Charge {
                booking,
                amount,
                card,
            },
        );
    }

    #[on(Payment)]
    fn on_payment(&mut self, event: PaymentEvent, saga: &mut SagaContext) {
        if self.stage != Stage::Paying {
            return;
        }
        match event {
            PaymentEvent::Charged { booking, .. } => {
                saga.cancel(PAYMENT_DEADLINE);
                self.stage = Stage::Confirming;
                saga.send::<Booking>(booking.0, BookingCommand::Confirm { booking });
            }
            PaymentEvent::Declined { reason, .. } => {
                self.release(saga, format!("payment declined: {reason}"));
            }
            PaymentEvent::Pending { .. } | PaymentEvent::Refunded { .. } => {}
        }
    }

    /// The payment did not arrive in time: give the seats back.
    fn on_deadline(&mut self, name: &str, saga: &mut SagaContext) -> Result<(), HandlerError> {
        if name == PAYMENT_DEADLINE && matches!(self.stage, Stage::Reserving | Stage::Paying) {
            self.release(saga, "payment timed out".to_owned());
        }
        Ok(())
    }

    /// A sold-out show fails the booking; releasing seats that were never reserved is fine.
    fn on_rejected(
        &mut self,
        rejection: Rejection,
        saga: &mut SagaContext,
    ) -> Result<(), HandlerError> {
        match rejection.of::<Show>() {
            Some((_, ShowCommand::ReserveSeats { .. }, ShowError::SoldOut { available, .. })) => {
                saga.cancel(PAYMENT_DEADLINE);
                self.stage = Stage::Failing;
                self.fail_booking(saga, format!("sold out: {available} seats left"));
                Ok(())
            }
            Some((_, ShowCommand::CancelReservation { .. }, ShowError::UnknownBooking { .. })) => {
                Ok(())
            }
            _ => Err(format!("unexpected refusal: {rejection:?}").into()),
        }
    }
}

impl Checkout {
    /// Releases the seats and fails the booking.
    fn release(&mut self, saga: &mut SagaContext, reason: String) {
        saga.cancel(PAYMENT_DEADLINE);
        self.stage = Stage::Failing;
        if let Some(booking) = self.booking {
            saga.send::<Show>(&self.show, ShowCommand::CancelReservation { booking });
        }
        self.fail_booking(saga, reason);
    }

    fn fail_booking(&self, saga: &mut SagaContext, reason: String) {
        if let Some(booking) = self.booking {
            saga.send::<Booking>(booking.0, BookingCommand::Fail { booking, reason });
        }
    }

    /// Where the checkout stands.
    pub fn stage(&self) -> Stage {
        self.stage
    }
}
