//! `cache`: the shared, domain-aware cache.
//!
//! The host layer (`host.rs`) checks grants, keys, sizes and quotas and keeps the
//! hit/miss counters (`stats.rs`, per minute, in Redis when the cache is); a
//! [`CacheBackend`] stores entries per domain with a TTL and tags; `read_through.rs`
//! fills misses through the domains' loaders, once per key across callers and hosts;
//! `l1/` keeps in-process copies of chosen domains of the cache on Redis, coherent
//! across hosts through Redis pub/sub.
//!
//! Wiring: [`connect`] builds the cache `host.toml` selects (with its statistics and
//! read-through); [`CacheGrant`] is what one plugin's view reaches of it; [`link`]
//! links the interface.

mod host;
pub mod l1;
pub mod memory;
pub mod read_through;
pub mod redis;
mod stats;

use super::BackendResult;
use crate::config::{HostConfig, KvBackend};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub use crate::capability::bindings::techub::platform::cache::Priority;
pub use host::{CacheFailure, CacheView, HasCache};
pub use read_through::{LoadCounts, LoadLimits, LoadedEntry, Loaders, ReadThrough};
pub use stats::{CacheStats, Window};

/// An entry to write.
#[derive(Debug, Clone)]
pub struct CacheWrite {
    /// Time to live (never zero).
    pub ttl: Duration,
    /// Tags to file the entries under.
    pub tags: Vec<String>,
    /// Eviction weight: in the embedded cache and in an L1, lower priorities are
    /// evicted first (Redis keeps it for the L1s and evicts by its own policy).
    pub priority: Priority,
}

/// Storage of cache entries. Keys arrive validated; `domain` is a declared domain.
#[async_trait::async_trait]
pub trait CacheBackend: Send + Sync {
    /// Values of `keys`, in order; `None` for absent or expired entries.
    async fn get_many(&self, domain: &str, keys: &[String]) -> BackendResult<Vec<Option<Vec<u8>>>>;
    /// Writes entries, replacing previous ones (and their tag filings).
    async fn set_many(
        &self,
        domain: &str,
        entries: &[(String, Vec<u8>)],
        write: &CacheWrite,
    ) -> BackendResult<()>;
    /// Removes an entry; whether it existed.
    async fn delete(&self, domain: &str, key: &str) -> BackendResult<bool>;
    /// Whether an unexpired entry exists.
    async fn exists(&self, domain: &str, key: &str) -> BackendResult<bool>;
    /// Removes every entry of `domain` filed under `tag`; how many were removed.
    async fn invalidate_tag(&self, domain: &str, tag: &str) -> BackendResult<u64>;
    /// Removes every entry of `domain` whose key matches the Redis glob `pattern`.
    async fn invalidate_pattern(&self, domain: &str, pattern: &str) -> BackendResult<u64>;
    /// Removes the entries of `keys` and those filed under `tags`, together (one round
    /// trip on a server); how many went by key and how many by tag.
    async fn invalidate(
        &self,
        domain: &str,
        keys: &[String],
        tags: &[String],
    ) -> BackendResult<Invalidated> {
        let mut done = Invalidated::default();
        for key in keys {
            done.by_key += u64::from(self.delete(domain, key).await?);
        }
        for tag in tags {
            done.by_tag += self.invalidate_tag(domain, tag).await?;
        }
        Ok(done)
    }
    /// Bytes held and entries evicted per domain, for an in-process cache (Redis
    /// reports its own memory).
    fn usage(&self) -> Vec<DomainUsage> {
        Vec::new()
    }
}

/// What [`CacheBackend::invalidate`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Invalidated {
    /// Entries removed by key.
    pub by_key: u64,
    /// Entries removed by tag (not counting those already removed by key).
    pub by_tag: u64,
}

/// What an in-process cache holds of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainUsage {
    /// The domain.
    pub domain: String,
    /// Bytes of its keys, values and tags.
    pub bytes: u64,
    /// Entries evicted to stay in the budget, since start.
    pub evictions: u64,
}

/// Counters of one domain (or of several, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainStats {
    /// Reads that found an entry.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Entries written.
    pub sets: u64,
    /// Entries removed.
    pub deletes: u64,
}

