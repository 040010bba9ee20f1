//! The event model: stream ids, versions, positions, and the envelope every stored event travels in.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest stream id a store accepts, in bytes.
///
/// PostgreSQL indexes and log lines stay readable with ids of this size; a longer id is almost
/// always a bug (a serialized object used as an id) and is refused with [`InvalidStreamId::TooLong`].
pub const MAX_STREAM_ID_LEN: usize = 256;

/// Why a string was refused as a [`StreamId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidStreamId {
    /// The id was the empty string.
    #[error("stream id is empty")]
    Empty,
    /// The id was longer than [`MAX_STREAM_ID_LEN`] bytes.
    #[error("stream id is {len} bytes long, the limit is {max}")]
    TooLong {
        /// The length of the refused id, in bytes.
        len: usize,
        /// The limit, [`MAX_STREAM_ID_LEN`].
        max: usize,
    },
    /// The id contained a control character (a newline, a NUL, ...).
    #[error("stream id contains the control character {character:?} at byte {index}")]
    ControlCharacter {
        /// The offending character.
        character: char,
        /// Its byte offset in the id.
        index: usize,
    },
    /// An aggregate's name cannot be the category of a stream id (see [`validate_aggregate_name`]).
    #[error(transparent)]
    AggregateName(#[from] InvalidAggregateName),
    /// The aggregate id was empty: `{aggregate}-` names no instance.
    #[error("the id of a `{aggregate}` aggregate is empty")]
    EmptyAggregateId {
        /// The aggregate's name.
        aggregate: String,
    },
}

/// The longest aggregate name, in bytes.
pub const MAX_AGGREGATE_NAME_LEN: usize = 64;

/// Why a string cannot be an aggregate's name (see [`validate_aggregate_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidAggregateName {
    /// The name was empty.
    #[error("the aggregate name is empty")]
    Empty,
    /// The name was longer than [`MAX_AGGREGATE_NAME_LEN`] bytes.
    #[error("the aggregate name `{name}` is {len} bytes long, the limit is {max}")]
    TooLong {
        /// The refused name.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit, [`MAX_AGGREGATE_NAME_LEN`].
        max: usize,
    },
    /// The name held a character outside ASCII letters, digits, `_` and `.`; a `-` would make the
    /// stream ids of two aggregates collide (`order-line` + `5` and `order` + `line-5`).
    #[error(
        "the aggregate name `{name}` contains {character:?}: only ASCII letters, digits, `_` and `.` \
         are allowed, since `-` separates the name from the id in stream ids"
    )]
    Character {
        /// The refused name.
        name: String,
        /// The first character that is not allowed.
        character: char,
    },
}

