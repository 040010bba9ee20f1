//! `#[derive(Aggregate)]` read into a model, validated in one pass that collects every error.

use syn::ext::IdentExt;
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
                    suggested_name(&input.ident),
                    input.ident
                ),
            ),
            Some(attribute) => {
                if name.is_none() {
                    ctxt.error_spanned_by(
                        attribute,
                        format!(
                            "`#[aggregate(...)]` is missing the aggregate's name: add `name = \"{}\"` (the prefix of its stream ids)",
                            suggested_name(&input.ident)
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

/// The longest aggregate name, in bytes.
const MAX_NAME_LEN: usize = 64;

/// Aggregate names are the first part of stream ids, `{name}-{id}`, and a stream's category is
/// everything before its first `-`: a name is 1 to [`MAX_NAME_LEN`] bytes of ASCII letters,
/// digits, `_` and `.`. This is the rule cqrs-core checks at run time (the crates cannot share
/// the code: cqrs-core depends on this one); checking it here refuses a bad name where it is
/// written instead of at the first append.
fn validate_name(ctxt: &Ctxt, literal: &LitStr) {
    let value = literal.value();
    if value.is_empty() {
        ctxt.error_spanned_by(
            literal,
            "the aggregate's name is empty: write a name such as `name = \"show\"`",
        );
        return;
    }
    let mut refused: Vec<char> = Vec::new();
    for character in value.chars().filter(|c| !allowed_in_name(*c)) {
        if !refused.contains(&character) {
            refused.push(character);
        }
    }
    if refused.is_empty() {
        if value.len() > MAX_NAME_LEN {
            ctxt.error_spanned_by(
                literal,
                format!(
                    "the aggregate's name is {} bytes long, and stream ids allow at most {MAX_NAME_LEN} for it: write a shorter name",
                    value.len()
                ),
            );
        }
        return;
    }
    let shown = value.escape_debug();
    let fixed: String = value
        .chars()
        .map(|c| if allowed_in_name(c) { c } else { '_' })
        .collect();
    let mut fix = format!("write `name = \"{fixed}\"`");
    if fixed.len() > MAX_NAME_LEN {
        fix.push_str(&format!(", shortened to {MAX_NAME_LEN} bytes at most"));
    }
    let message = if refused == ['-'] {
        format!(
            "the aggregate's name `{shown}` contains `-`, which separates the name from the id in stream ids: {fix}"
        )
    } else {
        format!(
            "the aggregate's name `{shown}` contains {}, which stream ids do not allow in a name: a name holds only ASCII letters, digits, `_` and `.`; {fix}",
            described(&refused)
        )
    };
    ctxt.error_spanned_by(literal, message);
}

/// Whether `character` may appear in an aggregate name.
fn allowed_in_name(character: char) -> bool {
    character.is_ascii_alphanumeric() || character == '_' || character == '.'
}

/// "`/`", "a space and `/`", "`é`, `\t` and `/`": the refused characters, readable.
fn described(characters: &[char]) -> String {
    let names: Vec<String> = characters
        .iter()
        .map(|&character| match character {
            ' ' => String::from("a space"),
            other => format!("`{}`", other.escape_debug()),
        })
        .collect();
    attr::listed(&names, "and")
}

/// The name to suggest for a struct that has none: its own name in lower case, reduced to what
/// a name may hold.
fn suggested_name(ident: &Ident) -> String {
    let mut name: String = ident
        .unraw()
        .to_string()
        .to_lowercase()
        .chars()
        .map(|c| if allowed_in_name(c) { c } else { '_' })
        .collect();
    name.truncate(MAX_NAME_LEN);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message `validate_name` gives for `name`, or `None` when it accepts it.
    fn refusal(name: &str) -> Option<String> {
        let ctxt = Ctxt::new();
        validate_name(&ctxt, &LitStr::new(name, proc_macro2::Span::call_site()));
        ctxt.check().err().map(|error| error.to_string())
    }

    #[test]
    fn names_of_letters_digits_underscores_and_dots_are_accepted() {
        for name in [
            "show",
            "Show",
            "order_line",
            "shop.v2",
            "a",
            &"x".repeat(64),
        ] {
            assert_eq!(refusal(name), None, "{name}");
        }
    }

    #[test]
    fn a_dash_is_refused_with_the_name_to_write_instead() {
        assert_eq!(
            refusal("order-line").as_deref(),
            Some(
                "the aggregate's name `order-line` contains `-`, which separates the name from the id in stream ids: write `name = \"order_line\"`"
            )
        );
    }

    #[test]
    fn other_characters_are_named_and_replaced() {
        assert_eq!(
            refusal("order line").as_deref(),
            Some(
                "the aggregate's name `order line` contains a space, which stream ids do not allow in a name: a name holds only ASCII letters, digits, `_` and `.`; write `name = \"order_line\"`"
            )
        );
        let message = refusal("shop/order-line größe").unwrap_or_default();
        assert!(
            message.contains("contains `/`, `-`, a space, `ö` and `ß`,"),
            "{message}"
        );
        assert!(
            message.ends_with("write `name = \"shop_order_line_gr__e\"`"),
            "{message}"
        );
        let message = refusal("tab\there").unwrap_or_default();
        assert!(message.contains("`tab\\there` contains `\\t`"), "{message}");
    }

    #[test]
    fn long_and_empty_names_are_refused() {
        assert_eq!(
            refusal(&"x".repeat(65)).as_deref(),
            Some(
                "the aggregate's name is 65 bytes long, and stream ids allow at most 64 for it: write a shorter name"
            )
        );
        let message = refusal(&format!("{}-", "x".repeat(64))).unwrap_or_default();
        assert!(
            message.ends_with("_\"`, shortened to 64 bytes at most"),
            "{message}"
        );
        assert!(refusal("").is_some());
    }

    #[test]
    fn suggested_names_follow_the_rule() {
        let suggest = |ident: Ident| suggested_name(&ident);
        assert_eq!(suggest(syn::parse_quote!(OrderLine)), "orderline");
        assert_eq!(suggest(syn::parse_quote!(r#Type)), "type");
        assert_eq!(suggest(syn::parse_quote!(Größe)), "gr__e");
    }
}
