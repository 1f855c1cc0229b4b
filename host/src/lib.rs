//! # techub-host: runs TecHub business consumers as sandboxed WebAssembly components
//!
//! Plugins are components of the `techub:platform/plugin` world (see `wit/`). The host
//! loads them from a directory, subscribes each to its queues, and runs every message
//! through a fresh instance under per-plugin limits, giving it cache, store, locks and
//! messaging over the backends `host.toml` selects.
//!
//! # Layout
//! - [`config`]: `host.toml` schema, the specification's defaults, validation.
//! - [`bindings`]: the one `bindgen!` of the world.
//! - [`runtime`]: engine (pooling allocator, epochs), compilation, per-message
//!   instances and their limits, captured guest output.
//! - [`capability`]: one directory per imported interface: backend trait, WIT `Host`
//!   impl, the memory backend, and the Redis (`redis_client`) or RabbitMQ ones.
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
//! - [`platform`]: everything above, started together; reload and graceful stop.
//! - [`schedules`]: `[schedules.<name>]`, messages published on the clock, once per
//!   tick across hosts.
//! - [`webhooks`]: `[webhooks]`, providers' webhooks verified and published, on
//!   their own listener.
//! - [`stand_ins`]: local stand-ins for a mail provider, a payment gateway and a
//!   webhook endpoint (`[stand_ins]`: the demo, `cargo xtask run`, tests).
//! - [`admin`]: the HTTP endpoint (health, plugins, publish, dead letters) and the
//!   client the `techub-host` subcommands use.

pub mod admin;
pub mod bindings;
pub mod cache_events;
pub mod cache_warm;
pub mod capability;
pub mod config;
pub mod dispatch;
pub mod metrics;
pub mod names;
pub mod platform;
pub mod plugins;
pub mod registry;
pub mod runtime;
pub mod schedules;
pub mod stand_ins;
pub mod watch;
pub mod webhooks;

pub use config::HostConfig;
pub use platform::Platform;
