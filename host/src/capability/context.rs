//! What the host knows of one plugin while it runs: its name, grants, settings, limits
//! and the namespaces its keys live in. Built from `host.toml` at load (and reload).

use super::Services;
use crate::config::{HostConfig, Limits};
use crate::names::routing::TopicPattern;
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
    /// Its secrets (served by `config` beside the settings; never printed).
    pub secrets: BTreeMap<String, crate::config::SecretValue>,
    /// Its outbound HTTP: grants, limits, pooled client.
    pub http: Arc<super::http::PluginHttp>,
    /// Prefix of its `store` keys: `<key_prefix>store:<name>:`.
    pub store_prefix: String,
    /// Prefix of its lock names: `<key_prefix>lock:<name>:`.
    pub lock_prefix: String,
    /// The fencing counter of its locks: `<key_prefix>lock-fence:<name>` (on a Redis
    /// Cluster `<name>` is `{<name>}`, as in its lock keys: one slot).
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
        let layout = services
            .redis
            .as_ref()
            .map(|r| r.layout())
            .unwrap_or_default();
        Self {
            name: name.to_string(),
            limits: config.limits_of(name),
            cache_domains,
            publish,
            subscribe,
            settings: plugin.settings,
            secrets: plugin
                .secrets
                .into_iter()
                .map(|(key, secret)| (key, secret.value))
                .collect(),
            http: services.http.plugin(name, &config),
            // A plugin's store keys hash whole (or by their own `{tag}`), so they spread
            // over a cluster; its locks share the slot of its fencing counter, which
            // every acquire increments in the same script.
            store_prefix: format!("{prefix}store:{name}:"),
            lock_prefix: format!("{prefix}lock:{}:", layout.group(name)),
            lock_fence: format!("{prefix}lock-fence:{}", layout.group(name)),
            config: config.clone(),
            metrics: services.metrics.plugin(name),
            log_rate: services.log_rate(name),
            services,
        }
    }
}

/// Shortest secret value masked: shorter ones would mask ordinary words.
const MIN_MASKED_SECRET: usize = 4;

impl PluginContext {
    /// `text` (something the plugin wrote: a log record, its output, a failure
    /// reason) with the value of each of its secrets replaced by `[secret <name>]`,
    /// so that a plugin's own mistake does not put a credential into the host's log or
    /// a dead letter. (What it sends over HTTP or publishes is its own business.)
    pub fn mask<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        let mut masked = std::borrow::Cow::Borrowed(text);
        for (name, secret) in &self.secrets {
            let value = secret.expose();
            if value.len() >= MIN_MASKED_SECRET && masked.contains(value) {
                masked =
                    std::borrow::Cow::Owned(masked.replace(value, &format!("[secret {name}]")));
            }
        }
        masked
    }

    /// [`Self::mask`] applied to a handler's failure reason.
    pub fn mask_outcome(
        &self,
        result: &mut Result<crate::bindings::Outcome, crate::runtime::InvocationError>,
    ) {
        use crate::bindings::Outcome;
        use crate::runtime::InvocationError;
        if self.secrets.is_empty() {
            return;
        }
        let reason = match result {
            Ok(Outcome::Retry(reason) | Outcome::Reject(reason)) => reason,
            Err(InvocationError::Trap(reason) | InvocationError::MemoryLimit(_, reason)) => reason,
            _ => return,
        };
        if let std::borrow::Cow::Owned(masked) = self.mask(reason) {
            *reason = masked;
        }
    }
}
