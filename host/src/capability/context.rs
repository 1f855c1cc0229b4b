//! What the host knows of one plugin while it runs: its name and limits, and one grant
//! per capability (built by the capability's own `mod.rs`), each holding only what
//! that capability's view may reach. Built from `host.toml` at load (and reload) by
//! `services::Services::context`.

use super::cache::CacheGrant;
use super::config::ConfigGrant;
use super::lock::LockGrant;
use super::log::LogGrant;
use super::messaging::MessagingGrant;
use super::store::StoreGrant;
use crate::config::{Limits, SecretRef, SecretValue};
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
    pub secrets: Arc<Secrets>,
}

/// A plugin's secrets by name (served by `config` beside the settings; never printed).
#[derive(Default)]
pub struct Secrets(BTreeMap<String, SecretValue>);

/// Shortest secret value masked: shorter ones would mask ordinary words.
const MIN_MASKED_SECRET: usize = 4;

impl Secrets {
    /// The secrets `[plugins.<name>.secrets]` names, read.
    pub fn from_config(secrets: BTreeMap<String, SecretRef>) -> Self {
        Self(
            secrets
                .into_iter()
                .map(|(key, secret)| (key, secret.value))
                .collect(),
        )
    }

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
