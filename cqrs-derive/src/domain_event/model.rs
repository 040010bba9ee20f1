//! `#[derive(DomainEvent)]` read into a model, validated in one pass that collects every error.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Lit, LitStr, Variant};

use crate::attr::{self, Setting};
use crate::ctxt::Ctxt;

/// The attribute read on variants.
const EVENT: &str = "event";
/// `name = "SeatsReserved"`: the stored name of the variant's events.
const NAME: &str = "name";
/// `version = 2`: the schema version the variant's events are written with.
const VERSION: &str = "version";
/// `alias = "SeatsBooked"`: a former stored name that still decodes into the variant.
const ALIAS: &str = "alias";
/// `upcast(from = 1, with = path)`: turns a stored payload of version `from` into `from + 1`.
const UPCAST: &str = "upcast";
/// `from = 1` inside `upcast(...)`.
const UPCAST_FROM: &str = "from";
/// `with = path::to::function` inside `upcast(...)`.
const UPCAST_WITH: &str = "with";
/// Every key `#[event(...)]` accepts.
const KEYS: &[&str] = &[NAME, VERSION, ALIAS, UPCAST];
/// Every key `upcast(...)` accepts.
const UPCAST_KEYS: &[&str] = &[UPCAST_FROM, UPCAST_WITH];

/// The attribute read on the enum.
const DOMAIN_EVENT: &str = "domain_event";
/// `codec = msgpack`: the codec the enum's payloads are written with.
const CODEC: &str = "codec";
/// Every key `#[domain_event(...)]` accepts.
const ENUM_KEYS: &[&str] = &[CODEC];

/// The schema version of a variant without `#[event(version = ...)]`.
const DEFAULT_VERSION: u32 = 1;

/// A validated event enum.
pub(super) struct EventEnum<'a> {
    pub(super) original: &'a DeriveInput,
    pub(super) variants: Vec<EventVariant<'a>>,
    pub(super) codec: Codec,
}

/// The codec new payloads are written with (every codec is read).
pub(super) enum Codec {
    Json,
    /// Where `msgpack` was written, for the error when the feature is off.
    MessagePack(Span),
}

/// One variant: one event type.
pub(super) struct EventVariant<'a> {
    pub(super) original: &'a Variant,
    /// The stored name.
    pub(super) name: String,
    /// The schema version it is written with.
    pub(super) version: u32,
    /// Former stored names that decode into this variant.
    pub(super) aliases: Vec<String>,
    /// `(from, upcaster)`: each turns a payload of version `from` into `from + 1`.
    pub(super) upcasters: Vec<(u32, syn::Path)>,
}

/// What `#[event(...)]` says about one variant.
struct VariantSettings {
    name: String,
    name_span: Span,
    version: u32,
    aliases: Vec<(String, Span)>,
    upcasters: Vec<(u32, syn::Path)>,
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

    let codec = read_codec(&ctxt, input);

    let mut variants = Vec::new();
    // Stored name -> the variant that took it first.
    let mut taken: HashMap<String, &Variant> = HashMap::new();
    for variant in data.map(|data| data.variants.iter()).into_iter().flatten() {
        let Some(settings) = read_variant(&ctxt, variant) else {
            continue;
        };
        let mut clash = false;
        let names = std::iter::once((&settings.name, settings.name_span))
            .chain(settings.aliases.iter().map(|(alias, span)| (alias, *span)));
        for (name, span) in names {
            if let Some(first) = taken.get(name) {
                ctxt.syn_error(syn::Error::new(
                    span,
                    format!(
                        "event type name `{name}` is already used by variant `{}`: give one of them another name with `#[event(name = \"...\")]`",
                        first.ident
                    ),
                ));
                clash = true;
            } else {
                taken.insert(name.clone(), variant);
            }
        }
        if clash {
            continue;
        }
        variants.push(EventVariant {
            original: variant,
            name: settings.name,
            version: settings.version,
            aliases: settings
                .aliases
                .into_iter()
                .map(|(alias, _)| alias)
                .collect(),
            upcasters: settings.upcasters,
        });
    }

    ctxt.check()?;
    Ok(EventEnum {
        original: input,
        variants,
        codec,
    })
}

