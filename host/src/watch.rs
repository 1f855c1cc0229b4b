//! Watching the plugins directory and `host.toml`, so that dropping a `.wasm` (or
//! editing the config) takes effect without a restart.
//!
//! File events are debounced (a copy in progress produces many) and handed to the
//! registry one path at a time. A file caught half-written fails to compile and is
//! refused, with the running version left serving; the event of the finished write
//! loads it. `cp` to a temporary name and `mv` (a rename, atomic) into the directory
//! is the way to deploy that never shows a half-written file.

use crate::registry::Registry;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Quiet time after the last event before the changed files are acted on.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// A `.wasm` file of the plugins directory (created, written, renamed, removed).
    Plugin(PathBuf),
    /// The configuration file.
    Config,
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _watcher: RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether an event can change what a file holds. Opening and reading (which the host
/// itself does when it loads a plugin) cannot, and must not trigger a reload.
pub fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches `plugins_dir` (and `config_file`, if given): plugin files go to the
/// registry, config changes to `on_config`.
pub fn watch(
    registry: Arc<Registry>,
    plugins_dir: &Path,
    config_file: Option<PathBuf>,
    on_config: impl Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static,
) -> notify::Result<Watcher> {
    let (sender, mut events) = mpsc::unbounded_channel::<Change>();
    let config_name = config_file
        .as_ref()
        .and_then(|f| f.file_name().map(|n| n.to_os_string()));
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, "watching the plugins directory or host.toml failed");
                return;
            }
        };
        if !changes_content(&event.kind) {
            return;
        }
        for path in event.paths {
            let change = if path.extension().is_some_and(|e| e == "wasm") {
                Change::Plugin(path)
            } else if config_name.is_some() && path.file_name() == config_name.as_deref() {
                Change::Config
            } else {
                continue;
            };
            let _ = sender.send(change);
        }
    })?;
    watcher.watch(plugins_dir, RecursiveMode::NonRecursive)?;
    if let Some(file) = &config_file {
        // The directory, not the file: editors save by writing a new file and renaming
        // it over the old one, which a watch on the old inode would miss.
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if dir != plugins_dir {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
    }
    let task = tokio::spawn(async move {
        while let Some(first) = events.recv().await {
            // Debounce: a copy in progress writes many times; act once it is quiet.
            let mut batch = BTreeSet::from([first]);
            while let Ok(Some(next)) = tokio::time::timeout(DEBOUNCE, events.recv()).await {
                batch.insert(next);
            }
            for change in batch {
                match change {
                    Change::Plugin(path) => registry.file_changed(&path).await,
                    Change::Config => on_config().await,
                }
            }
        }
    });
    Ok(Watcher {
        _watcher: watcher,
        task,
    })
}