/// Checks that `name` can be an aggregate's name, the category of its stream ids: 1 to
/// [`MAX_AGGREGATE_NAME_LEN`] bytes of ASCII letters, digits, `_` and `.`.
///
/// A stream id is `{name}-{id}` and the category is everything before the first `-` (the
/// convention KurrentDB's category projections use), so a name never holds a `-`: with
/// `order-line` allowed, the order line `5` and the order `line-5` would share the stream
/// `order-line-5`. `#[derive(Aggregate)]` checks the same rule at compile time.
///
/// ```
/// use cqrs_core::event::validate_aggregate_name;
///
/// assert!(validate_aggregate_name("order_line").is_ok());
/// assert!(validate_aggregate_name("order-line").is_err());
/// ```
pub fn validate_aggregate_name(name: &str) -> Result<(), InvalidAggregateName> {
    if name.is_empty() {
        return Err(InvalidAggregateName::Empty);
    }
    if name.len() > MAX_AGGREGATE_NAME_LEN {
        return Err(InvalidAggregateName::TooLong {
            name: name.to_owned(),
            len: name.len(),
            max: MAX_AGGREGATE_NAME_LEN,
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    match name.chars().find(|&c| !allowed(c)) {
        Some(character) => Err(InvalidAggregateName::Character {
            name: name.to_owned(),
            character,
        }),
        None => Ok(()),
    }
}

/// The name of one stream: one aggregate instance, `{aggregate name}-{id}`.
///
/// A `StreamId` is validated on construction (non-empty, at most [`MAX_STREAM_ID_LEN`] bytes, no
/// control characters), so every store can rely on it. Cloning is cheap.
///
/// The grammar has one parser, this type: the aggregate (the category) is everything before the
/// first `-` ([`aggregate`](StreamId::aggregate)), the id everything after it
/// ([`aggregate_id`](StreamId::aggregate_id)). Aggregate names never hold a `-` (see
/// [`validate_aggregate_name`]) and [`for_aggregate`](StreamId::for_aggregate) refuses an empty
/// id, so every stream an aggregate writes parses back to that aggregate and that id.
///
/// ```
/// use cqrs_core::StreamId;
///
/// let stream = StreamId::for_aggregate("order", "line-5")?;
/// assert_eq!(stream.as_str(), "order-line-5");
/// assert_eq!((stream.aggregate(), stream.aggregate_id()), ("order", "line-5"));
/// assert!(StreamId::for_aggregate("order-line", 5).is_err());
/// assert!(StreamId::for_aggregate("order", "").is_err());
/// assert!(StreamId::new("").is_err());
/// # Ok::<(), cqrs_core::InvalidStreamId>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// Validates `id` and wraps it.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidStreamId> {
        let id = id.as_ref();
        Self::validate(id)?;
        Ok(Self(Arc::from(id)))
    }

    /// The stream of the aggregate named `aggregate` with the id `id`: `{aggregate}-{id}`.
    ///
    /// Refuses a name that breaks [`validate_aggregate_name`] and an empty id.
    pub fn for_aggregate(aggregate: &str, id: impl fmt::Display) -> Result<Self, InvalidStreamId> {
        validate_aggregate_name(aggregate)?;
        Self::with_aggregate_name(aggregate, id, |name| Self::new(name))
    }

    /// Formats `{aggregate}-{id}`, refuses an empty id, and hands the name to `use_name`
    /// without allocating for it: the repository looks its cache up by name and reuses the
    /// cached id. The name is NOT validated yet: `use_name` must make its stream with
    /// [`StreamId::new`], which validates; a name equal to a stream id that was validated earlier
    /// needs no second check, which spares the cache's hits the scan. `aggregate` must have
    /// passed [`validate_aggregate_name`] (the repository checks its name once, when it is
    /// built).
    pub(crate) fn with_aggregate_name<R>(
        aggregate: &str,
        id: impl fmt::Display,
        use_name: impl FnOnce(&str) -> Result<R, InvalidStreamId>,
    ) -> Result<R, InvalidStreamId> {
        use fmt::Write as _;
        // The name is formatted into a buffer kept per thread. An id whose `Display` makes
        // another stream id finds the buffer taken and formats into a fresh one.
        thread_local! {
            static NAME: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let build = |name: &mut String| {
            name.clear();
            name.push_str(aggregate);
            name.push('-');
            // Writing into a String cannot fail.
            let _ = write!(name, "{id}");
            if name.len() == aggregate.len() + 1 {
                return Err(InvalidStreamId::EmptyAggregateId {
                    aggregate: aggregate.to_owned(),
                });
            }
            use_name(name)
        };
        NAME.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut name) => build(&mut name),
            Err(_) => build(&mut String::new()),
        })
    }

    fn validate(id: &str) -> Result<(), InvalidStreamId> {
        if id.is_empty() {
            return Err(InvalidStreamId::Empty);
        }
        if id.len() > MAX_STREAM_ID_LEN {
            return Err(InvalidStreamId::TooLong {
                len: id.len(),
                max: MAX_STREAM_ID_LEN,
            });
        }
        // Printable ASCII, the usual id, is checked a byte at a time; anything else char by char.
        let printable_ascii = id.bytes().all(|byte| (0x20..0x7f).contains(&byte));
        if !printable_ascii {
            if let Some((index, character)) = id.char_indices().find(|(_, c)| c.is_control()) {
                return Err(InvalidStreamId::ControlCharacter { character, index });
            }
        }
        Ok(())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The aggregate (the category) of the stream: everything before the first `-` (`"show"`
    /// for `show-42`). A stream id without `-` is all category.
    pub fn aggregate(&self) -> &str {
        self.split().0
    }

    /// The aggregate id of the stream: everything after the first `-` (`"42"` for `show-42`,
    /// `"line-5"` for `order-line-5`). Empty for a stream id without `-`.
    pub fn aggregate_id(&self) -> &str {
        self.split().1
    }

    /// Whether this stream belongs to the aggregate named `aggregate`.
    pub fn is_of(&self, aggregate: &str) -> bool {
        self.aggregate() == aggregate
    }

    /// Whether the stream belongs to one of `aggregates`; every stream does when the list is
    /// empty (a reader of the whole log).
    pub fn is_of_any(&self, aggregates: &[&str]) -> bool {
        aggregates.is_empty() || aggregates.contains(&self.aggregate())
    }

    fn split(&self) -> (&str, &str) {
        self.0.split_once('-').unwrap_or((&self.0, ""))
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for StreamId {
    type Error = InvalidStreamId;

    fn try_from(id: &str) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::validate(&id)?;
        Ok(Self(Arc::from(id)))
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        Self::try_from(id).map_err(serde::de::Error::custom)
    }
}

/// The version of a stream: how many events it holds. The first event of a stream has version 1.
///
/// `Version(0)` (also [`Version::INITIAL`]) is the version of a stream that has no events yet.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    /// The version of a stream with no events.
    pub const INITIAL: Version = Version(0);

    /// The version after this one.
    #[must_use]
    pub fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A place in the global log of a store, increasing in commit order. The first event has position 1.
///
/// `Position(0)` (also [`Position::START`]) is before the first event: reading after it reads all.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// Before the first event of the log.
    pub const START: Position = Position(0);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The unique id of one stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// A fresh random id.
    pub fn new() -> Self {
        EventId(crate::id::random_uuid())
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The longest command id a store accepts, in bytes.
///
/// Every store records command ids next to the stream and indexes them (PostgreSQL's
/// `cqrs_commands` has the primary key (stream, command id)); a request id, a UUID or a saga's
/// derived id is far shorter, and a longer one is refused with [`InvalidCommandId::TooLong`]
/// before it reaches any store.
pub const MAX_COMMAND_ID_LEN: usize = 256;

/// Why a string was refused as a [`CommandId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidCommandId {
    /// The id was the empty string.
    #[error("command id is empty")]
    Empty,
    /// The id was longer than [`MAX_COMMAND_ID_LEN`] bytes.
    #[error("command id is {len} bytes long, the limit is {max}")]
    TooLong {
        /// The length of the refused id, in bytes.
        len: usize,
        /// The limit, [`MAX_COMMAND_ID_LEN`].
        max: usize,
    },
    /// The id contained a control character (a newline, a NUL, ...).
    #[error("command id contains the control character {character:?} at byte {index}")]
    ControlCharacter {
        /// The offending character.
        character: char,
        /// Its byte offset in the id.
        index: usize,
    },
}

/// The id of one command, used for idempotency: a command id already applied to a stream is not
/// applied again.
///
/// Any string the caller finds unique will do (a request id, `"{saga}/{event id}"`, ...), within
/// one rule that every store accepts alike: 1 to [`MAX_COMMAND_ID_LEN`] bytes, no control
/// characters ([`char::is_control`]). The rule is checked when the id is made, so an id that a
/// store would refuse cannot be built; an id that comes from outside (a request header, a stored
/// row) is checked where it comes in. Cloning is cheap.
///
/// ```
/// use cqrs_core::{CommandId, InvalidCommandId};
///
/// let request = CommandId::new("request-42")?;
/// assert_eq!(request.as_str(), "request-42");
/// assert_eq!(CommandId::new(""), Err(InvalidCommandId::Empty));
/// assert!(CommandId::try_from("line\nbreak").is_err());
/// # Ok::<(), InvalidCommandId>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CommandId(Arc<str>);

impl CommandId {
    /// Validates `id` and wraps it.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidCommandId> {
        let id = id.as_ref();
        Self::validate(id)?;
        Ok(CommandId(Arc::from(id)))
    }

    /// A fresh random id (a UUID, 36 bytes).
    pub fn random() -> Self {
        CommandId(Arc::from(crate::id::random_uuid().to_string()))
    }

    /// Wraps an id built to follow the rule, such as one made of hexadecimal digits.
    pub(crate) fn from_validated(id: String) -> Self {
        debug_assert_eq!(Self::validate(&id), Ok(()), "{id:?}");
        CommandId(Arc::from(id))
    }

    // The same rule as `StreamId::validate`, with this type's own error.
    fn validate(id: &str) -> Result<(), InvalidCommandId> {
        if id.is_empty() {
            return Err(InvalidCommandId::Empty);
        }
        if id.len() > MAX_COMMAND_ID_LEN {
            return Err(InvalidCommandId::TooLong {
                len: id.len(),
                max: MAX_COMMAND_ID_LEN,
            });
        }
        if let Some((index, character)) = id.char_indices().find(|(_, c)| c.is_control()) {
            return Err(InvalidCommandId::ControlCharacter { character, index });
        }
        Ok(())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for CommandId {
    type Error = InvalidCommandId;

    fn try_from(id: &str) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl TryFrom<String> for CommandId {
    type Error = InvalidCommandId;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::validate(&id)?;
        Ok(CommandId(Arc::from(id)))
    }
}

impl<'de> Deserialize<'de> for CommandId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        Self::try_from(id).map_err(serde::de::Error::custom)
    }
}

/// What an event says about where it came from, beside its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The id shared by every command and event of one business process.
    pub correlation_id: Option<Uuid>,
    /// The id of the message (event or command) that caused this one.
    pub causation_id: Option<Uuid>,
    /// The command that produced this event.
    pub command_id: Option<CommandId>,
    /// When the event was produced.
    pub timestamp: SystemTime,
    /// Free-form headers (user id, tenant, trace id, ...).
    pub headers: BTreeMap<String, String>,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            correlation_id: None,
            causation_id: None,
            command_id: None,
            timestamp: SystemTime::now(),
            headers: BTreeMap::new(),
        }
    }
}

