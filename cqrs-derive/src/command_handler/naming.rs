//! Command variant names: a handler method `reserve_seats` becomes `ReserveSeats`.

use syn::Ident;
use syn::ext::IdentExt;

/// `reserve_seats` -> `ReserveSeats`; `None` when nothing usable is left.
pub(super) fn variant_name(method: &Ident) -> Option<String> {
    let method = method.unraw().to_string();
    let mut name = String::with_capacity(method.len());
    for word in method.split('_').filter(|word| !word.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    // `Self` is the only keyword a PascalCase name can hit.
    (!name.is_empty() && name != "Self").then_some(name)
}

#[cfg(test)]
mod tests {
    use proc_macro2::Span;

    use super::*;

    fn name(method: &str) -> Option<String> {
        variant_name(&Ident::new(method, Span::call_site()))
    }

    #[test]
    fn snake_case_becomes_pascal_case() {
        assert_eq!(name("reserve_seats").as_deref(), Some("ReserveSeats"));
        assert_eq!(name("schedule").as_deref(), Some("Schedule"));
        assert_eq!(name("reserveSeats").as_deref(), Some("ReserveSeats"));
        assert_eq!(name("_private_ish").as_deref(), Some("PrivateIsh"));
        assert_eq!(name("self_").as_deref(), None);
        let raw = Ident::new_raw("type", Span::call_site());
        assert_eq!(variant_name(&raw).as_deref(), Some("Type"));
    }
}
