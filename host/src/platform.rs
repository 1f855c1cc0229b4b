//! The running platform: backends selected by `host.toml`, the runtime, the loaded
//! plugins and their consumers. `main` and the end-to-end tests both start this.

use crate::cache_events::CacheEvents;
use crate::capability::Services;
use crate::capability::cache::l1::TwoLayerCache;
use crate::capability::cache::memory::MemoryCache;
use crate::capability::cache::redis::RedisCache;
use crate::capability::cache::{CacheBackend, CacheStats, Loaders, ReadThrough};
use crate::capability::lock::LockBackend;
use crate::capability::lock::memory::MemoryLocks;
use crate::capability::lock::redis::RedisLocks;
use crate::capability::messaging::amqp::AmqpBroker;
use crate::capability::messaging::memory::MemoryBroker;
use crate::capability::messaging::replies::Replies;
use crate::capability::messaging::shared_status::SharedStatuses;
use crate::capability::messaging::{
    Broker, DefaultPriorities, Envelope, MessageTracker, now_ms, priority_level,
};
use crate::capability::redis_client::RedisClient;
use crate::capability::store::StoreBackend;
use crate::capability::store::memory::MemoryStore;
use crate::capability::store::redis::RedisStore;
use crate::config::{BrokerBackend, ConfigError, HostConfig, KvBackend};
use crate::metrics::Metrics;
use crate::registry::{DrainReport, PluginInfo, Registry};
use crate::runtime::Runtime;
use crate::watch::Watcher;
use anyhow::Context;
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many message statuses the tracker remembers.
const TRACKED_MESSAGES: usize = 100_000;

/// A running host.
pub struct Platform {
    /// The configuration in force; a reload swaps it.
    config: Arc<ArcSwap<HostConfig>>,
    /// The wasmtime side.
    pub runtime: Arc<Runtime>,
    /// The backends.
    pub services: Arc<Services>,
    registry: Arc<Registry>,
    watcher: Mutex<Option<Watcher>>,
    /// The metrics poller, the statistics and status flushers and the warmer: told to
    /// stop by `stopping` at shutdown (the flushers flush once more) and awaited.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Cancelled when the host starts stopping: long-lived admin streams (`tail`) end
    /// then, so that the admin endpoint's graceful shutdown does not wait for them.
    stopping: tokio_util::sync::CancellationToken,
    /// `[stand_ins]`'s local providers, serving while the platform lives.
    pub stand_ins: Option<crate::stand_ins::StandIns>,
    /// Where `[webhooks]` are served, once bound.
    webhooks_addr: Option<std::net::SocketAddr>,
}

/// Longest the shutdown waits for one background task to finish its last round, or
/// for one of its last calls to a service.
const BACKGROUND_STOP: Duration = Duration::from_secs(5);

/// Awaits `step` of the shutdown for at most [`BACKGROUND_STOP`], saying so if it did
/// not finish.
async fn bounded(step: &str, future: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(BACKGROUND_STOP, future).await.is_err() {
        tracing::warn!(
            "shutdown: {step} did not finish within {} s; going on without it",
            BACKGROUND_STOP.as_secs()
        );
    }
}

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

impl Drop for Platform {
    fn drop(&mut self) {
        // Dropped without `shutdown` (a test, a failed start): nothing to drain for.
        self.stopping.cancel();
        self.background_tasks().iter().for_each(|task| task.abort());
        self.services.cache_events.stop();
    }
}

/// What an operator's publish may set besides the routing key and payload.
#[derive(Debug, Clone, Default)]
pub struct OperatorMessage {
    /// Queue priority; `None`: the queue types that bind the key decide.
    pub priority: Option<crate::bindings::techub::platform::messaging::Priority>,
    /// The message id (a plugin's idempotency key); `None`: a fresh one.
    pub message_id: Option<String>,
    /// The correlation id.
    pub correlation_id: Option<String>,
    /// Application headers (names starting with `x-` are refused).
    pub headers: Vec<(String, String)>,
}

