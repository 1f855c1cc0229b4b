//! `cache`: the shared, domain-aware cache.
//!
//! The host layer (`host.rs`) checks grants, keys, sizes and quotas and keeps the
//! hit/miss counters (`stats.rs`, per minute, in Redis when the cache is); a
//! [`CacheBackend`] stores entries per domain with a TTL and tags; `read_through.rs`
//! fills misses through the domains' loaders, once per key across callers and hosts;
//! `l1/` keeps in-process copies of chosen domains of the cache on Redis, coherent
//! across hosts through Redis pub/sub.

mod host;
pub mod l1;
pub mod memory;
pub mod read_through;
pub mod redis;
mod stats;

use super::BackendResult;
use std::time::Duration;

pub use crate::bindings::techub::platform::cache::Priority;
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
