//! The wasmtime side: one engine with the pooling allocator and epoch interruption,
//! components compiled on blocking threads, an `InstancePre` per plugin, and one fresh
//! instance per message under the plugin's limits (or, for a plugin that allows it,
//! one instance handed back for its next messages: `limits.reuse_instance`).
//!
//! Files: `engine.rs` (engine, linker, compilation), `component.rs` (a linked
//! component and its exports), `invoke.rs` (one call through a
//! fresh instance), `command.rs` (a command component run as a plugin: `cargo
//! test`'s runner), `state.rs` (what a `Store` carries), `clock.rs` (guest CPU, host
//! time), `slots.rs` (pool slots handed out by priority), `output.rs` (captured
//! stdout/stderr), `cache.rs` (compiled components on disk).

mod cache;
mod clock;
mod command;
mod component;
mod engine;
mod invoke;
mod output;
mod slots;
mod state;

pub use crate::capability::Usage;
pub use cache::{CompiledCache, content_hash, short_version};
pub use command::CommandExit;
pub use component::ComponentPre;
pub use engine::{LoadError, Runtime};
pub use invoke::{InvocationError, InvocationReport, Teardown, mask_outcome, outcome_of};
pub use output::OutputCounts;
pub use slots::{Slot, Slots};
pub use state::PluginState;
