//! A command component (`wasi:cli/run`) run as a plugin: how `cargo test` runs a
//! plugin crate's test binary (`techub-host test-runner`). The binary is linked
//! against the same world as the plugin's handlers, so the SDK calls its tests make
//! reach the plugin's real grants on this runtime's backends.

use super::engine::Runtime;
use super::state::PluginState;
use crate::capability::PluginContext;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::Component;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;

/// How a command ended.
#[derive(Debug, PartialEq, Eq)]
pub enum CommandExit {
    /// It returned, or called `exit`, with this code.
    Code(i32),
    /// It trapped: on wasm32 a Rust panic aborts, so this is how a failed assertion in
    /// a test ends the run. wasmtime's reason.
    Trapped(String),
    /// It reached the plugin's memory limit (MiB).
    OutOfMemory(u32),
}

impl Runtime {
    /// Compiles the command component at `path` and runs it as `plugin` to its end,
    /// with `args` (the first is the program's name) and this process's stdout and
    /// stderr. The plugin's memory limit holds; CPU, time and the other per-message
    /// budgets do not (a test run is many calls, not one message).
    pub async fn run_command(
        self: &Arc<Self>,
        path: &Path,
        plugin: Arc<PluginContext>,
        args: &[String],
    ) -> anyhow::Result<CommandExit> {
        let shown = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("could not read {shown}: {e}"))?;
        let engine = self.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await?
            .map_err(|e| anyhow::anyhow!("{shown} is not a valid WebAssembly component: {e:#}"))?;
        let command = self
            .linker
            .instantiate_pre(&component)
            .and_then(CommandPre::new)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{shown} is not a command against the techub:platform imports (a test binary built for wasm32-wasip2 with the techub SDK): {e:#}"
                )
            })?;
        let memory_mib = plugin.limits.memory_mib;
        let mut store = Store::new(&self.engine, PluginState::for_command(plugin, args));
        store.limiter(|state| &mut state.limits);
        // No CPU budget, but a long test must still let the executor run the host's
        // own tasks (the embedded backends' expiry, the HTTP pool).
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        let ran = match command.instantiate_async(&mut store).await {
            Ok(command) => command.wasi_cli_run().call_run(&mut store).await,
            Err(error) => Err(error),
        };
        Ok(match ran {
            Ok(Ok(())) => CommandExit::Code(0),
            Ok(Err(())) => CommandExit::Code(1),
            Err(error) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => CommandExit::Code(exit.0),
                None if store.data().limits.refused => CommandExit::OutOfMemory(memory_mib),
                // The root cause ("wasm `unreachable` instruction executed"), not
                // the wasm backtrace above it: the panic message names the place.
                None => CommandExit::Trapped(error.root_cause().to_string()),
            },
        })
    }
}
