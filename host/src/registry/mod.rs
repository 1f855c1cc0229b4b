//! The plugin registry: each plugin's lifecycle, from its file to its consumers.
//!
//! A plugin is *serving* (a current version, one consumer per subscription),
//! *draining* (removed or disabled: its consumers stopped, its deliveries in flight
//! finishing), or *failed* (its file could not become a plugin; the reason is kept).
//! Every change goes through here, one at a time:
//!
//! - a new file is compiled (off the async threads, or taken from the compiled
//!   cache), validated (world, subscriptions, grants) and starts consuming;
//! - a changed file is compiled and validated first, then swapped in: one atomic
//!   pointer store, so deliveries already running finish on the old version and every
//!   later one runs on the new. Subscriptions that changed bind the added routing keys
//!   and unbind the removed ones on the same queues. A version that fails to compile,
//!   is of the wrong world or asks for what it is not granted is refused with the
//!   reason, and the old version keeps serving;
//! - a removed (or disabled) plugin stops consuming and drains; its queues stay, bound,
//!   with whatever is in them (nothing is acked unhandled);
//! - a new configuration rebuilds each plugin's context (limits, grants, settings,
//!   policies) and swaps it in the same way.
//!
//! Files: `mod.rs` (the operations), `info.rs` (what `/plugins` shows), `swap.rs`
//! (starting, swapping and stopping consumers), `loaders.rs` (the plugins that load
//! cache entries, called for read-through and warming).

mod info;
mod loaders;
mod swap;

pub use info::{DrainReport, FailedFile, Lifecycle, PluginInfo};

use info::View;

use crate::config::HostConfig;
use crate::dispatch::{ConsumerHandle, Versions};
use crate::plugins::{PluginError, load_bytes, plugin_name};
use crate::runtime::{Runtime, content_hash};
use crate::services::Services;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// A serving plugin.
struct Entry {
    versions: Versions,
    consumers: Vec<ConsumerHandle>,
    last_error: Option<String>,
}

/// A plugin whose consumers were stopped and whose deliveries are finishing.
struct Draining {
    name: String,
    why: String,
    trackers: Vec<TaskTracker>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    serving: BTreeMap<String, Entry>,
    failed: BTreeMap<String, FailedFile>,
    stopped: bool,
}

/// Owns every plugin's lifecycle.
pub struct Registry {
    runtime: Arc<Runtime>,
    services: Arc<Services>,
    config: Arc<ArcSwap<HostConfig>>,
    state: tokio::sync::Mutex<State>,
    draining: Arc<Mutex<BTreeMap<u64, Draining>>>,
    drain_ids: std::sync::atomic::AtomicU64,
    view: Mutex<View>,
}

impl Registry {
    /// An empty registry over these services, reading the configuration from `config`.
    pub fn new(
        runtime: Arc<Runtime>,
        services: Arc<Services>,
        config: Arc<ArcSwap<HostConfig>>,
    ) -> Self {
        Self {
            runtime,
            services,
            config,
            state: tokio::sync::Mutex::default(),
            draining: Arc::default(),
            drain_ids: std::sync::atomic::AtomicU64::new(0),
            view: Mutex::default(),
        }
    }

