//! `#[derive(DomainEvent)]` read into a model, validated in one pass that collects every error.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Lit, LitStr, Variant};

use crate::attr::{self, Setting};
use crate::ctxt::Ctxt;

/// The attribute read on variants.
const EVENT: &str = "event";
/// `name = "SeatsReserved"`: the stored name of the variant's events.
const NAME: &str = "name";
/// `version = 2`: the schema version the variant's events are written with.
const VERSION: &str = "version";
/// Every key `#[event(...)]` accepts.
const KEYS: &[&str] = &[NAME, VERSION];

/// The schema version of a variant without `#[event(version = ...)]`.
const DEFAULT_VERSION: u32 = 1;

/// A validated event enum.
pub(super) struct EventEnum<'a> {
    pub(super) original: &'a DeriveInput,
    pub(super) variants: Vec<EventVariant<'a>>,
}

/// One variant: one event type.
pub(super) struct EventVariant<'a> {
    pub(super) original: &'a Variant,
    /// The stored name.
    pub(super) name: String,
    /// The schema version it is written with.
    pub(super) version: u32,
}

/// Reads and validates the derive input; on error, every problem found, combined.
pub(super) fn read(input: &DeriveInput) -> syn::Result<EventEnum<'_>> {
    let ctxt = Ctxt::new();

    let data = match &input.data {
        Data::Enum(data) => Some(data),
        Data::Struct(data) => {
            ctxt.error_spanned_by(
                data.struct_token,
                "`#[derive(DomainEvent)]` goes on an enum with one variant per event: write `enum` here",
            );
            None
        }
        Data::Union(data) => {
            ctxt.error_spanned_by(
                data.union_token,
                "`#[derive(DomainEvent)]` goes on an enum with one variant per event: write `enum` here",
            );
            None
        }
    };

    if !input.generics.params.is_empty() {
        ctxt.error_spanned_by(
            &input.generics,
            "an event enum cannot be generic: stored events decode into one concrete type, remove the parameters",
        );
    }
    for attribute in input.attrs.iter().filter(|a| a.path().is_ident(EVENT)) {
        ctxt.error_spanned_by(
            attribute,
            "`#[event(...)]` goes on a variant, not on the enum: move it to the variant it describes",
        );
    }

    let mut variants = Vec::new();
    // Stored name -> the variant that took it first.
    let mut taken: HashMap<String, &Variant> = HashMap::new();
    for variant in data.map(|data| data.variants.iter()).into_iter().flatten() {
        let Some((name, name_span, version)) = read_variant(&ctxt, variant) else {
            continue;
        };
        if let Some(first) = taken.get(&name) {
            ctxt.syn_error(syn::Error::new(
                name_span,
                format!(
                    "event type name `{name}` is already used by variant `{}`: give one of them another name with `#[event(name = \"...\")]`",
                    first.ident
                ),
            ));
            continue;
        }
        taken.insert(name.clone(), variant);
        variants.push(EventVariant {
            original: variant,
            name,
            version,
        });
    }

    ctxt.check()?;
    Ok(EventEnum {
        original: input,
        variants,
    })
}

/// The stored name (and where it was written), and the version of one variant.
fn read_variant(ctxt: &Ctxt, variant: &Variant) -> Option<(String, Span, u32)> {
    let mut name: Setting<'_, LitStr> = Setting::new(ctxt, EVENT, NAME);
    let mut version = Setting::new(ctxt, EVENT, VERSION);
    let mut readable = true;
    for attribute in variant.attrs.iter().filter(|a| a.path().is_ident(EVENT)) {
        let parsed = attribute.parse_nested_meta(|meta| {
            if meta.path.is_ident(NAME) {
                match meta.value()?.parse::<Lit>()? {
                    Lit::Str(literal) => name.set(&meta.path, literal),
                    other => ctxt.error_spanned_by(
                        other,
                        "`name` takes a string: write `name = \"SeatsReserved\"`",
                    ),
                }
            } else if meta.path.is_ident(VERSION) {
                let literal: Lit = meta.value()?.parse()?;
                if let Some(value) = attr::positive_u32(ctxt, VERSION, &literal) {
                    version.set(&meta.path, value);
                }
            } else {
                attr::unknown_key(ctxt, &meta, EVENT, KEYS)?;
            }
            Ok(())
        });
        if let Err(error) = parsed {
            ctxt.syn_error(error);
            readable = false;
        }
    }
    let (name, span) = match name.get() {
        Some(literal) => {
            let value = literal.value();
            if value.is_empty() || value.chars().any(char::is_control) {
                ctxt.error_spanned_by(
                    &literal,
                    "an event type name is stored with every event: write a non-empty name without control characters",
                );
                return None;
            }
            (value, literal.span())
        }
        None => (variant.ident.unraw().to_string(), variant.ident.span()),
    };
    let version = version.get().unwrap_or(DEFAULT_VERSION);
    readable.then_some((name, span, version))
}
