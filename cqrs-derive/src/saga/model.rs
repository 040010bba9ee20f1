//! `#[saga]` read into a model, validated in one pass that collects every error.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::format_ident;
use syn::{FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, Path, Type};

use crate::attr::{self, Setting};
use crate::ctxt::Ctxt;

/// The attribute itself, in messages.
const SAGA: &str = "saga";
/// `#[saga(name = "checkout")]`: the saga's stable name.
const NAME: &str = "name";
/// `#[saga(input = CheckoutInput)]`: the name of the generated input enum.
const INPUT: &str = "input";
/// Every key `#[saga(...)]` accepts.
const KEYS: &[&str] = &[NAME, INPUT];

/// The attribute on a handler: `#[on(Show)]`.
const ON: &str = "on";
/// The routing function every saga has.
const ROUTE: &str = "route";
/// The optional deadline handler.
const ON_DEADLINE: &str = "on_deadline";
/// The optional refusal handler.
const ON_REJECTED: &str = "on_rejected";
/// The suffix of the default input enum name: `Checkout` -> `CheckoutInput`.
const INPUT_SUFFIX: &str = "Input";

/// A `#[saga] impl`, as far as it could be read.
pub(super) struct SagaImpl<'a> {
    pub(super) original: &'a ItemImpl,
    /// The saga's type name, for docs.
    pub(super) saga: String,
    pub(super) name: Option<LitStr>,
    /// The input enum's name, when the self type could be read.
    pub(super) input: Option<Ident>,
    pub(super) handlers: Vec<Handler<'a>>,
    pub(super) has_on_deadline: bool,
    pub(super) has_on_rejected: bool,
    /// Whether the user's `route` takes the event's context as a second argument.
    pub(super) route_takes_context: bool,
}

/// One `#[on(Aggregate)]` method: one input variant.
pub(super) struct Handler<'a> {
    pub(super) method: &'a ImplItemFn,
    /// The aggregate type as the user wrote it.
    pub(super) aggregate: Path,
    /// The variant: the aggregate's type name.
    pub(super) variant: Ident,
    /// The event type as the user wrote it.
    pub(super) event: &'a Type,
}

/// The impl block as it is re-emitted: without `#[on(...)]`, which only this macro understands.
pub(super) fn strip_helper_attributes(item: &ItemImpl) -> ItemImpl {
    let mut item = item.clone();
    for impl_item in &mut item.items {
        if let ImplItem::Fn(method) = impl_item {
            method.attrs.retain(|a| !a.path().is_ident(ON));
        }
    }
    item
}

/// Reads and validates the attribute's arguments and the impl block. The model holds whatever
/// could be read, also when there are errors, so that the fallback can emit the input enum.
pub(super) fn read(args: TokenStream, item: &ItemImpl) -> (SagaImpl<'_>, syn::Result<()>) {
    let ctxt = Ctxt::new();

    let mut name = Setting::new(&ctxt, SAGA, NAME);
    let mut input = Setting::new(&ctxt, SAGA, INPUT);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident(NAME) {
            name.set(&meta.path, meta.value()?.parse::<LitStr>()?);
        } else if meta.path.is_ident(INPUT) {
            input.set(&meta.path, meta.value()?.parse::<Ident>()?);
        } else {
            attr::unknown_key(&ctxt, &meta, SAGA, KEYS)?;
        }
        Ok(())
    });
    if let Err(error) = syn::parse::Parser::parse2(parser, args) {
        ctxt.syn_error(error);
    }
    let name = name.get();
    let input = input.get();
    validate_name(&ctxt, name.as_ref());

    if let Some((trait_path, _)) = &item.trait_ {
        ctxt.error_spanned_by(
            trait_path,
            "`#[saga]` goes on an inherent impl block: remove the trait, write `impl MySaga { ... }`",
        );
    }
    if !item.generics.params.is_empty() {
        ctxt.error_spanned_by(
            &item.generics,
            "a saga cannot be generic: write the saga for concrete types",
        );
    }
    let self_ident = match &*item.self_ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|s| s.ident.clone())
        }
        _ => None,
    };
    if self_ident.is_none() {
        ctxt.error_spanned_by(
            &item.self_ty,
            "`#[saga]` goes on the impl block of a named struct: write `impl MySaga { ... }`",
        );
    }
    let input = input.or_else(|| {
        self_ident
            .as_ref()
            .map(|ident| format_ident!("{}{}", ident, INPUT_SUFFIX))
    });

    let mut handlers = Vec::new();
    let mut has_route = false;
    let mut has_on_deadline = false;
    let mut has_on_rejected = false;
    let mut route_takes_context = false;
    for impl_item in &item.items {
        let ImplItem::Fn(method) = impl_item else {
            continue;
        };
        let ident = method.sig.ident.to_string();
        if ident == ROUTE {
            has_route = true;
            route_takes_context = validate_route(&ctxt, method, input.as_ref());
        }
        has_on_deadline |= ident == ON_DEADLINE;
        has_on_rejected |= ident == ON_REJECTED;
        if let Some(handler) = read_handler(&ctxt, method) {
            handlers.push(handler);
        }
    }

    let mut seen: HashMap<String, &Handler<'_>> = HashMap::new();
    for handler in &handlers {
        let key = handler.variant.to_string();
        if let Some(first) = seen.get(&key) {
            ctxt.error_spanned_by(
                &handler.aggregate,
                format!(
                    "`{key}` already has a handler: handle all its events in `{}`",
                    first.method.sig.ident
                ),
            );
        } else {
            seen.insert(key, handler);
        }
    }
    if handlers.is_empty() && ctxt.is_clean() {
        ctxt.error_spanned_by(
            &item.self_ty,
            "a saga reacts to the events of at least one aggregate: add a method `#[on(Aggregate)] fn on_aggregate(&mut self, event: AggregateEvent, saga: &mut SagaContext)`",
        );
    }
    if !has_route {
        let input_name = input
            .as_ref()
            .map_or_else(|| String::from("Input"), ToString::to_string);
        ctxt.error_spanned_by(
            &item.self_ty,
            format!(
                "a saga routes each event to an instance: add `fn route(input: &{input_name}) -> Route` to this impl block"
            ),
        );
    }
    if name.is_none() {
        ctxt.syn_error(syn::Error::new(
            Span::call_site(),
            "missing saga name: write `#[saga(name = \"checkout\")]`, a stable name for its checkpoint and command ids",
        ));
    }

    let saga = SagaImpl {
        original: item,
        saga: self_ident.map_or_else(String::new, |ident| ident.to_string()),
        name,
        input,
        handlers,
        has_on_deadline,
        has_on_rejected,
        route_takes_context,
    };
    (saga, ctxt.check())
}

