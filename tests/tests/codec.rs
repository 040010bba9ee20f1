//! The MessagePack codec against JSON on events of every shape: each variant kind, serde's field
//! attributes, a type with a human-readable form (`Uuid`), and the errors of a bad payload.

use std::collections::BTreeMap;

use cqrs_core::codec::{self, Codec, MESSAGE_PACK_MARKER};
use cqrs_core::prelude::*;
use cqrs_core::{DecodeError, EncodeError};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Address {
    street: String,
    city: String,
}

/// The same enum in both codecs, so that each payload can be compared with its twin.
macro_rules! account_events {
    ($name:ident $(, #[$codec:meta])?) => {
        /// An account's events, every variant kind and field attribute.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
        $(#[$codec])?
        enum $name {
            /// A struct variant with nested, flattened, optional and renamed fields.
            Opened {
                id: Uuid,
                #[serde(flatten)]
                address: Address,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                referrer: Option<String>,
                #[serde(rename = "tags")]
                labels: BTreeMap<String, String>,
                balance: i64,
                rate: f64,
                note: String,
            },
            /// A map keyed by integers (MessagePack keeps them integers, JSON makes them text).
            Counted { by_day: BTreeMap<u32, i64> },
            /// A newtype variant.
            Deposited(u64),
            /// A tuple variant.
            Moved(String, String),
            /// A unit variant.
            Closed,
        }
    };
}

account_events!(JsonAccountEvent);
account_events!(BinaryAccountEvent, #[domain_event(codec = msgpack)]);

fn pairs() -> Vec<(JsonAccountEvent, BinaryAccountEvent)> {
    let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let address = || Address {
        street: "Rue de l'Été 7".to_owned(),
        city: "Zoë 🎭".to_owned(),
    };
    let labels = || BTreeMap::from([("tier".to_owned(), "gold".to_owned())]);
    vec![
        (
            JsonAccountEvent::Opened {
                id,
                address: address(),
                referrer: None,
                labels: labels(),
                balance: -42,
                rate: 0.125,
                note: String::new(),
            },
            BinaryAccountEvent::Opened {
                id,
                address: address(),
                referrer: None,
                labels: labels(),
                balance: -42,
                rate: 0.125,
                note: String::new(),
            },
        ),
        (
            JsonAccountEvent::Opened {
                id,
                address: address(),
                referrer: Some("a friend".to_owned()),
                labels: BTreeMap::new(),
                balance: i64::MAX,
                rate: -1e300,
                note: "\u{0}\n\"".to_owned(),
            },
            BinaryAccountEvent::Opened {
                id,
                address: address(),
                referrer: Some("a friend".to_owned()),
                labels: BTreeMap::new(),
                balance: i64::MAX,
                rate: -1e300,
                note: "\u{0}\n\"".to_owned(),
            },
        ),
        (
            JsonAccountEvent::Counted {
                by_day: BTreeMap::from([(1, -3), (365, 70_000)]),
            },
            BinaryAccountEvent::Counted {
                by_day: BTreeMap::from([(1, -3), (365, 70_000)]),
            },
        ),
        (
            JsonAccountEvent::Deposited(u64::MAX),
            BinaryAccountEvent::Deposited(u64::MAX),
        ),
        (
            JsonAccountEvent::Moved("A".to_owned(), "B".to_owned()),
            BinaryAccountEvent::Moved("A".to_owned(), "B".to_owned()),
        ),
        (JsonAccountEvent::Closed, BinaryAccountEvent::Closed),
    ]
}

#[test]
fn every_shape_round_trips_in_both_codecs_and_reads_as_the_same_json() {
    for (json, binary) in pairs() {
        let json_payload = json.encode().expect("encodes as JSON");
        let binary_payload = binary.encode().expect("encodes as MessagePack");
        assert_eq!(Codec::of(json_payload.as_bytes()), Codec::Json);
        assert_eq!(Codec::of(binary_payload.as_bytes()), Codec::MessagePack);
        assert_eq!(binary_payload.as_bytes()[0], MESSAGE_PACK_MARKER);

        // Each enum decodes its own payloads and its twin's.
        let (name, version) = (binary.event_type(), binary.schema_version());
        for payload in [&json_payload, &binary_payload] {
            assert_eq!(
                BinaryAccountEvent::decode(name, version, payload.as_bytes()).expect("decodes"),
                binary
            );
            assert_eq!(
                JsonAccountEvent::decode(name, version, payload.as_bytes()).expect("decodes"),
                json
            );
        }
        // What upcasters and the admin tools see is the same whatever the codec: the `Uuid` a
        // string in both, the flattened fields inline, the skipped field absent.
        assert_eq!(
            codec::to_json(binary_payload.as_bytes()).expect("reads as JSON"),
            codec::to_json(json_payload.as_bytes()).expect("reads as JSON"),
            "{json:?}"
        );
    }
}

#[test]
fn a_bad_message_pack_payload_is_a_typed_error_naming_the_codec() {
    let (_, binary) = pairs().swap_remove(0);
    let payload = binary.encode().expect("encodes");
    let bytes = payload.as_bytes();
    let truncated = &bytes[..bytes.len() / 2];
    let mut wrong_type = bytes.to_vec();
    // The map's first key, `id`, is a fixstr; make the whole map a positive integer instead.
    wrong_type.truncate(2);
    wrong_type[1] = 0x07;
    for bad in [truncated, &wrong_type[..], &[MESSAGE_PACK_MARKER][..]] {
        let error = BinaryAccountEvent::decode("Opened", 1, bad).expect_err("refused");
        assert!(
            matches!(
                error,
                DecodeError::InvalidBinaryPayload {
                    codec: Codec::MessagePack,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("msgpack payload does not fit"),
            "{error}"
        );
    }
    // A payload cut short is no JSON value either; a whole integer is one, just not this event.
    assert!(codec::to_json(truncated).is_err());
    assert!(codec::to_json(&[MESSAGE_PACK_MARKER]).is_err());
    assert_eq!(codec::to_json(&wrong_type).expect("an integer"), 7);
}

/// A field whose `Serialize` fails fails the encode with a typed error in either codec.
#[test]
fn an_event_that_cannot_be_serialized_is_a_typed_error_in_either_codec() {
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    struct Refuses;

    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(
                "this field refuses to be written",
            ))
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
    #[domain_event(codec = msgpack)]
    enum Refusing {
        Happened { field: Refuses },
    }

    let error: EncodeError = Refusing::Happened { field: Refuses }
        .encode()
        .expect_err("refused");
    assert_eq!(error.event_type, "Happened");
    assert!(
        error
            .to_string()
            .contains("this field refuses to be written"),
        "{error}"
    );
}

/// A day-keyed tally as an older release wrote it, in each codec: version 1 kept the seconds of
/// each day.
macro_rules! old_tally_events {
    ($name:ident $(, #[$codec:meta])?) => {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
        $(#[$codec])?
        enum $name {
            Tallied { seconds: BTreeMap<u32, u64> },
        }
    };
}

old_tally_events!(OldJsonTally);
old_tally_events!(OldBinaryTally, #[domain_event(codec = msgpack)]);

/// The tally now: version 2 keeps the minutes of each day. One upcaster for both codecs, which
/// finds the integer keys as the JSON codec's strings whatever the codec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum Tally {
    #[event(version = 2, upcast(from = 1, with = minutes_from_seconds))]
    Tallied { minutes: BTreeMap<u32, u64> },
}

fn minutes_from_seconds(
    mut value: cqrs_core::upcast::Value,
) -> Result<cqrs_core::upcast::Value, cqrs_core::upcast::UpcastError> {
    let seconds = value
        .get_mut("seconds")
        .and_then(|seconds| seconds.as_object_mut())
        .map(std::mem::take)
        .ok_or_else(|| cqrs_core::upcast::UpcastError::new("no `seconds` map"))?;
    let mut minutes = serde_json::Map::new();
    for (day, seconds) in seconds {
        // The key is the day as text in either codec, and stays the key.
        day.parse::<u32>()
            .map_err(|_| cqrs_core::upcast::UpcastError::new(format!("day `{day}`")))?;
        let seconds = seconds
            .as_u64()
            .ok_or_else(|| cqrs_core::upcast::UpcastError::new("seconds are not a count"))?;
        minutes.insert(day, (seconds / 60).into());
    }
    Ok(serde_json::json!({ "minutes": minutes }))
}

#[test]
fn an_upcaster_sees_integer_keys_as_text_in_either_codec() {
    let seconds = BTreeMap::from([(1, 120), (365, 6_000)]);
    let old = [
        OldJsonTally::Tallied {
            seconds: seconds.clone(),
        }
        .encode()
        .expect("encodes"),
        OldBinaryTally::Tallied { seconds }
            .encode()
            .expect("encodes"),
    ];
    assert_eq!(Codec::of(old[1].as_bytes()), Codec::MessagePack);
    for payload in &old {
        assert_eq!(
            Tally::decode("Tallied", 1, payload.as_bytes()).expect("upcasts"),
            Tally::Tallied {
                minutes: BTreeMap::from([(1, 2), (365, 100)])
            }
        );
    }
}
