//! The seat-reservation application behind `cargo run --example seat_reservation`, as a library
//! function so that the example binary and the tests run the same story.
//!
//! Two shows go on sale. Customers check out through the [`Checkout`] saga (reserve, charge,
//! confirm, or give the seats back when the card declines or the payment deadline passes), one
//! reserves at the box office and cancels, and then a crowd of walk-ins races for the last seats.
//! The [`AvailableSeats`] projection keeps a read model of the seats per show. [`run`] ends by
//! checking the invariants and returns an error when one does not hold.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cqrs_core::processor::{FailurePolicy, Health, HealthCheck, Processor as _, ProcessorHandle};
use cqrs_core::projection::{MemoryReadModel, Projector};
use cqrs_core::saga::{CommandBus, ManualClock, MemorySagaStore, SagaProcessor, SagaRunner};
use cqrs_core::{EventStore, ExecuteError, Repository, RetryPolicy};

use crate::health::describe_health;
use tokio::sync::Barrier;

use crate::available_seats::{AvailableSeats, SeatsByShow, ShowSeats};
use crate::booking::{Booking, BookingCommand, BookingStatus, Checkout, PAYMENT_TIMEOUT};
use crate::database::{self, Database};
use crate::earlier_runs::{self, EarlierRuns};
use crate::latency::RoundTrip;
use crate::payment::{Card, Payment};
use crate::replay::{self, Replay};
use crate::show::{BookingId, Show, ShowCommand, ShowError};
use crate::{Error, InvariantViolated};
use cqrs_memstore::MemStore;

/// Seats of the premiere, the show the walk-ins race for.
pub const PREMIERE_CAPACITY: u32 = 10;
/// Seats of the matinee, where a box-office reservation is made and cancelled.
pub const MATINEE_CAPACITY: u32 = 6;
/// The walk-ins who race for the last premiere seats, all at once.
pub const WALK_INS: [&str; 12] = [
    "Eve", "Finn", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Mo", "Nia", "Otto", "Pia",
];

const CENTS_PER_SEAT: u64 = 4_500;
/// How long to wait for the read model to catch up before calling it broken.
const READ_MODEL_WAIT: Duration = Duration::from_secs(10);

/// How one checkout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutOutcome {
    /// Who checked out.
    pub customer: &'static str,
    /// Seats asked for.
    pub seats: u32,
    /// How the card answered.
    pub card: Card,
    /// Where the booking stands after the saga.
    pub status: BookingStatus,
    /// Why it failed, when it did.
    pub reason: Option<String>,
}

/// How one walk-in fared in the race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaceOutcome {
    /// Got the seats, after `attempts - 1` conflicts with other walk-ins.
    Reserved {
        /// Seats reserved.
        seats: u32,
        /// Attempts the command took (1 when nobody got in the way).
        attempts: u32,
    },
    /// Arrived too late.
    SoldOut {
        /// Seats asked for.
        requested: u32,
        /// Seats left when the show said no.
        available: u32,
    },
}

/// What a run did, for the tests (the invariants were checked already).
#[derive(Debug, Clone)]
pub struct Report {
    /// The run's number: ids of this run end with it, so runs on one database never collide.
    pub run: u64,
    /// The premiere's show id.
    pub premiere: String,
    /// The matinee's show id.
    pub matinee: String,
    /// What the checkout saga did while catching up with earlier runs (nothing is sent twice).
    pub replayed: Replay,
    /// The checkouts, in order.
    pub checkouts: Vec<CheckoutOutcome>,
    /// The walk-ins and how each fared.
    pub race: Vec<(&'static str, RaceOutcome)>,
    /// This run's shows as the aggregates say.
    pub shows: SeatsByShow,
    /// This run's shows as the read model says.
    pub read_model: SeatsByShow,
    /// Shows in the whole store, earlier runs' included, that were checked at the end: none
    /// oversold, each as the read model says.
    pub shows_in_store: usize,
    /// The processors' health at the end of the run.
    pub health: Health,
}

impl Report {
    /// Conflicts the walk-ins lost and decided again on fresh state.
    pub fn retries(&self) -> u32 {
        self.race
            .iter()
            .map(|(_, outcome)| match outcome {
                RaceOutcome::Reserved { attempts, .. } => attempts - 1,
                RaceOutcome::SoldOut { .. } => 0,
            })
            .sum()
    }