/// `#[domain_event(codec = json | msgpack)]` on the enum; JSON when absent.
fn read_codec(ctxt: &Ctxt, input: &DeriveInput) -> Codec {
    let mut codec: Setting<'_, Codec> = Setting::new(ctxt, DOMAIN_EVENT, CODEC);
    for attribute in input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident(DOMAIN_EVENT))
    {
        let parsed = attribute.parse_nested_meta(|meta| {
            if meta.path.is_ident(CODEC) {
                let value: syn::Ident = meta.value()?.call(syn::Ident::parse_any)?;
                match value.to_string().as_str() {
                    "json" => codec.set(&meta.path, Codec::Json),
                    "msgpack" => codec.set(&meta.path, Codec::MessagePack(value.span())),
                    other => ctxt.error_spanned_by(
                        &value,
                        format!(
                            "unknown codec `{other}`: write `codec = json` (the default) or `codec = msgpack`"
                        ),
                    ),
                }
            } else {
                attr::unknown_key(ctxt, &meta, DOMAIN_EVENT, ENUM_KEYS)?;
            }
            Ok(())
        });
        if let Err(error) = parsed {
            ctxt.syn_error(error);
        }
    }
    codec.get().unwrap_or(Codec::Json)
}

/// The stored name (and where it was written), version, aliases and upcasters of one variant.
fn read_variant(ctxt: &Ctxt, variant: &Variant) -> Option<VariantSettings> {
    let mut name: Setting<'_, LitStr> = Setting::new(ctxt, EVENT, NAME);
    let mut version = Setting::new(ctxt, EVENT, VERSION);
    let mut aliases: Vec<LitStr> = Vec::new();
    // `(from, where from was written, upcaster)`.
    let mut upcasters: Vec<(u32, Span, syn::Path)> = Vec::new();
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
            } else if meta.path.is_ident(ALIAS) {
                match meta.value()?.parse::<syn::Expr>()? {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: Lit::Str(literal),
                        ..
                    }) => aliases.push(literal),
                    other => ctxt.error_spanned_by(
                        other,
                        "`alias` takes the former stored name as a string: write `alias = \"SeatsBooked\"`",
                    ),
                }
            } else if meta.path.is_ident(UPCAST) {
                if let Some(upcaster) = read_upcast(ctxt, &meta)? {
                    upcasters.push(upcaster);
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
    let mut aliases_read = Vec::new();
    for alias in aliases {
        let value = alias.value();
        if value.is_empty() || value.chars().any(char::is_control) {
            ctxt.error_spanned_by(
                &alias,
                "an alias is a former stored name: write a non-empty name without control characters",
            );
            readable = false;
        } else {
            aliases_read.push((value, alias.span()));
        }
    }
    let mut upcasters_read: Vec<(u32, syn::Path)> = Vec::new();
    for (from, span, path) in upcasters {
        if from >= version {
            ctxt.syn_error(syn::Error::new(
                span,
                format!(
                    "an upcaster converts an older schema version to the next one: `from` must be below the variant's version {version} (raise `version` or lower `from`)"
                ),
            ));
            readable = false;
        } else if upcasters_read.iter().any(|(earlier, _)| *earlier == from) {
            ctxt.syn_error(syn::Error::new(
                span,
                format!("an upcaster from version {from} is already declared: keep one `upcast(from = {from}, ...)`"),
            ));
            readable = false;
        } else {
            upcasters_read.push((from, path));
        }
    }
    readable.then_some(VariantSettings {
        name,
        name_span: span,
        version,
        aliases: aliases_read,
        upcasters: upcasters_read,
    })
}

/// `upcast(from = 1, with = path)`: the version it converts from, where that was written, and the
/// function.
fn read_upcast(
    ctxt: &Ctxt,
    meta: &syn::meta::ParseNestedMeta<'_>,
) -> syn::Result<Option<(u32, Span, syn::Path)>> {
    let mut from = Setting::new(ctxt, UPCAST, UPCAST_FROM);
    let mut with: Setting<'_, syn::Path> = Setting::new(ctxt, UPCAST, UPCAST_WITH);
    let mut from_span = meta.path.span();
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident(UPCAST_FROM) {
            let literal: Lit = inner.value()?.parse()?;
            from_span = literal.span();
            if let Some(value) = attr::positive_u32(ctxt, UPCAST_FROM, &literal) {
                from.set(&inner.path, value);
            }
        } else if inner.path.is_ident(UPCAST_WITH) {
            let path: syn::Path = inner.value()?.parse()?;
            with.set(&inner.path, path);
        } else {
            attr::unknown_key(ctxt, &inner, UPCAST, UPCAST_KEYS)?;
        }
        Ok(())
    })?;
    match (from.get(), with.get()) {
        (Some(from), Some(with)) => Ok(Some((from, from_span, with))),
        _ => {
            ctxt.error_spanned_by(
                &meta.path,
                "`upcast` needs the version it converts from and the function: write `upcast(from = 1, with = v1_to_v2)`",
            );
            Ok(None)
        }
    }
}
