//! Payload codecs in a store: events of one type stored as JSON and as MessagePack, in an old and
//! the current schema version, load, project and upcast alike, on every store (the check runs in
//! the conformance suite).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::codec::{self, Codec};
use cqrs_core::event::Metadata;
use cqrs_core::prelude::*;
use cqrs_core::processor::Processor as _;
use cqrs_core::projection::{EventContext, MemoryReadModel, Projection, Projector};
use cqrs_core::upcast::{UpcastError, Value};
use cqrs_core::{EventStore, ExpectedVersion, NewEvent};

/// The gauge's events as the current code writes them, in each codec: version 2 of `Read`
/// stores kilowatt-hours as `kwh`.
macro_rules! gauge_events {
    ($name:ident $(, #[$codec:meta])?) => {
        #[doc = concat!("A gauge's events, current schema (", stringify!($name), ").")]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
        $(#[$codec])?
        pub enum $name {
            /// A reading.
            #[event(name = "Read", version = 2, upcast(from = 1, with = kwh_from_wh))]
            Read {
                /// The consumption read.
                kwh: u64,
            },
            /// The gauge was reset to zero.
            Reset,
        }
    };
}

gauge_events!(JsonGaugeEvent);
gauge_events!(BinaryGaugeEvent, #[domain_event(codec = msgpack)]);

/// What an older release wrote, in each codec: version 1 of `Read` stored watt-hours as `wh`.
macro_rules! old_gauge_events {
    ($name:ident $(, #[$codec:meta])?) => {
        #[doc = concat!("A gauge's events, schema version 1 (", stringify!($name), ").")]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
        $(#[$codec])?
        pub enum $name {
            /// A reading, in watt-hours.
            #[event(name = "Read")]
            Read {
                /// The consumption read.
                wh: u64,
            },
        }
    };
}

old_gauge_events!(OldJsonGaugeEvent);
old_gauge_events!(OldBinaryGaugeEvent, #[domain_event(codec = msgpack)]);

/// v1 -> v2: watt-hours became kilowatt-hours. The same function serves both codecs: it sees the
/// payload as JSON whatever it was stored as.
fn kwh_from_wh(mut payload: Value) -> Result<Value, UpcastError> {
    let fields = payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("not an object"))?;
    let wh = fields
        .remove("wh")
        .and_then(|wh| wh.as_u64())
        .ok_or_else(|| UpcastError::new("no `wh`"))?;
    fields.insert("kwh".into(), Value::from(wh / 1000));
    Ok(payload)
}

/// A gauge whose events are written as MessagePack.
#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "gauge", event = BinaryGaugeEvent, error = Infallible)]
pub struct Gauge {
    kwh: u64,
}

#[command_handler]
impl Gauge {
    /// Records a reading.
    pub fn read(&self, kwh: u64) -> Result<BinaryGaugeEvent, Infallible> {
        Ok(BinaryGaugeEvent::Read { kwh })
    }
}

impl Gauge {
    fn apply(&mut self, event: BinaryGaugeEvent) {
        match event {
            BinaryGaugeEvent::Read { kwh } => self.kwh += kwh,
            BinaryGaugeEvent::Reset => self.kwh = 0,
        }
    }
}

/// The total read and the readings counted, per the JSON-codec enum (it reads both codecs too).
struct Totals;

impl Projection for Totals {
    const NAME: &'static str = "gauge_totals";
    const AGGREGATES: &'static [&'static str] = &["gauge"];
    type Event = JsonGaugeEvent;
    type ReadModel = (u64, u32);
    type Error = Infallible;

    fn apply(
        &self,
        totals: &mut Self::ReadModel,
        event: JsonGaugeEvent,
        _: &EventContext<'_>,
    ) -> Result<(), Infallible> {
        match event {
            JsonGaugeEvent::Read { kwh } => {
                totals.0 += kwh;
                totals.1 += 1;
            }
            JsonGaugeEvent::Reset => totals.0 = 0,
        }
        Ok(())
    }
}

fn encoded(event: &impl DomainEvent) -> NewEvent {
    NewEvent::encode(event, Metadata::default()).expect("the suite's events encode")
}

/// A stream holding `Read` events of both codecs and both schema versions (and a `Reset` of each
/// codec) loads into the aggregate through the upcaster, takes a new MessagePack event, feeds a
/// projection typed on the JSON enum, and shows every payload as JSON.
pub async fn stores_hold_both_codecs<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let gauge = StreamId::for_aggregate("gauge", 1).expect("valid stream id");
    let history = vec![
        encoded(&OldJsonGaugeEvent::Read { wh: 5_000 }),
        encoded(&OldBinaryGaugeEvent::Read { wh: 7_000 }),
        encoded(&JsonGaugeEvent::Reset),
        encoded(&JsonGaugeEvent::Read { kwh: 1 }),
        encoded(&BinaryGaugeEvent::Read { kwh: 2 }),
        encoded(&OldBinaryGaugeEvent::Read { wh: 4_000 }),
        encoded(&BinaryGaugeEvent::Reset),
        encoded(&OldJsonGaugeEvent::Read { wh: 3_000 }),
        encoded(&BinaryGaugeEvent::Read { kwh: 20 }),
    ];
    store
        .append(&gauge, ExpectedVersion::NoStream, history)
        .await
        .expect("appends");

    let stored = store
        .read_stream(&gauge, Version(1), usize::MAX)
        .await
        .expect("reads");
    let codecs: Vec<Codec> = stored
        .iter()
        .map(|event| Codec::of(event.payload.as_bytes()))
        .collect();
    use Codec::{Json, MessagePack};
    assert_eq!(
        codecs,
        [
            Json,
            MessagePack,
            Json,
            Json,
            MessagePack,
            MessagePack,
            MessagePack,
            Json,
            MessagePack
        ],
        "each payload records its codec"
    );
    // Whatever the codec, a payload reads as the JSON an operator is shown.
    let shown: Vec<serde_json::Value> = stored
        .iter()
        .map(|event| codec::to_json(event.payload.as_bytes()).expect("reads as JSON"))
        .collect();
    assert_eq!(shown[0], serde_json::json!({ "wh": 5000 }));
    assert_eq!(shown[1], serde_json::json!({ "wh": 7000 }));
    assert_eq!(shown[4], serde_json::json!({ "kwh": 2 }));
    assert_eq!(shown[6], serde_json::Value::Null);

    // Both enums decode every event, whichever codec wrote it.
    for event in &stored {
        let json: JsonGaugeEvent = event.decode().expect("the JSON enum decodes it");
        let binary: BinaryGaugeEvent = event.decode().expect("the MessagePack enum decodes it");
        assert_eq!(
            serde_json::to_value(&json).expect("encodes"),
            serde_json::to_value(&binary).expect("encodes")
        );
    }

    // The aggregate loads through the upcaster: after the last reset, 3 kWh (v1, JSON) + 20.
    let gauges: Repository<Gauge, _> = Repository::builder(Arc::clone(&store)).cache(0).build();
    let loaded = gauges.load(1).await.expect("loads");
    assert_eq!((loaded.state.kwh, loaded.version), (23, Version(9)));
    gauges
        .execute(1, GaugeCommand::Read { kwh: 4 })
        .await
        .expect("executes");
    let written = store
        .read_stream(&gauge, Version(10), usize::MAX)
        .await
        .expect("reads");
    assert_eq!(written.len(), 1);
    assert_eq!(Codec::of(written[0].payload.as_bytes()), MessagePack);
    assert_eq!(gauges.load(1).await.expect("loads").state.kwh, 27);

    // A projection typed on the JSON enum follows the log across both codecs and versions.
    let model = MemoryReadModel::new();
    let head = store.head().await.expect("head");
    let handle = Projector::new(Totals, Arc::clone(&store), model.clone())
        .runner()
        .spawn();
    handle
        .wait_for(head, Duration::from_secs(10))
        .await
        .expect("the projection catches up");
    assert_eq!(model.read(Clone::clone), (27, 8));
    handle.shutdown().await;
}