impl Platform {
    /// Connects the backends, loads the plugins directory, starts consuming, and
    /// watches the directory for plugins dropped, replaced or removed.
    pub async fn start(config: HostConfig) -> anyhow::Result<Self> {
        // First: a port conflict must stop the start before anything is consumed.
        let webhooks = crate::webhooks::bind(&config).await?;
        // Before the plugins: their first messages may call them.
        let stand_ins = match &config.stand_ins {
            Some(section) => Some(crate::stand_ins::StandIns::start(section).await?),
            None => None,
        };
        let services = Arc::new(connect_services(&config).await?);
        let runtime = Arc::new(Runtime::new(&config)?);
        let dir = config.host.plugins_dir.clone();
        let config = Arc::new(ArcSwap::from_pointee(config));
        let registry = Arc::new(Registry::new(
            runtime.clone(),
            services.clone(),
            config.clone(),
        ));
        let loaders: Arc<dyn Loaders> = registry.clone();
        services.read_through.set_loaders(Arc::downgrade(&loaders));
        let stopping = tokio_util::sync::CancellationToken::new();
        let background = {
            let config = config.load();
            vec![
                crate::metrics::spawn_poller(
                    registry.clone(),
                    runtime.clone(),
                    services.clone(),
                    Duration::from_millis(config.host.metrics_poll_ms),
                    stopping.clone(),
                ),
                services.cache_stats.spawn_flusher(
                    Duration::from_millis(config.cache.stats_flush_ms),
                    stopping.clone(),
                ),
            ]
            .into_iter()
            .chain(
                services
                    .tracker
                    .shared()
                    .map(|shared| shared.spawn_flusher(stopping.clone())),
            )
            .collect()
        };
        let platform = Self {
            config,
            runtime,
            services,
            registry,
            watcher: Mutex::new(None),
            background: Mutex::new(background),
            stopping,
            stand_ins,
            webhooks_addr: webhooks.as_ref().and_then(|l| l.local_addr().ok()),
        };
        // Watch first, so that nothing dropped while the directory loads is missed
        // (a file seen twice is loaded once: its hash is the version).
        platform.watch(None)?;
        platform
            .registry
            .load_dir()
            .await
            .with_context(|| format!("could not read the plugins directory {}", dir.display()))?;
        let rules = platform.config.load().cache.invalidate.clone();
        platform
            .services
            .cache_events
            .apply(&rules)
            .await
            .context("could not start consuming the cache invalidation events")?;
        // After the plugins: the first round needs the loaders serving.
        let warmer = crate::cache_warm::spawn_warmer(
            platform.services.clone(),
            platform.config.clone(),
            platform.stopping.clone(),
        );
        platform.background_tasks().push(warmer);
        // After the plugins, so that a tick's message finds their queues bound.
        let scheduler = crate::schedules::spawn(
            platform.services.clone(),
            platform.config.clone(),
            platform.stopping.clone(),
        );
        platform.background_tasks().push(scheduler);
        // Last: a webhook's message must find the plugins' queues bound.
        if let Some(listener) = webhooks {
            let server = crate::webhooks::serve(
                listener,
                platform.services.clone(),
                platform.config.clone(),
                platform.stopping.clone(),
            );
            platform.background_tasks().push(server);
        }
        platform.warn_about_config().await;
        Ok(platform)
    }

    /// Watches the plugins directory and, with `config_file`, that file: a change to
    /// it is reloaded as [`Platform::reload_config_file`] does.
    pub fn watch(&self, config_file: Option<PathBuf>) -> anyhow::Result<()> {
        let dir = self.config.load().host.plugins_dir.clone();
        let (registry, config, file) = (
            self.registry.clone(),
            self.config.clone(),
            config_file.clone(),
        );
        let on_config = move || -> futures::future::BoxFuture<'static, ()> {
            let (registry, config, file) = (registry.clone(), config.clone(), file.clone());
            Box::pin(async move {
                if let Some(file) = file {
                    let _ = reload_file(&registry, &config, &file).await;
                }
            })
        };
        let watcher = crate::watch::watch(self.registry.clone(), &dir, config_file, on_config)
            .with_context(|| format!("could not watch the plugins directory {}", dir.display()))?;
        *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<HostConfig> {
        self.config.load_full()
    }

