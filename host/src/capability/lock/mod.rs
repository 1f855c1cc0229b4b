//! `lock`: distributed locks with leases, fencing tokens and safe release.
//!
//! A [`LockBackend`] grants a key to a random token for a TTL and hands out a fencing
//! token that grows with every grant of the key. The host layer (`host.rs`) namespaces
//! names, enforces the seed's limits, retries, and releases every lease an instance
//! still holds when it ends.
//!
//! Wiring: [`connect`] opens the locks `host.toml` selects; [`LockGrant`] is what one
//! plugin's view reaches of them; [`link`] links the interface.

mod host;
pub mod memory;
pub mod redis;

use super::BackendResult;
use crate::config::{HostConfig, KvBackend, LockConfig};
use std::sync::Arc;

pub use host::{HasLock, LockFailure, LockView};
use std::time::{Duration, Instant};

/// Grants of keys to tokens.
#[async_trait::async_trait]
pub trait LockBackend: Send + Sync {
    /// Grants `key` to `token` for `ttl` if nobody holds it; the new fencing token, or
    /// `None` when it is held. Fencing tokens come from the counter `fence`, which the
    /// host shares among all locks of a plugin: tokens still grow for every lock, and
    /// the counters stay one per plugin instead of one per lock name ever used.
    async fn try_acquire(
        &self,
        key: &str,
        fence: &str,
        token: &str,
        ttl: Duration,
    ) -> BackendResult<Option<u64>>;
    /// Releases `key` if `token` holds it; whether it did.
    async fn release(&self, key: &str, token: &str) -> BackendResult<bool>;
    /// Sets the TTL of `key` to `ttl` if `token` holds it; whether it did.
    async fn extend(&self, key: &str, token: &str, ttl: Duration) -> BackendResult<bool>;
}

/// The host side of a `lease` resource.
#[derive(Debug)]
pub struct LeaseState {
    /// The name the guest gave.
    pub name: String,
    /// The namespaced key.
    pub key: String,
    /// The random token that holds the key.
    pub token: String,
    /// The fencing token of this grant.
    pub fence: u64,
    /// When the lease runs out unless extended.
    pub expires_at: Instant,
    /// Whether it was released.
    pub released: bool,
}

/// The locks `config` selects: embedded, or on `redis`.
pub fn connect(
    config: &HostConfig,
    redis: Option<&crate::capability::redis_client::RedisClient>,
) -> Arc<dyn LockBackend> {
    match (config.backends.lock, redis) {
        (KvBackend::Redis, Some(redis)) => Arc::new(redis::RedisLocks::new(redis.clone())),
        _ => Arc::new(memory::MemoryLocks::new()),
    }
}

/// What one plugin's `lock` view reaches: its namespace and fencing counter, the
/// limits of leases, and the locks. Nothing of another capability, nor the rest of
/// the configuration.
pub struct LockGrant {
    /// The plugin's name, for the log.
    plugin: String,
    /// Prefix of its lock names: `<key_prefix>lock:<name>:`.
    pub prefix: String,
    /// The fencing counter of its locks: `<key_prefix>lock-fence:<name>`.
    pub fence: String,
    /// `host.max_key_length`.
    max_key_length: usize,
    /// `[lock]`.
    limits: LockConfig,
    /// The plugin's `limits.max_leases`.
    max_leases: u32,
    /// The locks.
    backend: Arc<dyn LockBackend>,
}

impl LockGrant {
    /// `plugin`'s grant under `config`; `layout` groups its keys on a Redis Cluster.
    pub fn new(
        plugin: &str,
        config: &HostConfig,
        layout: crate::capability::redis_client::KeyLayout,
        backend: Arc<dyn LockBackend>,
    ) -> Self {
        let prefix = &config.host.key_prefix;
        // Its locks share the slot of its fencing counter, which every acquire
        // increments in the same script (on a cluster `<name>` is `{<name>}`).
        Self {
            plugin: plugin.to_string(),
            prefix: format!("{prefix}lock:{}:", layout.group(plugin)),
            fence: format!("{prefix}lock-fence:{}", layout.group(plugin)),
            max_key_length: config.host.max_key_length,
            limits: config.lock,
            max_leases: config.limits_of(plugin).max_leases,
            backend,
        }
    }
}

/// The view of an instance's `state` this capability's host functions run on.
pub(crate) fn view(state: &mut crate::capability::InstanceState) -> LockView<'_> {
    LockView::new(
        &state.plugin.lock,
        &mut state.usage,
        &mut state.table,
        &mut state.leases,
    )
}

/// Links `lock` with [`LockView`], the [`view`] of an instance's state.
pub fn link<T: crate::capability::HoldsInstanceState>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    let of_instance: fn(&mut T) -> LockView<'_> = |data| view(data.instance_state());
    crate::capability::bindings::techub::platform::lock::add_to_linker::<T, HasLock>(
        linker,
        of_instance,
    )
}
