//! `#[saga(name = "...")]`: the saga's input enum and `cqrs_core::saga::Saga`, from the `route`
//! function and the `#[on(Aggregate)]` handlers of an inherent impl block.

mod expand;
mod model;

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Reads, validates and expands one `#[saga]`. The user's item is always emitted (without the
/// `#[on]` attributes), with the input enum when its name is known, so one mistake gives one
/// message.
pub(crate) fn attribute(args: TokenStream, input: TokenStream) -> TokenStream {
    let item_impl = match crate::impl_block::parse(
        input,
        "`#[saga]` goes on an inherent impl block: write `#[saga(name = \"...\")] impl MySaga { ... }`",
    ) {
        Ok(item_impl) => item_impl,
        Err(tokens) => return tokens,
    };
    let stripped = model::strip_helper_attributes(&item_impl);
    let (saga, errors) = model::read(args, &item_impl);
    match errors {
        Ok(()) => expand::saga(&saga, &stripped),
        Err(error) => {
            let mut tokens = error.into_compile_error();
            stripped.to_tokens(&mut tokens);
            tokens.extend(expand::fallback(&saga));
            tokens
        }
    }
}