    /// Seats the walk-ins got.
    pub fn seats_won(&self) -> u32 {
        self.race
            .iter()
            .map(|(_, outcome)| match outcome {
                RaceOutcome::Reserved { seats, .. } => *seats,
                RaceOutcome::SoldOut { .. } => 0,
            })
            .sum()
    }
}

/// The box office: the repositories, the checkout saga and the read model, over one store.
struct BoxOffice<S: EventStore + Clone> {
    shows: Repository<Show, S>,
    bookings: Repository<Booking, S>,
    checkout: SagaRunner<Checkout, S, MemorySagaStore>,
    clock: ManualClock,
    run: u64,
}

impl<S: EventStore + Clone> BoxOffice<S> {
    fn open(store: &S, run: u64) -> Self {
        // No cache: every command reads the show from the store, so concurrent customers really
        // race, and the losers retry on fresh state. Generous attempts: a crowd on one show is
        // exactly the case retries exist for.
        let shows = Repository::builder(store.clone())
            .cache(0)
            .retry(RetryPolicy {
                max_attempts: 50,
                ..RetryPolicy::default()
            })
            .build();
        let bookings = Repository::new(store.clone());
        let payments = Repository::<Payment, S>::new(store.clone());
        let bus = CommandBus::new()
            .register(shows.clone())
            .register(bookings.clone())
            .register(payments);
        // A story cannot wait 15 minutes for a payment deadline, so the saga reads time from a
        // clock the story moves; a real application keeps the default system clock.
        let clock = ManualClock::at(SystemTime::now());
        // The saga's state lives in memory, so each run replays the log from the start. Over a
        // database that holds earlier runs this is still correct: every command the saga sends
        // carries an id derived from the triggering event, so the commands of earlier runs are
        // recognised by their repositories and not applied again (see `Report::replayed`). A
        // PostgreSQL saga store would make the replay unnecessary.
        let checkout = SagaProcessor::new(store.clone(), bus, MemorySagaStore::new())
            .clock(clock.clone())
            .runner()
            // A failure in a story is a bug: stop and say so rather than retry.
            .failure_policy(FailurePolicy::Stop);
        BoxOffice {
            shows,
            bookings,
            checkout,
            clock,
            run,
        }
    }

    /// The customer asks for seats and the saga takes it from there, as far as it can go now.
    async fn check_out(
        &self,
        customer: &'static str,
        number: u64,
        show: &str,
        seats: u32,
        card: Card,
    ) -> Result<CheckoutOutcome, Error> {
        let booking = self.booking(number);
        let request = BookingCommand::Request {
            booking,
            show: show.to_owned(),
            seats,
            amount: CENTS_PER_SEAT * u64::from(seats),
            card,
        };
        self.bookings.execute(booking.0, request).await?;
        self.checkout.catch_up().await?;
        self.outcome(customer, number, seats, card).await
    }

    async fn outcome(
        &self,
        customer: &'static str,
        number: u64,
        seats: u32,
        card: Card,
    ) -> Result<CheckoutOutcome, Error> {
        let booking = self.bookings.load(self.booking(number).0).await?.state;
        Ok(CheckoutOutcome {
            customer,
            seats,
            card,
            status: booking.status(),
            reason: booking.reason().map(str::to_owned),
        })
    }

