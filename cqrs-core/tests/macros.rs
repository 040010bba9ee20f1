//! Runtime behavior of the code the macros generate: dispatch, names, versions, the payload
//! encoding and its errors.

use cqrs_core::prelude::*;
use cqrs_core::{DecodeError, EventTypeInfo};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ShowEvent {
    Scheduled {
        capacity: u32,
    },
    #[event(name = "SeatsReserved", version = 2)]
    SeatsReserved {
        booking: u64,
        seats: u32,
    },
    ReservationCancelled {
        booking: u64,
        seats: u32,
    },
    Touched,
    Priced(u64),
    Moved(String, u32),
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum ShowError {
    #[error("show is not scheduled")]
    NotScheduled,
    #[error("sold out")]
    SoldOut { requested: u32, available: u32 },
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "show", event = ShowEvent, error = ShowError)]
struct Show {
    capacity: u32,
    reserved: u32,
}

impl Show {
    fn apply(&mut self, event: ShowEvent) {
        match event {
            ShowEvent::Scheduled { capacity } => self.capacity = capacity,
            ShowEvent::SeatsReserved { seats, .. } => self.reserved += seats,
            ShowEvent::ReservationCancelled { seats, .. } => self.reserved -= seats,
            ShowEvent::Touched | ShowEvent::Priced(_) | ShowEvent::Moved(..) => {}
        }
    }
}

struct PriceList {
    cents_per_seat: u64,
}

#[command_handler]
impl Show {
    /// Puts the show on sale with `capacity` seats.
    pub(crate) fn schedule(&self, capacity: u32) -> Result<ShowEvent, ShowError> {
        Ok(ShowEvent::Scheduled { capacity })
    }

    /// Reserves seats, one event per seat.
    pub(crate) fn reserve_seats(
        &self,
        booking: u64,
        seats: u32,
    ) -> Result<Vec<ShowEvent>, ShowError> {
        if self.capacity == 0 {
            return Err(ShowError::NotScheduled);
        }
        let available = self.available();
        if seats > available {
            return Err(ShowError::SoldOut {
                requested: seats,
                available,
            });
        }
        Ok((0..seats)
            .map(|_| ShowEvent::SeatsReserved { booking, seats: 1 })
            .collect())
    }

    /// Cancels a booking; cancelling nothing is a no-op.
    pub(crate) fn cancel(&self, booking: u64) -> Result<Option<ShowEvent>, ShowError> {
        if self.reserved == 0 {
            return Ok(None);
        }
        Ok(Some(ShowEvent::ReservationCancelled { booking, seats: 1 }))
    }

    pub(crate) fn touch(&self) -> ShowEvent {
        ShowEvent::Touched
    }

    pub(crate) fn touch_twice(&self) -> Vec<ShowEvent> {
        vec![ShowEvent::Touched, ShowEvent::Touched]
    }

    pub(crate) fn maybe_touch(&self, really: bool) -> Option<ShowEvent> {
        really.then_some(ShowEvent::Touched)
    }

    pub(crate) async fn price_check(
        &self,
        #[services] prices: &PriceList,
        seats: u32,
    ) -> Result<ShowEvent, ShowError> {
        std::future::ready(()).await;
        Ok(ShowEvent::Priced(prices.cents_per_seat * u64::from(seats)))
    }

    fn available(&self) -> u32 {
        self.capacity - self.reserved
    }

    #[command(skip)]
    pub(crate) fn is_full(&self) -> bool {
        self.available() == 0
    }
}

const PRICES: PriceList = PriceList {
    cents_per_seat: 250,
};

fn show(capacity: u32, reserved: u32) -> Show {
    Show { capacity, reserved }
}

