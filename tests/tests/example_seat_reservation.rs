//! The seat-reservation example's story, run as the example runs it (not by spawning cargo): on
//! the in-memory store, twice on one store, on a slow store where the walk-ins really collide,
//! twice on one SQLite file (the example's default), and on PostgreSQL. `run` checks the invariants itself and fails when one breaks; these tests also
//! check what the story claims happened.

use std::time::Duration;

use cqrs_core::EventStore;
use cqrs_core::prelude::*;
use cqrs_core::projection::testing::ProjectionTest;
use cqrs_core::saga::SagaCommand;
use cqrs_examples::available_seats::{AvailableSeats, SeatsByShow, ShowSeats};
use cqrs_examples::booking::{
    Booking, BookingCommand, BookingEvent, BookingStatus, Checkout, PAYMENT_DEADLINE,
};
use cqrs_examples::database::{self, Database};
use cqrs_examples::earlier_runs::EarlierRuns;
use cqrs_examples::latency::RoundTrip;
use cqrs_examples::payment::{Card, PaymentEvent};
use cqrs_examples::seat_reservation::{self, PREMIERE_CAPACITY, RaceOutcome, Report, WALK_INS};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowEvent};
use cqrs_memstore::MemStore;
use cqrs_postgres::testing::TestCluster;
use cqrs_tests::scratch_database::ScratchDatabase;

async fn run_on<S: EventStore + Clone>(store: S) -> (Report, String) {
    let mut story = Vec::new();
    let report = seat_reservation::run(store, &mut story)
        .await
        .unwrap_or_else(|error| panic!("the story failed: {error}"));
    (report, String::from_utf8_lossy(&story).into_owned())
}

/// Runs the story as `cargo run --example seat_reservation` does on `database`.
async fn run_as_the_example(database: &Database) -> (EarlierRuns, Report, String) {
    let mut story = Vec::new();
    let (found, report) = seat_reservation::run_on(database, &mut story)
        .await
        .unwrap_or_else(|error| panic!("the story failed: {error}"));
    (found, report, String::from_utf8_lossy(&story).into_owned())
}

fn first_line(story: &str) -> &str {
    story.lines().next().unwrap_or_default()
}

