//! One `#[command_handler]` block per aggregate: a second one is refused with one error.
//!
//! Each block is expanded on its own, so a second block for the same aggregate defines the
//! command enum and `impl CommandHandler` again, and rustc reports every clash (the enum, each of
//! its derives, the impl, the variants the first enum lacks) without a word on what to do. The
//! expansion cannot see the other blocks, and rustc gives it no way to notice an earlier one: a
//! `macro_rules!` marker left by the first block is ambiguous (E0659) when the second resolves it.
//!
//! So the macro reads the file its block is written in and looks, in the module or function body
//! the block is in, for an earlier `#[command_handler]` block for the same type. Whenever it
//! cannot tell, it finds nothing and the block expands as usual: the file is not on disk (a doc
//! test, a remapped path), the block was written by another macro, either block carries `#[cfg]`,
//! or the blocks are in different modules (there the command enums do not clash, and rustc's
//! one error is the conflicting `CommandHandler` impl).

use quote::{ToTokens, quote};
use syn::{Block, Expr, ImplItem, Item, ItemImpl, Stmt};

use super::model::type_text;
use crate::attr;

/// The attribute, as the last segment of its path.
const COMMAND_HANDLER: &str = "command_handler";

/// The error for `block` when an earlier `#[command_handler]` block for its type precedes it in
/// the same module or function body; `None` when there is none, or when that cannot be told.
pub(super) fn refusal(block: &ItemImpl, handler_names: &[String]) -> Option<syn::Error> {
    if !follows_another_block(block) {
        return None;
    }
    let self_ty = &block.self_ty;
    let aggregate = type_text(self_ty);
    let message = if handler_names.is_empty() {
        format!(
            "one `#[command_handler]` block per aggregate, and `{aggregate}` has one above: remove `#[command_handler]` here, or move these methods into that block"
        )
    } else {
        let quoted: Vec<String> = handler_names
            .iter()
            .map(|name| format!("`{name}`"))
            .collect();
        format!(
            "one `#[command_handler]` block per aggregate: move {} into the first `#[command_handler] impl {aggregate}` block",
            attr::listed(&quoted, "and")
        )
    };
    let impl_token = block.impl_token;
    Some(syn::Error::new_spanned(
        quote!(#impl_token #self_ty),
        message,
    ))
}

/// Whether, in the file `block` was read from, an earlier `#[command_handler]` block for the same
/// type sits in the same list of items.
fn follows_another_block(block: &ItemImpl) -> bool {
    let Some(path) = block.impl_token.span.local_file() else {
        return false;
    };
    let Ok(source) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(file) = syn::parse_file(&source) else {
        return false;
    };
    let block_text = block.to_token_stream().to_string();
    let self_ty = block.self_ty.to_token_stream().to_string();
    let mut follows = false;
    visit_item_lists(file.items.iter().collect(), &mut |items| {
        follows |= follows_another_in(&items, &block_text, &self_ty);
    });
    follows
}

/// Whether `items` holds the block written as `block_text` after another block for `self_ty`.
fn follows_another_in(items: &[&Item], block_text: &str, self_ty: &str) -> bool {
    let mut earlier = false;
    for item in items {
        let Item::Impl(candidate) = item else {
            continue;
        };
        let Some(unmarked) = unmarked_block(candidate) else {
            continue;
        };
        // An identical twin of the block counts as the block itself: both then expand, and
        // rustc reports the clash.
        if unmarked.to_token_stream().to_string() == block_text {
            return earlier;
        }
        earlier |= candidate.trait_.is_none()
            && candidate.self_ty.to_token_stream().to_string() == self_ty;
    }
    false
}

/// A `#[command_handler]` block without that attribute, as the macro receives it; `None` for other
/// items and for blocks whose `#[cfg]` decides whether they exist.
fn unmarked_block(candidate: &ItemImpl) -> Option<ItemImpl> {
    let is_marker = |attribute: &syn::Attribute| {
        attribute
            .path()
            .segments
            .last()
            .is_some_and(|segment| segment.ident == COMMAND_HANDLER)
    };
    let conditional = candidate
        .attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") || a.path().is_ident("cfg_attr"));
    if conditional || !candidate.attrs.iter().any(is_marker) {
        return None;
    }
    let mut unmarked = candidate.clone();
    unmarked.attrs.retain(|attribute| !is_marker(attribute));
    Some(unmarked)
}

/// Calls `visit` with every list of items a block can sit in: the file's, each inline module's,
/// each function body's (also of methods and of `const _: () = { ... };`).
fn visit_item_lists<'a>(items: Vec<&'a Item>, visit: &mut dyn FnMut(Vec<&'a Item>)) {
    for item in &items {
        match item {
            Item::Mod(module) => {
                if let Some((_, content)) = &module.content {
                    visit_item_lists(content.iter().collect(), visit);
                }
            }
            Item::Fn(function) => visit_block(&function.block, visit),
            Item::Impl(block) => {
                for impl_item in &block.items {
                    if let ImplItem::Fn(method) = impl_item {
                        visit_block(&method.block, visit);
                    }
                }
            }
            Item::Const(constant) => {
                if let Expr::Block(expression) = &*constant.expr {
                    visit_block(&expression.block, visit);
                }
            }
            _ => {}
        }
    }
    visit(items);
}

fn visit_block<'a>(block: &'a Block, visit: &mut dyn FnMut(Vec<&'a Item>)) {
    let items = block
        .stmts
        .iter()
        .filter_map(|statement| match statement {
            Stmt::Item(item) => Some(item),
            _ => None,
        })
        .collect();
    visit_item_lists(items, visit);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the block written as `block` follows another one in `file`.
    fn follows(file: &str, block: &str) -> bool {
        let file = syn::parse_file(file).expect("a file");
        let block: ItemImpl = syn::parse_str(block).expect("a block");
        let block_text = block.to_token_stream().to_string();
        let self_ty = block.self_ty.to_token_stream().to_string();
        let mut follows = false;
        visit_item_lists(file.items.iter().collect(), &mut |items| {
            follows |= follows_another_in(&items, &block_text, &self_ty);
        });
        follows
    }

    const SCHEDULE: &str = "impl Show { pub fn schedule(&self) {} }";
    const CANCEL: &str = "impl Show { pub fn cancel(&self) {} }";

    #[test]
    fn a_second_block_for_one_type_follows_the_first() {
        let file = format!("#[command_handler] {SCHEDULE} #[cqrs_core::command_handler] {CANCEL}");
        assert!(follows(&file, CANCEL));
        assert!(!follows(&file, SCHEDULE));
        let in_function =
            format!("fn main() {{ #[command_handler] {SCHEDULE} #[command_handler] {CANCEL} }}");
        assert!(follows(&in_function, CANCEL));
    }

    #[test]
    fn blocks_apart_or_conditional_or_for_other_types_do_not() {
        let other_type = format!("#[command_handler] impl Play {{}} #[command_handler] {CANCEL}");
        assert!(!follows(&other_type, CANCEL));
        let other_module =
            format!("#[command_handler] {SCHEDULE} mod m {{ #[command_handler] {CANCEL} }}");
        assert!(!follows(&other_module, CANCEL));
        let conditional =
            format!("#[cfg(test)] #[command_handler] {SCHEDULE} #[command_handler] {CANCEL}");
        assert!(!follows(&conditional, CANCEL));
        let unmarked = format!("{SCHEDULE} #[command_handler] {CANCEL}");
        assert!(!follows(&unmarked, CANCEL));
        let elsewhere = format!("#[command_handler] {SCHEDULE}");
        assert!(!follows(&elsewhere, CANCEL));
    }
}