/// The cache, connected: what every plugin's cache view and the host's own cache work
/// (invalidation events, warming, the admin endpoint) go through.
#[derive(Clone)]
pub struct CacheService {
    /// The entries.
    pub backend: Arc<dyn CacheBackend>,
    /// The cache on Redis with its L1s (the same object as `backend`), to reconfigure
    /// them; `None` on the embedded cache.
    pub l1: Option<Arc<l1::TwoLayerCache>>,
    /// Hit/miss counters per domain and minute.
    pub stats: Arc<CacheStats>,
    /// Read-through and warming through the domains' loaders.
    pub read_through: Arc<ReadThrough>,
}

/// The cache `config` selects: embedded, or on `redis` with the L1s it configures;
/// statistics kept where the entries are; read-through leasing loads with `locks`.
pub fn connect(
    config: &HostConfig,
    redis: Option<&crate::capability::redis_client::RedisClient>,
    locks: Arc<dyn crate::capability::lock::LockBackend>,
    metrics: Arc<crate::metrics::Metrics>,
) -> CacheService {
    let prefix = &config.host.key_prefix;
    let retention = Duration::from_secs(config.cache.stats_retention_s);
    let (backend, l1, stats): (Arc<dyn CacheBackend>, _, _) = match (config.backends.cache, redis) {
        (KvBackend::Redis, Some(redis)) => {
            let layered = l1::TwoLayerCache::new(
                redis::RedisCache::new(redis.clone(), prefix),
                &config.cache,
                &config.redis,
                metrics.clone(),
            );
            let stats = CacheStats::on_redis(metrics.clone(), retention, redis.clone(), prefix);
            (layered.clone(), Some(layered), stats)
        }
        _ => (
            Arc::new(memory::MemoryCache::new(
                (config.cache.memory_budget_mib * 1024 * 1024) as usize,
            )),
            None,
            CacheStats::in_process(metrics.clone(), retention),
        ),
    };
    let stats = Arc::new(stats);
    let read_through = Arc::new(ReadThrough::new(
        backend.clone(),
        locks,
        stats.clone(),
        metrics,
        prefix,
        redis.map(|r| r.layout()).unwrap_or_default(),
    ));
    CacheService {
        backend,
        l1,
        stats,
        read_through,
    }
}

/// What one plugin's `cache` view reaches: its granted domains, the cache's limits,
/// and the cache. Nothing of another capability, nor the rest of the configuration.
pub struct CacheGrant {
    /// The plugin's name, for the errors that tell it how to get a grant.
    plugin: String,
    /// Granted domain → default TTL in seconds.
    pub granted: BTreeMap<String, u32>,
    /// Every declared domain (an ungranted one is told apart from an unknown one).
    declared: BTreeSet<String>,
    /// `cache.max_bulk_keys`.
    max_bulk_keys: u32,
    /// The limits of entries and of loads (`domain_ttl` set per domain).
    limits: LoadLimits,
    /// The cache.
    pub service: CacheService,
}

impl CacheGrant {
    /// `plugin`'s grant under `config`.
    pub fn new(plugin: &str, config: &HostConfig, service: CacheService) -> Self {
        let section = config.plugins.get(plugin);
        let granted = section
            .map(|p| p.cache_domains.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|d| config.cache.domains.get(d).map(|ttl| (d.clone(), *ttl)))
            .collect();
        Self {
            plugin: plugin.to_string(),
            granted,
            declared: config.cache.domains.keys().cloned().collect(),
            max_bulk_keys: config.cache.max_bulk_keys,
            limits: LoadLimits::of(config, 0),
            service,
        }
    }

    /// The limits of a load into a domain of TTL `domain_ttl`.
    fn load_limits(&self, domain_ttl: u32) -> LoadLimits {
        LoadLimits {
            domain_ttl,
            ..self.limits
        }
    }
}

/// The view of an instance's `state` this capability's host functions run on.
pub(crate) fn view(state: &mut crate::capability::InstanceState) -> CacheView<'_> {
    CacheView::new(&state.plugin.cache, &mut state.usage, state.in_loader)
}

/// Links `cache` with [`CacheView`], the [`view`] of an instance's state.
pub fn link<T: crate::capability::HoldsInstanceState>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    let of_instance: fn(&mut T) -> CacheView<'_> = |data| view(data.instance_state());
    crate::capability::bindings::techub::platform::cache::add_to_linker::<T, HasCache>(
        linker,
        of_instance,
    )
}
