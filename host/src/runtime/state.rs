//! What one plugin instance carries in its `Store`: WASI (granting nothing), its
//! resource table, memory limits, the plugin's context and what this message used.

use super::clock::Clock;
use super::output::GuestOutput;
use crate::capability::cache::CacheView;
use crate::capability::config::ConfigView;
use crate::capability::http::HttpHooks;
use crate::capability::keyvalue::KeyValueView;
use crate::capability::lock::LockView;
use crate::capability::log::LogView;
use crate::capability::messaging::{Answering, MessagingView};
use crate::capability::store::StoreView;
use crate::capability::{PluginContext, Usage};
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The `T` of `Store<T>` for plugin instances.
pub struct PluginState {
    pub(crate) plugin: Arc<PluginContext>,
    pub(crate) usage: Usage,
    pub(crate) limits: MemoryLimits,
    pub(crate) output: GuestOutput,
    pub(crate) table: ResourceTable,
    /// Leases not yet released: token → namespaced key.
    pub(crate) held_leases: HashMap<String, String>,
    /// Namespaced keys of the `store.claim`s this invocation made; deleted unless it
    /// ends `ok`.
    pub(crate) claims: Vec<crate::capability::store::Claim>,
    /// Guest and host time of this invocation.
    pub(crate) clock: Clock,
    /// The request the message being handled makes, which it may answer once.
    pub(crate) answering: Option<Answering>,
    /// Whether this instance runs a cache loader (which may not read through one).
    pub(crate) in_loader: bool,
    /// Its outbound HTTP requests (`wasi:http`), held to the plugin's grants.
    pub(crate) http: HttpHooks,
    http_ctx: WasiHttpCtx,
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
        let limits = plugin.limits;
        let plugin_http = plugin.http.clone();
        let memory_bytes = limits.memory_mib as usize * 1024 * 1024;
        Self {
            plugin,
            usage: Usage::within(limits.max_host_calls),
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
            table: ResourceTable::new(),
            held_leases: HashMap::new(),
            claims: Vec::new(),
            clock: Clock::start(),
            answering: None,
            in_loader: false,
            http: HttpHooks::new(plugin_http),
            http_ctx: crate::capability::http::context(),
            wasi,
        }
    }

    /// Readies a reused instance for its next message: what the last one used,
    /// its clock and its request are forgotten. (Leases, claims and output were
    /// settled when it ended.)
    pub(crate) fn next_message(&mut self) {
        self.usage = Usage::within(self.plugin.limits.max_host_calls);
        self.clock = Clock::start();
        self.answering = None;
        self.limits.refused = false;
        self.http.next_message();
    }

    // The views each capability is linked with: each borrows its own grant from the
    // plugin's context, and only what else of this instance it needs.

    pub(crate) fn cache(&mut self) -> CacheView<'_> {
        CacheView::new(&self.plugin.cache, &mut self.usage, self.in_loader)
    }

    pub(crate) fn store(&mut self) -> StoreView<'_> {
        StoreView::new(&self.plugin.store, &mut self.usage, &mut self.claims)
    }

    pub(crate) fn keyvalue(&mut self) -> KeyValueView<'_> {
        KeyValueView::new(
            &self.plugin.keyvalue,
            &mut self.usage,
            &mut self.claims,
            &mut self.table,
        )
    }

    pub(crate) fn lock(&mut self) -> LockView<'_> {
        LockView::new(
            &self.plugin.lock,
            &mut self.usage,
            &mut self.table,
            &mut self.held_leases,
        )
    }

    pub(crate) fn messaging(&mut self) -> MessagingView<'_> {
        MessagingView::new(&self.plugin.messaging, &mut self.usage, &mut self.answering)
    }

    pub(crate) fn config(&mut self) -> ConfigView<'_> {
        ConfigView::new(&self.plugin.settings, &mut self.usage)
    }

    pub(crate) fn log(&mut self) -> LogView<'_> {
        LogView::new(&self.plugin.log, &mut self.usage)
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
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}
