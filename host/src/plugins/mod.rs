//! Plugins: finding `.wasm` files, turning them into ready-to-instantiate plugins, and
//! the context each runs with.

mod context;

pub use context::PluginContext;

use crate::bindings::{PluginPre, Subscription};
use crate::capability::Services;
use crate::capability::messaging::routing::{TopicPattern, validate_pattern};
use crate::config::{HostConfig, validate_name};
use crate::runtime::{InvocationError, PluginState, Runtime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most subscriptions one plugin may declare: each is a queue on the broker, which a
/// plugin must not be able to flood.
const MAX_SUBSCRIPTIONS: usize = 16;
/// Most routing keys one subscription may bind.
const MAX_BINDINGS: usize = 64;

/// A compiled, linked plugin with its subscriptions.
pub struct LoadedPlugin {
    /// Its name (the file stem).
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    /// Grants, limits and namespaces.
    pub context: Arc<PluginContext>,
    /// Ready to instantiate, once per message.
    pub pre: PluginPre<PluginState>,
    /// The queues it consumes.
    pub subscriptions: Vec<Subscription>,
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
    runtime: &Runtime,
    path: &Path,
    config: Arc<HostConfig>,
    services: Arc<Services>,
) -> Result<LoadedPlugin, PluginError> {
    let shown = path.display().to_string();
    let name = plugin_name(path).ok_or_else(|| PluginError::BadName {
        path: shown.clone(),
    })?;
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| crate::runtime::LoadError::Read {
            path: shown.clone(),
            message: e.to_string(),
        })?;
    let pre = runtime.prepare(path, bytes).await?;
    let context = Arc::new(PluginContext::new(&name, config.clone(), services));
    let subscriptions = runtime
        .subscriptions(&pre, context.clone())
        .await
        .map_err(|source| PluginError::Subscriptions {
            path: shown.clone(),
            source,
        })?;
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
    for subscription in &subscriptions {
        let bad = |message: String| PluginError::BadSubscription {
            path: shown.clone(),
            message,
        };
        if subscription.routing_keys.len() > MAX_BINDINGS {
            let count = subscription.routing_keys.len();
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
        if subscription.routing_keys.is_empty() {
            return Err(bad(format!(
                "subscription to {:?} binds no routing key",
                subscription.queue
            )));
        }
        for key in &subscription.routing_keys {
            validate_pattern(key).map_err(bad)?;
            let binding = TopicPattern::parse(key).map_err(bad)?;
            if !context.subscribe.iter().any(|grant| grant.covers(&binding)) {
                return Err(bad(format!(
                    "binds {key:?} to {:?}, which no pattern of [plugins.{name}].subscribe grants",
                    subscription.queue
                )));
            }
        }
    }
    Ok(LoadedPlugin {
        name,
        path: path.to_path_buf(),
        context,
        pre,
        subscriptions,
    })
}

/// Loads every `*.wasm` in `dir`, in name order. Returns the plugins that loaded and,
/// separately, why each other file did not.
pub async fn load_dir(
    runtime: &Runtime,
    dir: &Path,
    config: Arc<HostConfig>,
    services: Arc<Services>,
) -> std::io::Result<(Vec<LoadedPlugin>, Vec<PluginError>)> {
    let mut paths = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            paths.push(path);
        }
    }
    paths.sort();
    let (mut loaded, mut failed) = (Vec::new(), Vec::new());
    for path in paths {
        let enabled = plugin_name(&path)
            .and_then(|name| config.plugins.get(&name).and_then(|p| p.enabled))
            .unwrap_or(true);
        if !enabled {
            tracing::info!(path = %path.display(), "plugin disabled in host.toml; not loaded");
            continue;
        }
        match load_plugin(runtime, &path, config.clone(), services.clone()).await {
            Ok(plugin) => loaded.push(plugin),
            Err(error) => failed.push(error),
        }
    }
    Ok((loaded, failed))
}
