//! Upcasting inside `#[derive(DomainEvent)]`: chains of steps, steps without an upcaster, former
//! names, every variant shape, and failures.

use cqrs_core::DecodeError;
use cqrs_core::prelude::*;
use cqrs_core::upcast::{UpcastError, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum AccountEvent {
    /// v1 `{"owner"}`, v2 added `currency` with a default (no upcaster), v3 renamed `owner` to
    /// `holder`, v4 wrapped the currency in an object.
    #[event(
        version = 4,
        alias = "AccountCreated",
        alias = "Opened",
        upcast(from = 2, with = rename_owner),
        upcast(from = 3, with = wrap_currency)
    )]
    AccountOpened { holder: String, currency: Currency },
    /// A newtype variant whose v1 stored cents as a string.
    #[event(version = 2, upcast(from = 1, with = cents_from_string))]
    Deposited(u64),
    /// A unit variant whose v1 stored `{}`.
    #[event(version = 2, upcast(from = 1, with = to_null))]
    Closed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Currency {
    code: String,
}

fn fields(payload: &mut Value) -> Result<&mut serde_json::Map<String, Value>, UpcastError> {
    payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("not an object"))
}

fn rename_owner(mut payload: Value) -> Result<Value, UpcastError> {
    let object = fields(&mut payload)?;
    let owner = object
        .remove("owner")
        .ok_or_else(|| UpcastError::new("no owner"))?;
    object.insert("holder".into(), owner);
    // Version 2 stored no currency when it was the default.
    object
        .entry("currency")
        .or_insert_with(|| Value::from("EUR"));
    Ok(payload)
}

fn wrap_currency(mut payload: Value) -> Result<Value, UpcastError> {
    let object = fields(&mut payload)?;
    let code = object
        .remove("currency")
        .ok_or_else(|| UpcastError::new("no currency"))?;
    object.insert("currency".into(), serde_json::json!({ "code": code }));
    Ok(payload)
}

fn cents_from_string(payload: Value) -> Result<Value, UpcastError> {
    let text = payload
        .as_str()
        .ok_or_else(|| UpcastError::new("v1 cents are a string"))?;
    let cents: u64 = text.parse().map_err(UpcastError::from_source)?;
    Ok(Value::from(cents))
}

fn to_null(_: Value) -> Result<Value, UpcastError> {
    Ok(Value::Null)
}

fn opened(holder: &str, code: &str) -> AccountEvent {
    AccountEvent::AccountOpened {
        holder: holder.into(),
        currency: Currency { code: code.into() },
    }
}

#[test]
fn every_older_version_reaches_the_current_shape() {
    let decode =
        |name, version, payload: &str| AccountEvent::decode(name, version, payload.as_bytes());
    assert_eq!(
        decode("AccountOpened", 1, r#"{"owner":"ann"}"#).expect("v1"),
        opened("ann", "EUR")
    );
    assert_eq!(
        decode("AccountOpened", 2, r#"{"owner":"bo","currency":"USD"}"#).expect("v2"),
        opened("bo", "USD")
    );
    assert_eq!(
        decode("AccountOpened", 3, r#"{"holder":"cy","currency":"GBP"}"#).expect("v3"),
        opened("cy", "GBP")
    );
    assert_eq!(
        decode(
            "AccountOpened",
            4,
            r#"{"holder":"di","currency":{"code":"CHF"}}"#
        )
        .expect("v4"),
        opened("di", "CHF")
    );
}

#[test]
fn former_names_decode_into_the_renamed_variant() {
    for name in ["AccountCreated", "Opened"] {
        let event = AccountEvent::decode(name, 1, br#"{"owner":"ed"}"#).expect("decodes");
        assert_eq!(event, opened("ed", "EUR"));
    }
    // New events are written under the current name only.
    assert_eq!(opened("fa", "EUR").event_type(), "AccountOpened");
    assert_eq!(opened("fa", "EUR").schema_version(), 4);
}

#[test]
fn newtype_and_unit_variants_are_upcast_too() {
    assert_eq!(
        AccountEvent::decode("Deposited", 1, br#""1250""#).expect("v1"),
        AccountEvent::Deposited(1250)
    );
    assert_eq!(
        AccountEvent::decode("Deposited", 2, b"1250").expect("v2"),
        AccountEvent::Deposited(1250)
    );
    assert_eq!(
        AccountEvent::decode("Closed", 1, b"{}").expect("v1"),
        AccountEvent::Closed
    );
    assert_eq!(
        AccountEvent::decode("Closed", 2, b"null").expect("v2"),
        AccountEvent::Closed
    );
}

#[test]
fn a_failing_upcaster_names_the_version_it_started_from() {
    let error =
        AccountEvent::decode("AccountOpened", 1, br#"{"holder":"no owner"}"#).expect_err("fails");
    match error {
        DecodeError::Upcast {
            from_version,
            source,
        } => {
            assert_eq!(from_version, 2);
            assert_eq!(source.to_string(), "no owner");
        }
        other => panic!("expected an upcast error, got {other:?}"),
    }
    let error = AccountEvent::decode("Deposited", 1, br#""lots""#).expect_err("fails");
    assert!(
        matches!(
            error,
            DecodeError::Upcast {
                from_version: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("upcasting from schema version 1 failed"),
        "{error}"
    );
}

#[test]
fn an_upcast_payload_that_still_does_not_fit_is_invalid() {
    let error = AccountEvent::decode("AccountOpened", 3, br#"{"holder":5,"currency":"EUR"}"#)
        .expect_err("fails");
    assert!(matches!(error, DecodeError::InvalidPayload(_)), "{error:?}");
    let error = AccountEvent::decode("AccountOpened", 1, b"[1,2]").expect_err("fails");
    assert!(
        matches!(
            error,
            DecodeError::Upcast {
                from_version: 2,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn former_names_are_recognized_by_log_readers() {
    assert!(AccountEvent::recognizes("AccountOpened"));
    assert!(AccountEvent::recognizes("AccountCreated"));
    assert!(AccountEvent::recognizes("Opened"));
    assert!(AccountEvent::recognizes("Closed"));
    assert!(!AccountEvent::recognizes("Withdrawn"));
    let opened = &AccountEvent::EVENT_TYPES[0];
    assert_eq!(
        (opened.name, opened.version, opened.aliases),
        ("AccountOpened", 4, &["AccountCreated", "Opened"][..])
    );
}
