//! Plugins: finding `.wasm` files, turning them into ready-to-instantiate plugins, and
//! the context each runs with.

pub mod build;
mod read;

pub use read::{ReadError, read_plugin_file};

pub use crate::capability::PluginContext;

use crate::capability::bindings::Subscription;
use crate::config::{HostConfig, validate_name};
use crate::names::routing::{TopicPattern, validate_pattern};
use crate::names::topology::queue_type_key;
use crate::runtime::{ComponentPre, InvocationError, Runtime, content_hash};
use crate::services::Services;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Most subscriptions one plugin may declare: each is a queue on the broker, which a
/// plugin must not be able to flood.
const MAX_SUBSCRIPTIONS: usize = 16;
/// Most routing keys one subscription may bind.
const MAX_BINDINGS: usize = 64;

/// One version of a plugin: compiled, linked, with its context and subscriptions.
/// Immutable: a new file or a new configuration makes a new `LoadedPlugin`, and the
/// deliveries running on the old one finish on it.
pub struct LoadedPlugin {
    /// Its name (the file stem).
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file, hex: the version.
    pub hash: String,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// The configuration it was built under (its queue policies; the grants in its
    /// context came from it).
    pub config: Arc<HostConfig>,
    /// Grants, limits and namespaces.
    pub context: Arc<PluginContext>,
    /// Ready to instantiate, once per message.
    pub pre: ComponentPre,
    /// The queues it consumes.
    pub subscriptions: Vec<Subscription>,
}

impl LoadedPlugin {
    /// The same code under another configuration (a reload): a new context, the same
    /// compiled component and subscriptions, checked against the new grants.
    pub fn reconfigured(
        &self,
        config: Arc<HostConfig>,
        services: Arc<Services>,
    ) -> Result<Self, PluginError> {
        let context = Arc::new(services.context(&self.name, &config));
        // A standard consumer's subscription is the configuration's, which changed.
        let subscriptions = if self.pre.subscribes_in_config() {
            let shown = self.path.display().to_string();
            with_queue_type_keys(subscription_in_config(&shown, &self.name, &config)?)
        } else {
            self.subscriptions.clone()
        };
        check_subscriptions(&self.path, &subscriptions, &config, &context)?;
        Ok(Self {
            name: self.name.clone(),
            path: self.path.clone(),
            hash: self.hash.clone(),
            loaded_at: self.loaded_at,
            config,
            context,
            pre: self.pre.clone(),
            subscriptions,
        })
    }
}

/// Why a plugin file was not loaded. The other plugins load regardless.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file name does not make a valid plugin name.
    #[error("{path}: the file name must be <name>.wasm with a name of a-z, 0-9, - and _")]
    BadName {
        /// The file.
        path: String,
    },
    /// Not a component of the right world.
    #[error(transparent)]
    Load(#[from] crate::runtime::LoadError),
    /// `subscriptions` failed.
    #[error("{path}: asking for its subscriptions failed: {source}")]
    Subscriptions {
        /// The file.
        path: String,
        /// Why.
        source: InvocationError,
    },
    /// Its queues could not be declared or consumed (e.g. a queue exists on the broker
    /// with other arguments).
    #[error("plugin {plugin}: could not subscribe: {message}")]
    Subscribe {
        /// The plugin.
        plugin: String,
        /// Why.
        message: String,
    },
    /// A subscription names an undeclared queue type or a malformed routing pattern.
    #[error("{path}: {message}")]
    BadSubscription {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The plugin name of a `.wasm` path, if it is one.
pub fn plugin_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?.to_string();
    validate_name(&stem).then_some(stem)
}

/// The plugin names of the `.wasm` files in `dir` (none when it cannot be read).
pub fn plugin_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| plugin_name(&e.ok()?.path()))
                .collect()
        })
        .unwrap_or_default()
}

