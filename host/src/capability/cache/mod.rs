//! `cache`: the shared, domain-aware cache.
//!
//! The host layer (`host.rs`) checks grants, keys, sizes and quotas and keeps the
//! hit/miss counters; a [`CacheBackend`] stores entries per domain with a TTL and tags.

mod host;
pub mod memory;
pub mod redis;

use super::BackendResult;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub use crate::bindings::techub::platform::cache::Priority;
pub use host::{CacheFailure, CacheView, HasCache};

/// An entry to write.
#[derive(Debug, Clone)]
pub struct CacheWrite {
    /// Time to live (never zero).
    pub ttl: Duration,
    /// Tags to file the entries under.
    pub tags: Vec<String>,
    /// Eviction weight (used by the memory backend only).
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
}

/// Counters of one domain.
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

/// Hit/miss counters per domain since the host started.
#[derive(Debug, Default)]
pub struct CacheStats {
    by_domain: Mutex<HashMap<String, DomainStats>>,
}

impl CacheStats {
    /// Applies `update` to the counters of `domain`.
    pub fn record(&self, domain: &str, update: impl FnOnce(&mut DomainStats)) {
        let mut map = self.by_domain.lock().unwrap_or_else(|e| e.into_inner());
        // Every cache call lands here: allocate the domain's name only the first time.
        match map.get_mut(domain) {
            Some(stats) => update(stats),
            None => update(map.entry(domain.to_string()).or_default()),
        }
    }

    /// Counters of the given domains, summed.
    pub fn sum<'a>(&self, domains: impl IntoIterator<Item = &'a str>) -> DomainStats {
        let map = self.by_domain.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = DomainStats::default();
        for domain in domains {
            if let Some(s) = map.get(domain) {
                total.hits += s.hits;
                total.misses += s.misses;
                total.sets += s.sets;
                total.deletes += s.deletes;
            }
        }
        total
    }
}
