//! What the host knows of one plugin while it runs: its name, grants, settings, limits
//! and the namespaces its keys live in. Built from `host.toml` at load (and reload).

use super::Services;
use super::messaging::routing::TopicPattern;
use crate::config::{HostConfig, Limits};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One plugin's grants, limits and namespaces.
pub struct PluginContext {
    /// The plugin's name (its file stem).
    pub name: String,
    /// Its effective per-message limits.
    pub limits: Limits,
    /// Cache domain → default TTL in seconds, for the granted domains only.
    pub cache_domains: BTreeMap<String, u32>,
    /// Routing-key patterns it may publish to.
    pub publish: Vec<TopicPattern>,
    /// Routing-key patterns its subscriptions may bind.
    pub subscribe: Vec<TopicPattern>,
    /// Its settings.
    pub settings: BTreeMap<String, String>,
    /// Prefix of its `store` keys: `<key_prefix>store:<name>:`.
    pub store_prefix: String,
    /// Prefix of its lock names: `<key_prefix>lock:<name>:`.
    pub lock_prefix: String,
    /// The fencing counter of its locks: `<key_prefix>lock-fence:<name>`.
    pub lock_fence: String,
    /// The configuration it was built from.
    pub config: Arc<HostConfig>,
    /// The backends.
    pub services: Arc<Services>,
    /// Its metric handles (shared by its versions).
    pub metrics: Arc<crate::metrics::PluginMetrics>,
    /// Its guest log rate (shared by its versions).
    pub log_rate: Arc<super::log::LogRate>,
}

impl PluginContext {
    /// The context of `name` under `config`.
    pub fn new(name: &str, config: Arc<HostConfig>, services: Arc<Services>) -> Self {
        let plugin = config.plugins.get(name).cloned().unwrap_or_default();
        let cache_domains = plugin
            .cache_domains
            .iter()
            .filter_map(|d| config.cache.domains.get(d).map(|ttl| (d.clone(), *ttl)))
            .collect();
        // Patterns were validated with the config; an invalid one cannot reach here.
        let patterns = |list: &[String]| {
            list.iter()
                .filter_map(|p| TopicPattern::parse(p).ok())
                .collect::<Vec<_>>()
        };
        let publish = patterns(&plugin.publish);
        let subscribe = patterns(&plugin.subscribe);
        let prefix = &config.host.key_prefix;
        Self {
            name: name.to_string(),
            limits: config.limits_of(name),
            cache_domains,
            publish,
            subscribe,
            settings: plugin.settings,
            store_prefix: format!("{prefix}store:{name}:"),
            lock_prefix: format!("{prefix}lock:{name}:"),
            lock_fence: format!("{prefix}lock-fence:{name}"),
            config: config.clone(),
            metrics: services.metrics.plugin(name),
            log_rate: services.log_rate(name),
            services,
        }
    }
}
