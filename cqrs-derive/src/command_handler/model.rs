//! `#[command_handler]` read into a model, validated in one pass that collects every error.

use std::collections::HashMap;

use proc_macro2::{TokenStream, TokenTree};
use quote::{ToTokens, format_ident};
use syn::{
    Attribute, FnArg, GenericArgument, GenericParam, Ident, ImplItem, ImplItemFn, ItemImpl, Meta,
    Pat, PathArguments, ReturnType, Type, Visibility,
};

use super::naming;
use crate::attr::{self, Setting};
use crate::ctxt::Ctxt;

/// The attribute itself, in messages.
const COMMAND_HANDLER: &str = "command_handler";
/// `#[command_handler(command = ShowCommand)]`: the name of the generated enum.
const COMMAND_ENUM: &str = "command";
/// `#[command_handler(services = AppServices)]`: the services type, when no handler names it.
const SERVICES_TYPE: &str = "services";
/// Every key `#[command_handler(...)]` accepts.
const KEYS: &[&str] = &[COMMAND_ENUM, SERVICES_TYPE];

/// The attribute on methods: `#[command(skip)]`.
const COMMAND: &str = "command";
/// `#[command(skip)]`: a public method that is not a command handler.
const SKIP: &str = "skip";
/// Every key `#[command(...)]` accepts.
const COMMAND_KEYS: &[&str] = &[SKIP];

/// The attribute on a handler argument that receives the services.
const SERVICES: &str = "services";

/// The suffix of the default command enum name: `Show` -> `ShowCommand`.
const COMMAND_SUFFIX: &str = "Command";

/// The return types a handler may have, for messages.
const SUPPORTED_RETURNS: &str = "`Result<Event, Error>`, `Result<Vec<Event>, Error>`, `Result<Option<Event>, Error>`, `Event`, `Vec<Event>` or `Option<Event>`";

/// A validated `#[command_handler] impl`.
pub(super) struct HandlerImpl<'a> {
    pub(super) original: &'a ItemImpl,
    /// The aggregate's type name, for docs.
    pub(super) aggregate: String,
    /// The generated enum's name.
    pub(super) command: Ident,
    /// `CommandHandler::Services`; `()` when `None`.
    pub(super) services: Option<Type>,
    pub(super) handlers: Vec<Handler<'a>>,
}

/// One command handler method: one command variant.
pub(super) struct Handler<'a> {
    pub(super) method: &'a ImplItemFn,
    pub(super) variant: Ident,
    pub(super) arguments: Vec<Argument<'a>>,
    pub(super) output: Output<'a>,
}

/// One argument of a handler, after `&self`.
pub(super) enum Argument<'a> {
    /// Becomes a field of the command variant.
    Field { ident: &'a Ident, ty: &'a Type },
    /// `#[services] name: &Services`: receives the services.
    Services { reference: &'a Type },
}

/// What a handler returns: `Result<Shape, Error>` or a bare `Shape`.
pub(super) struct Output<'a> {
    pub(super) shape: Shape,
    /// The event type as the user wrote it.
    pub(super) event: &'a Type,
    /// The error type as the user wrote it, when the handler returns a `Result`.
    pub(super) error: Option<&'a Type>,
}

/// How many events a handler returns.
#[derive(Clone, Copy)]
pub(super) enum Shape {
    /// `Event`.
    One,
    /// `Vec<Event>`.
    Many,
    /// `Option<Event>`: `None` is an idempotent no-op.
    Maybe,
}

/// The impl block as it is re-emitted: without `#[command(...)]` and `#[services]`, which only
/// this macro understands.
pub(super) fn strip_helper_attributes(item: &ItemImpl) -> ItemImpl {
    let mut item = item.clone();
    for impl_item in &mut item.items {
        if let ImplItem::Fn(method) = impl_item {
            method.attrs.retain(|a| !a.path().is_ident(COMMAND));
            for input in &mut method.sig.inputs {
                match input {
                    FnArg::Typed(argument) => {
                        argument.attrs.retain(|a| !a.path().is_ident(SERVICES));
                    }
                    FnArg::Receiver(receiver) => {
                        receiver.attrs.retain(|a| !a.path().is_ident(SERVICES));
                    }
                }
            }
        }
    }
    item
}

