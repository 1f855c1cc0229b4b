//! What the registry tells `/plugins` and `techub-host plugins`.

use super::{Draining, Entry};
use serde::Serialize;
use std::time::SystemTime;

/// Where a plugin is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Its file is being compiled and validated; it does not serve yet.
    Loading,
    /// Its current version handles messages.
    Serving,
    /// Stopped (removed, disabled, replaced consumers); deliveries in flight finish.
    Draining,
}

/// One plugin, as `/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Its name.
    pub name: String,
    /// Serving or draining.
    pub state: Lifecycle,
    /// The first 12 hex digits of its file's SHA-256.
    pub version: String,
    /// When the version was loaded, in ms since the Unix epoch.
    pub loaded_at_ms: u64,
    /// The file.
    pub path: String,
    /// (queue type, routing keys) per subscription.
    pub subscriptions: Vec<(String, Vec<String>)>,
    /// The origins it may send HTTP requests to (`outbound` in `host.toml`).
    pub outbound: Vec<String>,
    /// Deliveries being handled now.
    pub in_flight: usize,
    /// Why the last new version or reconfiguration was refused, or why it drains.
    pub last_error: Option<String>,
}

/// A file that did not become (a new version of) a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct FailedFile {
    /// The file name.
    pub file: String,
    /// The path.
    pub path: String,
    /// Why.
    pub reason: String,
    /// When, in ms since the Unix epoch.
    #[serde(serialize_with = "as_ms")]
    pub at: SystemTime,
}

/// What a shutdown drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Plugins stopped.
    pub plugins: usize,
    /// Deliveries in flight when the consumers stopped.
    pub in_flight: usize,
    /// Deliveries still running at the deadline, left for the broker to redeliver.
    pub left_unsettled: usize,
}

fn ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn as_ms<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(ms(*at))
}

/// What `/plugins` reads without waiting for an operation in progress (a compile):
/// refreshed at the end of every operation; deliveries in flight counted live.
#[derive(Default)]
pub(super) struct View {
    pub(super) serving: Vec<(PluginInfo, Vec<tokio_util::task::TaskTracker>)>,
    pub(super) failed: Vec<FailedFile>,
    /// Plugin name → (file, since when) of the loads in progress.
    pub(super) loading: std::collections::BTreeMap<String, (String, SystemTime)>,
    /// Plugin name → its versions, for the cache loaders (read without waiting for an
    /// operation in progress).
    pub(super) versions: std::collections::BTreeMap<String, crate::dispatch::Versions>,
}

impl PluginInfo {
    pub(super) fn loading(name: &str, path: &str, since: SystemTime) -> Self {
        Self {
            name: name.to_string(),
            state: Lifecycle::Loading,
            version: String::new(),
            loaded_at_ms: ms(since),
            path: path.to_string(),
            subscriptions: Vec::new(),
            outbound: Vec::new(),
            in_flight: 0,
            last_error: None,
        }
    }

    pub(super) fn serving(name: &str, entry: &Entry) -> Self {
        let version = entry.versions.load();
        Self {
            name: name.to_string(),
            state: Lifecycle::Serving,
            version: crate::runtime::short_version(&version.hash).to_string(),
            loaded_at_ms: ms(version.loaded_at),
            path: version.path.display().to_string(),
            subscriptions: version
                .subscriptions
                .iter()
                .map(|s| (s.queue.clone(), s.routing_keys.clone()))
                .collect(),
            outbound: version.context.http.grants().map(String::from).collect(),
            in_flight: entry.consumers.iter().map(|c| c.in_flight()).sum(),
            last_error: entry.last_error.clone(),
        }
    }

    pub(super) fn draining(draining: &Draining) -> Self {
        Self {
            name: draining.name.clone(),
            state: Lifecycle::Draining,
            version: String::new(),
            loaded_at_ms: 0,
            path: String::new(),
            subscriptions: Vec::new(),
            outbound: Vec::new(),
            in_flight: draining.trackers.iter().map(|t| t.len()).sum(),
            last_error: Some(draining.why.clone()),
        }
    }
}
