//! `lock`: distributed locks with leases, fencing tokens and safe release.
//!
//! A [`LockBackend`] grants a key to a random token for a TTL and hands out a fencing
//! token that grows with every grant of the key. The host layer (`host.rs`) namespaces
//! names, enforces the seed's limits, retries, and releases every lease an instance
//! still holds when it ends.

mod host;
pub mod memory;
pub mod redis;

use super::BackendResult;

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