/// Loads one plugin file.
pub async fn load_plugin(
    runtime: &Arc<Runtime>,
    path: &Path,
    config: Arc<HostConfig>,
    services: Arc<Services>,
) -> Result<LoadedPlugin, PluginError> {
    let bytes = read_plugin_file(path, config.host.max_plugin_bytes)
        .await
        .map_err(|e| crate::runtime::LoadError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    let hash = content_hash(&bytes);
    load_bytes(runtime, path, bytes, hash, config, services).await
}

/// Loads a plugin from the `bytes` of `path` (whose SHA-256 is `hash`): compiled (or
/// taken from the compiled cache), linked, asked for its subscriptions, and checked
/// against `config`.
pub async fn load_bytes(
    runtime: &Arc<Runtime>,
    path: &Path,
    bytes: Vec<u8>,
    hash: String,
    config: Arc<HostConfig>,
    services: Arc<Services>,
) -> Result<LoadedPlugin, PluginError> {
    let shown = path.display().to_string();
    let name = plugin_name(path).ok_or_else(|| PluginError::BadName {
        path: shown.clone(),
    })?;
    let pre = runtime.prepare(path, bytes, &hash).await?;
    let context = Arc::new(services.context(&name, &config));
    let subscriptions = runtime
        .subscriptions(&pre, context.clone())
        .await
        .map_err(|source| PluginError::Subscriptions {
            path: shown.clone(),
            source,
        })?;
    let subscriptions = match subscriptions {
        Some(named) => named,
        None => subscription_in_config(&shown, &name, &config)?,
    };
    check_subscriptions(path, &subscriptions, &config, &context)?;
    let subscriptions = with_queue_type_keys(subscriptions);
    Ok(LoadedPlugin {
        name,
        path: path.to_path_buf(),
        hash,
        loaded_at: SystemTime::now(),
        config,
        context,
        pre,
        subscriptions,
    })
}

/// `subscriptions`, each also bound with its queue type's own key (what a send to the
/// queue type is routed with).
fn with_queue_type_keys(mut subscriptions: Vec<Subscription>) -> Vec<Subscription> {
    for subscription in &mut subscriptions {
        let key = queue_type_key(&subscription.queue);
        if !subscription.routing_keys.contains(&key) {
            subscription.routing_keys.push(key);
        }
    }
    subscriptions
}

/// The subscription `host.toml` gives a standard consumer (one exporting
/// `wasmcloud:messaging/handler`, which cannot name its own): the queue type
/// `[plugins.<name>] queue`, bound with each `subscribe` pattern as given.
fn subscription_in_config(
    shown: &str,
    name: &str,
    config: &HostConfig,
) -> Result<Vec<Subscription>, PluginError> {
    let plugin = config.plugins.get(name);
    let Some(queue) = plugin.and_then(|p| p.queue.clone()) else {
        return Err(PluginError::BadSubscription {
            path: shown.to_string(),
            message: format!(
                "exports wasmcloud:messaging/handler, whose subscriptions host.toml names, and [plugins.{name}] has no `queue`: set `queue = \"<queue type>\"` and `subscribe = [<routing keys>]`"
            ),
        });
    };
    Ok(vec![Subscription {
        queue,
        routing_keys: plugin.map(|p| p.subscribe.clone()).unwrap_or_default(),
        publishes: Vec::new(),
    }])
}

/// Whether `subscriptions` are acceptable under `config`: within the bounds, of
/// declared queue types, well-formed, and covered by the plugin's subscribe grants.
pub fn check_subscriptions(
    path: &Path,
    subscriptions: &[Subscription],
    config: &HostConfig,
    context: &PluginContext,
) -> Result<(), PluginError> {
    let shown = path.display().to_string();
    let name = &context.name;
    if subscriptions.len() > MAX_SUBSCRIPTIONS {
        let message = format!(
            "declares {} subscriptions, more than {MAX_SUBSCRIPTIONS}",
            subscriptions.len()
        );
        return Err(PluginError::BadSubscription {
            path: shown,
            message,
        });
    }
    for subscription in subscriptions {
        let bad = |message: String| PluginError::BadSubscription {
            path: shown.clone(),
            message,
        };
        let own_key = queue_type_key(&subscription.queue);
        let keys: Vec<&String> = subscription
            .routing_keys
            .iter()
            .filter(|k| **k != own_key)
            .collect();
        if keys.len() > MAX_BINDINGS {
            let count = keys.len();
            return Err(bad(format!(
                "binds {count} routing keys to {:?}, more than {MAX_BINDINGS}",
                subscription.queue
            )));
        }
        if !config.queues.contains_key(&subscription.queue) {
            return Err(bad(format!(
                "subscribes to queue type {:?}, which [queues] does not declare",
                subscription.queue
            )));
        }
        if subscriptions
            .iter()
            .filter(|s| s.queue == subscription.queue)
            .count()
            > 1
        {
            return Err(bad(format!(
                "subscribes to {:?} twice; list every routing key in one subscription",
                subscription.queue
            )));
        }
        if subscription.publishes.len() > MAX_BINDINGS {
            return Err(bad(format!(
                "declares {} publishes for {:?}, more than {MAX_BINDINGS}",
                subscription.publishes.len(),
                subscription.queue
            )));
        }
        for key in &subscription.publishes {
            crate::names::routing::validate_routing_key(key)
                .map_err(|e| bad(format!("declares it publishes {key:?}: {e}")))?;
            if !context.messaging.may_publish(key) {
                return Err(bad(format!(
                    "declares it publishes {key:?}, which no pattern of [plugins.{name}].publish grants: add {key:?} (or a pattern covering it) to it in host.toml"
                )));
            }
        }
        for key in keys {
            validate_pattern(key).map_err(bad)?;
            let binding = TopicPattern::parse(key).map_err(bad)?;
            // Sends to another queue type must reach only that type's subscribers.
            if let Some(other) = config
                .queues
                .keys()
                .find(|t| **t != subscription.queue && binding.matches(&queue_type_key(t)))
            {
                return Err(bad(format!(
                    "binds {key:?}, which would also receive what is sent to queue type {other:?} ({}); bind narrower keys",
                    queue_type_key(other)
                )));
            }
            if !context
                .messaging
                .subscribe
                .iter()
                .any(|grant| grant.covers(&binding))
            {
                return Err(bad(format!(
                    "binds {key:?} to {:?}, which no pattern of [plugins.{name}].subscribe grants: add {key:?} to it in host.toml",
                    subscription.queue
                )));
            }
        }
    }
    Ok(())
}
