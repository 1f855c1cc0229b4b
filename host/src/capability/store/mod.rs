//! `store`: Redis data structures in each plugin's own namespace.
//!
//! A [`StoreBackend`] is a Redis-like keyspace on *full* keys; the host layer
//! (`host.rs`) prefixes every guest key with `<key_prefix>store:<plugin>:` and strips it
//! from scan results, so a backend knows nothing of plugins and a guest key cannot
//! leave its namespace.
//!
//! Wiring: [`connect`] opens the store `host.toml` selects; [`StoreGrant`] is what one
//! plugin's view reaches of it; [`link`] links the interface.
//!
//! Files: `host.rs` (the WIT `Host` impl), `atomic.rs` (transactions), `sorted.rs` (sorted sets and
//! compare-and-swap: the host side, and the ordering the embedded store shares),
//! `memory.rs`, `redis.rs`.

mod atomic;
mod host;
pub mod memory;
pub mod redis;
mod sorted;

use super::BackendResult;
use crate::config::{HostConfig, KvBackend};
use std::sync::Arc;
use std::time::Duration;

pub use crate::capability::bindings::techub::platform::store::{
    KeyTtl, ListEnd, ScoreRange, SetCondition,
};
pub use host::{Claim, HasStore, StoreFailure, StoreView};

/// One operation of an atomic batch, on a full key.
#[derive(Debug, Clone, PartialEq)]
pub enum AtomicOp {
    /// `GET`.
    Get(String),
    /// `SET` with an optional TTL.
    Set(String, Vec<u8>, Option<Duration>),
    /// `DEL` of one key.
    Delete(String),
    /// `INCRBY`.
    IncrBy(String, i64),
    /// `PEXPIRE`.
    Expire(String, Duration),
    /// `HSET`.
    HashSet(String, Vec<(String, Vec<u8>)>),
    /// `HINCRBY`.
    HashIncrBy(String, String, i64),
    /// `LPUSH`/`RPUSH`.
    ListPush(String, ListEnd, Vec<Vec<u8>>),
    /// `SADD`.
    SetAdd(String, Vec<Vec<u8>>),
    /// `ZADD`.
    SortedAdd(String, Vec<(Vec<u8>, f64)>),
}

impl AtomicOp {
    /// The key it works on.
    pub fn key(&self) -> &str {
        match self {
            Self::Get(k)
            | Self::Set(k, ..)
            | Self::Delete(k)
            | Self::IncrBy(k, _)
            | Self::Expire(k, _)
            | Self::HashSet(k, _)
            | Self::HashIncrBy(k, ..)
            | Self::ListPush(k, ..)
            | Self::SetAdd(k, _)
            | Self::SortedAdd(k, _) => k,
        }
    }
}

/// What one operation of an atomic batch answered.
#[derive(Debug, Clone, PartialEq)]
pub enum AtomicResult {
    /// `Get`.
    Value(Option<Vec<u8>>),
    /// `Set` (always true), `Delete` and `Expire` (whether the key existed).
    Done(bool),
    /// `HashSet`, `SetAdd`, `SortedAdd` (how many are new), `ListPush` (the length).
    Count(u32),
    /// `IncrBy`, `HashIncrBy`.
    Integer(i64),
    /// This op failed; the others ran.
    Failed(super::BackendError),
}

