//! The one `bindgen!`: of the `loader-plugin` world, which is the `plugin` world plus
//! the optional `loader` export. The host looks each export up per component (see
//! [`crate::runtime::ComponentPre`]), so a plugin without a loader links as well.
//!
//! Imports are async (backends are network clients) and trappable. A function whose
//! WIT result has an error case returns the capability's [`crate::capability::Failure`]
//! of that error (`trappable_error_type`), so host code uses `?` for what the guest
//! should get and for what must trap alike. The lease resource is backed by
//! [`crate::capability::lock::LeaseState`].

wasmtime::component::bindgen!({
    path: "../wit",
    world: "loader-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    trappable_error_type: {
        "techub:platform/cache.cache-error" => crate::capability::cache::CacheFailure,
        "techub:platform/store.store-error" => crate::capability::store::StoreFailure,
        "techub:platform/lock.lock-error" => crate::capability::lock::LockFailure,
        "techub:platform/messaging.messaging-error" => crate::capability::messaging::MessagingFailure,
    },
    with: {
        "techub:platform/lock.lease": crate::capability::lock::LeaseState,
        // wasi:http and what it uses are wasmtime's, linked by capability/http.
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub use exports::techub::platform::handler::{Delivery, Outcome, Subscription};
pub use exports::techub::platform::loader::Loaded;
