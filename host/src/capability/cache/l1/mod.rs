//! The two-layer cache: the cache on Redis, with an in-process L1 in front of the
//! domains `[cache.l1.<domain>]` names.
//!
//! - `layer.rs`: one domain's copies (a priority-aware memory store with a byte
//!   budget) and the generation that keeps racing reads from filling stale copies;
//! - `channel.rs`: the invalidation channel (Redis pub/sub) and the self-ping that
//!   bounds how stale a copy can be served.
//!
//! Coherence, in order of events: a write, delete or invalidation on any host runs
//! a script on Redis that also publishes the keys it changed; the writing host drops
//! its own copies once Redis answers (it reads its own writes, and skips its own
//! messages); every other host drops them when the message arrives, which the self-ping bounds to
//! `cache.l1_max_stale_ms` after the write returned, or it stops serving from L1.
//! Reads of an L1 domain that miss read Redis with the entry's TTL, priority and tags
//! (one script) and keep a copy that expires with the entry.

mod channel;
mod layer;

use super::redis::RedisCache;
use super::{CacheBackend, CacheWrite, DomainUsage, Invalidated};
use crate::capability::BackendResult;
use crate::config::{CacheConfig, RedisConfig};
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use layer::Layer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The cache on Redis with its L1s.
pub struct TwoLayerCache {
    redis: RedisCache,
    layers: ArcSwap<HashMap<String, Arc<Layer>>>,
    freshness: channel::Freshness,
    metrics: Arc<Metrics>,
    retry_delay: Duration,
    /// The channel's task, started with the first L1 domain.
    channel: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Told when `[cache.l1]` changed, so that the channel listens to new domains.
    replanned: Arc<tokio::sync::Notify>,
    counts: L1CountCells,
}

/// What the L1s did since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct L1Counts {
    /// Keys an L1 answered.
    pub hits: u64,
    /// Keys an L1 did not hold (read from Redis).
    pub misses: u64,
    /// Keys read from Redis because the channel was not fresh enough to trust L1.
    pub bypassed: u64,
}

#[derive(Default)]
struct L1CountCells {
    hits: AtomicU64,
    misses: AtomicU64,
    bypassed: AtomicU64,
}

impl TwoLayerCache {
    /// The cache on Redis under `prefix`, with the L1s `config` names (none: every
    /// call goes straight to Redis).
    pub fn new(
        redis: RedisCache,
        config: &CacheConfig,
        redis_config: &RedisConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let cache = Arc::new(Self {
            redis,
            layers: ArcSwap::default(),
            freshness: channel::Freshness::new(Duration::from_millis(config.l1_max_stale_ms)),
            metrics,
            retry_delay: Duration::from_millis(redis_config.retry_delay_ms.max(50)),
            channel: Mutex::new(None),
            replanned: Arc::default(),
            counts: L1CountCells::default(),
        });
        cache.configure(config);
        cache
    }

    /// Applies `[cache.l1]` (at start and on reload): layers it names anew start
    /// empty, layers it no longer names are dropped, unchanged ones are kept.
    pub fn configure(self: &Arc<Self>, config: &CacheConfig) {
        self.freshness
            .set_max_stale(Duration::from_millis(config.l1_max_stale_ms));
        let current = self.layers.load();
        let layers: HashMap<String, Arc<Layer>> = config
            .l1
            .iter()
            .map(|(domain, l1)| {
                let layer = match current.get(domain) {
                    Some(layer) if layer.config == *l1 => layer.clone(),
                    _ => Arc::new(Layer::new(domain, l1)),
                };
                (domain.clone(), layer)
            })
            .collect();
        let any = !layers.is_empty();
        self.layers.store(Arc::new(layers));
        let mut task = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        if any && task.is_none() {
            *task = Some(tokio::spawn(channel::run(
                Arc::downgrade(self),
                self.redis.client().clone(),
                self.retry_delay,
            )));
        }
        // A running channel subscribes to domains named anew (sharded pub/sub).
        self.replanned.notify_one();
    }

    /// What the L1s did since start.
    pub fn counts(&self) -> L1Counts {
        L1Counts {
            hits: self.counts.hits.load(Ordering::Relaxed),
            misses: self.counts.misses.load(Ordering::Relaxed),
            bypassed: self.counts.bypassed.load(Ordering::Relaxed),
        }
    }

    /// Whether the L1s answer now (the channel proved itself within the bound).
    pub fn serving(&self) -> bool {
        self.freshness.fresh()
    }

    fn layer(&self, domain: &str) -> Option<Arc<Layer>> {
        self.layers.load().get(domain).cloned()
    }

