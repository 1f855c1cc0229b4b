//! What one plugin instance carries in its `Store`: WASI (granting nothing), memory
//! limits, its output and clock, and the capabilities' share of it
//! ([`InstanceState`]: the plugin's grants, what this message used, the resource
//! table, leases, claims, the request being answered, outbound HTTP).

use super::clock::Clock;
use super::output::GuestOutput;
use crate::capability::{HoldsInstanceState, InstanceState, PluginContext};
use std::sync::Arc;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The `T` of `Store<T>` for plugin instances.
pub struct PluginState {
    /// What the capabilities keep of this instance, their views built from it.
    pub(crate) capabilities: InstanceState,
    pub(crate) limits: MemoryLimits,
    pub(crate) output: GuestOutput,
    /// Guest and host time of this invocation.
    pub(crate) clock: Clock,
    wasi: WasiCtx,
}

impl PluginState {
    /// A fresh state for one message of `plugin`.
    pub fn new(plugin: Arc<PluginContext>) -> Self {
        let output = GuestOutput::new(plugin.limits.max_output_bytes as usize);
        // No preopens, no env, no args, no network: WASI grants only clocks, random
        // and the captured stdout/stderr.
        let wasi = WasiCtxBuilder::new()
            .stdout(output.stream("stdout"))
            .stderr(output.stream("stderr"))
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        Self::with_wasi(plugin, wasi, output)
    }

    /// The state of a command run as `plugin` (a plugin crate's test binary, see
    /// `Runtime::run_command`): the same grants, plus the host process's stdout and
    /// stderr and `args`, which a command needs and a handler must not have.
    pub(crate) fn for_command(plugin: Arc<PluginContext>, args: &[String]) -> Self {
        let output = GuestOutput::new(0);
        let wasi = WasiCtxBuilder::new()
            .inherit_stdout()
            .inherit_stderr()
            .args(args)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        Self::with_wasi(plugin, wasi, output)
    }

    fn with_wasi(plugin: Arc<PluginContext>, wasi: WasiCtx, output: GuestOutput) -> Self {
        let memory_bytes = plugin.limits.memory_mib as usize * 1024 * 1024;
        Self {
            capabilities: InstanceState::new(plugin),
            limits: MemoryLimits {
                inner: StoreLimitsBuilder::new()
                    .memory_size(memory_bytes)
                    .instances(16)
                    .tables(16)
                    .memories(4)
                    .trap_on_grow_failure(true)
                    .build(),
                peak: 0,
                refused: false,
            },
            output,
            clock: Clock::start(),
            wasi,
        }
    }

    /// The plugin this instance runs.
    pub(crate) fn plugin(&self) -> &Arc<PluginContext> {
        &self.capabilities.plugin
    }

    /// Readies a reused instance for its next message: what the last one used,
    /// its clock and its request are forgotten. (Leases, claims and output were
    /// settled when it ended.)
    pub(crate) fn next_message(&mut self) {
        self.capabilities.next_message();
        self.clock = Clock::start();
        self.limits.refused = false;
    }
}

impl HoldsInstanceState for PluginState {
    fn instance_state(&mut self) -> &mut InstanceState {
        &mut self.capabilities
    }
}

/// wasmtime's [`StoreLimits`], plus what the metrics and the failure reason need: the
/// largest memory reached, and whether a growth was refused (the plugin's memory limit,
/// told apart from other traps).
pub(crate) struct MemoryLimits {
    inner: StoreLimits,
    /// Largest linear memory granted, in bytes.
    pub(crate) peak: usize,
    /// A growth past the limit was refused.
    pub(crate) refused: bool,
}

impl ResourceLimiter for MemoryLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.inner.memory_growing(current, desired, maximum);
        match &granted {
            Ok(true) => self.peak = self.peak.max(desired),
            _ => self.refused = true,
        }
        granted
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.capabilities.table,
        }
    }
}
