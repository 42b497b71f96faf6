//! The three attributes: check what they are put on, then emit the item unchanged and its
//! registration beside it. On a mistake the item is still emitted, with one error beside it.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, Item, ItemFn, ItemStruct, ReturnType, Type};

use crate::args;
use crate::selector;

/// Which crate the generated code names: the core or the facade, as the attribute was reached,
/// unless the user says otherwise with `crate = "path"`.
#[derive(Clone, Copy)]
pub(crate) enum Via {
    /// `nexus_core::handler` and the like: the code names `::nexus_core`.
    Core,
    /// `nexus::handler` and the like: the code names `::nexus`.
    Facade,
}

impl Via {
    fn path(self) -> TokenStream {
        match self {
            Self::Core => quote!(::nexus_core),
            Self::Facade => quote!(::nexus),
        }
    }
}

/// The value of `crate = "path"`: the path under which the user reaches nexus (a renamed
/// dependency, or a re-export).
fn crate_path(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<TokenStream> {
    let text: syn::LitStr = meta.value()?.parse().map_err(|err| {
        syn::Error::new(
            err.span(),
            "`crate` takes the path to nexus as a string, as in `crate = \"my_nexus\"`",
        )
    })?;
    Ok(text.parse::<syn::Path>()?.into_token_stream())
}

/// The item as written, followed by `error`: one mistake, one message, and the IDE still sees
/// the item.
fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.into_compile_error();
    quote!(#item #error)
}

fn parse_fn(item: &TokenStream, attribute: &str, shape: &str) -> syn::Result<ItemFn> {
    match syn::parse2::<Item>(item.clone())? {
        Item::Fn(function) => {
            let sig = &function.sig;
            if sig.asyncness.is_none() {
                return Err(syn::Error::new(
                    sig.fn_token.span(),
                    format!("`#[{attribute}]` needs an `async fn`: write `{shape}`"),
                ));
            }
            if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
                return Err(syn::Error::new(
                    receiver.span(),
                    format!(
                        "`#[{attribute}]` goes on a free function, not a method: write `{shape}`"
                    ),
                ));
            }
            if !sig.generics.params.is_empty() {
                return Err(syn::Error::new_spanned(
                    &sig.generics,
                    format!("`#[{attribute}]` functions cannot be generic: write `{shape}`"),
                ));
            }
            if sig.inputs.len() != 2 {
                let message =
                    format!("`#[{attribute}]` functions take two parameters: write `{shape}`");
                return Err(if sig.inputs.is_empty() {
                    syn::Error::new(sig.paren_token.span.join(), message)
                } else {
                    syn::Error::new_spanned(&sig.inputs, message)
                });
            }
            Ok(function)
        }
        other => Err(syn::Error::new(
            item_span(&other),
            format!("`#[{attribute}]` goes on a free `async fn`: write `{shape}`"),
        )),
    }
}

/// Where to point for an item of the wrong kind: its keyword, past any attributes.
fn item_span(item: &Item) -> Span {
    match item {
        Item::Enum(item) => item.enum_token.span,
        Item::Struct(item) => item.struct_token.span,
        Item::Union(item) => item.union_token.span,
        Item::Fn(item) => item.sig.fn_token.span,
        Item::Trait(item) => item.trait_token.span,
        Item::Impl(item) => item.impl_token.span,
        Item::Type(item) => item.type_token.span,
        Item::Const(item) => item.const_token.span,
        Item::Static(item) => item.static_token.span,
        Item::Mod(item) => item.mod_token.span,
        other => other
            .to_token_stream()
            .into_iter()
            .next()
            .map_or_else(Span::call_site, |t| t.span()),
    }
}

/// The types of the two parameters (checked to be two).
fn param_types(function: &ItemFn) -> [&Type; 2] {
    let mut types = function.sig.inputs.iter().filter_map(|arg| match arg {
        FnArg::Typed(typed) => Some(&*typed.ty),
        FnArg::Receiver(_) => None,
    });
    let first = types.next().expect("two parameters were checked");
    let second = types.next().expect("two parameters were checked");
    [first, second]
}

fn return_type(function: &ItemFn) -> TokenStream {
    match &function.sig.output {
        ReturnType::Default => quote_spanned!(function.sig.ident.span()=> ()),
        ReturnType::Type(_, ty) => ty.to_token_stream(),
    }
}