/// Reads and validates the attribute's arguments and the impl block.
pub(super) fn read(args: TokenStream, item: &ItemImpl) -> syn::Result<HandlerImpl<'_>> {
    let ctxt = Ctxt::new();

    let mut command = Setting::new(&ctxt, COMMAND_HANDLER, COMMAND_ENUM);
    let mut services_type = Setting::new(&ctxt, COMMAND_HANDLER, SERVICES_TYPE);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(COMMAND_ENUM) {
            command.set(&meta.path, meta.value()?.parse::<Ident>()?);
        } else if meta.path.is_ident(SERVICES_TYPE) {
            services_type.set(&meta.path, meta.value()?.parse::<Type>()?);
        } else {
            attr::unknown_key(&ctxt, &meta, COMMAND_HANDLER, KEYS)?;
        }
        Ok(())
    });
    if let Err(error) = syn::parse::Parser::parse2(parser, args) {
        ctxt.syn_error(error);
    }
    let command = command.get();
    let services_type = services_type.get();

    if let Some((path, _)) = &item.trait_ {
        ctxt.error_spanned_by(
            path,
            "`#[command_handler]` goes on an inherent impl block, not a trait impl: move the handlers to `impl Aggregate { ... }` and put the attribute there",
        );
        return Err(ctxt
            .check()
            .err()
            .unwrap_or_else(|| unreachable_error(item)));
    }

    let aggregate = match &*item.self_ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|segment| &segment.ident)
        }
        _ => None,
    };
    let Some(aggregate) = aggregate else {
        ctxt.error_spanned_by(
            &item.self_ty,
            "`#[command_handler]` needs the aggregate's type by name: write `impl Aggregate { ... }`",
        );
        return Err(ctxt
            .check()
            .err()
            .unwrap_or_else(|| unreachable_error(item)));
    };
    let command = command.unwrap_or_else(|| format_ident!("{}{}", aggregate, COMMAND_SUFFIX));
    let type_parameters: Vec<&Ident> = item
        .generics
        .params
        .iter()
        .filter_map(|param| match param {
            GenericParam::Type(param) => Some(&param.ident),
            _ => None,
        })
        .collect();

    let mut handlers = Vec::new();
    let mut candidates = 0_usize;
    // Variant name -> the method that took it first.
    let mut variants: HashMap<String, &Ident> = HashMap::new();
    // The first handler's services type and that handler, when not set on the attribute.
    let mut first_services: Option<(&Type, &Ident)> = None;

    for impl_item in &item.items {
        let ImplItem::Fn(method) = impl_item else {
            continue;
        };
        let skip = read_command_attributes(&ctxt, method);
        let public = !matches!(method.vis, Visibility::Inherited);
        if let (Some(skip), false) = (&skip, public) {
            ctxt.error_spanned_by(
                skip,
                "private methods are never command handlers: remove `#[command(skip)]`",
            );
        }
        if !public || skip.is_some() {
            for attribute in services_attributes(method) {
                ctxt.error_spanned_by(
                    attribute,
                    "`#[services]` only marks an argument of a command handler (a `pub` method without `#[command(skip)]`): remove it",
                );
            }
            continue;
        }
        candidates += 1;
        let Some(handler) = read_handler(&ctxt, method, &type_parameters) else {
            continue;
        };

        if let Some(name) = naming::variant_name(&method.sig.ident) {
            if let Some(first) = variants.get(&name) {
                ctxt.error_spanned_by(
                    &method.sig.ident,
                    format!(
                        "`{}` maps to the command `{command}::{name}`, like `{first}` above: rename one of the methods, or mark one `#[command(skip)]`",
                        method.sig.ident
                    ),
                );
                continue;
            }
            variants.insert(name, &method.sig.ident);
        }

        for argument in &handler.arguments {
            let Argument::Services { reference } = argument else {
                continue;
            };
            let Type::Reference(reference) = reference else {
                continue;
            };
            if services_type.is_some() {
                // Checked by rustc against `services = ...`, spanned on this argument.
                continue;
            }
            match first_services {
                None => first_services = Some((&reference.elem, &method.sig.ident)),
                Some((first, first_method)) => {
                    if type_text(first) != type_text(&reference.elem) {
                        ctxt.error_spanned_by(
                            &reference.elem,
                            format!(
                                "all command handlers share one services type, and `{first_method}` takes `&{}`: take `&{}` here too (put what both need in one struct), or set it with `#[command_handler(services = ...)]`",
                                type_text(first),
                                type_text(first),
                            ),
                        );
                    }
                }
            }
        }
        handlers.push(handler);
    }

    if candidates == 0 && ctxt.is_clean() {
        ctxt.error_spanned_by(
            item.impl_token,
            "this impl has no command handlers: make the handler methods `pub` (private methods are helpers and are left alone)",
        );
    }

    ctxt.check()?;
    Ok(HandlerImpl {
        original: item,
        aggregate: aggregate.to_string(),
        command,
        services: services_type.or_else(|| first_services.map(|(ty, _)| ty.clone())),
        handlers,
    })
}

