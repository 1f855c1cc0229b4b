//! The cache on Redis.
//!
//! Layout under the key prefix (`techub:` by default):
//! - `cache:<domain>:<key>`: the value, with its TTL (`SET PX`);
//! - `cache-tag:<domain>:<tag>`: the set of entry keys filed under a tag;
//! - `cache-meta:<domain>:<key>`: the tag-set keys an entry is filed in, so that
//!   rewriting or deleting an entry also removes its old filings;
//! - `cache-prio:<domain>:<key>`: the entry's priority when it is not medium, so that
//!   an L1 copy is evicted in its turn.
//!
//! On a Redis Cluster `<domain>` is `{<domain>}`: a domain's keys share a hash slot, so
//! that the scripts below may touch them together (the price: one domain lives on one
//! shard; domains spread over the shards).
//!
//! Writes and deletes are Lua scripts, so an entry and its filings change together,
//! and each publishes the keys it changed on `cache-l1` in the same step (for the
//! hosts' L1s, `l1/`). On a cluster that runs sharded pub/sub the channel is the
//! domain's own, `cache-l1:{<domain>}`, in the slot of the domain's keys, and the
//! scripts publish with `SPUBLISH`: the message stays on the shard that ran the write
//! instead of crossing the cluster bus to every node.

use super::{CacheBackend, CacheWrite, Invalidated, Priority};
use crate::capability::BackendResult;
use crate::capability::redis_client::{KeyLayout, RedisClient, Retry};
use crate::names::glob;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// KEYS: entry1, meta1, prio1, entry2, ...; ARGV: ttl-ms, tag count, priority (empty
/// for medium), invalidation channel, invalidation message, the tag-set keys, then one
/// value per entry. Publishes the message in the same step as the write, so that a
/// host's L1 hears of a write before anything that Redis serves after it.
static SET_MANY: LazyLock<Publishing> = LazyLock::new(|| {
    Publishing::new(
        r"
local ttl = tonumber(ARGV[1])
local ntags = tonumber(ARGV[2])
local prio = ARGV[3]
local n = #KEYS / 3
for i = 1, n do
  local entry, meta, pkey = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  for _, tagset in ipairs(redis.call('SMEMBERS', meta)) do
    redis.call('SREM', tagset, entry)
  end
  redis.call('DEL', meta)
  redis.call('SET', entry, ARGV[5 + ntags + i], 'PX', ttl)
  if prio == '' then
    redis.call('DEL', pkey)
  else
    redis.call('SET', pkey, prio, 'PX', ttl)
  end
  for t = 1, ntags do
    local tagset = ARGV[5 + t]
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
redis.call('PUBLISH', ARGV[4], ARGV[5])
return n
",
    )
});

/// KEYS: entries; ARGV: meta prefix, entry prefix, priority prefix, invalidation
/// channel, invalidation message. Deletes entries and their filings; returns how many
/// entries existed.
static DELETE_MANY: LazyLock<Publishing> = LazyLock::new(|| {
    Publishing::new(
        r"
local removed = 0
for _, entry in ipairs(KEYS) do
  removed = removed + redis.call('DEL', entry)
  local suffix = string.sub(entry, #ARGV[2] + 1)
  local meta = ARGV[1] .. suffix
  for _, tagset in ipairs(redis.call('SMEMBERS', meta)) do
    redis.call('SREM', tagset, entry)
  end
  redis.call('DEL', meta, ARGV[3] .. suffix)
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return removed
",
    )
});

/// KEYS: entries (ARGV[3] of them), then tag sets; ARGV: meta prefix, entry prefix,
/// number of entries, priority prefix, invalidation channel, message header
/// (`<domain> <origin>`). Deletes the entries and every entry filed under the tags,
/// with their filings, publishes the keys it named or found (after the header, one
/// per line); returns {removed by key, removed by tag}.
static INVALIDATE: LazyLock<Publishing> = LazyLock::new(|| {
    Publishing::new(
        r"
local named = {}
local function drop(entry)
  local n = redis.call('DEL', entry)
  local suffix = string.sub(entry, #ARGV[2] + 1)
  named[#named + 1] = suffix
  local meta = ARGV[1] .. suffix
  for _, tagset in ipairs(redis.call('SMEMBERS', meta)) do
    redis.call('SREM', tagset, entry)
  end
  redis.call('DEL', meta, ARGV[4] .. suffix)
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
if #named > 0 then
  redis.call('PUBLISH', ARGV[5], ARGV[6] .. '\n' .. table.concat(named, '\n'))
end
return {by_key, by_tag}
",
    )
});

/// KEYS: entry1, meta1, prio1, entry2, ...; ARGV: length of the domain's tag-set key
/// prefix. For each entry, `nil` when absent, else {value, PTTL, priority or nil,
/// tags}: what an L1 needs to keep a copy that expires, evicts and invalidates by tag
/// as the entry does, read in one atomic step.
static READ_FOR_L1: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cut = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS / 3 do
  local value = redis.call('GET', KEYS[3 * i - 2])
  if value then
    local tags = {}
    for _, tagset in ipairs(redis.call('SMEMBERS', KEYS[3 * i - 1])) do
      tags[#tags + 1] = string.sub(tagset, cut + 1)
    end
    out[i] = {value, redis.call('PTTL', KEYS[3 * i - 2]), redis.call('GET', KEYS[3 * i]), tags}
  else
    out[i] = false
  end
end
return out
",
    )
});

/// A script that publishes what it changed, in its two forms: with `PUBLISH`, and with
/// `SPUBLISH` for a cluster that runs sharded pub/sub.
struct Publishing {
    classic: Script,
    sharded: Script,
}

impl Publishing {
    fn new(source: &str) -> Self {
        Self {
            classic: Script::new(source),
            sharded: Script::new(&source.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")),
        }
    }
}

/// Entries examined per `SCAN` page of a pattern invalidation.
const SCAN_COUNT: u32 = 500;

/// Cache backend on a Redis server.
pub struct RedisCache {
    redis: RedisClient,
    prefix: String,
    /// On a cluster, a domain's keys share its hash tag: its scripts change an entry,
    /// its filings and its tag sets together.
    layout: KeyLayout,
    /// Names this host in its invalidation messages, so that its L1 can skip its own
    /// (it dropped those copies when Redis answered; the echo would only refuse
    /// copies read after the change).
    origin: String,
}

/// What [`RedisCache::read_for_l1`] found of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L1Fill {
    /// The value.
    pub value: Vec<u8>,
    /// How long it has left in Redis.
    pub ttl_left: Duration,
    /// The priority it was written with.
    pub priority: Priority,
    /// The tags it is filed under.
    pub tags: Vec<String>,
}

fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::Low => "low",
        Priority::Medium => "",
        Priority::High => "high",
        Priority::Critical => "critical",
    }
}

