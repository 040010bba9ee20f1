//! The `DomainEvent` impl, written only from a validated model.
//!
//! A payload holds only the variant's fields: the stored name travels beside it, so renaming a
//! Rust variant never changes stored data. Encoding goes through a serde "remote" shadow of the
//! enum marked `untagged` (it borrows the event, writes no variant name); decoding goes through
//! one owned helper struct per variant, picked by the stored name. Both copy the fields'
//! `#[serde(...)]` attributes.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Field, Fields, Ident, Index};

use super::model::{Codec, EventEnum, EventVariant};

/// `impl DomainEvent for ...` and its helper items, inside `const _: () = { ... };`.
pub(super) fn domain_event_impl(events: &EventEnum<'_>) -> TokenStream {
    let ident = &events.original.ident;
    let encoder = Ident::new("__CqrsEncode", Span::mixed_site());
    let remote = ident.to_string();

    let shadow_variants = events.variants.iter().map(|variant| {
        let variant_ident = &variant.original.ident;
        let fields = shadow_fields(&variant.original.fields);
        quote!(#variant_ident #fields)
    });
    let decoders = events.variants.iter().filter_map(decoder_struct);
    let event_types = events.variants.iter().map(|variant| {
        let name = &variant.name;
        let version = variant.version;
        let aliases = &variant.aliases;
        quote!(::cqrs_core::EventTypeInfo { name: #name, version: #version, aliases: &[#(#aliases),*] })
    });
    let name_arms = events.variants.iter().map(|variant| {
        let variant_ident = &variant.original.ident;
        let name = &variant.name;
        quote!(Self::#variant_ident { .. } => #name,)
    });
    let version_arms = events.variants.iter().map(|variant| {
        let variant_ident = &variant.original.ident;
        let version = variant.version;
        quote!(Self::#variant_ident { .. } => #version,)
    });
    let decode_arms = events.variants.iter().map(decode_arm);
    let event_type = Ident::new("event_type", Span::mixed_site());
    let (encode_with, require_codec) = match &events.codec {
        Codec::Json => (quote!(encode_event), quote!()),
        Codec::MessagePack(span) => (
            quote!(encode_event_msgpack),
            quote_spanned!(*span=> ::cqrs_core::__private::require_msgpack!();),
        ),
    };

    quote! {
        #require_codec

        const _: () = {
            #[derive(::cqrs_core::__private::serde::Serialize)]
            #[serde(crate = "::cqrs_core::__private::serde", remote = #remote, untagged)]
            #[allow(dead_code, non_camel_case_types, clippy::all)]
            enum #encoder {
                #(#shadow_variants,)*
            }

            #(#decoders)*

            #[automatically_derived]
            impl ::cqrs_core::DomainEvent for #ident {
                const EVENT_TYPES: &'static [::cqrs_core::EventTypeInfo] = &[#(#event_types),*];

                #[inline]
                fn event_type(&self) -> &'static ::core::primitive::str {
                    match *self {
                        #(#name_arms)*
                    }
                }

                #[inline]
                fn schema_version(&self) -> ::core::primitive::u32 {
                    match *self {
                        #(#version_arms)*
                    }
                }

                fn encode(
                    &self,
                ) -> ::core::result::Result<::cqrs_core::Payload, ::cqrs_core::EncodeError> {
                    ::cqrs_core::__private::#encode_with(
                        <Self as ::cqrs_core::DomainEvent>::event_type(self),
                        |serializer| #encoder::serialize(self, serializer),
                    )
                }

                fn decode(
                    #event_type: &::core::primitive::str,
                    schema_version: ::core::primitive::u32,
                    payload: &[::core::primitive::u8],
                ) -> ::core::result::Result<Self, ::cqrs_core::DecodeError> {
                    match #event_type {
                        #(#decode_arms)*
                        _ => ::core::result::Result::Err(
                            ::cqrs_core::__private::unknown_event_type(#event_type),
                        ),
                    }
                }
            }
        };
    }
}

/// The fields of one variant of the encoding shadow: same names, types and serde attributes.
fn shadow_fields(fields: &Fields) -> TokenStream {
    match fields {
        Fields::Named(named) => {
            let fields = named.named.iter().map(copied_field);
            quote!({ #(#fields),* })
        }
        Fields::Unnamed(unnamed) => {
            let fields = unnamed.unnamed.iter().map(copied_field);
            quote!(( #(#fields),* ))
        }
        Fields::Unit => TokenStream::new(),
    }
}

/// A field with only its `#[serde(...)]` attributes.
fn copied_field(field: &Field) -> TokenStream {
    let serde_attributes = field.attrs.iter().filter(|a| is_serde(a));
    let ident = field.ident.as_ref().map(|ident| quote!(#ident:));
    let ty = &field.ty;
    quote!(#(#serde_attributes)* #ident #ty)
}

fn is_serde(attribute: &Attribute) -> bool {
    attribute.path().is_ident("serde")
}

/// The name of the owned struct a variant's payload decodes into.
fn decoder_ident(variant: &EventVariant<'_>) -> Ident {
    format_ident!(
        "__CqrsDecode{}",
        variant.original.ident.unraw(),
        span = Span::mixed_site()
    )
}

/// The owned struct one variant's payload decodes into; none for a unit variant.
fn decoder_struct(variant: &EventVariant<'_>) -> Option<TokenStream> {
    let ident = decoder_ident(variant);
    let body = match &variant.original.fields {
        Fields::Unit => return None,
        Fields::Named(named) => {
            let fields = named.named.iter().map(copied_field);
            quote!({ #(#fields),* })
        }
        Fields::Unnamed(unnamed) => {
            let fields = unnamed.unnamed.iter().map(copied_field);
            quote!(( #(#fields),* );)
        }
    };
    Some(quote! {
        #[derive(::cqrs_core::__private::serde::Deserialize)]
        #[serde(crate = "::cqrs_core::__private::serde")]
        #[allow(dead_code, non_camel_case_types, clippy::all)]
        struct #ident #body
    })
}

/// `"Name" | "Alias" => { check version; upcast if older; decode fields; build the variant }`.
fn decode_arm(variant: &EventVariant<'_>) -> TokenStream {
    let name = &variant.name;
    let aliases = &variant.aliases;
    let version = variant.version;
    let variant_ident = &variant.original.ident;
    let decoder = decoder_ident(variant);
    let fields = Ident::new("fields", Span::mixed_site());
    // The type the payload decodes into, and the variant built from it (named `fields`).
    let (target, construct) = match &variant.original.fields {
        Fields::Unit => (quote!(()), quote!(Self::#variant_ident)),
        Fields::Named(named) => {
            let names: Vec<&Ident> = named
                .named
                .iter()
                .filter_map(|field| field.ident.as_ref())
                .collect();
            (
                quote!(#decoder),
                quote!(Self::#variant_ident { #(#names: #fields.#names),* }),
            )
        }
        Fields::Unnamed(unnamed) => {
            let indexes = (0..unnamed.unnamed.len()).map(Index::from);
            (
                quote!(#decoder),
                quote!(Self::#variant_ident(#(#fields.#indexes),*)),
            )
        }
    };
    let upcast = if variant.upcasters.is_empty() {
        TokenStream::new()
    } else {
        // Only payloads of an older version take the slower way through `serde_json::Value`.
        // The binding is spanned on the user's path, so a function of the wrong shape is
        // reported there.
        let steps = variant.upcasters.iter().map(|(from, path)| {
            let upcaster = quote_spanned! {path.span()=>
                {
                    let upcaster: ::cqrs_core::upcast::Upcaster = #path;
                    upcaster
                }
            };
            quote!((#from, #upcaster))
        });
        quote! {
            if schema_version < #version {
                #[allow(clippy::let_unit_value)]
                let #fields: #target = ::cqrs_core::__private::decode_upcast(
                    payload,
                    schema_version,
                    #version,
                    &[#(#steps),*],
                )?;
                return ::core::result::Result::Ok(#construct);
            }
        }
    };
    quote! {
        #name #(| #aliases)* => {
            ::cqrs_core::__private::check_schema_version(schema_version, #version)?;
            #upcast
            #[allow(clippy::let_unit_value)]
            let #fields: #target = ::cqrs_core::__private::decode_payload(payload)?;
            ::core::result::Result::Ok(#construct)
        }
    }
}