    /// Booking numbers are unique per run (`run * 1000 + number`).
    fn booking(&self, number: u64) -> BookingId {
        BookingId(self.run * 1000 + number)
    }
}

/// The SQLite file the example keeps its events in when no flag names another, in the working
/// directory.
pub const DEFAULT_FILE: &str = "seat_reservation.db";

/// The aggregates a run's first line counts, by name and plural.
pub const AGGREGATES: [(&str, &str); 2] = [("show", "shows"), ("booking", "bookings")];

/// About what a read or an append takes against a database on the local network.
const ROUND_TRIP: Duration = Duration::from_millis(1);

/// Runs the story on `database` as `cargo run --example seat_reservation` does: its first line
/// says where the events go and what earlier runs left there ([`earlier_runs::introduce`]),
/// then [`run`] continues from there. Returns what the store held before, and the report.
pub async fn run_on<W: Write>(
    database: &Database,
    out: &mut W,
) -> Result<(EarlierRuns, Report), Error> {
    match database {
        Database::Sqlite(path) => {
            let store = database::open_sqlite(path).await?;
            let found = earlier_runs::introduce(&store, database, &AGGREGATES, out).await?;
            let report = run(store.clone(), out).await?;
            // The file alone holds the run now: SQLite's `-wal` and `-shm` files are gone.
            store.close().await?;
            Ok((found, report))
        }
        Database::Memory => {
            // Without a network between them, in-memory customers hardly ever overlap: give each
            // read and append a database's round trip, so the race looks as it does in production.
            let store = RoundTrip::new(MemStore::new(), ROUND_TRIP);
            let found = earlier_runs::introduce(&store, database, &AGGREGATES, out).await?;
            Ok((found, run(store, out).await?))
        }
        Database::Postgres(url) => {
            let store = database::connect(url).await?;
            let found = earlier_runs::introduce(&store, database, &AGGREGATES, out).await?;
            Ok((found, run(store, out).await?))
        }
    }
}

/// Runs the seat-reservation story on `store`, writing it to `out`, and checks the invariants:
/// no show holds more reservations than seats, every acknowledged reservation is stored, and the
/// read model equals the aggregates.
///
/// `store` may be empty or hold earlier runs: ids are made unique per run, and the saga's replay
/// of earlier runs sends nothing twice.
pub async fn run<S, W>(store: S, out: &mut W) -> Result<Report, Error>
where
    S: EventStore + Clone,
    W: Write,
{
    // The log's length makes a run number that no earlier run on this store used.
    let run = store.head().await?.0 + 1;
    let office = BoxOffice::open(&store, run);
    let seats = MemoryReadModel::<SeatsByShow>::new();
    let read_model = Projector::new(AvailableSeats, store.clone(), seats.clone())
        .runner()
        .spawn();
    // What a readiness probe asks: is every processor live or catching up?
    let health = HealthCheck::new().with(&read_model);

    let replayed = replay::catch_up(&office.checkout).await?;
    if replayed.events > 0 {
        writeln!(out, "{replayed}\n")?;
    }

    let premiere = format!("premiere-{run}");
    let matinee = format!("matinee-{run}");
    for (show, capacity) in [(&premiere, PREMIERE_CAPACITY), (&matinee, MATINEE_CAPACITY)] {
        office
            .shows
            .execute(show, ShowCommand::Schedule { capacity })
            .await?;
    }
    writeln!(
        out,
        "Run {run}: the premiere ({PREMIERE_CAPACITY} seats) and the matinee \
         ({MATINEE_CAPACITY} seats) go on sale."
    )?;

    writeln!(
        out,
        "\nCheckout reserves the seats, charges the card and confirms, or gives the seats back:"
    )?;
    let mut checkouts = Vec::new();
    let ada = office.check_out("Ada", 1, &premiere, 2, Card::Good).await?;
    writeln!(
        out,
        "  Ada books 2 premiere seats and pays: {}.",
        verdict(&ada)
    )?;
    checkouts.push(ada);

    let ben = office
        .check_out("Ben", 2, &premiere, 2, Card::Declining)
        .await?;
    writeln!(
        out,
        "  Ben books 2 premiere seats, his card declines: {}.",
        verdict(&ben)
    )?;
    checkouts.push(ben);

    let cleo = office
        .check_out("Cleo", 3, &premiere, 1, Card::Silent)
        .await?;
    writeln!(
        out,
        "  Cleo books 1 premiere seat, her bank does not answer: {}.",
        verdict(&cleo)
    )?;
    office.clock.advance(PAYMENT_TIMEOUT);
    office.checkout.catch_up().await?;
    let cleo = office.outcome("Cleo", 3, 1, Card::Silent).await?;
    writeln!(
        out,
        "    {} minutes later: {}.",
        PAYMENT_TIMEOUT.as_secs() / 60,
        verdict(&cleo)
    )?;
    checkouts.push(cleo);

    // A reservation at the box office needs no payment: straight to the show.
    let dan = office.booking(4);
    office
        .shows
        .execute(
            &matinee,
            ShowCommand::ReserveSeats {
                booking: dan,
                seats: 3,
            },
        )
        .await?;
    office
        .shows
        .execute(&matinee, ShowCommand::CancelReservation { booking: dan })
        .await?;
    writeln!(
        out,
        "  Dan reserves 3 matinee seats at the box office, then cancels: they are back on sale."
    )?;

    read_model
        .wait_for(store.head().await?, READ_MODEL_WAIT)
        .await?;
    let available = |show: &str| seats.read(|model| model.get(show).map(ShowSeats::available));
    let left = available(&premiere).unwrap_or(0);
    writeln!(
        out,
        "Available seats (read model): premiere {left}, matinee {}.",
        available(&matinee).unwrap_or(0)
    )?;

    writeln!(
        out,
        "\nThe doors open: {} walk-ins race for the last {left} premiere seats.",
        WALK_INS.len()
    )?;
    let race = race_for_seats(&office, &premiere).await?;
    for (customer, outcome) in &race {
        let line = match outcome {
            RaceOutcome::Reserved { seats, attempts: 1 } => format!("got {seats}"),
            RaceOutcome::Reserved { seats, attempts: 2 } => format!("got {seats} after 1 retry"),
            RaceOutcome::Reserved { seats, attempts } => {
                format!("got {seats} after {} retries", attempts - 1)
            }
            RaceOutcome::SoldOut {
                requested,
                available,
            } => format!("SoldOut: wanted {requested}, {available} left"),
        };
        writeln!(out, "  {customer:<5} {line}")?;
    }

    let report = Report {
        run,
        replayed,
        checkouts,
        race,
        shows: BTreeMap::new(),
        read_model: BTreeMap::new(),
        shows_in_store: 0,
        premiere,
        matinee,
        health: Health::default(),
    };
    let winners = report
        .race
        .iter()
        .filter(|(_, outcome)| matches!(outcome, RaceOutcome::Reserved { .. }))
        .count();
    writeln!(
        out,
        "{winners} walk-ins got seats, {} were told SoldOut; {} retries in all.",
        WALK_INS.len() - winners,
        report.retries()
    )?;

    let mut report = check_invariants(&office, &store, &seats, &read_model, report).await?;
    let premiere = report
        .shows
        .get(&report.premiere)
        .copied()
        .unwrap_or_default();
    let matinee = report
        .shows
        .get(&report.matinee)
        .copied()
        .unwrap_or_default();
    writeln!(
        out,
        "\nChecked: the premiere holds {} of {} seats, the matinee {} of {}; no show is \
         oversold, every acknowledged reservation is stored, the read model equals the shows \
         (all {} in the store).",
        premiere.reserved,
        premiere.capacity,
        matinee.reserved,
        matinee.capacity,
        report.shows_in_store
    )?;
    let health = health.check();
    writeln!(out, "{}", describe_health(&health))?;
    report.health = health;
    read_model.shutdown().await;
    Ok(report)
}

/// Every walk-in sends one reservation at the same moment.
async fn race_for_seats<S: EventStore + Clone>(
    office: &BoxOffice<S>,
    show: &str,
) -> Result<Vec<(&'static str, RaceOutcome)>, Error> {
    let doors = Arc::new(Barrier::new(WALK_INS.len()));
    let mut walk_ins = Vec::new();
    for (number, customer) in (100..).zip(WALK_INS) {
        let shows = office.shows.clone();
        let doors = Arc::clone(&doors);
        let show = show.to_owned();
        let booking = office.booking(number);
        let seats = 1 + (number % 3) as u32;
        walk_ins.push((
            customer,
            tokio::spawn(async move {
                doors.wait().await;
                let reserve = ShowCommand::ReserveSeats { booking, seats };
                (seats, shows.execute(show, reserve).await)
            }),
        ));
    }
    let mut race = Vec::new();
    for (customer, walk_in) in walk_ins {
        let (seats, result) = walk_in.await?;
        let outcome = match result {
            Ok(outcome) => RaceOutcome::Reserved {
                seats,
                attempts: outcome.attempts,
            },
            Err(ExecuteError::Domain(ShowError::SoldOut {
                requested,
                available,
            })) => RaceOutcome::SoldOut {
                requested,
                available,
            },
            Err(other) => return Err(other.into()),
        };
        race.push((customer, outcome));
    }
    Ok(race)
}

/// Fills in the report's shows and read model, and fails unless the invariants hold.
async fn check_invariants<S: EventStore + Clone>(
    office: &BoxOffice<S>,
    store: &S,
    seats: &MemoryReadModel<SeatsByShow>,
    read_model: &ProcessorHandle,
    mut report: Report,
) -> Result<Report, Error> {
    read_model
        .wait_for(store.head().await?, READ_MODEL_WAIT)
        .await?;
    for show in [&report.premiere, &report.matinee] {
        let state = office.shows.load(show).await?.state;
        let aggregate = ShowSeats {
            capacity: state.capacity(),
            reserved: state.reserved(),
        };
        if aggregate.reserved > aggregate.capacity {
            return Err(InvariantViolated(format!(
                "{show} holds {} reservations for {} seats",
                aggregate.reserved, aggregate.capacity
            ))
            .into());
        }
        let projected = seats.read(|model| model.get(show.as_str()).copied());
        if projected != Some(aggregate) {
            return Err(InvariantViolated(format!(
                "the read model says {projected:?} for {show}, the show says {aggregate:?}"
            ))
            .into());
        }
        report.shows.insert(show.clone(), aggregate);
        report.read_model.insert(show.clone(), aggregate);
    }
    // Every acknowledged reservation is stored, and only those: the confirmed checkouts and the
    // walk-ins who got seats (declined and timed-out checkouts gave theirs back).
    let confirmed: u32 = report
        .checkouts
        .iter()
        .filter(|checkout| checkout.status == BookingStatus::Confirmed)
        .map(|checkout| checkout.seats)
        .sum();
    let acknowledged = confirmed + report.seats_won();
    let reserved = report.shows.get(&report.premiere).map(|show| show.reserved);
    if reserved != Some(acknowledged) {
        return Err(InvariantViolated(format!(
            "the premiere holds {reserved:?} seats, but {acknowledged} were acknowledged"
        ))
        .into());
    }
    let matinee = report.shows.get(&report.matinee).map(|show| show.reserved);
    if matinee != Some(0) {
        return Err(InvariantViolated(format!(
            "the matinee holds {matinee:?} seats after its only reservation was cancelled"
        ))
        .into());
    }
    // Over a store that holds earlier runs, their shows too: none oversold, and the read model
    // (rebuilt from the whole log by this run) equals each.
    let everything = seats.read(Clone::clone);
    for (show, projected) in &everything {
        let state = office.shows.load(show).await?.state;
        let aggregate = ShowSeats {
            capacity: state.capacity(),
            reserved: state.reserved(),
        };
        if aggregate.reserved > aggregate.capacity || *projected != aggregate {
            return Err(InvariantViolated(format!(
                "{show} of an earlier run: the show says {aggregate:?}, the read model \
                 {projected:?}"
            ))
            .into());
        }
    }
    report.shows_in_store = everything.len();
    Ok(report)
}

fn verdict(checkout: &CheckoutOutcome) -> String {
    match (checkout.status, &checkout.reason) {
        (BookingStatus::Confirmed, _) => "confirmed".to_owned(),
        (BookingStatus::Failed, Some(reason)) => format!("seats released ({reason})"),
        (BookingStatus::Failed, None) => "seats released".to_owned(),
        (BookingStatus::Pending, _) => "still waiting for the payment".to_owned(),
        (BookingStatus::None, _) => "never requested".to_owned(),
    }
}