#[tokio::test]
async fn handle_dispatches_each_command_to_its_method() {
    let scheduled = show(10, 0);
    let result = scheduled
        .handle(ShowCommand::Schedule { capacity: 5 }, &PRICES)
        .await;
    assert_eq!(result, Ok(vec![ShowEvent::Scheduled { capacity: 5 }]));

    let result = scheduled
        .handle(
            ShowCommand::ReserveSeats {
                booking: 7,
                seats: 2,
            },
            &PRICES,
        )
        .await;
    let one_seat = ShowEvent::SeatsReserved {
        booking: 7,
        seats: 1,
    };
    assert_eq!(result, Ok(vec![one_seat.clone(), one_seat]));

    let result = show(2, 2)
        .handle(
            ShowCommand::ReserveSeats {
                booking: 7,
                seats: 1,
            },
            &PRICES,
        )
        .await;
    assert_eq!(
        result,
        Err(ShowError::SoldOut {
            requested: 1,
            available: 0
        })
    );

    let result = Show::default()
        .handle(
            ShowCommand::ReserveSeats {
                booking: 7,
                seats: 1,
            },
            &PRICES,
        )
        .await;
    assert_eq!(result, Err(ShowError::NotScheduled));

    let result = scheduled
        .handle(ShowCommand::Cancel { booking: 7 }, &PRICES)
        .await;
    assert_eq!(result, Ok(vec![]), "cancelling nothing records nothing");
    let result = show(10, 1)
        .handle(ShowCommand::Cancel { booking: 7 }, &PRICES)
        .await;
    assert_eq!(
        result,
        Ok(vec![ShowEvent::ReservationCancelled {
            booking: 7,
            seats: 1
        }])
    );

    let result = scheduled.handle(ShowCommand::Touch, &PRICES).await;
    assert_eq!(result, Ok(vec![ShowEvent::Touched]));
    let result = scheduled.handle(ShowCommand::TouchTwice, &PRICES).await;
    assert_eq!(result, Ok(vec![ShowEvent::Touched, ShowEvent::Touched]));
    let result = scheduled
        .handle(ShowCommand::MaybeTouch { really: false }, &PRICES)
        .await;
    assert_eq!(result, Ok(vec![]));
    let result = scheduled
        .handle(ShowCommand::MaybeTouch { really: true }, &PRICES)
        .await;
    assert_eq!(result, Ok(vec![ShowEvent::Touched]));

    let result = scheduled
        .handle(ShowCommand::PriceCheck { seats: 3 }, &PRICES)
        .await;
    assert_eq!(result, Ok(vec![ShowEvent::Priced(750)]));

    // Skipped and private methods stay callable as plain methods.
    assert!(show(1, 1).is_full());
    assert_eq!(scheduled.available(), 10);
}

#[test]
fn the_handle_future_is_send() {
    fn assert_send<T: Send>(_: T) {}
    let show = show(1, 0);
    assert_send(show.handle(ShowCommand::PriceCheck { seats: 1 }, &PRICES));
}

#[test]
fn commands_round_trip_through_serde() {
    let commands = vec![
        ShowCommand::Schedule { capacity: 5 },
        ShowCommand::ReserveSeats {
            booking: 1,
            seats: 2,
        },
        ShowCommand::Cancel { booking: 1 },
        ShowCommand::Touch,
        ShowCommand::PriceCheck { seats: 4 },
    ];
    let json = serde_json::to_string(&commands).expect("commands encode");
    let decoded: Vec<ShowCommand> = serde_json::from_str(&json).expect("commands decode");
    assert_eq!(decoded, commands);
    assert_eq!(
        serde_json::to_string(&ShowCommand::Schedule { capacity: 5 }).expect("encodes"),
        r#"{"Schedule":{"capacity":5}}"#
    );
    let cloned = ShowCommand::Touch.clone();
    assert_eq!(format!("{cloned:?}"), "Touch");
}

