//! The running platform: backends selected by `host.toml`, the runtime, the loaded
//! plugins and their consumers. `main` and the end-to-end tests both start this.

use crate::capability::Services;
use crate::capability::cache::memory::MemoryCache;
use crate::capability::cache::redis::RedisCache;
use crate::capability::cache::{CacheBackend, CacheStats};
use crate::capability::lock::LockBackend;
use crate::capability::lock::memory::MemoryLocks;
use crate::capability::lock::redis::RedisLocks;
use crate::capability::messaging::amqp::AmqpBroker;
use crate::capability::messaging::memory::MemoryBroker;
use crate::capability::messaging::{
    Broker, DefaultPriorities, Envelope, MessageTracker, now_ms, priority_level,
};
use crate::capability::redis_client::RedisClient;
use crate::capability::store::StoreBackend;
use crate::capability::store::memory::MemoryStore;
use crate::capability::store::redis::RedisStore;
use crate::config::{BrokerBackend, HostConfig, KvBackend};
use crate::plugins::{LoadedPlugin, PluginError, load_dir};
use crate::runtime::Runtime;
use anyhow::Context;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// How many message statuses the tracker remembers.
const TRACKED_MESSAGES: usize = 100_000;

/// A running host.
pub struct Platform {
    /// The configuration it runs with.
    pub config: Arc<HostConfig>,
    /// The wasmtime side.
    pub runtime: Arc<Runtime>,
    /// The backends.
    pub services: Arc<Services>,
    /// The plugins that loaded.
    pub plugins: Vec<Arc<LoadedPlugin>>,
    /// Why the other plugin files did not load.
    pub load_errors: Vec<PluginError>,
    tasks: Vec<JoinHandle<()>>,
}

/// Connects the backends `config` selects; a connection failure names the URL.
pub async fn connect_services(config: &HostConfig) -> anyhow::Result<Services> {
    let uses_redis = [
        config.backends.cache,
        config.backends.store,
        config.backends.lock,
    ]
    .contains(&KvBackend::Redis);
    let redis = match uses_redis {
        true => Some(RedisClient::connect(&config.redis).await?),
        false => None,
    };
    let redis_client = redis.clone();
    let redis = || {
        redis
            .clone()
            .expect("connected above when a capability selects redis")
    };
    let prefix = &config.host.key_prefix;
    let cache: Arc<dyn CacheBackend> = match config.backends.cache {
        KvBackend::Memory => Arc::new(MemoryCache::new(
            (config.cache.memory_budget_mib * 1024 * 1024) as usize,
        )),
        KvBackend::Redis => Arc::new(RedisCache::new(redis(), prefix)),
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
        BrokerBackend::Amqp => {
            Arc::new(AmqpBroker::connect(&config.amqp, config.dead_letter, config.messaging).await?)
        }
    };
    Ok(Services {
        cache,
        cache_stats: CacheStats::default(),
        store,
        locks,
        broker,
        tracker: MessageTracker::new(TRACKED_MESSAGES),
        priorities: DefaultPriorities::default(),
        redis: redis_client,
    })
}

impl Platform {
    /// Connects the backends, loads the plugins directory and starts consuming.
    pub async fn start(config: HostConfig) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let services = Arc::new(connect_services(&config).await?);
        let runtime = Arc::new(Runtime::new(&config)?);
        let dir = &config.host.plugins_dir;
        let (loaded, mut load_errors) = load_dir(&runtime, dir, config.clone(), services.clone())
            .await
            .with_context(|| format!("could not read the plugins directory {}", dir.display()))?;
        for error in &load_errors {
            tracing::error!(%error, "plugin not loaded");
        }
        let mut plugins = Vec::new();
        let mut tasks = Vec::new();
        for plugin in loaded {
            let plugin = Arc::new(plugin);
            tracing::info!(plugin = %plugin.name, path = %plugin.path.display(),
                subscriptions = ?plugin.subscriptions.iter().map(|s| (&s.queue, &s.routing_keys)).collect::<Vec<_>>(), "plugin loaded");
            match crate::dispatch::start(runtime.clone(), services.clone(), plugin.clone()).await {
                Ok(consumers) => {
                    tasks.extend(consumers);
                    services
                        .priorities
                        .set_plugin(&plugin.name, default_priorities(&config, &plugin));
                }
                Err(error) => {
                    let error = PluginError::Subscribe {
                        plugin: plugin.name.clone(),
                        message: format!("{error:#}"),
                    };
                    tracing::error!(%error, "plugin not loaded");
                    load_errors.push(error);
                    continue;
                }
            }
            plugins.push(plugin);
        }
        let names: Vec<String> = plugins
            .iter()
            .map(|p: &Arc<LoadedPlugin>| p.name.clone())
            .chain(crate::plugins::plugin_files(dir))
            .collect();
        let subscribed = plugins
            .iter()
            .flat_map(|p| p.subscriptions.iter().map(|s| s.queue.as_str()));
        let mut warnings = config.unknown_plugin_sections(&names);
        warnings.extend(config.unused_queue_types(subscribed));
        for warning in warnings {
            tracing::warn!("host.toml: {warning}");
        }
        Ok(Self {
            config,
            runtime,
            services,
            plugins,
            load_errors,
            tasks,
        })
    }

    /// Publishes a message as the operator (no grant applies); returns its id. Without
    /// a priority it takes the default of the queue types that bind the routing key.
    pub async fn publish(
        &self,
        routing_key: &str,
        payload: Vec<u8>,
        priority: Option<crate::bindings::techub::platform::messaging::Priority>,
    ) -> anyhow::Result<String> {
        crate::capability::messaging::routing::validate_routing_key(routing_key)
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            payload.len() <= self.config.host.max_message_bytes,
            "payload larger than host.max_message_bytes"
        );
        let id = uuid::Uuid::new_v4().to_string();
        let envelope = Envelope {
            id: id.clone(),
            routing_key: routing_key.to_string(),
            payload,
            headers: Vec::new(),
            correlation_id: None,
            reply_to: None,
            priority: priority
                .map_or_else(|| self.services.priorities.of(routing_key), priority_level),
            persistent: true,
            expiration_ms: None,
            published_at_ms: now_ms(),
            attempt: 1,
        };
        // Pending before the publish: a fast consumer may otherwise mark it done first.
        self.services.tracker.published(&id, None);
        if let Err(error) = self.services.broker.publish(envelope, None).await {
            self.services.tracker.forget(&id);
            return Err(error).context("could not publish");
        }
        Ok(id)
    }
}

/// What `plugin`'s subscriptions bind, each with its queue type's priority.
fn default_priorities(
    config: &HostConfig,
    plugin: &LoadedPlugin,
) -> Vec<(crate::capability::messaging::routing::TopicPattern, u8)> {
    plugin
        .subscriptions
        .iter()
        .flat_map(|s| {
            let level = config
                .queues
                .get(&s.queue)
                .map_or(5, |q| q.priority.level());
            s.routing_keys.iter().filter_map(move |key| {
                crate::capability::messaging::routing::TopicPattern::parse(key)
                    .ok()
                    .map(|pattern| (pattern, level))
            })
        })
        .collect()
}

impl Drop for Platform {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
