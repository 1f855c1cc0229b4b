//! The cache on Redis.
//!
//! Layout under the key prefix (`techub:` by default):
//! - `cache:<domain>:<key>`: the value, with its TTL (`SET PX`);
//! - `cache-tag:<domain>:<tag>`: the set of entry keys filed under a tag;
//! - `cache-meta:<domain>:<key>`: the tag-set keys an entry is filed in, so that
//!   rewriting or deleting an entry also removes its old filings.
//!
//! Writes and deletes are Lua scripts, so an entry and its filings change together.

use super::{CacheBackend, CacheWrite, Invalidated};
use crate::capability::BackendResult;
use crate::capability::glob;
use crate::capability::redis_client::{RedisClient, Retry};
use redis::Script;
use std::sync::LazyLock;

/// KEYS: entry1, meta1, entry2, meta2, ...; ARGV: ttl-ms, tag count, tag-set keys...,
/// then one value per entry.
static SET_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ttl = tonumber(ARGV[1])
local ntags = tonumber(ARGV[2])
local n = #KEYS / 2
for i = 1, n do
  local entry, meta = KEYS[2 * i - 1], KEYS[2 * i]
  for _, tagset in ipairs(redis.call('SMEMBERS', meta)) do
    redis.call('SREM', tagset, entry)
  end
  redis.call('DEL', meta)
  redis.call('SET', entry, ARGV[2 + ntags + i], 'PX', ttl)
  for t = 1, ntags do
    local tagset = ARGV[2 + t]
    redis.call('SADD', tagset, entry)
    redis.call('SADD', meta, tagset)
    local left = redis.call('PTTL', tagset)
    if left == -1 or left < ttl then
      redis.call('PEXPIRE', tagset, ttl)
    end
  end
  if ntags > 0 then
    redis.call('PEXPIRE', meta, ttl)
  end
end
return n
",
    )
});

/// KEYS: entries; ARGV: meta prefix, entry prefix. Deletes entries and their
/// filings; returns how many entries existed.
static DELETE_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local removed = 0
for _, entry in ipairs(KEYS) do
  removed = removed + redis.call('DEL', entry)
  local meta = ARGV[1] .. string.sub(entry, #ARGV[2] + 1)
  for _, tagset in ipairs(redis.call('SMEMBERS', meta)) do
    redis.call('SREM', tagset, entry)
  end
  redis.call('DEL', meta)
end
return removed
",
    )
});

/// KEYS: entries (ARGV[3] of them), then tag sets; ARGV: meta prefix, entry prefix,
/// number of entries. Deletes the entries and every entry filed under the tags, with
/// their filings; returns {removed by key, removed by tag}.
static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local function drop(entry)
  local n = redis.call('DEL', entry)
  local meta = ARGV[1] .. string.sub(entry, #ARGV[2] + 1)
  for _, tagset in ipairs(redis.call('SMEMBERS', meta)) do
    redis.call('SREM', tagset, entry)
  end
  redis.call('DEL', meta)
  return n
end
local nkeys = tonumber(ARGV[3])
local by_key, by_tag = 0, 0
for i = 1, nkeys do
  by_key = by_key + drop(KEYS[i])
end
for i = nkeys + 1, #KEYS do
  for _, entry in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    by_tag = by_tag + drop(entry)
  end
end
return {by_key, by_tag}
",
    )
});

/// Entries examined per `SCAN` page of a pattern invalidation.
const SCAN_COUNT: u32 = 500;

/// Cache backend on a Redis server.
pub struct RedisCache {
    redis: RedisClient,
    prefix: String,
}

impl RedisCache {
    /// A cache on `redis` under `prefix` (e.g. `techub:`).
    pub fn new(redis: RedisClient, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_string(),
        }
    }

    fn entry_prefix(&self, domain: &str) -> String {
        format!("{}cache:{domain}:", self.prefix)
    }
    fn meta_prefix(&self, domain: &str) -> String {
        format!("{}cache-meta:{domain}:", self.prefix)
    }
    fn tag_key(&self, domain: &str, tag: &str) -> String {
        format!("{}cache-tag:{domain}:{tag}", self.prefix)
    }

    async fn delete_entries(&self, domain: &str, entries: &[String]) -> BackendResult<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let (meta, entry) = (self.meta_prefix(domain), self.entry_prefix(domain));
        let removed: i64 = self
            .redis
            .run("cache delete", Retry::Idempotent, |mut c| {
                let mut invocation = DELETE_MANY.prepare_invoke();
                invocation.key(entries).arg(&meta).arg(&entry);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(removed.max(0) as u64)
    }
}

