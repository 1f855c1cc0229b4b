//! `#[service] mod name { #[handler(..)] fn a(..) .. #[handler(..)] fn b(..) .. }`: one
//! plugin, several handlers (the specification's service with several
//! `@RabbitMQHandler` methods). Every `#[handler]` inside is taken off its function and
//! becomes one subscription; the export dispatches each delivery by its queue type. A
//! `#[loader]` inside becomes the plugin's `loader` export.

use super::HandlerArgs;
use proc_macro2::TokenStream;
use quote::quote;
use syn::{Item, ItemMod, LitStr};

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return syn::Error::new_spanned(args, "#[service] takes no arguments").to_compile_error();
    }
    let mut module: ItemMod = match syn::parse2(item) {
        Ok(module) => module,
        Err(error) => return error.to_compile_error(),
    };
    let Some((_, items)) = module.content.as_mut() else {
        return syn::Error::new_spanned(&module, "#[service] needs a module with a body")
            .to_compile_error();
    };
    // (queue type, (routing keys, declared publishes), handler function)
    #[allow(clippy::type_complexity)]
    let mut handlers: Vec<(LitStr, (Vec<LitStr>, Vec<LitStr>), syn::Ident)> = Vec::new();
    let mut loader: Option<syn::Ident> = None;
    for item in items.iter_mut() {
        let Item::Fn(function) = item else { continue };
        if let Some(at) = function.attrs.iter().position(|a| {
            a.path()
                .segments
                .last()
                .is_some_and(|s| s.ident == "loader")
        }) {
            let attribute = function.attrs.remove(at);
            if loader.is_some() {
                return syn::Error::new_spanned(attribute, "a plugin has at most one #[loader]")
                    .to_compile_error();
            }
            loader = Some(function.sig.ident.clone());
            continue;
        }
        let Some(at) = function.attrs.iter().position(|a| {
            a.path()
                .segments
                .last()
                .is_some_and(|s| s.ident == "handler")
        }) else {
            continue;
        };
        let attribute = function.attrs.remove(at);
        let mut parsed = HandlerArgs::default();
        if let syn::Meta::List(list) = &attribute.meta
            && let Err(error) = list.parse_args_with(parsed.parser())
        {
            return error.to_compile_error();
        }
        let Some(queue) = parsed.queue else {
            return syn::Error::new_spanned(&attribute, "#[handler] needs `queue = \"...\"`")
                .to_compile_error();
        };
        if let Some((seen, _, _)) = handlers.iter().find(|(q, _, _)| q.value() == queue.value()) {
            let message = format!(
                "queue type {:?} has a handler already; list every routing key in one handler",
                seen.value()
            );
            return syn::Error::new_spanned(&queue, message).to_compile_error();
        }
        handlers.push((
            queue,
            (parsed.routing_keys, parsed.publishes),
            function.sig.ident.clone(),
        ));
    }
    let module_name = &module.ident;
    let loader_export = match &loader {
        Some(name) => super::loader::export(quote! { #module_name::#name }),
        None => TokenStream::new(),
    };
    if handlers.is_empty() {
        if loader.is_some() {
            let handler = super::loader::no_handler();
            return quote! { #module #loader_export #handler };
        }
        return syn::Error::new_spanned(
            &module.ident,
            "#[service] needs at least one #[handler] or #[loader] fn",
        )
        .to_compile_error();
    }
    let subscriptions = handlers.iter().map(|(queue, (keys, publishes), _)| {
        quote! { ::techub_guest::message::subscription_publishing(#queue, &[#(#keys),*], &[#(#publishes),*]) }
    });
    let arms = handlers.iter().map(|(queue, _, name)| {
        quote! {
            #queue => ::techub_guest::__private::IntoOutcome::into_outcome(
                #module_name::#name(::techub_guest::Message::from_delivery(delivery)),
            ),
        }
    });
    let native_guard = crate::native_guard();
    quote! {
        #module
        #loader_export

        #[doc(hidden)]
        struct __TechubPlugin;

        impl ::techub_guest::__private::exported::Guest for __TechubPlugin {
            fn subscriptions() -> ::std::vec::Vec<::techub_guest::__private::exported::Subscription> {
                ::std::vec![#(#subscriptions),*]
            }

            fn handle(
                delivery: ::techub_guest::__private::exported::Delivery,
            ) -> ::techub_guest::__private::exported::Outcome {
                match delivery.queue.as_str() {
                    #(#arms)*
                    // The host delivers only the queue types subscribed above.
                    other => ::techub_guest::__private::exported::Outcome::Reject(
                        ::std::format!("no handler for queue type {other:?}"),
                    ),
                }
            }
        }

        ::techub_guest::wit::export!(__TechubPlugin with_types_in ::techub_guest::wit);
        #native_guard
    }
}
