//! Given / when / then for the checkout saga, and the command bus on its own.

use std::time::Duration;

use cqrs_core::saga::{CommandBus, DispatchError, SagaCommand, SagaTest};
use cqrs_core::{CommandMetadata, Repository};
use cqrs_examples::booking::{
    BookingCommand, BookingEvent, Checkout, PAYMENT_DEADLINE, PAYMENT_TIMEOUT, Stage,
};
use cqrs_examples::payment::{Card, Payment, PaymentCommand, PaymentEvent, PaymentId};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowError, ShowEvent};
use cqrs_memstore::MemStore;

const BOOKING: BookingId = BookingId(7);

fn requested(card: Card) -> BookingEvent {
    BookingEvent::Requested {
        booking: BOOKING,
        show: "hamlet".to_owned(),
        seats: 2,
        amount: 9_000,
        card,
    }
}

fn reserved() -> ShowEvent {
    ShowEvent::SeatsReserved {
        booking: BOOKING,
        seats: 2,
    }
}

fn release_and_fail(reason: &str) -> [SagaCommand; 2] {
    [
        SagaCommand::to::<Show>(
            "hamlet",
            ShowCommand::CancelReservation { booking: BOOKING },
        ),
        SagaCommand::to::<cqrs_examples::booking::Booking>(
            7,
            BookingCommand::Fail {
                booking: BOOKING,
                reason: reason.to_owned(),
            },
        ),
    ]
}

#[test]
fn a_request_reserves_seats_and_starts_the_payment_clock() {
    Checkout::given::<BookingEvent>([])
        .when(requested(Card::Good))
        .then_expect_commands([SagaCommand::to::<Show>(
            "hamlet",
            ShowCommand::ReserveSeats {
                booking: BOOKING,
                seats: 2,
            },
        )])
        .then_expect_deadline(PAYMENT_DEADLINE, PAYMENT_TIMEOUT);
}

#[test]
fn reserved_seats_are_charged_on_the_card() {
    let then = Checkout::given([requested(Card::Declining)]).when(reserved());
    assert_eq!(then.state().stage(), Stage::Paying);
    then.then_expect_commands([SagaCommand::to::<Payment>(
        PaymentId(7),
        PaymentCommand::Charge {
            booking: BOOKING,
            amount: 9_000,
            card: Card::Declining,
        },
    )])
    .then_expect_deadline(PAYMENT_DEADLINE, PAYMENT_TIMEOUT);
}

#[test]
fn a_declined_payment_releases_the_seats() {
    Checkout::given([requested(Card::Declining)])
        .and([reserved()])
        .when(PaymentEvent::Declined {
            booking: BOOKING,
            reason: "stolen card".to_owned(),
        })
        .then_expect_commands(release_and_fail("payment declined: stolen card"))
        .then_expect_no_deadline(PAYMENT_DEADLINE);
}

#[test]
fn a_payment_confirms_the_booking_and_stops_the_clock() {
    Checkout::given([requested(Card::Good)])
        .and([reserved()])
        .when(PaymentEvent::Charged {
            booking: BOOKING,
            amount: 9_000,
        })
        .then_expect_commands([SagaCommand::to::<cqrs_examples::booking::Booking>(
            7,
            BookingCommand::Confirm { booking: BOOKING },
        )])
        .then_expect_no_deadline(PAYMENT_DEADLINE);
}

#[test]
fn a_sold_out_show_fails_the_booking() {
    Checkout::given([requested(Card::Good)])
        .when_rejected::<Show>(
            "hamlet",
            ShowCommand::ReserveSeats {
                booking: BOOKING,
                seats: 2,
            },
            ShowError::SoldOut {
                requested: 2,
                available: 1,
            },
        )
        .then_expect_commands([SagaCommand::to::<cqrs_examples::booking::Booking>(
            7,
            BookingCommand::Fail {
                booking: BOOKING,
                reason: "sold out: 1 seats left".to_owned(),
            },
        )])
        .then_expect_no_deadline(PAYMENT_DEADLINE);
}

#[test]
fn an_unexpected_refusal_is_a_failure_not_a_silent_drop() {
    Checkout::given([requested(Card::Good)])
        .when_rejected::<Show>(
            "hamlet",
            ShowCommand::Schedule { capacity: 1 },
            ShowError::AlreadyScheduled,
        )
        .then_expect_failure("unexpected refusal");
}

#[test]
fn the_deadline_releases_seats_that_were_not_paid_for() {
    Checkout::given([requested(Card::Silent)])
        .and([reserved()])
        .and([PaymentEvent::Pending { booking: BOOKING }])
        .when_deadline(PAYMENT_DEADLINE)
        .then_expect_commands(release_and_fail("payment timed out"))
        .then_expect_no_deadline(PAYMENT_DEADLINE);
}

#[test]
fn a_deadline_after_the_payment_does_nothing() {
    Checkout::given([requested(Card::Good)])
        .and([reserved()])
        .and([PaymentEvent::Charged {
            booking: BOOKING,
            amount: 9_000,
        }])
        .when_deadline(PAYMENT_DEADLINE)
        .then_expect_no_commands();
}

#[test]
#[should_panic(expected = "commands differ")]
fn a_wrong_expectation_fails_with_a_diff() {
    Checkout::given::<BookingEvent>([])
        .when(requested(Card::Good))
        .then_expect_no_commands();
}

#[test]
#[should_panic(expected = "deadline `payment` differs")]
fn a_wrong_deadline_fails() {
    Checkout::given::<BookingEvent>([])
        .when(requested(Card::Good))
        .then_expect_deadline(PAYMENT_DEADLINE, Duration::from_secs(60));
}

#[tokio::test]
async fn the_bus_routes_by_aggregate_type_and_refuses_unknown_ones() {
    let store = MemStore::new();
    let bus = CommandBus::new().register(Repository::<Show, _>::new(store.clone()));
    assert!(bus.handles::<Show>() && !bus.handles::<Payment>());

    let outcome = bus
        .execute::<Show>(
            "hamlet",
            ShowCommand::Schedule { capacity: 3 },
            CommandMetadata::default(),
        )
        .await
        .expect("scheduled");
    assert_eq!(outcome.events, [ShowEvent::Scheduled { capacity: 3 }]);

    let refused = bus
        .execute::<Show>(
            "hamlet",
            ShowCommand::ReserveSeats {
                booking: BOOKING,
                seats: 4,
            },
            CommandMetadata::default(),
        )
        .await;
    assert_eq!(
        refused.as_ref().err().and_then(DispatchError::domain),
        Some(&ShowError::SoldOut {
            requested: 4,
            available: 3
        })
    );

    let unknown = bus
        .execute::<Payment>(
            7,
            PaymentCommand::Refund { booking: BOOKING },
            CommandMetadata::default(),
        )
        .await;
    assert!(
        matches!(
            unknown,
            Err(DispatchError::NotRegistered {
                aggregate: "payment"
            })
        ),
        "{unknown:?}"
    );
}
