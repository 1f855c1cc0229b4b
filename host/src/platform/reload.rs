//! A new `host.toml` applied: the fields fixed at start keep their running values, the
//! services take theirs (dead-letter limits, invalidation rules, L1), then the registry
//! swaps each plugin to a version built from it.

use crate::cache_events::CacheEvents;
use crate::config::{ConfigError, HostConfig};
use crate::registry::Registry;
use crate::services::Services;
use arc_swap::ArcSwap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What a command sets over its configuration file, applied again to every reload of
/// it (so that the file's own value is not taken for a change).
pub(super) type FileOverrides = dyn Fn(&mut HostConfig) + Send + Sync;

/// Applies configurations, one at a time (a file change and a SIGHUP may race).
#[derive(Clone)]
pub(super) struct Reloader {
    pub(super) registry: Arc<Registry>,
    pub(super) services: Arc<Services>,
    pub(super) cache_events: Arc<CacheEvents>,
    pub(super) config: Arc<ArcSwap<HostConfig>>,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl Reloader {
    pub(super) fn new(
        registry: Arc<Registry>,
        services: Arc<Services>,
        cache_events: Arc<CacheEvents>,
        config: Arc<ArcSwap<HostConfig>>,
    ) -> Self {
        Self {
            registry,
            services,
            cache_events,
            config,
            one_at_a_time: Arc::default(),
        }
    }

    /// Applies `new` as [`HostConfig::for_reload`] allows; the fields it kept.
    pub(super) async fn reload(&self, new: HostConfig) -> Result<Vec<String>, ConfigError> {
        let _one = self.one_at_a_time.lock().await;
        let running = self.config.load_full();
        let (effective, ignored) = new.for_reload(&running, self.registry.slot_memory_mib())?;
        for field in &ignored {
            tracing::warn!(%field, "host.toml: this field changes only with a restart; the running value stays");
        }
        if self.registry.is_stopped().await {
            return Ok(ignored);
        }
        let effective = Arc::new(effective);
        self.apply_to_services(&running, &effective).await;
        self.registry.reconfigure(effective).await;
        tracing::info!("host.toml reloaded");
        Ok(ignored)
    }

    /// Reads, validates and applies the file at `path`; on an error (logged with the
    /// field's name) the running configuration stays.
    pub(super) async fn reload_file(&self, path: &Path) -> Result<Vec<String>, ConfigError> {
        self.reload_file_with(path, &|_| {}).await
    }

    /// [`Reloader::reload_file`], with `overrides` (what the command line set over the
    /// file at start, e.g. `dev`'s plugins directory) applied to what it read.
    pub(super) async fn reload_file_with(
        &self,
        path: &Path,
        overrides: &FileOverrides,
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
            Ok(text) => HostConfig::from_file_text(path, &text).map(|mut config| {
                overrides(&mut config);
                config
            }),
            Err(error) => Err(error),
        };
        let result = match parsed {
            Ok(new) => self.reload(new).await,
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            tracing::error!(%error, "host.toml not reloaded; the running configuration stays");
        }
        result
    }
}

impl Reloader {
    /// What of `new` the services apply themselves: the broker's dead-letter limits,
    /// the invalidation rules' bindings, the L1s. A failure keeps the running setting
    /// and says so; the rest of the reload goes on.
    async fn apply_to_services(&self, running: &HostConfig, new: &HostConfig) {
        let services = &self.services;
        if running.dead_letter != new.dead_letter
            && let Err(error) = services
                .messaging
                .broker
                .set_dead_letter_limits(new.dead_letter)
                .await
        {
            tracing::error!(%error, "host.toml: could not apply [dead_letter]; the dead-letter queue keeps its limits");
        }
        if running.cache.invalidate != new.cache.invalidate
            && let Err(error) = self.cache_events.apply(&new.cache.invalidate).await
        {
            tracing::error!(%error, "host.toml: could not apply [[cache.invalidate]]; the previous rules stay bound");
        }
        if let Some(l1) = &services.cache.l1
            && (running.cache.l1 != new.cache.l1
                || running.cache.l1_max_stale_ms != new.cache.l1_max_stale_ms)
        {
            l1.configure(&new.cache);
        }
    }
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
