//! Reading `key = value` attribute arguments: each key at most once, unknown keys refused on the
//! key itself (serde_derive's `internals/attr.rs`, axum-macros' `attr_parsing.rs`).

use proc_macro2::TokenTree;
use syn::meta::ParseNestedMeta;

use crate::ctxt::Ctxt;

/// One key of an attribute: remembers where it was set, refuses a second setting.
pub(crate) struct Setting<'c, T> {
    ctxt: &'c Ctxt,
    attribute: &'static str,
    key: &'static str,
    value: Option<T>,
}

impl<'c, T> Setting<'c, T> {
    pub(crate) fn new(ctxt: &'c Ctxt, attribute: &'static str, key: &'static str) -> Self {
        Setting {
            ctxt,
            attribute,
            key,
            value: None,
        }
    }

    /// Sets the value, or reports a duplicate on `key_tokens`.
    pub(crate) fn set(&mut self, key_tokens: &syn::Path, value: T) {
        if self.value.is_some() {
            self.ctxt.error_spanned_by(
                key_tokens,
                format!(
                    "duplicate `{}` key in `#[{}(...)]`: remove this one",
                    self.key, self.attribute
                ),
            );
        } else {
            self.value = Some(value);
        }
    }

    pub(crate) fn get(self) -> Option<T> {
        self.value
    }
}

/// Reports an unknown key on the key itself, naming the keys that exist, and skips its value so
/// the rest of the attribute is still read.
pub(crate) fn unknown_key(
    ctxt: &Ctxt,
    meta: &ParseNestedMeta<'_>,
    attribute: &str,
    expected: &[&str],
) -> syn::Result<()> {
    let key = meta
        .path
        .get_ident()
        .map_or_else(|| path_to_string(&meta.path), ToString::to_string);
    ctxt.error_spanned_by(
        &meta.path,
        format!(
            "unknown key `{key}` in `#[{attribute}(...)]`: expected {}",
            one_of(expected)
        ),
    );
    skip_value(meta)
}

/// A path as the user wrote it, without the spaces `to_string` puts in.
pub(crate) fn path_to_string(path: &syn::Path) -> String {
    quote::ToTokens::to_token_stream(path)
        .to_string()
        .replace(' ', "")
}

/// Consumes whatever follows a key up to the next comma: `= value` or `(...)`.
pub(crate) fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    while !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
        meta.input.parse::<TokenTree>()?;
    }
    Ok(())
}

/// "`a`", "`a` or `b`", "`a`, `b` or `c`".
pub(crate) fn one_of(keys: &[&str]) -> String {
    if keys.is_empty() {
        return String::from("nothing");
    }
    let quoted: Vec<String> = keys.iter().map(|key| format!("`{key}`")).collect();
    listed(&quoted, "or")
}

/// "a", "a and b", "a, b and c" (with `conjunction` "and").
pub(crate) fn listed(words: &[String], conjunction: &str) -> String {
    match words.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} {conjunction} {last}", rest.join(", ")),
    }
}

/// Reads a positive integer literal (a schema version); `key` names it in errors.
pub(crate) fn positive_u32(ctxt: &Ctxt, key: &str, literal: &syn::Lit) -> Option<u32> {
    let syn::Lit::Int(int) = literal else {
        ctxt.error_spanned_by(
            literal,
            format!("`{key}` takes a positive integer: write `{key} = 2`"),
        );
        return None;
    };
    match int.base10_parse::<u32>() {
        Ok(0) => {
            ctxt.error_spanned_by(
                int,
                format!("versions start at 1: write `{key} = 1` or higher"),
            );
            None
        }
        Ok(version) => Some(version),
        Err(_) => {
            ctxt.error_spanned_by(
                int,
                format!("`{key}` must fit in a `u32`: write a smaller positive integer"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_read_like_prose() {
        assert_eq!(one_of(&[]), "nothing");
        assert_eq!(one_of(&["skip"]), "`skip`");
        assert_eq!(one_of(&["name", "version"]), "`name` or `version`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
        let words = |list: &[&str]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(listed(&words(&["a"]), "and"), "a");
        assert_eq!(listed(&words(&["a", "b", "c"]), "and"), "a, b and c");
    }

    #[test]
    fn versions_are_positive_integers() {
        let ctxt = Ctxt::new();
        assert_eq!(
            positive_u32(&ctxt, "version", &syn::parse_quote!(2)),
            Some(2)
        );
        assert_eq!(positive_u32(&ctxt, "version", &syn::parse_quote!(0)), None);
        assert_eq!(
            positive_u32(&ctxt, "version", &syn::parse_quote!("x")),
            None
        );
        assert_eq!(
            positive_u32(&ctxt, "version", &syn::parse_quote!(5_000_000_000)),
            None
        );
        let errors = ctxt
            .check()
            .expect_err("three refusals")
            .into_iter()
            .count();
        assert_eq!(errors, 3);
    }
}
