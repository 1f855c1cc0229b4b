//! Cache statistics per domain in per-minute buckets: the specification's
//! `getStats(domain)` with a time window and hourly cleanup.
//!
//! Every read, write and removal is counted in process at once. When the cache is on
//! Redis, a flusher adds the counts to `<prefix>cache-stats:<domain>:<minute>` hashes
//! every `cache.stats_flush_ms` in one pipeline (never a round trip per read), so
//! several hosts add up and a restart loses at most the last unflushed interval; the
//! buckets expire by TTL after `cache.stats_retention_s`. On the embedded cache the
//! buckets stay in process, pruned to the same retention.

use super::DomainStats;
use crate::capability::redis_client::{RedisClient, Retry};
use crate::metrics::{CacheEvent, Metrics};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Length of one bucket.
const BUCKET_MS: u64 = 60_000;

/// A window of time, in ms since the Unix epoch; `end` defaults to now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First millisecond counted (rounded down to its minute).
    pub start_ms: u64,
    /// Last millisecond counted; `None` for now.
    pub end_ms: Option<u64>,
}

/// Domain → minute → counts: looked up by `&str`, so counting allocates nothing
/// except a domain's first bucket of each minute.
type Buckets = HashMap<String, BTreeMap<u64, DomainStats>>;

/// The counters, pending and (without Redis) kept.
pub struct CacheStats {
    metrics: Arc<Metrics>,
    redis: Option<(RedisClient, String)>,
    retention_ms: u64,
    /// Counts not yet flushed to Redis (with Redis), or every bucket (without).
    buckets: Mutex<Buckets>,
}

fn add(into: &mut DomainStats, from: &DomainStats) {
    into.hits += from.hits;
    into.misses += from.misses;
    into.sets += from.sets;
    into.deletes += from.deletes;
}

impl CacheStats {
    /// Statistics kept in process.
    pub fn in_process(metrics: Arc<Metrics>, retention: Duration) -> Self {
        Self {
            metrics,
            redis: None,
            retention_ms: retention.as_millis() as u64,
            buckets: Mutex::default(),
        }
    }

