//! `#[loader] fn load(domain: &str, keys: &[String]) -> Result<Vec<Option<Loaded>>, E>`:
//! the component's `loader` export, which the host calls to fill cache misses and to
//! warm domains. The bindings of the export are generated here, in the plugin crate,
//! only when it has a loader: a plugin without one keeps the `plugin` world.

use proc_macro2::TokenStream;
use quote::quote;

/// The WIT package, as this crate sits in the repository (the SDK reads the same).
const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit");

/// The `loader` export calling the function at `path`.
pub fn export(path: TokenStream) -> TokenStream {
    quote! {
        #[doc(hidden)]
        mod __techub_loader {
            ::techub_guest::__private::wit_bindgen::generate!({
                world: "loader-export",
                path: #WIT_DIR,
                runtime_path: "::techub_guest::__private::wit_bindgen::rt",
            });

            use exports::techub::platform::loader::{Guest, Loaded};

            struct __TechubLoader;

            impl Guest for __TechubLoader {
                fn load(
                    domain: ::std::string::String,
                    keys: ::std::vec::Vec<::std::string::String>,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<::std::option::Option<Loaded>>,
                    ::std::string::String,
                > {
                    match super::#path(&domain, &keys) {
                        ::std::result::Result::Ok(answers) => ::std::result::Result::Ok(
                            answers
                                .into_iter()
                                .map(|answer| {
                                    answer.map(|answer| {
                                        let (value, ttl_seconds, tags) =
                                            ::techub_guest::cache::Loaded::into_parts(answer);
                                        Loaded { value, ttl_seconds, tags }
                                    })
                                })
                                .collect(),
                        ),
                        ::std::result::Result::Err(error) => ::std::result::Result::Err(
                            ::std::string::ToString::to_string(&error),
                        ),
                    }
                }
            }

            export!(__TechubLoader);
        }
    }
}

/// The `handler` export of a plugin that only loads: no subscriptions.
pub fn no_handler() -> TokenStream {
    let native_guard = crate::native_guard();
    quote! {
        #[doc(hidden)]
        struct __TechubPlugin;

        impl ::techub_guest::__private::exported::Guest for __TechubPlugin {
            fn subscriptions() -> ::std::vec::Vec<::techub_guest::__private::exported::Subscription> {
                ::std::vec::Vec::new()
            }

            fn handle(
                delivery: ::techub_guest::__private::exported::Delivery,
            ) -> ::techub_guest::__private::exported::Outcome {
                ::techub_guest::__private::exported::Outcome::Reject(::std::format!(
                    "this plugin only loads cache entries; it has no handler for {:?}",
                    delivery.queue
                ))
            }
        }

        ::techub_guest::wit::export!(__TechubPlugin with_types_in ::techub_guest::wit);
        #native_guard
    }
}