/// The handler's function as a function of the same name, parameters and visibility that returns
/// an `async move` block of its body. The block's future reads each parameter where the call put
/// it, where an `async fn`'s future copies its parameters into its body when first polled: on
/// every event, the event moved a second time.
///
/// The block takes the event whole (`let _ = &event;`), as an `async fn`'s future does: else it
/// would take only the fields its body names, and drop the rest (a payload's value among them) as
/// the call is made. An event written as a pattern other than a name is taken under a name of the
/// expansion's own and matched inside the block, as an `async fn` does. The queue is left to the
/// block to take or not: an `EventQueue` has no drop of its own, so that when it is dropped does
/// not show, and a queue the body does not use is not copied into the future.
fn returning_block(mut function: ItemFn, output: &TokenStream) -> TokenStream {
    let span = function
        .sig
        .asyncness
        .take()
        .map_or_else(Span::call_site, |token| token.span);
    function.sig.output =
        syn::parse_quote_spanned!(span=> -> impl ::core::future::Future<Output = #output>);
    let take = match function.sig.inputs.first_mut() {
        Some(FnArg::Typed(param)) => match &*param.pat {
            syn::Pat::Ident(plain) if plain.by_ref.is_none() && plain.subpat.is_none() => {
                // Named from the expansion (the call site's span), so that lints on the user's
                // code, such as a `_event` read, do not take this line for the user's.
                let mut name = plain.ident.clone();
                name.set_span(Span::call_site());
                quote!(let _ = &#name;)
            }
            _ => {
                let name = own("__nexus_event");
                let pat = std::mem::replace(&mut *param.pat, syn::parse_quote!(#name));
                quote!(let _ = &#name; let #pat = #name;)
            }
        },
        // Not reached: the handler's shape (an event, then a queue) is checked before.
        _ => TokenStream::new(),
    };
    let stmts = &function.block.stmts;
    let body: syn::Block = syn::parse_quote_spanned!(span=> {
        async move {
            #take
            #(#stmts)*
        }
    });
    *function.block = body;
    function.attrs.push(syn::parse_quote!(#[allow(
        clippy::manual_async_fn,
        reason = "#[handler]: the block's future does not copy the event into itself"
    )]));
    function.into_token_stream()
}

const HANDLER_SHAPE: &str = "async fn name(event: Event, queue: EventQueue)";
const HANDLER_KEYS: &str = "`event_type`, `crate`";

pub(crate) fn handler(args: TokenStream, item: TokenStream, via: Via) -> TokenStream {
    match expand_handler(args, &item, via) {
        Ok(tokens) => tokens,
        Err(err) => with_error(item, err),
    }
}

/// A binding of the expansion's own, which the user's tokens (the function's name, a `new`
/// expression) neither see nor shadow: a function may be named `event`, `queue` or `nexus`.
fn own(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

fn expand_handler(args: TokenStream, item: &TokenStream, via: Via) -> syn::Result<TokenStream> {
    let mut krate: Option<TokenStream> = None;
    let mut event_type: Option<Expr> = None;
    args::parse(args, "handler", HANDLER_KEYS, |key, meta| {
        if key == "event_type" {
            args::set(&mut event_type, key, args::expr(&meta)?)?;
            return Ok(true);
        }
        if key == "crate" {
            args::set(&mut krate, key, crate_path(&meta)?)?;
            return Ok(true);
        }
        Ok(false)
    })?;
    let function = parse_fn(item, "handler", HANDLER_SHAPE)?;
    let Some(event_type) = event_type else {
        return Err(args::missing(
            "`#[handler]` needs the event types it takes: write `#[handler(event_type = 99)]` \
             (`-1` for the default handler)"
                .to_owned(),
        ));
    };
    let krate = krate.unwrap_or_else(|| via.path());
    let private = quote!(#krate::__private);
    let selector = selector::tokens(&event_type, &krate)?;
    let name = &function.sig.ident;
    let name_text = name.to_string();
    let [event_ty, queue_ty] = param_types(&function);
    let output = return_type(&function);
    let (event, queue, nexus) = (own("event"), own("queue"), own("nexus"));
    let event_arg = quote_spanned!(event_ty.span()=> #private::cast_event::<#event_ty>(#event));
    let queue_arg = quote_spanned!(queue_ty.span()=> #private::cast_queue::<#queue_ty>(#queue));
    let handler_fn = quote_spanned!(output.span()=> #private::handler_fn::<#output, _, _>);
    let emitted = returning_block(function.clone(), &output);
    Ok(quote! {
        #emitted

        const _: () = {
            fn __nexus_selector() -> #private::Selector {
                #selector
            }

            fn __nexus_register(
                #nexus: &#private::AsyncEventNexus,
            ) -> #private::Result<(), #private::NexusError> {
                // The function's own future is the call's, made in the nexus's memory for calls:
                // no future around it to copy the event into it.
                let handler = #handler_fn(|#event: #private::Event, #queue: #private::EventQueue| {
                    #name(#event_arg, #queue_arg)
                });
                #nexus.add_consumer(
                    __nexus_selector(),
                    handler.named(::core::concat!(::core::module_path!(), "::", #name_text)),
                )
            }

            #private::inventory::submit! {
                #private::HandlerRecord {
                    path: ::core::concat!(::core::module_path!(), "::", #name_text),
                    selector: __nexus_selector,
                    register: __nexus_register,
                }
            }
        };
    })
}

const FILTER_SHAPE: &str = "async fn name(event: &Event, queue: &EventQueue) -> bool";
const FILTER_KEYS: &str = "`order`, `crate`";

pub(crate) fn filter(args: TokenStream, item: TokenStream, via: Via) -> TokenStream {
    match expand_filter(args, &item, via) {
        Ok(tokens) => tokens,
        Err(err) => with_error(item, err),
    }
}

fn expand_filter(args: TokenStream, item: &TokenStream, via: Via) -> syn::Result<TokenStream> {
    let mut krate: Option<TokenStream> = None;
    let mut order: Option<i64> = None;
    args::parse(args, "filter", FILTER_KEYS, |key, meta| {
        if key == "order" {
            let value: syn::LitInt = meta.value()?.parse().map_err(|err| {
                syn::Error::new(err.span(), "`order` takes an integer, as in `order = 1`")
            })?;
            args::set(&mut order, key, value.base10_parse()?)?;
            return Ok(true);
        }
        if key == "crate" {
            args::set(&mut krate, key, crate_path(&meta)?)?;
            return Ok(true);
        }
        Ok(false)
    })?;
    let function = parse_fn(item, "filter", FILTER_SHAPE)?;
    let order = order.unwrap_or(0);
    let krate = krate.unwrap_or_else(|| via.path());
    let private = quote!(#krate::__private);
    let name = &function.sig.ident;
    let name_text = name.to_string();
    let [event_ty, queue_ty] = param_types(&function);
    let output = return_type(&function);
    let (event, queue, nexus) = (own("event"), own("queue"), own("nexus"));
    let event_arg =
        quote_spanned!(event_ty.span()=> #private::cast_event_ref::<#event_ty>(&#event));
    let queue_arg =
        quote_spanned!(queue_ty.span()=> #private::cast_queue_ref::<#queue_ty>(&#queue));
    let add_filter = quote_spanned!(output.span()=> #private::add_named_filter::<#output, _, _>);
    Ok(quote! {
        #function

        const _: () = {
            fn __nexus_register(#nexus: &#private::AsyncEventNexus) {
                // The function's future borrows the event and the queue handle: the call owns
                // copies of them, and is made in the nexus's memory for calls, not boxed.
                #add_filter(
                    #nexus,
                    ::core::concat!(::core::module_path!(), "::", #name_text),
                    |#event: &#private::Event, #queue: &#private::EventQueue| {
                        let (#event, #queue) = (
                            #private::Event::clone(#event),
                            #private::EventQueue::clone(#queue),
                        );
                        async move { #name(#event_arg, #queue_arg).await }
                    },
                );
            }

            #private::inventory::submit! {
                #private::FilterRecord {
                    path: ::core::concat!(::core::module_path!(), "::", #name_text),
                    order: #order,
                    register: __nexus_register,
                }
            }
        };
    })
}

const SOURCE_KEYS: &str = "`new`, `crate`";

pub(crate) fn event_source(args: TokenStream, item: TokenStream, via: Via) -> TokenStream {
    match expand_source(args, &item, via) {
        Ok(tokens) => tokens,
        Err(err) => with_error(item, err),
    }
}

fn expand_source(args: TokenStream, item: &TokenStream, via: Via) -> syn::Result<TokenStream> {
    let mut krate: Option<TokenStream> = None;
    let mut new: Option<Expr> = None;
    args::parse(args, "event_source", SOURCE_KEYS, |key, meta| {
        if key == "new" {
            args::set(&mut new, key, args::expr(&meta)?)?;
            return Ok(true);
        }
        if key == "crate" {
            args::set(&mut krate, key, crate_path(&meta)?)?;
            return Ok(true);
        }
        Ok(false)
    })?;
    let parsed: ItemStruct = match syn::parse2::<Item>(item.clone())? {
        Item::Struct(parsed) => parsed,
        other => {
            return Err(syn::Error::new(
                item_span(&other),
                "`#[event_source]` goes on a struct that implements `SimpleEventConverter`, \
                 `EventConverter` or `EventProducer`",
            ));
        }
    };
    if !parsed.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &parsed.generics,
            "`#[event_source]` structs cannot be generic: register an instance of a concrete \
             type by hand with `nexus.register(...)`",
        ));
    }
    let krate = krate.unwrap_or_else(|| via.path());
    let private = quote!(#krate::__private);
    let name = &parsed.ident;
    let name_text = name.to_string();
    let instance = match new {
        Some(expr) => expr.into_token_stream(),
        None => quote_spanned!(name.span()=> <#name as ::core::default::Default>::default()),
    };
    let nexus = own("nexus");
    let register = quote_spanned!(name.span()=> #private::register_source::<#name, _>);
    Ok(quote! {
        #parsed

        const _: () = {
            fn __nexus_register(
                #nexus: &#private::AsyncEventNexus,
            ) -> #private::Result<(), #private::NexusError> {
                #register(#nexus, #instance)
            }

            #private::inventory::submit! {
                #private::SourceRecord {
                    path: ::core::concat!(::core::module_path!(), "::", #name_text),
                    register: __nexus_register,
                }
            }
        };
    })
}