/// The stored form of an event's data: the bytes of its JSON encoding. Cloning is cheap.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Arc<[u8]>);

impl Payload {
    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Payload(Arc::from(bytes))
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Self {
        Payload(Arc::from(bytes))
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Self {
        Payload(Arc::from(text.as_bytes()))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&EncodedBytes(&self.0), f)
    }
}

/// Encoded event bytes as `Debug` shows them: their text, or their length when they are not
/// UTF-8.
struct EncodedBytes<'a>(&'a [u8]);

impl fmt::Debug for EncodedBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) => fmt::Debug::fmt(text, f),
            Err(_) => write!(f, "<{} bytes>", self.0.len()),
        }
    }
}

/// An event on its way into a store: everything but the stream, version and position, which the
/// store assigns.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The event's unique id.
    pub event_id: EventId,
    /// The stable name the event is stored under (see [`DomainEvent::event_type`]).
    pub event_type: Cow<'static, str>,
    /// The schema version of `payload`.
    pub schema_version: u32,
    /// The encoded event.
    pub payload: Payload,
    /// Where the event came from.
    pub metadata: Metadata,
}

impl NewEvent {
    /// Encodes `event` with a fresh id and the given metadata.
    pub fn encode<E: DomainEvent>(event: &E, metadata: Metadata) -> Result<Self, EncodeError> {
        Ok(NewEvent {
            event_id: EventId::new(),
            event_type: Cow::Borrowed(event.event_type()),
            schema_version: event.schema_version(),
            payload: event.encode()?,
            metadata,
        })
    }
}

