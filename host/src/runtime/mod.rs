//! The wasmtime side: one engine with the pooling allocator and epoch interruption,
//! components compiled on blocking threads, an `InstancePre` per plugin, and one fresh
//! instance per message under the plugin's limits.

mod clock;
mod engine;
mod invoke;
mod output;
mod slots;
mod state;

pub use engine::{LoadError, Runtime};
pub use invoke::{InvocationError, InvocationReport};
pub use output::OutputCounts;
pub use slots::{Slot, Slots};
pub use state::{PluginState, Usage};
