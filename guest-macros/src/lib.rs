//! # techub-guest-macros
//!
//! The `#[handler]` attribute of `techub-guest` (re-exported there; depend on
//! `techub-guest`, not on this crate).
//!
//! # Layout
//! - `handler`: parses `queue = "..", routing_keys = [..]` (keys optional) and expands to the
//!   component's `handler` export.
//! - `service` (`service.rs`): a module of several `#[handler]` functions, one per queue
//!   type, exported together; deliveries go to the function of their queue type; it
//!   may hold one `#[loader]` too.
//! - `loader` (`loader.rs`): the `loader` export (cache read-through and warming).

mod loader;
mod service;

use proc_macro::TokenStream;
use quote::quote;
use syn::{ItemFn, LitStr, parse_macro_input};

/// What one `#[handler(...)]` says: its queue type, routing keys, and the routing
/// keys it publishes to.
#[derive(Default)]
struct HandlerArgs {
    queue: Option<LitStr>,
    routing_keys: Vec<LitStr>,
    publishes: Vec<LitStr>,
}

impl HandlerArgs {
    fn parser(&mut self) -> impl syn::parse::Parser<Output = ()> + '_ {
        syn::meta::parser(move |meta| {
            if meta.path.is_ident("queue") {
                self.queue = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("routing_keys") || meta.path.is_ident("publishes") {
                let into = match meta.path.is_ident("publishes") {
                    true => &mut self.publishes,
                    false => &mut self.routing_keys,
                };
                let value = meta.value()?;
                let content;
                syn::bracketed!(content in value);
                let keys = content.parse_terminated(|p| p.parse::<LitStr>(), syn::Token![,])?;
                into.extend(keys);
                Ok(())
            } else {
                Err(meta.error(
                    "expected `queue = \"...\"`, `routing_keys = [\"...\"]` or `publishes = [\"...\"]`",
                ))
            }
        })
    }
}

/// See `techub_guest::handler`.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut parsed = HandlerArgs::default();
    let parser = parsed.parser();
    parse_macro_input!(args with parser);
    let HandlerArgs {
        queue,
        routing_keys,
        publishes,
    } = parsed;
    let function = parse_macro_input!(item as ItemFn);

    let Some(queue) = queue else {
        return syn::Error::new_spanned(&function.sig, "#[handler] needs `queue = \"...\"`")
            .to_compile_error()
            .into();
    };
    // Without routing keys the handler receives only what is sent to its queue type
    // (`messaging::send`): the host binds `queue.<type>` for every subscription.
    let name = &function.sig.ident;
    let native_guard = native_guard();

    quote! {
        #function

        #[doc(hidden)]
        struct __TechubPlugin;

        impl ::techub_guest::__private::exported::Guest for __TechubPlugin {
            fn subscriptions() -> ::std::vec::Vec<::techub_guest::__private::exported::Subscription> {
                ::std::vec![::techub_guest::message::subscription_publishing(#queue, &[#(#routing_keys),*], &[#(#publishes),*])]
            }

            fn handle(
                delivery: ::techub_guest::__private::exported::Delivery,
            ) -> ::techub_guest::__private::exported::Outcome {
                ::techub_guest::__private::IntoOutcome::into_outcome(
                    #name(::techub_guest::Message::from_delivery(delivery)),
                )
            }
        }

        ::techub_guest::wit::export!(__TechubPlugin with_types_in ::techub_guest::wit);
        #native_guard
    }
    .into()
}

/// A plugin is a WebAssembly component: a native build that is not a test (where
/// SDK calls cannot reach a host) stops with the command that builds it, instead of
/// a bare linker error or a binary that cannot run.
pub(crate) fn native_guard() -> proc_macro2::TokenStream {
    quote! {
        #[cfg(all(not(target_family = "wasm"), not(test), not(doc)))]
        ::core::compile_error!(
            "a techub plugin builds for wasm32-wasip2: `cargo build --release --target wasm32-wasip2` (or set it in .cargo/config.toml, as `techub-host new` does); natively, only `cargo test --target <host triple>` builds it"
        );
    }
}

/// See `techub_guest::service`.
#[proc_macro_attribute]
pub fn service(args: TokenStream, item: TokenStream) -> TokenStream {
    service::expand(args.into(), item.into()).into()
}

/// See `techub_guest::loader`.
#[proc_macro_attribute]
pub fn loader(args: TokenStream, item: TokenStream) -> TokenStream {
    let function = parse_macro_input!(item as ItemFn);
    if !args.is_empty() {
        let args = proc_macro2::TokenStream::from(args);
        return syn::Error::new_spanned(args, "#[loader] takes no arguments; name the domains it loads in host.toml's [cache.loaders]")
            .to_compile_error()
            .into();
    }
    let name = &function.sig.ident;
    let export = loader::export(quote! { #name });
    let handler = loader::no_handler();
    quote! {
        #function
        #export
        #handler
    }
    .into()
}