/// An event as a store hands it back.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// The stream the event belongs to.
    pub stream: StreamId,
    /// Its version within the stream (1-based).
    pub version: Version,
    /// Its place in the global log.
    pub position: Position,
    /// The event's unique id.
    pub event_id: EventId,
    /// The stable name the event is stored under.
    pub event_type: Cow<'static, str>,
    /// The schema version the payload was written with.
    pub schema_version: u32,
    /// The encoded event.
    pub payload: Payload,
    /// Where the event came from.
    pub metadata: Metadata,
}

impl RecordedEvent {
    /// Decodes the payload into `E`; the error names this event's stream, version and type.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, crate::StoreError> {
        self.data().decode()
    }

    /// The part of the event that decoding needs, borrowed.
    pub fn data(&self) -> EventData<'_> {
        EventData {
            stream: &self.stream,
            version: self.version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            payload: self.payload.as_bytes(),
        }
    }
}

/// What decoding a stored event needs, borrowed from the store for the moment of one visit:
/// where it is (stream and version) and its type, schema version and payload, without the rest
/// of the envelope (id, position, metadata) that a rehydration never reads.
///
/// [`EventStore::visit_stream_data`](crate::EventStore::visit_stream_data) hands events out this
/// way, so that a store can select and lend only these columns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EventData<'a> {
    /// The stream the event belongs to.
    pub stream: &'a StreamId,
    /// Its version within the stream (1-based).
    pub version: Version,
    /// The stable name the event is stored under.
    pub event_type: &'a str,
    /// The schema version the payload was written with.
    pub schema_version: u32,
    /// The encoded event.
    pub payload: &'a [u8],
}

