//! The `Aggregate` impl, written only from a validated model.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::{DeriveInput, Generics, parse_quote};

use super::model::{Aggregate, Partial};

/// `impl Aggregate for ...`, plus the bound check of a generic aggregate.
pub(super) fn aggregate_impl(aggregate: &Aggregate<'_>) -> TokenStream {
    let input = aggregate.original;
    let ident = &input.ident;
    let generics = generics_with_aggregate_bounds(input);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let name = &aggregate.name;
    let event = &aggregate.event;
    let error = &aggregate.error;
    let snapshot_version = aggregate
        .snapshot_version
        .map(|version| quote!(const SNAPSHOT_VERSION: ::core::primitive::u32 = #version;));

    // `Self::apply` resolves to the user's inherent method when there is one (inherent methods
    // win over trait methods), and to this very trait method when there is none. `ApplyProbe`
    // tells the two apart at compile time: the first is called, the second is a compile error
    // that says to write the method, never a recursion that overflows the stack at run time.
    // For a concrete type, the method assumes `Self: Aggregate` in full, so that naming the trait
    // method does not report a missing supertrait (`Default`, `Send`, ...) a second time. The
    // binder keeps the bound from being a trivially false one. What rustc still says about the
    // bound is spanned where the impl's own error is, so the two are one message. A generic type
    // has its bounds in the impl's where clause already (and the assumption would shadow the
    // impl there, leaving `Self::Event` unnormalized).
    let apply = &aggregate.apply;
    let assumed = input.generics.params.is_empty().then(|| {
        quote_spanned! {ident.span()=>
            where
                for<'__cqrs_assumed> Self: ::cqrs_core::Aggregate,
        }
    });
    let apply_fn = quote_spanned! {apply.span()=>
        #[inline]
        fn apply(&mut self, event: <Self as ::cqrs_core::Aggregate>::Event) #assumed {
            #[allow(unused_imports)]
            use ::cqrs_core::Aggregate as _;
            #[allow(unused_imports)]
            use ::cqrs_core::__private::{ResolveApply as _, ResolveMissingApply as _};
            (&::cqrs_core::__private::ApplyProbe::<Self, _, _>::new(
                Self::#apply,
                <Self as ::cqrs_core::Aggregate>::apply,
            ))
                .resolve()
                .apply(self, event)
        }
    };

    // A clone when the aggregate implements `Clone`, `None` otherwise: `ForkProbe` picks one of
    // the two at compile time, so deriving `Clone` is all it takes.
    let fork_fn = quote! {
        #[inline]
        fn fork(&self) -> ::core::option::Option<Self> {
            #[allow(unused_imports)]
            use ::cqrs_core::__private::{ForkByClone as _, ForkNone as _};
            (&::cqrs_core::__private::ForkProbe(self)).fork()
        }
    };

    let bounds_check = bounds_check(input);
    quote! {
        #[automatically_derived]
        impl #impl_generics ::cqrs_core::Aggregate for #ident #ty_generics #where_clause {
            const NAME: &'static ::core::primitive::str = #name;
            #snapshot_version
            type Event = #event;
            type Error = #error;
            #apply_fn
            #fork_fn
        }
        #bounds_check
    }
}

/// A stand-in impl next to the errors of a broken derive, so that code using the aggregate does
/// not fail too. Unknown types are replaced by uninhabited ones.
pub(super) fn stand_in_impl(input: &DeriveInput, partial: &Partial) -> TokenStream {
    if !partial.is_struct {
        return TokenStream::new();
    }
    let ident = &input.ident;
    let generics = generics_with_aggregate_bounds(input);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let event = partial.event.as_ref().map_or_else(
        || quote!(::cqrs_core::__private::UnknownEvent),
        ToTokens::to_token_stream,
    );
    let error = partial.error.as_ref().map_or_else(
        || quote!(::cqrs_core::__private::UnknownError),
        ToTokens::to_token_stream,
    );
    quote! {
        #[automatically_derived]
        impl #impl_generics ::cqrs_core::Aggregate for #ident #ty_generics #where_clause {
            const NAME: &'static ::core::primitive::str = "";
            type Event = #event;
            type Error = #error;
            fn apply(&mut self, _: <Self as ::cqrs_core::Aggregate>::Event) {}
        }
    }
}

/// The struct's generics; for a generic aggregate, with `Self: Default + Send + Sync + 'static`
/// added, so that missing bounds are reported once by [`bounds_check`] rather than once per
/// supertrait on the impl.
fn generics_with_aggregate_bounds(input: &DeriveInput) -> Generics {
    let mut generics = input.generics.clone();
    if !input.generics.params.is_empty() {
        let ident = &input.ident;
        let (_, ty_generics, _) = input.generics.split_for_impl();
        generics.make_where_clause().predicates.push(parse_quote! {
            #ident #ty_generics: ::core::default::Default
                + ::core::marker::Send
                + ::core::marker::Sync
                + 'static
        });
    }
    generics
}

/// For a generic aggregate: a check, spanned on the user's type, that it is
/// `Default + Send + Sync + 'static` whatever its parameters.
fn bounds_check(input: &DeriveInput) -> TokenStream {
    if input.generics.params.is_empty() {
        // A concrete type is checked by the impl itself, and rustc's own message then names the
        // missing trait on the user's type.
        return TokenStream::new();
    }
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let check = quote_spanned! {ident.span()=>
        ::cqrs_core::__private::assert_aggregate_bounds::<#ident #ty_generics>();
    };
    quote! {
        const _: () = {
            #[allow(dead_code)]
            fn assert_aggregate_bounds #impl_generics () #where_clause {
                #check
            }
        };
    }
}
