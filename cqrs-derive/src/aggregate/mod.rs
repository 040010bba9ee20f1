//! `#[derive(Aggregate)]`: implements `cqrs_core::Aggregate` from `#[aggregate(...)]`.

mod expand;
mod model;

use proc_macro2::TokenStream;

/// Reads, validates and expands one `#[derive(Aggregate)]`.
pub(crate) fn derive(input: &syn::DeriveInput) -> TokenStream {
    match model::read(input) {
        Ok(aggregate) => expand::aggregate_impl(&aggregate),
        Err(broken) => {
            let (error, partial) = *broken;
            let mut tokens = error.into_compile_error();
            tokens.extend(expand::stand_in_impl(input, &partial));
            tokens
        }
    }
}
