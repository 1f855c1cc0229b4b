//! # techub-guest: write TecHub plugins in Rust
//!
//! A plugin is a WebAssembly component that consumes messages. It declares its queue
//! with the [`handler`] attribute and reaches the platform through the modules below;
//! the host runs every message in a fresh instance under the plugin's quotas.
//!
//! ```ignore
//! use techub_guest::prelude::*;
//!
//! #[handler(queue = "notification", routing_keys = ["user.created"])]
//! fn on_user_created(message: Message) -> Result<(), Failure> {
//!     let user: serde_json::Value = message.json()?;
//!     cache::set_json(Domain::USERS, "42", &user, &EntryOptions::default())?;
//!     Ok(())
//! }
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` and drop the `.wasm` into
//! the host's plugins directory.
//!
//! # Layout
//! - [`handler`]: the attribute macro that exports your function; [`service`] for
//!   several, [`loader`] for a cache loader.
//! - [`message`]: [`Message`] (a delivery), [`Outcome`] and [`Failure`].
//! - [`cache`]: the shared domain cache ([`cache::Domain`] has the seed's 14 domains).
//! - [`store`]: Redis data structures in the plugin's own namespace.
//! - [`lock`]: distributed locks whose [`lock::Lease`] releases on drop.
//! - [`messaging`]: publishing events to `techub.main`.
//! - [`log`] and [`config`]: the host's log, and this plugin's settings and secrets.
//! - [`http`]: outbound HTTP to the origins `host.toml` grants (`wasi:http`).
//! - [`events`]: the example business flow's events, typed (the README's table).
//! - `wit` (hidden): the generated bindings; use the modules above instead.
#![deny(missing_docs)]

// The generated bindings name this crate by its absolute path, from inside it too.
extern crate self as techub_guest;

pub mod cache;
pub mod config;
pub mod events;
pub mod http;
pub mod lock;
pub mod log;
pub mod message;
pub mod messaging;
mod native;
pub mod store;

pub use message::{Failure, Message, MessageBuilder, Outcome};
/// Exports a function as the plugin's message handler and declares its subscription.
///
/// `#[handler(queue = "order", routing_keys = ["order.created", "order.*.paid"])]` on a
/// `fn(Message) -> R`, where `R` is [`Outcome`] or `Result<(), E>` with `E:
/// Into<Failure>` (every SDK error converts: unavailable backends become retries, bad
/// input becomes a rejection). A panic in the handler traps the instance, which the host
/// counts as a retry.
///
/// `publishes = ["order.confirmed", "notification.email"]` declares the routing keys
/// the handler publishes to: the host refuses the plugin at load, and `techub-host
/// check` says why, when one is outside its `[plugins.<name>].publish` grant, instead
/// of the publish failing mid-handler after earlier effects went out. Publishes not
/// declared are checked as they are made.
pub use techub_guest_macros::handler;
/// Exports a function as the plugin's cache loader: the host calls it on a
/// [`cache::get_or_load`] miss in a domain `host.toml` names this plugin the loader of
/// (`[cache.loaders] products = "catalog"`), and to warm the domain
/// (`[cache.warm.products]`). It runs in its own instance under this plugin's quotas.
///
/// The function takes the domain and the keys and returns one answer per key, in
/// order: `Some(`[`cache::Loaded`]`)` to cache and return, `None` when the key has no
/// value. An error fails the readers waiting on it (they get
/// [`cache::CacheError::LoaderFailed`]). Alone, `#[loader]` makes a plugin that only
/// loads; with handlers, put it in the [`service`] module beside them.
///
/// ```ignore
/// use techub_guest::prelude::*;
///
/// #[loader]
/// fn load(domain: &str, keys: &[String]) -> Result<Vec<Option<cache::Loaded>>, String> {
///     Ok(keys.iter().map(|key| Some(cache::Loaded::new(format!("{domain}:{key}")))).collect())
/// }
/// ```
pub use techub_guest_macros::loader;
/// Exports a module of several [`handler`]s as one plugin, one handler per queue type
/// (the specification's service class with several `@RabbitMQHandler` methods); each
/// delivery goes to the handler of its queue type. Handlers must be `pub` (or
/// `pub(crate)`) in the module.
///
/// ```ignore
/// #[techub_guest::service]
/// mod notifications {
///     use techub_guest::prelude::*;
///
///     #[handler(queue = "email")]
///     pub fn email(message: Message) -> Result<(), Failure> { Ok(()) }
///
///     #[handler(queue = "sms", routing_keys = ["user.created"])]
///     pub fn sms(message: Message) -> Result<(), Failure> { Ok(()) }
/// }
/// ```
pub use techub_guest_macros::service;

/// The usual imports of a plugin.
pub mod prelude {
    pub use crate::cache::{self, Domain, EntryOptions};
    pub use crate::lock::{self, LockOptions};
    pub use crate::messaging::{self, Priority, PublishOptions};
    pub use crate::{Failure, Message, Outcome};
    pub use crate::{config, handler, loader, log, service, store};
}

#[doc(hidden)]
pub mod wit {
    #![allow(missing_docs, reason = "generated code; documented by the wrappers")]
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "::techub_guest::wit",
        runtime_path: "::techub_guest::__private::wit_bindgen::rt",
        generate_all,
    });
}

/// Used by the code the [`handler`] macro expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::message::IntoOutcome;
    pub use crate::wit::exports::techub::platform::handler as exported;
    pub use wit_bindgen;
}
