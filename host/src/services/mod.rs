//! The connected services: each capability's backend as `host.toml` selects it, plus
//! the metrics and the Redis connection they share. The platform connects them once
//! ([`connect`]); every layer above the capabilities (dispatch, plugins, registry,
//! the admin API, schedules, webhooks) reaches them through [`Services`], and a
//! plugin's instance reaches only its own grants, built here ([`Services::context`]).
//!
//! This file is the capabilities' wiring: a capability is registered here by its
//! field in [`Services`], its `connect` in [`connect`] and its grant in
//! [`Services::context`] (and its `link` in `runtime/engine.rs`).

use crate::capability::cache::{CacheGrant, CacheService};
use crate::capability::config::ConfigGrant;
use crate::capability::http::HttpService;
use crate::capability::keyvalue::KeyValueGrant;
use crate::capability::lock::{LockBackend, LockGrant};
use crate::capability::log::{LogGrant, LogRate};
use crate::capability::messaging::{MessagingGrant, MessagingService};
use crate::capability::redis_client::RedisClient;
use crate::capability::store::{StoreBackend, StoreGrant};
use crate::capability::{PluginContext, Secrets, cache, http, lock, messaging, store};
use crate::config::{HostConfig, KvBackend};
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The backends and shared state every plugin instance reaches through its grants.
pub struct Services {
    /// The cache: entries, L1s, statistics, read-through.
    pub cache: CacheService,
    /// The store backend.
    pub store: Arc<dyn StoreBackend>,
    /// The lock backend.
    pub locks: Arc<dyn LockBackend>,
    /// The broker, this host's reply queue, message statuses, default priorities.
    pub messaging: MessagingService,
    /// Plugins' outbound HTTP: TLS roots and a pooled client per plugin.
    pub http: HttpService,
    /// The Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The Redis connection, when a capability uses Redis (for readiness).
    pub redis: Option<RedisClient>,
    /// Each plugin's guest log rate, kept across its versions.
    log_rates: Mutex<HashMap<String, Arc<LogRate>>>,
}

/// Connects the backends `config` selects; a connection failure names the URL.
pub async fn connect(config: &HostConfig) -> anyhow::Result<Services> {
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
    let locks = lock::connect(config, redis.as_ref());
    Ok(Services {
        cache: cache::connect(config, redis.as_ref(), locks.clone(), metrics.clone()),
        store: store::connect(config, redis.as_ref()),
        locks,
        messaging: messaging::connect(config, redis.as_ref(), metrics.clone()).await?,
        http: http::HttpService::new(metrics.clone()),
        metrics,
        redis,
        log_rates: Default::default(),
    })
}

impl Services {
    /// The log rate of `plugin`, created on first use.
    fn log_rate(&self, plugin: &str) -> Arc<LogRate> {
        let mut rates = self.log_rates.lock().unwrap_or_else(|e| e.into_inner());
        rates.entry(plugin.to_string()).or_default().clone()
    }

    /// The limits and grants of plugin `name` under `config`: one grant per
    /// capability, each holding only what that capability's view may reach.
    pub fn context(&self, name: &str, config: &HostConfig) -> PluginContext {
        let plugin = config.plugins.get(name).cloned().unwrap_or_default();
        let limits = config.limits_of(name);
        let metrics = self.metrics.plugin(name);
        let secrets = Arc::new(Secrets::from_config(plugin.secrets));
        let layout = self.redis.as_ref().map(|r| r.layout()).unwrap_or_default();
        PluginContext {
            name: name.to_string(),
            limits,
            cache: CacheGrant::new(name, config, self.cache.clone()),
            store: StoreGrant::new(name, config, self.store.clone()),
            keyvalue: KeyValueGrant::new(name, config, &self.store),
            lock: LockGrant::new(name, config, layout, self.locks.clone()),
            messaging: MessagingGrant::new(name, config, self.messaging.clone()),
            settings: ConfigGrant::new(plugin.settings, secrets.clone()),
            log: LogGrant::new(
                name,
                self.log_rate(name),
                limits.max_log_records_per_s,
                metrics.clone(),
                secrets.clone(),
            ),
            http: self.http.plugin(name, config),
            metrics,
            secrets,
        }
    }
}
