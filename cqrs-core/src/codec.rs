//! How an event's payload is encoded: JSON (the default) or MessagePack.
//!
//! The codec is chosen per event enum, in the derive:
//!
//! ```
//! # #[cfg(feature = "msgpack")] {
//! use cqrs_core::prelude::*;
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! #[domain_event(codec = msgpack)]
//! pub enum MeterEvent {
//!     Read { kwh: u64 },
//! }
//!
//! let payload = MeterEvent::Read { kwh: 7 }.encode()?;
//! assert_eq!(cqrs_core::codec::Codec::of(payload.as_bytes()), cqrs_core::codec::Codec::MessagePack);
//! // Whatever the codec, the payload reads as JSON: what upcasters see and admin tools show.
//! assert_eq!(
//!     cqrs_core::codec::to_json(payload.as_bytes())?,
//!     serde_json::json!({ "kwh": 7 })
//! );
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every stored event records its codec in its payload's first byte, so one store holds events of
//! both, an enum that moves from JSON to MessagePack keeps reading the JSON events it stored
//! before, and every reader decodes either, whatever the enum's codec today:
//!
//! - **JSON** payloads are UTF-8 JSON text, as they always were (no marker: events stored before
//!   codecs existed are JSON payloads as they are).
//! - **MessagePack** payloads are the byte [`MESSAGE_PACK_MARKER`] (`0xC1`) followed by the
//!   event's fields as a MessagePack map keyed by field name. `0xC1` is the one byte MessagePack
//!   never uses and no UTF-8 text contains, so it tells the two apart without a doubt.
//!
//! MessagePack, not postcard, because it describes itself: a stored MessagePack payload reads as a
//! [`serde_json::Value`] without its Rust type, so an upcaster transforms an old MessagePack event
//! exactly as it transforms an old JSON one (the same function serves both), and the admin tools
//! show any payload as JSON. postcard cannot do either (it refuses `deserialize_any`); it decodes
//! about six times faster (BENCHMARKS.md), which is worth less than upcasting that works.
//! Fields are written by name, and in serde's human-readable mode, so a type that serializes
//! differently for humans (a `Uuid` as a string, say) is the same value in both codecs.
//!
//! Writing MessagePack takes the `msgpack` feature of `cqrs-core`; so does reading it (a build
//! without the feature refuses such a payload with [`DecodeError::CodecNotEnabled`]).
#![cfg_attr(
    not(feature = "msgpack"),
    doc = r#"
Without the feature, an enum that asks for MessagePack does not build (the error says to enable
it):

```compile_fail
use cqrs_core::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
#[domain_event(codec = msgpack)]
pub enum MeterEvent {
    Read { kwh: u64 },
}
```
"#
)]

use std::fmt;

use crate::event::DecodeError;

/// The first byte of a MessagePack payload: never used by MessagePack, never in UTF-8 text.
pub const MESSAGE_PACK_MARKER: u8 = 0xC1;

/// The codec a payload is encoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// UTF-8 JSON text: the default, and every payload stored before codecs existed.
    #[default]
    Json,
    /// [`MESSAGE_PACK_MARKER`], then a MessagePack map of the event's fields.
    MessagePack,
}

impl Codec {
    /// The codec `payload` is encoded with, read off its first byte.
    pub fn of(payload: &[u8]) -> Codec {
        match payload.first() {
            Some(&MESSAGE_PACK_MARKER) => Codec::MessagePack,
            _ => Codec::Json,
        }
    }

    /// Its name as the derive attribute and the tools spell it: `json`, `msgpack`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::MessagePack => "msgpack",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The payload as a JSON value, whatever its codec: what an upcaster transforms and what the
/// admin tools show.
pub fn to_json(payload: &[u8]) -> Result<serde_json::Value, DecodeError> {
    decode(payload)
}

/// Decodes `payload`, in the codec its first byte names, into `T`.
pub(crate) fn decode<'de, T: serde::Deserialize<'de>>(
    payload: &'de [u8],
) -> Result<T, DecodeError> {
    match payload.split_first() {
        Some((&MESSAGE_PACK_MARKER, body)) => message_pack::decode(body),
        _ => serde_json::from_slice(payload).map_err(DecodeError::InvalidPayload),
    }
}

#[cfg(feature = "msgpack")]
pub(crate) mod message_pack {
    //! MessagePack payloads, through `rmp-serde`: maps keyed by field name, human-readable mode.

    use super::Codec;
    use crate::event::DecodeError;

    /// The serializer `#[derive(DomainEvent)]` writes a MessagePack payload's fields with.
    pub(crate) type Serializer<'a> = rmp_serde::Serializer<
        &'a mut Vec<u8>,
        rmp_serde::config::HumanReadableConfig<
            rmp_serde::config::StructMapConfig<rmp_serde::config::DefaultConfig>,
        >,
    >;

    /// A serializer appending to `bytes`.
    pub(crate) fn serializer(bytes: &mut Vec<u8>) -> Serializer<'_> {
        rmp_serde::Serializer::new(bytes)
            .with_struct_map()
            .with_human_readable()
    }

