//! `#[command_handler]`: the command enum and `cqrs_core::CommandHandler`, from the `pub` methods
//! of an inherent impl block.

mod expand;
mod model;
mod naming;
mod second_block;

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
    // Only the first block for an aggregate expands; a second one would define everything again.
    if let Some(error) = second_block::refusal(&item_impl, &model::handler_names(&item_impl)) {
        let mut tokens = error.into_compile_error();
        stripped.to_tokens(&mut tokens);
        return tokens;
    }
    match model::read(args, &item_impl) {
        Ok(handlers) => expand::command_handler(&handlers, &stripped),
        Err(error) => {
            let mut tokens = error.into_compile_error();
            stripped.to_tokens(&mut tokens);
            tokens
        }
    }
}
