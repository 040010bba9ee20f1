//! Seat reservation: customers race for the last seats of a show, and none is ever oversold.
//!
//! Run with `cargo run --example seat_reservation`.

use std::collections::BTreeMap;

use cqrs_core::{ExecuteError, Repository};
use cqrs_examples::show::{BookingId, Show, ShowCommand, ShowError};
use cqrs_memstore::MemStore;

const CAPACITY: u32 = 20;
const CUSTOMERS: u64 = 12;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemStore::new();
    // No cache: every command loads the show from the store, so the customers really race and
    // the losers of a race retry on fresh state.
    let shows: Repository<Show, MemStore> = Repository::builder(store.clone()).cache(0).build();
    let show_id = "premiere";

    shows
        .execute(show_id, ShowCommand::Schedule { capacity: CAPACITY })
        .await?;
    println!("The premiere goes on sale with {CAPACITY} seats; {CUSTOMERS} customers rush in.\n");

    let mut customers = Vec::new();
    for customer in 1..=CUSTOMERS {
        let shows = shows.clone();
        customers.push(tokio::spawn(async move {
            let seats = 1 + (customer % 3) as u32;
            let command = ShowCommand::ReserveSeats {
                booking: BookingId(customer),
                seats,
            };
            (customer, seats, shows.execute(show_id, command).await)
        }));
    }

    let mut sold: BTreeMap<u64, u32> = BTreeMap::new();
    let mut retries = 0;
    for customer in customers {
        let (customer, seats, result) = customer.await?;
        match result {
            Ok(outcome) => {
                retries += outcome.attempts - 1;
                sold.insert(customer, seats);
                let note = match outcome.attempts {
                    1 => String::new(),
                    n => format!(
                        " (lost {} race(s) to other customers, decided again)",
                        n - 1
                    ),
                };
                println!(
                    "customer {customer:>2} reserved {seats} seat(s) at version {}{note}",
                    outcome.version
                );
            }
            Err(ExecuteError::Domain(ShowError::SoldOut {
                requested,
                available,
            })) => {
                println!(
                    "customer {customer:>2} was told SoldOut: wanted {requested}, {available} left"
                );
            }
            Err(other) => return Err(other.into()),
        }
    }

    let show = shows.load(show_id).await?;
    let reserved: u32 = sold.values().sum();
    println!(
        "\n{} customers got seats, {} were turned away; {retries} retries in all.",
        sold.len(),
        CUSTOMERS as usize - sold.len()
    );
    println!(
        "The show holds {} of {} seats at version {}.",
        show.state.reserved(),
        CAPACITY,
        show.version
    );

    assert!(show.state.reserved() <= CAPACITY, "oversold");
    assert_eq!(
        show.state.reserved(),
        reserved,
        "the show disagrees with the acknowledged reservations"
    );
    println!(
        "Invariant holds: never above capacity, and every acknowledged reservation is stored."
    );
    Ok(())
}