    /// Loads every `*.wasm` of the plugins directory, in name order.
    pub async fn load_dir(&self) -> std::io::Result<()> {
        let dir = self.config.load().host.plugins_dir.clone();
        let mut paths = Vec::new();
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "wasm") {
                paths.push(path);
            }
        }
        paths.sort();
        for path in paths {
            self.file_changed(&path).await;
        }
        Ok(())
    }

    /// Brings the plugin of `path` in line with the file: loads it, swaps it, or (the
    /// file is gone, or the plugin disabled) stops it.
    pub async fn file_changed(&self, path: &Path) {
        let mut state = self.state.lock().await;
        if state.stopped {
            return;
        }
        self.apply_file(&mut state, path).await;
        self.refresh_view(&state);
    }

    /// Publishes what serves and what failed for [`Registry::plugins`].
    fn refresh_view(&self, state: &State) {
        let serving = state
            .serving
            .iter()
            .map(|(name, entry)| {
                let trackers = entry
                    .consumers
                    .iter()
                    .map(ConsumerHandle::tracker)
                    .collect();
                (PluginInfo::serving(name, entry), trackers)
            })
            .collect();
        let versions = state
            .serving
            .iter()
            .map(|(name, entry)| (name.clone(), entry.versions.clone()))
            .collect();
        let mut view = lock(&self.view);
        view.serving = serving;
        view.versions = versions;
        view.failed = state.failed.values().cloned().collect();
    }

    async fn apply_file(&self, state: &mut State, path: &Path) {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(name) = plugin_name(path) else {
            if path.exists() {
                let error = PluginError::BadName {
                    path: path.display().to_string(),
                };
                record_failure(state, &file, path, error.to_string());
            } else {
                state.failed.remove(&file);
            }
            return;
        };
        let config = self.config.load_full();
        if !enabled(&config, &name) {
            state.failed.remove(&file);
            self.remove(state, &name, "disabled in host.toml");
            tracing::info!(path = %path.display(), "plugin disabled in host.toml; not loaded");
            return;
        }
        let bytes = match crate::plugins::read_plugin_file(path, config.host.max_plugin_bytes).await
        {
            Ok(bytes) => bytes,
            Err(crate::plugins::ReadError::Missing(_)) => {
                state.failed.remove(&file);
                self.remove(state, &name, "its file was removed");
                return;
            }
            Err(e) => {
                self.refuse(state, &name, &file, path, e.to_string());
                return;
            }
        };
        let hash = content_hash(&bytes);
        if state
            .serving
            .get(&name)
            .is_some_and(|e| e.versions.load().hash == hash)
        {
            return; // the same bytes (a touch, or a second event for one write)
        }
        lock(&self.view).loading.insert(
            name.clone(),
            (path.display().to_string(), SystemTime::now()),
        );
        let loaded = load_bytes(
            &self.runtime,
            path,
            bytes,
            hash,
            config,
            self.services.clone(),
        )
        .await;
        lock(&self.view).loading.remove(&name);
        match loaded {
            Err(error) => self.refuse(state, &name, &file, path, error.to_string()),
            Ok(version) => {
                state.failed.remove(&file);
                let version = Arc::new(version);
                let result = match state.serving.get_mut(&name) {
                    Some(entry) => self.swap(entry, version).await,
                    None => self.start(state, version).await,
                };
                match result {
                    Ok(()) => self.services.metrics.plugin(&name).loaded(),
                    Err(reason) => self.refuse(state, &name, &file, path, reason),
                }
            }
        }
    }

    /// Records why `file` did not become (a new version of) plugin `name`; a serving
    /// version keeps serving.
    fn refuse(&self, state: &mut State, name: &str, file: &str, path: &Path, reason: String) {
        self.services.metrics.load_failed(name);
        match state.serving.get_mut(name) {
            Some(entry) => {
                tracing::error!(plugin = %name, %reason, "new version refused; the running version keeps serving");
                entry.last_error = Some(reason.clone());
            }
            None => tracing::error!(plugin = %name, %reason, "plugin not loaded"),
        }
        record_failure(state, file, path, reason);
    }

    /// Stops `name` if it serves: its consumers stop taking deliveries, the ones in
    /// flight finish and settle in the background.
    fn remove(&self, state: &mut State, name: &str, why: &str) {
        let Some(entry) = state.serving.remove(name) else {
            return;
        };
        self.services.messaging.priorities.remove_plugin(name);
        tracing::info!(plugin = %name, why, "stopping: draining its deliveries in flight");
        self.drain(name, why, entry.consumers);
    }

    /// Stops `consumers` and drains them in the background, visible in `/plugins`.
    fn drain(&self, name: &str, why: &str, consumers: Vec<ConsumerHandle>) {
        if consumers.is_empty() {
            return;
        }
        consumers.iter().for_each(ConsumerHandle::stop);
        let trackers = consumers.iter().map(ConsumerHandle::tracker).collect();
        let id = self
            .drain_ids
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let draining = self.draining.clone();
        let plugin = name.to_string();
        let task = tokio::spawn(async move {
            for consumer in consumers {
                consumer.drained().await;
            }
            tracing::info!(%plugin, "drained");
            lock(&draining).remove(&id);
        });
        lock(&self.draining).insert(
            id,
            Draining {
                name: name.to_string(),
                why: why.to_string(),
                trackers,
                task,
            },
        );
    }

    /// Whether [`Registry::shutdown`] has begun.
    pub async fn is_stopped(&self) -> bool {
        self.state.lock().await.stopped
    }

    /// Applies a new configuration to every plugin: each gets a context built from it
    /// (limits, grants, settings, queue policies, cache domains), swapped in as a new
    /// version; a plugin whose subscriptions the new grants no longer cover, or that
    /// is now disabled, stops; files not serving, and newer versions refused while an
    /// older one serves, are tried again.
    pub async fn reconfigure(&self, config: Arc<HostConfig>) {
        let mut state = self.state.lock().await;
        if state.stopped {
            return;
        }
        self.config.store(config.clone());
        let names: Vec<String> = state.serving.keys().cloned().collect();
        for name in names {
            if !enabled(&config, &name) {
                self.remove(&mut state, &name, "disabled in host.toml");
                continue;
            }
            let Some(entry) = state.serving.get_mut(&name) else {
                continue;
            };
            let current = entry.versions.load_full();
            let result = match current.reconfigured(config.clone(), self.services.clone()) {
                Ok(version) => self.swap(entry, Arc::new(version)).await,
                Err(error) => Err(error.to_string()),
            };
            if let Err(reason) = result {
                let file = file_name(&current.path);
                self.remove(&mut state, &name, &reason);
                record_failure(&mut state, &file, &current.path, reason);
            }
        }
        // Plugins newly enabled or granted, and files that failed before: a plugin that
        // never loaded, and a newer version refused while an older one serves (the
        // reload may grant what it asked for).
        let dir = config.host.plugins_dir.clone();
        for name in crate::plugins::plugin_files(&dir) {
            let file = format!("{name}.wasm");
            if !state.serving.contains_key(&name) || state.failed.contains_key(&file) {
                self.apply_file(&mut state, &dir.join(file)).await;
            }
        }
        self.refresh_view(&state);
    }

    /// Stops every consumer, waits up to `timeout` for the deliveries in flight to
    /// finish and settle, and says what it drained. Deliveries still running at the
    /// deadline are left unsettled, for the broker to deliver again.
    pub async fn shutdown(&self, timeout: Duration) -> DrainReport {
        let mut state = self.state.lock().await;
        state.stopped = true;
        let names: Vec<String> = state.serving.keys().cloned().collect();
        for name in &names {
            self.remove(&mut state, name, "the host is stopping");
        }
        self.refresh_view(&state);
        let trackers: Vec<TaskTracker> = lock(&self.draining)
            .values()
            .flat_map(|d| d.trackers.clone())
            .collect();
        let in_flight = trackers.iter().map(TaskTracker::len).sum();
        let tasks: Vec<JoinHandle<()>> = {
            let mut draining = lock(&self.draining);
            let ids: Vec<u64> = draining.keys().copied().collect();
            ids.into_iter()
                .filter_map(|id| draining.remove(&id).map(|d| d.task))
                .collect()
        };
        let finished = tokio::time::timeout(timeout, futures::future::join_all(tasks))
            .await
            .is_ok();
        let left = trackers.iter().map(TaskTracker::len).sum();
        DrainReport {
            plugins: names.len(),
            in_flight,
            left_unsettled: if finished { 0 } else { left },
        }
    }

    /// The size of the pool's slots in MiB, fixed at start (`None` without the pooling
    /// allocator): no memory limit may exceed it until a restart.
    pub fn slot_memory_mib(&self) -> Option<u32> {
        self.runtime.slot_memory_mib()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<HostConfig> {
        self.config.load_full()
    }

    /// The prefix of the plugin queues' names (`[amqp] queue_prefix`).
    pub fn queue_prefix(&self) -> String {
        self.config.load().amqp.queue_prefix.clone()
    }

    /// What serves, what loads, what drains, and what failed, for `/plugins`: as of
    /// the last finished operation (it does not wait for a compile in progress), with
    /// deliveries in flight counted now.
    pub async fn plugins(&self) -> (Vec<PluginInfo>, Vec<FailedFile>) {
        let view = lock(&self.view);
        let mut plugins: Vec<PluginInfo> = view
            .serving
            .iter()
            .map(|(info, trackers)| PluginInfo {
                in_flight: trackers.iter().map(TaskTracker::len).sum(),
                ..info.clone()
            })
            .collect();
        plugins.extend(
            view.loading
                .iter()
                .filter(|(name, _)| !view.serving.iter().any(|(p, _)| &p.name == *name))
                .map(|(name, (path, since))| PluginInfo::loading(name, path, *since)),
        );
        plugins.extend(lock(&self.draining).values().map(PluginInfo::draining));
        (plugins, view.failed.clone())
    }

    /// The current version of `name`, if it serves.
    pub async fn version(&self, name: &str) -> Option<Arc<crate::plugins::LoadedPlugin>> {
        let state = self.state.lock().await;
        state.serving.get(name).map(|e| e.versions.load_full())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Without a shutdown (a test's host going away): stop every consumer.
        if let Ok(state) = self.state.try_lock() {
            for entry in state.serving.values() {
                entry.consumers.iter().for_each(ConsumerHandle::stop);
            }
        }
    }
}

/// Whether `host.toml` leaves plugin `name` enabled (the default).
fn enabled(config: &HostConfig, name: &str) -> bool {
    config
        .plugins
        .get(name)
        .and_then(|p| p.enabled)
        .unwrap_or(true)
}

fn record_failure(state: &mut State, file: &str, path: &Path, reason: String) {
    state.failed.insert(
        file.to_string(),
        FailedFile {
            file: file.to_string(),
            path: path.display().to_string(),
            reason,
            at: SystemTime::now(),
        },
    );
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