    /// The registry of plugins.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The plugins serving or draining.
    pub async fn plugins(&self) -> Vec<PluginInfo> {
        self.registry.plugins().await.0
    }

    /// Why the files that did not become plugins failed.
    pub async fn load_errors(&self) -> Vec<String> {
        self.registry
            .plugins()
            .await
            .1
            .into_iter()
            .map(|f| f.reason)
            .collect()
    }

    /// Applies `new` as [`HostConfig::for_reload`] allows (fields fixed at start keep
    /// their running values and are named in the answer), to every plugin's next
    /// invocation. An invalid configuration changes nothing.
    pub async fn reload_config(&self, new: HostConfig) -> Result<Vec<String>, ConfigError> {
        reload(&self.registry, &self.config, new).await
    }

    /// Reads, validates and applies the configuration file at `path`; on an error
    /// (logged with the field's name) the running configuration stays.
    pub async fn reload_config_file(&self, path: &Path) -> Result<Vec<String>, ConfigError> {
        reload_file(&self.registry, &self.config, path).await
    }

    fn background_tasks(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.background.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cancelled once the host starts stopping (a signal, or [`Platform::shutdown`]).
    pub fn stopping(&self) -> &tokio_util::sync::CancellationToken {
        &self.stopping
    }

    /// Stops consuming, lets deliveries in flight finish (up to
    /// `host.drain_timeout_ms`), then closes the broker connection.
    pub async fn shutdown(&self) -> DrainReport {
        self.stopping.cancel();
        self.watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let timeout = Duration::from_millis(self.config.load().host.drain_timeout_ms);
        let report = self.registry.shutdown(timeout).await;
        // Told to stop when `stopping` was cancelled above; each finishes what it
        // holds (the flushers flush once more). Bounded: a backend that does not
        // answer must not hold the exit.
        let background = std::mem::take(&mut *self.background_tasks());
        for task in background {
            let abort = task.abort_handle();
            if tokio::time::timeout(BACKGROUND_STOP, task).await.is_err() {
                abort.abort();
            }
        }
        self.services.cache_events.stop();
        // What this host counted since the last flush reaches Redis before it goes,
        // and the broker connection closes cleanly; each bounded, since a service that
        // stopped answering must not hold the exit.
        bounded(
            "the cache statistics flush",
            self.services.cache_stats.flush(),
        )
        .await;
        if let Some(shared) = self.services.tracker.shared() {
            bounded("the message status flush", shared.flush()).await;
        }
        bounded(
            "closing the broker connection",
            self.services.broker.close(),
        )
        .await;
        report
    }

    async fn warn_about_config(&self) {
        let config = self.config();
        let names = crate::plugins::plugin_files(&config.host.plugins_dir);
        let plugins = self.plugins().await;
        let subscribed = plugins
            .iter()
            .flat_map(|p| p.subscriptions.iter().map(|(queue, _)| queue.as_str()));
        let mut warnings = config.unknown_plugin_sections(&names);
        warnings.extend(config.plugins_without_section(&names));
        warnings.extend(config.unused_queue_types(subscribed));
        for warning in warnings {
            tracing::warn!("host.toml: {warning}");
        }
    }

    /// Where `[webhooks]` are served (the port bound when `webhooks.addr` asked for 0).
    pub fn webhooks_addr(&self) -> Option<std::net::SocketAddr> {
        self.webhooks_addr
    }

    /// Publishes a message as the operator (no grant applies); returns its id. Without
    /// a priority it takes the default of the queue types that bind the routing key.
    pub async fn publish(
        &self,
        routing_key: &str,
        payload: Vec<u8>,
        priority: Option<crate::bindings::techub::platform::messaging::Priority>,
    ) -> anyhow::Result<String> {
        let message = OperatorMessage {
            priority,
            ..OperatorMessage::default()
        };
        self.publish_message(routing_key, payload, message).await
    }

    /// [`Platform::publish`] with a message id (to test idempotency), a correlation id
    /// and headers, checked as a plugin's would be.
    pub async fn publish_message(
        &self,
        routing_key: &str,
        payload: Vec<u8>,
        message: OperatorMessage,
    ) -> anyhow::Result<String> {
        let max_bytes = self.config.load().host.max_message_bytes;
        publish_operator(&self.services, max_bytes, routing_key, payload, message).await
    }
}

/// Publishes as the operator (the admin endpoint, schedules): persistent, checked as a
/// plugin's publish would be, with the routing key's default priority unless given.
pub(crate) async fn publish_operator(
    services: &Services,
    max_message_bytes: usize,
    routing_key: &str,
    payload: Vec<u8>,
    message: OperatorMessage,
) -> anyhow::Result<String> {
    let envelope = operator_envelope(services, max_message_bytes, routing_key, payload, message)?;
    let id = envelope.id.clone();
    // Pending before the publish: a fast consumer may otherwise mark it done first.
    services.tracker.published(&id, None);
    if let Err(error) = services.broker.publish(envelope, None).await {
        services.tracker.forget(&id);
        return Err(error).context("could not publish");
    }
    Ok(id)
}

/// The envelope of an operator's message, checked as a plugin's publish would be
/// (the routing key, the size, the options); the error says what is wrong with it.
pub(crate) fn operator_envelope(
    services: &Services,
    max_message_bytes: usize,
    routing_key: &str,
    payload: Vec<u8>,
    message: OperatorMessage,
) -> anyhow::Result<Envelope> {
    crate::capability::messaging::routing::validate_routing_key(routing_key)
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        payload.len() <= max_message_bytes,
        "payload larger than host.max_message_bytes"
    );
    crate::capability::messaging::check_options(
        &crate::bindings::techub::platform::messaging::PublishOptions {
            priority: message.priority,
            persistent: true,
            expiration_ms: None,
            delay_ms: None,
            correlation_id: message.correlation_id.clone(),
            reply_to: None,
            headers: message.headers.clone(),
            message_id: message.message_id.clone(),
        },
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = message
        .message_id
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let priority = message.priority;
    Ok(Envelope {
        id,
        routing_key: routing_key.to_string(),
        payload,
        headers: message.headers,
        correlation_id: message.correlation_id,
        reply_to: None,
        priority: priority.map_or_else(|| services.priorities.of(routing_key), priority_level),
        persistent: true,
        expiration_ms: None,
        published_at_ms: now_ms(),
        attempt: 1,
        parked: None,
    })
}

async fn reload(
    registry: &Registry,
    config: &ArcSwap<HostConfig>,
    new: HostConfig,
) -> Result<Vec<String>, ConfigError> {
    let running = config.load_full();
    let (effective, ignored) = new.for_reload(&running, registry.slot_memory_mib())?;
    for field in &ignored {
        tracing::warn!(%field, "host.toml: this field changes only with a restart; the running value stays");
    }
    registry.reconfigure(Arc::new(effective)).await;
    tracing::info!("host.toml reloaded");
    Ok(ignored)
}

/// The text of `path` once two reads 50 ms apart agree: an editor or `cp` writing
/// the file (truncate, then write) must not be caught half-way.
async fn read_settled(path: &Path) -> Result<String, ConfigError> {
    let read = || async {
        tokio::fs::read_to_string(path)
            .await
            .map_err(|e| ConfigError::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    };
    let mut text = read().await?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = read().await?;
        if again == text {
            break;
        }
        text = again;
    }
    Ok(text)
}

async fn reload_file(
    registry: &Registry,
    config: &ArcSwap<HostConfig>,
    path: &Path,
) -> Result<Vec<String>, ConfigError> {
    let parsed = match read_settled(path).await {
        // Valid at start (every default), but on a reload an empty file is a write
        // caught half-way far more often than a wish to drop every setting.
        Ok(text) if text.trim().is_empty() => Err(ConfigError::Invalid {
            field: path.display().to_string(),
            message:
                "is empty; not applied (write host.toml with a rename to change it atomically)"
                    .into(),
        }),
        Ok(text) => HostConfig::from_file_text(path, &text),
        Err(error) => Err(error),
    };
    let result = match parsed {
        Ok(new) => reload(registry, config, new).await,
        Err(error) => Err(error),
    };
    if let Err(error) = &result {
        tracing::error!(%error, "host.toml not reloaded; the running configuration stays");
    }
    result
}