#[test]
fn aggregate_constants_come_from_the_attribute() {
    assert_eq!(<Show as Aggregate>::NAME, "show");
    assert_eq!(<Show as Aggregate>::SNAPSHOT_VERSION, 1);

    let mut state = Show::default();
    Aggregate::apply(&mut state, ShowEvent::Scheduled { capacity: 3 });
    Aggregate::apply(
        &mut state,
        ShowEvent::SeatsReserved {
            booking: 1,
            seats: 2,
        },
    );
    assert_eq!((state.capacity, state.reserved), (3, 2));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum TallyEvent {
    Added(u32),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct TallyError;

#[derive(Debug, Default, Aggregate)]
#[aggregate(
    name = "tally",
    event = TallyEvent,
    error = TallyError,
    snapshot_version = 3,
    apply = on_event
)]
struct Tally {
    total: u32,
}

impl Tally {
    fn on_event(&mut self, event: TallyEvent) {
        match event {
            TallyEvent::Added(amount) => self.total += amount,
        }
    }
}

#[test]
fn snapshot_version_and_apply_name_are_honored() {
    assert_eq!(<Tally as Aggregate>::NAME, "tally");
    assert_eq!(<Tally as Aggregate>::SNAPSHOT_VERSION, 3);
    let mut tally = Tally::default();
    Aggregate::apply(&mut tally, TallyEvent::Added(2));
    tally.apply(TallyEvent::Added(3));
    assert_eq!(tally.total, 5);
}

#[test]
fn event_types_list_names_and_versions_in_order() {
    let expected = [
        ("Scheduled", 1),
        ("SeatsReserved", 2),
        ("ReservationCancelled", 1),
        ("Touched", 1),
        ("Priced", 1),
        ("Moved", 1),
    ]
    .map(|(name, version)| EventTypeInfo {
        name,
        version,
        aliases: &[],
    });
    assert_eq!(ShowEvent::EVENT_TYPES, expected);

    let event = ShowEvent::SeatsReserved {
        booking: 1,
        seats: 2,
    };
    assert_eq!(event.event_type(), "SeatsReserved");
    assert_eq!(event.schema_version(), 2);
    assert_eq!(ShowEvent::Touched.event_type(), "Touched");
    assert_eq!(ShowEvent::Touched.schema_version(), 1);
}

fn round_trip(event: &ShowEvent) -> String {
    let payload = event.encode().expect("encodes");
    let decoded = ShowEvent::decode(
        event.event_type(),
        event.schema_version(),
        payload.as_bytes(),
    )
    .expect("decodes");
    assert_eq!(&decoded, event);
    String::from_utf8(payload.as_bytes().to_vec()).expect("JSON is UTF-8")
}

#[test]
fn payloads_hold_only_the_fields() {
    assert_eq!(
        round_trip(&ShowEvent::Scheduled { capacity: 5 }),
        r#"{"capacity":5}"#
    );
    assert_eq!(
        round_trip(&ShowEvent::SeatsReserved {
            booking: 7,
            seats: 2
        }),
        r#"{"booking":7,"seats":2}"#
    );
    assert_eq!(round_trip(&ShowEvent::Touched), "null");
    assert_eq!(round_trip(&ShowEvent::Priced(250)), "250");
    assert_eq!(
        round_trip(&ShowEvent::Moved("hall".into(), 2)),
        r#"["hall",2]"#
    );
}

#[test]
fn a_pinned_name_survives_a_renamed_variant() {
    // Stored under the pinned name, whatever the variant is called in Rust.
    #[derive(Debug, PartialEq, DomainEvent)]
    enum Renamed {
        #[event(name = "SeatsReserved", version = 2)]
        SeatsBooked { booking: u64, seats: u32 },
    }
    let old = ShowEvent::SeatsReserved {
        booking: 7,
        seats: 2,
    };
    let payload = old.encode().expect("encodes");
    let decoded = Renamed::decode(old.event_type(), old.schema_version(), payload.as_bytes())
        .expect("decodes");
    assert_eq!(
        decoded,
        Renamed::SeatsBooked {
            booking: 7,
            seats: 2
        }
    );
    assert_eq!(decoded.event_type(), "SeatsReserved");
}