/// What every run must show, whatever the store and whoever won the race.
fn assert_story(report: &Report) {
    let outcomes: Vec<_> = report
        .checkouts
        .iter()
        .map(|checkout| (checkout.customer, checkout.status))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("Ada", BookingStatus::Confirmed),
            ("Ben", BookingStatus::Failed),
            ("Cleo", BookingStatus::Failed),
        ]
    );
    let reasons: Vec<_> = report
        .checkouts
        .iter()
        .map(|checkout| checkout.reason.as_deref())
        .collect();
    assert_eq!(
        reasons,
        [
            None,
            Some("payment declined: insufficient funds"),
            Some("payment timed out")
        ]
    );

    // Ada's 2 seats are kept, Ben's and Cleo's given back: 8 left for 12 walk-ins who want 24,
    // and the show sells out to within one seat (only a one-seat request can fill the last).
    assert_eq!(report.race.len(), WALK_INS.len());
    let premiere = report.shows[&report.premiere];
    assert!(premiere.reserved <= PREMIERE_CAPACITY);
    assert_eq!(premiere.reserved, 2 + report.seats_won());
    assert!(premiere.available() <= 1, "seats left unsold: {premiere:?}");
    for (customer, outcome) in &report.race {
        if let RaceOutcome::SoldOut {
            requested,
            available,
        } = outcome
        {
            assert!(requested > available, "{customer} was refused {outcome:?}");
        }
    }
    assert_eq!(report.shows[&report.matinee].reserved, 0);
    assert_eq!(report.read_model, report.shows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_story_holds_its_invariants_on_the_in_memory_store() {
    let (report, story) = run_on(MemStore::new()).await;
    assert_story(&report);
    assert_eq!(report.run, 1);
    assert_eq!(report.replayed.events, 0);
    assert!(story.contains("15 minutes later: seats released (payment timed out)"));
    assert!(story.contains("Checked:"));
    assert!(
        story.contains("Health: every processor is healthy (available_seats: Live"),
        "{story}"
    );
    assert!(report.health.healthy, "{:?}", report.health);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn walk_ins_who_collide_retry_and_still_never_oversell() {
    // A round trip per read and append makes the walk-ins overlap, as over a network.
    let store = RoundTrip::new(MemStore::new(), Duration::from_millis(1));
    let (report, _) = run_on(store).await;
    assert_story(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_run_on_the_same_store_replays_the_first_and_sends_nothing_twice() {
    let store = MemStore::new();
    let (first, _) = run_on(store.clone()).await;
    let events_after_first = store.head().await.expect("head");

    let (second, story) = run_on(store.clone()).await;
    assert_story(&second);
    assert_ne!(first.premiere, second.premiere, "each run has its own ids");
    // It went through the whole log the first run left.
    assert_eq!(second.replayed.checkpoint, events_after_first);
    assert!(second.replayed.events > 0, "{:?}", second.replayed);
    assert!(second.replayed.deduplicated > 0, "{:?}", second.replayed);
    assert_eq!(second.replayed.commands, 0, "the replay wrote something");
    assert!(story.contains("were already applied and were not sent again"));

    // The first run's shows are exactly as the first run left them.
    let shows = Repository::<Show, _>::new(store.clone());
    for (show, seats) in &first.shows {
        let state = shows.load(show).await.expect("show").state;
        assert_eq!(
            (state.capacity(), state.reserved()),
            (seats.capacity, seats.reserved)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_run_on_a_sqlite_file_continues_the_first() {
    let file = ScratchDatabase::new("example-seat-reservation");
    let database = Database::Sqlite(file.path().to_owned());
    let place = format!("On SQLite ({})", file.path().display());

    let (found, first, story) = run_as_the_example(&database).await;
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(first_line(&story), format!("{place}: a new database."));
    assert_story(&first);
    assert_eq!(first.shows_in_store, 2);
    let wal = format!("{}-wal", file.path().display());
    assert!(
        !std::path::Path::new(&wal).exists(),
        "the run closed the store: the file alone holds what it wrote"
    );

    // What the first run left, read from the file by a store of its own, as a new process would.
    let store = database::open_sqlite(file.path()).await.expect("reopen");
    let left = store.head().await.expect("head");
    drop(store);

    let (found, second, story) = run_as_the_example(&database).await;
    // The first run made 2 shows and 3 bookings (Ada's, Ben's and Cleo's checkouts).
    let expected = EarlierRuns {
        aggregates: vec![("shows", 2), ("bookings", 3)],
        events: left.0,
    };
    assert_eq!(found, expected);
    assert_eq!(
        first_line(&story),
        format!(
            "{place}: found 2 shows, 3 bookings, {} events from earlier runs.",
            left.0
        )
    );
    assert_story(&second);
    assert!(second.run > first.run, "each run has its own ids");
    assert_ne!(first.premiere, second.premiere);
    assert_eq!(second.replayed.checkpoint, left);
    assert!(second.replayed.deduplicated > 0, "{:?}", second.replayed);
    assert_eq!(second.replayed.commands, 0, "the replay wrote something");
    // The end checks covered the first run's shows too.
    assert_eq!(second.shows_in_store, 4);

    // The first run's shows are exactly as the first run left them.
    let store = database::open_sqlite(file.path()).await.expect("reopen");
    let shows = Repository::<Show, _>::new(store);
    for (show, seats) in &first.shows {
        let state = shows.load(show).await.expect("show").state;
        assert_eq!(
            (state.capacity(), state.reserved()),
            (seats.capacity, seats.reserved)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_memory_the_first_line_says_nothing_is_kept() {
    let (found, report, story) = run_as_the_example(&Database::Memory).await;
    assert!(found.is_empty());
    assert!(
        first_line(&story).starts_with("In memory: nothing is kept"),
        "{story}"
    );
    assert_story(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_story_runs_on_postgresql_from_an_empty_and_from_an_existing_database() {
    let cluster = TestCluster::shared().unwrap_or_else(|error| panic!("{error}"));
    let url = cluster.create_database().await.expect("database");

    let store = cqrs_examples::database::connect(&url).await.expect("empty");
    let (first, _) = run_on(store).await;
    assert_story(&first);

    // A new process on the same database: connecting migrates nothing new, the run replays.
    let store = cqrs_examples::database::connect(&url)
        .await
        .expect("existing");
    let (second, _) = run_on(store).await;
    assert_story(&second);
    assert!(second.run > first.run);
    assert!(second.replayed.deduplicated > 0, "{:?}", second.replayed);
    assert_eq!(second.replayed.commands, 0, "the replay wrote something");
}

#[test]
fn the_checkout_confirms_a_paid_booking() {
    let booking = BookingId(7);
    Checkout::given([
        requested(booking, Card::Good).into(),
        cqrs_examples::booking::CheckoutInput::Show(ShowEvent::SeatsReserved { booking, seats: 2 }),
    ])
    .when(PaymentEvent::Charged {
        booking,
        amount: 9_000,
    })
    .then_expect_commands([SagaCommand::to::<Booking>(
        7,
        BookingCommand::Confirm { booking },
    )])
    .then_expect_no_deadline(PAYMENT_DEADLINE);
}

#[test]
fn the_checkout_releases_the_seats_when_the_card_declines_or_the_deadline_passes() {
    let booking = BookingId(7);
    let paying = || {
        Checkout::given([
            requested(booking, Card::Declining).into(),
            cqrs_examples::booking::CheckoutInput::Show(ShowEvent::SeatsReserved {
                booking,
                seats: 2,
            }),
        ])
    };
    let release = |reason: &str| {
        [
            SagaCommand::to::<Show>("premiere", ShowCommand::CancelReservation { booking }),
            SagaCommand::to::<Booking>(
                7,
                BookingCommand::Fail {
                    booking,
                    reason: reason.to_owned(),
                },
            ),
        ]
    };
    paying()
        .when(PaymentEvent::Declined {
            booking,
            reason: "insufficient funds".to_owned(),
        })
        .then_expect_commands(release("payment declined: insufficient funds"));
    paying()
        .when_deadline(PAYMENT_DEADLINE)
        .then_expect_commands(release("payment timed out"));
}

#[test]
fn the_read_model_counts_reservations_and_cancellations() {
    AvailableSeats
        .given("show-premiere", [ShowEvent::Scheduled { capacity: 10 }])
        .given("show-matinee", [ShowEvent::Scheduled { capacity: 6 }])
        .given(
            "show-matinee",
            [
                ShowEvent::SeatsReserved {
                    booking: BookingId(4),
                    seats: 3,
                },
                ShowEvent::ReservationCancelled {
                    booking: BookingId(4),
                    seats: 3,
                },
            ],
        )
        .given(
            "show-premiere",
            [ShowEvent::SeatsReserved {
                booking: BookingId(1),
                seats: 2,
            }],
        )
        .then_expect(SeatsByShow::from([
            (
                "matinee".to_owned(),
                ShowSeats {
                    capacity: 6,
                    reserved: 0,
                },
            ),
            (
                "premiere".to_owned(),
                ShowSeats {
                    capacity: 10,
                    reserved: 2,
                },
            ),
        ]));
}

fn requested(booking: BookingId, card: Card) -> BookingEvent {
    BookingEvent::Requested {
        booking,
        show: "premiere".to_owned(),
        seats: 2,
        amount: 9_000,
        card,
    }
}