    /// Decodes a MessagePack payload's body (the bytes after the marker): one value, nothing
    /// after it, as a JSON payload must be one document.
    pub(crate) fn decode<'de, T: serde::Deserialize<'de>>(
        body: &'de [u8],
    ) -> Result<T, DecodeError> {
        let mut deserializer = rmp_serde::Deserializer::from_read_ref(body).with_human_readable();
        let value = T::deserialize(&mut deserializer).map_err(invalid)?;
        // rmp-serde's human-readable deserializer does not say where it stopped: measure the
        // value, so that bytes after it (a payload glued to another, a torn write) are refused.
        match first_value_len(body) {
            Some(len) if len == body.len() => Ok(value),
            Some(len) => Err(DecodeError::InvalidBinaryPayload {
                codec: Codec::MessagePack,
                source: format!(
                    "{} bytes after the payload's value, which ends at byte {len}",
                    body.len() - len
                )
                .into(),
            }),
            // The value decoded, so it is whole; a measure that disagrees is as much an error.
            None => Err(DecodeError::InvalidBinaryPayload {
                codec: Codec::MessagePack,
                source: "the payload's value is cut short".into(),
            }),
        }
    }

    /// The length in bytes of the MessagePack value at the start of `bytes`, `None` when it is
    /// cut short or uses the one byte MessagePack leaves unused. Iterative, so that a deeply
    /// nested value cannot exhaust the stack.
    pub(crate) fn first_value_len(bytes: &[u8]) -> Option<usize> {
        // Reads a big-endian length of `width` bytes at `at`.
        let length = |at: usize, width: usize| -> Option<usize> {
            let field = bytes.get(at..at.checked_add(width)?)?;
            let value = field
                .iter()
                .fold(0u64, |n, byte| (n << 8) | u64::from(*byte));
            usize::try_from(value).ok()
        };
        let mut at = 0usize;
        // Values still to be measured: one, plus the elements of the arrays and maps met.
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let marker = *bytes.get(at)?;
            at += 1;
            // (bytes of the value after its marker, nested values it holds)
            let (skip, nested): (usize, u64) = match marker {
                // positive fixint, negative fixint, nil, false, true
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
                0x90..=0x9f => (0, u64::from(marker & 0x0f)),
                0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
                // bin 8/16/32, str 8/16/32: a length, then that many bytes
                0xc4 | 0xd9 => (1 + length(at, 1)?, 0),
                0xc5 | 0xda => (2 + length(at, 2)?, 0),
                0xc6 | 0xdb => (4 + length(at, 4)?, 0),
                // ext 8/16/32: a length, a type byte, the data
                0xc7 => (1 + 1 + length(at, 1)?, 0),
                0xc8 => (2 + 1 + length(at, 2)?, 0),
                0xc9 => (4 + 1 + length(at, 4)?, 0),
                // float 32/64, uint and int 8 to 64
                0xca => (4, 0),
                0xcb => (8, 0),
                0xcc | 0xd0 => (1, 0),
                0xcd | 0xd1 => (2, 0),
                0xce | 0xd2 => (4, 0),
                0xcf | 0xd3 => (8, 0),
                // fixext 1/2/4/8/16: a type byte and the data
                0xd4 => (2, 0),
                0xd5 => (3, 0),
                0xd6 => (5, 0),
                0xd7 => (9, 0),
                0xd8 => (17, 0),
                // array 16/32, map 16/32
                0xdc => (2, u64::try_from(length(at, 2)?).ok()?),
                0xdd => (4, u64::try_from(length(at, 4)?).ok()?),
                0xde => (2, 2 * u64::try_from(length(at, 2)?).ok()?),
                0xdf => (4, 2 * u64::try_from(length(at, 4)?).ok()?),
                // 0xc1: never used
                _ => return None,
            };
            at = at.checked_add(skip)?;
            if at > bytes.len() {
                return None;
            }
            pending = pending.checked_add(nested)?;
            // Every nested value takes at least a byte: a count beyond what is left is a lie.
            if pending > (bytes.len() - at) as u64 {
                return None;
            }
        }
        Some(at)
    }

    fn invalid(error: rmp_serde::decode::Error) -> DecodeError {
        DecodeError::InvalidBinaryPayload {
            codec: Codec::MessagePack,
            source: Box::new(error),
        }
    }
}

#[cfg(not(feature = "msgpack"))]
pub(crate) mod message_pack {
    //! Without the `msgpack` feature, MessagePack payloads are refused with a typed error.

    use super::Codec;
    use crate::event::DecodeError;

