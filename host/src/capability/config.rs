//! `config`: the plugin's own settings from `host.toml`.

use super::{PluginContext, Usage};
use crate::bindings::techub::platform::config::Host;
use wasmtime::component::HasData;

/// What the `config` interface reaches of an instance: the plugin's settings (from the
/// configuration its version was built with) and this invocation's quotas.
pub struct ConfigView<'a> {
    plugin: &'a PluginContext,
    usage: &'a mut Usage,
}

impl<'a> ConfigView<'a> {
    /// The view of one instance.
    pub fn new(plugin: &'a PluginContext, usage: &'a mut Usage) -> Self {
        Self { plugin, usage }
    }
}

/// Links `config` with [`ConfigView`].
pub struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = ConfigView<'a>;
}

impl Host for ConfigView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.usage.charge_or_trap(self.plugin, "config", "get")?;
        let plugin = self.plugin;
        Ok(plugin
            .settings
            .get(&key)
            .cloned()
            .or_else(|| plugin.secrets.get(&key).map(|s| s.expose().to_string())))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        self.usage
            .charge_or_trap(self.plugin, "config", "get_all")?;
        Ok(self
            .plugin
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(
                self.plugin
                    .secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_string())),
            )
            .collect())
    }
}
