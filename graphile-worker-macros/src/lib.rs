//! The `#[task]` attribute of graphile-worker. Use it through
//! `graphile_worker::task`; this crate is an implementation detail.

use proc_macro::TokenStream;

/// Turns an async fn into a registered graphile-worker task. See
/// `graphile_worker::task` for the documentation.
#[proc_macro_attribute]
pub fn task(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