#[async_trait::async_trait]
impl CacheBackend for RedisCache {
    async fn get_many(&self, domain: &str, keys: &[String]) -> BackendResult<Vec<Option<Vec<u8>>>> {
        let prefix = self.entry_prefix(domain);
        let full: Vec<String> = keys.iter().map(|k| format!("{prefix}{k}")).collect();
        // `MGET` with one key still answers an array, so one shape serves all sizes.
        self.redis
            .run("MGET", Retry::Idempotent, |mut c| {
                let cmd = redis::cmd("MGET").arg(&full).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await
    }

    async fn set_many(
        &self,
        domain: &str,
        entries: &[(String, Vec<u8>)],
        write: &CacheWrite,
    ) -> BackendResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let (entry, meta) = (self.entry_prefix(domain), self.meta_prefix(domain));
        let tags: Vec<String> = write.tags.iter().map(|t| self.tag_key(domain, t)).collect();
        let ttl_ms = (write.ttl.as_millis() as u64).max(1);
        let _: i64 = self
            .redis
            .run("cache set", Retry::Idempotent, |mut c| {
                let mut invocation = SET_MANY.prepare_invoke();
                for (key, _) in entries {
                    invocation
                        .key(format!("{entry}{key}"))
                        .key(format!("{meta}{key}"));
                }
                invocation.arg(ttl_ms).arg(tags.len()).arg(&tags);
                for (_, value) in entries {
                    invocation.arg(value);
                }
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(())
    }

    async fn delete(&self, domain: &str, key: &str) -> BackendResult<bool> {
        let entry = format!("{}{key}", self.entry_prefix(domain));
        Ok(self.delete_entries(domain, &[entry]).await? > 0)
    }

    async fn exists(&self, domain: &str, key: &str) -> BackendResult<bool> {
        let entry = format!("{}{key}", self.entry_prefix(domain));
        self.redis
            .run("EXISTS", Retry::Idempotent, |mut c| {
                let cmd = redis::cmd("EXISTS").arg(&entry).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await
    }

    async fn invalidate_tag(&self, domain: &str, tag: &str) -> BackendResult<u64> {
        let tag_key = self.tag_key(domain, tag);
        let entries: Vec<String> = self
            .redis
            .run("SMEMBERS", Retry::Idempotent, |mut c| {
                let cmd = redis::cmd("SMEMBERS").arg(&tag_key).clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        let mut removed = 0;
        for chunk in entries.chunks(SCAN_COUNT as usize) {
            removed += self.delete_entries(domain, chunk).await?;
        }
        Ok(removed)
    }

    async fn invalidate(
        &self,
        domain: &str,
        keys: &[String],
        tags: &[String],
    ) -> BackendResult<Invalidated> {
        if keys.is_empty() && tags.is_empty() {
            return Ok(Invalidated::default());
        }
        let (meta, entry) = (self.meta_prefix(domain), self.entry_prefix(domain));
        let entries: Vec<String> = keys.iter().map(|k| format!("{entry}{k}")).collect();
        let tag_sets: Vec<String> = tags.iter().map(|t| self.tag_key(domain, t)).collect();
        let (by_key, by_tag): (i64, i64) = self
            .redis
            .run("cache invalidate", Retry::Idempotent, |mut c| {
                let mut invocation = INVALIDATE.prepare_invoke();
                invocation
                    .key(&entries)
                    .key(&tag_sets)
                    .arg(&meta)
                    .arg(&entry)
                    .arg(entries.len());
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(Invalidated {
            by_key: by_key.max(0) as u64,
            by_tag: by_tag.max(0) as u64,
        })
    }

    async fn invalidate_pattern(&self, domain: &str, pattern: &str) -> BackendResult<u64> {
        let prefix = self.entry_prefix(domain);
        let full_pattern = format!("{}{pattern}", glob::escape(&prefix));
        let mut cursor = 0u64;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .redis
                .run("SCAN", Retry::Idempotent, |mut c| {
                    let cmd = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&full_pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .clone();
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            removed += self.delete_entries(domain, &keys).await?;
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}