fn priority_of(name: Option<&str>) -> Priority {
    match name {
        Some("low") => Priority::Low,
        Some("high") => Priority::High,
        Some("critical") => Priority::Critical,
        _ => Priority::Medium,
    }
}

/// `<domain> <origin>\n<key>\n<key>...`: the message that tells every host's L1 to
/// drop keys.
fn invalidation_message<'k>(header: String, keys: impl IntoIterator<Item = &'k str>) -> String {
    let mut message = header;
    for key in keys {
        message.push('\n');
        message.push_str(key);
    }
    message
}

impl RedisCache {
    /// A cache on `redis` under `prefix` (e.g. `techub:`).
    pub fn new(redis: RedisClient, prefix: &str) -> Self {
        Self {
            layout: redis.layout(),
            redis,
            prefix: prefix.to_string(),
            origin: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// The connection it runs on.
    pub fn client(&self) -> &RedisClient {
        &self.redis
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The id this host's invalidation messages carry.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The channel every write, delete and invalidation of `domain` publishes its
    /// keys on, as `<domain> <origin>\n<key>\n<key>...` (keys hold no control
    /// characters, so `\n` splits; domains no spaces): `cache-l1`, or the domain's
    /// own in its slot when pub/sub is sharded.
    pub fn invalidation_channel(&self, domain: &str) -> String {
        match self.redis.sharded_pubsub() {
            true => format!("{}cache-l1:{}", self.prefix, self.layout.group(domain)),
            false => format!("{}cache-l1", self.prefix),
        }
    }

    /// The channel this host pings itself on to learn that it hears `domain`'s
    /// invalidations in time (`l1/channel.rs`): one for the host, or one per domain
    /// in the domain's slot when pub/sub is sharded (the ping must travel the way the
    /// domain's invalidations do, to prove they came before it).
    pub fn ping_channel(&self, domain: &str) -> String {
        match self.redis.sharded_pubsub() {
            true => format!(
                "{}cache-l1-ping:{}:{}",
                self.prefix,
                self.layout.group(domain),
                self.origin
            ),
            false => format!("{}cache-l1-ping:{}", self.prefix, self.origin),
        }
    }

    /// `publishing` in the form this Redis takes.
    fn script<'s>(&self, publishing: &'s Publishing) -> &'s Script {
        match self.redis.sharded_pubsub() {
            true => &publishing.sharded,
            false => &publishing.classic,
        }
    }

    fn message_header(&self, domain: &str) -> String {
        format!("{domain} {}", self.origin)
    }

    fn entry_prefix(&self, domain: &str) -> String {
        format!("{}cache:{}:", self.prefix, self.layout.group(domain))
    }
    fn meta_prefix(&self, domain: &str) -> String {
        format!("{}cache-meta:{}:", self.prefix, self.layout.group(domain))
    }
    /// Where an entry written with a priority other than medium keeps it, for the
    /// L1s that copy the entry.
    fn priority_prefix(&self, domain: &str) -> String {
        format!("{}cache-prio:{}:", self.prefix, self.layout.group(domain))
    }
    fn tag_prefix(&self, domain: &str) -> String {
        format!("{}cache-tag:{}:", self.prefix, self.layout.group(domain))
    }
    fn tag_key(&self, domain: &str, tag: &str) -> String {
        format!("{}{tag}", self.tag_prefix(domain))
    }

    async fn delete_entries(&self, domain: &str, entries: &[String]) -> BackendResult<u64> {
        if entries.is_empty() {
            return Ok(0);
        }
        let (meta, entry) = (self.meta_prefix(domain), self.entry_prefix(domain));
        let priority = self.priority_prefix(domain);
        let channel = self.invalidation_channel(domain);
        let message = invalidation_message(
            self.message_header(domain),
            entries.iter().map(|e| e.strip_prefix(&entry).unwrap_or(e)),
        );
        let removed: i64 = self
            .redis
            .run("cache delete", Retry::Idempotent, |mut c| {
                let mut invocation = self.script(&DELETE_MANY).prepare_invoke();
                invocation
                    .key(entries)
                    .arg(&meta)
                    .arg(&entry)
                    .arg(&priority)
                    .arg(&channel)
                    .arg(&message);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(removed.max(0) as u64)
    }

    /// The entries of `keys` with what an L1 copy of each needs (TTL left, priority,
    /// tags), in one atomic step; `None` for absent ones.
    pub async fn read_for_l1(
        &self,
        domain: &str,
        keys: &[String],
    ) -> BackendResult<Vec<Option<L1Fill>>> {
        let (entry, meta) = (self.entry_prefix(domain), self.meta_prefix(domain));
        let priority = self.priority_prefix(domain);
        let cut = self.tag_prefix(domain).len();
        type Found = Option<(Vec<u8>, i64, Option<String>, Vec<String>)>;
        let found: Vec<Found> = self
            .redis
            .run("cache read", Retry::Idempotent, |mut c| {
                let mut invocation = READ_FOR_L1.prepare_invoke();
                for key in keys {
                    invocation
                        .key(format!("{entry}{key}"))
                        .key(format!("{meta}{key}"))
                        .key(format!("{priority}{key}"));
                }
                invocation.arg(cut);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(found
            .into_iter()
            .map(|found| {
                let (value, pttl, priority, tags) = found?;
                // -1 (no expiry) is not written by the host; such an entry gets the
                // L1's own TTL. -2: it expired between GET and PTTL.
                let ttl_left = match pttl {
                    -2 => return None,
                    ms if ms < 0 => Duration::MAX,
                    ms => Duration::from_millis(ms as u64),
                };
                Some(L1Fill {
                    value,
                    ttl_left,
                    priority: priority_of(priority.as_deref()),
                    tags,
                })
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl CacheBackend for RedisCache {
    async fn get_many(&self, domain: &str, keys: &[String]) -> BackendResult<Vec<Option<Vec<u8>>>> {
        let prefix = self.entry_prefix(domain);
        if let [key] = keys {
            // One key (every `get`): a plain `GET`. A cluster client routes `MGET` as a
            // command that may span slots (split per node, answers merged), which
            // costs a get several microseconds of CPU for nothing.
            let cmd = redis::cmd("GET").arg(format!("{prefix}{key}")).clone();
            let value: Option<Vec<u8>> = self
                .redis
                .run("GET", Retry::Idempotent, |mut c| {
                    let cmd = cmd.clone();
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            return Ok(vec![value]);
        }
        let full: Vec<String> = keys.iter().map(|k| format!("{prefix}{k}")).collect();
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
        let priority = self.priority_prefix(domain);
        let tags: Vec<String> = write.tags.iter().map(|t| self.tag_key(domain, t)).collect();
        let ttl_ms = (write.ttl.as_millis() as u64).max(1);
        let channel = self.invalidation_channel(domain);
        let message = invalidation_message(
            self.message_header(domain),
            entries.iter().map(|(k, _)| k.as_str()),
        );
        let _: i64 = self
            .redis
            .run("cache set", Retry::Idempotent, |mut c| {
                let mut invocation = self.script(&SET_MANY).prepare_invoke();
                for (key, _) in entries {
                    invocation
                        .key(format!("{entry}{key}"))
                        .key(format!("{meta}{key}"))
                        .key(format!("{priority}{key}"));
                }
                invocation
                    .arg(ttl_ms)
                    .arg(tags.len())
                    .arg(priority_name(write.priority))
                    .arg(&channel)
                    .arg(&message)
                    .arg(&tags);
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
        let priority = self.priority_prefix(domain);
        let channel = self.invalidation_channel(domain);
        let header = self.message_header(domain);
        let (by_key, by_tag): (i64, i64) = self
            .redis
            .run("cache invalidate", Retry::Idempotent, |mut c| {
                let mut invocation = self.script(&INVALIDATE).prepare_invoke();
                invocation
                    .key(&entries)
                    .key(&tag_sets)
                    .arg(&meta)
                    .arg(&entry)
                    .arg(entries.len())
                    .arg(&priority)
                    .arg(&channel)
                    .arg(&header);
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
        let mut cursor: Option<String> = None;
        let mut removed = 0;
        loop {
            // The domain is one slot on a cluster: the scan asks only its primary.
            let (keys, next) = self
                .redis
                .scan_page(&full_pattern, cursor.as_deref(), SCAN_COUNT)
                .await?;
            removed += self.delete_entries(domain, &keys).await?;
            match next {
                None => return Ok(removed),
                next => cursor = next,
            }
        }
    }
}
