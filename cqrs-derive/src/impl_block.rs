//! The first step of the attribute macros: the item they sit on must be an inherent impl block.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Item, ItemImpl};

/// The impl block in `input`; otherwise the tokens to emit instead: the error, next to the user's
/// item, so that one mistake gives one message. `misplaced` says where the attribute goes.
pub(crate) fn parse(input: TokenStream, misplaced: &str) -> Result<ItemImpl, TokenStream> {
    let item = match syn::parse2::<Item>(input.clone()) {
        Ok(item) => item,
        Err(error) => {
            let mut tokens = error.into_compile_error();
            tokens.extend(input);
            return Err(tokens);
        }
    };
    let Item::Impl(item_impl) = item else {
        let mut tokens = syn::Error::new(keyword_span(&item), misplaced).into_compile_error();
        item.to_tokens(&mut tokens);
        return Err(tokens);
    };
    Ok(item_impl)
}

/// Where to point when the attribute is on the wrong kind of item: its keyword.
fn keyword_span(item: &Item) -> Span {
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