#[test]
fn decode_errors_say_what_went_wrong() {
    let error = ShowEvent::decode("Vanished", 1, b"null").expect_err("unknown type");
    assert!(
        matches!(&error, DecodeError::UnknownEventType { event_type } if event_type == "Vanished"),
        "{error:?}"
    );

    let error = ShowEvent::decode("Scheduled", 1, br#"{"capacity":"many"}"#).expect_err("bad");
    assert!(matches!(error, DecodeError::InvalidPayload(_)), "{error:?}");
    let error = ShowEvent::decode("Scheduled", 1, b"not json").expect_err("bad");
    assert!(matches!(error, DecodeError::InvalidPayload(_)), "{error:?}");
    let error = ShowEvent::decode("Touched", 1, b"{}").expect_err("unit takes null");
    assert!(matches!(error, DecodeError::InvalidPayload(_)), "{error:?}");

    let error =
        ShowEvent::decode("SeatsReserved", 3, br#"{"booking":1,"seats":1}"#).expect_err("too new");
    assert!(
        matches!(
            error,
            DecodeError::UnsupportedSchemaVersion {
                found: 3,
                current: 2
            }
        ),
        "{error:?}"
    );

    // Older versions decode as they are until upcasting arrives.
    let decoded = ShowEvent::decode("SeatsReserved", 1, br#"{"booking":1,"seats":1}"#)
        .expect("older version decodes");
    assert_eq!(
        decoded,
        ShowEvent::SeatsReserved {
            booking: 1,
            seats: 1
        }
    );
}

#[test]
fn field_serde_attributes_apply_to_the_payload() {
    #[derive(Debug, PartialEq, DomainEvent)]
    enum Attributed {
        Renamed {
            #[serde(rename = "n")]
            number: u32,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            note: Option<String>,
        },
    }
    let event = Attributed::Renamed {
        number: 1,
        note: None,
    };
    let payload = event.encode().expect("encodes");
    assert_eq!(payload.as_bytes(), br#"{"n":1}"#);
    let decoded = Attributed::decode("Renamed", 1, payload.as_bytes()).expect("decodes");
    assert_eq!(decoded, event);
}

#[test]
fn encode_errors_name_the_event_type() {
    use std::collections::BTreeMap;

    #[derive(Debug, DomainEvent)]
    enum Unencodable {
        Keyed { map: BTreeMap<(u8, u8), u8> },
    }
    let event = Unencodable::Keyed {
        map: BTreeMap::from([((1, 2), 3)]),
    };
    let error = event.encode().expect_err("tuple keys are not JSON");
    assert_eq!(error.event_type, "Keyed");
}

#[test]
fn command_variants_carry_the_handlers_doc_comments() {
    // rustdoc renders them; here it is enough that the enum has the documented variants.
    let _: ShowCommand = ShowCommand::Schedule { capacity: 1 };
}

mod fork {
    use cqrs_core::prelude::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
    pub(crate) enum TallyEvent {
        Counted,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    pub(crate) struct Never;

    #[derive(Debug, Default, Clone, PartialEq, Aggregate)]
    #[aggregate(name = "cloned", event = TallyEvent, error = Never)]
    pub(crate) struct Cloned {
        count: u32,
    }

    impl Cloned {
        fn apply(&mut self, _: TallyEvent) {
            self.count += 1;
        }
    }

    #[derive(Debug, Default, Aggregate)]
    #[aggregate(name = "unique", event = TallyEvent, error = Never)]
    pub(crate) struct NotCloned {
        count: u32,
    }

    impl NotCloned {
        fn apply(&mut self, _: TallyEvent) {
            self.count += 1;
        }
    }

    #[test]
    fn an_aggregate_that_derives_clone_forks_and_one_that_does_not_says_so() {
        let mut cloned = Cloned::default();
        Aggregate::apply(&mut cloned, TallyEvent::Counted);
        assert_eq!(cloned.fork(), Some(Cloned { count: 1 }));
        let mut unique = NotCloned::default();
        Aggregate::apply(&mut unique, TallyEvent::Counted);
        assert_eq!(unique.count, 1);
        assert!(unique.fork().is_none());
    }
}
