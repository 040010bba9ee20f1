//! `#[derive(DomainEvent)]`: stable stored names, schema versions, and the payload encoding of an
//! event enum.

mod expand;
mod model;

use proc_macro2::TokenStream;

/// Reads, validates and expands one `#[derive(DomainEvent)]`.
pub(crate) fn derive(input: &syn::DeriveInput) -> TokenStream {
    match model::read(input) {
        Ok(events) => expand::domain_event_impl(&events),
        Err(error) => error.into_compile_error(),
    }
}
