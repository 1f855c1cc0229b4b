//! The running platform: backends selected by `host.toml`, the runtime, the loaded
//! plugins and their consumers. `main` and the end-to-end tests both start this.
//!
//! # Layout
//! - `mod.rs`: [`Platform`]: start, watch, shutdown (one stopping token; background
//!   tasks told to stop and awaited, bounded).
//! - `reload.rs`: a new `host.toml` applied to the services, then to the registry.
//! - `poll.rs`: the gauges read at an interval (queue depths, pool slots, backends up).

mod poll;
mod reload;

pub use crate::capability::messaging::operator::OperatorMessage;
use crate::capability::messaging::operator::publish_operator;

use crate::capability::cache::Loaders;
use crate::config::{ConfigError, HostConfig};
use crate::registry::{DrainReport, PluginInfo, Registry};
use crate::runtime::Runtime;
use crate::services::Services;
use crate::watch::Watcher;
use anyhow::Context;
use arc_swap::ArcSwap;
use reload::FileOverrides;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running host.
pub struct Platform {
    /// The configuration in force; a reload swaps it.
    config: Arc<ArcSwap<HostConfig>>,
    /// The wasmtime side.
    pub runtime: Arc<Runtime>,
    /// The backends.
    pub services: Arc<Services>,
    /// The consumer of `[[cache.invalidate]]` events.
    cache_events: Arc<crate::cache_events::CacheEvents>,
    registry: Arc<Registry>,
    reloader: reload::Reloader,
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
    /// When it started.
    started: std::time::Instant,
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

impl Drop for Platform {
    fn drop(&mut self) {
        // Dropped without `shutdown` (a test, a failed start): nothing to drain for.
        self.stopping.cancel();
        self.background_tasks().iter().for_each(|task| task.abort());
        self.cache_events.cancel();
    }
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
        let services = Arc::new(crate::services::connect(&config).await?);
        let runtime = Arc::new(Runtime::new(&config)?);
        let dir = config.host.plugins_dir.clone();
        let config = Arc::new(ArcSwap::from_pointee(config));
        let registry = Arc::new(Registry::new(
            runtime.clone(),
            services.clone(),
            config.clone(),
        ));
        let loaders: Arc<dyn Loaders> = registry.clone();
        services
            .cache
            .read_through
            .set_loaders(Arc::downgrade(&loaders));
        let stopping = tokio_util::sync::CancellationToken::new();
        let background = {
            let config = config.load();
            vec![
                poll::spawn_poller(
                    registry.clone(),
                    runtime.clone(),
                    services.clone(),
                    Duration::from_millis(config.host.metrics_poll_ms),
                    stopping.clone(),
                ),
                services.cache.stats.spawn_flusher(
                    Duration::from_millis(config.cache.stats_flush_ms),
                    stopping.clone(),
                ),
            ]
            .into_iter()
            .chain(
                services
                    .messaging
                    .tracker
                    .shared()
                    .map(|shared| shared.spawn_flusher(stopping.clone())),
            )
            .collect()
        };
        let cache_events = Arc::new(crate::cache_events::CacheEvents::new(
            services.messaging.broker.clone(),
            services.cache.backend.clone(),
            services.cache.stats.clone(),
            services.metrics.clone(),
            &config.load().amqp.queue_prefix,
        ));
        let reloader = reload::Reloader::new(
            registry.clone(),
            services.clone(),
            cache_events.clone(),
            config.clone(),
        );
        let platform = Self {
            config,
            runtime,
            services,
            reloader,
            cache_events,
            registry,
            watcher: Mutex::new(None),
            background: Mutex::new(background),
            stopping,
            stand_ins,
            webhooks_addr: webhooks.as_ref().and_then(|l| l.local_addr().ok()),
            started: std::time::Instant::now(),
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
        self.watch_overridden(config_file, |_| {})
    }

    /// [`Platform::watch`], applying `overrides` to each reload of `config_file`: the
    /// values a command set over the file's at start (`dev`'s plugins directory and
    /// admin address), which would otherwise be reported as changes that need a
    /// restart on every reload.
    pub fn watch_overridden(
        &self,
        config_file: Option<PathBuf>,
        overrides: impl Fn(&mut HostConfig) + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        let dir = self.config.load().host.plugins_dir.clone();
        let overrides: Arc<FileOverrides> = Arc::new(overrides);
        let (reloader, file) = (self.reloader.clone(), config_file.clone());
        let on_config = move || -> futures::future::BoxFuture<'static, ()> {
            let (reloader, file, overrides) = (reloader.clone(), file.clone(), overrides.clone());
            Box::pin(async move {
                if let Some(file) = file {
                    let _ = reloader.reload_file_with(&file, &*overrides).await;
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

    /// How long it has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The consumer of `[[cache.invalidate]]` events.
    pub fn cache_events(&self) -> &Arc<crate::cache_events::CacheEvents> {
        &self.cache_events
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
        self.reloader.reload(new).await
    }

    /// Reads, validates and applies the configuration file at `path`; on an error
    /// (logged with the field's name) the running configuration stays.
    pub async fn reload_config_file(&self, path: &Path) -> Result<Vec<String>, ConfigError> {
        self.reloader.reload_file(path).await
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
        bounded(
            "the cache invalidation consumer's drain",
            self.cache_events.stop(),
        )
        .await;
        // What this host counted since the last flush reaches Redis before it goes,
        // and the broker connection closes cleanly; each bounded, since a service that
        // stopped answering must not hold the exit.
        bounded(
            "the cache statistics flush",
            self.services.cache.stats.flush(),
        )
        .await;
        if let Some(shared) = self.services.messaging.tracker.shared() {
            bounded("the message status flush", shared.flush()).await;
        }
        bounded(
            "closing the broker connection",
            self.services.messaging.broker.close(),
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
        priority: Option<crate::capability::bindings::techub::platform::messaging::Priority>,
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
        publish_operator(
            &self.services.messaging,
            max_bytes,
            routing_key,
            payload,
            message,
        )
        .await
    }
}
