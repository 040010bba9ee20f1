//! `#[command_handler]`: the command enum and `cqrs_core::CommandHandler`, from the `pub` methods
//! of an inherent impl block.

mod expand;
mod model;
mod naming;

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Reads, validates and expands one `#[command_handler]`. The user's item is always emitted
/// (without the helper attributes), so one mistake gives one message.
pub(crate) fn attribute(args: TokenStream, input: TokenStream) -> TokenStream {
    let item_impl = match crate::impl_block::parse(
        input,
        "`#[command_handler]` goes on an inherent impl block: write `#[command_handler] impl Aggregate { ... }`",
    ) {
        Ok(item_impl) => item_impl,
        Err(tokens) => return tokens,
    };
    let stripped = model::strip_helper_attributes(&item_impl);
    match model::read(args, &item_impl) {
        Ok(handlers) => expand::command_handler(&handlers, &stripped),
        Err(error) => {
            let mut tokens = error.into_compile_error();
            stripped.to_tokens(&mut tokens);
            tokens
        }
    }
}
