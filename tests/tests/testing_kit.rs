//! Given / when / then on the seat-reservation aggregate, and what a failed expectation prints.

use std::panic::{AssertUnwindSafe, catch_unwind};

use cqrs_core::testing::AggregateTest;
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowError, ShowEvent};

fn scheduled(capacity: u32) -> ShowEvent {
    ShowEvent::Scheduled { capacity }
}

fn reserved(booking: u64, seats: u32) -> ShowEvent {
    ShowEvent::SeatsReserved {
        booking: BookingId(booking),
        seats,
    }
}

fn panic_message(test: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(test)).expect_err("the expectation should fail");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| {
            payload
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
        })
        .unwrap_or_default()
}

#[test]
fn reserving_records_the_reservation() {
    Show::given([scheduled(10)])
        .when(ShowCommand::ReserveSeats {
            booking: BookingId(1),
            seats: 4,
        })
        .then_expect([reserved(1, 4)]);
}

#[test]
fn reserving_more_than_is_left_is_sold_out() {
    Show::given([scheduled(10), reserved(1, 8)])
        .when(ShowCommand::ReserveSeats {
            booking: BookingId(2),
            seats: 3,
        })
        .then_expect_error(ShowError::SoldOut {
            requested: 3,
            available: 2,
        });
}

#[test]
fn cancelling_gives_the_seats_back() {
    Show::given([scheduled(10), reserved(1, 8)])
        .when(ShowCommand::CancelReservation {
            booking: BookingId(1),
        })
        .then_expect([ShowEvent::ReservationCancelled {
            booking: BookingId(1),
            seats: 8,
        }]);
    Show::given([
        scheduled(10),
        reserved(1, 8),
        ShowEvent::ReservationCancelled {
            booking: BookingId(1),
            seats: 8,
        },
    ])
    .when(ShowCommand::ReserveSeats {
        booking: BookingId(2),
        seats: 10,
    })
    .then_expect([reserved(2, 10)]);
}

#[test]
fn reserving_again_for_the_same_booking_is_a_no_op() {
    Show::given([scheduled(10), reserved(1, 2)])
        .when(ShowCommand::ReserveSeats {
            booking: BookingId(1),
            seats: 2,
        })
        .then_expect_no_events();
}

#[test]
fn an_unscheduled_show_refuses_reservations() {
    Show::given([])
        .when(ShowCommand::ReserveSeats {
            booking: BookingId(1),
            seats: 1,
        })
        .then_expect_error(ShowError::NotScheduled);
    Show::given([scheduled(1)])
        .when(ShowCommand::Schedule { capacity: 5 })
        .then_expect_error(ShowError::AlreadyScheduled);
}

#[test]
fn the_state_of_the_given_events_is_visible() {
    let given = Show::given([scheduled(10), reserved(1, 3), reserved(2, 4)]);
    assert_eq!(
        (given.state().capacity(), given.state().reserved()),
        (10, 7)
    );
}

#[test]
fn wrong_events_fail_with_a_diff() {
    let message = panic_message(|| {
        Show::given([scheduled(10)])
            .when(ShowCommand::ReserveSeats {
                booking: BookingId(1),
                seats: 4,
            })
            .then_expect([reserved(1, 5)]);
    });
    assert!(message.starts_with("events differ"), "{message}");
    assert!(
        message.contains("- ") && message.contains("seats: 5"),
        "{message}"
    );
    assert!(
        message.contains("+ ") && message.contains("seats: 4"),
        "{message}"
    );
}

#[test]
fn an_unexpected_error_fails_with_the_error() {
    let message = panic_message(|| {
        Show::given([])
            .when(ShowCommand::ReserveSeats {
                booking: BookingId(1),
                seats: 4,
            })
            .then_expect([reserved(1, 4)]);
    });
    assert!(message.contains("the command was refused"), "{message}");
    assert!(message.contains("NotScheduled"), "{message}");
}

#[test]
fn an_expected_error_that_does_not_come_fails() {
    let message = panic_message(|| {
        Show::given([scheduled(10)])
            .when(ShowCommand::ReserveSeats {
                booking: BookingId(1),
                seats: 4,
            })
            .then_expect_error(ShowError::NotScheduled);
    });
    assert!(message.contains("expected a domain error"), "{message}");
}

#[tokio::test]
async fn when_async_works_inside_a_runtime() {
    Show::given([scheduled(2)])
        .when_async(ShowCommand::ReserveSeats {
            booking: BookingId(1),
            seats: 2,
        })
        .await
        .then_expect([reserved(1, 2)]);
}
