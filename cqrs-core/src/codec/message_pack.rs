//! MessagePack payloads: maps keyed by field name, in serde's human-readable mode. Written
//! through `rmp-serde`; read by this module's own deserializer, which borrows every string and
//! byte string from the payload, knows where the value ends (so bytes after it are refused
//! without a second pass), and bounds how deep values nest.

use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};

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

/// How deep arrays and maps may nest in a payload (as deep as `serde_json` lets JSON nest), so
/// that a hostile or corrupt payload cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Decodes a MessagePack payload's body (the bytes after the marker): one value, nothing after
/// it, as a JSON payload must be one document.
pub(crate) fn decode<'de, T: serde::Deserialize<'de>>(body: &'de [u8]) -> Result<T, DecodeError> {
    let mut deserializer = Deserializer {
        bytes: body,
        at: 0,
        depth: 0,
    };
    let value = T::deserialize(&mut deserializer).map_err(|mut error| {
        // A type's own complaint (a missing field, say) does not know where it was raised.
        error.0.at.get_or_insert(deserializer.at);
        invalid(error)
    })?;
    if deserializer.at != body.len() {
        return Err(invalid(Error::at(
            deserializer.at,
            format!(
                "{} bytes after the payload's value",
                body.len() - deserializer.at
            ),
        )));
    }
    Ok(value)
}

fn invalid(error: Error) -> DecodeError {
    DecodeError::InvalidBinaryPayload {
        codec: Codec::MessagePack,
        source: Box::new(error),
    }
}

/// What was wrong with a MessagePack payload, and where in it decoding stood when it found out. Boxed, as `serde_json`'s error is, so that
/// every `Result` the decoding passes around is a word wide.
#[derive(Debug)]
pub(crate) struct Error(Box<Fault>);

#[derive(Debug)]
struct Fault {
    message: String,
    at: Option<usize>,
}

impl Error {
    #[cold]
    fn at(at: usize, message: impl Into<String>) -> Error {
        Error(Box::new(Fault {
            message: message.into(),
            at: Some(at),
        }))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.at {
            // Counted in the payload, whose byte 0 is the marker.
            Some(at) => write!(
                f,
                "{} (at offset {} of the payload)",
                self.0.message,
                at + 1
            ),
            None => f.write_str(&self.0.message),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    #[cold]
    fn custom<T: fmt::Display>(message: T) -> Error {
        Error(Box::new(Fault {
            message: message.to_string(),
            at: None,
        }))
    }
}

/// An integer as a payload holds it, unsigned or signed, whatever its width there.
#[derive(Clone, Copy)]
enum Integer {
    Unsigned(u64),
    Signed(i64),
}

impl Integer {
    fn visit<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Integer::Unsigned(n) => visitor.visit_u64(n),
            Integer::Signed(n) => visitor.visit_i64(n),
        }
    }
}

/// Reads one MessagePack value from `bytes`, starting at `at`.
struct Deserializer<'de> {
    bytes: &'de [u8],
    at: usize,
    /// Arrays and maps open around the value being read.
    depth: usize,
}

impl<'de> Deserializer<'de> {
    #[cold]
    fn cut_short(&self, needed: usize) -> Error {
        Error::at(
            self.at,
            format!(
                "the value is cut short: {needed} bytes needed where {} are left",
                self.bytes.len() - self.at
            ),
        )
    }

