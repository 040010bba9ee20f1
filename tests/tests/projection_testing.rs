//! Given / then for projections, and a read model fed by two aggregate types (a product list
//! fed by vendor and product events), routed by the stream's aggregate name.

use std::collections::BTreeMap;
use std::time::Duration;

use cqrs_core::event::{Metadata, NewEvent};
use cqrs_core::prelude::*;
use cqrs_core::processor::{FailureKind, Processor as _};
use cqrs_core::projection::testing::ProjectionTest;
use cqrs_core::projection::{
    EventContext, MemoryReadModel, Projection, ProjectionEvent, Projector, aggregate_of,
};
use cqrs_core::{EventId, EventStore, ExpectedVersion, RecordedEvent, StoreError};
use cqrs_examples::show::ShowEvent;
use cqrs_memstore::MemStore;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum VendorEvent {
    Registered { name: String },
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ProductEvent {
    // The same stored name as the vendor's: routing by aggregate keeps them apart.
    Registered { vendor: String, title: String },
    Renamed { title: String },
}

enum CatalogEvent {
    Vendor(VendorEvent),
    Product(ProductEvent),
}

impl ProjectionEvent for CatalogEvent {
    fn route(event: &RecordedEvent) -> Result<Option<Self>, StoreError> {
        Ok(match aggregate_of(&event.stream) {
            "vendor" => Some(CatalogEvent::Vendor(event.decode()?)),
            "product" => Some(CatalogEvent::Product(event.decode()?)),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Listing {
    title: String,
    vendor: String,
    vendor_name: String,
}

/// Products on sale, by product id; a blocked vendor's products leave the list.
#[derive(Debug, Clone, PartialEq, Default)]
struct Catalog {
    vendors: BTreeMap<String, String>,
    listings: BTreeMap<String, Listing>,
}

#[derive(Debug, thiserror::Error)]
enum CatalogError {
    #[error("product `{0}` was renamed before it was registered")]
    UnknownProduct(String),
}

struct ProductList;

impl Projection for ProductList {
    const NAME: &'static str = "product_list";
    const AGGREGATES: &'static [&'static str] = &["vendor", "product"];
    type Event = CatalogEvent;
    type ReadModel = Catalog;
    type Error = CatalogError;

    fn apply(
        &self,
        catalog: &mut Catalog,
        event: CatalogEvent,
        context: &EventContext<'_>,
    ) -> Result<(), CatalogError> {
        let id = context.aggregate_id().to_owned();
        match event {
            CatalogEvent::Vendor(VendorEvent::Registered { name }) => {
                catalog.vendors.insert(id, name);
            }
            CatalogEvent::Vendor(VendorEvent::Blocked) => {
                catalog.listings.retain(|_, listing| listing.vendor != id);
            }
            CatalogEvent::Product(ProductEvent::Registered { vendor, title }) => {
                let vendor_name = catalog.vendors.get(&vendor).cloned().unwrap_or_default();
                catalog.listings.insert(
                    id,
                    Listing {
                        title,
                        vendor,
                        vendor_name,
                    },
                );
            }
            CatalogEvent::Product(ProductEvent::Renamed { title }) => {
                let listing = catalog
                    .listings
                    .get_mut(&id)
                    .ok_or_else(|| CatalogError::UnknownProduct(id.clone()))?;
                listing.title = title;
            }
        }
        Ok(())
    }
}

fn encode(event: &impl DomainEvent) -> NewEvent {
    NewEvent::encode(event, Metadata::default()).expect("encodes")
}

fn listing(title: &str, vendor: &str, vendor_name: &str) -> Listing {
    Listing {
        title: title.into(),
        vendor: vendor.into(),
        vendor_name: vendor_name.into(),
    }
}

fn product(vendor: &str, title: &str) -> ProductEvent {
    ProductEvent::Registered {
        vendor: vendor.into(),
        title: title.into(),
    }
}

#[test]
fn given_events_of_two_aggregates_then_the_read_model_equals_this() {
    ProductList
        .given(
            "vendor-acme",
            [VendorEvent::Registered {
                name: "Acme".into(),
            }],
        )
        .given(
            "vendor-bolt",
            [VendorEvent::Registered {
                name: "Bolt".into(),
            }],
        )
        .given("product-1", [product("acme", "Anvil")])
        .given("product-2", [product("bolt", "Bolt cutter")])
        .given(
            "product-1",
            [ProductEvent::Renamed {
                title: "Heavy anvil".into(),
            }],
        )
        .given("show-1", [ShowEvent::Scheduled { capacity: 3 }])
        .then_expect(Catalog {
            vendors: BTreeMap::from([
                ("acme".into(), "Acme".into()),
                ("bolt".into(), "Bolt".into()),
            ]),
            listings: BTreeMap::from([
                ("1".into(), listing("Heavy anvil", "acme", "Acme")),
                ("2".into(), listing("Bolt cutter", "bolt", "Bolt")),
            ]),
        });
}

#[test]
fn a_blocked_vendor_takes_its_products_off_the_list() {
    ProductList
        .given(
            "vendor-acme",
            [VendorEvent::Registered {
                name: "Acme".into(),
            }],
        )
        .given("product-1", [product("acme", "Anvil")])
        .given("product-2", [product("other", "Rope")])
        .given("vendor-acme", [VendorEvent::Blocked])
        .then_expect(Catalog {
            vendors: BTreeMap::from([("acme".into(), "Acme".into())]),
            listings: BTreeMap::from([("2".into(), listing("Rope", "other", ""))]),
        });
}

#[test]
#[should_panic(expected = "read models differ\n--- expected\n+++ actual\n")]
fn a_different_read_model_fails_with_a_diff() {
    ProductList
        .given("product-1", [product("acme", "Anvil")])
        .then_expect(Catalog::default());
}

#[test]
fn the_diff_shows_the_differing_lines() {
    let failure = std::panic::catch_unwind(|| {
        ProductList
            .given("product-1", [product("acme", "Anvil")])
            .then_expect(Catalog {
                vendors: BTreeMap::new(),
                listings: BTreeMap::from([("1".into(), listing("Hammer", "acme", ""))]),
            });
    })
    .expect_err("fails");
    let message = failure
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(
        message.contains("-             title: \"Hammer\""),
        "{message}"
    );
    assert!(
        message.contains("+             title: \"Anvil\""),
        "{message}"
    );
}

#[test]
#[should_panic(expected = "product `9` was renamed before it was registered")]
fn a_failing_event_fails_the_expectation_with_its_error() {
    ProductList
        .given("product-9", [ProductEvent::Renamed { title: "?".into() }])
        .then_expect(Catalog::default());
}

#[test]
fn failures_are_listed_for_assertions_of_your_own() {
    let mut given = ProductList.given("product-1", [product("acme", "Anvil")]);
    given.given_recorded(RecordedEvent {
        stream: StreamId::new("vendor-x").expect("valid"),
        version: Version(1),
        position: cqrs_core::Position(2),
        event_id: EventId::new(),
        event_type: "Registered".into(),
        schema_version: 1,
        payload: "{}".into(),
        metadata: Metadata::default(),
    });
    assert_eq!(given.failures().len(), 1);
    assert_eq!(given.failures()[0].kind, FailureKind::Decode);
    assert_eq!(given.read_model().listings.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_routes_events_of_both_aggregates_from_the_log() {
    let store = MemStore::new();
    let append = async |stream: &str, event: NewEvent| {
        let stream = StreamId::new(stream).expect("valid");
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .expect("appends")
    };
    let vendor = VendorEvent::Registered {
        name: "Acme".into(),
    };
    append("vendor-acme", encode(&vendor)).await;
    append("product-1", encode(&product("acme", "Anvil"))).await;
    let receipt = append("show-1", encode(&ShowEvent::Scheduled { capacity: 1 })).await;

    let model = MemoryReadModel::new();
    let handle = Projector::new(ProductList, store.clone(), model.clone())
        .runner()
        .spawn();
    handle
        .wait_for(receipt.position, Duration::from_secs(10))
        .await
        .expect("catches up");
    assert_eq!(
        model.read(|catalog| catalog.listings.get("1").cloned()),
        Some(listing("Anvil", "acme", "Acme"))
    );
    handle.shutdown().await;
}
