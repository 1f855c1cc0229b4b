//! What the host knows of one plugin while it runs: its name and limits, and one grant
//! per capability (built by the capability's own `mod.rs`), each holding only what
//! that capability's view may reach. Built from `host.toml` at load (and reload).

use super::Services;
use super::cache::{CacheGrant, CacheService};
use super::config::ConfigGrant;
use super::lock::LockGrant;
use super::log::LogGrant;
use super::messaging::{MessagingGrant, MessagingService};
use super::store::StoreGrant;
use crate::config::{HostConfig, Limits, SecretValue};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One plugin's limits and grants.
pub struct PluginContext {
    /// The plugin's name (its file stem).
    pub name: String,
    /// Its effective per-message limits.
    pub limits: Limits,
    /// Its cache domains, and the cache.
    pub cache: CacheGrant,
    /// Its store namespace, and the store.
    pub store: StoreGrant,
    /// Its `wasi:keyvalue` buckets (store namespaces).
    pub keyvalue: super::keyvalue::KeyValueGrant,
    /// Its lock namespace, and the locks.
    pub lock: LockGrant,
    /// Its publish and subscribe grants, and the broker.
    pub messaging: MessagingGrant,
    /// Its settings and secrets.
    pub settings: ConfigGrant,
    /// Its log name and rate.
    pub log: LogGrant,
    /// Its outbound HTTP: grants, limits, pooled client.
    pub http: Arc<super::http::PluginHttp>,
    /// Its metric handles (shared by its versions).
    pub metrics: Arc<crate::metrics::PluginMetrics>,
    /// Its secrets, masked in what it writes.
    secrets: Arc<Secrets>,
}

impl PluginContext {
    /// The context of `name` under `config`, over the connected `services`.
    pub fn new(name: &str, config: &HostConfig, services: &Services) -> Self {
        let plugin = config.plugins.get(name).cloned().unwrap_or_default();
        let limits = config.limits_of(name);
        let metrics = services.metrics.plugin(name);
        let secrets = Arc::new(Secrets(
            plugin
                .secrets
                .into_iter()
                .map(|(key, secret)| (key, secret.value))
                .collect(),
        ));
        let layout = services
            .redis
            .as_ref()
            .map(|r| r.layout())
            .unwrap_or_default();
        let cache = CacheService {
            backend: services.cache.clone(),
            l1: services.l1.clone(),
            stats: services.cache_stats.clone(),
            read_through: services.read_through.clone(),
        };
        let messaging = MessagingService {
            broker: services.broker.clone(),
            replies: services.replies.clone(),
            tracker: services.tracker.clone(),
            priorities: services.priorities.clone(),
            metrics: services.metrics.clone(),
        };
        Self {
            name: name.to_string(),
            limits,
            cache: CacheGrant::new(name, config, cache),
            store: StoreGrant::new(name, config, services.store.clone()),
            keyvalue: super::keyvalue::KeyValueGrant::new(name, config, &services.store),
            lock: LockGrant::new(name, config, layout, services.locks.clone()),
            messaging: MessagingGrant::new(name, config, messaging),
            settings: ConfigGrant::new(plugin.settings, secrets.clone()),
            log: LogGrant::new(
                name,
                services.log_rate(name),
                limits.max_log_records_per_s,
                metrics.clone(),
                secrets.clone(),
            ),
            http: services.http.plugin(name, config),
            metrics,
            secrets,
        }
    }
}

/// A plugin's secrets by name (served by `config` beside the settings; never printed).
#[derive(Default)]
pub struct Secrets(BTreeMap<String, SecretValue>);

/// Shortest secret value masked: shorter ones would mask ordinary words.
const MIN_MASKED_SECRET: usize = 4;

impl Secrets {
    /// The secret `name`.
    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.0.get(name)
    }

    /// Every secret, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &SecretValue)> {
        self.0.iter()
    }

    /// `text` (something the plugin wrote: a log record, its output, a failure
    /// reason) with the value of each secret replaced by `[secret <name>]`, so that a
    /// plugin's own mistake does not put a credential into the host's log or a dead
    /// letter. (What it sends over HTTP or publishes is its own business.)
    pub fn mask<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let mut masked = std::borrow::Cow::Borrowed(text);
        for (name, secret) in &self.0 {
            let value = secret.expose();
            if value.len() >= MIN_MASKED_SECRET && masked.contains(value) {
                masked =
                    std::borrow::Cow::Owned(masked.replace(value, &format!("[secret {name}]")));
            }
        }
        masked
    }
}

impl PluginContext {
    /// [`Secrets::mask`] of this plugin's secrets.
    pub fn mask<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        self.secrets.mask(text)
    }
}