    #[inline]
    fn peek(&self) -> Result<u8, Error> {
        self.bytes
            .get(self.at)
            .copied()
            .ok_or_else(|| self.cut_short(1))
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, Error> {
        let byte = self.peek()?;
        self.at += 1;
        Ok(byte)
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<&'de [u8], Error> {
        let bytes = self.bytes;
        match bytes.get(self.at..self.at.saturating_add(len)) {
            Some(taken) => {
                self.at += len;
                Ok(taken)
            }
            None => Err(self.cut_short(len)),
        }
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// A big-endian length of `width` (1, 2 or 4) bytes.
    #[inline]
    fn len(&mut self, width: usize) -> Result<usize, Error> {
        let length = self
            .take(width)?
            .iter()
            .fold(0usize, |n, byte| (n << 8) | usize::from(*byte));
        Ok(length)
    }

    #[inline]
    fn str(&mut self, len: usize) -> Result<&'de str, Error> {
        let start = self.at;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map_err(|error| Error::at(start, format!("a string that is not UTF-8: {error}")))
    }

    /// The integer that comes next, read, in whichever of MessagePack's widths it is written;
    /// `None`, with nothing read, when the next value is not an integer.
    #[inline]
    fn integer(&mut self) -> Result<Option<Integer>, Error> {
        let marker = self.peek()?;
        let integer = match marker {
            0x00..=0x7f => Integer::Unsigned(u64::from(marker)),
            0xe0..=0xff => Integer::Signed(i64::from(i8::from_be_bytes([marker]))),
            0xcc..=0xd3 => {
                self.at += 1;
                return Ok(Some(match marker {
                    0xcc => Integer::Unsigned(u64::from(self.byte()?)),
                    0xcd => Integer::Unsigned(u64::from(u16::from_be_bytes(self.array()?))),
                    0xce => Integer::Unsigned(u64::from(u32::from_be_bytes(self.array()?))),
                    0xcf => Integer::Unsigned(u64::from_be_bytes(self.array()?)),
                    0xd0 => Integer::Signed(i64::from(i8::from_be_bytes(self.array()?))),
                    0xd1 => Integer::Signed(i64::from(i16::from_be_bytes(self.array()?))),
                    0xd2 => Integer::Signed(i64::from(i32::from_be_bytes(self.array()?))),
                    _ => Integer::Signed(i64::from_be_bytes(self.array()?)),
                }));
            }
            _ => return Ok(None),
        };
        self.at += 1;
        Ok(Some(integer))
    }

    fn enter(&mut self) -> Result<(), Error> {
        if self.depth == MAX_DEPTH {
            return Err(Error::at(
                self.at,
                format!("arrays and maps nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.depth += 1;
        Ok(())
    }

    fn seq<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.nested(len, "fewer elements", |items| visitor.visit_seq(items))
    }

    fn map<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.nested(len, "fewer entries", |items| visitor.visit_map(items))
    }

    /// Reads the `len` elements or entries of an array or map through `read`, one level deeper,
    /// and refuses a value whose type read fewer than there are (`fewer` says what).
    fn nested<T>(
        &mut self,
        len: usize,
        fewer: &'static str,
        read: impl FnOnce(&mut Items<'_, 'de>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.enter()?;
        let mut items = Items {
            de: self,
            left: len,
        };
        let value = read(&mut items)?;
        let left = items.left;
        self.depth -= 1;
        if left > 0 {
            return Err(de::Error::invalid_length(len, &fewer));
        }
        Ok(value)
    }

    /// How many more values can follow at most: each takes a byte at least. A length that
    /// claims more is a lie, and must not size an allocation.
    #[inline]
    fn at_most(&self, claimed: usize) -> usize {
        claimed.min(self.bytes.len() - self.at)
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if let Some(integer) = self.integer()? {
            return integer.visit(visitor);
        }
        let start = self.at;
        let marker = self.byte()?;
        match marker {
            0xa0..=0xbf => {
                let s = self.str(usize::from(marker & 0x1f))?;
                visitor.visit_borrowed_str(s)
            }
            0xd9..=0xdb => {
                let len = self.len(1 << (marker - 0xd9))?;
                visitor.visit_borrowed_str(self.str(len)?)
            }
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), visitor),
            0xde => {
                let len = self.len(2)?;
                self.map(len, visitor)
            }
            0xdf => {
                let len = self.len(4)?;
                self.map(len, visitor)
            }
            0xc0 => visitor.visit_unit(),
            0xc2 => visitor.visit_bool(false),
            0xc3 => visitor.visit_bool(true),
            0x90..=0x9f => self.seq(usize::from(marker & 0x0f), visitor),
            0xdc => {
                let len = self.len(2)?;
                self.seq(len, visitor)
            }
            0xdd => {
                let len = self.len(4)?;
                self.seq(len, visitor)
            }
            // Read as what it is when the type asks for bytes (`deserialize_bytes`); otherwise
            // as the array of numbers the JSON codec writes for the same bytes, so that an
            // upcaster sees one value whatever the codec.
            0xc4..=0xc6 => {
                let len = self.len(1 << (marker - 0xc4))?;
                let bytes = self.take(len)?;
                let mut numbers = de::value::SeqDeserializer::new(bytes.iter().copied());
                let value = visitor.visit_seq(&mut numbers)?;
                numbers.end()?;
                Ok(value)
            }
            0xca => visitor.visit_f32(f32::from_be_bytes(self.array()?)),
            0xcb => visitor.visit_f64(f64::from_be_bytes(self.array()?)),
            0xc7..=0xc9 | 0xd4..=0xd8 => Err(Error::at(
                start,
                format!(
                    "an extension value (marker {marker:#04x}), which no serde type writes \
                     through this codec"
                ),
            )),
            // 0xc1, the one byte MessagePack never uses.
            _ => Err(Error::at(
                start,
                format!("byte {marker:#04x}, which starts no MessagePack value"),
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek()? == 0xc0 {
            self.at += 1;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        // rmp-serde writes a unit struct as an empty array.
        if self.peek()? == 0x90 {
            self.at += 1;
            visitor.visit_unit()
        } else {
            self.deserialize_any(visitor)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // A unit variant is its name; any other variant a map of one entry, its name to its
        // content.
        let start = self.at;
        let marker = self.byte()?;
        let name_len = match marker {
            0xa0..=0xbf => Some(usize::from(marker & 0x1f)),
            0xd9..=0xdb => Some(self.len(1 << (marker - 0xd9))?),
            _ => None,
        };
        if let Some(len) = name_len {
            let name = self.str(len)?;
            return visitor.visit_enum(de::value::BorrowedStrDeserializer::new(name));
        }
        let entries = match marker {
            0x80..=0x8f => usize::from(marker & 0x0f),
            0xde => self.len(2)?,
            0xdf => self.len(4)?,
            _ => usize::MAX,
        };
        if entries != 1 {
            return Err(Error::at(
                start,
                format!(
                    "marker {marker:#04x} where an enum was expected (a variant's name, or a map \
                     of one entry from its name to its content)"
                ),
            ));
        }
        self.enter()?;
        let value = visitor.visit_enum(Variant { de: &mut *self })?;
        self.depth -= 1;
        Ok(value)
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // rmp-serde writes 128-bit integers as 16 big-endian bytes.
        match self.wide_integer()? {
            Some(bytes) => visitor.visit_i128(i128::from_be_bytes(bytes)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.wide_integer()? {
            Some(bytes) => visitor.visit_u128(u128::from_be_bytes(bytes)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let marker = self.peek()?;
        if (0xc4..=0xc6).contains(&marker) {
            self.at += 1;
            let len = self.len(1 << (marker - 0xc4))?;
            return visitor.visit_borrowed_bytes(self.take(len)?);
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    // The shapes an event's fields take most, read without going through every marker.

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let marker = self.peek()?;
        if (0xa0..=0xbf).contains(&marker) {
            self.at += 1;
            return visitor.visit_borrowed_str(self.str(usize::from(marker & 0x1f))?);
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let marker = self.peek()?;
        if (0x80..=0x8f).contains(&marker) {
            self.at += 1;
            return self.map(usize::from(marker & 0x0f), visitor);
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.integer()? {
            Some(integer) => integer.visit(visitor),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_u64(visitor)
    }

    fn is_human_readable(&self) -> bool {
        true
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 u8 u16 f32 f64 char str string unit seq tuple tuple_struct
        map ignored_any
    }
}

impl Deserializer<'_> {
    /// The 16 bytes of a 128-bit integer when a 16-byte binary value comes next.
    fn wide_integer(&mut self) -> Result<Option<[u8; 16]>, Error> {
        if self.bytes.get(self.at..self.at + 2) == Some(&[0xc4, 16]) {
            self.at += 2;
            return self.array().map(Some);
        }
        Ok(None)
    }
}

/// The elements of an array, or the entries of a map, left to read.
struct Items<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
}

impl<'de> Items<'_, 'de> {
    /// Reads the next element, or the next entry's key, with `read`; `None` once all are read.
    fn next<T>(
        &mut self,
        read: impl FnOnce(&mut Deserializer<'de>) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        read(self.de).map(Some)
    }
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.next(|de| seed.deserialize(de))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.de.at_most(self.left))
    }
}

impl<'de> de::MapAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        self.next(|de| seed.deserialize(MapKey(de)))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.de.at_most(self.left))
    }
}

/// A map's key. Read as any value is, except that an integer key read as a string (what a JSON
/// value's keys are) is its decimal text: the key the JSON codec writes for it, so that a
/// `HashMap<u64, _>` reads as the same JSON value, for upcasters and the admin tools, in either
/// codec.
struct MapKey<'a, 'de>(&'a mut Deserializer<'de>);

impl<'de> de::Deserializer<'de> for MapKey<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.integer()? {
            Some(Integer::Unsigned(key)) => visitor.visit_string(key.to_string()),
            Some(Integer::Signed(key)) => visitor.visit_string(key.to_string()),
            None => self.0.deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_identifier(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_option(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        // A newtype key (`BookingId(u64)`) reads its inner key as a key, too.
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_bytes(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_byte_buf(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_u64(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_u32(visitor)
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_i128(visitor)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_u128(visitor)
    }

    fn is_human_readable(&self) -> bool {
        true
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 u8 u16 f32 f64 char unit seq tuple tuple_struct map ignored_any
    }
}

/// The variant of an enum written as a map of one entry: its name, then its content.
struct Variant<'a, 'de> {
    de: &'a mut Deserializer<'de>,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let name = seed.deserialize(&mut *self.de)?;
        Ok((name, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        // As a map entry, a unit variant's content is nil (or, as rmp-serde reads it, anything).
        <de::IgnoredAny as serde::Deserialize>::deserialize(&mut *self.de).map(|_| ())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(&mut *self.de, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(&mut *self.de, visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::*;

    fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        let mut bytes = Vec::new();
        value
            .serialize(&mut serializer(&mut bytes))
            .expect("encodes");
        bytes
    }

    fn rmp_decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> T {
        let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
        T::deserialize(&mut deserializer).expect("rmp-serde decodes")
    }

    fn refusal<'de, T: Deserialize<'de> + fmt::Debug>(bytes: &'de [u8]) -> String {
        match decode::<T>(bytes) {
            Ok(value) => panic!("{bytes:02x?} decoded as {value:?}"),
            Err(DecodeError::InvalidBinaryPayload {
                codec: Codec::MessagePack,
                source,
            }) => source.to_string(),
            Err(other) => panic!("{bytes:02x?}: {other:?}"),
        }
    }

    /// Every kind of value, at every width its kind has, reads as rmp-serde reads it, and each
    /// one cut short by a byte is refused.
    #[test]
    fn values_of_every_kind_read_as_rmp_serde_reads_them() {
        let values = [
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(false),
            serde_json::json!(0),
            serde_json::json!(7),
            serde_json::json!(-7),
            serde_json::json!(-32),
            serde_json::json!(-33),
            serde_json::json!(200),
            serde_json::json!(-200),
            serde_json::json!(70_000),
            serde_json::json!(-70_000),
            serde_json::json!(5_000_000_000u64),
            serde_json::json!(-5_000_000_000i64),
            serde_json::json!(u64::MAX),
            serde_json::json!(i64::MIN),
            serde_json::json!(0.5),
            serde_json::json!(""),
            serde_json::json!("short"),
            serde_json::json!("é".repeat(20)),
            serde_json::json!("x".repeat(300)),
            serde_json::json!("x".repeat(70_000)),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!([1, [2, [3, {"a": [4, 5]}]], {}]),
            serde_json::json!((0..20).collect::<Vec<u32>>()),
            serde_json::json!((0..70_000).collect::<Vec<u32>>()),
            serde_json::Value::Object(
                (0..20)
                    .map(|n| (n.to_string(), serde_json::json!(n)))
                    .collect(),
            ),
            serde_json::Value::Object(
                (0..70_000)
                    .map(|n| (n.to_string(), serde_json::json!(n)))
                    .collect(),
            ),
        ];
        for value in values {
            let bytes = encode(&value);
            let ours: serde_json::Value = decode(&bytes).expect("decodes");
            assert_eq!(ours, rmp_decode::<serde_json::Value>(&bytes), "{value}");
            assert_eq!(ours, value);
            let error = refusal::<serde_json::Value>(&bytes[..bytes.len() - 1]);
            assert!(error.contains("cut short"), "{value}: {error}");
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Unit;

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    struct Meters(u32);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Dot,
        Circle(u32),
        Line(i16, i16),
        Square { side: u32 },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Everything {
        flag: bool,
        small: i8,
        float: f32,
        double: f64,
        letter: char,
        text: String,
        #[serde(with = "serde_bytes_like")]
        bytes: Vec<u8>,
        absent: Option<u32>,
        present: Option<Option<u32>>,
        unit: (),
        unit_struct: Unit,
        newtype: Meters,
        tuple: (u8, String),
        shapes: Vec<Shape>,
        map: BTreeMap<String, Vec<u16>>,
        by_number: BTreeMap<i64, String>,
        by_booking: BTreeMap<Meters, bool>,
        id: uuid::Uuid,
    }

    /// Serializes a `Vec<u8>` as bytes (a MessagePack `bin`), as `serde_bytes` would.
    mod serde_bytes_like {
        pub(super) fn serialize<S: serde::Serializer>(
            bytes: &[u8],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(bytes)
        }

        pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<u8>, D::Error> {
            struct Bytes;
            impl<'de> serde::de::Visitor<'de> for Bytes {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                    Ok(bytes.to_vec())
                }
            }
            d.deserialize_bytes(Bytes)
        }
    }

    fn everything() -> Everything {
        Everything {
            flag: true,
            small: -5,
            float: 1.5,
            double: -2.25e300,
            letter: 'ß',
            text: "seat 12".to_owned(),
            bytes: (0..=255).collect(),
            absent: None,
            present: Some(Some(3)),
            unit: (),
            unit_struct: Unit,
            newtype: Meters(42),
            tuple: (9, "nine".to_owned()),
            shapes: vec![
                Shape::Dot,
                Shape::Circle(3),
                Shape::Line(-1, 1),
                Shape::Square { side: 4 },
            ],
            map: [("a".to_owned(), vec![1, 2]), ("b".to_owned(), vec![])]
                .into_iter()
                .collect(),
            by_number: [
                (-70_000, "a"),
                (-5, "b"),
                (7, "c"),
                (300, "d"),
                (1 << 40, "e"),
            ]
            .into_iter()
            .map(|(key, value)| (key, value.to_owned()))
            .collect(),
            by_booking: [(Meters(1), true), (Meters(70_000), false)]
                .into_iter()
                .collect(),
            id: uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        }
    }

    /// Every shape of the serde data model rmp-serde writes reads back to the same value, as
    /// rmp-serde reads it, and to the JSON value the JSON codec writes for it.
    #[test]
    fn every_shape_of_the_data_model_reads_back() {
        let value = everything();
        let bytes = encode(&value);
        assert_eq!(decode::<Everything>(&bytes).expect("decodes"), value);
        assert_eq!(rmp_decode::<Everything>(&bytes), value);
        let json: serde_json::Value = decode(&bytes).expect("reads as JSON");
        let mut expected = serde_json::to_value(&value).expect("JSON");
        // The one difference: rmp-serde writes a unit struct as an empty array, JSON as null.
        expected["unit_struct"] = serde_json::json!([]);
        assert_eq!(json, expected);
        // Human-readable, and bytes as numbers: as the JSON codec has them.
        assert_eq!(json["id"], "12345678-9abc-def0-1234-56789abcdef0");
        assert_eq!(json["bytes"][255], 255);
        assert_eq!(json["shapes"][0], "Dot");
        assert_eq!(
            json["shapes"][3],
            serde_json::json!({"Square": {"side": 4}})
        );
        // Cut anywhere, the value is refused, never read in part.
        for end in 0..bytes.len() {
            refusal::<Everything>(&bytes[..end]);
        }
    }

    /// 128-bit integers, which rmp-serde writes as 16 bytes, read back at both extremes; smaller
    /// ones written as plain integers read as well.
    #[test]
    fn wide_integers_read_back() {
        for value in [u128::MAX, 0, u128::from(u64::MAX) + 1] {
            assert_eq!(decode::<u128>(&encode(&value)).expect("decodes"), value);
        }
        for value in [i128::MIN, i128::MAX, -1] {
            assert_eq!(decode::<i128>(&encode(&value)).expect("decodes"), value);
        }
        assert_eq!(decode::<u128>(&encode(&7u64)).expect("decodes"), 7);
        assert_eq!(decode::<i128>(&encode(&-7i64)).expect("decodes"), -7);
        // Bytes where a 4-element array of numbers is asked for: all four, and no more.
        assert_eq!(
            decode::<[u8; 4]>(&[0xc4, 4, 1, 2, 3, 4]).expect("decodes"),
            [1, 2, 3, 4]
        );
        refusal::<[u8; 3]>(&[0xc4, 4, 1, 2, 3, 4]);
    }

    /// The shapes read without going through every marker (integers of every width, a struct's
    /// fields by name) read as the general path reads them, and so do the shapes around them:
    /// names too long for a fixstr, structs of more than 15 fields, structs written as arrays.
    #[test]
    fn the_fast_paths_read_what_the_general_path_reads() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Counts {
            count: u64,
            small: u32,
            a_field_name_well_beyond_thirty_one_bytes: u8,
        }
        for count in [
            0,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            5_000_000_000,
            u64::MAX,
        ] {
            let small = u32::try_from(count).unwrap_or(u32::MAX);
            let value = Counts {
                count,
                small,
                a_field_name_well_beyond_thirty_one_bytes: 1,
            };
            let bytes = encode(&value);
            assert_eq!(decode::<Counts>(&bytes).expect("decodes"), value);
            assert_eq!(rmp_decode::<Counts>(&bytes), value);
        }
        // A u32 field given more than a u32 holds, or a negative number: refused.
        for bytes in [
            encode(&serde_json::json!({"count": 1, "small": 5_000_000_000u64,
                "a_field_name_well_beyond_thirty_one_bytes": 1})),
            encode(&serde_json::json!({"count": -1, "small": 1,
                "a_field_name_well_beyond_thirty_one_bytes": 1})),
        ] {
            let error = refusal::<Counts>(&bytes);
            assert!(error.starts_with("invalid value"), "{error}");
        }
        // The same struct as an array of its fields, as rmp-serde writes it without field names.
        let positional = encode(&(7u64, 8u32, 9u8));
        assert_eq!(
            decode::<Counts>(&positional).expect("decodes"),
            Counts {
                count: 7,
                small: 8,
                a_field_name_well_beyond_thirty_one_bytes: 9
            }
        );
        // Seventeen fields: a map16, not a fixmap.
        let wide: BTreeMap<String, u64> = (0..17).map(|n| (format!("f{n}"), n)).collect();
        let bytes = encode(&wide);
        assert_eq!(bytes[0], 0xde);
        assert_eq!(
            decode::<BTreeMap<String, u64>>(&bytes).expect("decodes"),
            wide
        );
    }

    /// Strings and byte strings are lent from the payload, not copied.
    #[test]
    fn strings_are_borrowed_from_the_payload() {
        #[derive(Debug, Serialize, Deserialize)]
        struct Borrowing<'a> {
            name: &'a str,
            #[serde(borrow, with = "serde_bytes_borrowed")]
            raw: &'a [u8],
        }
        mod serde_bytes_borrowed {
            pub(super) fn serialize<S: serde::Serializer>(
                b: &&[u8],
                s: S,
            ) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(b)
            }
            pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
                d: D,
            ) -> Result<&'de [u8], D::Error> {
                <&[u8] as serde::Deserialize>::deserialize(d)
            }
        }
        let bytes = encode(&Borrowing {
            name: "hall",
            raw: &[1, 2, 3],
        });
        let read: Borrowing<'_> = decode(&bytes).expect("decodes");
        assert_eq!((read.name, read.raw), ("hall", &[1u8, 2, 3][..]));
        let range = bytes.as_ptr_range();
        assert!(range.contains(&read.name.as_ptr()));
        assert!(range.contains(&read.raw.as_ptr()));
    }

    #[test]
    fn bad_values_get_an_error_that_says_what_and_where() {
        // The unused byte, nested in a map's value.
        let error = refusal::<serde_json::Value>(&[0x81, 0xa1, b'a', 0xc1]);
        assert_eq!(
            error,
            "byte 0xc1, which starts no MessagePack value (at offset 4 of the payload)"
        );
        // Extension values, which no serde type writes through this codec.
        for bytes in [&[0xd4, 5, 9][..], &[0xc7, 1, 5, 9][..]] {
            let error = refusal::<serde_json::Value>(bytes);
            assert!(error.starts_with("an extension value"), "{error}");
        }
        // A string that is not UTF-8.
        let error = refusal::<serde_json::Value>(&[0xa2, 0xff, 0xfe]);
        assert!(error.starts_with("a string that is not UTF-8"), "{error}");
        // An array that claims four billion elements: refused once the bytes run out, without
        // an allocation the size of the claim.
        let error = refusal::<Vec<u64>>(&[0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert!(error.contains("cut short"), "{error}");
        // More elements than the type reads.
        let error = refusal::<(u8, u8)>(&[0x93, 1, 2, 3]);
        assert!(error.contains("fewer elements"), "{error}");
        // A type's own complaint names the byte where it was raised.
        let error = refusal::<Meters>(&[0xa1, b'x']);
        assert!(error.ends_with("(at offset 3 of the payload)"), "{error}");
        // An enum neither a name nor a map of one entry.
        let error = refusal::<Shape>(&[0x82, 0xa3, b'D', b'o', b't', 0xc0, 0xa1, b'x', 0xc0]);
        assert!(error.contains("where an enum was expected"), "{error}");
    }

    #[test]
    fn values_nest_at_most_128_deep() {
        let nested = |depth: usize| {
            let mut bytes = vec![0x91; depth];
            bytes.push(0x07);
            bytes
        };
        decode::<serde_json::Value>(&nested(MAX_DEPTH)).expect("128 levels read");
        let error = refusal::<serde_json::Value>(&nested(MAX_DEPTH + 1));
        assert!(
            error.starts_with("arrays and maps nest deeper than 128"),
            "{error}"
        );
        // Far deeper than any stack would take, refused just as well.
        refusal::<serde_json::Value>(&nested(1_000_000));
        let maps: Vec<u8> = std::iter::repeat_n([0x81, 0xa0], 10_000)
            .flatten()
            .chain([0xc0])
            .collect();
        refusal::<serde_json::Value>(&maps);
    }
}
