//! The wasmtime side: one engine with the pooling allocator and epoch interruption,
//! components compiled on blocking threads, an `InstancePre` per plugin, and one fresh
//! instance per message under the plugin's limits.

mod engine;
mod invoke;
mod output;
mod state;

pub use engine::{LoadError, Runtime};
pub use invoke::{InvocationError, InvocationReport};
pub use state::{PluginState, Usage};
