//! One domain's in-process layer: copies of Redis entries, and the generation that
//! keeps a read that raced an invalidation from filling a stale copy.
//!
//! The copies live in a [`MemoryCache`] (the embedded cache's store), not in `moka`:
//! it evicts by priority (expired first, then `low` .. `critical`, oldest first) and
//! invalidates by tag and pattern, which `moka`'s TinyLFU policy cannot be told to.

use super::super::memory::MemoryCache;
use super::super::redis::L1Fill;
use super::super::{CacheBackend, CacheWrite};
use crate::config::L1Config;
use std::time::Duration;

pub(super) struct Layer {
    domain: String,
    store: MemoryCache,
    ttl: Duration,
    /// The configuration it was made from (a reload keeps a layer it did not change).
    pub(super) config: L1Config,
    /// Bumped by every drop, under this lock, which a fill takes too: a fill whose
    /// read began before a drop (its snapshot is older) is refused, so that a value
    /// read from Redis just before a write never lands after the write's drop.
    generation: tokio::sync::Mutex<u64>,
}

impl Layer {
    pub(super) fn new(domain: &str, config: &L1Config) -> Self {
        Self {
            domain: domain.to_string(),
            store: MemoryCache::new((config.budget_mib * 1024 * 1024) as usize),
            ttl: Duration::from_secs(config.ttl_s),
            config: config.clone(),
            generation: tokio::sync::Mutex::new(0),
        }
    }

    /// The copies of `keys`, in order.
    pub(super) async fn get(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        // The memory store cannot fail.
        self.store
            .get_many(&self.domain, keys)
            .await
            .unwrap_or_else(|_| vec![None; keys.len()])
    }

    pub(super) async fn contains(&self, key: &str) -> bool {
        self.store
            .exists(&self.domain, key)
            .await
            .unwrap_or_default()
    }

    /// The generation to hand to [`Layer::fill`], taken before reading Redis.
    pub(super) async fn snapshot(&self) -> u64 {
        *self.generation.lock().await
    }

    /// Keeps copies of what Redis answered, unless something was dropped since
    /// `snapshot`. Each copy expires with its entry, or after the layer's TTL.
    pub(super) async fn fill(&self, snapshot: u64, found: &[(String, L1Fill)]) {
        let generation = self.generation.lock().await;
        if *generation != snapshot {
            return;
        }
        for (key, fill) in found {
            let write = CacheWrite {
                ttl: self.ttl.min(fill.ttl_left),
                tags: fill.tags.clone(),
                priority: fill.priority,
            };
            let _ = self
                .store
                .set_many(&self.domain, &[(key.clone(), fill.value.clone())], &write)
                .await;
        }
        drop(generation);
    }

    /// Drops the copies of `keys`.
    pub(super) async fn drop_keys<K: AsRef<str> + Sync>(&self, keys: &[K]) -> u64 {
        let mut generation = self.generation.lock().await;
        *generation += 1;
        let mut dropped = 0;
        for key in keys {
            let removed = self.store.delete(&self.domain, key.as_ref()).await;
            dropped += u64::from(removed.unwrap_or(false));
        }
        dropped
    }

    /// Drops the copies filed under `tag`.
    pub(super) async fn drop_tag(&self, tag: &str) {
        let mut generation = self.generation.lock().await;
        *generation += 1;
        let _ = self.store.invalidate_tag(&self.domain, tag).await;
    }

    /// Drops the copies whose keys match `pattern`.
    pub(super) async fn drop_pattern(&self, pattern: &str) {
        let mut generation = self.generation.lock().await;
        *generation += 1;
        let _ = self.store.invalidate_pattern(&self.domain, pattern).await;
    }

    /// Drops every copy (the invalidation channel was lost: any may be stale).
    pub(super) async fn clear(&self) {
        self.drop_pattern("*").await;
    }

    pub(super) fn usage(&self) -> Vec<super::super::DomainUsage> {
        self.store.usage()
    }
}
