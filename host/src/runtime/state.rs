//! What one plugin instance carries in its `Store`: WASI (granting nothing), its
//! resource table, memory limits, the plugin's context and what this message used.

use super::clock::Clock;
use super::output::GuestOutput;
use crate::plugins::PluginContext;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Per-message usage, checked against the plugin's [`crate::config::Limits`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    /// Host calls made (cache, store, lock, messaging).
    pub host_calls: u32,
    /// Messages published.
    pub publishes: u32,
    /// Leases currently held.
    pub leases: u32,
}

/// The `T` of `Store<T>` for plugin instances.
pub struct PluginState {
    pub(crate) plugin: Arc<PluginContext>,
    pub(crate) usage: Usage,
    pub(crate) limits: StoreLimits,
    pub(crate) output: GuestOutput,
    pub(crate) table: ResourceTable,
    /// Leases not yet released: token → namespaced key.
    pub(crate) held_leases: HashMap<String, String>,
    /// Namespaced keys of the `store.claim`s this invocation made; deleted unless it
    /// ends `ok`.
    pub(crate) claims: Vec<String>,
    /// Guest and host time of this invocation.
    pub(crate) clock: Clock,
    wasi: WasiCtx,
}

impl PluginState {
    /// A fresh state for one message of `plugin`.
    pub fn new(plugin: Arc<PluginContext>) -> Self {
        let limits = plugin.limits;
        let output = GuestOutput::new(limits.max_output_bytes as usize);
        // No preopens, no env, no args, no network: WASI grants only clocks, random
        // and the captured stdout/stderr.
        let wasi = WasiCtxBuilder::new()
            .stdout(output.stream("stdout"))
            .stderr(output.stream("stderr"))
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let memory_bytes = limits.memory_mib as usize * 1024 * 1024;
        Self {
            plugin,
            usage: Usage::default(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(16)
                .tables(16)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            output,
            table: ResourceTable::new(),
            held_leases: HashMap::new(),
            claims: Vec::new(),
            clock: Clock::start(),
            wasi,
        }
    }

    /// Counts one host call; `Err` with the reason once the quota is spent.
    pub(crate) fn charge_call(&mut self) -> Result<(), String> {
        self.usage.host_calls += 1;
        let max = self.plugin.limits.max_host_calls;
        if self.usage.host_calls > max {
            return Err(format!("more than {max} host calls for one message"));
        }
        Ok(())
    }

    /// Counts one host call of an import that has no error to return: past the
    /// quota, the instance traps (a runaway plugin, stopped like one over its CPU).
    pub(crate) fn charge_or_trap(&mut self) -> wasmtime::Result<()> {
        self.charge_call().map_err(wasmtime::Error::msg)
    }

    /// Deletes the claims of an invocation that did not end `ok`, so that a retry
    /// can claim again (and so do the work the failed attempt did not finish).
    pub(crate) async fn release_claims(&mut self) {
        let claims = std::mem::take(&mut self.claims);
        if claims.is_empty() {
            return;
        }
        if let Err(error) = self.plugin.services.store.delete(&claims).await {
            tracing::warn!(plugin = %self.plugin.name, %error, "could not release the claims of a failed invocation; they expire by their TTL");
        }
    }

    /// Drops what the invocation claimed without releasing it (it ended `ok`).
    pub(crate) fn keep_claims(&mut self) {
        self.claims.clear();
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
