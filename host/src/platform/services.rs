//! The backends `host.toml` selects, connected: each capability connects its own
//! (`<capability>::connect`); this puts them together, with outbound HTTP and the
//! guests' log rates.

use crate::capability::redis_client::RedisClient;
use crate::capability::{Services, cache, lock, messaging, store};
use crate::config::{HostConfig, KvBackend};
use crate::metrics::Metrics;
use std::sync::Arc;

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
    let store = store::connect(config, redis.as_ref());
    let locks = lock::connect(config, redis.as_ref());
    let cache = cache::connect(config, redis.as_ref(), locks.clone(), metrics.clone());
    let messaging = messaging::connect(config, redis.as_ref(), metrics.clone()).await?;
    Ok(Services {
        read_through: cache.read_through,
        cache: cache.backend,
        l1: cache.l1,
        cache_stats: cache.stats,
        http: crate::capability::http::HttpService::new(metrics.clone()),
        metrics,
        store,
        locks,
        broker: messaging.broker,
        replies: messaging.replies,
        tracker: messaging.tracker,
        priorities: messaging.priorities,
        redis,
        log_rates: Default::default(),
    })
}
