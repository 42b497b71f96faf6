//! `event_type = ...`: from what is written to the selector the handler is registered for.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Expr, ExprLit, ExprUnary, Lit, RangeLimits, UnOp};

const FORMS: &str = "`event_type` takes an integer (`99`, or `-1` for the default handler), \
                     a name (`\"log\"`), a type (`Ping`), an integer constant (`Demo::Ping as i64`), \
                     a range (`1000..=1999`) or a list (`[1, 2]`)";

/// The expression building the `Selector` that `expr` names.
pub(crate) fn tokens(expr: &Expr, krate: &TokenStream) -> syn::Result<TokenStream> {
    let private = quote!(#krate::__private);
    Ok(match expr {
        Expr::Paren(inner) => tokens(&inner.expr, krate)?,
        Expr::Group(inner) => tokens(&inner.expr, krate)?,
        Expr::Lit(ExprLit {
            lit: Lit::Str(name),
            ..
        }) => quote!(#private::selector_name(#name)),
        Expr::Path(path) if path.qself.is_none() => {
            quote!(#private::selector_of::<#path>())
        }
        Expr::Cast(cast) => {
            let value = &cast.expr;
            quote!(#private::selector_int((#value) as i64))
        }
        Expr::Range(range) => {
            let (Some(start), Some(end)) = (&range.start, &range.end) else {
                return Err(syn::Error::new_spanned(
                    range,
                    "a range of event types needs both ends, as in `1000..=1999`",
                ));
            };
            let start = integer(start)?;
            let end = integer(end)?;
            let end = match range.limits {
                RangeLimits::Closed(_) => end,
                RangeLimits::HalfOpen(_) => end - 1,
            };
            if start > end {
                return Err(syn::Error::new_spanned(
                    range,
                    "this range of event types is empty; write it as `low..=high`",
                ));
            }
            quote!(#private::selector_range(#start, #end))
        }
        Expr::Array(list) => {
            if list.elems.is_empty() {
                return Err(syn::Error::new_spanned(
                    list,
                    "an empty list names no event type; give at least one",
                ));
            }
            let items = list
                .elems
                .iter()
                .map(|item| tokens(item, krate))
                .collect::<syn::Result<Vec<_>>>()?;
            quote!(#private::selector_list([#(#items),*]))
        }
        other => {
            let value = integer(other)?;
            quote!(#private::selector_int(#value))
        }
    })
}

/// An integer literal, possibly negative.
fn integer(expr: &Expr) -> syn::Result<i64> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => int.base10_parse(),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match &**expr {
            Expr::Lit(ExprLit {
                lit: Lit::Int(int), ..
            }) => int.base10_parse::<i64>().map(|i| -i),
            other => Err(syn::Error::new_spanned(other, FORMS)),
        },
        Expr::Paren(inner) => integer(&inner.expr),
        other => Err(syn::Error::new_spanned(other, FORMS)),
    }
}
