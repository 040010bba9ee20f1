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
//! differently for humans (a `Uuid` as a string, say) is the same value in both codecs, and
//! bytes written as bytes (a MessagePack `bin`, from `serde_bytes` say) read as JSON as the array
//! of numbers the JSON codec writes for them.
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
pub(crate) mod message_pack;

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
