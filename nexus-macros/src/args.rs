//! Parsing `key = value` attribute arguments.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Expr, Ident};

/// Parses `args` as `key = value, ...`, handing each pair to `each`, which returns whether it
/// knew the key. `attribute` and `expected` name the attribute and its keys in messages.
pub(crate) fn parse(
    args: TokenStream,
    attribute: &str,
    expected: &str,
    mut each: impl FnMut(&Ident, ParseNestedMeta<'_>) -> syn::Result<bool>,
) -> syn::Result<()> {
    let parser = syn::meta::parser(|meta| {
        let Some(key) = meta.path.get_ident().cloned() else {
            return Err(meta.error(format!(
                "unknown key in `#[{attribute}]`; expected {expected}"
            )));
        };
        if each(&key, meta)? {
            Ok(())
        } else {
            Err(syn::Error::new(
                key.span(),
                format!("unknown key `{key}` in `#[{attribute}]`; expected {expected}"),
            ))
        }
    });
    parser.parse2(args)
}

/// Stores a key's value, or fails if the key was already given.
pub(crate) fn set<T>(slot: &mut Option<T>, key: &Ident, value: T) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            key.span(),
            format!("`{key}` given twice; keep one"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

/// The value after `=`, as an expression.
pub(crate) fn expr(meta: &ParseNestedMeta<'_>) -> syn::Result<Expr> {
    meta.value()?.parse()
}

/// An error pointing at the attribute itself, for a key that is missing.
pub(crate) fn missing(message: String) -> syn::Error {
    syn::Error::new(Span::call_site(), message)
}
