//! The backends `host.toml` selects, connected: cache (with its L1s, statistics,
//! read-through), store, locks, broker, replies, invalidation events, message
//! statuses and outbound HTTP.

use crate::cache_events::CacheEvents;
use crate::capability::Services;
use crate::capability::cache::l1::TwoLayerCache;
use crate::capability::cache::memory::MemoryCache;
use crate::capability::cache::redis::RedisCache;
use crate::capability::cache::{CacheBackend, CacheStats, ReadThrough};
use crate::capability::lock::LockBackend;
use crate::capability::lock::memory::MemoryLocks;
use crate::capability::lock::redis::RedisLocks;
use crate::capability::messaging::amqp::AmqpBroker;
use crate::capability::messaging::memory::MemoryBroker;
use crate::capability::messaging::replies::Replies;
use crate::capability::messaging::shared_status::SharedStatuses;
use crate::capability::messaging::{Broker, DefaultPriorities, MessageTracker};
use crate::capability::redis_client::RedisClient;
use crate::capability::store::StoreBackend;
use crate::capability::store::memory::MemoryStore;
use crate::capability::store::redis::RedisStore;
use crate::config::{BrokerBackend, HostConfig, KvBackend};
use crate::metrics::Metrics;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// How many message statuses the tracker remembers.
const TRACKED_MESSAGES: usize = 100_000;

/// Connects the backends `config` selects; a connection failure names the URL.
pub async fn connect_services(config: &HostConfig) -> anyhow::Result<Services> {
    let uses_redis = [
        config.backends.cache,
        config.backends.store,
        config.backends.lock,
    ]
    .contains(&KvBackend::Redis);
    let metrics = Arc::new(Metrics::new(config.host.metrics));
    let redis = match uses_redis {
        true => Some(RedisClient::connect(&config.redis, metrics.clone()).await?),
        false => None,
    };
    let redis_client = redis.clone();
    let redis = || {
        redis
            .clone()
            .expect("connected above when a capability selects redis")
    };
    let prefix = &config.host.key_prefix;
    let mut l1 = None;
    let cache: Arc<dyn CacheBackend> = match config.backends.cache {
        KvBackend::Memory => Arc::new(MemoryCache::new(
            (config.cache.memory_budget_mib * 1024 * 1024) as usize,
        )),
        KvBackend::Redis => {
            let layered = TwoLayerCache::new(
                RedisCache::new(redis(), prefix),
                &config.cache,
                &config.redis,
                metrics.clone(),
            );
            l1 = Some(layered.clone());
            layered
        }
    };
    let store: Arc<dyn StoreBackend> = match config.backends.store {
        KvBackend::Memory => Arc::new(MemoryStore::new(
            (config.store.memory_budget_mib * 1024 * 1024) as usize,
        )),
        KvBackend::Redis => Arc::new(RedisStore::new(redis())),
    };
    let locks: Arc<dyn LockBackend> = match config.backends.lock {
        KvBackend::Memory => Arc::new(MemoryLocks::new()),
        KvBackend::Redis => Arc::new(RedisLocks::new(redis())),
    };
    let broker: Arc<dyn Broker> = match config.backends.messaging {
        BrokerBackend::Memory => Arc::new(MemoryBroker::new(config.dead_letter)),
        BrokerBackend::Amqp => Arc::new(
            AmqpBroker::connect(
                &config.amqp,
                config.dead_letter,
                config.messaging,
                metrics.clone(),
                crate::capability::messaging::amqp::seal::DeathSeal::for_config(config)?,
            )
            .await?,
        ),
    };
    let replies = Replies::open(broker.as_ref(), &config.amqp.queue_prefix, metrics.clone())
        .await
        .context("could not open the reply queue")?;
    let retention = Duration::from_secs(config.cache.stats_retention_s);
    let cache_stats = Arc::new(match config.backends.cache {
        KvBackend::Redis => CacheStats::on_redis(metrics.clone(), retention, redis(), prefix),
        KvBackend::Memory => CacheStats::in_process(metrics.clone(), retention),
    });
    let cache_events = Arc::new(CacheEvents::new(
        broker.clone(),
        cache.clone(),
        cache_stats.clone(),
        metrics.clone(),
        &config.amqp.queue_prefix,
    ));
    let read_through = Arc::new(ReadThrough::new(
        cache.clone(),
        locks.clone(),
        cache_stats.clone(),
        metrics.clone(),
        prefix,
        redis_client
            .as_ref()
            .map(|r| r.layout())
            .unwrap_or_default(),
    ));
    Ok(Services {
        cache_events,
        read_through,
        cache,
        l1,
        cache_stats,
        http: crate::capability::http::HttpService::new(metrics.clone()),
        metrics,
        store,
        locks,
        broker,
        replies,
        tracker: {
            let tracker = MessageTracker::new(TRACKED_MESSAGES);
            if let Some(redis) = &redis_client {
                let ttl = Duration::from_millis(config.messaging.status_ttl_ms);
                tracker.share_through(Arc::new(SharedStatuses::new(redis.clone(), prefix, ttl)));
            }
            tracker
        },
        priorities: DefaultPriorities::default(),
        redis: redis_client,
        log_rates: Default::default(),
    })
}
