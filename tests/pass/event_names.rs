//! `#[event(name = ..., version = ...)]`, every variant kind, field serde attributes.

use cqrs_core::prelude::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum AccountEvent {
    #[event(name = "account-opened")]
    Opened {
        owner: String,
    },
    #[event(version = 3)]
    Deposited(u64),
    #[event(name = "Moved", version = 2)]
    Transferred(String, u64),
    Closed,
    Tagged {
        #[serde(rename = "t", default)]
        tag: Option<String>,
    },
    #[event(name = "r#type")]
    r#Type {},
}

fn main() {
    let names: Vec<(&str, u32)> = AccountEvent::EVENT_TYPES
        .iter()
        .map(|info| (info.name, info.version))
        .collect();
    assert_eq!(
        names,
        [
            ("account-opened", 1),
            ("Deposited", 3),
            ("Moved", 2),
            ("Closed", 1),
            ("Tagged", 1),
            ("r#type", 1)
        ]
    );
}
