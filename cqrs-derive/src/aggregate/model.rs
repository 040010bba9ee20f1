//! `#[derive(Aggregate)]` read into a model, validated in one pass that collects every error.

use syn::{Data, DeriveInput, Ident, Lit, LitStr, Type};

use crate::attr::{self, Setting};
use crate::ctxt::Ctxt;

/// The attribute the derive reads.
pub(super) const AGGREGATE: &str = "aggregate";
/// `name = "show"`: the aggregate's name, the prefix of its stream ids.
const NAME: &str = "name";
/// `event = ShowEvent`: the event enum.
const EVENT: &str = "event";
/// `error = ShowError`: the domain error of the command handlers.
const ERROR: &str = "error";
/// `snapshot_version = 2`: the schema version of the aggregate's snapshots.
const SNAPSHOT_VERSION: &str = "snapshot_version";
/// `apply = on_event`: the inherent method that folds one event into the state.
const APPLY: &str = "apply";
/// Every key `#[aggregate(...)]` accepts.
const KEYS: &[&str] = &[NAME, EVENT, ERROR, SNAPSHOT_VERSION, APPLY];

/// The method `Aggregate::apply` calls when `apply = ...` is not given.
const DEFAULT_APPLY: &str = "apply";

/// A validated `#[derive(Aggregate)]`.
pub(super) struct Aggregate<'a> {
    /// The struct the derive is on.
    pub(super) original: &'a DeriveInput,
    pub(super) name: LitStr,
    pub(super) event: Type,
    pub(super) error: Type,
    pub(super) snapshot_version: Option<u32>,
    /// The user's inherent apply method, spanned where it was named (or on the struct).
    pub(super) apply: Ident,
}

/// What could be read from a broken derive: enough for a stand-in impl that keeps the rest of
/// the user's code from failing too.
pub(super) struct Partial {
    pub(super) is_struct: bool,
    pub(super) event: Option<Type>,
    pub(super) error: Option<Type>,
}

/// Reads and validates the derive input; on error, every problem found, combined.
pub(super) fn read(input: &DeriveInput) -> Result<Aggregate<'_>, Box<(syn::Error, Partial)>> {
    let ctxt = Ctxt::new();

    let is_struct = match &input.data {
        Data::Struct(_) => true,
        Data::Enum(data) => {
            ctxt.error_spanned_by(
                data.enum_token,
                "`#[derive(Aggregate)]` goes on a struct that holds the aggregate's state: write `struct` here (an enum of events takes `#[derive(DomainEvent)]`)",
            );
            false
        }
        Data::Union(data) => {
            ctxt.error_spanned_by(
                data.union_token,
                "`#[derive(Aggregate)]` goes on a struct that holds the aggregate's state: write `struct` here",
            );
            false
        }
    };

    let mut name = Setting::new(&ctxt, AGGREGATE, NAME);
    let mut event = Setting::new(&ctxt, AGGREGATE, EVENT);
    let mut error = Setting::new(&ctxt, AGGREGATE, ERROR);
    let mut snapshot_version = Setting::new(&ctxt, AGGREGATE, SNAPSHOT_VERSION);
    let mut apply = Setting::new(&ctxt, AGGREGATE, APPLY);
    let mut first_attribute = None;
    // A malformed attribute already has its own error; "missing key" on top would be noise.
    let mut unreadable = false;

    for attribute in input.attrs.iter().filter(|a| a.path().is_ident(AGGREGATE)) {
        first_attribute.get_or_insert(attribute);
        let parsed = attribute.parse_nested_meta(|meta| {
            if meta.path.is_ident(NAME) {
                let literal: Lit = meta.value()?.parse()?;
                match literal {
                    Lit::Str(literal) => name.set(&meta.path, literal),
                    other => ctxt
                        .error_spanned_by(other, "`name` takes a string: write `name = \"show\"`"),
                }
            } else if meta.path.is_ident(EVENT) {
                event.set(&meta.path, meta.value()?.parse::<Type>()?);
            } else if meta.path.is_ident(ERROR) {
                error.set(&meta.path, meta.value()?.parse::<Type>()?);
            } else if meta.path.is_ident(SNAPSHOT_VERSION) {
                let literal: Lit = meta.value()?.parse()?;
                if let Some(version) = attr::positive_u32(&ctxt, SNAPSHOT_VERSION, &literal) {
                    snapshot_version.set(&meta.path, version);
                }
            } else if meta.path.is_ident(APPLY) {
                apply.set(&meta.path, meta.value()?.parse::<Ident>()?);
            } else {
                attr::unknown_key(&ctxt, &meta, AGGREGATE, KEYS)?;
            }
            Ok(())
        });
        if let Err(error) = parsed {
            ctxt.syn_error(error);
            unreadable = true;
        }
    }

    let name = name.get();
    let event = event.get();
    let error = error.get();
    let snapshot_version = snapshot_version.get();
    let apply = apply.get();

    if let Some(name) = &name {
        validate_name(&ctxt, name);
    }
    if !unreadable {
        match first_attribute {
            None => ctxt.error_spanned_by(
                &input.ident,
                format!(
                    "`#[derive(Aggregate)]` needs its settings: add `#[aggregate(name = \"{}\", event = ..., error = ...)]` to `{}`",
                    input.ident.to_string().to_lowercase(),
                    input.ident
                ),
            ),
            Some(attribute) => {
                if name.is_none() {
                    ctxt.error_spanned_by(
                        attribute,
                        format!(
                            "`#[aggregate(...)]` is missing the aggregate's name: add `name = \"{}\"` (the prefix of its stream ids)",
                            input.ident.to_string().to_lowercase()
                        ),
                    );
                }
                if event.is_none() {
                    ctxt.error_spanned_by(
                        attribute,
                        "`#[aggregate(...)]` is missing the event type: add `event = ...` naming the aggregate's `#[derive(DomainEvent)]` enum",
                    );
                }
                if error.is_none() {
                    ctxt.error_spanned_by(
                        attribute,
                        "`#[aggregate(...)]` is missing the error type: add `error = ...` naming the domain error its command handlers return",
                    );
                }
            }
        }
    }

    match (ctxt.check(), is_struct, name, event, error) {
        (Ok(()), true, Some(name), Some(event), Some(error)) => Ok(Aggregate {
            original: input,
            name,
            event,
            error,
            snapshot_version,
            apply: apply.unwrap_or_else(|| Ident::new(DEFAULT_APPLY, input.ident.span())),
        }),
        (result, is_struct, _, event, error) => {
            let error_tokens = match result {
                Err(combined) => combined,
                // Unreachable in practice: every `None` above reported an error. Say so rather
                // than panic if that ever stops being true.
                Ok(()) => syn::Error::new_spanned(
                    &input.ident,
                    "`#[derive(Aggregate)]` could not read `#[aggregate(...)]`: write `#[aggregate(name = \"...\", event = ..., error = ...)]`",
                ),
            };
            Err(Box::new((
                error_tokens,
                Partial {
                    is_struct,
                    event,
                    error,
                },
            )))
        }
    }
}

/// Aggregate names become stream id prefixes: non-empty, without control characters.
fn validate_name(ctxt: &Ctxt, literal: &LitStr) {
    let value = literal.value();
    if value.is_empty() {
        ctxt.error_spanned_by(
            literal,
            "the aggregate's name is empty: write a name such as `name = \"show\"`",
        );
    } else if value.chars().any(char::is_control) {
        ctxt.error_spanned_by(
            literal,
            "the aggregate's name is part of every stream id and cannot hold control characters: remove them",
        );
    }
}