/// The names of the methods that would be command handlers (by visibility and
/// `#[command(skip)]`, the first rule `read` applies), for messages about the whole block.
pub(super) fn handler_names(item: &ItemImpl) -> Vec<String> {
    item.items
        .iter()
        .filter_map(|impl_item| match impl_item {
            ImplItem::Fn(method) => Some(method),
            _ => None,
        })
        .filter(|method| {
            let skip = read_command_attributes(&Ctxt::new(), method);
            !matches!(method.vis, Visibility::Inherited) && skip.is_none()
        })
        .map(|method| method.sig.ident.to_string())
        .collect()
}

/// `#[command(...)]` on a method; returns the `skip` key when present.
fn read_command_attributes(ctxt: &Ctxt, method: &ImplItemFn) -> Option<syn::Path> {
    let mut skip = Setting::new(ctxt, COMMAND, SKIP);
    for attribute in method.attrs.iter().filter(|a| a.path().is_ident(COMMAND)) {
        let parsed = attribute.parse_nested_meta(|meta| {
            if meta.path.is_ident(SKIP) {
                skip.set(&meta.path, meta.path.clone());
            } else {
                attr::unknown_key(ctxt, &meta, COMMAND, COMMAND_KEYS)?;
            }
            Ok(())
        });
        if let Err(error) = parsed {
            ctxt.syn_error(error);
        }
    }
    skip.get()
}

/// Every `#[services]` on the method's arguments.
fn services_attributes(method: &ImplItemFn) -> impl Iterator<Item = &Attribute> {
    method.sig.inputs.iter().flat_map(|input| {
        let attrs = match input {
            FnArg::Typed(argument) => &argument.attrs,
            FnArg::Receiver(receiver) => &receiver.attrs,
        };
        attrs.iter().filter(|a| a.path().is_ident(SERVICES))
    })
}

