//! `log`: guest records into the host's log, tagged with the plugin's name.

use crate::bindings::techub::platform::log::{Host, Level};
use crate::runtime::PluginState;

/// Longest message kept; the rest is cut so that a plugin cannot flood the log.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

impl Host for PluginState {
    async fn write(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let plugin = self.plugin.name.as_str();
        let mut message = message;
        if message.len() > MAX_MESSAGE_BYTES {
            let cut = (0..=MAX_MESSAGE_BYTES)
                .rev()
                .find(|i| message.is_char_boundary(*i))
                .unwrap_or(0);
            message.truncate(cut);
        }
        let fields = fields
            .iter()
            .take(32)
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
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
