//! `#[graphile_worker::test]`: an `async fn` test that gets a fresh,
//! migrated database, on a runtime of its own.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{FnArg, ItemFn, spanned::Spanned};

pub(crate) fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr, item) {
        Ok(tokens) => tokens,
        Err(e) => e.to_compile_error(),
    }
}

fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new(
            attr.span(),
            "#[graphile_worker::test] takes no arguments",
        ));
    }
    let function: ItemFn = syn::parse2(item)?;
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "#[graphile_worker::test] goes on an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a #[graphile_worker::test] function cannot be generic",
        ));
    }
    let inputs: Vec<&FnArg> = sig.inputs.iter().collect();
    let (params, runner) = match inputs.as_slice() {
        [] => (quote! {}, quote! { __run_test_without_db }),
        [FnArg::Typed(param)] => (quote! { #param }, quote! { __run_test }),
        [FnArg::Receiver(receiver)] => {
            return Err(syn::Error::new(
                receiver.span(),
                "a #[graphile_worker::test] function cannot take `self`",
            ));
        }
        [_, extra, ..] => {
            return Err(syn::Error::new(
                extra.span(),
                "a #[graphile_worker::test] function takes at most one parameter, the `TestDb`",
            ));
        }
    };
    let name = &sig.ident;
    let output = &sig.output;
    let body = &function.block;
    let attrs = &function.attrs;
    let vis = &function.vis;
    Ok(quote! {
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis fn #name() #output {
            async fn __graphile_worker_test(#params) #output #body
            ::graphile_worker::testing::#runner(
                ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
                __graphile_worker_test,
            )
        }
    })
}