/// A Redis-like keyspace.
#[async_trait::async_trait]
pub trait StoreBackend: Send + Sync {
    /// `GET`.
    async fn get(&self, key: &str) -> BackendResult<Option<Vec<u8>>>;
    /// `SET` with optional `PX` and `NX`/`XX`; whether it wrote.
    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        condition: SetCondition,
    ) -> BackendResult<bool>;
    /// `DEL`; how many existed.
    async fn delete(&self, keys: &[String]) -> BackendResult<u32>;
    /// `EXISTS`.
    async fn exists(&self, key: &str) -> BackendResult<bool>;
    /// `PEXPIRE`; whether the key exists.
    async fn expire(&self, key: &str, ttl: Duration) -> BackendResult<bool>;
    /// `PERSIST`; whether a TTL was removed.
    async fn persist(&self, key: &str) -> BackendResult<bool>;
    /// `PTTL`.
    async fn ttl(&self, key: &str) -> BackendResult<KeyTtl>;
    /// `INCRBY`.
    async fn incr_by(&self, key: &str, delta: i64) -> BackendResult<i64>;
    /// `HGET`.
    async fn hash_get(&self, key: &str, field: &str) -> BackendResult<Option<Vec<u8>>>;
    /// `HSET`; how many fields are new.
    async fn hash_set(&self, key: &str, fields: &[(String, Vec<u8>)]) -> BackendResult<u32>;
    /// `HGETALL`, sorted by field.
    async fn hash_get_all(&self, key: &str) -> BackendResult<Vec<(String, Vec<u8>)>>;
    /// `HDEL`; how many existed.
    async fn hash_delete(&self, key: &str, fields: &[String]) -> BackendResult<u32>;
    /// `HINCRBY`.
    async fn hash_incr_by(&self, key: &str, field: &str, delta: i64) -> BackendResult<i64>;
    /// `LPUSH`/`RPUSH`; the new length.
    async fn list_push(&self, key: &str, end: ListEnd, values: &[Vec<u8>]) -> BackendResult<u32>;
    /// `LPOP`/`RPOP` with a count.
    async fn list_pop(&self, key: &str, end: ListEnd, count: u32) -> BackendResult<Vec<Vec<u8>>>;
    /// `LRANGE`.
    async fn list_range(&self, key: &str, start: i64, stop: i64) -> BackendResult<Vec<Vec<u8>>>;
    /// `LLEN`.
    async fn list_len(&self, key: &str) -> BackendResult<u32>;
    /// `SADD`; how many are new.
    async fn set_add(&self, key: &str, members: &[Vec<u8>]) -> BackendResult<u32>;
    /// `SREM`; how many were there.
    async fn set_remove(&self, key: &str, members: &[Vec<u8>]) -> BackendResult<u32>;
    /// `SMEMBERS`, sorted.
    async fn set_members(&self, key: &str) -> BackendResult<Vec<Vec<u8>>>;
    /// `SISMEMBER`.
    async fn set_contains(&self, key: &str, member: &[u8]) -> BackendResult<bool>;
    /// `ZADD`; how many members are new. Scores are never NaN.
    async fn sorted_add(&self, key: &str, members: &[(Vec<u8>, f64)]) -> BackendResult<u32>;
    /// `ZINCRBY`; the new score (`InvalidArgument` if it would be NaN).
    async fn sorted_incr_by(&self, key: &str, member: &[u8], delta: f64) -> BackendResult<f64>;
    /// `ZSCORE`.
    async fn sorted_score(&self, key: &str, member: &[u8]) -> BackendResult<Option<f64>>;
    /// `ZREM`; how many were there.
    async fn sorted_remove(&self, key: &str, members: &[Vec<u8>]) -> BackendResult<u32>;
    /// `ZCARD`.
    async fn sorted_len(&self, key: &str) -> BackendResult<u32>;
    /// `ZRANGE key start stop [REV] WITHSCORES`.
    async fn sorted_range(
        &self,
        key: &str,
        start: i64,
        stop: i64,
        reverse: bool,
    ) -> BackendResult<Vec<(Vec<u8>, f64)>>;
    /// `ZRANGE key min max BYSCORE [REV] LIMIT offset count WITHSCORES`.
    async fn sorted_range_by_score(
        &self,
        key: &str,
        range: &ScoreRange,
        reverse: bool,
        offset: u32,
        count: u32,
    ) -> BackendResult<Vec<(Vec<u8>, f64)>>;
    /// Writes `new` (or deletes, with `None`) only if the string value is `expected`
    /// (`None`: absent), atomically; whether it did. `WrongType` on another type.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> BackendResult<bool>;
    /// Runs `ops` as one transaction (Redis `MULTI`/`EXEC`): no other client's command
    /// runs between them, and each op answers on its own (an op that fails, e.g. with
    /// `WrongType`, does not undo the others, as in Redis). `Err` only when the batch as
    /// a whole did not run.
    async fn atomic(&self, ops: &[AtomicOp]) -> BackendResult<Vec<AtomicResult>>;
    /// One `SCAN` page over keys matching the glob `pattern`; `None` cursor when done.
    async fn scan(
        &self,
        pattern: &str,
        cursor: Option<&str>,
        count: u32,
    ) -> BackendResult<(Vec<String>, Option<String>)>;
}