fn validate_name(ctxt: &Ctxt, name: Option<&LitStr>) {
    let Some(name) = name else {
        return;
    };
    let value = name.value();
    if value.is_empty() {
        ctxt.error_spanned_by(
            name,
            "the saga name is empty: write a stable name such as `name = \"checkout\"`",
        );
    } else if value.contains('/') {
        ctxt.error_spanned_by(
            name,
            "the saga name is part of command ids, separated by `/`: write it without `/`",
        );
    }
}

/// `route` decides which instance an event goes to, before any instance is loaded: it is an
/// associated function, `fn route(input: &Input) -> Route`, or with the event's context,
/// `fn route(input: &Input, event: &EventContext<'_>) -> Route`. Returns whether it takes the
/// context.
fn validate_route(ctxt: &Ctxt, method: &ImplItemFn, input: Option<&Ident>) -> bool {
    let input_name = input.map_or_else(|| String::from("Input"), ToString::to_string);
    if let Some(FnArg::Receiver(receiver)) = method.sig.inputs.first() {
        ctxt.error_spanned_by(
            receiver,
            format!(
                "`route` picks the instance an event goes to before any instance is loaded, so it takes no `self`: write `fn route(input: &{input_name}) -> Route`"
            ),
        );
        return false;
    }
    match method.sig.inputs.len() {
        1 => false,
        2 => true,
        _ => {
            ctxt.error_spanned_by(
                &method.sig.inputs,
                format!(
                    "`route` takes the input, and optionally where its event was recorded: write `fn route(input: &{input_name}) -> Route` or `fn route(input: &{input_name}, event: &EventContext<'_>) -> Route`"
                ),
            );
            false
        }
    }
}

/// Reads one method marked `#[on(Aggregate)]`; `None` for other methods and broken handlers.
fn read_handler<'a>(ctxt: &Ctxt, method: &'a ImplItemFn) -> Option<Handler<'a>> {
    let mut on = method.attrs.iter().filter(|a| a.path().is_ident(ON));
    let attribute = on.next()?;
    for duplicate in on {
        ctxt.error_spanned_by(
            duplicate,
            "a handler handles the events of one aggregate: remove this `#[on(...)]`, or write another method",
        );
    }
    let aggregate = match attribute.parse_args::<Path>() {
        Ok(path) => Some(path),
        Err(_) => {
            ctxt.error_spanned_by(
                attribute,
                "name the aggregate whose events this method handles: write `#[on(Show)]`",
            );
            None
        }
    };
    let usage = "a saga handler takes `(&mut self, event: AggregateEvent, saga: &mut SagaContext)`";
    let mut inputs = method.sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver))
            if matches!(receiver.kind, syn::ReceiverKind::Reference(_, _, Some(_))) => {}
        Some(FnArg::Receiver(receiver)) => {
            ctxt.error_spanned_by(
                receiver,
                "a saga handler changes the saga's state: write `&mut self`",
            );
            return None;
        }
        _ => {
            ctxt.error_spanned_by(&method.sig.ident, format!("{usage}: add `&mut self`"));
            return None;
        }
    }
    let event = match (inputs.next(), inputs.next(), inputs.next()) {
        (Some(FnArg::Typed(event)), Some(FnArg::Typed(_)), None) => &*event.ty,
        _ => {
            ctxt.error_spanned_by(&method.sig.inputs, usage);
            return None;
        }
    };
    let aggregate = aggregate?;
    let variant = aggregate.segments.last().map(|s| s.ident.clone())?;
    Some(Handler {
        method,
        aggregate,
        variant,
        event,
    })
}