    /// Drops every copy of every layer.
    async fn reset(&self) {
        let layers = self.layers.load_full();
        for layer in layers.values() {
            layer.clear().await;
        }
    }

    fn count(&self, outcome: &'static str, n: usize) {
        if n == 0 {
            return;
        }
        let cell = match outcome {
            "hit" => &self.counts.hits,
            "miss" => &self.counts.misses,
            _ => &self.counts.bypassed,
        };
        cell.fetch_add(n as u64, Ordering::Relaxed);
        self.metrics.cache_l1_read(outcome, n as u64);
    }

    /// Reads through `layer`: its copies when the channel is fresh, Redis (keeping
    /// copies) for the rest.
    async fn get_layered(
        &self,
        layer: &Layer,
        domain: &str,
        keys: &[String],
    ) -> BackendResult<Vec<Option<Vec<u8>>>> {
        let fresh = self.freshness.fresh();
        let mut values = match fresh {
            true => layer.get(keys).await,
            false => vec![None; keys.len()],
        };
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| values[i].is_none()).collect();
        match fresh {
            true => {
                self.count("hit", keys.len() - missing.len());
                self.count("miss", missing.len());
            }
            false => self.count("bypass", keys.len()),
        }
        if missing.is_empty() {
            return Ok(values);
        }
        let wanted: Vec<String> = missing.iter().map(|&i| keys[i].clone()).collect();
        let snapshot = layer.snapshot().await;
        let found = self.redis.read_for_l1(domain, &wanted).await?;
        let mut copies = Vec::new();
        for ((i, key), fill) in missing.into_iter().zip(wanted).zip(found) {
            if let Some(fill) = fill {
                values[i] = Some(fill.value.clone());
                copies.push((key, fill));
            }
        }
        if self.freshness.subscribed() && !copies.is_empty() {
            layer.fill(snapshot, &copies).await;
        }
        Ok(values)
    }
}

impl Drop for TwoLayerCache {
    fn drop(&mut self) {
        if let Some(task) = self
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// Every change goes to Redis first, then drops this host's copies whatever Redis
/// answered (a failed call may still have run).
#[async_trait::async_trait]
impl CacheBackend for TwoLayerCache {
    async fn get_many(&self, domain: &str, keys: &[String]) -> BackendResult<Vec<Option<Vec<u8>>>> {
        match self.layer(domain) {
            Some(layer) => self.get_layered(&layer, domain, keys).await,
            None => self.redis.get_many(domain, keys).await,
        }
    }

    async fn set_many(
        &self,
        domain: &str,
        entries: &[(String, Vec<u8>)],
        write: &CacheWrite,
    ) -> BackendResult<()> {
        let result = self.redis.set_many(domain, entries, write).await;
        if let Some(layer) = self.layer(domain) {
            let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
            layer.drop_keys(&keys).await;
        }
        result
    }

    async fn delete(&self, domain: &str, key: &str) -> BackendResult<bool> {
        let result = self.redis.delete(domain, key).await;
        if let Some(layer) = self.layer(domain) {
            layer.drop_keys(&[key]).await;
        }
        result
    }

    async fn exists(&self, domain: &str, key: &str) -> BackendResult<bool> {
        if let Some(layer) = self.layer(domain)
            && self.freshness.fresh()
            && layer.contains(key).await
        {
            return Ok(true);
        }
        self.redis.exists(domain, key).await
    }

    async fn invalidate_tag(&self, domain: &str, tag: &str) -> BackendResult<u64> {
        let result = self.redis.invalidate_tag(domain, tag).await;
        if let Some(layer) = self.layer(domain) {
            layer.drop_tag(tag).await;
        }
        result
    }

    async fn invalidate_pattern(&self, domain: &str, pattern: &str) -> BackendResult<u64> {
        let result = self.redis.invalidate_pattern(domain, pattern).await;
        if let Some(layer) = self.layer(domain) {
            layer.drop_pattern(pattern).await;
        }
        result
    }

    async fn invalidate(
        &self,
        domain: &str,
        keys: &[String],
        tags: &[String],
    ) -> BackendResult<Invalidated> {
        let result = self.redis.invalidate(domain, keys, tags).await;
        if let Some(layer) = self.layer(domain) {
            layer.drop_keys(keys).await;
            for tag in tags {
                layer.drop_tag(tag).await;
            }
        }
        result
    }

    fn usage(&self) -> Vec<DomainUsage> {
        self.layers
            .load()
            .values()
            .flat_map(|layer| layer.usage())
            .collect()
    }
}
