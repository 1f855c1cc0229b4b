//! # techub-host: runs TecHub business consumers as sandboxed WebAssembly components
//!
//! Plugins are components of the `techub:platform/plugin` world (see `wit/`). The host
//! loads them from a directory, subscribes each to its queues, and runs every message
//! through a fresh instance under per-plugin limits, giving it cache, store, locks and
//! messaging over the backends `host.toml` selects.
//!
//! # Layout
//! - [`config`]: `host.toml` schema, the specification's defaults, validation.
//! - [`runtime`]: engine (pooling allocator, epochs), compilation, per-message
//!   instances and their limits, captured guest output; the handler a component
//!   consumes with (techub's, or `wasmcloud:messaging/handler`).
//! - [`capability`]: one directory per imported interface: its backend trait and
//!   backends, `connect` (the backend `host.toml` selects), its per-plugin grant (all
//!   its view may reach), its WIT `Host` impl on that view, and `link`; the standard
//!   interfaces (`wasi:keyvalue`, `wasi:config`, `wasi:logging`) are second faces of
//!   `store`, `config` and `log`, linked by the same `link`s.
//! - [`plugins`]: a `.wasm` file into a plugin version; each plugin's grants and
//!   namespaces.
//! - [`registry`]: each plugin's lifecycle: load, swap, drain; what `/plugins` shows.
//! - [`dispatch`]: consumers feeding handlers; ack, retry, dead-letter.
//! - [`cache_events`]: `[[cache.invalidate]]` rules, consumed by the host itself.
//! - [`cache_warm`]: `[cache.warm.<domain>]`, loaded at start and in rounds.
//! - [`metrics`]: the Prometheus metrics `/metrics` exposes.
//! - [`names`]: glob and routing-key patterns, key templates, name checks, queue
//!   names: a leaf shared by the configuration and the capabilities.
//! - [`watch`]: the plugins directory and `host.toml`, watched.
//! - [`services`]: the capabilities' services connected (`Services`), and each
//!   plugin's grants built from them: the capabilities' wiring.
//! - [`platform`]: everything above, started together: services, reload, the
//!   metrics poller, graceful stop.
//! - [`schedules`]: `[schedules.<name>]`, messages published on the clock, once per
//!   tick across hosts.
//! - [`webhooks`]: `[webhooks]`, providers' webhooks verified and published, on
//!   their own listener.
//! - [`stand_ins`]: local stand-ins for a mail provider, a payment gateway and a
//!   webhook endpoint (`[stand_ins]`: the demo, `cargo xtask run`, tests).
//! - [`admin`]: the HTTP endpoint (health, plugins, publish, dead letters) and the
//!   client the `techub-host` subcommands use.
//! - [`http1`]: one plain HTTP/1.1 request on its own connection (the admin client,
//!   RabbitMQ's management API).
//!
//! Leaves: [`config`], [`metrics`], [`names`] and [`http1`] import nothing of the host
//! above them, and no top-level module imports in a circle (`layers.rs` checks both).
//!
//! # The path of a message
//! 1. The broker (`capability/messaging/amqp/` or `memory.rs`) delivers it to the
//!    consumer of one plugin's subscription (`dispatch/mod.rs`, started by
//!    `registry/swap.rs`).
//! 2. `dispatch` pins the plugin's version current at arrival (`registry`'s
//!    `Versions`: a swap does not touch a delivery in flight) and its queue policy.
//! 3. `runtime/invoke.rs` runs it through an instance (fresh, or kept for reuse) in a
//!    pool slot, with the payload moved into the guest, under the version's limits.
//! 4. Each import the guest calls goes to its capability's view, built by the
//!    capability's `view` from the instance's `InstanceState`
//!    (`capability/instance.rs`, held by `runtime/state.rs`): the view holds only that
//!    capability's grant from the plugin's context (`capability/context.rs`) and the
//!    invocation's usage.
//! 5. The outcome settles the delivery (`dispatch/settle.rs`): ack, retry through the
//!    queue type's retry queue with back-off, or dead-letter with the reason; the
//!    report goes to the metrics (`runtime::InvocationReport::record`).
//!
//! # How to add a capability
//! 1. A folder `capability/<name>/` with: its backend trait and backends; `connect`
//!    (the backend `host.toml` selects, as a `<Name>Service`); a `<Name>Grant` with
//!    `new(plugin, config, service)` holding all a plugin's view may reach (its
//!    grants, limits, backend, prefix); a `<Name>View` over that grant and the
//!    instance's usage, with the WIT `Host` impl; `view(&mut InstanceState)`, which
//!    builds that view from an instance; and `link(linker)`. `cache/`, `store/`,
//!    `lock/`, `messaging/` and `http/` are the models.
//! 2. Its configuration section in `config/` (one `validate` per section), and its
//!    fields classified fixed or live in `config/live.rs` (the compiler asks).
//!    `config/` is a leaf, so the section cannot live in the capability's folder.
//! 3. Its registration: one line in `runtime/engine.rs`'s `link_capabilities`, and
//!    its wiring in `services/mod.rs` (its service's field and `connect`, its grant
//!    in `Services::context`) with the grant's field in `PluginContext`
//!    (`capability/context.rs`). A view that keeps state across one message's host
//!    calls (as `lock` keeps the leases held) adds it to `InstanceState`
//!    (`capability/instance.rs`), with its settling in `InstanceState::settle`.

pub mod admin;
pub mod cache_events;
pub mod cache_warm;
pub mod capability;
pub mod config;
pub mod dispatch;
pub mod http1;
#[cfg(test)]
mod layers;
pub mod metrics;
pub mod names;
pub mod platform;
pub mod plugins;
pub mod registry;
pub mod runtime;
pub mod schedules;
pub mod services;
pub mod stand_ins;
pub mod watch;
pub mod webhooks;

pub use capability::bindings;
pub use config::HostConfig;
pub use platform::Platform;
