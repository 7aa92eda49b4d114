//! The `#[task]` and `#[graphile_worker::test]` attributes of
//! graphile-worker. Use them through `graphile_worker::task` and
//! `graphile_worker::test`, which document them; this crate is an
//! implementation detail. `#[task]`'s expansion refers to
//! `::graphile_worker::__private` only, `test`'s to
//! `::graphile_worker::testing`.
//!
//! `#[task]` is three steps, each returning `syn::Result`: `args` parses the
//! attribute, `signature` checks the function and splits its parameters,
//! `expand` writes the code. Errors become `compile_error!`s at the user's
//! tokens, next to the user's function, which is always emitted.

use proc_macro::TokenStream;

mod args;
mod duration;
mod expand;
mod signature;
mod test_attr;

// Documented on the re-export, `graphile_worker::task`, whose doctests can
// use the runtime crate; a doc comment here would be appended to that page.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(attr.into(), item.into()).into()
}

// Documented on the re-export, `graphile_worker::test`.
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    test_attr::test(attr.into(), item.into()).into()
}