    /// Statistics kept in Redis under `key_prefix`, shared by every host.
    pub fn on_redis(
        metrics: Arc<Metrics>,
        retention: Duration,
        redis: RedisClient,
        key_prefix: &str,
    ) -> Self {
        Self {
            redis: Some((redis, format!("{key_prefix}cache-stats:"))),
            ..Self::in_process(metrics, retention)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `count` events of `domain` now.
    pub fn record(&self, domain: &str, event: CacheEvent, count: u64) {
        if count == 0 {
            return;
        }
        self.metrics.cache(domain, event, count);
        let minute = crate::capability::messaging::now_ms() / BUCKET_MS;
        let mut buckets = self.lock();
        let minutes = match buckets.get_mut(domain) {
            Some(minutes) => minutes,
            None => buckets.entry(domain.to_string()).or_default(),
        };
        let stats = minutes.entry(minute).or_default();
        match event {
            CacheEvent::Hit => stats.hits += count,
            CacheEvent::Miss => stats.misses += count,
            CacheEvent::Set => stats.sets += count,
            CacheEvent::DeleteByKey
            | CacheEvent::InvalidateByTag
            | CacheEvent::InvalidateByPattern => stats.deletes += count,
        }
    }

    /// The minutes `window` covers, within the retention.
    fn minutes(&self, window: Option<Window>) -> std::ops::RangeInclusive<u64> {
        let now = crate::capability::messaging::now_ms();
        let oldest = now.saturating_sub(self.retention_ms);
        let (start, end) = match window {
            Some(w) => (w.start_ms.max(oldest), w.end_ms.unwrap_or(now).min(now)),
            None => (oldest, now),
        };
        start / BUCKET_MS..=end / BUCKET_MS
    }

    /// The counters of `domains` summed over `window` (default: the whole retention).
    /// With Redis, every host's flushed counts plus this host's unflushed ones.
    pub async fn sum(&self, domains: &[String], window: Option<Window>) -> DomainStats {
        let minutes = self.minutes(window);
        let mut total = DomainStats::default();
        {
            let buckets = self.lock();
            for domain in domains {
                if let Some(kept) = buckets.get(domain) {
                    kept.range(minutes.clone())
                        .for_each(|(_, stats)| add(&mut total, stats));
                }
            }
        }
        if let Some((redis, prefix)) = &self.redis {
            let keys: Vec<String> = domains
                .iter()
                .flat_map(|d| minutes.clone().map(move |m| format!("{prefix}{d}:{m}")))
                .collect();
            match read_buckets(redis, keys).await {
                Ok(stored) => stored.iter().for_each(|s| add(&mut total, s)),
                Err(error) => {
                    tracing::warn!(%error, "could not read cache statistics from Redis; showing this host's unflushed counts only")
                }
            }
        }
        total
    }

    /// Without Redis: drops buckets past the retention. With Redis: adds the pending
    /// counts to Redis in one pipeline; on failure they are kept for the next flush.
    pub async fn flush(&self) {
        let oldest_minute =
            crate::capability::messaging::now_ms().saturating_sub(self.retention_ms) / BUCKET_MS;
        let Some((redis, prefix)) = &self.redis else {
            let mut buckets = self.lock();
            buckets
                .values_mut()
                .for_each(|minutes| minutes.retain(|minute, _| *minute >= oldest_minute));
            buckets.retain(|_, minutes| !minutes.is_empty());
            return;
        };
        let pending = std::mem::take(&mut *self.lock());
        if pending.is_empty() {
            return;
        }
        let ttl_s = (self.retention_ms / 1000 + BUCKET_MS / 1000) as i64;
        let mut commands = Vec::new();
        for (domain, minute, s) in pending
            .iter()
            .flat_map(|(d, minutes)| minutes.iter().map(move |(m, s)| (d, m, s)))
        {
            let key = format!("{prefix}{domain}:{minute}");
            for (field, n) in [
                ("hits", s.hits),
                ("misses", s.misses),
                ("sets", s.sets),
                ("deletes", s.deletes),
            ] {
                if n > 0 {
                    commands.push(redis::cmd("HINCRBY").arg(&key).arg(field).arg(n).clone());
                }
            }
            commands.push(redis::cmd("EXPIRE").arg(&key).arg(ttl_s).clone());
        }
        // Not retried: HINCRBY twice would count twice; a failed flush is merged back.
        // (On a cluster, one pipeline per slot: a failure of one after another
        // succeeded counts that part twice at worst, the price of not losing it.)
        let result = redis
            .pipeline("cache-stats-flush", Retry::Never, &commands)
            .await;
        if let Err(error) = result {
            self.metrics.cache_stats_flush_failed();
            tracing::warn!(%error, "could not flush cache statistics to Redis; kept for the next flush");
            let mut buckets = self.lock();
            for (domain, minutes) in pending {
                let kept = buckets.entry(domain).or_default();
                for (minute, stats) in minutes.range(oldest_minute..) {
                    add(kept.entry(*minute).or_default(), stats);
                }
            }
        }
    }

    /// Flushes every `interval` until `stopping` is cancelled, then once more and ends
    /// (never aborted: a flush takes its batch before it awaits Redis, so an abort
    /// mid-flush would lose that batch).
    pub fn spawn_flusher(
        self: &Arc<Self>,
        interval: Duration,
        stopping: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let stats = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let last = tokio::select! {
                    _ = tick.tick() => false,
                    () = stopping.cancelled() => true,
                };
                let Some(stats) = stats.upgrade() else { return };
                stats.flush().await;
                if last {
                    return;
                }
            }
        })
    }
}

/// The stored buckets of `keys` (absent ones count nothing).
async fn read_buckets(
    redis: &RedisClient,
    keys: Vec<String>,
) -> crate::capability::BackendResult<Vec<DomainStats>> {
    let commands: Vec<redis::Cmd> = keys
        .iter()
        .map(|key| redis::cmd("HGETALL").arg(key).clone())
        .collect();
    let answers = redis
        .pipeline("cache-stats-read", Retry::Idempotent, &commands)
        .await?;
    let maps = answers
        .into_iter()
        .map(redis::from_redis_value::<BTreeMap<String, u64>>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            crate::capability::BackendError::Unavailable(format!("cache statistics: {e}"))
        })?;
    Ok(maps
        .into_iter()
        .map(|m| {
            let get = |f: &str| m.get(f).copied().unwrap_or(0);
            DomainStats {
                hits: get("hits"),
                misses: get("misses"),
                sets: get("sets"),
                deletes: get("deletes"),
            }
        })
        .collect())
}