impl EventData<'_> {
    /// Decodes the payload into `E` (upcasting an older schema version as
    /// [`DomainEvent::decode`] does); the error names this event's stream, version and type.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, crate::StoreError> {
        E::decode(self.event_type, self.schema_version, self.payload).map_err(|source| {
            crate::StoreError::Decode {
                stream: self.stream.clone(),
                version: self.version,
                event_type: self.event_type.to_owned(),
                source,
            }
        })
    }
}

impl<'a> From<&'a RecordedEvent> for EventData<'a> {
    fn from(event: &'a RecordedEvent) -> Self {
        event.data()
    }
}

impl fmt::Debug for EventData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventData")
            .field("stream", self.stream)
            .field("version", &self.version)
            .field("event_type", &self.event_type)
            .field("schema_version", &self.schema_version)
            .field("payload", &EncodedBytes(self.payload))
            .finish()
    }
}

/// Describes one event type of a [`DomainEvent`] enum: its stored name and current schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTypeInfo {
    /// The stable name the event is stored under.
    pub name: &'static str,
    /// The schema version new events of this type are written with.
    pub version: u32,
    /// Former stored names that still decode into this type (`#[event(alias = "...")]`).
    pub aliases: &'static [&'static str],
}

/// Why an event could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode event `{event_type}`: {source}")]
pub struct EncodeError {
    /// The stored name of the event type.
    pub event_type: &'static str,
    /// What the encoder said.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Why a stored event could not be turned back into a typed event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No variant of the event enum is stored under this name.
    #[error("unknown event type `{event_type}`")]
    UnknownEventType {
        /// The stored name.
        event_type: String,
    },
    /// The stored schema version is newer than the code knows.
    #[error("unsupported schema version {found} (this code writes version {current})")]
    UnsupportedSchemaVersion {
        /// The stored schema version.
        found: u32,
        /// The version the current code writes.
        current: u32,
    },
    /// The payload (JSON) did not fit the event's fields.
    #[error("payload does not fit: {0}")]
    InvalidPayload(#[source] serde_json::Error),
    /// A binary payload did not fit the event's fields.
    #[error("{codec} payload does not fit: {source}")]
    InvalidBinaryPayload {
        /// The payload's codec.
        codec: crate::codec::Codec,
        /// What the decoder said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The payload is in a codec this build does not read.
    #[error(
        "the payload is {codec}, which this build reads only with the `{feature}` feature of cqrs-core: enable it"
    )]
    CodecNotEnabled {
        /// The payload's codec.
        codec: crate::codec::Codec,
        /// The feature that reads it.
        feature: &'static str,
    },
    /// An upcaster failed to convert the stored payload.
    #[error("upcasting from schema version {from_version} failed: {source}")]
    Upcast {
        /// The schema version the failing upcaster converts from.
        from_version: u32,
        /// What the upcaster said.
        #[source]
        source: crate::upcast::UpcastError,
    },
}

