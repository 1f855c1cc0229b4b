//! The one `bindgen!` of the `plugin` world.
//!
//! Imports are async (backends are network clients) and trappable, so a host function
//! can tell a broken host invariant (a trap) from an error the guest handles (the
//! interface's WIT error). The lease resource is backed by
//! [`crate::capability::lock::LeaseState`].

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "techub:platform/lock.lease": crate::capability::lock::LeaseState,
    },
});

pub use exports::techub::platform::handler::{Delivery, Outcome, Subscription};
