//! `log`: guest records into the host's log, tagged with the plugin's name.

use super::{PluginContext, Usage, truncate};
use crate::bindings::techub::platform::log::{Host, Level};
use wasmtime::component::HasData;

/// What the `log` interface reaches of an instance: the plugin's name and this
/// invocation's quotas.
pub struct LogView<'a> {
    plugin: &'a PluginContext,
    usage: &'a mut Usage,
}

impl<'a> LogView<'a> {
    /// The view of one instance.
    pub fn new(plugin: &'a PluginContext, usage: &'a mut Usage) -> Self {
        Self { plugin, usage }
    }
}

/// Links `log` with [`LogView`].
pub struct HasLog;

impl HasData for HasLog {
    type Data<'a> = LogView<'a>;
}

/// Longest message, and longest fields, kept: the rest is cut so that a plugin cannot
/// flood the log.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

impl Host for LogView<'_> {
    async fn write(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        // Records count as host calls: past the quota they are dropped, not an error.
        if self.usage.charge(self.plugin).is_err() {
            return Ok(());
        }
        let plugin = self.plugin.name.as_str();
        let mut message = message;
        truncate(&mut message, MAX_MESSAGE_BYTES);
        let mut fields = fields
            .iter()
            .take(32)
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        truncate(&mut fields, MAX_MESSAGE_BYTES);
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, %fields, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, %fields, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, %fields, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, %fields, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, %fields, "{message}"),
        }
        Ok(())
    }
}