/// Validates one handler method; `None` when it cannot become a command.
fn read_handler<'a>(
    ctxt: &Ctxt,
    method: &'a ImplItemFn,
    type_parameters: &[&Ident],
) -> Option<Handler<'a>> {
    let signature = &method.sig;
    let mut valid = true;

    if let syn::Safety::Unsafe(unsafety) = &signature.safety {
        ctxt.error_spanned_by(
            unsafety,
            "command handlers cannot be `unsafe`: remove `unsafe`, or mark the method `#[command(skip)]`",
        );
        valid = false;
    }
    if !signature.generics.params.is_empty() || signature.generics.where_clause.is_some() {
        ctxt.error_spanned_by(
            &signature.generics,
            "command handlers cannot be generic, their arguments become fields of the command enum: use concrete types",
        );
        valid = false;
    }
    if let Some(variadic) = &signature.variadic {
        ctxt.error_spanned_by(variadic, "command handlers cannot be variadic");
        valid = false;
    }

    let mut inputs = signature.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver)) => {
            for attribute in receiver
                .attrs
                .iter()
                .filter(|a| a.path().is_ident(SERVICES))
            {
                ctxt.error_spanned_by(
                    attribute,
                    "`#[services]` marks the argument that receives the services, not `self`: put it on an argument `name: &Services`",
                );
                valid = false;
            }
            if !receiver_is_shared_reference(receiver) {
                let message = if matches!(receiver.kind, syn::ReceiverKind::Value) {
                    "command handlers take `&self`, not `self`: write `&self` (deciding reads the state, it does not consume it)"
                } else {
                    "command handlers take `&self`: deciding must not change state, state changes belong in `apply`; write `&self`"
                };
                ctxt.error_spanned_by(receiver, message);
                valid = false;
            }
        }
        _ => {
            ctxt.error_spanned_by(
                &signature.ident,
                format!(
                    "command handlers take `&self`: add `&self` as the first argument of `{}`, or mark it `#[command(skip)]` (or make it private) if it is not a command handler",
                    signature.ident
                ),
            );
            valid = false;
        }
    }

    let mut arguments = Vec::new();
    let mut services_seen = false;
    for input in inputs {
        let FnArg::Typed(argument) = input else {
            continue;
        };
        let mut services = false;
        for attribute in argument
            .attrs
            .iter()
            .filter(|a| a.path().is_ident(SERVICES))
        {
            if !matches!(attribute.meta, Meta::Path(_)) {
                ctxt.error_spanned_by(
                    attribute,
                    "`#[services]` takes no arguments: write `#[services]`",
                );
                valid = false;
            }
            if services || services_seen {
                ctxt.error_spanned_by(
                    attribute,
                    "a command handler takes at most one `#[services]` argument: put everything it needs in one services type",
                );
                valid = false;
            }
            services = true;
        }

        if services {
            services_seen = true;
            match &*argument.ty {
                Type::Reference(reference) if reference.mutability.is_none() => {
                    arguments.push(Argument::Services {
                        reference: &argument.ty,
                    });
                }
                Type::Reference(reference) => {
                    ctxt.error_spanned_by(
                        reference,
                        "services are shared by every command: take them as `&Services`, not `&mut Services`",
                    );
                    valid = false;
                }
                other => {
                    ctxt.error_spanned_by(
                        other,
                        format!(
                            "`#[services]` receives the services by shared reference: write `&{}`",
                            type_text(other)
                        ),
                    );
                    valid = false;
                }
            }
            continue;
        }

        let ident = match &*argument.pat {
            Pat::Ident(pattern) if pattern.by_ref.is_none() && pattern.subpat.is_none() => {
                Some(&pattern.ident)
            }
            other => {
                ctxt.error_spanned_by(
                    other,
                    "command handler arguments become fields of the command, so they need a plain name: write `name: Type` and destructure inside the method",
                );
                valid = false;
                None
            }
        };
        if !argument_type_is_owned(ctxt, &argument.ty, type_parameters) {
            valid = false;
        }
        if let Some(ident) = ident {
            arguments.push(Argument::Field {
                ident,
                ty: &argument.ty,
            });
        }
    }

    let output = read_output(ctxt, method);
    let variant = naming::variant_name(&signature.ident);
    if variant.is_none() {
        ctxt.error_spanned_by(
            &signature.ident,
            "this method name gives no usable command name: rename the method (`reserve_seats` becomes `ReserveSeats`)",
        );
    }
    match (valid, output, variant) {
        (true, Some(output), Some(variant)) => Some(Handler {
            method,
            variant: Ident::new(&variant, signature.ident.span()),
            arguments,
            output,
        }),
        _ => None,
    }
}

/// `&self` or `&'a self`, or `self: &Self`.
fn receiver_is_shared_reference(receiver: &syn::Receiver) -> bool {
    match &receiver.kind {
        syn::ReceiverKind::Reference(_, _, mutability) => mutability.is_none(),
        syn::ReceiverKind::Typed(_, ty) => match &**ty {
            Type::Reference(reference) => {
                reference.mutability.is_none()
                    && matches!(&*reference.elem, Type::Path(path) if path.qself.is_none() && path.path.is_ident("Self"))
            }
            _ => false,
        },
        _ => false,
    }
}

/// Command fields live in the command enum: owned, concrete, not generic over the impl.
fn argument_type_is_owned(ctxt: &Ctxt, ty: &Type, type_parameters: &[&Ident]) -> bool {
    match ty {
        Type::Reference(reference) => {
            ctxt.error_spanned_by(
                reference,
                format!(
                    "command arguments are stored in the command enum and must be owned: write `{}` instead of `{}`",
                    owned_form(&reference.elem),
                    type_text(ty),
                ),
            );
            return false;
        }
        Type::ImplTrait(impl_trait) => {
            ctxt.error_spanned_by(
                impl_trait,
                "command arguments become fields of the command enum and need a concrete type: replace `impl ...` with a type",
            );
            return false;
        }
        _ => {}
    }
    if let Some(parameter) = type_parameters
        .iter()
        .find(|parameter| mentions(ty.to_token_stream(), parameter))
    {
        ctxt.error_spanned_by(
            ty,
            format!(
                "the command enum is not generic, so a command argument cannot use the type parameter `{parameter}`: use a concrete type"
            ),
        );
        return false;
    }
    true
}

