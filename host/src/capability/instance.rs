//! What the capabilities keep in one plugin instance between its host calls: the
//! plugin's grants, what this message used of its quotas, the resource table, and
//! each capability's per-instance state (leases held, claims made, the request being
//! answered, outbound HTTP). The runtime's `Store` data holds one [`InstanceState`]
//! and hands it out through [`HoldsInstanceState`]; each capability's `link` builds
//! its own view from it, so the runtime names no capability's view.

use super::http::HttpHooks;
use super::messaging::Answering;
use super::store::Claim;
use super::{PluginContext, Usage};
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::WasiHttpCtx;

/// One instance's share of the capabilities (see the module doc).
pub struct InstanceState {
    /// The plugin's limits and grants.
    pub plugin: Arc<PluginContext>,
    /// What the current message used of its quotas.
    pub usage: Usage,
    /// Resources handed to the guest (leases, buckets, HTTP requests and bodies).
    pub table: ResourceTable,
    /// `lock`: leases not yet released, token → namespaced key.
    pub leases: HashMap<String, String>,
    /// `store`: the claims this message made; deleted unless it ends `ok`.
    pub claims: Vec<Claim>,
    /// `messaging`: the request the message being handled makes, answered once.
    pub answering: Option<Answering>,
    /// `cache`: the instance runs a cache loader (which may not read through one).
    pub in_loader: bool,
    /// `http`: outbound requests, held to the plugin's grants.
    pub http: HttpHooks,
    /// `http`: wasmtime-wasi-http's own per-instance state.
    pub http_ctx: WasiHttpCtx,
}

/// The `Store` data of a plugin instance: where its [`InstanceState`] is.
pub trait HoldsInstanceState: Send + 'static {
    /// This instance's share of the capabilities.
    fn instance_state(&mut self) -> &mut InstanceState;
}

impl InstanceState {
    /// Nothing used yet, for an instance of `plugin`.
    pub fn new(plugin: Arc<PluginContext>) -> Self {
        Self {
            usage: Usage::within(plugin.limits.max_host_calls),
            table: ResourceTable::new(),
            leases: HashMap::new(),
            claims: Vec::new(),
            answering: None,
            in_loader: false,
            http: HttpHooks::new(plugin.http.clone()),
            http_ctx: super::http::context(),
            plugin,
        }
    }

    /// Readies a reused instance for its next message: what the last one used and its
    /// request are forgotten. (Leases and claims were settled when it ended.)
    pub fn next_message(&mut self) {
        self.usage = Usage::within(self.plugin.limits.max_host_calls);
        self.answering = None;
        self.http.next_message();
    }

    /// Ends a message: every lease still held is released, and the claims it made are
    /// kept when `keep_claims` (it ended `ok`) or deleted.
    pub async fn settle(&mut self, keep_claims: bool) {
        super::lock::view(self).release_all().await;
        let mut store = super::store::view(self);
        match keep_claims {
            true => store.confirm_claims().await,
            false => store.release_claims().await,
        }
    }

    /// What the message used (the quotas it ran into included), leaving a fresh usage.
    pub fn take_usage(&mut self) -> Usage {
        self.usage.over.http_requests |= self.http.over;
        let fresh = Usage::within(self.plugin.limits.max_host_calls);
        std::mem::replace(&mut self.usage, fresh)
    }
}
