//! The procedural macros of `wisp-sdk`. Use them through `wisp_sdk`
//! (`#[wisp_sdk::handler]`), which documents them; the expansion refers to
//! items of `wisp_sdk` that are not a stable API of their own.

use proc_macro::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType};

/// Turns a handler function (`fn name(req: wisp_sdk::Request) -> impl
/// IntoResponse`, any function of extractors, `async` or not) or a router
/// factory (`fn app() -> wisp_sdk::Router`) into the component's
/// `wasi:http/incoming-handler` export (WASI 0.2), or its `wasi:http/handler`
/// export when the crate depends on the SDK's 0.3 build. Which of them it is is left to the
/// `wisp_sdk::Handler` trait, so the macro only checks the function's shape.
/// See `wisp_sdk::handler`.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    if !attr.is_empty() {
        return syn::Error::new(attr.span(), "#[wisp_sdk::handler] takes no arguments")
            .to_compile_error()
            .into();
    }
    let function = syn::parse_macro_input!(item as ItemFn);
    match expand(&function) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            // Keep the function so that the only errors shown are ours.
            let error = error.to_compile_error();
            quote!(#function #error).into()
        }
    }
}

fn expand(function: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    check_signature(function)?;
    let name = &function.sig.ident;
    // The export itself is a `macro_rules!` of the SDK: the same expansion
    // serves its WASI 0.2 build (wisp-sdk) and its 0.3 build (wisp-sdk-p3),
    // whichever the crate depends on.
    Ok(quote! {
        #function

        ::wisp_sdk::__private::export_handler!(#name);
    })
}

/// Turns `fn name(event: wisp_sdk::Event) -> Result<(), E>` (or `async fn`,
/// or returning nothing) into the component's `wisp:function/event-handler`
/// export. See `wisp_sdk::event_handler`.
#[proc_macro_attribute]
pub fn event_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    if !attr.is_empty() {
        return syn::Error::new(attr.span(), "#[wisp_sdk::event_handler] takes no arguments")
            .to_compile_error()
            .into();
    }
    let function = syn::parse_macro_input!(item as ItemFn);
    match expand_event_handler(&function) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#function #error).into()
        }
    }
}

fn expand_event_handler(function: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    check_common(function, "an event handler")?;
    let sig = &function.sig;
    if sig.inputs.len() != 1 {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "an event handler takes one argument: `fn name(event: wisp_sdk::Event) -> Result<(), E>`",
        ));
    }
    let name = &sig.ident;
    let call = if sig.asyncness.is_some() {
        quote!(call_async)
    } else {
        quote!(call_sync)
    };
    // As for `#[handler]`, the export is the SDK's to write; a second event
    // handler in the crate fails to link with a duplicate export.
    Ok(quote! {
        #function

        ::wisp_sdk::__private::export_event_handler!(#name, #call);
    })
}

/// What every handler must be: a free, non-generic, safe Rust function.
fn check_common(function: &ItemFn, what: &str) -> syn::Result<()> {
    let sig = &function.sig;
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new(
            constness.span(),
            format!("{what} cannot be `const`"),
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        return Err(syn::Error::new(
            unsafety.span(),
            format!("{what} cannot be `unsafe`"),
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new(
            abi.span(),
            format!("{what} cannot declare an ABI"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            format!("{what} cannot be generic"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            format!("{what} cannot be variadic"),
        ));
    }
    if let Some(receiver) = sig.inputs.iter().find(|a| matches!(a, FnArg::Receiver(_))) {
        return Err(syn::Error::new(
            receiver.span(),
            format!("{what} must be a free function, not a method"),
        ));
    }
    Ok(())
}

fn check_signature(function: &ItemFn) -> syn::Result<()> {
    check_common(function, "a handler")?;
    if let ReturnType::Default = function.sig.output {
        return Err(syn::Error::new(
            function.sig.ident.span(),
            "a handler must return a response: `-> impl IntoResponse`",
        ));
    }
    Ok(())
}