/// The owned type to suggest for `&elem`: `String` for `str`, `Vec<T>` for `[T]`, else `elem`.
fn owned_form(elem: &Type) -> String {
    match elem {
        Type::Path(path) if path.qself.is_none() && path.path.is_ident("str") => "String".into(),
        Type::Slice(slice) => format!("Vec<{}>", type_text(&slice.elem)),
        other => type_text(other),
    }
}

/// Whether `ident` appears anywhere in `tokens`.
fn mentions(tokens: TokenStream, ident: &Ident) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(found) => found == *ident,
        TokenTree::Group(group) => mentions(group.stream(), ident),
        _ => false,
    })
}

/// Classifies the return type; `None` (with an error) when it is not a supported shape.
fn read_output<'a>(ctxt: &Ctxt, method: &'a ImplItemFn) -> Option<Output<'a>> {
    let ty = match &method.sig.output {
        ReturnType::Default => {
            ctxt.error_spanned_by(
                &method.sig.ident,
                format!(
                    "command handlers return the events they decide on: add a return type, one of {SUPPORTED_RETURNS}"
                ),
            );
            return None;
        }
        ReturnType::Type(_, ty) => ungroup(ty),
    };
    if let Some(arguments) = generic_arguments(ty, "Result") {
        let [ok, error] = arguments.as_slice() else {
            ctxt.error_spanned_by(
                ty,
                "write the handler's result type in full, with both types: `Result<Event, Error>`",
            );
            return None;
        };
        let (shape, event) = read_shape(ctxt, ok)?;
        return Some(Output {
            shape,
            event,
            error: Some(error),
        });
    }
    let (shape, event) = read_shape(ctxt, ty)?;
    Some(Output {
        shape,
        event,
        error: None,
    })
}

/// `Vec<E>`, `Option<E>` or `E`.
fn read_shape<'a>(ctxt: &Ctxt, ty: &'a Type) -> Option<(Shape, &'a Type)> {
    let ty = ungroup(ty);
    for (wrapper, shape) in [("Vec", Shape::Many), ("Option", Shape::Maybe)] {
        if let Some([event]) = generic_arguments(ty, wrapper).as_deref() {
            let event = ungroup(event);
            return supported_event_type(ctxt, event).then_some((shape, event));
        }
    }
    supported_event_type(ctxt, ty).then_some((Shape::One, ty))
}

/// Rejects types that can never be an event: `()`, tuples, references, `impl Trait`, ...
fn supported_event_type(ctxt: &Ctxt, ty: &Type) -> bool {
    let supported = matches!(ty, Type::Path(_));
    if !supported {
        ctxt.error_spanned_by(
            ty,
            format!("unsupported return type for a command handler: return {SUPPORTED_RETURNS}"),
        );
    }
    supported
}

/// The type arguments of `ty` when it is a path ending in `name<...>`.
fn generic_arguments<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let Type::Path(path) = ty else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let segment = path.path.segments.last()?;
    if segment.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(arguments) = &segment.arguments else {
        return None;
    };
    Some(
        arguments
            .args
            .iter()
            .filter_map(|argument| match argument {
                GenericArgument::Type(ty) => Some(ty),
                _ => None,
            })
            .collect(),
    )
}

/// Looks through parentheses and invisible groups.
fn ungroup(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Paren(paren) => ty = &paren.elem,
            Type::Group(group) => ty = &group.elem,
            _ => return ty,
        }
    }
}

/// A type as the user wrote it, for messages.
pub(super) fn type_text(ty: &Type) -> String {
    ty.to_token_stream()
        .to_string()
        .replace(" < ", "<")
        .replace(" >", ">")
        .replace("< ", "<")
        .replace(" ,", ",")
        .replace(":: ", "::")
        .replace(" ::", "::")
        .replace("& ", "&")
}

/// The error for a branch that reported its error already; never seen by users.
fn unreachable_error(item: &ItemImpl) -> syn::Error {
    syn::Error::new_spanned(
        item.impl_token,
        "`#[command_handler]` could not read this impl block",
    )
}