/// A domain event enum: stable stored names, schema versions, and the encoding to and from the
/// stored payload.
///
/// Implement it with `#[derive(DomainEvent)]`. The stored name of a variant defaults to the
/// variant's name and can be pinned with `#[event(name = "...")]`, so that renaming the Rust
/// variant does not change stored data.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a domain event",
    label = "this type does not implement `DomainEvent`",
    note = "add `#[derive(DomainEvent)]` (and `Serialize`, `Deserialize`) to the event enum"
)]
pub trait DomainEvent: Sized + Send + Sync + 'static {
    /// Every event type of this enum, in declaration order.
    const EVENT_TYPES: &'static [EventTypeInfo];

    /// The stable stored name of this event.
    fn event_type(&self) -> &'static str;

    /// The schema version this event is written with.
    fn schema_version(&self) -> u32;

    /// Encodes the event's fields (not its name) as the stored payload.
    fn encode(&self) -> Result<Payload, EncodeError>;

    /// Decodes a stored payload written under `event_type` with `schema_version`.
    fn decode(event_type: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError>;

    /// Whether events stored under `event_type` (a current name or a former one) decode into
    /// this enum. Readers of the global log use it to tell their events from others'.
    fn recognizes(event_type: &str) -> bool {
        Self::EVENT_TYPES
            .iter()
            .any(|info| info.name == event_type || info.aliases.contains(&event_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_validated() {
        assert_eq!(StreamId::new(""), Err(InvalidStreamId::Empty));
        let long = "x".repeat(MAX_STREAM_ID_LEN + 1);
        assert_eq!(
            StreamId::new(&long),
            Err(InvalidStreamId::TooLong {
                len: MAX_STREAM_ID_LEN + 1,
                max: MAX_STREAM_ID_LEN
            })
        );
        assert!(StreamId::new("x".repeat(MAX_STREAM_ID_LEN)).is_ok());
        assert_eq!(
            StreamId::new("show-1\n"),
            Err(InvalidStreamId::ControlCharacter {
                character: '\n',
                index: 6
            })
        );
        assert_eq!(
            StreamId::for_aggregate("show", "a\u{0}b"),
            Err(InvalidStreamId::ControlCharacter {
                character: '\0',
                index: 6
            })
        );
        assert_eq!(
            StreamId::for_aggregate("show", 42).map(|id| id.to_string()),
            Ok("show-42".into())
        );
        assert_eq!(
            StreamId::new("théâtre-1").map(|id| id.as_str().len()),
            Ok(11)
        );
        // DEL, and a control character outside ASCII (NEL) after non-ASCII text.
        assert_eq!(
            StreamId::new("show-\u{7f}"),
            Err(InvalidStreamId::ControlCharacter {
                character: '\u{7f}',
                index: 5
            })
        );
        assert_eq!(
            StreamId::for_aggregate("show", "é\u{85}"),
            Err(InvalidStreamId::ControlCharacter {
                character: '\u{85}',
                index: 7
            })
        );
    }

    #[test]
    fn an_id_whose_display_makes_a_stream_id_does_not_trip_the_shared_buffer() {
        struct Nested;
        impl fmt::Display for Nested {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let inner = StreamId::for_aggregate("inner", 7).map_err(|_| fmt::Error)?;
                write!(f, "of-{inner}")
            }
        }
        let outer = StreamId::for_aggregate("outer", Nested).expect("valid");
        assert_eq!(outer.as_str(), "outer-of-inner-7");
        // The buffer is reused afterwards and holds nothing of the earlier names.
        assert_eq!(
            StreamId::for_aggregate("show", 1).expect("valid").as_str(),
            "show-1"
        );
    }

    #[test]
    fn stream_ids_split_at_the_first_dash() {
        let split = |id: &str| {
            let stream = StreamId::new(id).expect("valid");
            (
                stream.aggregate().to_owned(),
                stream.aggregate_id().to_owned(),
            )
        };
        assert_eq!(split("show-42"), ("show".into(), "42".into()));
        assert_eq!(split("order-line-5"), ("order".into(), "line-5".into()));
        assert_eq!(split("lonely"), ("lonely".into(), String::new()));
        assert!(StreamId::new("show-1").expect("valid").is_of("show"));
        assert!(!StreamId::new("showroom-1").expect("valid").is_of("show"));
    }

    #[test]
    fn aggregate_names_cannot_make_two_aggregates_share_a_stream() {
        // The collision the rule exists for: `order-line` + `5` against `order` + `line-5`.
        assert_eq!(
            StreamId::for_aggregate("order-line", 5),
            Err(InvalidStreamId::AggregateName(
                InvalidAggregateName::Character {
                    name: "order-line".into(),
                    character: '-',
                }
            ))
        );
        let order = StreamId::for_aggregate("order", "line-5").expect("valid");
        assert_eq!(
            (order.aggregate(), order.aggregate_id()),
            ("order", "line-5")
        );
        for name in ["order_line", "billing.invoice", "Show2", &"x".repeat(64)] {
            assert_eq!(validate_aggregate_name(name), Ok(()), "{name}");
        }
        assert_eq!(
            validate_aggregate_name(""),
            Err(InvalidAggregateName::Empty)
        );
        assert!(matches!(
            validate_aggregate_name(&"x".repeat(65)),
            Err(InvalidAggregateName::TooLong {
                len: 65,
                max: 64,
                ..
            })
        ));
        for (name, character) in [("a b", ' '), ("théâtre", 'é'), ("a/b", '/')] {
            assert_eq!(
                validate_aggregate_name(name),
                Err(InvalidAggregateName::Character {
                    name: name.into(),
                    character
                })
            );
        }
        assert_eq!(
            StreamId::for_aggregate("order-line", 5)
                .expect_err("refused")
                .to_string(),
            "the aggregate name `order-line` contains '-': only ASCII letters, digits, `_` and \
             `.` are allowed, since `-` separates the name from the id in stream ids"
        );
    }

    #[test]
    fn empty_aggregate_ids_are_refused() {
        assert_eq!(
            StreamId::for_aggregate("show", ""),
            Err(InvalidStreamId::EmptyAggregateId {
                aggregate: "show".into()
            })
        );
        assert!(StreamId::for_aggregate("show", " ").is_ok());
    }

    #[test]
    fn stream_ids_are_validated_when_deserialized() {
        let ok: StreamId = serde_json::from_str("\"show-1\"").expect("valid");
        assert_eq!(ok.as_str(), "show-1");
        assert!(serde_json::from_str::<StreamId>("\"\"").is_err());
        assert!(serde_json::from_str::<StreamId>("\"a\\u0007\"").is_err());
    }

    #[test]
    fn command_ids_are_validated() {
        assert_eq!(CommandId::new(""), Err(InvalidCommandId::Empty));
        assert_eq!(
            CommandId::new("x".repeat(MAX_COMMAND_ID_LEN + 1)),
            Err(InvalidCommandId::TooLong {
                len: MAX_COMMAND_ID_LEN + 1,
                max: MAX_COMMAND_ID_LEN
            })
        );
        for (id, character, index) in [
            ("request\0", '\0', 7),
            ("a\nb", '\n', 1),
            ("é\u{7f}", '\u{7f}', 2),
            ("\u{9c}x", '\u{9c}', 0),
        ] {
            assert_eq!(
                CommandId::new(id),
                Err(InvalidCommandId::ControlCharacter { character, index }),
                "{id:?}"
            );
        }

        // The limit counts bytes: 128 two-byte characters fit, and one more byte does not.
        let longest = "é".repeat(MAX_COMMAND_ID_LEN / 2);
        assert_eq!(
            CommandId::new(&longest).map(|id| id.as_str().len()),
            Ok(MAX_COMMAND_ID_LEN)
        );
        assert_eq!(
            CommandId::new(format!("{longest}x")),
            Err(InvalidCommandId::TooLong {
                len: MAX_COMMAND_ID_LEN + 1,
                max: MAX_COMMAND_ID_LEN
            })
        );
        assert_eq!(
            CommandId::try_from("checkout/1/a b/0").map(|id| id.to_string()),
            Ok("checkout/1/a b/0".to_owned())
        );
        assert_eq!(
            CommandId::try_from(String::from("\t")),
            Err(InvalidCommandId::ControlCharacter {
                character: '\t',
                index: 0
            })
        );
        assert_eq!(CommandId::random().as_str().len(), 36);
    }

    #[test]
    fn invalid_command_ids_say_what_is_wrong() {
        assert_eq!(InvalidCommandId::Empty.to_string(), "command id is empty");
        assert_eq!(
            InvalidCommandId::TooLong { len: 300, max: 256 }.to_string(),
            "command id is 300 bytes long, the limit is 256"
        );
        assert_eq!(
            InvalidCommandId::ControlCharacter {
                character: '\0',
                index: 3
            }
            .to_string(),
            "command id contains the control character '\\0' at byte 3"
        );
    }

    #[test]
    fn command_ids_are_validated_when_deserialized() {
        let ok: CommandId = serde_json::from_str("\"request-1\"").expect("valid");
        assert_eq!(ok.as_str(), "request-1");
        assert_eq!(
            serde_json::to_string(&ok).expect("encodes"),
            "\"request-1\""
        );
        for refused in ["\"\"", "\"a\\u0000b\"", &format!("\"{}\"", "x".repeat(257))] {
            let error = serde_json::from_str::<CommandId>(refused).expect_err(refused);
            assert!(error.to_string().starts_with("command id "), "{error}");
        }
        let metadata = r#"{"correlation_id":null,"causation_id":null,"command_id":"",
            "timestamp":{"secs_since_epoch":0,"nanos_since_epoch":0},"headers":{}}"#;
        let error = serde_json::from_str::<Metadata>(metadata).expect_err("empty command id");
        assert!(error.to_string().contains("command id is empty"), "{error}");
    }

    #[test]
    fn metadata_round_trips_through_json() {
        let mut metadata = Metadata {
            correlation_id: Some(Uuid::from_u128(1)),
            causation_id: Some(Uuid::from_u128(2)),
            command_id: Some(CommandId::new("cmd").expect("valid command id")),
            ..Metadata::default()
        };
        metadata.headers.insert("tenant".into(), "acme".into());
        let json = serde_json::to_string(&metadata).expect("encodes");
        assert_eq!(
            serde_json::from_str::<Metadata>(&json).expect("decodes"),
            metadata
        );
    }

    /// An event with one type at schema version 2, whose version 1 stored a plain string.
    #[derive(Debug, PartialEq)]
    struct Renamed(String);

    impl DomainEvent for Renamed {
        const EVENT_TYPES: &'static [EventTypeInfo] = &[EventTypeInfo {
            name: "Renamed",
            version: 2,
            aliases: &[],
        }];

        fn event_type(&self) -> &'static str {
            "Renamed"
        }

        fn schema_version(&self) -> u32 {
            2
        }

        fn encode(&self) -> Result<Payload, EncodeError> {
            Ok(Payload::from(
                format!(r#"{{"name":{:?}}}"#, self.0).into_bytes(),
            ))
        }

        fn decode(
            event_type: &str,
            schema_version: u32,
            payload: &[u8],
        ) -> Result<Self, DecodeError> {
            if event_type != "Renamed" {
                return Err(DecodeError::UnknownEventType {
                    event_type: event_type.to_owned(),
                });
            }
            let value: serde_json::Value =
                serde_json::from_slice(payload).map_err(DecodeError::InvalidPayload)?;
            let name = match schema_version {
                1 => value.as_str(),
                2 => value.get("name").and_then(serde_json::Value::as_str),
                found => {
                    return Err(DecodeError::UnsupportedSchemaVersion { found, current: 2 });
                }
            };
            Ok(Renamed(name.unwrap_or_default().to_owned()))
        }
    }

    fn recorded(event_type: &'static str, schema_version: u32, payload: &str) -> RecordedEvent {
        RecordedEvent {
            stream: StreamId::new("show-1").expect("valid"),
            version: Version(3),
            position: Position(9),
            event_id: EventId::new(),
            event_type: Cow::Borrowed(event_type),
            schema_version,
            payload: payload.into(),
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn event_data_decodes_every_schema_version_as_the_recorded_event_does() {
        for (schema_version, payload) in [(1, r#""Ada""#), (2, r#"{"name":"Ada"}"#)] {
            let event = recorded("Renamed", schema_version, payload);
            let data = event.data();
            assert_eq!(
                data.decode::<Renamed>().expect("decodes"),
                Renamed("Ada".into())
            );
            assert_eq!(
                event.decode::<Renamed>().expect("decodes"),
                Renamed("Ada".into())
            );
        }
    }

    #[test]
    fn event_data_decode_errors_name_the_stream_version_and_type() {
        for event in [
            recorded("Closed", 1, "{}"),
            recorded("Renamed", 3, "{}"),
            recorded("Renamed", 2, "not json"),
        ] {
            let from_data = EventData::from(&event).decode::<Renamed>();
            let Err(crate::StoreError::Decode {
                stream,
                version,
                event_type,
                ..
            }) = &from_data
            else {
                panic!("not a decode error: {from_data:?}");
            };
            assert_eq!(
                (stream.as_str(), *version, event_type.as_str()),
                ("show-1", Version(3), &*event.event_type)
            );
            let from_event = event.decode::<Renamed>().expect_err("fails alike");
            assert_eq!(
                from_data.expect_err("fails").to_string(),
                from_event.to_string()
            );
        }
    }

    #[test]
    fn event_data_shows_its_payload_as_text() {
        let event = recorded("Renamed", 1, r#""Ada""#);
        let shown = format!("{:?}", event.data());
        assert!(shown.contains(r#"payload: "\"Ada\"""#), "{shown}");
        let binary = RecordedEvent {
            payload: Payload::from(vec![0xff, 0xfe]),
            ..event
        };
        assert!(format!("{:?}", binary.data()).contains("payload: <2 bytes>"));
    }
}
