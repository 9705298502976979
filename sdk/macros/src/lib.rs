//! The procedural macros of `wisp-sdk`. Use them through `wisp_sdk`
//! (`#[wisp_sdk::handler]`), which documents them; the expansion refers to
//! items of `wisp_sdk` that are not a stable API of their own.

use proc_macro::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType};

/// Turns `fn name(req: wisp_sdk::Request) -> impl IntoResponse` (or an
/// `async fn` of that shape) into the component's `wasi:http/incoming-handler`
/// export. See `wisp_sdk::handler`.
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
    let call = if function.sig.asyncness.is_some() {
        quote!(|request| ::wisp_sdk::block_on(#name(request)))
    } else {
        quote!(#name)
    };
    Ok(quote! {
        #function

        // In an anonymous const so the helper type cannot clash with the
        // crate's own names; the export itself is a symbol, so a second
        // handler in the crate fails to link with a duplicate export.
        const _: () = {
            struct WispHandler;

            impl ::wisp_sdk::__private::Guest for WispHandler {
                fn handle(
                    request: ::wisp_sdk::__private::IncomingRequest,
                    response_out: ::wisp_sdk::__private::ResponseOutparam,
                ) {
                    ::wisp_sdk::__private::serve(request, response_out, #call);
                }
            }

            ::wisp_sdk::__private::export!(WispHandler with_types_in ::wisp_sdk::__private);
        };
    })
}

fn check_signature(function: &ItemFn) -> syn::Result<()> {
    let sig = &function.sig;
    let shape = "expected `fn name(req: wisp_sdk::Request) -> impl IntoResponse` (or `async fn`)";
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new(
            constness.span(),
            "a handler cannot be `const`",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        return Err(syn::Error::new(
            unsafety.span(),
            "a handler cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new(
            abi.span(),
            "a handler cannot declare an ABI",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a handler cannot be generic",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(variadic.span(), shape));
    }
    match sig.inputs.len() {
        1 => {}
        0 => return Err(syn::Error::new(sig.paren_token.span.join(), shape)),
        _ => return Err(syn::Error::new(sig.inputs.span(), shape)),
    }
    if let Some(FnArg::Receiver(receiver)) = sig.inputs.first() {
        return Err(syn::Error::new(receiver.span(), shape));
    }
    if let ReturnType::Default = sig.output {
        return Err(syn::Error::new(
            sig.ident.span(),
            "a handler must return a response: `-> impl IntoResponse`",
        ));
    }
    Ok(())
}