/// The store `config` selects: embedded, or on `redis`.
pub fn connect(
    config: &HostConfig,
    redis: Option<&crate::capability::redis_client::RedisClient>,
) -> Arc<dyn StoreBackend> {
    match (config.backends.store, redis) {
        (KvBackend::Redis, Some(redis)) => Arc::new(redis::RedisStore::new(redis.clone())),
        _ => Arc::new(memory::MemoryStore::new(
            (config.store.memory_budget_mib * 1024 * 1024) as usize,
        )),
    }
}

/// What one plugin's `store` view reaches: its namespace, the store's limits, and the
/// store. Nothing of another capability, nor the rest of the configuration.
pub struct StoreGrant {
    /// The plugin's name, for the log.
    plugin: String,
    /// Prefix of its keys: `<key_prefix>store:<name>:`.
    pub prefix: String,
    /// `host.max_key_length`.
    max_key_length: usize,
    /// `store.max_value_bytes`.
    max_value_bytes: usize,
    /// Longest a claim stays pending: the plugin's `limits.timeout_ms`.
    invocation_timeout: Duration,
    /// The store.
    backend: Arc<dyn StoreBackend>,
}

impl StoreGrant {
    /// `plugin`'s grant under `config`.
    pub fn new(plugin: &str, config: &HostConfig, backend: Arc<dyn StoreBackend>) -> Self {
        Self {
            plugin: plugin.to_string(),
            // A plugin's store keys hash whole (or by their own `{tag}`), so they
            // spread over a cluster.
            prefix: format!("{}store:{plugin}:", config.host.key_prefix),
            max_key_length: config.host.max_key_length,
            max_value_bytes: config.store.max_value_bytes,
            invocation_timeout: Duration::from_millis(u64::from(
                config.limits_of(plugin).timeout_ms,
            )),
            backend,
        }
    }

    /// The grant of `plugin` to the shared bucket `bucket` (`wasi:keyvalue`): the keys
    /// under `<key_prefix>bucket:<bucket>:`, the same for every plugin granted it, with
    /// the store's limits.
    pub fn for_bucket(
        plugin: &str,
        bucket: &str,
        config: &HostConfig,
        backend: Arc<dyn StoreBackend>,
    ) -> Self {
        Self {
            prefix: format!("{}bucket:{bucket}:", config.host.key_prefix),
            ..Self::new(plugin, config, backend)
        }
    }
}

/// The view of an instance's `state` this capability's host functions run on.
pub(crate) fn view(state: &mut crate::capability::InstanceState) -> StoreView<'_> {
    StoreView::new(&state.plugin.store, &mut state.usage, &mut state.claims)
}

/// Links `store` with [`StoreView`], the [`view`] of an instance's state.
pub fn link<T: crate::capability::HoldsInstanceState>(
    linker: &mut wasmtime::component::Linker<T>,
) -> wasmtime::Result<()> {
    let of_instance: fn(&mut T) -> StoreView<'_> = |data| view(data.instance_state());
    crate::capability::bindings::techub::platform::store::add_to_linker::<T, HasStore>(
        linker,
        of_instance,
    )
}