    pub(crate) fn decode<T>(_body: &[u8]) -> Result<T, DecodeError> {
        Err(DecodeError::CodecNotEnabled {
            codec: Codec::MessagePack,
            feature: "msgpack",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Reading {
        kwh: u64,
    }

    /// The marker, then the map {"kwh": 7}: fixmap of one, fixstr of three, 7.
    const MESSAGE_PACK: [u8; 7] = [0xC1, 0x81, 0xA3, b'k', b'w', b'h', 0x07];

    #[test]
    fn the_first_byte_names_the_codec() {
        assert_eq!(Codec::of(br#"{"kwh":7}"#), Codec::Json);
        assert_eq!(Codec::of(b"null"), Codec::Json);
        assert_eq!(Codec::of(b""), Codec::Json);
        assert_eq!(Codec::of(&MESSAGE_PACK), Codec::MessagePack);
        // No UTF-8 text holds the marker, so no JSON payload can be taken for MessagePack.
        assert!(std::str::from_utf8(&[MESSAGE_PACK_MARKER]).is_err());
        assert_eq!(Codec::MessagePack.to_string(), "msgpack");
    }

    #[test]
    fn json_payloads_decode_as_before() {
        assert_eq!(
            decode::<Reading>(br#"{"kwh":7}"#).expect("decodes"),
            Reading { kwh: 7 }
        );
        assert!(matches!(
            decode::<Reading>(br#"{"wh":7}"#),
            Err(DecodeError::InvalidPayload(_))
        ));
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn message_pack_payloads_decode_and_read_as_json() {
        assert_eq!(
            decode::<Reading>(&MESSAGE_PACK).expect("decodes"),
            Reading { kwh: 7 }
        );
        assert_eq!(
            to_json(&MESSAGE_PACK).expect("reads as JSON"),
            serde_json::json!({ "kwh": 7 })
        );
        // Cut short, or a map that does not fit: a typed error that names the codec.
        for bad in [
            &MESSAGE_PACK[..4],
            &[0xC1, 0x81, 0xA2, b'w', b'h', 0x07][..],
            &[0xC1][..],
        ] {
            let error = decode::<Reading>(bad).expect_err("refused");
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
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn bytes_after_a_message_pack_value_are_refused() {
        let mut glued = MESSAGE_PACK.to_vec();
        glued.extend_from_slice(&MESSAGE_PACK[1..]);
        let error = decode::<Reading>(&glued).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("6 bytes after the payload's value"),
            "{error}"
        );
        assert!(to_json(&glued).is_err());
    }

    /// The measure agrees with rmp-serde on values of every kind, nested, and refuses any value
    /// cut short by one byte.
    #[cfg(feature = "msgpack")]
    #[test]
    fn the_measure_of_a_message_pack_value_is_its_length() {
        use message_pack::first_value_len;
        use serde::Serialize as _;

        let big = "x".repeat(70_000);
        let values = [
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(7),
            serde_json::json!(-7),
            serde_json::json!(200),
            serde_json::json!(-200),
            serde_json::json!(70_000),
            serde_json::json!(-70_000),
            serde_json::json!(u64::MAX),
            serde_json::json!(i64::MIN),
            serde_json::json!(0.5),
            serde_json::json!("short"),
            serde_json::json!("x".repeat(40)),
            serde_json::json!("x".repeat(300)),
            serde_json::json!(big),
            serde_json::json!([1, [2, [3, {"a": [4, 5]}]], {}]),
            serde_json::json!((0..20).collect::<Vec<u32>>()),
            serde_json::json!((0..70_000).collect::<Vec<u32>>()),
            serde_json::Value::Object(
                (0..20)
                    .map(|n| (n.to_string(), serde_json::json!(n)))
                    .collect(),
            ),
        ];
        for value in values {
            let mut bytes = Vec::new();
            value
                .serialize(&mut message_pack::serializer(&mut bytes))
                .expect("encodes");
            assert_eq!(first_value_len(&bytes), Some(bytes.len()), "{value}");
            assert_eq!(first_value_len(&bytes[..bytes.len() - 1]), None, "{value}");
        }
        // Binary, extension and float 32 values, which JSON values never produce.
        for bytes in [
            &[0xc4, 2, 1, 2][..],
            &[0xc5, 0, 1, 9][..],
            &[0xc7, 1, 5, 9][..],
            &[0xd4, 5, 9][..],
            &[
                0xd8, 5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
            ][..],
            &[0xca, 0, 0, 0, 0][..],
        ] {
            assert_eq!(first_value_len(bytes), Some(bytes.len()), "{bytes:?}");
            assert_eq!(
                first_value_len(&bytes[..bytes.len() - 1]),
                None,
                "{bytes:?}"
            );
        }
        // The unused byte, and an array that claims more elements than bytes are left.
        assert_eq!(first_value_len(&[0xc1]), None);
        assert_eq!(first_value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0]), None);
    }

    #[cfg(not(feature = "msgpack"))]
    #[test]
    fn message_pack_payloads_need_the_feature() {
        let error = decode::<Reading>(&MESSAGE_PACK).expect_err("refused");
        assert!(
            matches!(
                error,
                DecodeError::CodecNotEnabled {
                    feature: "msgpack",
                    ..
                }
            ),
            "{error:?}"
        );
    }
}
