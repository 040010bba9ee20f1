//! `#[command_handler]`: the command enum and `cqrs_core::CommandHandler`, from the `pub` methods
//! of an inherent impl block.

mod expand;
mod model;
mod naming;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::Item;
use syn::spanned::Spanned;

/// Reads, validates and expands one `#[command_handler]`. The user's item is always emitted
/// (without the helper attributes), so one mistake gives one message.
pub(crate) fn attribute(args: TokenStream, input: TokenStream) -> TokenStream {
    let item = match syn::parse2::<Item>(input.clone()) {
        Ok(item) => item,
        Err(error) => {
            let mut tokens = error.into_compile_error();
            tokens.extend(input);
            return tokens;
        }
    };
    let Item::Impl(item_impl) = item else {
        let mut tokens = syn::Error::new(
            item_keyword_span(&item),
            "`#[command_handler]` goes on an inherent impl block: write `#[command_handler] impl Aggregate { ... }`",
        )
        .into_compile_error();
        item.to_tokens(&mut tokens);
        return tokens;
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

/// Where to point when the attribute is on the wrong kind of item: its keyword.
fn item_keyword_span(item: &Item) -> Span {
    match item {
        Item::Fn(item) => item.sig.fn_token.span,
        Item::Struct(item) => item.struct_token.span,
        Item::Enum(item) => item.enum_token.span,
        Item::Union(item) => item.union_token.span,
        Item::Trait(item) => item.trait_token.span,
        Item::Mod(item) => item.mod_token.span,
        Item::Const(item) => item.const_token.span,
        Item::Static(item) => item.static_token.span,
        Item::Type(item) => item.type_token.span,
        Item::Use(item) => item.use_token.span,
        other => other.span(),
    }
}
